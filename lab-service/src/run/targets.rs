//! Which `/metrics` endpoints the sampler reads: every process of the lab,
//! each once, never through a load balancer (a Service answers from
//! whichever pod it picks, so counters read through it are one pod's).
//!
//! * **Fixed**: a local lab knows its processes (`RunningLab::metrics_urls`),
//!   and `lab-service loadgen --metrics-url` pointed at them.
//! * **Pushed**: in a cluster the pods come and go (replicas, kills,
//!   restarts), and only the operator watches them: it lists the run's
//!   order-service and worker pods by label and posts their endpoints to the
//!   load generator's progress server (`POST /metrics-targets`) whenever the
//!   list changes (`controller::observe::push_metrics_targets`). The
//!   sampler reads the latest list each second. A pod that is gone keeps
//!   what it had counted ([`super::sampler::Increases`]); a new pod's
//!   counters are all increase. Until a list arrives nothing is read (a
//!   run's pods are new: their counters start at 0, so reading them late
//!   loses nothing); if none ever arrives, the last sample reads the
//!   fallback (the Service) once, and says so.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// The body of `POST /metrics-targets` and the list `GET /progress` echoes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetList {
    /// Every `/metrics` URL of the lab's processes, each once.
    pub metrics: Vec<String>,
}

/// The sampler's endpoints, shared by the run, its sampler and the progress
/// server (clones share one list).
#[derive(Debug, Clone)]
pub struct MetricsTargets {
    inner: Arc<Mutex<Targets>>,
}

#[derive(Debug)]
struct Targets {
    /// The fixed endpoints, or the fallback of a pushed list.
    fixed: Vec<String>,
    /// Pushed mode: the latest list posted (None: none yet).
    pushed: Option<Option<Vec<String>>>,
}

impl MetricsTargets {
    /// These endpoints, for the whole run.
    pub fn fixed(urls: Vec<String>) -> Self {
        Self::new(urls, None)
    }

    /// Endpoints posted during the run; `fallback` only if none ever is.
    pub fn pushed(fallback: Vec<String>) -> Self {
        Self::new(fallback, Some(None))
    }

    fn new(fixed: Vec<String>, pushed: Option<Option<Vec<String>>>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Targets { fixed, pushed })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Targets> {
        self.inner.lock().expect("metrics targets lock")
    }

    /// Whether the endpoints are posted during the run.
    pub fn is_pushed(&self) -> bool {
        self.lock().pushed.is_some()
    }

    /// The fixed endpoints, or the fallback of a pushed list.
    pub fn fixed_urls(&self) -> Vec<String> {
        self.lock().fixed.clone()
    }

    /// Replace the pushed list (URLs checked first: http(s), no duplicates).
    /// A fixed list takes no pushes.
    pub fn push(&self, list: TargetList) -> Result<(), String> {
        let mut urls = Vec::with_capacity(list.metrics.len());
        for url in list.metrics {
            if !(url.starts_with("http://") || url.starts_with("https://")) || reqwest::Url::parse(&url).is_err() {
                return Err(format!("metrics: {url:?} is not an http:// URL"));
            }
            if urls.contains(&url) {
                return Err(format!("metrics: {url} is listed twice"));
            }
            urls.push(url);
        }
        let mut targets = self.lock();
        match &mut targets.pushed {
            Some(pushed) => {
                *pushed = Some(urls);
                Ok(())
            }
            None => Err("this run reads a fixed list of endpoints".into()),
        }
    }

    /// The list posted last (None: fixed, or nothing posted yet).
    pub fn pushed_list(&self) -> Option<Vec<String>> {
        self.lock().pushed.clone().flatten()
    }

    /// The endpoints to read now.
    pub fn current(&self) -> Vec<String> {
        let targets = self.lock();
        match &targets.pushed {
            None => targets.fixed.clone(),
            Some(pushed) => pushed.clone().unwrap_or_default(),
        }
    }

    /// Before the last sample: a pushed list that never came falls back to
    /// the fixed endpoints (true when it did: the figures are then one
    /// process's if there are several).
    pub fn fall_back_if_never_pushed(&self) -> bool {
        let mut targets = self.lock();
        let fixed = targets.fixed.clone();
        match &mut targets.pushed {
            Some(pushed @ None) => {
                *pushed = Some(fixed);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(urls: &[&str]) -> TargetList {
        TargetList {
            metrics: urls.iter().map(|u| u.to_string()).collect(),
        }
    }

    #[test]
    fn a_fixed_list_is_read_as_given_and_takes_no_pushes() {
        let targets = MetricsTargets::fixed(vec!["http://a:1/metrics".into()]);
        assert_eq!(targets.current(), ["http://a:1/metrics"]);
        assert!(targets.push(list(&["http://b:1/metrics"])).is_err());
        assert!(!targets.fall_back_if_never_pushed());
        assert_eq!(targets.pushed_list(), None);
    }

    #[test]
    fn a_pushed_list_reads_nothing_until_posted_then_the_latest_list() {
        let targets = MetricsTargets::pushed(vec!["http://svc:1/metrics".into()]);
        assert!(targets.current().is_empty(), "not the Service's while pods are coming");
        targets
            .push(list(&["http://10.0.0.1:1/metrics", "http://10.0.0.2:1/metrics"]))
            .unwrap();
        assert_eq!(targets.current().len(), 2);
        targets.clone().push(list(&["http://10.0.0.3:1/metrics"])).unwrap();
        assert_eq!(
            targets.current(),
            ["http://10.0.0.3:1/metrics"],
            "clones share the list"
        );
        assert_eq!(targets.pushed_list().unwrap(), ["http://10.0.0.3:1/metrics"]);
        assert!(!targets.fall_back_if_never_pushed());
    }

    #[test]
    fn a_list_never_posted_falls_back_once_at_the_end() {
        let targets = MetricsTargets::pushed(vec!["http://svc:1/metrics".into()]);
        assert!(targets.fall_back_if_never_pushed());
        assert_eq!(targets.current(), ["http://svc:1/metrics"]);
        assert!(!targets.fall_back_if_never_pushed());
    }

    #[test]
    fn bad_or_repeated_urls_are_refused_naming_them() {
        let targets = MetricsTargets::pushed(Vec::new());
        let e = targets.push(list(&["10.0.0.1:1/metrics"])).unwrap_err();
        assert!(e.contains("10.0.0.1:1/metrics"), "{e}");
        let e = targets
            .push(list(&["http://10.0.0.1:1/metrics", "http://10.0.0.1:1/metrics"]))
            .unwrap_err();
        assert!(e.contains("twice"), "{e}");
        assert!(targets.current().is_empty(), "nothing taken from a refused list");
    }
}

//! Reading a manifest and checking it: every problem with its field path.
//!
//! The CRD schema already bounds single fields when the API server sees the
//! object; the local runner has no API server, so the same bounds are
//! checked here too, along with the rules that span fields (backoff order,
//! fault phases inside the load, rates summing to at most 1, ...).

use crate::crd::{FaultSettings, ReliabilityExperiment, ReliabilityExperimentSpec};
use std::fmt;

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// e.g. `spec.orderService.retry.maxBackoffMs`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

pub const API_VERSION: &str = "relab.dev/v1alpha1";
pub const KIND: &str = "ReliabilityExperiment";

/// Parse a manifest (YAML or JSON) strictly: unknown fields are errors that name them.
pub fn parse_manifest(text: &str) -> Result<ReliabilityExperiment, Vec<FieldError>> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        vec![FieldError {
            path: "(document)".into(),
            message: e.to_string(),
        }]
    })?;
    let api_version = value.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
    let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or_default();
    let mut problems = Vec::new();
    if api_version != API_VERSION {
        problems.push(FieldError {
            path: "apiVersion".into(),
            message: format!("must be {API_VERSION}, got {api_version:?}"),
        });
    }
    if kind != KIND {
        problems.push(FieldError {
            path: "kind".into(),
            message: format!("must be {KIND}, got {kind:?}"),
        });
    }
    if value.get("spec").is_none() {
        problems.push(FieldError {
            path: "spec".into(),
            message: "is required".into(),
        });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|e| {
        let path = e.path().to_string();
        let raw = e.inner().to_string();
        // serde_yaml prefixes its own path ("spec.load: ..."): keep the message only
        let message = match raw.split_once(": ") {
            Some((_, rest)) if prefix_is_path(&raw) => rest.to_string(),
            _ => raw.clone(),
        };
        // name the unknown or missing field itself
        let field = ["unknown field `", "missing field `"].iter().find_map(|pat| {
            let rest = &message[message.find(pat)? + pat.len()..];
            Some(rest[..rest.find('`')?].to_string())
        });
        let path = if path == "." { String::new() } else { path };
        let path = match field {
            Some(f) if !path.ends_with(&f) => join(&path, &f),
            _ if path.is_empty() => "(document)".to_string(),
            _ => path,
        };
        vec![FieldError { path, message }]
    })
}

fn prefix_is_path(msg: &str) -> bool {
    msg.split_once(": ")
        .is_some_and(|(p, _)| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || "._[]".contains(c)))
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}.{b}"),
    }
}

struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn unit(&mut self, path: &str, v: f64) {
        if !(0.0..=1.0).contains(&v) {
            self.add(path, format!("must be within 0..=1, got {v}"));
        }
    }

    fn at_least(&mut self, path: &str, v: u64, min: u64) {
        if v < min {
            self.add(path, format!("must be at least {min}, got {v}"));
        }
    }
}

/// Total seconds of load (stages win over rate/duration).
pub fn load_seconds(spec: &ReliabilityExperimentSpec) -> u64 {
    if spec.load.stages.is_empty() {
        spec.load.duration_seconds.unwrap_or(0) as u64
    } else {
        spec.load.stages.iter().map(|s| s.duration_seconds as u64).sum()
    }
}

fn check_faults(p: &mut Problems, path: &str, f: &FaultSettings) {
    let rates = [
        ("failureRate", f.failure_rate),
        ("declineRate", f.decline_rate),
        ("rateLimitRate", f.rate_limit_rate),
        ("timeoutRate", f.timeout_rate),
        ("lostResponseRate", f.lost_response_rate),
    ];
    for (name, v) in rates {
        p.unit(&format!("{path}.{name}"), v);
    }
    let sum: f64 = rates.iter().map(|(_, v)| v).sum();
    if sum > 1.0 + 1e-9 {
        p.add(path, format!("failureRate + declineRate + rateLimitRate + timeoutRate + lostResponseRate must be at most 1, got {sum:.3}"));
    }
    if f.failure_rate > 0.0 && f.failure_statuses.is_empty() {
        p.add(
            format!("{path}.failureStatuses"),
            "must name at least one status when failureRate > 0",
        );
    }
    for (i, s) in f.failure_statuses.iter().enumerate() {
        if !(500..=599).contains(s) {
            p.add(
                format!("{path}.failureStatuses[{i}]"),
                format!("must be a 5xx status, got {s}"),
            );
        }
    }
    p.at_least(&format!("{path}.hangMs"), f.hang_ms, 1);
    p.unit(&format!("{path}.latency.tailRate"), f.latency.tail_rate);
}

/// Every problem in the spec, each with its path (`spec.…`). Empty when valid.
pub fn validate(spec: &ReliabilityExperimentSpec) -> Vec<FieldError> {
    let mut p = Problems(Vec::new());
    let load = &spec.load;
    if load.stages.is_empty() {
        match load.rate_per_second {
            None => p.add("spec.load.ratePerSecond", "is required (or give spec.load.stages)"),
            Some(r) if !(r > 0.0 && r <= 100_000.0) => p.add(
                "spec.load.ratePerSecond",
                format!("must be within (0, 100000], got {r}"),
            ),
            _ => {}
        }
        match load.duration_seconds {
            None => p.add("spec.load.durationSeconds", "is required (or give spec.load.stages)"),
            Some(0) => p.add("spec.load.durationSeconds", "must be at least 1"),
            _ => {}
        }
    } else {
        for (i, s) in load.stages.iter().enumerate() {
            if !(s.rate_per_second >= 0.0 && s.rate_per_second <= 100_000.0) {
                p.add(
                    format!("spec.load.stages[{i}].ratePerSecond"),
                    format!("must be within 0..=100000, got {}", s.rate_per_second),
                );
            }
            p.at_least(
                &format!("spec.load.stages[{i}].durationSeconds"),
                s.duration_seconds as u64,
                1,
            );
        }
        if load.stages.iter().all(|s| s.rate_per_second == 0.0) {
            p.add("spec.load.stages", "at least one stage must have a rate above 0");
        }
    }
    p.at_least("spec.load.maxInFlight", load.max_in_flight as u64, 1);
    p.at_least("spec.load.drainTimeoutSeconds", load.drain_timeout_seconds as u64, 1);

    let total = load_seconds(spec);
    check_faults(&mut p, "spec.payment", &spec.payment.faults);
    let mut previous_end: Option<(usize, u64)> = None;
    for (i, phase) in spec.payment.faults_schedule.iter().enumerate() {
        let path = format!("spec.payment.faultsSchedule[{i}]");
        if phase.name.trim().is_empty() {
            p.add(format!("{path}.name"), "must not be empty");
        }
        let start = phase.start_seconds as u64;
        if total > 0 && start >= total {
            p.add(
                format!("{path}.startSeconds"),
                format!("must be before the end of the load ({total} s), got {start}"),
            );
        }
        if let Some(end) = phase.end_seconds.map(u64::from) {
            if end <= start {
                p.add(
                    format!("{path}.endSeconds"),
                    format!("must be after startSeconds ({start}), got {end}"),
                );
            } else if total > 0 && end > total {
                p.add(
                    format!("{path}.endSeconds"),
                    format!("must be within the load ({total} s), got {end}"),
                );
            }
        }
        if let Some((j, prev_end)) = previous_end {
            if start < prev_end {
                p.add(
                    format!("{path}.startSeconds"),
                    format!("overlaps faultsSchedule[{j}], which ends at {prev_end} s"),
                );
            }
        }
        previous_end = Some((i, phase.end_seconds.map(u64::from).unwrap_or(u64::MAX)));
        check_faults(&mut p, &path, &phase.faults);
    }

    let os = &spec.order_service;
    p.at_least("spec.orderService.replicas", os.replicas as u64, 1);
    p.at_least("spec.orderService.workers", os.workers as u64, 1);
    p.at_least("spec.orderService.paymentTimeoutMs", os.payment_timeout_ms, 1);
    p.at_least("spec.orderService.maxJobAttempts", os.max_job_attempts as u64, 1);
    p.at_least("spec.orderService.maxQueueDepth", os.max_queue_depth as u64, 1);
    let hangs = std::iter::once(&spec.payment.faults).chain(spec.payment.faults_schedule.iter().map(|ph| &ph.faults));
    for f in hangs {
        if (f.timeout_rate > 0.0 || f.lost_response_rate > 0.0) && f.hang_ms <= os.payment_timeout_ms {
            p.add(
                "spec.payment.hangMs",
                format!(
                    "must exceed spec.orderService.paymentTimeoutMs ({} ms) so hung calls time out, got {}",
                    os.payment_timeout_ms, f.hang_ms
                ),
            );
            break;
        }
    }
    let r = &os.retry;
    p.at_least("spec.orderService.retry.maxAttempts", r.max_attempts as u64, 1);
    p.at_least("spec.orderService.retry.initialBackoffMs", r.initial_backoff_ms, 1);
    if r.max_backoff_ms < r.initial_backoff_ms {
        p.add(
            "spec.orderService.retry.maxBackoffMs",
            format!(
                "must be at least initialBackoffMs ({} ms), got {} ms",
                r.initial_backoff_ms, r.max_backoff_ms
            ),
        );
    }
    if !(1.0..=100.0).contains(&r.multiplier) {
        p.add(
            "spec.orderService.retry.multiplier",
            format!("must be within 1..=100, got {}", r.multiplier),
        );
    }
    p.unit("spec.orderService.retry.jitter", r.jitter);
    let cb = &os.circuit_breaker;
    p.at_least(
        "spec.orderService.circuitBreaker.failureThreshold",
        cb.failure_threshold as u64,
        1,
    );
    if !(cb.failure_ratio > 0.0 && cb.failure_ratio <= 1.0) {
        p.add(
            "spec.orderService.circuitBreaker.failureRatio",
            format!("must be within (0, 1], got {}", cb.failure_ratio),
        );
    }
    p.at_least(
        "spec.orderService.circuitBreaker.minimumCalls",
        cb.minimum_calls as u64,
        1,
    );
    p.at_least(
        "spec.orderService.circuitBreaker.windowSeconds",
        cb.window_seconds as u64,
        1,
    );
    p.at_least("spec.orderService.circuitBreaker.openTimeoutMs", cb.open_timeout_ms, 1);
    p.at_least(
        "spec.orderService.circuitBreaker.halfOpenProbes",
        cb.half_open_probes as u64,
        1,
    );
    p.at_least(
        "spec.orderService.bulkhead.maxConcurrent",
        os.bulkhead.max_concurrent as u64,
        1,
    );

    if let Some(ext) = &spec.database.external {
        if ext.secret_name.trim().is_empty() {
            p.add("spec.database.external.secretName", "must not be empty");
        }
    }
    if let Some(ratio) = spec.objectives.success_ratio {
        p.unit("spec.objectives.successRatio", ratio);
    }
    for (name, list) in [
        ("apiLatency", &spec.objectives.api_latency),
        ("endToEndLatency", &spec.objectives.end_to_end_latency),
    ] {
        for (i, o) in list.iter().enumerate() {
            if o.max_ms.is_nan() || o.max_ms < 0.0 {
                p.add(
                    format!("spec.objectives.{name}[{i}].maxMs"),
                    format!("must be at least 0, got {}", o.max_ms),
                );
            }
        }
    }
    if let Some(ttl) = spec.ttl_seconds_after_finished {
        if ttl < 0 {
            p.add("spec.ttlSecondsAfterFinished", format!("must be at least 0, got {ttl}"));
        }
    }
    if let Some(pp) = spec.images.pull_policy.as_deref() {
        if !["Always", "IfNotPresent", "Never"].contains(&pp) {
            p.add(
                "spec.images.pullPolicy",
                format!("must be Always, IfNotPresent or Never, got {pp:?}"),
            );
        }
    }
    p.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
apiVersion: relab.dev/v1alpha1
kind: ReliabilityExperiment
metadata: {name: t}
spec:
  load: {ratePerSecond: 20, durationSeconds: 30}
  payment:
    failureRate: 0.3
    faultsSchedule:
      - {name: outage, startSeconds: 10, endSeconds: 20, failureRate: 1.0}
  orderService:
    retry: {maxAttempts: 4, initialBackoffMs: 50, maxBackoffMs: 800}
  objectives:
    successRatio: 0.95
    apiLatency: [{percentile: p95, maxMs: 250}]
"#;

    fn paths(yaml: &str) -> Vec<String> {
        match parse_manifest(yaml) {
            Err(e) => e.into_iter().map(|e| e.path).collect(),
            Ok(rx) => validate(&rx.spec).into_iter().map(|e| e.path).collect(),
        }
    }

    #[test]
    fn a_valid_manifest_has_no_problems() {
        assert_eq!(paths(VALID), Vec::<String>::new());
        let rx = parse_manifest(VALID).unwrap();
        assert_eq!(rx.spec.order_service.retry.max_attempts, 4);
        assert_eq!(rx.spec.payment.faults_schedule[0].faults.failure_rate, 1.0);
        assert_eq!(rx.spec.order_service.retry.jitter, 0.5, "defaults fill the rest");
    }

    #[test]
    fn each_problem_names_its_field() {
        let cases = [
            ("failureRate: 0.3", "failureRate: 1.3", "spec.payment.failureRate"),
            (
                "maxBackoffMs: 800",
                "maxBackoffMs: 10",
                "spec.orderService.retry.maxBackoffMs",
            ),
            (
                "endSeconds: 20",
                "endSeconds: 45",
                "spec.payment.faultsSchedule[0].endSeconds",
            ),
            (
                "endSeconds: 20",
                "endSeconds: 5",
                "spec.payment.faultsSchedule[0].endSeconds",
            ),
            (
                "{ratePerSecond: 20, durationSeconds: 30}",
                "{durationSeconds: 30}",
                "spec.load.ratePerSecond",
            ),
            ("successRatio: 0.95", "successRatio: 2", "spec.objectives.successRatio"),
        ];
        for (from, to, want) in cases {
            let got = paths(&VALID.replace(from, to));
            assert!(got.contains(&want.to_string()), "{to}: got {got:?}");
        }
    }

    #[test]
    fn unknown_fields_and_wrong_types_name_the_field() {
        let got = paths(&VALID.replace("maxAttempts: 4", "maxAttempts: 4, maxAttempt: 3"));
        assert_eq!(got, vec!["spec.orderService.retry.maxAttempt"], "{got:?}");
        let got = paths(&VALID.replace("durationSeconds: 30", "durationSeconds: -30"));
        assert!(got[0].starts_with("spec.load"), "{got:?}");
        let got = paths(&VALID.replace("kind: ReliabilityExperiment", "kind: Experiment"));
        assert_eq!(got, vec!["kind"]);
    }

    #[test]
    fn rates_must_sum_to_at_most_one_and_hangs_must_outlast_the_timeout() {
        let got = paths(&VALID.replace(
            "failureRate: 0.3",
            "failureRate: 0.6\n    timeoutRate: 0.6\n    hangMs: 500",
        ));
        assert!(got.contains(&"spec.payment".to_string()), "{got:?}");
        assert!(got.contains(&"spec.payment.hangMs".to_string()), "{got:?}");
    }

    #[test]
    fn overlapping_phases_are_refused() {
        let yaml = VALID.replace(
            "- {name: outage, startSeconds: 10, endSeconds: 20, failureRate: 1.0}",
            "- {name: a, startSeconds: 10, endSeconds: 20}\n      - {name: b, startSeconds: 15, endSeconds: 25}",
        );
        assert_eq!(paths(&yaml), vec!["spec.payment.faultsSchedule[1].startSeconds"]);
    }
}

/// Shorten (or stretch) every duration of the load and the fault schedule by
/// `factor`, keeping rates: how tests and CI run the examples quickly.
/// Durations stay at least one second; phases keep their order.
pub fn scale_time(spec: &mut ReliabilityExperimentSpec, factor: f64) {
    let scale = |s: u32| ((f64::from(s) * factor).round() as u32).max(1);
    if let Some(d) = spec.load.duration_seconds.as_mut() {
        *d = scale(*d);
    }
    for st in &mut spec.load.stages {
        st.duration_seconds = scale(st.duration_seconds);
    }
    for ph in &mut spec.payment.faults_schedule {
        ph.start_seconds = (f64::from(ph.start_seconds) * factor).round() as u32;
        ph.end_seconds = ph.end_seconds.map(|e| scale(e).max(ph.start_seconds + 1));
    }
}

#[cfg(test)]
mod scale_tests {
    use super::*;

    #[test]
    fn scaling_keeps_phases_inside_the_load() {
        let mut rx = parse_manifest(
            "apiVersion: relab.dev/v1alpha1\nkind: ReliabilityExperiment\nmetadata: {name: t}\nspec:\n  load: {ratePerSecond: 10, durationSeconds: 30}\n  payment:\n    faultsSchedule: [{name: o, startSeconds: 10, endSeconds: 20, failureRate: 1}]\n",
        )
        .unwrap();
        scale_time(&mut rx.spec, 0.25);
        assert_eq!(rx.spec.load.duration_seconds, Some(8));
        let ph = &rx.spec.payment.faults_schedule[0];
        assert_eq!((ph.start_seconds, ph.end_seconds), (3, Some(5)));
        assert!(validate(&rx.spec).is_empty());
    }
}

//! The observe step: what the controller reads back from the cluster for
//! the phase machine ([`Observed`]): the load generator's pod and Job (where
//! the results arrive, as the container's termination message), the load
//! generator's own stage (`GET /progress` on its pod), and live progress
//! from that same account (its sampler's database counts), else from the
//! order service's `/metrics`.
//!
//! Progress is read through the API server's service proxy
//! (`/api/v1/namespaces/<ns>/services/<svc>:<port>/proxy/metrics`): it works
//! whether the operator runs in the cluster or beside it, needs no DNS, and
//! sends nothing anywhere the API server would not.

use super::build::{Names, LOADGEN, LOADGEN_PROGRESS_PORT};
use super::machine::{Loadgen, Observed};
use super::{err, Context, Error, ErrorKind};
use crate::crd::LiveProgress;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use lab_service::run::sampler::parse_text;
use lab_service::run::RunProgress;
use std::time::Duration;

/// What this run shows now: the load generator's state and its own account
/// of the run (stage, seconds of load, disruptions); and the load
/// generator's pod (where its progress server takes disruption reports).
/// The live figures come after ([`live`]): the kills that are due act on
/// this, without waiting for the order service's metrics (a Service whose
/// pods were just killed answers only after the client's retries). A run
/// that started in this reconcile has nothing to show yet (its status goes
/// out first).
pub async fn run(
    ctx: &Context,
    namespace: &str,
    names: &Names,
    started_now: bool,
) -> Result<(Observed, Option<String>), Error> {
    let (loadgen, pod) = if started_now {
        (Loadgen::Missing, None)
    } else {
        loadgen(ctx, namespace, names)
            .await
            .map_err(err(ErrorKind::Read, "reading the load generator"))?
    };
    let load = match (&loadgen, &pod) {
        (Loadgen::Running { .. }, Some(pod)) => load_stage(&ctx.client, namespace, pod).await,
        _ => None,
    };
    let seen = Observed {
        now: ctx.options.clock.now(),
        loadgen,
        progress: None,
        load,
    };
    Ok((seen, pod))
}

/// `seen` with the live figures while the load generator runs and the
/// operator reads progress: the load generator's own account (database
/// counts, every pod's breaker; [`progress_from_load`]), or, when it cannot
/// be read, the order service's metrics through its Services (one pod's
/// each when there are several).
pub async fn live(ctx: &Context, namespace: &str, names: &Names, separate_workers: bool, seen: Observed) -> Observed {
    // the load generator's own account first: the database's counts and
    // every pod's breaker, exact however many pods and generators
    if let (Loadgen::Running { .. }, true, Some(load)) = (&seen.loadgen, ctx.options.read_progress, &seen.load) {
        let progress = Some(progress_from_load(load));
        return Observed { progress, ..seen };
    }
    let progress = match (&seen.loadgen, ctx.options.read_progress) {
        (Loadgen::Running { .. }, true) => progress(&ctx.client, namespace, names, separate_workers).await,
        _ => None,
    };
    Observed { progress, ..seen }
}

/// The load generator's own account of its run (`GET /progress`, through
/// the API server's pod proxy): its stage and the seconds since the load
/// started. `None` when it cannot be read (yet).
pub async fn load_stage(client: &Client, namespace: &str, pod: &str) -> Option<RunProgress> {
    let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{LOADGEN_PROGRESS_PORT}/proxy/progress");
    serde_json::from_str(&proxied_get(client, path).await?).ok()
}

/// `GET path` on the API server (a service or pod proxy path) within 2 s:
/// the body, or None when it could not be read.
async fn proxied_get(client: &Client, path: String) -> Option<String> {
    let request = http::Request::get(path).body(Vec::new()).ok()?;
    tokio::time::timeout(Duration::from_secs(2), client.request_text(request))
        .await
        .ok()?
        .ok()
}

/// The load generator of this run, as its pod (preferred) and Job show it,
/// and the pod's name (both from the operator's watch caches, [`super::cache`]).
pub async fn loadgen(ctx: &Context, namespace: &str, names: &Names) -> Result<(Loadgen, Option<String>), kube::Error> {
    let mut list = ctx.caches.run_pods(&ctx.client, namespace, names, &[LOADGEN]).await?;
    // newest first (backoffLimit is 0, so normally there is one)
    list.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.clone().map(|t| t.0)));
    if let Some(pod) = list.first() {
        let (state, name) = (pod_state(pod), pod.metadata.name.clone());
        if !matches!(state, Loadgen::Missing | Loadgen::Waiting { .. }) {
            return Ok((state, name));
        }
        if let Some(failed) = job_failure(ctx, namespace, names).await? {
            return Ok((failed, name));
        }
        return Ok((state, name));
    }
    let state = job_failure(ctx, namespace, names).await?.unwrap_or(Loadgen::Missing);
    Ok((state, None))
}

async fn job_failure(ctx: &Context, namespace: &str, names: &Names) -> Result<Option<Loadgen>, kube::Error> {
    let Some(job) = ctx.caches.job(&ctx.client, namespace, &names.loadgen()).await? else {
        return Ok(None);
    };
    if !names.is_ours(&job.metadata) {
        // an earlier experiment's of the same name, still being deleted
        return Ok(None);
    }
    let failed = job
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    Ok(failed.map(|c| Loadgen::JobFailed {
        reason: c.reason.unwrap_or_else(|| "Failed".into()),
        message: c.message.unwrap_or_default(),
    }))
}

/// The `loadgen` container's state.
pub fn pod_state(pod: &Pod) -> Loadgen {
    let Some(status) = &pod.status else {
        return Loadgen::Waiting { reason: None };
    };
    let container = status
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.name == "loadgen"));
    if let Some(state) = container.and_then(|c| c.state.as_ref()) {
        if let Some(t) = &state.terminated {
            return Loadgen::Terminated {
                exit_code: t.exit_code,
                reason: t.reason.clone(),
                message: t.message.clone(),
            };
        }
        if let Some(r) = &state.running {
            let started_at = r
                .started_at
                .as_ref()
                .and_then(|t| DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32))
                .unwrap_or_else(Utc::now);
            return Loadgen::Running { started_at };
        }
        if let Some(w) = &state.waiting {
            return Loadgen::Waiting {
                reason: w.reason.clone(),
            };
        }
    }
    match status.phase.as_deref() {
        Some("Succeeded") => Loadgen::Terminated {
            exit_code: 0,
            reason: status.reason.clone(),
            message: None,
        },
        Some("Failed") => Loadgen::Terminated {
            exit_code: -1,
            reason: status.reason.clone(),
            message: status.message.clone(),
        },
        _ => Loadgen::Waiting {
            reason: status
                .conditions
                .as_ref()
                .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled" && c.status == "False"))
                .and_then(|c| c.reason.clone()),
        },
    }
}

/// Live figures from the order service's API and worker metrics (the
/// workers' own Service with `separate_workers`), through the API server's
/// service proxy; `None` when they cannot be read (yet).
pub async fn progress(client: &Client, namespace: &str, names: &Names, separate_workers: bool) -> Option<LiveProgress> {
    let path =
        |service: String, port: &str| format!("/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/metrics");
    let workers = match separate_workers {
        true => names.workers(),
        false => names.order_service(),
    };
    // side by side: a Service without endpoints (its pods just killed) answers
    // 503 after the client's retries, and the kills wait for this reconcile
    let (api, worker) = tokio::join!(
        proxied_get(client, path(names.order_service(), "http")),
        proxied_get(client, path(workers, "worker-metrics"))
    );
    let mut samples = parse_text(&api?).ok()?;
    samples.extend(parse_text(&worker?).ok()?);
    Some(progress_from_metrics(&samples))
}

/// Live figures from the load generator's progress (`GET /progress`): orders
/// in the database since the load began (every generator's), paid, failed
/// or dead-lettered, the breaker (the most open of any pod), seconds of load.
pub fn progress_from_load(load: &RunProgress) -> LiveProgress {
    LiveProgress {
        elapsed_seconds: load.elapsed.as_secs_f64(),
        sent: load.orders.max(load.accepted),
        paid: load.paid,
        failed: load.failed + load.dead_lettered,
        breaker_state: relab_model::results::BreakerState::name_of_gauge(load.breaker_state).into(),
    }
}

/// `relab_orders_created_total` is sent (accepted), `relab_worker_jobs_total`
/// by outcome gives paid and failed, `relab_breaker_state` the breaker.
pub fn progress_from_metrics(samples: &[lab_service::run::sampler::PromSample]) -> LiveProgress {
    let mut p = LiveProgress::default();
    let mut breaker = 0.0_f64;
    for s in samples {
        match s.name.as_str() {
            "relab_orders_created_total" => p.sent += s.value as u64,
            "relab_worker_jobs_total" => match s.label("outcome").as_str() {
                "paid" => p.paid += s.value as u64,
                "failed" | "dead_lettered" => p.failed += s.value as u64,
                _ => {}
            },
            "relab_breaker_state" => breaker = breaker.max(s.value),
            _ => {}
        }
    }
    p.breaker_state = relab_model::results::BreakerState::name_of_gauge(breaker as i64).into();
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, PodStatus,
    };

    #[test]
    fn progress_counts_orders_jobs_and_the_breaker() {
        let text = "\
# TYPE relab_orders_created_total counter
relab_orders_created_total 120
relab_worker_jobs_total{outcome=\"paid\"} 100
relab_worker_jobs_total{outcome=\"failed\"} 3
relab_worker_jobs_total{outcome=\"dead_lettered\"} 2
relab_worker_jobs_total{outcome=\"retry_scheduled\"} 40
relab_breaker_state 1
";
        let p = progress_from_metrics(&parse_text(text).unwrap());
        assert_eq!((p.sent, p.paid, p.failed), (120, 100, 5));
        assert_eq!(p.breaker_state, "open");
    }

    #[test]
    fn live_figures_come_from_the_load_generators_account_of_every_generator() {
        let load = RunProgress {
            elapsed: Duration::from_millis(12_500),
            accepted: 40, // this generator's share
            orders: 120,  // the database: every generator's
            paid: 100,
            failed: 3,
            dead_lettered: 2,
            breaker_state: 2,
            ..RunProgress::default()
        };
        let p = progress_from_load(&load);
        assert_eq!((p.sent, p.paid, p.failed), (120, 100, 5));
        assert_eq!((p.elapsed_seconds, p.breaker_state.as_str()), (12.5, "half_open"));
    }

    #[test]
    fn the_termination_message_is_read_from_the_container() {
        let pod = Pod {
            status: Some(PodStatus {
                phase: Some("Succeeded".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "loadgen".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 0,
                            message: Some("{\"successRatio\":1.0}".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            pod_state(&pod),
            Loadgen::Terminated {
                exit_code: 0,
                reason: None,
                message: Some("{\"successRatio\":1.0}".into())
            }
        );
        assert_eq!(pod_state(&Pod::default()), Loadgen::Waiting { reason: None });
        let started: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time =
            serde_json::from_value(serde_json::json!("2026-11-23T14:05:06Z")).unwrap();
        let running = Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "loadgen".into(),
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: Some(started),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            pod_state(&running),
            Loadgen::Running {
                started_at: DateTime::parse_from_rfc3339("2026-11-23T14:05:06Z")
                    .unwrap()
                    .with_timezone(&Utc)
            }
        );
    }
}

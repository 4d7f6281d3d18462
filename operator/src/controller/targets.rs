//! The metrics-targets step: the load generator's sampler reads the lab's
//! counters pod by pod, never through the Service (which answers from one
//! pod of its choice). The operator, which watches the run's pods, lists
//! the order-service and worker pods by label and posts their `/metrics`
//! URLs ([`build::order_service::metrics_urls`]) to the load generator's
//! progress server, `POST /metrics-targets` through the API server's pod
//! proxy, whenever the list the load generator echoes (`GET /progress`,
//! `metricsTargets`) differs: at the start, and after a pod is killed,
//! restarted or replaced. What the sampler does with them:
//! `lab-service/src/run/targets.rs`.

use super::build::{order_service, Names, LOADGEN_PROGRESS_PORT};
use super::Context;
use k8s_openapi::api::core::v1::Pod;
use lab_service::run::targets::TargetList;
use lab_service::run::{RunProgress, RunStage};
use std::time::Duration;

/// The `/metrics` URLs of the run's pods now, sorted (from the operator's
/// pod cache, [`super::cache`]).
pub async fn current(ctx: &Context, namespace: &str, names: &Names) -> Result<Vec<String>, kube::Error> {
    let pods = ctx
        .caches
        .run_pods(&ctx.client, namespace, names, &order_service::METRICS_COMPONENTS)
        .await?;
    Ok(wanted(&pods))
}

/// The URLs of `pods`, sorted and each once.
pub fn wanted(pods: &[Pod]) -> Vec<String> {
    let mut urls: Vec<String> = pods.iter().flat_map(order_service::metrics_urls).collect();
    urls.sort();
    urls.dedup();
    urls
}

/// Whether the load generator still samples (its last sample is not taken).
fn still_sampling(load: &RunProgress) -> bool {
    matches!(load.stage, RunStage::Starting | RunStage::Load | RunStage::Drain)
}

/// Whether the load generator should be told `wanted`: its run is not over
/// and the list it reads is not this one.
pub fn needs_push(load: &RunProgress, wanted: &[String]) -> bool {
    still_sampling(load) && load.metrics_targets.as_deref() != Some(wanted)
}

/// Post the run's pods' `/metrics` URLs to the load generator's pod
/// `loadgen` when its list differs. Failures are logged, never returned:
/// the next reconcile sees the difference again.
pub async fn push(ctx: &Context, namespace: &str, names: &Names, loadgen: &str, load: &RunProgress) {
    if !still_sampling(load) {
        // no list to read for a run that is over
        return;
    }
    let urls = match current(ctx, namespace, names).await {
        Ok(urls) => urls,
        Err(error) => {
            tracing::warn!(%error, "listing the lab's pods for their metrics");
            return;
        }
    };
    if !needs_push(load, &urls) {
        return;
    }
    let path = format!("/api/v1/namespaces/{namespace}/pods/{loadgen}:{LOADGEN_PROGRESS_PORT}/proxy/metrics-targets");
    let body = serde_json::to_vec(&TargetList { metrics: urls.clone() }).expect("a target list serializes");
    let request = match http::Request::post(path)
        .header("content-type", "application/json")
        .body(body)
    {
        Ok(request) => request,
        Err(error) => return tracing::warn!(%error, "building the metrics-targets request"),
    };
    match tokio::time::timeout(Duration::from_secs(2), ctx.client.request_text(request)).await {
        Ok(Ok(_)) => tracing::info!(targets = ?urls, "metrics targets posted to the load generator"),
        Ok(Err(error)) => tracing::warn!(%error, "posting the metrics targets"),
        Err(_) => tracing::warn!("posting the metrics targets: no answer within 2 s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, PodStatus};

    fn pod(ip: Option<&str>, phase: &str, ports: &[(&str, i32)]) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: ports
                    .iter()
                    .map(|(name, port)| Container {
                        name: format!("c-{name}"),
                        ports: Some(vec![ContainerPort {
                            name: Some(name.to_string()),
                            container_port: *port,
                            ..ContainerPort::default()
                        }]),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: ip.map(String::from),
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn each_running_pods_metrics_ports_sorted_and_once() {
        let pods = [
            pod(Some("10.0.0.2"), "Running", &[("http", 8080), ("worker-metrics", 9090)]),
            pod(
                Some("10.0.0.1"),
                "Running",
                &[("worker-metrics", 9090), ("probe", 1234)],
            ),
            pod(None, "Pending", &[("http", 8080)]),
            pod(Some("10.0.0.3"), "Failed", &[("http", 8080)]),
        ];
        assert_eq!(
            wanted(&pods),
            [
                "http://10.0.0.1:9090/metrics",
                "http://10.0.0.2:8080/metrics",
                "http://10.0.0.2:9090/metrics",
            ]
        );
    }

    #[test]
    fn pushed_when_the_echoed_list_differs_and_the_run_is_not_over() {
        let urls = vec!["http://10.0.0.1:8080/metrics".to_string()];
        let mut load = RunProgress {
            stage: RunStage::Load,
            ..RunProgress::default()
        };
        assert!(needs_push(&load, &urls), "nothing posted yet");
        load.metrics_targets = Some(urls.clone());
        assert!(!needs_push(&load, &urls), "the same list");
        assert!(needs_push(&load, &[]), "every pod gone is news too");
        load.metrics_targets = None;
        load.stage = RunStage::Audit;
        assert!(!needs_push(&load, &urls), "the last sample is taken");
    }
}

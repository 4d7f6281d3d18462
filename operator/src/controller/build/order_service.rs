//! The order service: `spec.orderService.replicas` pods, each with the order
//! API and its payment workers (whose admin server exposes their metrics),
//! scraped by Prometheus through the pod annotations.

use super::pod::{self, database_env, http_probe, lab_container, lab_pod, resources, tcp_port, Images};
use super::{db_proxy, Owner, ServiceIps, API_PORT, WORKER_ADMIN_PORT};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar};
use lab_service::config::DATABASE_URL_ENV;
use relab_model::ValidatedExperiment;
use std::collections::BTreeMap;

/// The order service's own database URL: through the database fault proxy
/// when there is one (a container's `env` wins over the ConfigMap's direct
/// URL, which the load generator keeps), else the run's (the ConfigMap's,
/// or an external database's Secret).
fn order_service_database_env(experiment: &ValidatedExperiment, ips: &ServiceIps) -> Option<Vec<EnvVar>> {
    match db_proxy::order_service_database_url(ips) {
        Some(url) => Some(vec![EnvVar {
            name: DATABASE_URL_ENV.into(),
            value: Some(url),
            ..EnvVar::default()
        }]),
        None => database_env(experiment),
    }
}

/// The `api` container: `lab-service api` on [`API_PORT`].
pub fn api(owner: &Owner, experiment: &ValidatedExperiment, images: &Images, ips: &ServiceIps) -> Container {
    Container {
        env: order_service_database_env(experiment, ips),
        ports: Some(vec![tcp_port("http", API_PORT)]),
        readiness_probe: Some(http_probe("/readyz", "http", 2)),
        liveness_probe: Some(http_probe("/healthz", "http", 10)),
        resources: Some(resources("100m", "64Mi", "1", "512Mi")),
        ..lab_container(owner, images, "api", &["api"])
    }
}

/// The `worker` container: `lab-service worker`, its admin server on [`WORKER_ADMIN_PORT`].
pub fn worker(owner: &Owner, experiment: &ValidatedExperiment, images: &Images, ips: &ServiceIps) -> Container {
    Container {
        env: order_service_database_env(experiment, ips),
        ports: Some(vec![tcp_port("worker-metrics", WORKER_ADMIN_PORT)]),
        readiness_probe: Some(http_probe("/readyz", "worker-metrics", 2)),
        liveness_probe: Some(http_probe("/healthz", "worker-metrics", 10)),
        resources: Some(resources("100m", "64Mi", "1", "512Mi")),
        ..lab_container(owner, images, "worker", &["worker"])
    }
}

/// The order service's Deployment.
pub fn deployment(owner: &Owner, experiment: &ValidatedExperiment, images: &Images, ips: &ServiceIps) -> Deployment {
    let containers = vec![
        api(owner, experiment, images, ips),
        worker(owner, experiment, images, ips),
    ];
    let mut deployment = pod::deployment(
        owner,
        owner.names.order_service(),
        "order-service",
        lab_pod(containers, "Always"),
    );
    let spec = deployment.spec.as_mut().expect("a Deployment has a spec");
    spec.replicas =
        Some(i32::try_from(experiment.spec().order_service.replicas).expect("replicas within the schema's bound"));
    let template = spec.template.metadata.get_or_insert_with(Default::default);
    template.annotations = Some(BTreeMap::from([
        ("prometheus.io/scrape".into(), "true".into()),
        ("prometheus.io/port".into(), API_PORT.to_string()),
        ("prometheus.io/path".into(), "/metrics".into()),
    ]));
    deployment
}

/// The components whose pods serve the lab's counters on `/metrics`.
pub const METRICS_COMPONENTS: [&str; 2] = ["order-service", "workers"];

/// The container ports that serve `/metrics`: the API's and the workers'
/// admin server.
pub const METRICS_PORT_NAMES: [&str; 2] = ["http", "worker-metrics"];

/// Each `/metrics` URL of one of the run's order-service (or workers) pods,
/// read by the load generator's sampler pod by pod
/// (`lab-service/src/run/targets.rs`): `http://<pod IP>:<port>/metrics` for
/// each metrics port of its containers. None before the pod has an IP or
/// once it has ended; a pod shutting down still counts (it finishes jobs).
pub fn metrics_urls(pod: &k8s_openapi::api::core::v1::Pod) -> Vec<String> {
    let status = pod.status.as_ref();
    let ended = status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| matches!(phase, "Succeeded" | "Failed"));
    let Some(ip) = status
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|ip| !ip.is_empty() && !ended)
    else {
        return Vec::new();
    };
    let containers = pod.spec.iter().flat_map(|spec| &spec.containers);
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.name.as_deref().is_some_and(|n| METRICS_PORT_NAMES.contains(&n)))
        .map(|p| format!("http://{ip}:{}/metrics", p.container_port))
        .collect()
}

//! The order service: `spec.orderService.replicas` pods, each with the order
//! API and (without `workerReplicas`) its payment workers, whose admin
//! server exposes their metrics; scraped by Prometheus through the pod
//! annotations. With `workerReplicas` the workers are pods of their own
//! ([`super::workers`]) and these run only the API.

use super::names::ORDER_SERVICE;
use super::pod::{self, database_env, http_probe, lab_container, lab_pod, resources, tcp_port, Images};
use super::{db_proxy, Owner, ServiceIps, API_PORT, WORKER_ADMIN_PORT};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar};
use lab_service::config::{DatabaseArgs, DATABASE_URL_ENV};
use relab_model::ValidatedExperiment;
use std::collections::BTreeMap;

/// A container of the order service's own database settings (a
/// container's `env` wins over the ConfigMap's): its pool of `pool`
/// connections (`databasePool`: an API's and a worker's differ), and the
/// URL through the database fault proxy when there is one (the ConfigMap's
/// direct URL is the load generator's), or an external database's Secret.
fn order_service_env(experiment: &ValidatedExperiment, ips: &ServiceIps, pool: u32) -> Vec<EnvVar> {
    let url = match db_proxy::order_service_database_url(ips) {
        Some(url) => vec![EnvVar {
            name: DATABASE_URL_ENV.into(),
            value: Some(url),
            ..EnvVar::default()
        }],
        None => database_env(experiment).unwrap_or_default(),
    };
    let pool = DatabaseArgs::pool_env(pool).into_iter().map(|(name, value)| EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    });
    url.into_iter().chain(pool).collect()
}

/// The `api` container: `lab-service api` on [`API_PORT`].
pub fn api(owner: &Owner, experiment: &ValidatedExperiment, images: &Images, ips: &ServiceIps) -> Container {
    let pool = experiment.spec().order_service.api_pool();
    Container {
        env: Some(order_service_env(experiment, ips, pool)),
        ports: Some(vec![tcp_port("http", API_PORT)]),
        readiness_probe: Some(http_probe("/readyz", "http", 2)),
        liveness_probe: Some(http_probe("/healthz", "http", 10)),
        resources: Some(resources("100m", "64Mi", "1", "512Mi")),
        ..lab_container(owner, images, "api", &["api"])
    }
}

/// The `worker` container: `lab-service worker`, its admin server (metrics,
/// probes) on [`WORKER_ADMIN_PORT`], named `worker-metrics`.
pub fn worker(owner: &Owner, experiment: &ValidatedExperiment, images: &Images, ips: &ServiceIps) -> Container {
    let pool = experiment.spec().order_service.worker_pool();
    Container {
        env: Some(order_service_env(experiment, ips, pool)),
        ports: Some(vec![tcp_port("worker-metrics", WORKER_ADMIN_PORT)]),
        readiness_probe: Some(http_probe("/readyz", "worker-metrics", 2)),
        liveness_probe: Some(http_probe("/healthz", "worker-metrics", 10)),
        resources: Some(resources("100m", "64Mi", "1", "512Mi")),
        ..lab_container(owner, images, "worker", &["worker"])
    }
}

/// Prometheus' pod annotations: scrape `/metrics` on `port`.
pub fn scrape_annotations(port: i32) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("prometheus.io/scrape".into(), "true".into()),
        ("prometheus.io/port".into(), port.to_string()),
        ("prometheus.io/path".into(), "/metrics".into()),
    ])
}

/// The order service's Deployment: the API and, without `workerReplicas`,
/// the workers in each pod.
pub fn deployment(owner: &Owner, experiment: &ValidatedExperiment, images: &Images, ips: &ServiceIps) -> Deployment {
    let os = &experiment.spec().order_service;
    let mut containers = vec![api(owner, experiment, images, ips)];
    if !os.separate_workers() {
        containers.push(worker(owner, experiment, images, ips));
    }
    let mut deployment = pod::deployment(
        owner,
        owner.names.order_service(),
        ORDER_SERVICE,
        lab_pod(containers, "Always"),
    );
    let spec = deployment.spec.as_mut().expect("a Deployment has a spec");
    spec.replicas = Some(i32::try_from(os.replicas).expect("replicas within the schema's bound"));
    let template = spec.template.metadata.get_or_insert_with(Default::default);
    template.annotations = Some(scrape_annotations(API_PORT));
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

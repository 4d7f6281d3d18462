//! The payment workers apart from the API (`spec.orderService.workerReplicas`):
//! `<run>-workers`, `workerReplicas` pods labelled component `workers`,
//! each one `worker` container (`lab-service worker`, its admin server and
//! metrics on the port named `worker-metrics`). None without the field: the
//! workers then share the order-service pods ([`super::order_service`]).

use super::names::WORKERS;
use super::order_service::{scrape_annotations, worker};
use super::pod::{self, lab_pod, Images};
use super::{Owner, ServiceIps, WORKER_ADMIN_PORT};
use k8s_openapi::api::apps::v1::Deployment;
use relab_model::ValidatedExperiment;

/// The workers' Deployment, or None when they share the order-service pods.
pub fn deployment(
    owner: &Owner,
    experiment: &ValidatedExperiment,
    images: &Images,
    ips: &ServiceIps,
) -> Option<Deployment> {
    let replicas = experiment.spec().order_service.worker_replicas?;
    let mut deployment = pod::deployment(
        owner,
        owner.names.workers(),
        WORKERS,
        lab_pod(vec![worker(owner, experiment, images, ips)], "Always"),
    );
    let spec = deployment.spec.as_mut().expect("a Deployment has a spec");
    spec.replicas = Some(i32::try_from(replicas).expect("workerReplicas within the schema's bound"));
    let template = spec.template.metadata.get_or_insert_with(Default::default);
    template.annotations = Some(scrape_annotations(WORKER_ADMIN_PORT));
    Some(deployment)
}

//! The fault-injecting payment mock: one pod serving the payment API on
//! [`MOCK_PORT`]; its settings (listen address, fault plan) are in the
//! run's ConfigMap.

use super::pod::{self, http_probe, lab_container, lab_pod, resources, tcp_port, Images};
use super::{Owner, MOCK_PORT};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use relab_model::ValidatedExperiment;

/// The `payment-mock` container.
pub fn container(owner: &Owner, images: &Images) -> Container {
    Container {
        ports: Some(vec![tcp_port("http", MOCK_PORT)]),
        readiness_probe: Some(http_probe("/healthz", "http", 2)),
        liveness_probe: Some(http_probe("/healthz", "http", 10)),
        resources: Some(resources("50m", "32Mi", "1", "256Mi")),
        ..lab_container(owner, images, "payment-mock", &["payment-mock"])
    }
}

/// The mock's pod (add its volumes here).
pub fn pod_spec(owner: &Owner, images: &Images) -> PodSpec {
    lab_pod(vec![container(owner, images)], "Always")
}

/// The payment mock's Deployment.
pub fn deployment(owner: &Owner, _experiment: &ValidatedExperiment, images: &Images) -> Deployment {
    pod::deployment(
        owner,
        owner.names.payment_mock(),
        "payment-mock",
        pod_spec(owner, images),
    )
}

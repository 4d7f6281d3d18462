//! The fault-injecting payment mock: one pod serving the payment API on
//! [`MOCK_PORT`]; its settings (listen address, fault plan, ledger file)
//! are in the run's ConfigMap. The ledger is journaled to an `emptyDir`,
//! which outlives the container: a crashed or killed mock restarts with
//! every charge and idempotency key.

use super::pod::{self, http_probe, lab_container, lab_pod, resources, tcp_port, Images};
use super::{Owner, MOCK_PORT};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EmptyDirVolumeSource, PodSpec, Volume, VolumeMount};
use relab_model::ValidatedExperiment;

/// Where the mock's ledger volume is mounted.
const LEDGER_DIR: &str = "/var/lib/relab/ledger";
/// The ledger's journal (`RELAB_LEDGER_FILE`).
pub const LEDGER_FILE: &str = "/var/lib/relab/ledger/charges.jsonl";

/// The `payment-mock` container.
pub fn container(owner: &Owner, images: &Images) -> Container {
    Container {
        ports: Some(vec![tcp_port("http", MOCK_PORT)]),
        readiness_probe: Some(http_probe("/healthz", "http", 2)),
        liveness_probe: Some(http_probe("/healthz", "http", 10)),
        resources: Some(resources("50m", "32Mi", "1", "256Mi")),
        volume_mounts: Some(vec![VolumeMount {
            name: "ledger".into(),
            mount_path: LEDGER_DIR.into(),
            ..VolumeMount::default()
        }]),
        ..lab_container(owner, images, "payment-mock", &["payment-mock"])
    }
}

/// The mock's pod, with its ledger volume.
pub fn pod_spec(owner: &Owner, images: &Images) -> PodSpec {
    PodSpec {
        volumes: Some(vec![Volume {
            name: "ledger".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }]),
        ..lab_pod(vec![container(owner, images)], "Always")
    }
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

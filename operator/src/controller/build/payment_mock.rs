//! The fault-injecting payment mock: one pod serving the payment API on
//! [`MOCK_PORT`]; its settings (listen address, fault plan, ledger file)
//! are in the run's ConfigMap. The ledger is journaled (fsynced) to a
//! PersistentVolumeClaim of the run's own ([`ledger_claim`]), which
//! outlives the container and the pod: a crashed, killed or deleted mock
//! comes back with every charge and idempotency key, like a real payment
//! provider. `--ledger-volume emptyDir` (clusters without storage) keeps
//! it for container restarts only.

use super::pod::{self, http_probe, lab_container, lab_pod, resources, tcp_port, Images};
use super::{LabDefaults, LedgerVolume};
use super::{Owner, MOCK_PORT};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
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
pub fn pod_spec(owner: &Owner, images: &Images, ledger: &LedgerVolume) -> PodSpec {
    let volume = match ledger {
        LedgerVolume::Claim { .. } => Volume {
            name: "ledger".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: owner.names.payment_ledger(),
                read_only: None,
            }),
            ..Volume::default()
        },
        LedgerVolume::EmptyDir => Volume {
            name: "ledger".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    };
    PodSpec {
        volumes: Some(vec![volume]),
        // the claim's files belong to the lab's user (volumes that manage ownership)
        security_context: Some(pod::pod_security_context(Some(pod::LAB_USER))),
        ..lab_pod(vec![container(owner, images)], "Always")
    }
}

/// The run's ledger claim (None with `--ledger-volume emptyDir`):
/// ReadWriteOnce, in the operator's `--ledger-storage-class` (default: the
/// cluster's default class). Deleted with the run's other children.
pub fn ledger_claim(owner: &Owner, defaults: &LabDefaults) -> Option<PersistentVolumeClaim> {
    let LedgerVolume::Claim { storage_class, size } = &defaults.ledger_volume else {
        return None;
    };
    Some(PersistentVolumeClaim {
        metadata: owner.metadata(owner.names.payment_ledger(), "payment-mock"),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity(size.clone()))].into()),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    })
}

/// The payment mock's Deployment.
pub fn deployment(
    owner: &Owner,
    _experiment: &ValidatedExperiment,
    images: &Images,
    defaults: &LabDefaults,
) -> Deployment {
    // Recreate (pod::deployment): one writer of the journal at a time
    pod::deployment(
        owner,
        owner.names.payment_mock(),
        "payment-mock",
        pod_spec(owner, images, &defaults.ledger_volume),
    )
}

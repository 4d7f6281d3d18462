//! The experiment's Grafana dashboard as a ConfigMap for Grafana's
//! dashboard sidecar: one per experiment (it outlives runs and the TTL),
//! remade for each run's window.

use super::names::LABEL_RUN;
use super::{Child, Owner};
use crate::crd::ReliabilityExperimentStatus;
use k8s_openapi::api::core::v1::ConfigMap;
use relab_model::ValidatedExperiment;
use std::collections::BTreeMap;

/// Component label of the dashboard ConfigMap.
pub const DASHBOARD: &str = "dashboard";

/// How the operator publishes per-experiment Grafana dashboards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardOptions {
    /// Labels Grafana's dashboard sidecar selects on (e.g. `grafana_dashboard=1`).
    pub labels: BTreeMap<String, String>,
    /// Annotations for the sidecar (e.g. `grafana_folder=relab`).
    pub annotations: BTreeMap<String, String>,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        Self {
            labels: BTreeMap::from([("grafana_dashboard".into(), "1".into())]),
            annotations: BTreeMap::new(),
        }
    }
}

/// The dashboard ConfigMap (key `relab-<namespace>-<name>.json`) for the
/// status of the current run.
pub fn dashboard(
    owner: &Owner,
    experiment: &ValidatedExperiment,
    status: &ReliabilityExperimentStatus,
    options: &DashboardOptions,
) -> Child {
    let names = &owner.names;
    let ns = owner.namespace.clone().unwrap_or_default();
    let board = crate::monitoring::dashboard::experiment(&ns, &names.experiment, experiment.spec(), status);
    let mut metadata = owner.metadata(names.dashboard(), DASHBOARD);
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.remove(LABEL_RUN);
    labels.extend(options.labels.clone());
    if !options.annotations.is_empty() {
        metadata.annotations = Some(options.annotations.clone());
    }
    let key = format!("relab-{ns}-{}.json", names.experiment);
    Child::new(&ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(
            key,
            // compact: a burst of new experiments queues one per experiment (status.rs)
            serde_json::to_string(&board).expect("dashboard serializes"),
        )])),
        ..ConfigMap::default()
    })
}

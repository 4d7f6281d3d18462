//! The paths the build step had before it moved to [`super::build`], kept
//! for callers outside the controller (the packaging tests, benches):
//! everything is re-exported, and [`workloads`] takes the stored resource
//! for its identity only.

pub use super::build::*;

use crate::crd::ReliabilityExperiment;
use relab_model::ValidatedExperiment;

/// [`super::build::workloads`] of a stored experiment (its name, namespace,
/// run and uid; the settings come from `experiment`).
pub fn workloads(
    rx: &ReliabilityExperiment,
    experiment: &ValidatedExperiment,
    ips: &ServiceIps,
    defaults: &LabDefaults,
) -> Vec<Child> {
    super::build::workloads(&Owner::of(rx), experiment, ips, defaults)
}

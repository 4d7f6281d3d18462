//! relab operator crate: the `ReliabilityExperiment` custom resource (over
//! the experiment model, `relab_model`), the local runner behind `relab
//! run`, and the controller behind `relab operator`.

pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod monitoring;

pub mod runner;

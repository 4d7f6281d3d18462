//! relab operator crate: the `ReliabilityExperiment` custom resource, its
//! validation and verdict (pure), the local runner behind `relab run`, and
//! (later) the controller.

pub mod crd;
pub mod crdgen;
pub mod lab_config;
pub mod validate;
pub mod verdict;

pub mod runner;

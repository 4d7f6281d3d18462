//! relab operator crate: the `ReliabilityExperiment` custom resource, its
//! validation and verdict (pure), the local runner behind `relab run`, and
//! the controller behind `relab operator`.

pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod lab_config;
pub mod monitoring;
pub mod status;
pub mod validate;
pub mod verdict;

pub mod runner;

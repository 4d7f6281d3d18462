//! The relab experiment model, with no Kubernetes in it.
//!
//! - [`spec`]: the `ReliabilityExperiment` spec (the CRD is generated from
//!   it; with the `kube` feature it also derives the custom resource type);
//! - [`status`] and [`results`]: what a run reports, the same shape from the
//!   local runner and the operator;
//! - [`faults`]: the payment fault model, written once for the manifest and
//!   the payment mock;
//! - [`validate`] and [`schema`]: every rule, each problem a [`FieldError`]
//!   with its path, and the [`ValidatedExperiment`] every consumer takes;
//! - [`verdict`]: judging a run against its objectives;
//! - [`disruptions`]: crashes, database restarts and database faults, and recovery.
//!
//! `cargo tree -e normal -p relab-model` shows neither `kube` nor
//! `k8s-openapi` unless the `kube` feature is on.

pub mod compare;
pub mod disruptions;
pub mod error;
pub mod faults;
pub mod ops;
pub mod results;
pub mod schema;
pub mod spec;
pub mod stats;
pub mod status;
pub mod validate;
pub mod variants;
pub mod verdict;

pub use error::FieldError;
pub use validate::{LoadStage, ValidatedExperiment};

#[cfg(feature = "kube")]
pub use spec::ReliabilityExperiment;

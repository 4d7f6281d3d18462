//! The `ReliabilityExperiment` custom resource: a thin layer over the
//! experiment model (`relab_model`), whose spec derives kube's
//! `CustomResource` when the operator turns on the model's `kube` feature.
//! Types, bounds and `kubectl explain` text live in `model/src/spec.rs` and
//! `model/src/status.rs`.

pub use relab_model::spec::*;
pub use relab_model::status::*;

use kube::ResourceExt;
use relab_model::validate::Manifest;
use relab_model::{FieldError, ValidatedExperiment};

/// The custom resource a parsed manifest describes (its name, namespace and
/// generation; the spec).
pub fn resource(manifest: Manifest) -> ReliabilityExperiment {
    let mut rx = ReliabilityExperiment::new(manifest.metadata.name.as_deref().unwrap_or_default(), manifest.spec);
    rx.metadata.namespace = manifest.metadata.namespace;
    rx.metadata.generation = manifest.metadata.generation;
    rx
}

/// The experiment a stored resource describes, with every cross-field rule
/// checked (the API server has checked the schema): the only input of the
/// controller's build step.
pub fn validated(rx: &ReliabilityExperiment) -> Result<ValidatedExperiment, Vec<FieldError>> {
    ValidatedExperiment::new(Some(&rx.name_any()), rx.spec.clone())
}

/// A manifest's text as the custom resource (the document, its schema and
/// types checked; cross-field rules are [`validated`]'s).
pub fn parse(text: &str) -> Result<ReliabilityExperiment, Vec<FieldError>> {
    relab_model::validate::parse_manifest(text).map(resource)
}

/// Every cross-field problem of a resource (empty when valid).
pub fn problems(rx: &ReliabilityExperiment) -> Vec<FieldError> {
    validated(rx).err().unwrap_or_default()
}

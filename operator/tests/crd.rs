//! The committed CRD must be what the Rust types generate (regenerate with
//! `cargo run -p relab-operator --bin relab -- crd --write .`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceDefinition, JSONSchemaProps};
use kube::CustomResourceExt;
use relab_operator::crd::{ReliabilityExperiment, ReliabilityExperimentSpec};
use relab_operator::crdgen::{apply_defaults, crd, crd_yaml, each_schema_of, CRD_PATH};

#[test]
fn committed_crd_is_up_to_date() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let committed = std::fs::read_to_string(root.join(CRD_PATH)).unwrap_or_default();
    assert!(
        committed == crd_yaml(),
        "{CRD_PATH} is stale: run `cargo run -p relab-operator --bin relab -- crd --write .` and commit it"
    );
}

#[test]
fn crd_has_the_schema_bounds_printer_columns_and_short_name() {
    let yaml = crd_yaml();
    let crd: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "rx");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Phase", "Verdict", "Success", "P95 ms", "Next run", "Age"]);
    let failure_rate = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["payment"]
        ["properties"]["failureRate"];
    assert_eq!(
        (failure_rate["minimum"].as_f64(), failure_rate["maximum"].as_f64()),
        (Some(0.0), Some(1.0)),
        "{failure_rate}"
    );
    assert!(
        failure_rate["description"]
            .as_str()
            .is_some_and(|d| d.contains("Share of calls")),
        "field docs reach the schema"
    );
}

fn spec_schema(crd: &CustomResourceDefinition) -> &JSONSchemaProps {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    &schema.properties.as_ref().unwrap()["spec"]
}

#[test]
fn the_installed_schema_states_no_default_and_each_field_says_its_own() {
    let mut installed = crd();
    each_schema_of(&mut installed, &mut |s| {
        assert!(s.default.is_none(), "a default left in {s:?}")
    });
    let mut defaults = 0;
    each_schema_of(&mut ReliabilityExperiment::crd(), &mut |s| {
        if s.default.as_ref().is_some_and(|d| d.0 != serde_json::json!({})) {
            defaults += 1;
        }
    });
    assert!(defaults > 20, "the Rust types state their defaults ({defaults})");
    let load = &spec_schema(&installed).properties.as_ref().unwrap()["load"]
        .properties
        .as_ref()
        .unwrap();
    assert!(
        load["maxInFlight"]
            .description
            .as_deref()
            .is_some_and(|d| d.ends_with("Default: `256`.")),
        "{:?}",
        load["maxInFlight"].description
    );
}

/// An experiment stored by an older CRD (the API server wrote every
/// default in) means what the same manifest means now (its defaults filled
/// in when it is read): the schema's defaults and the model's are one.
#[test]
fn every_example_means_the_same_with_the_schema_defaults_written_in() {
    let generated = ReliabilityExperiment::crd();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("deploy/examples")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let manifest: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let as_written = manifest["spec"].clone();
        let mut defaulted = as_written.clone();
        apply_defaults(&mut defaulted, spec_schema(&generated));
        assert_ne!(
            defaulted,
            as_written,
            "{}: the schema's defaults add fields",
            path.display()
        );
        let read = |v: &serde_json::Value| -> ReliabilityExperimentSpec {
            serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        assert_eq!(read(&defaulted), read(&as_written), "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 10, "{seen} examples");
}

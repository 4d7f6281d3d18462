//! The committed CRD must be what the Rust types generate (regenerate with
//! `cargo run -p relab-operator --bin relab -- crd --write .`).

use relab_operator::crdgen::{crd_yaml, CRD_PATH};

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

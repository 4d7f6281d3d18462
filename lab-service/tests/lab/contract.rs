//! The published contract: the order API's and the payment mock's OpenAPI
//! 3.1 documents, served at `/openapi.json`, generated from the handlers'
//! own annotations (`utoipa`) by the same `routes!` calls that register
//! them. Checked here against the live routes, then fuzzed by schemathesis
//! (PyPI; `scripts/tools.sh` installs it): any 5xx that is not a documented
//! injected fault, any undocumented status, content type or body shape fails.

use crate::harness::{get_json_at, LabOptions, TestLab};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Every documented (path, method) answers something other than 404/405,
/// with the path's parameters filled in.
async fn every_documented_route_exists(http: &reqwest::Client, base: &str, doc: &Value) -> usize {
    let paths = doc["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", "00000000-0000-0000-0000-000000000001")
            .replace("{order_id}", "00000000-0000-0000-0000-000000000001");
        for method in item.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = http.request(m, format!("{base}{concrete}")).send().await.unwrap();
            let status = resp.status().as_u16();
            assert!(
                status != 404 || concrete.contains("00000000"),
                "{method} {path}: documented, not routed (404)"
            );
            assert_ne!(status, 405, "{method} {path}: documented, not routed (405)");
            checked += 1;
        }
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_publish_an_openapi_document_that_matches_their_routes() {
    let lab = TestLab::start(LabOptions::default()).await;
    for (base, title, expected) in [
        (
            &lab.api_url,
            "relab order API",
            &[
                "/orders",
                "/orders/{id}",
                "/dead-letters",
                "/dead-letters/{order_id}/replay",
                "/healthz",
                "/readyz",
                "/metrics",
            ][..],
        ),
        (
            &lab.mock_url,
            "relab payment mock",
            &["/charges", "/faults", "/ledger", "/stats", "/healthz"][..],
        ),
    ] {
        let doc = get_json_at(&lab.http, &format!("{base}/openapi.json")).await;
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            doc["openapi"]
        );
        assert_eq!(doc["info"]["title"], title);
        let mut paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
        paths.sort_unstable();
        let mut want = expected.to_vec();
        want.sort_unstable();
        assert_eq!(paths, want, "{title}: documented paths");
        let checked = every_documented_route_exists(&lab.http, base, &doc).await;
        assert!(checked >= expected.len(), "{title}: {checked} operations");
    }
    // the documented bounds are the code's (one source: orders::MAX_AMOUNT_CENTS)
    let doc = serde_json::to_value(lab_service::orders::routes::contract()).unwrap();
    let amount = &doc["components"]["schemas"]["NewOrder"]["properties"]["amountCents"];
    assert_eq!(
        amount["maximum"].as_i64(),
        Some(lab_service::orders::MAX_AMOUNT_CENTS),
        "{amount}"
    );
    let customer = &doc["components"]["schemas"]["NewOrder"]["properties"]["customerId"];
    assert_eq!(
        customer["maxLength"].as_u64(),
        Some(lab_service::orders::MAX_CUSTOMER_ID_CHARS as u64),
        "{customer}"
    );
    lab.stop().await;
}

fn schemathesis() -> PathBuf {
    let cache = std::env::var("RELAB_CACHE").unwrap_or_else(|_| "/var/cache/relab".into());
    PathBuf::from(cache).join("tools/bin/schemathesis")
}

/// schemathesis against a live lab, about a minute per service: no 5xx but
/// the mock's documented injected ones (it runs with its default, healthy
/// plan), every status, content type, header and body as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_response_off_the_contract() {
    let st = schemathesis();
    assert!(
        st.is_file(),
        "{} is missing: bash scripts/tools.sh installs it (cargo xtask test runs that)",
        st.display()
    );
    let lab = TestLab::start(LabOptions::default()).await;
    for (name, base) in [("order API", &lab.api_url), ("payment mock", &lab.mock_url)] {
        let started = Instant::now();
        let run = tokio::process::Command::new(&st)
            .args(["run", &format!("{base}/openapi.json")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
                "--max-examples",
                "40",
                "--max-time",
                "60",
                "--workers",
                "2",
                "--no-color",
                "--seed",
                "7",
            ])
            // the mock's faults stay as they are: PUT /faults is fuzzed too, and
            // a random plan would inject 5xx that the checks rightly flag
            .args(["--exclude-method", "PUT"])
            .env("SCHEMATHESIS_HOOKS", "")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(150), run)
            .await
            .unwrap_or_else(|_| panic!("schemathesis on the {name} did not finish in 150 s"))
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("schemathesis, {name}: {:.0} s\n{text}", started.elapsed().as_secs_f64());
        assert!(
            out.status.success(),
            "schemathesis found problems in the {name}:\n{text}"
        );
    }
    lab.stop().await;
}

//! Metrics: valid Prometheus text (promtool), labels from route templates only.

use crate::harness::{LabOptions, TestLab};
use futures::StreamExt;
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

#[tokio::test]
async fn a_thousand_distinct_orders_make_one_series_per_route_and_promtool_accepts_the_text() {
    let lab = TestLab::start(LabOptions {
        worker: None,
        ..LabOptions::default()
    })
    .await;

    let l = &lab;
    let ids: Vec<_> = futures::stream::iter(0..1000)
        .map(|n| async move { l.create_order(100 + n).await.id })
        .buffer_unordered(16)
        .collect()
        .await;
    futures::stream::iter(ids.iter())
        .for_each_concurrent(16, |id| async {
            l.get_order(*id).await;
        })
        .await;
    let text = lab.get("/metrics").await.text().await.unwrap();

    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("relab_http_requests_total{"))
        .collect();
    let routes: BTreeSet<&str> = series
        .iter()
        .filter_map(|l| l.split("route=\"").nth(1)?.split('"').next())
        .collect();
    assert!(
        routes.contains("/orders/{id}") && routes.contains("/orders"),
        "{routes:?}"
    );
    let get_one: Vec<_> = series.iter().filter(|l| l.contains("route=\"/orders/{id}\"")).collect();
    assert_eq!(get_one.len(), 1, "one series for 1,000 ids: {get_one:?}");
    assert!(get_one[0].ends_with(" 1000"), "{}", get_one[0]);
    assert!(
        !ids.iter().any(|id| text.contains(&id.to_string())),
        "an order id leaked into a label"
    );

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: run scripts/setup.sh (Debian package prometheus)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    lab.stop().await;
}

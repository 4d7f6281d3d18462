//! Load shedding: past the queue bound the API answers 503 + Retry-After at
//! once instead of accepting work it cannot finish.

use crate::harness::{eventually, LabOptions, TestLab};
use serde_json::Value;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[tokio::test]
async fn past_the_queue_bound_new_orders_get_a_quick_503_with_retry_after() {
    let mut opts = LabOptions {
        worker: None,
        ..LabOptions::default()
    };
    opts.api.max_queue_depth = 3;
    opts.api.shed_retry_after_secs = 2;
    let lab = TestLab::start(opts).await;
    let mut accepted = Vec::new();
    for n in 0..3 {
        accepted.push(lab.create_order(100 + n).await.id);
    }
    eventually(Duration::from_secs(5), "queue depth sampled", || async {
        lab.metric("relab_queue_depth", &[]) >= 3.0
    })
    .await;

    let started = Instant::now();
    let resp = lab.post_order(&Uuid::new_v4().to_string(), 500).await;
    let took = started.elapsed();

    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "2");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    assert!(took < Duration::from_secs(2), "shedding must be quick, took {took:?}");
    assert_eq!(lab.metric("relab_load_shed_total", &[]), 1.0);
    // what was accepted is still there
    let report = lab.audit(Some(&accepted)).await;
    assert_eq!((report.orders, report.lost_orders), (3, 0));
    lab.stop().await;
}

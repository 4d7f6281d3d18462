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

/// Under an overload far above the bound (2,000 orders as fast as 64
/// connections send them, no workers draining), the queue never holds
/// more than `maxQueueDepth` jobs: admission counts what it admitted since
/// the last 100 ms sample. Before, it read the sample alone: 2,377 jobs with
/// a bound of 1,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overload_never_queues_past_the_bound() {
    use futures::StreamExt;
    let mut opts = LabOptions {
        worker: None,
        ..LabOptions::default()
    };
    opts.api.max_queue_depth = 150;
    let lab = TestLab::start(opts).await;
    let started = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(0..2_000)
        .map(|n| {
            let lab = &lab;
            async move { lab.post_order(&format!("flood-{n}"), 100).await.status().as_u16() }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let rate = 2_000.0 / started.elapsed().as_secs_f64();
    let accepted = statuses.iter().filter(|s| **s == 201).count();
    let shed = statuses.iter().filter(|s| **s == 503).count();
    let (jobs,): (i64,) = sqlx::query_as("SELECT count(*) FROM jobs")
        .fetch_one(&lab.db.pool)
        .await
        .unwrap();
    assert_eq!(accepted + shed, 2_000, "only 201 or 503: {statuses:?}");
    assert!(
        jobs <= 150,
        "{jobs} jobs queued with a bound of 150 ({rate:.0} orders/s)"
    );
    assert_eq!(accepted as i64, jobs, "every accepted order has its job");
    assert_eq!(
        accepted, 150,
        "the bound is used to the full, then shed ({rate:.0} orders/s)"
    );
    lab.stop().await;
}

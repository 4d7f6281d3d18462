//! The bulkhead bounds concurrent payment calls; a full bulkhead defers the
//! job without spending an attempt.

use crate::harness::{fast_worker, TestLab};
use serde_json::json;
use std::time::{Duration, Instant};

async fn lab_with_bulkhead(max_concurrent: usize, max_wait: Duration, max_job_attempts: i32) -> TestLab {
    let mut worker = fast_worker();
    worker.concurrency = 8;
    worker.bulkhead_max_concurrent = max_concurrent;
    worker.bulkhead_max_wait = max_wait;
    TestLab::with_faults(worker, json!({"base": {"latency": {"baseMs": 300}}}), max_job_attempts).await
}

#[tokio::test]
async fn at_most_max_concurrent_payment_calls_run_at_once() {
    let lab = lab_with_bulkhead(2, Duration::from_secs(10), 5).await;
    let started = Instant::now();
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(lab.create_order(100 + n).await.id);
    }
    for id in &ids {
        lab.wait_for_status(*id, "paid", Duration::from_secs(20)).await;
    }
    // 8 calls of 300 ms, 2 at a time: at least 4 rounds (8 at a time would take one)
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1150),
        "bulkhead let more than 2 calls through: {took:?}"
    );
    assert_eq!(
        lab.metric("relab_bulkhead_rejections_total", &[]),
        0.0,
        "waiting, not rejecting"
    );
    lab.stop().await;
}

#[tokio::test]
async fn a_full_bulkhead_defers_jobs_without_spending_attempts() {
    // one slot, a 20 ms wait, one attempt per job: a rejection that spent an attempt would dead-letter
    let lab = lab_with_bulkhead(1, Duration::from_millis(20), 1).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(lab.create_order(100 + n).await.id);
    }
    for id in &ids {
        lab.wait_for_status(*id, "paid", Duration::from_secs(30)).await;
    }
    assert!(lab.metric("relab_bulkhead_rejections_total", &[]) >= 1.0);
    assert!(lab.metric("relab_worker_jobs_total", &[("outcome", "bulkhead_deferred")]) >= 1.0);
    let (spent,): (i64,) = sqlx::query_as("SELECT coalesce(sum(attempts), 0) FROM jobs")
        .fetch_one(&lab.db.pool)
        .await
        .unwrap();
    assert_eq!(spent, 0);
    lab.stop().await;
}

//! The retry contract end to end: attempts, what is retried, Retry-After,
//! and the lost-response case with and without idempotency keys.

use crate::harness::{api_config, fast_worker, plan, LabOptions, TestLab};
use lab_service::resilience::BackoffConfig;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn retry_schedule_spends_exactly_the_configured_calls_then_dead_letters() {
    // 3 calls per retry loop (1 + 2 retries), 2 loops per job: 6 calls in all
    let mut worker = fast_worker();
    worker.retry_max_attempts = 3;
    worker.backoff = BackoffConfig {
        initial: Duration::from_millis(40),
        max: Duration::from_millis(80),
        multiplier: 2.0,
        jitter: 0.0,
    };
    let lab = TestLab::with_faults(worker, json!({"base": {"failureRate": 1.0}}), 2).await;
    let started = Instant::now();

    let order = lab.create_order(1000).await;
    let done = lab
        .wait_for_status(order.id, "dead_lettered", Duration::from_secs(20))
        .await;

    let elapsed = started.elapsed();
    let stats = lab.mock_stats().await;
    assert_eq!(stats["calls"], 6, "2 loops x 3 attempts: {stats}");
    assert_eq!(lab.metric("relab_retries_total", &[]), 4.0, "2 retries per loop");
    assert_eq!(lab.metric("relab_retry_loops_total", &[("result", "gave_up")]), 2.0);
    // waits: 40 + 80 in each loop, plus the job-level backoff (40) between loops
    assert!(
        elapsed >= Duration::from_millis(280),
        "backoff waits were skipped: {elapsed:?}"
    );
    let (attempts,): (i32,) = sqlx::query_as("SELECT attempts FROM jobs WHERE order_id = $1")
        .bind(order.id)
        .fetch_one(&lab.db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 2);
    assert!(done.failure_reason.unwrap().contains("status_5xx"));
    lab.stop().await;
}

#[tokio::test]
async fn a_business_rejection_is_never_retried() {
    let lab = TestLab::start(LabOptions {
        faults: plan(json!({"base": {"declineRate": 1.0}})),
        ..LabOptions::default()
    })
    .await;

    let order = lab.create_order(1000).await;
    let done = lab.wait_for_status(order.id, "failed", Duration::from_secs(10)).await;

    assert_eq!(lab.mock_stats().await["calls"], 1);
    assert!(done.failure_reason.unwrap().starts_with("declined"));
    assert_eq!(lab.metric("relab_retry_loops_total", &[("result", "permanent")]), 1.0);
    assert_eq!(lab.audit(None).await.charges, 0);
    lab.stop().await;
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    let faults = plan(json!({
        "base": {},
        "schedule": [{"name": "limited", "startMs": 0, "endMs": 600, "faults": {"rateLimitRate": 1.0, "retryAfterSeconds": 1}}]
    }));
    let lab = TestLab::start(LabOptions {
        faults,
        ..LabOptions::default()
    })
    .await;

    let order = lab.create_order(1000).await;
    let paid = lab.wait_for_status(order.id, "paid", Duration::from_secs(10)).await;

    let took = paid.finished_at.unwrap() - paid.created_at;
    assert!(
        took >= chrono::Duration::milliseconds(950),
        "retried before Retry-After: {took}"
    );
    assert!(lab.mock_stats().await["byOutcome"]["rateLimited"].as_u64().unwrap() >= 1);
    lab.stop().await;
}

fn lost_responses_then_healthy() -> serde_json::Value {
    json!({
        "base": {},
        "schedule": [{"name": "lossy", "startMs": 0, "endMs": 700, "faults": {"lostResponseRate": 1.0, "hangMs": 300}}]
    })
}

/// Workers with a 100 ms deadline and room for many retries, against lost responses.
async fn lost_response_lab(send_idempotency_key: bool) -> TestLab {
    let mut worker = fast_worker();
    worker.payment_timeout = Duration::from_millis(100);
    worker.retry_max_attempts = 10;
    worker.send_idempotency_key = send_idempotency_key;
    TestLab::with_faults(worker, lost_responses_then_healthy(), api_config().max_job_attempts).await
}

#[tokio::test]
async fn lost_responses_are_retried_with_the_same_key_and_charged_once() {
    let lab = lost_response_lab(true).await;

    let order = lab.create_order(1000).await;
    let paid = lab.wait_for_status(order.id, "paid", Duration::from_secs(15)).await;

    let ledger = lab.ledger().await;
    let mine: Vec<_> = ledger.iter().filter(|c| c.order_id == order.id).collect();
    assert_eq!(mine.len(), 1, "charged exactly once: {mine:?}");
    assert_eq!(
        paid.charge_id.as_deref(),
        Some(mine[0].charge_id.as_str()),
        "the replayed charge is the one recorded"
    );
    let stats = lab.mock_stats().await;
    assert!(stats["byOutcome"]["lostResponse"].as_u64().unwrap() >= 1, "{stats}");
    assert!(lab.metric("relab_payment_failures_total", &[("reason", "timeout")]) >= 1.0);
    assert!(lab.audit(None).await.passed());
    lab.stop().await;
}

#[tokio::test]
async fn without_idempotency_keys_lost_responses_double_charge_and_the_audit_says_so() {
    let lab = lost_response_lab(false).await;

    let order = lab.create_order(1000).await;
    lab.wait_for_status(order.id, "paid", Duration::from_secs(15)).await;

    let report = lab.audit(None).await;
    assert_eq!(report.double_charged_orders, 1, "{report:?}");
    assert!(report.extra_charges >= 1);
    assert!(!report.passed());
    lab.stop().await;
}

//! The breaker inside the pipeline: every transition happens, and a
//! rejection in open OR half-open defers the job without spending an attempt.

use crate::harness::{eventually, fast_worker, TestLab};
use lab_service::resilience::{BreakerConfig, BreakerMode};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn breaker_walks_every_transition_and_its_rejections_spend_no_attempt() {
    let mut worker = fast_worker();
    worker.concurrency = 4;
    worker.retry_max_attempts = 10;
    worker.breaker = BreakerConfig {
        mode: BreakerMode::ConsecutiveFailures { threshold: 3 },
        open_timeout: Duration::from_millis(300),
        half_open_probes: 1,
    };
    // one retry loop per job: a rejection counted as a failed loop would dead-letter at once
    let lab = TestLab::with_faults(
        worker,
        json!({"base": {"failureRate": 1.0, "failureStatuses": [503], "latency": {"baseMs": 60}}}),
        1,
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(lab.create_order(100 + n).await.id);
    }

    // the dependency is down: closed -> open -> half-open -> open, with half-open rejections
    eventually(
        Duration::from_secs(15),
        "a failed probe re-opens the breaker",
        || async {
            lab.metric(
                "relab_breaker_transitions_total",
                &[("from", "half_open"), ("to", "open")],
            ) >= 1.0
        },
    )
    .await;
    eventually(Duration::from_secs(15), "a call is rejected in half-open", || async {
        lab.metric("relab_breaker_rejections_total", &[("state", "half_open")]) >= 1.0
    })
    .await;
    assert!(lab.metric("relab_breaker_rejections_total", &[("state", "open")]) >= 1.0);
    // it recovers: half-open -> closed
    lab.set_faults(json!({"base": {"latency": {"baseMs": 5}}})).await;
    for id in &ids {
        lab.wait_for_status(*id, "paid", Duration::from_secs(20)).await;
    }

    for (from, to) in [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("half_open", "closed"),
    ] {
        assert!(
            lab.metric("relab_breaker_transitions_total", &[("from", from), ("to", to)]) >= 1.0,
            "{from} -> {to}"
        );
    }
    assert_eq!(lab.metric("relab_breaker_state", &[]), 0.0, "closed at the end");
    assert!(lab.metric("relab_retry_loops_total", &[("result", "breaker_rejected")]) >= 1.0);
    let (spent, dead): (i64, i64) =
        sqlx::query_as("SELECT coalesce(sum(attempts), 0), count(*) FILTER (WHERE status = 'dead') FROM jobs")
            .fetch_one(&lab.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (spent, dead),
        (0, 0),
        "breaker rejections spent attempts or dead-lettered jobs"
    );
    assert!(lab.audit(None).await.passed());
    lab.stop().await;
}

#[tokio::test]
async fn with_the_breaker_open_the_dependency_sees_far_fewer_calls() {
    async fn calls_during_outage(mode: BreakerMode) -> u64 {
        let mut worker = fast_worker();
        worker.retry_max_attempts = 3;
        worker.breaker = BreakerConfig {
            mode,
            open_timeout: Duration::from_secs(5),
            half_open_probes: 1,
        };
        let lab = TestLab::with_faults(worker, json!({"base": {"failureRate": 1.0}}), 1000).await;
        for n in 0..10 {
            lab.create_order(100 + n).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let calls = lab.mock_stats().await["calls"].as_u64().unwrap();
        lab.stop().await;
        calls
    }
    let with = calls_during_outage(BreakerMode::ConsecutiveFailures { threshold: 3 }).await;
    let without = calls_during_outage(BreakerMode::Disabled).await;
    // Before it opens, the breaker admits calls while fewer than `threshold`
    // failures are recorded; with `concurrency` workers, up to
    // concurrency - 1 more are already in flight when the third fails. None
    // gets through the 5 s open window. (A bound of 4 failed once in CI:
    // two calls were in flight when the breaker opened.)
    let bound = 3 + fast_worker().concurrency as u64 - 1;
    assert!(
        with <= bound,
        "breaker let {with} calls through (at most {bound} before it opens)"
    );
    eprintln!("calls during the outage: with the breaker {with}, without {without}");
    assert!(without >= 5 * bound, "without the breaker: {without}, with: {with}");
}

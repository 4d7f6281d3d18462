//! `orderService.workerReplicas` and `databasePool` on the local runner:
//! the workers run apart from the API replicas, each process with its own
//! pool, and every process's `/metrics` is read once (the payment calls the
//! workers counted equal the mock's, the paid orders in the database equal
//! the ledger's charges); a `KillWorkers` drill kills worker processes only.

use relab_model::disruptions::DisruptionAction;
use relab_operator::crd::VerdictResult;
use relab_operator::runner::LocalRun;

#[path = "common/local.rs"]
mod local;
use local::{invariants_hold, is_running, pid_in};

/// One run at a time: two cores, real processes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn test_database_url() -> String {
    std::env::var("RELAB_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `seconds` of load at 30 orders/s (scaled 0.5 by the caller), two API
/// replicas and `worker_replicas` worker processes of 4 job loops, small
/// pools (the test server is shared), leases of 3 s, and `extra` spec lines.
fn manifest(name: &str, seconds: u32, worker_replicas: u32, extra: &str) -> String {
    format!(
        r#"apiVersion: relab.dev/v1alpha1
kind: ReliabilityExperiment
metadata: {{name: {name}}}
spec:
  load: {{ratePerSecond: 30, durationSeconds: {seconds}}}
  payment: {{seed: 5, latency: {{baseMs: 20, jitterMs: 20}}}}
  orderService:
    replicas: 2
    workerReplicas: {worker_replicas}
    workers: 4
    databasePool: {{api: 4, workers: 6}}
    leaseSeconds: 3
  objectives:
    maxLostOrders: 0
    maxDoubleCharges: 0
{extra}"#
    )
}

fn verdict(run: &LocalRun) -> VerdictResult {
    run.status.verdict.as_ref().expect("verdict").result
}

#[tokio::test]
async fn separate_workers_pay_everything_and_their_counters_match_the_database_and_the_ledger() {
    let _one = ONE_AT_A_TIME.lock().await;
    let text = manifest("worker-replicas", 8, 2, "    successRatio: 0.99\n");
    let run = local::run_text(&text, 0.5, Some(test_database_url())).await;
    let r = run.status.results.as_ref().expect("results");
    invariants_hold(r);
    assert!(r.orders.accepted >= 100, "{:?}", r.orders);
    assert_eq!(r.orders.paid, r.orders.accepted, "all paid: {:?}", r.orders);
    // the database (paid) and the ledger (charges) agree, and the workers'
    // counted calls (their /metrics, each read once) are the mock's calls
    assert_eq!(r.payment.charges, r.orders.paid, "{:?}", r.payment);
    assert_eq!(r.payment.calls, r.payment.injected.calls, "{:?}", r.payment);
    assert_eq!(
        r.payment.calls, r.orders.paid,
        "no faults: one call each: {:?}",
        r.payment
    );
    assert_eq!(r.retries.succeeded, r.orders.paid, "{:?}", r.retries);
    assert_eq!(verdict(&run), VerdictResult::Passed, "{:?}", run.status.verdict);
}

#[tokio::test]
async fn kill_workers_with_separate_workers_kills_worker_processes_only() {
    let _one = ONE_AT_A_TIME.lock().await;
    let text = manifest(
        "kill-separate-workers",
        16,
        3,
        "    maxRecoverySeconds: 30\n  disruptions:\n    - {name: crash-workers, atSeconds: 6, action: KillWorkers, fraction: 0.5}\n",
    );
    let run = local::run_text(&text, 0.5, Some(test_database_url())).await;
    let r = run.status.results.as_ref().expect("results");
    assert_eq!(r.disruptions.len(), 1, "{:?}", r.disruptions);
    let d = &r.disruptions[0];
    assert_eq!(d.action, DisruptionAction::KillWorkers);
    assert!(d.fired_at_seconds.is_some() && d.error.is_none(), "{d:?}");
    assert_eq!(d.hit.len(), 2, "half of 3 worker processes, rounded up: {:?}", d.hit);
    for h in &d.hit {
        assert!(h.starts_with("worker pid "), "only workers are hit: {h}");
        assert!(!is_running(pid_in(h)), "{h} still runs");
    }
    let i = &r.invariants;
    assert_eq!(
        (i.lost_orders, i.stuck_orders, i.double_charges, i.paid_without_charge),
        (0, 0, 0, 0),
        "{i:?}"
    );
    assert_eq!(
        r.orders.paid + r.orders.failed + r.orders.dead_lettered,
        r.orders.accepted,
        "{:?}",
        r.orders
    );
    // the APIs were not touched: every order of the load was accepted
    assert_eq!(r.orders.accepted, r.orders.sent, "{:?}", r.orders);
    assert_eq!(r.payment.charges, r.orders.paid, "{:?}", r.payment);
    assert_eq!(verdict(&run), VerdictResult::Passed, "{:?}", run.status.verdict);
}

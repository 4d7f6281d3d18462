//! `spec.disruptions` on the local runner, for real: the whole order service
//! SIGKILLed and started again (each run asserts the disruption fired, what
//! it hit, that recovery was measured, that nothing was lost or charged
//! twice, and the verdict); the audit can fail (without idempotency keys,
//! with lost responses and a worker crash mid-charge, double charges are
//! found and the verdict is Failed); a restart refused where it cannot be
//! carried out. The other four actions run as the examples that
//! demonstrate them (`operator/tests/examples.rs`: worker-crash,
//! database-restart, database-slow, database-outage), with the same checks.

use relab_model::disruptions::{DisruptionAction, DisruptionResult};
use relab_operator::crd::VerdictResult;
use relab_operator::runner::LocalRun;
use std::process::Command;

#[path = "common/local.rs"]
mod local;
use local::{is_running, pid_in};

/// One run at a time: two cores, real processes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn test_database_url() -> String {
    std::env::var("RELAB_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// 20 s of load at 30 orders/s scaled 0.5 (10 s), leases of 3 s (a killed
/// worker's jobs are taken over within 3 s), the disruption `line`.
fn manifest(name: &str, order_service: &str, payment: &str, disruption: &str, objectives: &str) -> String {
    format!(
        r#"apiVersion: relab.dev/v1alpha1
kind: ReliabilityExperiment
metadata: {{name: {name}}}
spec:
  load: {{ratePerSecond: 30, durationSeconds: 20}}
  payment: {{seed: 9, latency: {{baseMs: 30, jitterMs: 30}}{payment}}}
  orderService: {{workers: 4, leaseSeconds: 3, paymentTimeoutMs: 1000{order_service}, retry: {{maxAttempts: 4, initialBackoffMs: 20, maxBackoffMs: 200}}}}
  disruptions:
    - {disruption}
  objectives:
{objectives}
"#
    )
}

const SAFE: &str = "    maxLostOrders: 0\n    maxDoubleCharges: 0\n    maxRecoverySeconds: 30";

/// `relab run` in-process (`ephemeral`: on its own Postgres, else on the
/// test server), the order service's children run by the `relab` binary.
async fn run(text: &str, ephemeral: bool) -> LocalRun {
    local::run_text(text, 0.5, (!ephemeral).then(test_database_url)).await
}

fn verdict(run: &LocalRun) -> VerdictResult {
    run.status.verdict.as_ref().expect("verdict").result
}

fn the_disruption(run: &LocalRun) -> DisruptionResult {
    let r = run.status.results.as_ref().expect("results");
    assert_eq!(r.disruptions.len(), 1, "{:?}", r.disruptions);
    r.disruptions[0].clone()
}

/// Fired, hit something, recovered (measured), nothing lost or charged twice.
fn fired_and_recovered(run: &LocalRun, action: DisruptionAction) -> DisruptionResult {
    let d = the_disruption(run);
    let r = run.status.results.as_ref().unwrap();
    assert_eq!(d.action, action);
    assert!(d.fired_at_seconds.is_some(), "not fired: {d:?}");
    assert!(d.error.is_none(), "{d:?}");
    assert!(!d.hit.is_empty(), "hit nothing: {d:?}");
    assert!(d.recovery_seconds.is_some(), "recovery not measured: {d:?}");
    let i = &r.invariants;
    assert_eq!(
        (i.lost_orders, i.stuck_orders, i.double_charges, i.paid_without_charge),
        (0, 0, 0, 0),
        "{i:?}"
    );
    assert!(r.orders.paid > 100, "{:?}", r.orders);
    assert_eq!(
        r.orders.paid + r.orders.failed + r.orders.dead_lettered,
        r.orders.accepted,
        "{:?}",
        r.orders
    );
    d
}

#[tokio::test]
async fn kill_order_service_kills_every_api_and_worker_process_and_it_comes_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let text = manifest(
        "kill-order-service",
        "",
        "",
        "{name: crash-api, atSeconds: 8, action: KillOrderService}",
        SAFE,
    );
    let run = run(&text, false).await;
    let d = fired_and_recovered(&run, DisruptionAction::KillOrderService);
    assert!(d.hit.iter().any(|h| h.starts_with("api pid ")), "{:?}", d.hit);
    assert!(d.hit.iter().any(|h| h.starts_with("worker pid ")), "{:?}", d.hit);
    for h in &d.hit {
        assert!(!is_running(pid_in(h)), "{h} still runs");
    }
    assert_eq!(verdict(&run), VerdictResult::Passed, "{:?}", run.status.verdict);
    let r = run.status.results.as_ref().unwrap();
    assert!(r.orders.accepted > 250, "the API came back on its port: {:?}", r.orders);
}

/// The audit must be able to fail: no idempotency keys, lost responses
/// (charged, answer lost: the retry charges again) and a worker crash
/// mid-charge (the job taken over charges again).
#[tokio::test]
async fn without_idempotency_keys_a_worker_crash_and_lost_responses_double_charge_and_fail() {
    let _one = ONE_AT_A_TIME.lock().await;
    let text = manifest(
        "double-charges",
        ", replicas: 2, idempotencyKeys: false, maxJobAttempts: 5",
        ", lostResponseRate: 0.1",
        "{name: crash, atSeconds: 8, action: KillWorkers, fraction: 1.0}",
        SAFE,
    );
    let run = run(&text, false).await;
    let d = the_disruption(&run);
    assert_eq!(d.hit.len(), 2, "both worker processes: {:?}", d.hit);
    let r = run.status.results.as_ref().unwrap();
    assert!(
        r.invariants.double_charges > 0,
        "double charges found: {:?}",
        r.invariants
    );
    assert_eq!(verdict(&run), VerdictResult::Failed, "{:?}", run.status.verdict);
    let double = run
        .status
        .verdict
        .as_ref()
        .unwrap()
        .objectives
        .iter()
        .find(|o| o.name == "maxDoubleCharges")
        .expect("a maxDoubleCharges row")
        .clone();
    assert!(!double.passed, "{double:?}");
}

#[test]
fn restart_database_on_an_existing_server_is_refused_before_the_run_naming_the_disruption() {
    let dir = std::env::temp_dir().join(format!("relab-disrupt-refuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("manifest.yaml");
    let text = manifest(
        "refused",
        "",
        "",
        "{name: db-restart, atSeconds: 8, action: RestartDatabase}",
        SAFE,
    );
    // a second disruption first, so the index is not always 0
    let text = text.replace(
        "  disruptions:\n",
        "  disruptions:\n    - {name: crash, atSeconds: 4, action: KillWorkers, fraction: 1.0}\n",
    );
    std::fs::write(&path, text).unwrap();
    let db = test_database_url();
    let out = Command::new(env!("CARGO_BIN_EXE_relab"))
        .args(["run", path.to_str().unwrap(), "--quiet", "--database-url", &db])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("spec.disruptions[1]"), "{stderr}");
    assert!(stderr.contains("--database-url"), "{stderr}");
    assert!(!stderr.contains("spec.disruptions[0]"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! Every example in deploy/examples/ through the real local runner against a
//! real Postgres (a fresh database per run), time-scaled, asserting from the
//! status what the example says it demonstrates.

use lab_service::summary::RunResults;
use relab_operator::crd::VerdictResult;
use relab_operator::runner::{self, LocalRun, RunOptions};
use tokio_util::sync::CancellationToken;

fn admin_url() -> String {
    std::env::var("RELAB_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn run_example(file: &str, time_scale: f64) -> LocalRun {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let (experiment, _) = runner::load_manifest(&text, time_scale).unwrap_or_else(|e| panic!("{file}: {e}"));
    let opts = RunOptions {
        database_url: Some(admin_url()),
        ..RunOptions::default()
    };
    let (tx, _rx) = tokio::sync::watch::channel(Default::default());
    let run = runner::run_local(&experiment, &opts, tx, CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    eprintln!("{}", runner::table::render(&run.name, &run.status));
    run
}

fn results(run: &LocalRun) -> &RunResults {
    run.status.results.as_ref().expect("results")
}

fn verdict(run: &LocalRun) -> VerdictResult {
    run.status.verdict.as_ref().expect("verdict").result
}

fn invariants_hold(r: &RunResults) {
    let i = &r.invariants;
    assert_eq!(
        (
            i.lost_orders,
            i.stuck_orders,
            i.double_charges,
            i.charges_without_order,
            i.paid_without_charge
        ),
        (0, 0, 0, 0, 0),
        "{i:?}"
    );
}

/// Payment calls made while the named fault phase was active.
/// Payment calls in the timeline's seconds that `phase` of the (scaled) plan covers.
fn calls_during(run: &LocalRun, phase: &str, plan: &lab_service::payment_mock::FaultPlan) -> u64 {
    let ph = plan.schedule.iter().find(|p| p.name == phase).expect("phase");
    let start = (ph.start_ms / 1000) as u32;
    let end = ph.end_ms.map_or(u32::MAX, |e| e.div_ceil(1000) as u32);
    run.output
        .timeline
        .iter()
        .filter(|p| p.second >= start && p.second < end)
        .map(|p| p.payment_calls)
        .sum()
}

#[tokio::test]
async fn baseline_pays_everything_without_retries() {
    let run = run_example("baseline.yaml", 0.25).await;
    let r = results(&run);
    assert_eq!(verdict(&run), VerdictResult::Passed, "{:?}", run.status.verdict);
    assert!(r.orders.accepted > 200, "{:?}", r.orders);
    assert_eq!(r.orders.paid, r.orders.accepted);
    assert_eq!(r.retries.retries, 0);
    assert!(r.breaker.transitions.is_empty(), "{:?}", r.breaker);
    invariants_hold(r);
    assert_eq!(run.exit_code(), 0);
}

#[tokio::test]
async fn flaky_payments_are_absorbed_by_retries() {
    let run = run_example("flaky-payments.yaml", 0.25).await;
    let r = results(&run);
    assert!(
        (0.2..0.4).contains(&r.payment.injected.failure_rate),
        "injected {:?}",
        r.payment.injected
    );
    assert!(r.retries.retries > 0);
    assert!(r.success_ratio >= 0.99, "{}", r.success_ratio);
    invariants_hold(r);
    assert_eq!(verdict(&run), VerdictResult::Passed, "{:?}", run.status.verdict);
}

#[tokio::test]
async fn the_breaker_shields_the_payment_service_during_an_outage_and_the_drill_passes_only_with_it() {
    let with = run_example("outage-drill.yaml", 0.5).await;
    let without = run_example("outage-drill-no-breaker.yaml", 0.5).await;
    let plan = runner::load_manifest(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/examples/outage-drill.yaml"
        ))
        .unwrap(),
        0.5,
    )
    .unwrap()
    .0
    .fault_plan();
    let (rw, rn) = (results(&with), results(&without));

    let t = &rw.breaker.transitions;
    assert!(t.get("closed->open").copied().unwrap_or(0) >= 1, "{t:?}");
    assert!(t.get("open->half_open").copied().unwrap_or(0) >= 1, "{t:?}");
    assert!(
        t.get("half_open->closed").copied().unwrap_or(0) >= 1,
        "recovered: {t:?}"
    );
    assert!(rw.retries.breaker_rejected > 0);
    assert!(rn.breaker.transitions.is_empty());
    let (calls_with, calls_without) = (
        calls_during(&with, "outage", &plan),
        calls_during(&without, "outage", &plan),
    );
    assert!(
        calls_with * 3 < calls_without,
        "outage calls with breaker {calls_with}, without {calls_without}"
    );
    assert_eq!(verdict(&with), VerdictResult::Passed, "{:?}", with.status.verdict);
    assert_eq!(rw.orders.dead_lettered, 0);
    assert_eq!(verdict(&without), VerdictResult::Failed);
    assert!(rn.orders.dead_lettered > 0, "{:?}", rn.orders);
    invariants_hold(rw);
    invariants_hold(rn);
}

#[tokio::test]
async fn lost_responses_end_with_zero_double_charges() {
    let run = run_example("lost-responses.yaml", 0.25).await;
    let r = results(&run);
    assert!(r.payment.injected.lost_response_rate > 0.05, "{:?}", r.payment.injected);
    assert!(r.payment.failures_by_reason.get("timeout").copied().unwrap_or(0) > 0);
    invariants_hold(r);
    assert_eq!(verdict(&run), VerdictResult::Passed, "{:?}", run.status.verdict);
}

#[tokio::test]
async fn overload_is_shed_and_nothing_accepted_is_lost() {
    let run = run_example("overload.yaml", 0.25).await;
    let r = results(&run);
    assert!(r.orders.shed > 0, "{:?}", r.orders);
    assert!(
        r.max_queue_depth >= 100,
        "queue reached its bound: {}",
        r.max_queue_depth
    );
    assert_eq!(r.orders.paid, r.orders.accepted, "{:?}", r.orders);
    invariants_hold(r);
    assert_eq!(verdict(&run), VerdictResult::Passed, "{:?}", run.status.verdict);
}

//! Every example in deploy/examples/ through the real local runner against a
//! real Postgres (a fresh database per run), time-scaled, asserting from the
//! status what the example says it demonstrates.

use lab_service::summary::RunResults;
use relab_operator::crd::VerdictResult;
use relab_operator::runner::{self, LocalRun};

#[path = "common/local.rs"]
mod local;
use local::{invariants_hold, is_running, pid_in};

fn admin_url() -> String {
    std::env::var("RELAB_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn run_example(file: &str, time_scale: f64) -> LocalRun {
    run_example_on(file, time_scale, Some(admin_url())).await
}

/// `database_url: None`: on an ephemeral Postgres of its own (what a
/// `RestartDatabase` disruption restarts).
async fn run_example_on(file: &str, time_scale: f64, database_url: Option<String>) -> LocalRun {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    local::run_text(&text, time_scale, database_url).await
}

fn results(run: &LocalRun) -> &RunResults {
    run.status.results.as_ref().expect("results")
}

fn verdict(run: &LocalRun) -> VerdictResult {
    run.status.verdict.as_ref().expect("verdict").result
}

/// Payment calls made while the named fault phase was active.
/// Payment calls in the timeline's seconds that `phase` of the (scaled) plan covers.
fn calls_during(run: &lab_service::run::RunOutput, phase: &str, plan: &lab_service::payment_mock::FaultPlan) -> u64 {
    let ph = plan.schedule.iter().find(|p| p.name == phase).expect("phase");
    let start = (ph.start_ms / 1000) as u32;
    let end = ph.end_ms.map_or(u32::MAX, |e| e.div_ceil(1000) as u32);
    run.timeline
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

/// A variant's results (merged over its runs) and its verdict.
fn variant<'a>(run: &'a LocalRun, name: &str) -> &'a relab_model::status::VariantStatus {
    run.status
        .variants
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no variant {name}"))
}

/// The first lab run of a variant.
fn first_run<'a>(run: &'a LocalRun, name: &str) -> &'a runner::LabRunOutput {
    run.runs
        .iter()
        .find(|r| r.variant.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no lab run of {name}"))
}

#[tokio::test]
async fn the_nightly_drill_passes_with_the_breaker_and_its_stop_conditions_never_fire() {
    let run = run_example("nightly-outage-drill.yaml", 0.5).await;
    let r = results(&run);
    assert_eq!(verdict(&run), VerdictResult::Passed, "{:?}", run.status.verdict);
    assert!(
        r.stopped.is_none(),
        "a healthy breaker trips no stop condition: {:?}",
        r.stopped
    );
    invariants_hold(r);
    let t = &r.breaker.transitions;
    assert!(
        t.get("closed->open").copied().unwrap_or(0) >= 1,
        "the outage opened the breaker: {t:?}"
    );
    let rows: Vec<&str> = run
        .status
        .verdict
        .as_ref()
        .unwrap()
        .objectives
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    assert!(!rows.contains(&"stopWhen"), "{rows:?}");
}

#[tokio::test]
async fn the_breaker_shields_the_payment_service_during_an_outage_and_the_drill_passes_only_with_it() {
    let run = run_example("outage-drill.yaml", 0.5).await;
    assert_eq!(verdict(&run), VerdictResult::Passed, "{:?}", run.status.verdict);
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
    let (with, without) = (variant(&run, "with-breaker"), variant(&run, "no-breaker"));
    let (rw, rn) = (with.results.as_ref().unwrap(), without.results.as_ref().unwrap());

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
        calls_during(&first_run(&run, "with-breaker").output, "outage", &plan),
        calls_during(&first_run(&run, "no-breaker").output, "outage", &plan),
    );
    assert!(
        calls_with * 3 < calls_without,
        "outage calls with breaker {calls_with}, without {calls_without}"
    );
    assert_eq!(with.verdict, Some(VerdictResult::Passed), "{with:?}");
    assert_eq!(with.expectation_met, Some(true));
    assert_eq!(rw.orders.dead_lettered, 0);
    assert_eq!(without.verdict, Some(VerdictResult::Failed));
    assert_eq!(without.expectation_met, Some(true), "meant to fail, and it did");
    assert!(rn.orders.dead_lettered > 0, "{:?}", rn.orders);
    invariants_hold(rw);
    invariants_hold(rn);
    // the comparison shows the difference in payment calls
    let ratio = run
        .status
        .comparison
        .as_ref()
        .and_then(|c| c.ratio.clone())
        .expect("two variants: a ratio");
    assert_eq!(ratio.variant, "no-breaker / with-breaker");
    assert!(ratio.payment_calls > 1.2, "{ratio:?}");
    // executed interleaved, one at a time, each run recorded with its seed
    let order: Vec<_> = run.runs.iter().map(|r| r.variant.clone().unwrap()).collect();
    assert_eq!(order, ["with-breaker", "no-breaker"]);
    assert_eq!(run.status.execution.as_ref().unwrap().concurrency, 1);
    assert_eq!(with.runs[0].seed, 42);
}

#[tokio::test]
async fn a_sweep_recommends_the_cheapest_configuration_that_passes() {
    let run = run_example("retry-sweep.yaml", 0.25).await;
    assert_eq!(run.status.variants.len(), 6);
    let rec = run.status.recommendation.as_ref().expect("a sweep recommends");
    assert!(rec.rule.contains("fewest payment calls per paid order"), "{rec:?}");
    let passing: Vec<_> = run
        .status
        .variants
        .iter()
        .filter(|v| v.verdict == Some(VerdictResult::Passed))
        .collect();
    match &rec.variant {
        Some(name) => {
            let chosen = variant(&run, name);
            assert_eq!(chosen.verdict, Some(VerdictResult::Passed));
            let cost = |v: &relab_model::status::VariantStatus| v.results.as_ref().unwrap().calls_per_paid_order();
            assert!(passing.iter().all(|v| cost(chosen) <= cost(v)), "{rec:?}");
        }
        None => assert!(passing.is_empty(), "none passes only when none passes: {rec:?}"),
    }
    for v in &run.status.variants {
        invariants_hold(v.results.as_ref().unwrap());
    }
    // one call per retry loop (two loops per job) cannot ride out 25% failures
    for one in run.status.variants.iter().filter(|v| v.name.ends_with("maxattempts-1")) {
        assert_eq!(
            one.verdict,
            Some(VerdictResult::Failed),
            "{}: {:?}",
            one.name,
            one.objectives
        );
    }
    assert!(
        rec.variant.as_deref().is_some_and(|v| !v.ends_with("maxattempts-1")),
        "{rec:?}"
    );
    assert_eq!(
        verdict(&run),
        VerdictResult::Passed,
        "a sweep passes when one candidate passes"
    );
}

#[tokio::test]
async fn repeated_runs_are_judged_on_their_interval() {
    let run = run_example("flaky-payments-repeated.yaml", 0.25).await;
    let only = &run.status.variants[0];
    assert_eq!(only.runs.len(), 5);
    let seeds: Vec<u64> = only.runs.iter().map(|r| r.seed).collect();
    assert_eq!(seeds, [42, 43, 44, 45, 46]);
    let row = only
        .objectives
        .iter()
        .find(|o| o.name == "endToEndLatency.p95")
        .unwrap();
    assert!(
        row.interval.lower < row.interval.point && row.interval.point < row.interval.upper,
        "{row:?}"
    );
    // the same runs re-judged: a target at the observed mean straddles the
    // interval; the same target lowered past the interval passes
    let runs: Vec<RunResults> = only.runs.iter().map(|r| r.results.clone().unwrap()).collect();
    let (experiment, _) = runner::load_manifest(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/examples/flaky-payments-repeated.yaml"
        ))
        .unwrap(),
        0.25,
    )
    .unwrap();
    let mut spec = experiment.spec().clone();
    spec.objectives.end_to_end_latency[0].max_ms = row.interval.point;
    let at_mean = relab_model::verdict::judge_repeated(&spec, &runs, 0.95);
    let e2e = at_mean
        .objectives
        .iter()
        .find(|o| o.name == "endToEndLatency.p95")
        .unwrap();
    assert_eq!(e2e.result, VerdictResult::Inconclusive, "{e2e:?}");
    spec.objectives.end_to_end_latency[0].max_ms = row.interval.upper + 1.0;
    let generous = relab_model::verdict::judge_repeated(&spec, &runs, 0.95);
    let e2e = generous
        .objectives
        .iter()
        .find(|o| o.name == "endToEndLatency.p95")
        .unwrap();
    assert_eq!(e2e.result, VerdictResult::Passed, "{e2e:?}");
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

/// The example's one disruption: fired, hit something, recovery measured.
fn fired_and_recovered(run: &LocalRun) -> relab_model::disruptions::DisruptionResult {
    let d = results(run).disruptions.first().expect("a disruption").clone();
    assert!(d.fired_at_seconds.is_some() && d.error.is_none(), "{d:?}");
    assert!(!d.hit.is_empty(), "{d:?}");
    assert!(d.recovery_seconds.is_some(), "{d:?}");
    d
}

#[tokio::test]
async fn a_worker_crash_loses_nothing_and_charges_nothing_twice() {
    let run = run_example("worker-crash.yaml", 0.5).await;
    let d = fired_and_recovered(&run);
    assert_eq!(d.hit.len(), 1, "half of 2 worker processes: {:?}", d.hit);
    assert!(d.hit[0].starts_with("worker pid "), "{:?}", d.hit);
    assert!(!is_running(pid_in(&d.hit[0])), "the victim is dead: {:?}", d.hit);
    let r = results(&run);
    assert_eq!(r.orders.paid, r.orders.accepted, "{:?}", r.orders);
    invariants_hold(r);
    assert_eq!(verdict(&run), VerdictResult::Passed, "{:?}", run.status.verdict);
    // the restarted process's counters continue (increases, not raw values)
    assert!(
        r.payment.calls >= r.orders.paid * 9 / 10,
        "{:?} {:?}",
        r.payment,
        r.orders
    );
}

#[tokio::test]
async fn a_database_restart_is_ridden_out_without_losing_an_acknowledged_order() {
    let run = run_example_on("database-restart.yaml", 0.5, None).await;
    let d = fired_and_recovered(&run);
    assert_eq!(d.hit.len(), 1, "{:?}", d.hit);
    assert!(d.hit[0].starts_with("postgres (ephemeral, pid "), "{:?}", d.hit);
    let r = results(&run);
    assert_eq!(r.orders.paid, r.orders.accepted, "{:?}", r.orders);
    invariants_hold(r);
    assert_eq!(verdict(&run), VerdictResult::Passed, "{:?}", run.status.verdict);
}

#[tokio::test]
async fn a_slow_database_fails_the_p95_honestly_and_loses_nothing() {
    let run = run_example("database-slow.yaml", 0.5).await;
    let d = fired_and_recovered(&run);
    assert!(d.hit[0].ends_with("connections delayed"), "{:?}", d.hit);
    let r = results(&run);
    assert!(r.api_latency_ms.p95 > 100.0, "{:?}", r.api_latency_ms);
    assert_eq!(r.orders.paid, r.orders.accepted, "{:?}", r.orders);
    invariants_hold(r);
    assert_eq!(verdict(&run), VerdictResult::Failed, "{:?}", run.status.verdict);
    let failed: Vec<_> = run
        .status
        .verdict
        .as_ref()
        .unwrap()
        .objectives
        .iter()
        .filter(|o| !o.passed)
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(failed, ["apiLatency.p95"], "{:?}", run.status.verdict);
}

#[tokio::test]
async fn a_database_outage_refuses_orders_and_loses_none_it_accepted() {
    let run = run_example("database-outage.yaml", 0.5).await;
    let d = fired_and_recovered(&run);
    assert!(d.hit.iter().any(|h| h.ends_with("connections reset")), "{:?}", d.hit);
    let reset: u64 = d.hit[0].split(' ').next().unwrap().parse().unwrap();
    assert!(reset > 0, "open connections were reset: {:?}", d.hit);
    let r = results(&run);
    assert!(
        r.orders.errors > 0,
        "orders placed during the outage were refused: {:?}",
        r.orders
    );
    assert_eq!(r.orders.paid, r.orders.accepted, "{:?}", r.orders);
    invariants_hold(r);
    assert_eq!(verdict(&run), VerdictResult::Passed, "{:?}", run.status.verdict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_out_the_figures_are_exact_every_process_counted_once_and_three_generators_merged() {
    let run = run_example("scale-out.yaml", 0.25).await;
    let r = results(&run);
    invariants_hold(r);
    // 60/s for 7.5 s, sent by three generators together
    assert_eq!(r.orders.sent, 450, "{:?}", r.orders);
    assert_eq!(r.api_latency_ms.count, r.orders.sent, "the three histograms merged");
    // the workers' calls, summed over both worker processes, are the mock's
    assert!(r.retries.retries > 0, "20% failures retried: {:?}", r.retries);
    assert_eq!(
        r.payment.calls, r.payment.injected.calls,
        "every worker's calls counted once: {:?}",
        r.payment
    );
    assert_eq!(r.payment.charges, r.orders.paid, "{:?}", r.payment);
    assert_eq!(verdict(&run), VerdictResult::Passed, "{:?}", run.status.verdict);
}

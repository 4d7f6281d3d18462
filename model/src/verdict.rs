//! Judging a run against its objectives: one row per objective (target,
//! observed, passed) and an overall result. The verdict is **Inconclusive**
//! rather than Passed when the run did not test what it claimed: nothing was
//! accepted, too few samples for a named percentile, or the payment service
//! injected far fewer faults than asked.

use crate::results::{Percentiles, RunResults};
use crate::spec::{LatencyObjective, LatencyRequests, Percentile, ReliabilityExperimentSpec};
use crate::stats::{mean_interval, ratio_interval, Interval};
use crate::status::{IntervalObjective, ObjectiveResult, Verdict, VerdictResult};

/// Samples needed before a percentile means something: 5 / (1 - q)
/// (p50: 10, p90: 50, p95: 100, p99: 500).
pub fn min_samples(p: Percentile) -> u64 {
    (5.0 / (1.0 - p.quantile())).round() as u64
}

/// Payment calls needed before an injected rate is compared with the asked one.
pub const MIN_CALLS_FOR_FAULT_CHECK: u64 = 50;

/// `apiLatency.p99`, or `apiLatency.p99.accepted` for one kind of answer.
fn objective_name(list: &str, o: &LatencyObjective) -> String {
    match o.requests {
        LatencyRequests::All => format!("{list}.{}", o.percentile.as_str()),
        LatencyRequests::Accepted => format!("{list}.{}.accepted", o.percentile.as_str()),
        LatencyRequests::Shed => format!("{list}.{}.shed", o.percentile.as_str()),
    }
}

fn latency_rows(
    name: &str,
    objectives: &[LatencyObjective],
    observed_for: impl Fn(LatencyRequests) -> Percentiles,
    rows: &mut Vec<ObjectiveResult>,
    reasons: &mut Vec<String>,
) {
    for o in objectives {
        let observed = observed_for(o.requests);
        let value = observed.get(o.percentile.as_str()).unwrap_or(f64::NAN);
        let needed = min_samples(o.percentile);
        let row = objective_name(name, o);
        if observed.count < needed {
            reasons.push(format!(
                "{row}: {} samples, at least {needed} are needed for this percentile",
                observed.count
            ));
        }
        rows.push(ObjectiveResult {
            name: row,
            target: format!("<= {} ms", o.max_ms),
            observed: format!("{value:.1} ms"),
            passed: value <= o.max_ms,
        });
    }
}

/// The share of the load each fault setting was active for, time-weighted
/// over the schedule: what the injected rate should roughly come out at.
/// Only the steady state (outside any phase) is checked, because a breaker
/// legitimately changes how many calls land in a phase.
fn steady_state_share(spec: &ReliabilityExperimentSpec) -> f64 {
    let total = spec.load.total_seconds() as f64;
    if total == 0.0 {
        return 0.0;
    }
    let in_phases: f64 = spec
        .payment
        .faults_schedule
        .iter()
        .map(|p| (p.end_seconds.map(f64::from).unwrap_or(total).min(total) - f64::from(p.start_seconds)).max(0.0))
        .sum();
    ((total - in_phases) / total).clamp(0.0, 1.0)
}

/// Judge `results` against `spec.objectives`.
pub fn judge(spec: &ReliabilityExperimentSpec, results: &RunResults) -> Verdict {
    let (rows, reasons) = rows_and_reasons(spec, results);
    let all_passed = rows.iter().all(|r| r.passed);
    let result = if !all_passed {
        VerdictResult::Failed
    } else if !reasons.is_empty() {
        VerdictResult::Inconclusive
    } else {
        VerdictResult::Passed
    };
    Verdict::of(result, rows, reasons)
}

/// One row per objective, and why the run did not test what it claimed.
fn rows_and_reasons(spec: &ReliabilityExperimentSpec, results: &RunResults) -> (Vec<ObjectiveResult>, Vec<String>) {
    let obj = &spec.objectives;
    let mut rows = Vec::new();
    let mut reasons = Vec::new();

    if results.orders.accepted == 0 {
        reasons.push("no order was accepted: nothing was tested".to_string());
    }
    if let Some(stopped) = &results.stopped {
        // a stopped run failed by definition: the row says what stopped it
        rows.push(ObjectiveResult {
            name: "stopWhen".into(),
            target: "none met".into(),
            observed: format!(
                "{}: {} (at {:.1} s)",
                stopped.condition, stopped.observed, stopped.at_seconds
            ),
            passed: false,
        });
    }
    if let Some(target) = obj.success_ratio {
        rows.push(ObjectiveResult {
            name: "successRatio".into(),
            target: format!(">= {target}"),
            observed: format!("{:.4}", results.success_ratio),
            passed: results.success_ratio >= target,
        });
    }
    latency_rows(
        "apiLatency",
        &obj.api_latency,
        |requests| match requests {
            LatencyRequests::All => results.api_latency_ms.clone(),
            LatencyRequests::Accepted => results.accepted_api_latency_ms.clone(),
            LatencyRequests::Shed => results.shed_api_latency_ms.clone(),
        },
        &mut rows,
        &mut reasons,
    );
    latency_rows(
        "endToEndLatency",
        &obj.end_to_end_latency,
        |_| results.end_to_end_latency_ms.clone(),
        &mut rows,
        &mut reasons,
    );
    let inv = &results.invariants;
    rows.push(ObjectiveResult {
        name: "maxDoubleCharges".into(),
        target: format!("<= {}", obj.max_double_charges),
        observed: inv.double_charges.to_string(),
        passed: inv.double_charges <= obj.max_double_charges,
    });
    let lost = inv.lost_orders + inv.stuck_orders;
    rows.push(ObjectiveResult {
        name: "maxLostOrders".into(),
        target: format!("<= {}", obj.max_lost_orders),
        observed: format!("{lost} (lost {}, stuck {})", inv.lost_orders, inv.stuck_orders),
        passed: lost <= obj.max_lost_orders,
    });

    for row in recovery_rows(spec, results) {
        rows.push(ObjectiveResult {
            name: row.name,
            target: row.target,
            observed: row.observed,
            passed: row.passed,
        });
    }
    // did every disruption fire and hit something?
    reasons.extend(results.disruptions.iter().filter_map(|d| d.inconclusive_reason()));

    // did the payment service inject what was asked? (steady state only when there is a schedule)
    let asked = &spec.payment.faults;
    let share = steady_state_share(spec);
    let injected = &results.payment.injected;
    let checks = [
        ("failureRate", asked.failure_rate, injected.failure_rate),
        ("timeoutRate", asked.timeout_rate, injected.timeout_rate),
        (
            "lostResponseRate",
            asked.lost_response_rate,
            injected.lost_response_rate,
        ),
        ("declineRate", asked.decline_rate, injected.decline_rate),
        ("rateLimitRate", asked.rate_limit_rate, injected.rate_limit_rate),
    ];
    let any_asked = checks.iter().any(|(_, a, _)| *a > 0.0) && share > 0.0;
    if any_asked && results.orders.accepted > 0 {
        if injected.calls < MIN_CALLS_FOR_FAULT_CHECK {
            reasons.push(format!(
                "only {} payment calls: at least {MIN_CALLS_FOR_FAULT_CHECK} are needed to confirm the injected faults",
                injected.calls
            ));
        } else {
            for (name, asked, seen) in checks {
                // expected share of all calls, if calls were spread evenly over time
                let expected = asked * share;
                if expected >= 0.02 && seen < expected * 0.5 {
                    reasons.push(format!(
                        "payment {name}: asked {asked} (about {expected:.3} of all calls), injected {seen:.3}"
                    ));
                }
            }
        }
    }

    (rows, reasons)
}

/// One `maxRecoverySeconds` row per disruption (none without the objective).
struct RecoveryRow {
    name: String,
    target: String,
    observed: String,
    /// The recovery in seconds (`None`: never recovered, or never fired).
    seconds: Option<f64>,
    passed: bool,
}

fn recovery_rows(spec: &ReliabilityExperimentSpec, results: &RunResults) -> Vec<RecoveryRow> {
    let Some(max) = spec.objectives.max_recovery_seconds else {
        return Vec::new();
    };
    results
        .disruptions
        .iter()
        .map(|d| {
            let observed = match (d.fired_at_seconds, d.recovery_seconds) {
                (None, _) => "did not fire".to_string(),
                (Some(_), None) => "never recovered".to_string(),
                (Some(_), Some(r)) => format!("{r:.1} s"),
            };
            RecoveryRow {
                name: format!("maxRecoverySeconds[{}]", d.name),
                target: format!("<= {max} s"),
                observed,
                seconds: d.recovery_seconds,
                passed: d.recovery_seconds.is_some_and(|r| r <= f64::from(max)),
            }
        })
        .collect()
}

/// A variant judged over its repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatedVerdict {
    pub result: VerdictResult,
    pub objectives: Vec<IntervalObjective>,
    pub inconclusive_reasons: Vec<String>,
}

fn interval_result(passes_pessimistic: bool, fails_optimistic: bool) -> VerdictResult {
    if passes_pessimistic {
        VerdictResult::Passed
    } else if fails_optimistic {
        VerdictResult::Failed
    } else {
        VerdictResult::Inconclusive
    }
}

/// Judge the runs of one variant. One run: exactly [`judge`] (each interval
/// the point). Several: every objective on its interval at `confidence`
/// ([`crate::stats`]): Passed when the pessimistic bound meets the target,
/// Failed when the optimistic bound misses it, Inconclusive when the
/// interval straddles it; the invariants (double charges, lost orders) on
/// their totals. The Inconclusive reasons of [`judge`] (nothing accepted,
/// too few samples, faults not injected) apply to the merged runs.
pub fn judge_repeated(spec: &ReliabilityExperimentSpec, runs: &[RunResults], confidence: f64) -> RepeatedVerdict {
    let merged = RunResults::merge(runs);
    let single = runs.len() == 1;
    let (_, reasons) = rows_and_reasons(spec, if single { &runs[0] } else { &merged });
    let obj = &spec.objectives;
    let mut objectives = Vec::new();
    if let Some(target) = obj.success_ratio {
        let per_run: Vec<(u64, u64)> = runs.iter().map(|r| (r.orders.paid, r.orders.accepted)).collect();
        let (interval, result) = if single {
            let i = Interval::exact(runs[0].success_ratio);
            (i, pass(i.point >= target))
        } else {
            let i = ratio_interval(&per_run, confidence);
            (i, interval_result(i.lower >= target, i.upper < target))
        };
        objectives.push(IntervalObjective {
            name: "successRatio".into(),
            target: format!(">= {target}"),
            interval,
            result,
        });
    }
    for (list, items) in [
        ("apiLatency", &obj.api_latency),
        ("endToEndLatency", &obj.end_to_end_latency),
    ] {
        for o in items {
            let of = |r: &RunResults| {
                let p = match (list, o.requests) {
                    ("endToEndLatency", _) => &r.end_to_end_latency_ms,
                    (_, LatencyRequests::All) => &r.api_latency_ms,
                    (_, LatencyRequests::Accepted) => &r.accepted_api_latency_ms,
                    (_, LatencyRequests::Shed) => &r.shed_api_latency_ms,
                };
                p.get(o.percentile.as_str()).unwrap_or(f64::NAN)
            };
            let values: Vec<f64> = runs.iter().map(of).collect();
            let (interval, result) = if single {
                let i = Interval::exact(values[0]);
                (i, pass(i.point <= o.max_ms))
            } else {
                let i = mean_interval(&values, confidence);
                (i, interval_result(i.upper <= o.max_ms, i.lower > o.max_ms))
            };
            objectives.push(IntervalObjective {
                name: objective_name(list, o),
                target: format!("<= {} ms", o.max_ms),
                interval,
                result,
            });
        }
    }
    let inv = &merged.invariants;
    let lost = (inv.lost_orders + inv.stuck_orders) as f64;
    for (name, seen, max) in [
        (
            "maxDoubleCharges",
            inv.double_charges as f64,
            obj.max_double_charges as f64,
        ),
        ("maxLostOrders", lost, obj.max_lost_orders as f64),
    ] {
        objectives.push(IntervalObjective {
            name: name.into(),
            target: format!("<= {max}"),
            interval: Interval::exact(seen),
            result: pass(seen <= max),
        });
    }
    // recovery: the slowest run's (the merge keeps it)
    for row in recovery_rows(spec, &merged) {
        objectives.push(IntervalObjective {
            name: row.name,
            target: row.target,
            interval: Interval::exact(row.seconds.unwrap_or(f64::INFINITY)),
            result: pass(row.passed),
        });
    }
    // a run stopped by stopWhen fails its variant: the interval counts the
    // stopped runs, the target names the first and why
    let stopped: Vec<(usize, &crate::ops::Stopped)> = runs
        .iter()
        .enumerate()
        .filter_map(|(k, r)| Some((k, r.stopped.as_ref()?)))
        .collect();
    if let Some((k, first)) = stopped.first() {
        objectives.push(IntervalObjective {
            name: "stopWhen".into(),
            target: format!(
                "none met (run {k}: {}: {} at {:.1} s)",
                first.condition, first.observed, first.at_seconds
            ),
            interval: Interval::exact(stopped.len() as f64),
            result: VerdictResult::Failed,
        });
    }
    let result = if objectives.iter().any(|o| o.result == VerdictResult::Failed) {
        VerdictResult::Failed
    } else if !reasons.is_empty() || objectives.iter().any(|o| o.result == VerdictResult::Inconclusive) {
        VerdictResult::Inconclusive
    } else {
        VerdictResult::Passed
    };
    RepeatedVerdict {
        result,
        objectives,
        inconclusive_reasons: crate::status::reasons_if_inconclusive(result, reasons),
    }
}

fn pass(ok: bool) -> VerdictResult {
    if ok {
        VerdictResult::Passed
    } else {
        VerdictResult::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{InjectedFaults, InvariantResults, OrderCounts, PaymentResults};
    use crate::validate::parse_manifest;

    fn spec(objectives: &str, failure_rate: f64) -> ReliabilityExperimentSpec {
        let yaml = format!(
            "apiVersion: relab.dev/v1alpha1\nkind: ReliabilityExperiment\nmetadata: {{name: t}}\nspec:\n  load: {{ratePerSecond: 10, durationSeconds: 60}}\n  payment: {{failureRate: {failure_rate}}}\n  objectives: {objectives}\n"
        );
        parse_manifest(&yaml).expect("fixture parses").spec
    }

    fn results(accepted: u64, paid: u64, p95: f64, injected_failure: f64) -> RunResults {
        RunResults {
            orders: OrderCounts {
                accepted,
                paid,
                ..Default::default()
            },
            success_ratio: if accepted == 0 {
                0.0
            } else {
                paid as f64 / accepted as f64
            },
            api_latency_ms: Percentiles {
                count: accepted,
                p95,
                ..Default::default()
            },
            payment: PaymentResults {
                injected: InjectedFaults {
                    calls: accepted * 2,
                    failure_rate: injected_failure,
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    const OBJ: &str = "{successRatio: 0.99, apiLatency: [{percentile: p95, maxMs: 250}]}";

    #[test]
    fn met_objectives_pass_with_one_row_each() {
        let v = judge(&spec(OBJ, 0.3), &results(600, 600, 120.0, 0.29));
        assert_eq!(v.result, VerdictResult::Passed, "{v:?}");
        let names: Vec<_> = v.objectives.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(
            names,
            ["successRatio", "apiLatency.p95", "maxDoubleCharges", "maxLostOrders"]
        );
        assert!(v.objectives.iter().all(|o| o.passed));
    }

    #[test]
    fn a_missed_objective_fails_and_says_which() {
        let v = judge(&spec(OBJ, 0.3), &results(600, 500, 300.0, 0.3));
        assert_eq!(v.result, VerdictResult::Failed);
        let failed: Vec<_> = v
            .objectives
            .iter()
            .filter(|o| !o.passed)
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(failed, ["successRatio", "apiLatency.p95"]);
        assert_eq!(v.objectives[1].target, "<= 250 ms");
        assert_eq!(v.objectives[1].observed, "300.0 ms");
    }

    #[test]
    fn a_stopped_run_fails_with_a_row_and_the_reason_stopped() {
        let mut r = results(600, 600, 120.0, 0.29);
        r.stopped = Some(crate::ops::Stopped {
            condition: "stopWhen[0] doubleCharges".into(),
            observed: "2 orders charged more than once".into(),
            at_seconds: 7.0,
        });
        let v = judge(&spec(OBJ, 0.3), &r);
        assert_eq!(v.result, VerdictResult::Failed, "{v:?}");
        let row = v
            .objectives
            .iter()
            .find(|o| o.name == "stopWhen")
            .expect("a stopWhen row");
        assert!(
            !row.passed && row.observed.contains("2 orders charged more than once"),
            "{row:?}"
        );
        let judged = crate::status::judged_from(v, Some(1), "2026-12-03T00:00:00Z");
        let met = &judged.conditions[1];
        assert_eq!(
            (met.reason.as_str(), met.status.as_str()),
            ("Stopped", "False"),
            "{met:?}"
        );
        assert!(met.message.contains("stopWhen[0] doubleCharges"), "{met:?}");
        // the same over repeats: one stopped run fails the variant
        let repeated = judge_repeated(&spec(OBJ, 0.3), &[results(600, 600, 120.0, 0.29), r], 0.95);
        assert_eq!(repeated.result, VerdictResult::Failed);
        assert!(repeated
            .objectives
            .iter()
            .any(|o| o.name == "stopWhen" && o.target.contains("run 1")));
    }

    #[test]
    fn invariant_violations_fail_even_without_slo_objectives() {
        let mut r = results(600, 600, 1.0, 0.0);
        r.invariants = InvariantResults {
            double_charges: 2,
            stuck_orders: 1,
            ..Default::default()
        };
        let v = judge(&spec("{}", 0.0), &r);
        assert_eq!(v.result, VerdictResult::Failed);
        assert!(
            !v.objectives
                .iter()
                .find(|o| o.name == "maxDoubleCharges")
                .unwrap()
                .passed
        );
        assert!(!v.objectives.iter().find(|o| o.name == "maxLostOrders").unwrap().passed);
    }

    #[test]
    fn too_few_samples_for_the_percentile_is_inconclusive() {
        let v = judge(
            &spec("{apiLatency: [{percentile: p99, maxMs: 250}]}", 0.0),
            &results(120, 120, 10.0, 0.0),
        );
        assert_eq!(v.result, VerdictResult::Inconclusive);
        assert!(
            v.inconclusive_reasons[0].contains("at least 500"),
            "{:?}",
            v.inconclusive_reasons
        );
    }

    #[test]
    fn faults_injected_far_below_the_ask_is_inconclusive() {
        let v = judge(&spec(OBJ, 0.3), &results(600, 600, 10.0, 0.02));
        assert_eq!(v.result, VerdictResult::Inconclusive);
        assert!(
            v.inconclusive_reasons.iter().any(|r| r.contains("failureRate")),
            "{:?}",
            v.inconclusive_reasons
        );
    }

    #[test]
    fn nothing_accepted_is_inconclusive_not_passed() {
        let v = judge(&spec("{}", 0.0), &results(0, 0, 0.0, 0.0));
        assert_eq!(v.result, VerdictResult::Inconclusive);
    }

    #[test]
    fn accepted_latency_is_judged_apart_from_shed_requests() {
        let mut r = results(600, 600, 900.0, 0.0);
        r.api_latency_ms.p99 = 900.0;
        r.accepted_api_latency_ms = Percentiles {
            count: 600,
            p99: 40.0,
            ..Default::default()
        };
        let v = judge(
            &spec("{apiLatency: [{percentile: p99, maxMs: 100, requests: Accepted}]}", 0.0),
            &r,
        );
        assert_eq!(v.result, VerdictResult::Passed, "{v:?}");
        assert_eq!(v.objectives[0].name, "apiLatency.p99.accepted");
        assert_eq!(v.objectives[0].observed, "40.0 ms");
        let v = judge(&spec("{apiLatency: [{percentile: p99, maxMs: 100}]}", 0.0), &r);
        assert_eq!(v.result, VerdictResult::Failed, "all requests include the slow ones");
    }

    fn run_with(accepted: u64, paid: u64, p95: f64) -> RunResults {
        let mut r = results(accepted, paid, p95, 0.0);
        r.api_latency_ms.count = 1_000;
        r
    }

    #[test]
    fn one_run_is_judged_exactly_as_today() {
        let spec = spec(OBJ, 0.0);
        for r in [
            run_with(600, 600, 120.0),
            run_with(600, 500, 300.0),
            run_with(0, 0, 0.0),
        ] {
            let today = judge(&spec, &r);
            let repeated = judge_repeated(&spec, std::slice::from_ref(&r), 0.95);
            assert_eq!(repeated.result, today.result, "{r:?}");
            assert_eq!(repeated.inconclusive_reasons, today.inconclusive_reasons);
            let passed: Vec<bool> = repeated
                .objectives
                .iter()
                .map(|o| o.result == VerdictResult::Passed)
                .collect();
            assert_eq!(passed, today.objectives.iter().map(|o| o.passed).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_target_at_the_observed_mean_is_inconclusive_and_one_below_the_interval_passes() {
        // five runs: p95 of 100, 110, 120, 130, 140 ms (mean 120)
        let runs: Vec<RunResults> = [100.0, 110.0, 120.0, 130.0, 140.0]
            .map(|p| run_with(1_000, 1_000, p))
            .to_vec();
        let at_mean = spec("{apiLatency: [{percentile: p95, maxMs: 120}]}", 0.0);
        let v = judge_repeated(&at_mean, &runs, 0.95);
        let row = &v.objectives[0];
        assert_eq!(row.result, VerdictResult::Inconclusive, "{row:?}");
        assert!((row.interval.point - 120.0).abs() < 1e-9);
        // mean 120, s = sqrt(250), t(0.975, 4) = 2.776445: 120 -/+ 19.6324
        assert!(
            (row.interval.lower - 100.3676).abs() < 1e-3 && (row.interval.upper - 139.6324).abs() < 1e-3,
            "{row:?}"
        );
        assert_eq!(v.result, VerdictResult::Inconclusive);
        let generous = spec("{apiLatency: [{percentile: p95, maxMs: 140}]}", 0.0);
        assert_eq!(
            judge_repeated(&generous, &runs, 0.95).result,
            VerdictResult::Passed,
            "the whole interval meets it"
        );
        let strict = spec("{apiLatency: [{percentile: p95, maxMs: 99}]}", 0.0);
        assert_eq!(
            judge_repeated(&strict, &runs, 0.95).result,
            VerdictResult::Failed,
            "the whole interval misses it"
        );
        // success ratio: per-run 0.97 .. 0.99 against 0.98 straddles; 0.95 passes
        let ratios: Vec<RunResults> = [970, 980, 990].map(|paid| run_with(1_000, paid, 10.0)).to_vec();
        let at = spec("{successRatio: 0.98}", 0.0);
        assert_eq!(
            judge_repeated(&at, &ratios, 0.95).objectives[0].result,
            VerdictResult::Inconclusive
        );
        let lower = spec("{successRatio: 0.95}", 0.0);
        assert_eq!(judge_repeated(&lower, &ratios, 0.95).result, VerdictResult::Passed);
    }

    #[test]
    fn percentile_sample_floors() {
        assert_eq!(
            [Percentile::P50, Percentile::P90, Percentile::P95, Percentile::P99].map(min_samples),
            [10, 50, 100, 500]
        );
    }
}

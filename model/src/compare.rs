//! Judging a comparison, the same for both runners: each variant over its
//! runs, the variants side by side, the sweep's recommendation, the
//! experiment's verdict from the variants' expectations, and the baseline gate.

use crate::results::RunResults;
use crate::status::{
    BaselineComparison, BaselineFigure, Comparison, ComparisonRow, ObjectiveResult, Recommendation, RunRecord,
    VariantStatus, Verdict, VerdictResult,
};
use crate::validate::ValidatedExperiment;
use crate::variants::MaxRegression;
use crate::verdict::judge_repeated;

/// The rule a sweep's recommendation follows, as written in the status.
pub const RECOMMENDATION_RULE: &str = "among the variants whose every objective passes on its pessimistic bound, \
     the one with the fewest payment calls per paid order; ties broken by the lower end-to-end p95";

/// The status of every variant before its runs: name, overrides, expectation.
pub fn planned_variants(experiment: &ValidatedExperiment) -> Vec<VariantStatus> {
    experiment
        .variants()
        .iter()
        .map(|v| VariantStatus {
            name: v.name.clone(),
            overrides: v.overrides.clone(),
            expect: v.expect,
            ..VariantStatus::default()
        })
        .collect()
}

/// The variants an experiment of several lab runs reports on, before any
/// run: its variants, or (repeats of one configuration) one entry named
/// after the experiment. Empty for an experiment of one lab run.
pub fn initial_variants(experiment: &ValidatedExperiment) -> Vec<VariantStatus> {
    if experiment.lab_runs().len() <= 1 {
        return Vec::new();
    }
    if experiment.variants().is_empty() {
        return vec![VariantStatus {
            name: experiment.name().to_string(),
            ..VariantStatus::default()
        }];
    }
    planned_variants(experiment)
}

/// How an experiment of several lab runs is executed (both runners: one
/// lab at a time, interleaved, so that the machine's drift hits every
/// variant alike and one lab's load never disturbs another's).
pub fn execution(experiment: &ValidatedExperiment) -> Option<crate::status::Execution> {
    let runs = experiment.lab_runs().len();
    (runs > 1).then(|| crate::status::Execution {
        order: "interleaved".into(),
        concurrency: 1,
        lab_runs: runs as u32,
    })
}

/// Lab runs recorded so far (the index of the next one).
pub fn recorded_runs(status: &crate::status::ReliabilityExperimentStatus) -> usize {
    status.variants.iter().map(|v| v.runs.len()).sum()
}

/// Conclude an experiment of several lab runs whose runs are all recorded
/// in `status.variants`: each variant judged, the comparison, the sweep's
/// recommendation, the verdict and its phase and conditions; for repeats of
/// one configuration also `status.results` (merged) and the baseline gate
/// (`baseline`: `relab run --baseline`'s file, or the last Passed run in the
/// history). The same for both runners.
pub fn conclude(
    experiment: &ValidatedExperiment,
    status: &mut crate::status::ReliabilityExperimentStatus,
    baseline: Option<(GateFigures, String)>,
    generation: Option<i64>,
    now: &str,
) -> crate::status::Judged {
    let verdict = if experiment.variants().is_empty() {
        let only = &mut status.variants[0];
        judge_single(experiment, only);
        status.results = only.results.clone();
        let mut verdict = verdict_of(only);
        let results = status.results.clone().unwrap_or_default();
        status.baseline = gate(experiment.spec(), &mut verdict, &results, baseline);
        verdict
    } else {
        for (i, v) in status.variants.iter_mut().enumerate() {
            judge_variant(experiment, i, v);
        }
        status.comparison = comparison(&status.variants);
        if experiment.spec().sweep.0.is_empty() {
            experiment_verdict(&status.variants)
        } else {
            let recommendation = recommend(&status.variants);
            let verdict = sweep_verdict(&status.variants, &recommendation);
            status.recommendation = Some(recommendation);
            verdict
        }
    };
    crate::status::judged_from(verdict, generation, now)
}

/// Judge a variant whose runs are all in: its merged results, its
/// objectives on intervals, its verdict and whether it met its expectation.
pub fn judge_variant(experiment: &ValidatedExperiment, index: usize, variant: &mut VariantStatus) {
    let spec = experiment.variants()[index].experiment.spec();
    judge_runs(spec, experiment.repeat().confidence, variant);
}

/// Judge the repeats of an experiment without variants (shown as one variant).
pub fn judge_single(experiment: &ValidatedExperiment, variant: &mut VariantStatus) {
    judge_runs(experiment.spec(), experiment.repeat().confidence, variant);
}

fn judge_runs(spec: &crate::spec::ReliabilityExperimentSpec, confidence: f64, variant: &mut VariantStatus) {
    let runs: Vec<RunResults> = variant.runs.iter().filter_map(|r| r.results.clone()).collect();
    if runs.is_empty() {
        return;
    }
    let judged = judge_repeated(spec, &runs, confidence);
    let mut merged = RunResults::merge(&runs);
    merged.histograms = None;
    variant.results = Some(merged);
    variant.objectives = judged.objectives;
    variant.verdict = Some(judged.result);
    variant.inconclusive_reasons = judged.inconclusive_reasons;
    variant.expectation_met = Some(judged.result == variant.expect.as_verdict());
}

/// A variant's verdict as the experiment's (an experiment of one
/// configuration, repeated): each interval objective as a row.
pub fn verdict_of(variant: &VariantStatus) -> Verdict {
    Verdict {
        result: variant.verdict.unwrap_or_default(),
        objectives: variant
            .objectives
            .iter()
            .map(|o| ObjectiveResult {
                name: o.name.clone(),
                target: o.target.clone(),
                observed: format!(
                    "{:.4} [{:.4}, {:.4}] {:?}",
                    o.interval.point, o.interval.lower, o.interval.upper, o.result
                ),
                passed: o.result == VerdictResult::Passed,
            })
            .collect(),
        inconclusive_reasons: variant.inconclusive_reasons.clone(),
    }
}

/// A run's record: its results kept without histograms (the status stays small).
pub fn run_record(
    repeat: u32,
    seed: u64,
    order: u32,
    start: String,
    finish: String,
    results: &RunResults,
    verdict: VerdictResult,
) -> RunRecord {
    let mut results = results.clone();
    results.histograms = None;
    RunRecord {
        repeat,
        seed,
        order,
        start_time: Some(start),
        finish_time: Some(finish),
        verdict: Some(verdict),
        results: Some(results),
    }
}

fn row(name: &str, r: &RunResults) -> ComparisonRow {
    ComparisonRow {
        variant: name.to_string(),
        success_ratio: r.success_ratio,
        api_p95_ms: r.api_latency_ms.p95,
        api_p99_ms: r.api_latency_ms.p99,
        end_to_end_p95_ms: r.end_to_end_latency_ms.p95,
        end_to_end_p99_ms: r.end_to_end_latency_ms.p99,
        payment_calls: r.payment.calls as f64,
        payment_calls_per_paid_order: r.calls_per_paid_order(),
        retries: r.retries.retries as f64,
        breaker_openings: r.breaker_openings() as f64,
        dead_letters: r.dead_letters as f64,
        shed: r.orders.shed as f64,
    }
}

/// The judged variants' key figures side by side; with two, the second's
/// divided by the first's (0 where the first's is 0).
pub fn comparison(variants: &[VariantStatus]) -> Option<Comparison> {
    let rows: Vec<ComparisonRow> = variants
        .iter()
        .filter_map(|v| v.results.as_ref().map(|r| row(&v.name, r)))
        .collect();
    if rows.is_empty() {
        return None;
    }
    let ratio = match rows.as_slice() {
        [a, b] => {
            let div = |x: f64, y: f64| if y == 0.0 { 0.0 } else { x / y };
            Some(ComparisonRow {
                variant: format!("{} / {}", b.variant, a.variant),
                success_ratio: div(b.success_ratio, a.success_ratio),
                api_p95_ms: div(b.api_p95_ms, a.api_p95_ms),
                api_p99_ms: div(b.api_p99_ms, a.api_p99_ms),
                end_to_end_p95_ms: div(b.end_to_end_p95_ms, a.end_to_end_p95_ms),
                end_to_end_p99_ms: div(b.end_to_end_p99_ms, a.end_to_end_p99_ms),
                payment_calls: div(b.payment_calls, a.payment_calls),
                payment_calls_per_paid_order: div(b.payment_calls_per_paid_order, a.payment_calls_per_paid_order),
                retries: div(b.retries, a.retries),
                breaker_openings: div(b.breaker_openings, a.breaker_openings),
                dead_letters: div(b.dead_letters, a.dead_letters),
                shed: div(b.shed, a.shed),
            })
        }
        _ => None,
    };
    Some(Comparison { rows, ratio })
}

/// The sweep's pick ([`RECOMMENDATION_RULE`]); "none passes" is an answer.
pub fn recommend(variants: &[VariantStatus]) -> Recommendation {
    let passing = variants.iter().filter(|v| v.verdict == Some(VerdictResult::Passed));
    let best = passing
        .filter_map(|v| v.results.as_ref().map(|r| (v, r)))
        .min_by(|(_, a), (_, b)| {
            a.calls_per_paid_order()
                .total_cmp(&b.calls_per_paid_order())
                .then(a.end_to_end_latency_ms.p95.total_cmp(&b.end_to_end_latency_ms.p95))
        });
    match best {
        Some((v, r)) => Recommendation {
            variant: Some(v.name.clone()),
            rule: RECOMMENDATION_RULE.into(),
            message: format!(
                "{}: every objective passes; {:.2} payment calls per paid order, end-to-end p95 {:.1} ms",
                v.name,
                r.calls_per_paid_order(),
                r.end_to_end_latency_ms.p95
            ),
        },
        None => Recommendation {
            variant: None,
            rule: RECOMMENDATION_RULE.into(),
            message: "no variant passes every objective on its pessimistic bound".into(),
        },
    }
}

/// The experiment's verdict from its variants: one row per variant
/// (`variant.<name>`: its verdict against its expectation). Passed when
/// every verdict equals its `expect`, Failed when one contradicts it,
/// Inconclusive when a variant is Inconclusive (or not judged).
pub fn experiment_verdict(variants: &[VariantStatus]) -> Verdict {
    let rows: Vec<ObjectiveResult> = variants
        .iter()
        .map(|v| ObjectiveResult {
            name: format!("variant.{}", v.name),
            target: format!("{:?}", v.expect),
            observed: v.verdict.map_or("not run".into(), |r| format!("{r:?}")),
            passed: v.expectation_met == Some(true),
        })
        .collect();
    let inconclusive: Vec<String> = variants
        .iter()
        .filter(|v| v.verdict.is_none_or(|r| r == VerdictResult::Inconclusive))
        .map(|v| {
            let why = if v.inconclusive_reasons.is_empty() {
                "an objective's interval straddles its target".to_string()
            } else {
                v.inconclusive_reasons.join("; ")
            };
            format!("variant {} is inconclusive: {why}", v.name)
        })
        .collect();
    let contradicted = variants
        .iter()
        .any(|v| v.expectation_met == Some(false) && v.verdict != Some(VerdictResult::Inconclusive));
    let result = if !inconclusive.is_empty() {
        VerdictResult::Inconclusive
    } else if contradicted {
        VerdictResult::Failed
    } else {
        VerdictResult::Passed
    };
    Verdict::of(result, rows, inconclusive)
}

/// A sweep's verdict: its variants are candidates, not claims, so it is
/// Passed when the recommendation names one (some configuration meets every
/// objective), Inconclusive when none does but one is Inconclusive, and
/// Failed when every candidate fails. One row per variant.
pub fn sweep_verdict(variants: &[VariantStatus], recommendation: &Recommendation) -> Verdict {
    let rows = variants
        .iter()
        .map(|v| ObjectiveResult {
            name: format!("variant.{}", v.name),
            target: "Passed (a candidate)".into(),
            observed: v.verdict.map_or("not run".into(), |r| format!("{r:?}")),
            passed: v.verdict == Some(VerdictResult::Passed),
        })
        .collect();
    let any_inconclusive = variants
        .iter()
        .any(|v| v.verdict != Some(VerdictResult::Passed) && v.verdict != Some(VerdictResult::Failed));
    let result = match (&recommendation.variant, any_inconclusive) {
        (Some(_), _) => VerdictResult::Passed,
        (None, true) => VerdictResult::Inconclusive,
        (None, false) => VerdictResult::Failed,
    };
    Verdict {
        result,
        objectives: rows,
        inconclusive_reasons: if result == VerdictResult::Inconclusive {
            vec![recommendation.message.clone()]
        } else {
            Vec::new()
        },
    }
}

/// The last Passed run of `history` (newest first) as a baseline.
pub fn baseline_from_history(history: &[crate::status::RunSummary]) -> Option<(GateFigures, String)> {
    history.iter().find(|h| h.verdict == VerdictResult::Passed).map(|h| {
        let name = match (&h.run_id, h.generation) {
            (Some(id), Some(g)) => format!("run {id:?} (generation {g})"),
            (None, Some(g)) => format!("generation {g}"),
            (Some(id), None) => format!("run {id:?}"),
            (None, None) => "the last passed run".to_string(),
        };
        (GateFigures::from(h), name)
    })
}

/// Apply `spec.baseline` to a judged run: the comparison with the baseline
/// (or, without one yet, a record saying so), and `verdict` Failed with a
/// row per regressed figure when one regressed past its margin.
pub fn gate(
    spec: &crate::spec::ReliabilityExperimentSpec,
    verdict: &mut Verdict,
    results: &RunResults,
    baseline: Option<(GateFigures, String)>,
) -> Option<BaselineComparison> {
    let max = &spec.baseline.as_ref()?.max_regression;
    let Some((figures, name)) = baseline else {
        return Some(BaselineComparison {
            baseline: "none: no earlier Passed run to compare with".into(),
            result: VerdictResult::Passed,
            figures: Vec::new(),
        });
    };
    let compared = against_baseline(max, results.into(), figures, &name);
    for f in &compared.figures {
        verdict.objectives.push(ObjectiveResult {
            name: format!("baseline.{}", f.name),
            target: f.allowed.clone(),
            observed: f.message.clone(),
            passed: f.passed,
        });
    }
    if compared.result == VerdictResult::Failed {
        verdict.result = VerdictResult::Failed;
        verdict.inconclusive_reasons.clear();
    }
    Some(compared)
}

/// The figures a baseline gate compares.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GateFigures {
    pub success_ratio: f64,
    pub api_p95_ms: f64,
    pub api_p99_ms: f64,
    pub end_to_end_p95_ms: f64,
    pub calls_per_paid_order: f64,
}

impl From<&RunResults> for GateFigures {
    fn from(r: &RunResults) -> Self {
        Self {
            success_ratio: r.success_ratio,
            api_p95_ms: r.api_latency_ms.p95,
            api_p99_ms: r.api_latency_ms.p99,
            end_to_end_p95_ms: r.end_to_end_latency_ms.p95,
            calls_per_paid_order: r.calls_per_paid_order(),
        }
    }
}

impl From<&crate::status::RunSummary> for GateFigures {
    fn from(r: &crate::status::RunSummary) -> Self {
        Self {
            success_ratio: r.success_ratio,
            api_p95_ms: r.api_p95_ms,
            api_p99_ms: r.api_p99_ms.unwrap_or(f64::NAN),
            end_to_end_p95_ms: r.end_to_end_p95_ms.unwrap_or(f64::NAN),
            calls_per_paid_order: r.payment_calls_per_paid_order.unwrap_or(f64::NAN),
        }
    }
}

/// The history entry of a finished run (what a baseline gate reads later).
pub fn summary_of(
    run_id: Option<String>,
    generation: Option<i64>,
    finish_time: Option<String>,
    verdict: VerdictResult,
    r: &RunResults,
) -> crate::status::RunSummary {
    crate::status::RunSummary {
        run_id,
        generation,
        scheduled_run: None,
        finish_time,
        verdict,
        success_ratio: r.success_ratio,
        api_p95_ms: r.api_latency_ms.p95,
        orders_accepted: r.orders.accepted,
        api_p99_ms: Some(r.api_latency_ms.p99),
        end_to_end_p95_ms: Some(r.end_to_end_latency_ms.p95),
        payment_calls_per_paid_order: Some(r.calls_per_paid_order()),
    }
}

/// `results` against a baseline run's: Failed when a named figure is worse
/// by more than its margin (success ratio: points lost; latencies and calls
/// per paid order: growth as a share of the baseline's).
pub fn against_baseline(
    max: &MaxRegression,
    results: GateFigures,
    baseline: GateFigures,
    baseline_name: &str,
) -> BaselineComparison {
    let mut figures = Vec::new();
    if let Some(points) = max.success_ratio {
        let (was, now) = (baseline.success_ratio, results.success_ratio);
        let passed = was - now <= points + 1e-12;
        figures.push(BaselineFigure {
            name: "successRatio".into(),
            baseline: was,
            observed: now,
            allowed: format!("at most {points} lower"),
            passed,
            message: format!(
                "successRatio {now:.4} vs {was:.4} in {baseline_name}: {} (at most {points} lower allowed)",
                if passed { "within the margin" } else { "regressed" }
            ),
        });
    }
    let growth = [
        (
            "apiLatencyP95",
            max.api_latency_p95,
            baseline.api_p95_ms,
            results.api_p95_ms,
        ),
        (
            "apiLatencyP99",
            max.api_latency_p99,
            baseline.api_p99_ms,
            results.api_p99_ms,
        ),
        (
            "endToEndLatencyP95",
            max.end_to_end_latency_p95,
            baseline.end_to_end_p95_ms,
            results.end_to_end_p95_ms,
        ),
        (
            "paymentCallsPerPaidOrder",
            max.payment_calls_per_paid_order,
            baseline.calls_per_paid_order,
            results.calls_per_paid_order,
        ),
    ];
    for (name, share, was, now) in growth {
        let Some(share) = share else { continue };
        let limit = was * (1.0 + share);
        let passed = was.is_finite() && now <= limit + 1e-9;
        figures.push(BaselineFigure {
            name: name.into(),
            baseline: was,
            observed: now,
            allowed: format!("at most {:.0}% more", share * 100.0),
            passed,
            message: format!(
                "{name} {now:.2} vs {was:.2} in {baseline_name}: {} (at most {:.0}% more allowed, {limit:.2})",
                if passed { "within the margin" } else { "regressed" },
                share * 100.0
            ),
        });
    }
    BaselineComparison {
        baseline: baseline_name.to_string(),
        result: if figures.iter().all(|f| f.passed) {
            VerdictResult::Passed
        } else {
            VerdictResult::Failed
        },
        figures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{OrderCounts, PaymentResults, Percentiles};
    use crate::variants::Expectation;

    fn results(paid: u64, calls: u64, e2e_p95: f64) -> RunResults {
        RunResults {
            orders: OrderCounts {
                accepted: 100,
                paid,
                ..Default::default()
            },
            success_ratio: paid as f64 / 100.0,
            payment: PaymentResults {
                calls,
                ..Default::default()
            },
            end_to_end_latency_ms: Percentiles {
                p95: e2e_p95,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn variant(name: &str, verdict: VerdictResult, expect: Expectation, r: RunResults) -> VariantStatus {
        VariantStatus {
            name: name.into(),
            expect,
            verdict: Some(verdict),
            expectation_met: Some(verdict == expect.as_verdict()),
            results: Some(r),
            ..Default::default()
        }
    }

    #[test]
    fn the_experiment_passes_when_every_variant_shows_what_it_should() {
        use Expectation as E;
        use VerdictResult as V;
        let with = variant("with-breaker", V::Passed, E::Passed, results(100, 120, 50.0));
        let without = variant("no-breaker", V::Failed, E::Failed, results(70, 300, 900.0));
        let v = experiment_verdict(&[with.clone(), without.clone()]);
        assert_eq!(v.result, V::Passed, "{v:?}");
        assert_eq!(v.objectives[1].name, "variant.no-breaker");
        let surprise = variant("no-breaker", V::Passed, E::Failed, results(100, 120, 50.0));
        assert_eq!(experiment_verdict(&[with.clone(), surprise]).result, V::Failed);
        let unsure = variant("no-breaker", V::Inconclusive, E::Failed, results(90, 300, 900.0));
        assert_eq!(experiment_verdict(&[with.clone(), unsure]).result, V::Inconclusive);
        let c = comparison(&[with, without]).unwrap();
        let ratio = c.ratio.unwrap();
        assert_eq!(ratio.variant, "no-breaker / with-breaker");
        assert!((ratio.payment_calls - 2.5).abs() < 1e-12);
    }

    #[test]
    fn the_recommendation_is_the_cheapest_passing_variant_ties_by_freshness() {
        use Expectation as E;
        use VerdictResult as V;
        let a = variant("a", V::Passed, E::Passed, results(100, 200, 80.0));
        let b = variant("b", V::Passed, E::Passed, results(100, 150, 90.0));
        let c = variant("c", V::Passed, E::Passed, results(100, 150, 60.0));
        let cheap_but_failing = variant("d", V::Failed, E::Passed, results(50, 50, 10.0));
        let r = recommend(&[a, b, c, cheap_but_failing.clone()]);
        assert_eq!(r.variant.as_deref(), Some("c"), "{r:?}");
        assert!(r.rule.contains("fewest payment calls per paid order"));
        let none = recommend(&[cheap_but_failing]);
        assert_eq!(none.variant, None);
        assert!(none.message.contains("no variant passes"));
    }

    #[test]
    fn a_regression_past_its_margin_fails_naming_figure_values_and_baseline() {
        let max = MaxRegression {
            success_ratio: Some(0.01),
            api_latency_p95: Some(0.2),
            ..Default::default()
        };
        let mut was = results(99, 120, 50.0);
        was.api_latency_ms.p95 = 100.0;
        let mut now = results(98, 120, 50.0);
        now.api_latency_ms.p95 = 119.0;
        let ok = against_baseline(&max, (&now).into(), (&was).into(), "run 3");
        assert_eq!(ok.result, VerdictResult::Passed, "{ok:?}");
        now.api_latency_ms.p95 = 125.0;
        let bad = against_baseline(&max, (&now).into(), (&was).into(), "run 3");
        assert_eq!(bad.result, VerdictResult::Failed);
        let f = bad.figures.iter().find(|f| !f.passed).unwrap();
        assert_eq!(f.name, "apiLatencyP95");
        assert!(f.message.contains("125.00 vs 100.00 in run 3"), "{}", f.message);
        now.success_ratio = 0.97;
        assert!(!against_baseline(&max, (&now).into(), (&was).into(), "run 3").figures[0].passed);
    }
}

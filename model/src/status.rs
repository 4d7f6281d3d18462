//! The observed state of an experiment (`status`), the same shape from the
//! local runner (`status.json`) and the operator; and the building blocks
//! both use to write it: conditions, and a finished run judged into a phase.

use crate::results::RunResults;
use crate::spec::ReliabilityExperimentSpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a run is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Provisioning,
    Running,
    Draining,
    Analyzing,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// Observed state of an experiment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReliabilityExperimentStatus {
    #[serde(default)]
    pub phase: Phase,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The `spec.runId` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Live figures while the load runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<LiveProgress>,
    /// What the run observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<RunResults>,
    /// The objectives, judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Name of the ConfigMap holding this experiment's Grafana dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
    /// Summaries of earlier runs, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RunSummary>,
    /// With `spec.variants` or `spec.sweep`: each variant, its runs, its
    /// merged results and its objectives judged on intervals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantStatus>,
    /// The variants' key figures side by side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
    /// With `spec.sweep`: the variant to pick, and the rule that picked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<Recommendation>,
    /// How the lab runs were executed (order and concurrency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<Execution>,
    /// With `spec.baseline` (or `relab run --baseline`): the comparison with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineComparison>,
    /// With `spec.schedule`: the next tick (RFC 3339; absent while suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<String>,
    /// With `spec.schedule`: the tick that started the current (or last) run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// With `spec.schedule`: which scheduled run of this generation this
    /// status describes (1, 2, ...; absent while waiting for the first tick).
    /// Its children are named `<experiment>-r<generation>s<n>-...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_run: Option<u32>,
    /// With `spec.notify.webhook`: the delivery of this run's
    /// `dev.relab.experiment.finished` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
}

/// The delivery record of a finished run's webhook event: written after
/// each attempt, read before the next, so an operator restarted (or a new
/// leader) never delivers a run's event twice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// The CloudEvents `id` (stable per run: `<uid>/<run>`), for receivers
    /// that deduplicate.
    pub event_id: String,
    /// `Pending` (retrying), `Delivered` or `Failed` (gave up).
    pub state: NotificationState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<String>,
    /// When the next attempt is due (`Pending` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_time: Option<String>,
    /// The last failure (status code or error; never the URL, a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Where a webhook delivery is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NotificationState {
    #[default]
    Pending,
    Delivered,
    Failed,
}

/// One variant of an experiment, as run and judged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantStatus {
    pub name: String,
    /// The overrides it was made of (`{orderService: ..., payment: ...}`).
    #[serde(default)]
    #[schemars(schema_with = "free_object")]
    pub overrides: serde_json::Value,
    /// What it is meant to show.
    #[serde(default)]
    pub expect: crate::variants::Expectation,
    /// Its verdict equals `expect` (absent until judged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expectation_met: Option<bool>,
    /// Each repeat: seed, times, execution order, its own results and verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunRecord>,
    /// The runs' results summed and merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<RunResults>,
    /// Each objective with its interval over the runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objectives: Vec<IntervalObjective>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<VerdictResult>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inconclusive_reasons: Vec<String>,
}

fn free_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// One lab run of a variant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// 0-based repeat; its payment seed is the spec's + this.
    pub repeat: u32,
    pub seed: u64,
    /// 1-based position among all the experiment's lab runs, as executed.
    pub order: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<VerdictResult>,
    /// This run's results (without histograms, to keep the status small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<RunResults>,
}

/// One objective judged on an interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntervalObjective {
    pub name: String,
    /// e.g. `>= 0.99`, `<= 250 ms`.
    pub target: String,
    pub interval: crate::stats::Interval,
    /// Passed when the pessimistic bound meets the target, Failed when the
    /// optimistic one misses it, Inconclusive when the interval straddles it.
    pub result: VerdictResult,
}

/// The variants' key figures side by side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    pub rows: Vec<ComparisonRow>,
    /// With two variants: the second's figures divided by the first's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<ComparisonRow>,
}

/// One variant's key figures (merged over its runs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComparisonRow {
    pub variant: String,
    pub success_ratio: f64,
    pub api_p95_ms: f64,
    pub api_p99_ms: f64,
    pub end_to_end_p95_ms: f64,
    pub end_to_end_p99_ms: f64,
    pub payment_calls: f64,
    pub payment_calls_per_paid_order: f64,
    pub retries: f64,
    pub breaker_openings: f64,
    pub dead_letters: f64,
    pub shed: f64,
}

/// The variant a sweep recommends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// None when no variant passes every objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The rule, in words.
    pub rule: String,
    pub message: String,
}

/// How the lab runs were executed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    /// `interleaved` (A1 B1 A2 B2 ...).
    pub order: String,
    /// Lab runs at the same time (1: one after the other).
    pub concurrency: u32,
    pub lab_runs: u32,
}

/// The run set against a baseline run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaselineComparison {
    /// Which run is the baseline (its runId / generation / file).
    pub baseline: String,
    /// Passed when no figure regressed past its margin.
    pub result: VerdictResult,
    /// Each figure compared.
    pub figures: Vec<BaselineFigure>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaselineFigure {
    /// e.g. `successRatio`, `apiLatencyP95`.
    pub name: String,
    pub baseline: f64,
    pub observed: f64,
    /// The regression allowed, as given.
    pub allowed: String,
    pub passed: bool,
    pub message: String,
}

/// A standard Kubernetes condition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Valid`, `Ready`, `Completed`, `ObjectivesMet`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// Live progress of the load (`status.progress`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveProgress {
    pub elapsed_seconds: f64,
    pub sent: u64,
    pub paid: u64,
    pub failed: u64,
    /// closed, open or half_open.
    pub breaker_state: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VerdictResult {
    Passed,
    Failed,
    /// The run did not test what it claimed (too few samples, faults not injected as asked).
    #[default]
    Inconclusive,
}

/// Pass/fail per objective, and overall.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub result: VerdictResult,
    pub objectives: Vec<ObjectiveResult>,
    /// Why the verdict is Inconclusive (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inconclusive_reasons: Vec<String>,
}

impl Verdict {
    /// A verdict of `result` over `rows`; the reasons are kept only when it
    /// is Inconclusive (they explain nothing else).
    pub fn of(result: VerdictResult, objectives: Vec<ObjectiveResult>, reasons: Vec<String>) -> Self {
        Verdict {
            result,
            objectives,
            inconclusive_reasons: reasons_if_inconclusive(result, reasons),
        }
    }
}

/// `reasons` when `result` is Inconclusive, else none: why a verdict is
/// inconclusive, and nothing for one that is not.
pub fn reasons_if_inconclusive(result: VerdictResult, reasons: Vec<String>) -> Vec<String> {
    if result == VerdictResult::Inconclusive {
        reasons
    } else {
        Vec::new()
    }
}

/// One objective: what was asked, what was seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectiveResult {
    /// e.g. `successRatio`, `apiLatency.p95`, `maxDoubleCharges`.
    pub name: String,
    /// e.g. `>= 0.99`, `<= 250 ms`.
    pub target: String,
    pub observed: String,
    pub passed: bool,
}

/// A finished run, kept in `status.history`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The scheduled run of the generation (`spec.schedule` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_run: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
    pub verdict: VerdictResult,
    pub success_ratio: f64,
    pub api_p95_ms: f64,
    pub orders_accepted: u64,
    /// The figures a baseline gate compares (absent in summaries written
    /// before they were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_p99_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_to_end_p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_calls_per_paid_order: Option<f64>,
}

// ------------------------------------------------------------ conditions

/// RFC 3339 to the second, UTC (the form Kubernetes uses).
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A status timestamp read back (RFC 3339, any offset, as UTC); None when
/// it is not one.
pub fn parse_timestamp(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.to_utc())
}

pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &str,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: Some(now.to_string()),
    }
}

/// Put `new` in `conditions`, replacing the one of its type. The transition
/// time moves only when the status (True/False/Unknown) changes, as the
/// Kubernetes API conventions ask. Returns whether anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            let mut merged = new;
            if old.status == merged.status {
                merged.last_transition_time = old.last_transition_time.clone();
            }
            let changed = *old != merged;
            *old = merged;
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

pub fn get_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// A finished run, judged: its phase (`Succeeded` only when the objectives
/// were met), the verdict, and the `Completed` and `ObjectivesMet` conditions.
pub struct Judged {
    pub phase: Phase,
    pub verdict: Verdict,
    pub conditions: Vec<Condition>,
}

/// Judge a finished run: one place, so a local run and a cluster run of the
/// same manifest say the same thing.
pub fn judge_run(spec: &ReliabilityExperimentSpec, results: &RunResults, generation: Option<i64>, now: &str) -> Judged {
    let mut judged = judged_from(crate::verdict::judge(spec, results), generation, now);
    judged.conditions[0].message = format!("load, drain and audit finished (drained: {})", results.drained);
    judged
}

/// A verdict turned into the run's phase and its `Completed` and
/// `ObjectivesMet` conditions.
pub fn judged_from(verdict: Verdict, generation: Option<i64>, now: &str) -> Judged {
    let stopped = verdict.objectives.iter().find(|o| o.name == "stopWhen" && !o.passed);
    let (met, reason) = match verdict.result {
        VerdictResult::Passed => ("True", "ObjectivesMet"),
        VerdictResult::Failed if stopped.is_some() => ("False", "Stopped"),
        VerdictResult::Failed => ("False", "ObjectivesNotMet"),
        VerdictResult::Inconclusive => ("Unknown", "Inconclusive"),
    };
    let failed: Vec<&str> = verdict
        .objectives
        .iter()
        .filter(|o| !o.passed)
        .map(|o| o.name.as_str())
        .collect();
    let conditions = vec![
        condition(
            "Completed",
            "True",
            "RunCompleted",
            "every lab run finished: load, drain and audit".into(),
            generation,
            now,
        ),
        condition(
            "ObjectivesMet",
            met,
            reason,
            if let Some(row) = stopped {
                format!("stopped early by {}", row.observed)
            } else if failed.is_empty() || verdict.result == VerdictResult::Inconclusive {
                verdict.inconclusive_reasons.join("; ")
            } else {
                format!("not met: {}", failed.join(", "))
            },
            generation,
            now,
        ),
    ];
    Judged {
        phase: if verdict.result == VerdictResult::Passed {
            Phase::Succeeded
        } else {
            Phase::Failed
        },
        verdict,
        conditions,
    }
}

/// The repeats of one configuration, judged: the variant's verdict as the run's.
pub fn judge_repeats_of_one(variant: &VariantStatus, generation: Option<i64>, now: &str) -> Judged {
    judged_from(crate::compare::verdict_of(variant), generation, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_does() {
        let mut cs = vec![condition("Ready", "False", "A", "x".into(), Some(1), "t1")];
        assert!(!set_condition(
            &mut cs,
            condition("Ready", "False", "A", "x".into(), Some(1), "t2")
        ));
        assert_eq!(cs[0].last_transition_time.as_deref(), Some("t1"));
        assert!(set_condition(
            &mut cs,
            condition("Ready", "False", "B", "y".into(), Some(2), "t3")
        ));
        assert_eq!(cs[0].last_transition_time.as_deref(), Some("t1"));
        assert_eq!((cs[0].reason.as_str(), cs[0].observed_generation), ("B", Some(2)));
        assert!(set_condition(
            &mut cs,
            condition("Ready", "True", "B", "y".into(), Some(2), "t4")
        ));
        assert_eq!(cs[0].last_transition_time.as_deref(), Some("t4"));
        assert!(set_condition(
            &mut cs,
            condition("Valid", "True", "V", String::new(), Some(2), "t4")
        ));
        assert_eq!(cs.len(), 2);
    }
}

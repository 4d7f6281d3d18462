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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
    pub verdict: VerdictResult,
    pub success_ratio: f64,
    pub api_p95_ms: f64,
    pub orders_accepted: u64,
}

// ------------------------------------------------------------ conditions

/// RFC 3339 to the second, UTC (the form Kubernetes uses).
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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
    let verdict = crate::verdict::judge(spec, results);
    let (met, reason) = match verdict.result {
        VerdictResult::Passed => ("True", "ObjectivesMet"),
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
            format!("load, drain and audit finished (drained: {})", results.drained),
            generation,
            now,
        ),
        condition(
            "ObjectivesMet",
            met,
            reason,
            if failed.is_empty() {
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

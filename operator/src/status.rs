//! Status building blocks shared by `relab run` and the controller: standard
//! conditions, and the verdict turned into a phase and conditions. One place,
//! so a local run and a cluster run of the same manifest say the same thing.

use crate::crd::{Condition, Phase, ReliabilityExperimentSpec, Verdict, VerdictResult};
use crate::verdict;
use lab_service::summary::RunResults;

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

pub fn judge_run(spec: &ReliabilityExperimentSpec, results: &RunResults, generation: Option<i64>, now: &str) -> Judged {
    let verdict = verdict::judge(spec, results);
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

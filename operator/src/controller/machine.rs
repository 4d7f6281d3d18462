//! The phase machine (pure): from the stored status and what the controller
//! observed, the next status and the events to publish.
//!
//! ```text
//! Pending -> Provisioning -> Running -> Draining -> Analyzing -> Succeeded | Failed
//! ```
//!
//! - `Pending`: a new run was accepted (or is suspended); nothing applied yet.
//! - `Provisioning`: the run's children are applied; the load generator's pod
//!   is not running yet (images pulling, waiting to be scheduled).
//! - `Running`: the load generator runs; `progress` is refreshed from the
//!   order service's metrics.
//! - `Draining`: the load's length has passed; the load generator waits for
//!   accepted orders to finish and audits.
//! - `Analyzing`: the load generator's summary arrived; it is judged.
//! - `Succeeded`: objectives met. `Failed`: objectives not met, the verdict
//!   is inconclusive, or the run could not finish (the reason is in the
//!   `Completed` condition).
//!
//! A run is one `metadata.generation`: any spec change (a new `runId`
//! included) starts a new run, and the finished one goes to `history`.

use crate::crd::{
    LiveProgress, Phase, ReliabilityExperimentSpec, ReliabilityExperimentStatus, RunSummary, VerdictResult,
};
use chrono::{DateTime, Utc};
use relab_model::results::RunResults;
use relab_model::status::{condition, judge_run, set_condition, timestamp};
use relab_model::FieldError;

/// Finished runs kept in `status.history`.
pub const HISTORY_LIMIT: usize = 5;

/// What the load generator's pod (and its Job) show.
#[derive(Debug, Clone, PartialEq)]
pub enum Loadgen {
    /// No pod yet.
    Missing,
    /// Pod exists, container not started; the reason when the kubelet gave one.
    Waiting {
        reason: Option<String>,
    },
    Running {
        started_at: DateTime<Utc>,
    },
    Terminated {
        exit_code: i32,
        reason: Option<String>,
        message: Option<String>,
    },
    /// The Job gave up without a terminated container to read (deadline, deleted pod).
    JobFailed {
        reason: String,
        message: String,
    },
}

/// What one reconcile saw after applying the run's children.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub now: DateTime<Utc>,
    pub loadgen: Loadgen,
    /// From the order service's metrics, when they could be read.
    pub progress: Option<LiveProgress>,
}

/// A notable change, published as a Kubernetes Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

impl Note {
    fn normal(reason: &str, message: String) -> Self {
        Self {
            warning: false,
            reason: reason.into(),
            message,
        }
    }
    fn warning(reason: &str, message: String) -> Self {
        Self {
            warning: true,
            reason: reason.into(),
            message,
        }
    }
}

/// Invalid spec: `Valid=False` listing every problem with its path. The rest
/// of the status (an earlier run's results and history) stays.
pub fn invalid(
    old: &ReliabilityExperimentStatus,
    generation: i64,
    problems: &[FieldError],
    now: DateTime<Utc>,
) -> (ReliabilityExperimentStatus, Vec<Note>) {
    let mut status = old.clone();
    let message = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    let changed = set_condition(
        &mut status.conditions,
        condition(
            "Valid",
            "False",
            "InvalidSpec",
            message.clone(),
            Some(generation),
            &timestamp(now),
        ),
    );
    let notes = if changed {
        vec![Note::warning("InvalidSpec", message)]
    } else {
        Vec::new()
    };
    (status, notes)
}

/// A new run of `generation`: the previous run (if it finished) goes to the
/// history, everything else is reset to `Pending`.
pub fn start_run(
    old: &ReliabilityExperimentStatus,
    generation: i64,
    spec: &ReliabilityExperimentSpec,
    now: DateTime<Utc>,
) -> (ReliabilityExperimentStatus, Vec<Note>) {
    let mut history = old.history.clone();
    if let (Some(results), Some(verdict)) = (&old.results, &old.verdict) {
        history.insert(0, summary(old, results, verdict.result));
        history.truncate(HISTORY_LIMIT);
    }
    let now_s = timestamp(now);
    let status = ReliabilityExperimentStatus {
        phase: Phase::Pending,
        observed_generation: Some(generation),
        run_id: spec.run_id.clone(),
        conditions: vec![
            condition(
                "Valid",
                "True",
                "SpecValid",
                "the spec passed validation".into(),
                Some(generation),
                &now_s,
            ),
            condition(
                "Completed",
                "False",
                "RunStarting",
                "the run has not finished".into(),
                Some(generation),
                &now_s,
            ),
        ],
        dashboard: old.dashboard.clone(),
        history,
        ..Default::default()
    };
    let why = match (&old.observed_generation, &spec.run_id) {
        (None, _) => "first run".to_string(),
        (Some(g), Some(id)) if old.run_id.as_ref() != Some(id) => {
            format!("runId changed to {id:?} (was generation {g})")
        }
        (Some(g), _) => format!("spec changed (generation {g} -> {generation})"),
    };
    (
        status,
        vec![Note::normal(
            "RunStarted",
            format!("run of generation {generation}: {why}"),
        )],
    )
}

fn summary(old: &ReliabilityExperimentStatus, results: &RunResults, verdict: VerdictResult) -> RunSummary {
    RunSummary {
        run_id: old.run_id.clone(),
        generation: old.observed_generation,
        finish_time: old.finish_time.clone(),
        verdict,
        success_ratio: results.success_ratio,
        api_p95_ms: results.api_latency_ms.p95,
        orders_accepted: results.orders.accepted,
    }
}

/// Suspended before it started: stays `Pending` with `Suspended=True`.
pub fn suspended(
    old: &ReliabilityExperimentStatus,
    generation: i64,
    now: DateTime<Utc>,
) -> ReliabilityExperimentStatus {
    let mut status = old.clone();
    set_condition(
        &mut status.conditions,
        condition(
            "Suspended",
            "True",
            "SpecSuspended",
            "spec.suspend is true: nothing is started".into(),
            Some(generation),
            &timestamp(now),
        ),
    );
    status
}

/// One step of a started, unfinished run whose children were just applied.
pub fn advance(
    spec: &ReliabilityExperimentSpec,
    old: &ReliabilityExperimentStatus,
    generation: i64,
    seen: &Observed,
) -> (ReliabilityExperimentStatus, Vec<Note>) {
    let mut s = old.clone();
    let now = timestamp(seen.now);
    let gen = Some(generation);
    s.conditions.retain(|c| c.type_ != "Suspended");
    let mut notes = Vec::new();
    let mut go = |s: &mut ReliabilityExperimentStatus, to: Phase, message: String| {
        if s.phase != to {
            notes.push(Note::normal(&format!("{to:?}"), message));
            s.phase = to;
        }
    };
    if s.phase == Phase::Pending {
        go(&mut s, Phase::Provisioning, "the lab's objects are applied".into());
    }
    match &seen.loadgen {
        Loadgen::Missing | Loadgen::Waiting { .. } => {
            let detail = match &seen.loadgen {
                Loadgen::Waiting { reason: Some(r) } => format!("load generator waiting: {r}"),
                _ => "waiting for the load generator's pod to start".to_string(),
            };
            set_condition(
                &mut s.conditions,
                condition("Ready", "False", "Provisioning", detail, gen, &now),
            );
        }
        Loadgen::Running { started_at } => {
            if s.start_time.is_none() {
                s.start_time = Some(timestamp(*started_at));
            }
            set_condition(
                &mut s.conditions,
                condition(
                    "Ready",
                    "True",
                    "LoadRunning",
                    "the load generator is running".into(),
                    gen,
                    &now,
                ),
            );
            let elapsed = (seen.now - *started_at).num_milliseconds().max(0) as f64 / 1000.0;
            let mut progress = seen
                .progress
                .clone()
                .unwrap_or_else(|| s.progress.clone().unwrap_or_default());
            progress.elapsed_seconds = elapsed;
            if progress.breaker_state.is_empty() {
                progress.breaker_state = "unknown".into();
            }
            s.progress = Some(progress);
            let load = spec.load.total_seconds() as f64;
            if s.phase == Phase::Provisioning {
                go(&mut s, Phase::Running, format!("load started: {load} s of load"));
            }
            if elapsed >= load && s.phase == Phase::Running {
                go(
                    &mut s,
                    Phase::Draining,
                    format!(
                        "load over; waiting at most {} s for accepted orders, then the audit",
                        spec.load.drain_timeout_seconds
                    ),
                );
            }
        }
        Loadgen::Terminated {
            exit_code: 0,
            message: Some(message),
            ..
        } => match serde_json::from_str::<RunResults>(message) {
            Ok(results) => {
                go(
                    &mut s,
                    Phase::Analyzing,
                    "the load generator reported its results".into(),
                );
                let judged = judge_run(spec, &results, gen, &now);
                for c in judged.conditions {
                    set_condition(&mut s.conditions, c);
                }
                set_condition(
                    &mut s.conditions,
                    condition("Ready", "False", "RunFinished", "the run is over".into(), gen, &now),
                );
                let headline = format!(
                    "verdict {:?}: success ratio {:.4}, API p95 {:.1} ms, {} accepted, {} double charges, {} lost",
                    judged.verdict.result,
                    results.success_ratio,
                    results.api_latency_ms.p95,
                    results.orders.accepted,
                    results.invariants.double_charges,
                    results.invariants.lost_orders
                );
                if s.start_time.is_none() {
                    s.start_time = Some(now.clone());
                }
                s.finish_time = Some(now.clone());
                s.results = Some(results);
                s.verdict = Some(judged.verdict);
                if let (Some(p), Some(r)) = (s.progress.as_mut(), s.results.as_ref()) {
                    // the final figures, from the audit rather than the last scrape
                    p.sent = r.orders.sent;
                    p.paid = r.orders.paid;
                    p.failed = r.orders.failed + r.orders.dead_lettered;
                }
                go(&mut s, judged.phase, headline);
            }
            Err(e) => fail(
                &mut s,
                &mut notes,
                gen,
                &now,
                "UnreadableResults",
                format!("the load generator's termination message is not a results summary: {e}"),
            ),
        },
        Loadgen::Terminated {
            exit_code,
            reason,
            message,
        } => {
            let detail = message.as_deref().unwrap_or("").trim();
            let detail: String = detail
                .chars()
                .rev()
                .take(400)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            fail(
                &mut s,
                &mut notes,
                gen,
                &now,
                "LoadgenFailed",
                format!(
                    "the load generator exited with code {exit_code} ({}){}",
                    reason.as_deref().unwrap_or("no reason"),
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {detail}")
                    }
                ),
            )
        }
        Loadgen::JobFailed { reason, message } => fail(
            &mut s,
            &mut notes,
            gen,
            &now,
            "LoadgenFailed",
            format!("the load generator's Job failed ({reason}): {message}"),
        ),
    }
    (s, notes)
}

fn fail(
    s: &mut ReliabilityExperimentStatus,
    notes: &mut Vec<Note>,
    gen: Option<i64>,
    now: &str,
    reason: &str,
    message: String,
) {
    set_condition(
        &mut s.conditions,
        condition("Completed", "True", reason, message.clone(), gen, now),
    );
    set_condition(
        &mut s.conditions,
        condition(
            "ObjectivesMet",
            "Unknown",
            "NoResults",
            "the run produced no results".into(),
            gen,
            now,
        ),
    );
    set_condition(
        &mut s.conditions,
        condition("Ready", "False", "RunFinished", "the run is over".into(), gen, now),
    );
    s.finish_time = Some(now.to_string());
    if s.phase != Phase::Failed {
        s.phase = Phase::Failed;
        notes.push(Note::warning(reason, message));
    }
}

/// When the workloads of a finished run are due for deletion: `None` when
/// they stay (no TTL, or kept by `RetainOnFailure`).
pub fn cleanup_due(spec: &ReliabilityExperimentSpec, status: &ReliabilityExperimentStatus) -> Option<DateTime<Utc>> {
    let ttl = spec.ttl_seconds_after_finished?;
    if !status.phase.is_finished() {
        return None;
    }
    if status.phase == Phase::Failed && spec.cleanup_policy == crate::crd::CleanupPolicy::RetainOnFailure {
        return None;
    }
    let finished = DateTime::parse_from_rfc3339(status.finish_time.as_deref()?).ok()?;
    Some(finished.with_timezone(&Utc) + chrono::Duration::seconds(ttl))
}

/// The status after the TTL deleted the run's workloads.
pub fn cleaned_up(
    old: &ReliabilityExperimentStatus,
    generation: i64,
    now: DateTime<Utc>,
) -> (ReliabilityExperimentStatus, Vec<Note>) {
    let mut s = old.clone();
    let changed = set_condition(
        &mut s.conditions,
        condition(
            "WorkloadsDeleted",
            "True",
            "TTLExpired",
            "ttlSecondsAfterFinished passed: the lab's workloads were deleted; results stay".into(),
            Some(generation),
            &timestamp(now),
        ),
    );
    let notes = if changed {
        vec![Note::normal(
            "WorkloadsDeleted",
            "ttlSecondsAfterFinished passed: the lab's workloads were deleted".into(),
        )]
    } else {
        Vec::new()
    };
    (s, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CleanupPolicy;
    use relab_model::status::get_condition;
    use relab_model::validate::parse_manifest;

    fn spec(extra: &str) -> ReliabilityExperimentSpec {
        parse_manifest(&format!(
            "apiVersion: relab.dev/v1alpha1\nkind: ReliabilityExperiment\nmetadata: {{name: t}}\nspec:\n  load: {{ratePerSecond: 10, durationSeconds: 30}}\n  objectives: {{successRatio: 0.9}}\n{extra}"
        ))
        .unwrap()
        .spec
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn seen(at: i64, loadgen: Loadgen) -> Observed {
        Observed {
            now: t(at),
            loadgen,
            progress: None,
        }
    }

    fn results(success_ratio: f64) -> RunResults {
        let mut r = RunResults {
            success_ratio,
            ..RunResults::default()
        };
        r.orders.accepted = 300;
        r.orders.sent = 300;
        r.drained = true;
        r
    }

    fn terminated(r: &RunResults) -> Loadgen {
        Loadgen::Terminated {
            exit_code: 0,
            reason: Some("Completed".into()),
            message: Some(lab_service::run::termination_message(r)),
        }
    }

    #[test]
    fn a_run_walks_every_phase_with_an_event_each() {
        let spec = spec("");
        let (s, notes) = start_run(&Default::default(), 1, &spec, t(0));
        assert_eq!((s.phase, s.observed_generation), (Phase::Pending, Some(1)));
        assert_eq!(notes[0].reason, "RunStarted");
        let (s, notes) = advance(&spec, &s, 1, &seen(1, Loadgen::Missing));
        assert_eq!(s.phase, Phase::Provisioning);
        assert_eq!(notes[0].reason, "Provisioning");
        let (s2, notes) = advance(&spec, &s, 1, &seen(2, Loadgen::Missing));
        assert_eq!(s2, s, "nothing new seen: nothing changes");
        assert!(notes.is_empty());
        let running = Loadgen::Running { started_at: t(5) };
        let (s, notes) = advance(&spec, &s, 1, &seen(6, running.clone()));
        assert_eq!(s.phase, Phase::Running);
        assert_eq!(notes[0].reason, "Running");
        assert_eq!(s.progress.as_ref().unwrap().elapsed_seconds, 1.0);
        assert_eq!(s.start_time.as_deref(), Some(timestamp(t(5)).as_str()));
        let (s, notes) = advance(&spec, &s, 1, &seen(36, running));
        assert_eq!(s.phase, Phase::Draining);
        assert_eq!(notes[0].reason, "Draining");
        let (s, notes) = advance(&spec, &s, 1, &seen(40, terminated(&results(0.95))));
        assert_eq!(s.phase, Phase::Succeeded);
        let reasons: Vec<_> = notes.iter().map(|n| n.reason.as_str()).collect();
        assert_eq!(reasons, ["Analyzing", "Succeeded"]);
        assert_eq!(s.verdict.as_ref().unwrap().result, VerdictResult::Passed);
        assert_eq!(s.results.as_ref().unwrap().success_ratio, 0.95);
        assert_eq!(get_condition(&s.conditions, "ObjectivesMet").unwrap().status, "True");
        assert_eq!(get_condition(&s.conditions, "Completed").unwrap().status, "True");
    }

    #[test]
    fn objectives_not_met_fail_the_run() {
        let spec = spec("");
        let (s, _) = start_run(&Default::default(), 1, &spec, t(0));
        let (s, _) = advance(&spec, &s, 1, &seen(40, terminated(&results(0.5))));
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(s.verdict.as_ref().unwrap().result, VerdictResult::Failed);
        let c = get_condition(&s.conditions, "ObjectivesMet").unwrap();
        assert_eq!((c.status.as_str(), c.observed_generation), ("False", Some(1)));
    }

    #[test]
    fn a_crashed_or_unreadable_load_generator_fails_the_run_with_the_reason() {
        let spec = spec("");
        let (s, _) = start_run(&Default::default(), 2, &spec, t(0));
        let crashed = Loadgen::Terminated {
            exit_code: 1,
            reason: Some("Error".into()),
            message: Some("Error: the order API at http://10.0.0.3:8080/readyz was not ready within 300s".into()),
        };
        let (f, notes) = advance(&spec, &s, 2, &seen(9, crashed));
        assert_eq!(f.phase, Phase::Failed);
        assert!(notes[notes.len() - 1].warning);
        let c = get_condition(&f.conditions, "Completed").unwrap();
        assert!(
            c.message.contains("exited with code 1") && c.message.contains("not ready"),
            "{}",
            c.message
        );
        let garbled = Loadgen::Terminated {
            exit_code: 0,
            reason: None,
            message: Some("{not json".into()),
        };
        let (f, _) = advance(&spec, &s, 2, &seen(9, garbled));
        assert_eq!(
            get_condition(&f.conditions, "Completed").unwrap().reason,
            "UnreadableResults"
        );
        let deadline = Loadgen::JobFailed {
            reason: "DeadlineExceeded".into(),
            message: "Job was active longer than specified deadline".into(),
        };
        let (f, _) = advance(&spec, &s, 2, &seen(9, deadline));
        assert_eq!(f.phase, Phase::Failed);
        assert!(f.results.is_none());
    }

    #[test]
    fn a_new_run_keeps_the_finished_one_in_history_newest_first_and_bounded() {
        let spec = spec("");
        let mut s = ReliabilityExperimentStatus::default();
        for gen in 1..=7 {
            let (next, _) = start_run(&s, gen, &spec, t(gen * 100));
            let (done, _) = advance(
                &spec,
                &next,
                gen,
                &seen(gen * 100 + 50, terminated(&results(0.9 + gen as f64 / 100.0))),
            );
            s = done;
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        assert_eq!(s.history[0].generation, Some(6));
        assert!((s.history[0].success_ratio - 0.96).abs() < 1e-9);
        assert_eq!(s.observed_generation, Some(7));
        let (next, notes) = start_run(&s, 8, &spec, t(900));
        assert!(next.results.is_none() && next.verdict.is_none());
        assert_eq!(next.history[0].generation, Some(7));
        assert!(notes[0].message.contains("generation 7 -> 8"), "{}", notes[0].message);
    }

    #[test]
    fn invalid_specs_say_every_path_once() {
        let problems = vec![
            FieldError {
                path: "spec.load.durationSeconds".into(),
                message: "is required".into(),
            },
            FieldError {
                path: "spec.orderService.retry.maxBackoffMs".into(),
                message: "must be >= initialBackoffMs".into(),
            },
        ];
        let (s, notes) = invalid(&Default::default(), 4, &problems, t(0));
        let c = get_condition(&s.conditions, "Valid").unwrap();
        assert_eq!((c.status.as_str(), c.observed_generation), ("False", Some(4)));
        assert!(c.message.contains("spec.load.durationSeconds") && c.message.contains("maxBackoffMs"));
        assert_eq!(notes.len(), 1);
        let (again, notes) = invalid(&s, 4, &problems, t(60));
        assert_eq!(again, s);
        assert!(notes.is_empty(), "no event storm on resync");
    }

    #[test]
    fn cleanup_follows_the_ttl_and_the_policy() {
        let mut status = ReliabilityExperimentStatus {
            phase: Phase::Failed,
            finish_time: Some(timestamp(t(100))),
            ..Default::default()
        };
        assert_eq!(cleanup_due(&spec(""), &status), None, "no TTL: kept");
        let mut sp = spec("  ttlSecondsAfterFinished: 30\n");
        assert_eq!(cleanup_due(&sp, &status), Some(t(130)));
        sp.cleanup_policy = CleanupPolicy::RetainOnFailure;
        assert_eq!(cleanup_due(&sp, &status), None, "failed run retained");
        status.phase = Phase::Succeeded;
        assert_eq!(cleanup_due(&sp, &status), Some(t(130)));
        status.phase = Phase::Running;
        assert_eq!(cleanup_due(&sp, &status), None);
    }
}

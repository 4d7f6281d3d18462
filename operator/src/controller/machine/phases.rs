//! One step of a started, unfinished run: a function per state of the load
//! generator, each moving the phase forward (pure).
//!
//! | load generator | function | phase afterwards |
//! |---|---|---|
//! | no pod, or not started | [`provisioning`] | `Provisioning` |
//! | running | [`running`] | `Running`, then `Draining` once it says its load is over |
//! | exited 0 with a summary | [`reported`] | `Analyzing`, then `Succeeded` or `Failed` by the verdict |
//! | exited otherwise, or its Job failed | [`crashed`], [`job_failed`] | `Failed` |

use super::{Loadgen, Note, Observed};
use crate::crd::{Phase, ReliabilityExperimentSpec, ReliabilityExperimentStatus};
use chrono::{DateTime, Utc};
use lab_service::run::RunStage;
use relab_model::results::RunResults;
use relab_model::status::{condition, judged_from, set_condition, timestamp, Condition};
use relab_model::ValidatedExperiment;

/// One step of a started, unfinished run whose children were just applied.
pub fn step(
    experiment: &ValidatedExperiment,
    old: &ReliabilityExperimentStatus,
    generation: i64,
    seen: &Observed,
) -> (ReliabilityExperimentStatus, Vec<Note>) {
    advance(experiment.spec(), old, generation, seen)
}

pub(super) fn advance(
    spec: &ReliabilityExperimentSpec,
    old: &ReliabilityExperimentStatus,
    generation: i64,
    seen: &Observed,
) -> (ReliabilityExperimentStatus, Vec<Note>) {
    let mut step = Step {
        status: old.clone(),
        notes: Vec::new(),
        generation: Some(generation),
        now: timestamp(seen.now),
    };
    // a step only runs when the run is not suspended
    step.status.conditions.retain(|c| c.type_ != "Suspended");
    if step.status.phase == Phase::Pending {
        step.go(Phase::Provisioning, "the lab's objects are applied".into());
    }
    match &seen.loadgen {
        Loadgen::Missing => provisioning(&mut step, None),
        Loadgen::Waiting { reason } => provisioning(&mut step, reason.as_deref()),
        Loadgen::Running { started_at } => running(&mut step, spec, *started_at, seen),
        Loadgen::Terminated {
            exit_code: 0,
            message: Some(message),
            ..
        } => reported(&mut step, spec, message),
        Loadgen::Terminated {
            exit_code,
            reason,
            message,
        } => crashed(&mut step, *exit_code, reason.as_deref(), message.as_deref()),
        Loadgen::JobFailed { reason, message } => job_failed(&mut step, reason, message),
    }
    (step.status, step.notes)
}

/// The status being stepped and the Events of its changes.
struct Step {
    status: ReliabilityExperimentStatus,
    notes: Vec<Note>,
    generation: Option<i64>,
    /// When this step happens, as a status timestamp.
    now: String,
}

impl Step {
    /// Move to phase `to` (an Event named after it when that is a change).
    fn go(&mut self, to: Phase, message: String) {
        if self.status.phase != to {
            self.notes.push(Note::normal(&format!("{to:?}"), message));
            self.status.phase = to;
        }
    }

    fn set(&mut self, type_: &str, status: &str, reason: &str, message: String) {
        let c = condition(type_, status, reason, message, self.generation, &self.now);
        self.set_condition(c);
    }

    fn set_condition(&mut self, c: Condition) {
        set_condition(&mut self.status.conditions, c);
    }

    /// The run is over without results: `Failed`, with `reason` in `Completed`.
    fn fail(&mut self, reason: &str, message: String) {
        self.set("Completed", "True", reason, message.clone());
        self.set(
            "ObjectivesMet",
            "Unknown",
            "NoResults",
            "the run produced no results".into(),
        );
        self.set("Ready", "False", "RunFinished", "the run is over".into());
        self.status.finish_time = Some(self.now.clone());
        if self.status.phase != Phase::Failed {
            self.status.phase = Phase::Failed;
            self.notes.push(Note::warning(reason, message));
        }
    }
}

/// No load generator running yet (images pulling, not scheduled): `Ready=False`
/// with the kubelet's reason when it gave one.
fn provisioning(step: &mut Step, reason: Option<&str>) {
    let detail = match reason {
        Some(r) => format!("load generator waiting: {r}"),
        None => "waiting for the load generator's pod to start".to_string(),
    };
    step.set("Ready", "False", "Provisioning", detail);
}

/// The load generator runs: progress (live figures when read; the seconds
/// of load from the load generator itself), `Running`, and `Draining` once
/// the load generator says its load is over. Its stage, never the clock,
/// decides: a lab still waiting for its pods stays `Running` at 0 s of load.
fn running(step: &mut Step, spec: &ReliabilityExperimentSpec, started_at: DateTime<Utc>, seen: &Observed) {
    let s = &mut step.status;
    if s.start_time.is_none() {
        s.start_time = Some(timestamp(started_at));
    }
    let seen_until = s.progress.as_ref().map(|p| p.elapsed_seconds);
    let before = seen_until.unwrap_or(0.0);
    let (elapsed, load_over) = match &seen.load {
        Some(load) => (
            load.elapsed.as_secs_f64(),
            matches!(load.stage, RunStage::Drain | RunStage::Audit | RunStage::Done),
        ),
        None => (before, false),
    };
    let mut progress = seen
        .progress
        .clone()
        .unwrap_or_else(|| s.progress.clone().unwrap_or_default());
    progress.elapsed_seconds = elapsed;
    if progress.breaker_state.is_empty() {
        progress.breaker_state = "unknown".into();
    }
    s.progress = Some(progress);
    if let Some(load) = &seen.load {
        // kills (the operator's) and the load generator's own disruptions alike
        step.notes
            .extend(super::disruptions::fired_notes(seen_until, &load.disruptions));
    }
    let waiting = seen.load.as_ref().is_some_and(|l| l.stage == RunStage::Starting);
    let detail = match waiting {
        true => "the load generator waits for the lab (database, order service, payment mock)",
        false => "the load generator is running",
    };
    step.set("Ready", "True", "LoadRunning", detail.into());
    let load = spec.load.total_seconds() as f64;
    if step.status.phase == Phase::Provisioning {
        step.go(Phase::Running, format!("load generator started: {load} s of load"));
    }
    if load_over && step.status.phase == Phase::Running {
        step.go(
            Phase::Draining,
            format!(
                "load over after {elapsed:.1} s (the load generator's own account); waiting at most {} s for accepted orders, then the audit",
                spec.load.drain_timeout_seconds
            ),
        );
    }
}

/// The load generator exited 0 with its termination message: `Analyzing`,
/// the results judged against the objectives, then the verdict's phase. A
/// message that is not a results summary fails the run.
fn reported(step: &mut Step, spec: &ReliabilityExperimentSpec, message: &str) {
    let results = match serde_json::from_str::<RunResults>(message) {
        // the histograms are for merging lab runs; the status keeps percentiles
        Ok(results) => RunResults {
            histograms: None,
            ..results
        },
        Err(e) => {
            return step.fail(
                "UnreadableResults",
                format!("the load generator's termination message is not a results summary: {e}"),
            )
        }
    };
    // disruptions that fired after the last progress read
    let seen_until = step.status.progress.as_ref().map(|p| p.elapsed_seconds);
    step.notes
        .extend(super::disruptions::fired_notes(seen_until, &results.disruptions));
    step.go(Phase::Analyzing, "the load generator reported its results".into());
    let mut verdict = relab_model::verdict::judge(spec, &results);
    let baseline = relab_model::compare::baseline_from_history(&step.status.history);
    step.status.baseline = relab_model::compare::gate(spec, &mut verdict, &results, baseline);
    let mut judged = judged_from(verdict, step.generation, &step.now);
    judged.conditions[0].message = format!("load, drain and audit finished (drained: {})", results.drained);
    for c in judged.conditions {
        step.set_condition(c);
    }
    step.set("Ready", "False", "RunFinished", "the run is over".into());
    let headline = format!(
        "verdict {:?}: success ratio {:.4}, API p95 {:.1} ms, {} accepted, {} double charges, {} lost",
        judged.verdict.result,
        results.success_ratio,
        results.api_latency_ms.p95,
        results.orders.accepted,
        results.invariants.double_charges,
        results.invariants.lost_orders
    );
    let s = &mut step.status;
    if s.start_time.is_none() {
        s.start_time = Some(step.now.clone());
    }
    s.finish_time = Some(step.now.clone());
    if let Some(p) = s.progress.as_mut() {
        // the final figures, from the audit rather than the last scrape
        p.sent = results.orders.sent;
        p.paid = results.orders.paid;
        p.failed = results.orders.failed + results.orders.dead_lettered;
    }
    s.results = Some(results);
    s.verdict = Some(judged.verdict);
    step.go(judged.phase, headline);
}

/// The load generator exited without results: `Failed` with its exit code,
/// reason and the end of its message.
fn crashed(step: &mut Step, exit_code: i32, reason: Option<&str>, message: Option<&str>) {
    let detail = message.unwrap_or("").trim();
    let tail: String = detail
        .chars()
        .rev()
        .take(400)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    step.fail(
        "LoadgenFailed",
        format!(
            "the load generator exited with code {exit_code} ({}){}",
            reason.unwrap_or("no reason"),
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        ),
    )
}

/// The Job gave up without a terminated container to read (deadline, deleted pod).
fn job_failed(step: &mut Step, reason: &str, message: &str) {
    step.fail(
        "LoadgenFailed",
        format!("the load generator's Job failed ({reason}): {message}"),
    )
}

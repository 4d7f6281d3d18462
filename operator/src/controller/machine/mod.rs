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
//! - `Draining`: the load generator says its load is over (its own stage,
//!   not the clock); it waits for accepted orders to finish and audits.
//! - `Analyzing`: the load generator's summary arrived; it is judged.
//! - `Succeeded`: objectives met. `Failed`: objectives not met, the verdict
//!   is inconclusive, or the run could not finish (the reason is in the
//!   `Completed` condition).
//!
//! A run is one `metadata.generation`: any spec change (a new `runId`
//! included) starts a new run, and the finished one goes to `history`.
//!
//! Every function takes the validated experiment, never a stored
//! resource's spec; one step of a running run is [`step`], which hands the
//! load generator's state to the function of its phase ([`phases`]).
//! The controller writes the status this computes (`controller::status`).

mod comparison;
pub mod disruptions;
mod phases;
pub mod schedule;

pub use comparison::{current_lab_run, step_lab_run};
pub use phases::step;

use crate::crd::{
    LiveProgress, Phase, ReliabilityExperimentSpec, ReliabilityExperimentStatus, RunSummary, VerdictResult,
};
use chrono::{DateTime, Utc};
use relab_model::results::RunResults;
use relab_model::status::{condition, set_condition, timestamp};
use relab_model::{FieldError, ValidatedExperiment};

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
    /// The load generator's own progress (its stage and the seconds since
    /// the load started), when it could be read.
    pub load: Option<lab_service::run::RunProgress>,
}

/// A notable change, published as a Kubernetes Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub message: String,
    /// The Event's `action` (`Reconcile` unless set). kube's recorder
    /// merges Events of one object with the same type, reason and action
    /// into one series (the later ones' messages are lost): Events that
    /// must each be read, like one per disruption, get an action of their own.
    pub action: Option<String>,
}

impl Note {
    pub(crate) fn normal(reason: &str, message: String) -> Self {
        Self {
            warning: false,
            reason: reason.into(),
            message,
            action: None,
        }
    }
    pub(crate) fn warning(reason: &str, message: String) -> Self {
        Self {
            warning: true,
            reason: reason.into(),
            message,
            action: None,
        }
    }
    /// This note with an Event action of its own.
    pub(crate) fn with_action(mut self, action: String) -> Self {
        self.action = Some(action);
        self
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
pub fn start(
    experiment: &ValidatedExperiment,
    old: &ReliabilityExperimentStatus,
    generation: i64,
    now: DateTime<Utc>,
) -> (ReliabilityExperimentStatus, Vec<Note>) {
    let (mut status, notes) = start_with(experiment.spec(), old, generation, now);
    // a comparison reports per variant (one lab run at a time)
    status.variants = relab_model::compare::initial_variants(experiment);
    status.execution = relab_model::compare::execution(experiment);
    (status, notes)
}

/// A new generation (a spec change): a run starts, or, with
/// `spec.schedule`, the experiment waits for its next tick
/// ([`schedule::tick`] starts the runs).
pub fn new_generation(
    experiment: &ValidatedExperiment,
    old: &ReliabilityExperimentStatus,
    generation: i64,
    now: DateTime<Utc>,
) -> (ReliabilityExperimentStatus, Vec<Note>) {
    let (mut status, notes) = start(experiment, old, generation, now);
    if experiment.spec().schedule.is_none() {
        return (status, notes);
    }
    status.last_schedule_time = old.last_schedule_time.clone();
    let notes = schedule::wait_for_first_tick(experiment, &mut status, generation, now);
    (status, notes)
}

/// [`start`] for a caller that holds a spec it has already checked (the
/// packaging tests' Argo CD health checks): the controller calls [`start`].
pub fn start_run(
    old: &ReliabilityExperimentStatus,
    generation: i64,
    spec: &ReliabilityExperimentSpec,
    now: DateTime<Utc>,
) -> (ReliabilityExperimentStatus, Vec<Note>) {
    start_with(spec, old, generation, now)
}

/// [`step`] for a caller that holds a spec it has already checked (the
/// packaging tests' Argo CD health checks): the controller calls [`step`].
pub fn advance(
    spec: &ReliabilityExperimentSpec,
    old: &ReliabilityExperimentStatus,
    generation: i64,
    seen: &Observed,
) -> (ReliabilityExperimentStatus, Vec<Note>) {
    phases::advance(spec, old, generation, seen)
}

fn start_with(
    spec: &ReliabilityExperimentSpec,
    old: &ReliabilityExperimentStatus,
    generation: i64,
    now: DateTime<Utc>,
) -> (ReliabilityExperimentStatus, Vec<Note>) {
    let mut history = old.history.clone();
    if let Some(verdict) = &old.verdict {
        // a comparison without merged results is summarised by its first variant
        let results = old
            .results
            .clone()
            .or_else(|| old.variants.first().and_then(|v| v.results.clone()))
            .unwrap_or_default();
        history.insert(0, summary(old, &results, verdict.result));
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
        scheduled_run: old.scheduled_run,
        ..relab_model::compare::summary_of(
            old.run_id.clone(),
            old.observed_generation,
            old.finish_time.clone(),
            verdict,
            results,
        )
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

/// When the workloads of a finished run are due for deletion: `None` when
/// they stay (no TTL, or kept by `RetainOnFailure`).
pub fn cleanup_due(experiment: &ValidatedExperiment, status: &ReliabilityExperimentStatus) -> Option<DateTime<Utc>> {
    let spec = experiment.spec();
    let ttl = spec.ttl_seconds_after_finished?;
    if !status.phase.is_finished() {
        return None;
    }
    if status.phase == Phase::Failed && spec.cleanup_policy == crate::crd::CleanupPolicy::RetainOnFailure {
        return None;
    }
    let finished = relab_model::status::parse_timestamp(status.finish_time.as_deref()?)?;
    Some(finished + chrono::Duration::seconds(ttl))
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
mod tests;

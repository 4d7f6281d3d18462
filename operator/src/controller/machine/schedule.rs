//! `spec.schedule` (pure): when a scheduled experiment starts its next run.
//!
//! The state is in the status only: `nextRunTime` is the tick still to be
//! handled, `lastScheduleTime` the tick that started the current run and
//! `scheduledRun` its number. Each reconcile asks [`relab_model::ops::due`]
//! what the schedule wants at `now` and writes the answer back with the
//! status, so an operator restarted (or a new leader) across a tick sees the
//! same `nextRunTime` and handles the tick at most once: either the status
//! write that started the run landed (and `nextRunTime` moved on), or it did
//! not (and the run starts now, with the same names).
//!
//! - A spec change of a scheduled experiment waits for the next tick
//!   ([`awaiting`]); no run starts on the change itself.
//! - A tick while a run is going is skipped (`ScheduleSkipped`; Forbid).
//! - A tick missed by more than `startingDeadlineSeconds` is skipped
//!   (`ScheduleMissed`), never caught up in a burst.
//! - `suspend` (the schedule's or the spec's): no ticks, no `nextRunTime`.

use super::{start, Note};
use crate::crd::{Phase, ReliabilityExperimentStatus};
use chrono::{DateTime, Utc};
use relab_model::ops::{due, ScheduleSpec, Tick};
use relab_model::status::{condition, parse_timestamp, set_condition, timestamp};
use relab_model::ValidatedExperiment;

/// A scheduled experiment whose generation has no run yet (a new spec):
/// `Pending`, waiting for the first tick.
pub fn awaiting(status: &ReliabilityExperimentStatus) -> bool {
    status.scheduled_run.is_none()
}

/// The new generation of a scheduled experiment: no run, the next tick
/// computed from `now` (a changed cron counts from the change).
pub(super) fn wait_for_first_tick(
    experiment: &ValidatedExperiment,
    status: &mut ReliabilityExperimentStatus,
    generation: i64,
    now: DateTime<Utc>,
) -> Vec<Note> {
    let Some(schedule) = experiment.spec().schedule.as_ref() else {
        return Vec::new();
    };
    status.scheduled_run = None;
    let next = next_tick(experiment, schedule, now);
    status.next_run_time = next.map(timestamp);
    let message = match next {
        Some(t) => format!(
            "run of generation {generation} waits for its schedule ({:?} in {}): first run at {}",
            schedule.cron,
            schedule.time_zone,
            timestamp(t)
        ),
        None => format!("run of generation {generation} waits for its schedule, which is suspended"),
    };
    mark(status, generation, next, now);
    vec![Note::normal("Scheduled", message)]
}

/// The schedule's decision at `now` for a status of this generation: the
/// status afterwards, its Events, and whether a new run started (its
/// children are the next scheduled run's).
pub fn tick(
    experiment: &ValidatedExperiment,
    old: &ReliabilityExperimentStatus,
    generation: i64,
    now: DateTime<Utc>,
) -> (ReliabilityExperimentStatus, Vec<Note>, bool) {
    let mut status = old.clone();
    let Some(schedule) = experiment.spec().schedule.as_ref() else {
        return (status, Vec::new(), false);
    };
    if suspended(experiment, schedule) {
        status.next_run_time = None;
        if awaiting(&status) {
            mark(&mut status, generation, None, now);
        }
        return (status, Vec::new(), false);
    }
    let Some(pending) = next_tick_at(&status) else {
        // resumed, or a status written before the schedule: count from now
        status.next_run_time = next_tick(experiment, schedule, now).map(timestamp);
        return (status, Vec::new(), false);
    };
    // ticks are whole minutes apart: one second before the pending tick is
    // after the one before it, so `due` counts from exactly that tick
    let last = pending - chrono::Duration::seconds(1);
    match due(schedule, last, now) {
        Tick::Wait { next } => {
            status.next_run_time = next.map(timestamp);
            (status, Vec::new(), false)
        }
        Tick::Missed { at, next } => {
            status.next_run_time = next.map(timestamp);
            let late = (now - at).num_seconds();
            let note = Note::warning(
                "ScheduleMissed",
                format!(
                    "the tick at {} was missed by {late} s, more than startingDeadlineSeconds {}: skipped, not caught up{}",
                    timestamp(at),
                    schedule.starting_deadline_seconds,
                    next_at(next)
                ),
            );
            (status, vec![note], false)
        }
        Tick::Fire { at, next } if in_progress(&status) => {
            status.next_run_time = next.map(timestamp);
            let note = Note::normal(
                "ScheduleSkipped",
                format!(
                    "the tick at {} is skipped: scheduled run {} is still {:?} (one run at a time){}",
                    timestamp(at),
                    status.scheduled_run.unwrap_or_default(),
                    status.phase,
                    next_at(next)
                ),
            );
            (status, vec![note], false)
        }
        Tick::Fire { at, next } => {
            let n = old.scheduled_run.unwrap_or(0) + 1;
            let (mut status, _) = start(experiment, old, generation, now);
            status.scheduled_run = Some(n);
            status.last_schedule_time = Some(timestamp(at));
            status.next_run_time = next.map(timestamp);
            let note = Note::normal(
                "RunStarted",
                format!(
                    "scheduled run {n} of generation {generation}: the tick at {} ({:?} in {}){}",
                    timestamp(at),
                    schedule.cron,
                    schedule.time_zone,
                    next_at(next)
                ),
            );
            (status, vec![note], true)
        }
    }
}

/// When the controller should look again for the schedule's sake (None:
/// no tick pending).
pub fn next_tick_at(status: &ReliabilityExperimentStatus) -> Option<DateTime<Utc>> {
    status.next_run_time.as_deref().and_then(parse_timestamp)
}

/// `; next at <time>` for an Event (empty without a next tick).
fn next_at(next: Option<DateTime<Utc>>) -> String {
    next.map(|t| format!("; next at {}", timestamp(t))).unwrap_or_default()
}

/// A scheduled run that has not finished yet.
fn in_progress(status: &ReliabilityExperimentStatus) -> bool {
    status.scheduled_run.is_some() && !status.phase.is_finished()
}

fn suspended(experiment: &ValidatedExperiment, schedule: &ScheduleSpec) -> bool {
    schedule.suspend || experiment.spec().suspend
}

fn next_tick(experiment: &ValidatedExperiment, schedule: &ScheduleSpec, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if suspended(experiment, schedule) {
        return None;
    }
    schedule.next_after(now)
}

/// The `Scheduled` condition of a status waiting for its first tick.
fn mark(status: &mut ReliabilityExperimentStatus, generation: i64, next: Option<DateTime<Utc>>, now: DateTime<Utc>) {
    status.phase = Phase::Pending;
    let (state, reason, message) = match next {
        Some(t) => (
            "True",
            "AwaitingTick",
            format!("the first run of this spec starts at {}", timestamp(t)),
        ),
        None => (
            "False",
            "ScheduleSuspended",
            "the schedule is suspended: no run starts".to_string(),
        ),
    };
    set_condition(
        &mut status.conditions,
        condition("Scheduled", state, reason, message, Some(generation), &timestamp(now)),
    );
}

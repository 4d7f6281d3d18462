//! Disruptions on a cluster (pure): which kills are due now, which pods
//! they take, when the next one is due, and the Events of those that fired.
//!
//! The load generator keeps the clock and the record of every disruption
//! (`lab-service/src/run/disrupt.rs`; read from its `GET /progress`). It
//! fires the database ones itself (the fault proxy, the SQL restart); the
//! kills are the operator's: a `KillWorkers` / `KillOrderService` whose
//! time has come by the load generator's own seconds of load, and which is
//! neither fired nor failed, is due ([`due_kills`]). The reconcile deletes
//! its victims ([`victims`]) and reports them back
//! (`controller::disrupt`); the record then shows it fired, and
//! [`fired_notes`] turns that into one `DisruptionFired` Event.

use super::Note;
use crate::controller::build::{ORDER_SERVICE, WORKERS};
use lab_service::run::{RunProgress, RunStage};
use relab_model::disruptions::{DisruptionAction, DisruptionResult, PlannedDisruption};
use std::time::Duration;

/// The kills of `planned` that are due by `load`: the load runs, their time
/// (as the load generator planned it) has come, and the load generator has
/// recorded neither a firing nor an error for them.
pub fn due_kills(planned: &[PlannedDisruption], load: &RunProgress) -> Vec<PlannedDisruption> {
    if load.stage != RunStage::Load {
        return Vec::new();
    }
    let elapsed = load.elapsed.as_secs_f64();
    pending_kills(planned, load)
        .filter(|(_, record)| record.at_seconds <= elapsed)
        .map(|(plan, _)| plan.clone())
        .collect()
}

/// How long until the next kill is due (None: none is pending), by the
/// load generator's clock: the reconcile looks again then.
pub fn next_kill_in(planned: &[PlannedDisruption], load: &RunProgress) -> Option<Duration> {
    if !matches!(load.stage, RunStage::Starting | RunStage::Load) {
        return None;
    }
    let elapsed = load.elapsed.as_secs_f64();
    // before the load starts its seconds stand still: look again each second
    let floor = match load.stage {
        RunStage::Starting => Duration::from_secs(1),
        _ => Duration::ZERO,
    };
    pending_kills(planned, load)
        .map(|(_, record)| Duration::from_secs_f64((record.at_seconds - elapsed).max(0.0)).max(floor))
        .min()
}

/// The kills not yet fired nor failed, with their record.
fn pending_kills<'a>(
    planned: &'a [PlannedDisruption],
    load: &'a RunProgress,
) -> impl Iterator<Item = (&'a PlannedDisruption, &'a DisruptionResult)> {
    planned.iter().filter(|p| p.action.kills()).filter_map(move |plan| {
        let record = load.disruptions.iter().find(|d| d.name == plan.name)?;
        (record.fired_at_seconds.is_none() && record.error.is_none()).then_some((plan, record))
    })
}

/// The components whose pods a kill takes: `KillWorkers` the workers'
/// pods when they have their own (`workerReplicas`), else the order
/// service's (each runs workers and the API, which dies too);
/// `KillOrderService` the order service's and the workers'.
pub fn kill_components(action: DisruptionAction, separate_workers: bool) -> &'static [&'static str] {
    match (action, separate_workers) {
        (DisruptionAction::KillWorkers, true) => &[WORKERS],
        (DisruptionAction::KillOrderService, true) => &[ORDER_SERVICE, WORKERS],
        _ => &[ORDER_SERVICE],
    }
}

/// The pods a kill takes of `pods` (the run's pods of its
/// [`kill_components`] that are not already going): `fraction` of them
/// rounded up, at least one (`KillWorkers`), or all (`KillOrderService`),
/// in name order.
pub fn victims(plan: &PlannedDisruption, mut pods: Vec<String>) -> Vec<String> {
    pods.sort();
    pods.dedup();
    let n = plan.victims(pods.len());
    pods.truncate(n);
    pods
}

/// One `DisruptionFired` Event for each disruption of `records` that fired
/// after `seen_until` (the seconds of load the status last recorded; None:
/// nothing recorded yet), whoever fired it.
pub fn fired_notes(seen_until: Option<f64>, records: &[DisruptionResult]) -> Vec<Note> {
    records
        .iter()
        .filter_map(|d| {
            let at = d.fired_at_seconds?;
            seen_until.is_none_or(|until| at > until).then(|| {
                let hit = match d.hit.len() {
                    0 => "nothing".to_string(),
                    n if n > 10 => format!("{} and {} more", d.hit[..10].join(", "), n - 10),
                    _ => d.hit.join(", "),
                };
                Note::normal(
                    "DisruptionFired",
                    format!(
                        "disruption {} ({}) fired at {at:.1} s of load (asked for {:.1} s): hit {hit}",
                        d.name,
                        d.action.as_str(),
                        d.at_seconds
                    ),
                )
                // one Event each (the recorder would merge them otherwise)
                .with_action(format!("Disrupt:{}", d.name))
            })
        })
        .collect()
}

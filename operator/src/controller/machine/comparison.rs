//! Experiments of several lab runs (variants, repeats) on a cluster: one lab
//! at a time, in the order the local runner uses (interleaved A1 B1 A2 B2
//! ...). Each lab run gets children of its own; when its load generator
//! reports, the run is recorded in `status.variants`, and either the next
//! lab run starts (`Provisioning` again) or, after the last, the experiment
//! is concluded exactly as `relab run` concludes it (`compare::conclude`).
//!
//! In turn rather than side by side: a lab is a Postgres, a payment mock,
//! an order service and a load generator; several at once would compete for
//! the same nodes, so a variant's figures would depend on what else ran.

use super::{phases, Note, Observed};
use crate::crd::{Phase, ReliabilityExperimentStatus};
use relab_model::compare;
use relab_model::status::{condition, set_condition, timestamp};
use relab_model::ValidatedExperiment;

/// The lab run a comparison is at (the next one not yet recorded); `None`
/// for an experiment of one lab run.
pub fn current_lab_run(experiment: &ValidatedExperiment, status: &ReliabilityExperimentStatus) -> Option<usize> {
    let total = experiment.lab_runs().len();
    (total > 1).then(|| compare::recorded_runs(status).min(total - 1))
}

/// One step of lab run `k`: the phase machine of a single run on that lab
/// run's spec; when it has reported, the run recorded and the next one (or
/// the conclusion) set up.
pub fn step_lab_run(
    experiment: &ValidatedExperiment,
    old: &ReliabilityExperimentStatus,
    generation: i64,
    seen: &Observed,
    k: usize,
) -> (ReliabilityExperimentStatus, Vec<Note>) {
    let runs = experiment.lab_runs();
    let lab = &runs[k];
    let (mut s, mut notes) = phases::advance(lab.experiment.spec(), old, generation, seen);
    let Some(results) = s.results.take().filter(|_| s.phase.is_finished()) else {
        // still running, or crashed without results (the experiment failed)
        return (s, notes);
    };
    let verdict = s.verdict.take().map(|v| v.result).unwrap_or_default();
    let now = timestamp(seen.now);
    // the single run's closing Event ("Succeeded"/"Failed") is not the experiment's
    notes.retain(|n| n.reason != "Succeeded" && n.reason != "Failed");
    let record = compare::run_record(
        lab.repeat,
        lab.experiment.spec().payment.seed,
        k as u32 + 1,
        s.start_time.take().unwrap_or_else(|| now.clone()),
        s.finish_time.take().unwrap_or_else(|| now.clone()),
        &results,
        verdict,
    );
    let variant = lab.variant.unwrap_or(0);
    let label = s.variants[variant].name.clone();
    s.variants[variant].runs.push(record);
    notes.push(Note::normal(
        "LabRunFinished",
        format!(
            "lab run {}/{} ({label}, run {}) finished: {verdict:?}, success ratio {:.4}",
            k + 1,
            runs.len(),
            lab.repeat + 1,
            results.success_ratio
        ),
    ));
    s.progress = None;
    let gen = Some(generation);
    if k + 1 < runs.len() {
        s.phase = Phase::Provisioning;
        for c in [
            condition(
                "Completed",
                "False",
                "LabRunsRemaining",
                format!("{} of {} lab runs finished", k + 1, runs.len()),
                gen,
                &now,
            ),
            condition(
                "ObjectivesMet",
                "Unknown",
                "LabRunsRemaining",
                "not judged yet".into(),
                gen,
                &now,
            ),
            condition(
                "Ready",
                "False",
                "NextLabRun",
                "the next lab run is being provisioned".into(),
                gen,
                &now,
            ),
        ] {
            set_condition(&mut s.conditions, c);
        }
        return (s, notes);
    }
    let baseline = compare::baseline_from_history(&s.history);
    let judged = compare::conclude(experiment, &mut s, baseline, gen, &now);
    for c in judged.conditions {
        set_condition(&mut s.conditions, c);
    }
    s.start_time = s
        .variants
        .iter()
        .flat_map(|v| &v.runs)
        .filter_map(|r| r.start_time.clone())
        .min();
    s.finish_time = Some(now);
    let headline = format!(
        "verdict {:?} over {} lab runs: {}",
        judged.verdict.result,
        runs.len(),
        judged
            .verdict
            .objectives
            .iter()
            .map(|o| format!("{} {}", o.name, o.observed))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s.verdict = Some(judged.verdict);
    if s.phase != judged.phase {
        s.phase = judged.phase;
        notes.push(Note::normal(&format!("{:?}", judged.phase), headline));
    }
    (s, notes)
}

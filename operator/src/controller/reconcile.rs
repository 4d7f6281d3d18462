//! One reconcile of an experiment, read top to bottom:
//!
//! 1. **validate** ([`validate`]): the stored resource's spec with every
//!    cross-field rule, into a `ValidatedExperiment` (the only input of what
//!    follows; the resource itself gives only its identity, [`Owner`]);
//!    problems -> `Valid=False` with every path, one Event, no requeue;
//! 2. **start a run** when `metadata.generation` is new
//!    ([`machine::new_generation`]), or, with `spec.schedule`, at its tick
//!    ([`schedule::tick`]; a new generation then waits for the next tick):
//!    the finished run goes to `status.history`, the previous run's children
//!    are deleted; a finished run only waits for its TTL, its webhook
//!    ([`notify`]) and its next tick ([`finished`]), a suspended one stays
//!    `Pending`;
//! 3. **build** the children (pure, [`build`]) and 4. **apply** them
//!    ([`apply`]): the Services first, the rest with their ClusterIPs;
//! 5. **observe** the load generator ([`observe`]); **disrupt**: the kills
//!    that are due by the load generator's clock
//!    ([`machine::disruptions::due_kills`], pure) delete their pods and are
//!    reported to the load generator ([`disrupt`]); then the live figures;
//! 6. **update status**: the phase machine's next status ([`machine::step`]),
//!    then [`record`]: the status write, the dashboard and the Events
//!    ([`status`]; the Events are queued, off the reconcile's path).
//!
//! A reconcile that finds the cache still behind this process's last
//! status write does nothing and looks again shortly.

use super::build::{self, Owner};
use super::machine::{self, schedule, Note};
use super::{apply, disrupt, notify, observe, status, targets, Context, Error};
use crate::crd::{Phase, ReliabilityExperiment, ReliabilityExperimentStatus};
use chrono::Utc;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use relab_model::status::{get_condition, parse_timestamp};
use relab_model::{FieldError, ValidatedExperiment};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// How long a reconcile waits for the cache to show the status this process wrote.
const CACHE_CATCH_UP: Duration = Duration::from_millis(200);

/// How often a new run looks again whether an earlier experiment's
/// children of the same names are gone.
const EARLIER_CHILDREN_GO: Duration = Duration::from_secs(1);

/// The controller's reconcile: times and counts it, and runs
/// [`reconcile_experiment`] in a span naming the experiment.
pub async fn reconcile(rx: Arc<ReliabilityExperiment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.duration.start_timer();
    ctx.metrics.reconciles.inc();
    let name = format!("{}/{}", rx.namespace().unwrap_or_default(), rx.name_any());
    let span = tracing::info_span!("reconcile", experiment = %name);
    reconcile_experiment(&rx, &ctx).instrument(span).await
}

/// The validate step: every cross-field rule (the API server has checked the schema).
pub fn validate(rx: &ReliabilityExperiment) -> Result<ValidatedExperiment, Vec<FieldError>> {
    crate::crd::validated(rx)
}

async fn reconcile_experiment(rx: &ReliabilityExperiment, ctx: &Context) -> Result<Action, Error> {
    // an experiment being deleted (a finalizer holds it: orphan or
    // foreground deletion, which also bump a custom resource's generation)
    // starts nothing and writes nothing: its children go with it, or are
    // orphaned as asked
    if rx.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // 0. the cache has not caught up with this process's last status write:
    // look again once it has (deciding from the older status would redo
    // that reconcile and have its write refused as a conflict)
    if status::cache_behind_own_write(ctx, rx) {
        return Ok(Action::requeue(CACHE_CATCH_UP));
    }
    let generation = rx.metadata.generation.unwrap_or(0);
    let old = rx.status.clone().unwrap_or_default();
    let now = ctx.options.clock.now();

    // 1. validate
    let experiment = match validate(rx) {
        Ok(experiment) => experiment,
        Err(problems) => {
            let (status, notes) = machine::invalid(&old, generation, &problems, now);
            record(ctx, rx, None, &old, status, &notes).await?;
            return Ok(Action::await_change());
        }
    };
    let namespace = rx.namespace().unwrap_or_default();

    // 2. a new run? (a new generation; with a schedule, its tick)
    let (mut status, mut notes) = (old.clone(), Vec::new());
    let new_generation = old.observed_generation != Some(generation);
    if new_generation {
        (status, notes) = machine::new_generation(&experiment, &old, generation, now);
    }
    let mut started_now = new_generation && !scheduled(&experiment);
    if scheduled(&experiment) {
        let (next, more, fired) = schedule::tick(&experiment, &status, generation, now);
        (status, started_now) = (next, started_now || fired);
        notes.extend(more);
    }
    let whole = Owner::of(rx).for_scheduled_run(status.scheduled_run);
    let run = (&whole, &experiment);
    if (started_now || new_generation) && old.observed_generation.is_some() {
        // an earlier run (or an invalid spec's generation) may have left children
        apply::delete_children(ctx, &namespace, &whole.names.other_runs_selector()).await?;
    }
    if scheduled(&experiment) && schedule::awaiting(&status) {
        let status = record(ctx, rx, Some(run), &old, status, &notes).await?;
        return Ok(ctx.until_tick(&status, now, None));
    }
    // a comparison runs one lab at a time: which one is this, and its spec
    let lab_run = machine::current_lab_run(&experiment, &status);
    let (owner, lab_spec) = match lab_run {
        Some(k) => {
            let lab = experiment.lab_runs().swap_remove(k);
            let variant = lab.variant.map(|v| experiment.variants()[v].name.clone());
            (whole.clone().for_lab_run(k as u32, variant), lab.experiment)
        }
        None => (whole.clone(), experiment.clone()),
    };
    if status.phase.is_finished() {
        return finished(ctx, rx, run, &old, status, notes).await;
    }
    if experiment.spec().suspend {
        let status = machine::suspended(&status, generation, now);
        record(ctx, rx, Some(run), &old, status, &notes).await?;
        return Ok(Action::await_change());
    }

    // 3. build and 4. apply (skipped when this process applied them lately);
    // until this reconcile ends, queued Events and dashboards wait
    // ([`status::WriteQueue`]: a burst gets its children and statuses first)
    let provisioning = (!apply::applied_lately(ctx, &owner)).then(|| ctx.busy.enter());
    if provisioning.is_some()
        && status.phase == Phase::Pending
        && ctx.caches.earlier_experiments_children(&namespace, &owner.names)
    {
        // an earlier experiment of this name (deleted and applied again)
        // still has children under this run's names: applying over them
        // would take them over (its finished Job, its Postgres), so they go
        // first, and this run is provisioned once they are gone
        tracing::info!(
            run = owner.names.run_label(),
            "an earlier experiment's children are still there: deleting them first"
        );
        apply::delete_earlier_children(ctx, &namespace, &owner.names.earlier_experiments_selector()).await?;
        return Ok(Action::requeue(EARLIER_CHILDREN_GO));
    }
    if provisioning.is_some() {
        if lab_run.is_some_and(|k| k > 0) {
            // the previous lab run is over: its children go
            apply::delete_children(ctx, &namespace, &owner.names.other_runs_selector()).await?;
        }
        let services = build::services(&owner, &lab_spec);
        let ips = apply::apply_services(ctx, &owner, &services).await?;
        let workloads = build::workloads(&owner, &lab_spec, &ips, &ctx.options.defaults);
        apply::apply_all(ctx, &namespace, &workloads).await?;
        apply::mark_applied(ctx, &owner);
    }

    // 5. observe (a run that starts in this reconcile has nothing to see
    // yet: its status goes out first, and the next poll looks)
    let observing = std::time::Instant::now();
    let (seen, loadgen_pod) = observe::run(ctx, &namespace, &owner.names, started_now).await?;

    // 5b. disrupt: the kills that are due (the load generator fires the rest)
    let planned = lab_spec.disruptions();
    let separate_workers = lab_spec.spec().order_service.separate_workers();
    let due = match (&seen.load, &loadgen_pod) {
        (Some(load), Some(pod)) => machine::disruptions::due_kills(&planned, load)
            .into_iter()
            .map(|plan| (plan, pod.clone()))
            .collect(),
        _ => Vec::new(),
    };
    for (plan, pod) in &due {
        disrupt::kill(ctx, &namespace, &owner.names, separate_workers, pod, plan).await;
    }
    // 5c. the lab's pods' /metrics, for the load generator's sampler
    if let (Some(load), Some(pod)) = (&seen.load, &loadgen_pod) {
        targets::push(ctx, &namespace, &owner.names, pod, load).await;
    }
    let seen = observe::live(ctx, &namespace, &owner.names, separate_workers, seen).await;

    // 6. update status
    let (status, more) = match lab_run {
        Some(k) => machine::step_lab_run(&experiment, &status, generation, &seen, k),
        None => machine::step(&experiment, &status, generation, &seen),
    };
    notes.extend(more);
    let status = record(ctx, rx, Some(run), &old, status, &notes).await?;
    let poll = ctx.options.poll_interval;
    Ok(match status.phase {
        p if p.is_finished() => return finished(ctx, rx, run, &status, status.clone(), Vec::new()).await,
        // the next lab run of a comparison: its children go out now
        Phase::Provisioning if machine::current_lab_run(&experiment, &status) != lab_run => {
            Action::requeue(Duration::ZERO)
        }
        // a kill just fired shows in the next progress read (its Event);
        // a pending one is fired within about a second of its time
        Phase::Running if !due.is_empty() => Action::requeue(Duration::from_secs(1)),
        Phase::Running => {
            // by the load generator's clock as read (the reads and the
            // status write took a while since)
            let next = seen
                .load
                .as_ref()
                .and_then(|load| machine::disruptions::next_kill_in(&planned, load))
                .map(|d| (observing + d).saturating_duration_since(std::time::Instant::now()));
            Action::requeue(next.map_or(poll, |d| poll.min(d + Duration::from_millis(100))))
        }
        Phase::Draining => Action::requeue(poll),
        _ if started_now => Action::requeue(poll),
        // pod changes wake us; this is the safety net
        _ => Action::requeue(poll * 6),
    })
}

/// A finished run: only the TTL is left to act on (delete the workloads,
/// keep the results and the dashboard).
async fn finished(
    ctx: &Context,
    rx: &ReliabilityExperiment,
    run: (&Owner, &ValidatedExperiment),
    old: &ReliabilityExperimentStatus,
    status: ReliabilityExperimentStatus,
    notes: Vec<Note>,
) -> Result<Action, Error> {
    let (owner, experiment) = run;
    let now = ctx.options.clock.now();
    let (mut status, mut notes) = (status, notes);
    // the webhook first: its record goes out with this status write, made
    // on the stored object as it is now (a status write refused as stale
    // after a POST would lose the record, and the POST would be repeated)
    let fresh;
    let mut rx = rx;
    let retry_at = match notify::due(experiment, owner, &status, now) {
        notify::Due::Nothing => None,
        notify::Due::Later(at) => Some(at),
        notify::Due::Now(id) => {
            fresh = stored(ctx, rx).await?;
            if fresh.status.as_ref() != Some(old) {
                // the cache is behind the stored status (an earlier attempt's
                // record may be there): look again once it caught up
                return Ok(Action::requeue(Duration::from_millis(500)));
            }
            rx = &fresh;
            let hook = notify::webhook(experiment).expect("a delivery is due only with a webhook");
            let event = notify::event(owner, &status, &id, now);
            let namespace = owner.namespace.as_deref().unwrap_or_default();
            let outcome = notify::deliver(&ctx.client, &ctx.http, namespace, hook, &event).await;
            let (next, more) = notify::recorded(&status, id, outcome, now);
            (status, notes) = (next, notes.into_iter().chain(more).collect());
            status
                .notification
                .as_ref()
                .and_then(|n| n.next_attempt_time.as_deref())
                .and_then(parse_timestamp)
        }
    };
    match machine::cleanup_due(experiment, &status) {
        Some(due) if now >= due => {
            let done = get_condition(&status.conditions, "WorkloadsDeleted").is_some_and(|c| c.status == "True");
            if !done {
                let namespace = owner.namespace.as_deref().unwrap_or_default();
                apply::delete_children(ctx, namespace, &owner.names.experiment_selector()).await?;
            }
            let (status, more) = machine::cleaned_up(&status, owner.names.generation, now);
            let notes: Vec<Note> = notes.into_iter().chain(more).collect();
            let status = record(ctx, rx, Some(run), old, status, &notes).await?;
            Ok(ctx.until_tick(&status, now, retry_at))
        }
        due => {
            let status = record(ctx, rx, Some(run), old, status, &notes).await?;
            let also = [due, retry_at].into_iter().flatten().min();
            Ok(ctx.until_tick(&status, now, also))
        }
    }
}

/// The experiment as stored now (not as the controller's cache has it).
async fn stored(ctx: &Context, rx: &ReliabilityExperiment) -> Result<ReliabilityExperiment, Error> {
    let api: kube::Api<ReliabilityExperiment> =
        kube::Api::namespaced(ctx.client.clone(), &rx.namespace().unwrap_or_default());
    api.get(&rx.name_any())
        .await
        .map_err(super::err(super::ErrorKind::Read, "reading the experiment"))
}

fn scheduled(experiment: &ValidatedExperiment) -> bool {
    experiment.spec().schedule.is_some()
}

impl Context {
    /// Wait for a change, or until the earliest of `also` and the status's
    /// next tick. A tick is looked at again at least every six polls, so a
    /// clock that jumps (a test's, or a corrected wall clock) is seen soon.
    fn until_tick(
        &self,
        status: &ReliabilityExperimentStatus,
        now: chrono::DateTime<Utc>,
        also: Option<chrono::DateTime<Utc>>,
    ) -> Action {
        let tick = schedule::next_tick_at(status);
        let Some(at) = [tick, also].into_iter().flatten().min() else {
            return Action::await_change();
        };
        let mut wait = (at - now).to_std().unwrap_or_default() + Duration::from_millis(100);
        if tick.is_some() {
            wait = wait.min(self.options.poll_interval * 6);
        }
        Action::requeue(wait)
    }
}

/// Write back what this reconcile decided: the status when it changed,
/// the dashboard it names, then the Events. A dashboard that closes the
/// run's window is applied first, so that a finished status never names an
/// open one; otherwise the dashboard and the Events are queued after the
/// status write ([`status::WriteQueue`]: a burst of new experiments waits
/// for statuses, not dashboards). Returns the status as written.
async fn record(
    ctx: &Context,
    rx: &ReliabilityExperiment,
    run: Option<(&Owner, &ValidatedExperiment)>,
    old: &ReliabilityExperimentStatus,
    mut status: ReliabilityExperimentStatus,
    notes: &[Note],
) -> Result<ReliabilityExperimentStatus, Error> {
    let namespace = rx.namespace().unwrap_or_default();
    let mut board = run.and_then(|(owner, experiment)| status::dashboard(ctx, owner, experiment, &mut status));
    if status.finish_time.is_some() {
        if let Some(board) = board.take() {
            status::apply_dashboard(ctx, &namespace, board, true).await?;
        }
    }
    status::update_status(ctx, rx, old, &status).await?;
    if let Some(board) = board {
        status::apply_dashboard(ctx, &namespace, board, false).await?;
    }
    // the Events tell what the status now holds
    status::publish_events(ctx, rx, notes);
    Ok(status)
}

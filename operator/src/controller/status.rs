//! The status step: what one reconcile decided, written back. Three named
//! steps: [`update_status`] (the one write of `status`), [`apply_dashboard`]
//! (the dashboard the status names; before the status write when it closes
//! the run's window, after it otherwise), [`publish_events`] (queued: the
//! [`EventQueue`] posts them in order, off the reconcile path).

use super::build::{self, Owner};
use super::machine::Note;
use super::{apply, err, Context, DashboardKey, Error, ErrorKind, FIELD_MANAGER};
use crate::crd::{ReliabilityExperiment, ReliabilityExperimentStatus};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use relab_model::status::get_condition;
use relab_model::ValidatedExperiment;

/// The dashboard step's decision: name the experiment's dashboard in
/// `status`, and return the dashboard ConfigMap to apply when it differs
/// from what this process last applied. Nothing for an experiment whose
/// spec is not valid, or with dashboards off.
pub fn dashboard(
    ctx: &Context,
    owner: &Owner,
    experiment: &ValidatedExperiment,
    status: &mut ReliabilityExperimentStatus,
) -> Option<Dashboard> {
    let options = ctx.options.dashboards.as_ref()?;
    let valid = get_condition(&status.conditions, "Valid").is_some_and(|c| c.status == "True");
    if !valid || status.observed_generation.is_none() {
        return None;
    }
    // the dashboard is a function of the spec (its generation) and of the
    // run's identity and window: compare those, not a built dashboard
    let key = DashboardKey {
        generation: Some(owner.names.generation),
        run: status.observed_generation,
        start: status.start_time.clone(),
        finish: status.finish_time.clone(),
        scheduled: (status.scheduled_run, status.next_run_time.clone()),
    };
    let uid = owner.reference.uid.clone();
    let current = ctx.dashboards.lock().expect("dashboards cache").get(&uid) == Some(&key);
    let due = (!current).then(|| Dashboard {
        child: build::dashboard(owner, experiment, status, options),
        uid,
        key,
    });
    status.dashboard = Some(owner.names.dashboard());
    due
}

/// A dashboard ConfigMap to apply, and what it was made from.
pub struct Dashboard {
    child: build::Child,
    uid: String,
    key: DashboardKey,
}

/// Apply a dashboard [`dashboard`] returned, and remember what it was made from.
pub async fn apply_dashboard(ctx: &Context, namespace: &str, board: Dashboard) -> Result<(), Error> {
    apply::apply(ctx, namespace, &board.child).await?;
    ctx.dashboards
        .lock()
        .expect("dashboards cache")
        .insert(board.uid, board.key);
    Ok(())
}

/// Whether the cache still shows `rx` as it was before this process last
/// replaced its status (the watch has not delivered the write yet): then
/// a reconcile would decide from a stale status, and its write would be
/// refused as a conflict.
pub fn cache_behind_own_write(ctx: &Context, rx: &ReliabilityExperiment) -> bool {
    let (Some(uid), Some(version)) = (rx.uid(), rx.resource_version()) else {
        return false;
    };
    let mut written = ctx.written.lock().expect("written cache");
    match written.get(&uid) {
        Some(replaced) if *replaced == version => true,
        Some(_) => {
            // caught up: nothing to remember until the next write
            written.remove(&uid);
            false
        }
        None => false,
    }
}

/// Replace the stored status with `status` when it differs from `old`.
///
/// A whole replace (PUT /status) guarded by the resourceVersion `rx` was
/// read at: the status is exactly what was computed (server-side apply on
/// 1.20 leaves null husks of removed fields), and a concurrent change makes
/// this fail with 409 and reconcile again.
pub async fn update_status(
    ctx: &Context,
    rx: &ReliabilityExperiment,
    old: &ReliabilityExperimentStatus,
    status: &ReliabilityExperimentStatus,
) -> Result<(), Error> {
    if status == old {
        return Ok(());
    }
    let api: Api<ReliabilityExperiment> = Api::namespaced(ctx.client.clone(), &rx.namespace().unwrap_or_default());
    let mut object = rx.clone();
    object.metadata.managed_fields = None;
    object.status = Some(status.clone());
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    api.replace_status(&rx.name_any(), &params, &object)
        .await
        .map_err(err(ErrorKind::Status, "writing the status"))?;
    if let (Some(uid), Some(version)) = (rx.uid(), rx.resource_version()) {
        ctx.written.lock().expect("written cache").insert(uid, version);
    }
    if status.phase != old.phase {
        tracing::info!(from = ?old.phase, to = ?status.phase, "phase changed");
    }
    Ok(())
}

/// Queue one Event per note on the experiment, in order. The status
/// already holds what the Events tell, so they are not on the reconcile's
/// path: a burst of new experiments gets its statuses first.
pub fn publish_events(ctx: &Context, rx: &ReliabilityExperiment, notes: &[Note]) {
    if notes.is_empty() {
        return;
    }
    let reference = rx.object_ref(&());
    for note in notes {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.clone(),
            note: Some(note.message.chars().take(1000).collect()),
            action: note.action.clone().unwrap_or_else(|| "Reconcile".into()),
            secondary: None,
        };
        ctx.events.send(reference.clone(), event);
    }
}

/// The Events to publish, posted one at a time, in the order queued, by a
/// task of their own (a failure is logged). The task ends once the queue's
/// last sender is gone and everything queued is posted.
pub struct EventQueue(tokio::sync::mpsc::UnboundedSender<(ObjectReference, Event)>);

impl EventQueue {
    /// Start the task that posts queued Events through `recorder`.
    pub fn start(recorder: Recorder) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(ObjectReference, Event)>();
        tokio::spawn(async move {
            while let Some((reference, event)) = rx.recv().await {
                if let Err(e) = recorder.publish(&event, &reference).await {
                    tracing::warn!(error = %e, reason = event.reason, "could not publish an event");
                }
            }
        });
        Self(tx)
    }

    fn send(&self, reference: ObjectReference, event: Event) {
        // the task outlives every sender: a closed queue means a runtime going away
        let _ = self.0.send((reference, event));
    }
}

//! The status step: what one reconcile decided, written back. Three named
//! steps, in this order: [`apply_dashboard`] (names the dashboard in the
//! status), [`update_status`] (the one write of `status`), [`publish_events`].

use super::build::{self, Owner};
use super::machine::Note;
use super::{apply, err, Context, DashboardKey, Error, ErrorKind, FIELD_MANAGER};
use crate::crd::{ReliabilityExperiment, ReliabilityExperimentStatus};
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use relab_model::status::get_condition;
use relab_model::ValidatedExperiment;

/// Apply the experiment's dashboard ConfigMap for `status` (when it differs
/// from what this process last applied) and name it in the status. Nothing
/// for an experiment whose spec is not valid, or with dashboards off.
pub async fn apply_dashboard(
    ctx: &Context,
    owner: &Owner,
    experiment: &ValidatedExperiment,
    status: &mut ReliabilityExperimentStatus,
) -> Result<(), Error> {
    let Some(options) = &ctx.options.dashboards else {
        return Ok(());
    };
    let valid = get_condition(&status.conditions, "Valid").is_some_and(|c| c.status == "True");
    if !valid || status.observed_generation.is_none() {
        return Ok(());
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
    if !current {
        let namespace = owner.namespace.as_deref().unwrap_or_default();
        apply::apply(ctx, namespace, &build::dashboard(owner, experiment, status, options)).await?;
        ctx.dashboards.lock().expect("dashboards cache").insert(uid, key);
    }
    status.dashboard = Some(owner.names.dashboard());
    Ok(())
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
    if status.phase != old.phase {
        tracing::info!(from = ?old.phase, to = ?status.phase, "phase changed");
    }
    Ok(())
}

/// Publish one Event per note on the experiment (a failure is logged: the
/// status already holds what the Events tell).
pub async fn publish_events(ctx: &Context, rx: &ReliabilityExperiment, notes: &[Note]) {
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
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, reason = note.reason, "could not publish an event");
        }
    }
}

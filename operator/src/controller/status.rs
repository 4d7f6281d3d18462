//! The status step: what one reconcile decided, written back. Three named
//! steps: [`update_status`] (the one write of `status`), [`apply_dashboard`]
//! (the dashboard the status names: queued after the status write, or
//! applied and waited for before it when it closes the run's window),
//! [`publish_events`] (queued). The [`WriteQueue`] posts what is queued in
//! order, one request at a time, off the reconcile path: a burst of new
//! experiments gets its children and statuses first (a dashboard is the
//! largest object the operator writes; applied on the reconcile's path it
//! cost a burst of 100 about a tenth of its time, docs/benchmarks.md).

use super::build::{self, Owner};
use super::machine::Note;
use super::{apply, err, Context, DashboardKey, Error, ErrorKind, FIELD_MANAGER};
use crate::crd::{ReliabilityExperiment, ReliabilityExperimentStatus};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
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

/// What the operator remembers of the dashboards it applied (or queued), by
/// experiment uid: what each was made from.
pub(crate) type Dashboards = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, DashboardKey>>>;

/// The dashboard step's write. A dashboard that closes the run's window
/// (`closing`) is applied before this returns (the status that follows
/// must never name an open one): queued behind what is already queued,
/// waited for, its failure returned. Any other is queued and this returns
/// at once: remembered as applied now, so later reconciles do not queue it
/// again; forgotten and queued again 5 s later if the apply fails, unless a
/// newer one was queued meanwhile (a superseded dashboard is not applied).
pub async fn apply_dashboard(ctx: &Context, namespace: &str, board: Dashboard, closing: bool) -> Result<(), Error> {
    ctx.dashboards
        .lock()
        .expect("dashboards cache")
        .insert(board.uid.clone(), board.key.clone());
    let write = QueuedDashboard {
        namespace: namespace.to_string(),
        board,
    };
    if !closing {
        ctx.writes.send(Queued::Dashboard(write, None));
        return Ok(());
    }
    let (done, applied) = tokio::sync::oneshot::channel();
    ctx.writes.send(Queued::Dashboard(write, Some(done)));
    applied.await.unwrap_or_else(|_| {
        Err(Error {
            kind: ErrorKind::Apply,
            what: "applying the dashboard".into(),
            source: "the operator is stopping".into(),
        })
    })
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
/// this fail with 409 and reconcile again. The body is the identity and the
/// status only: the status subresource keeps everything else as stored, so
/// the spec (every default filled in, as the operator read it) would only
/// be decoded and thrown away (docs/benchmarks.md, operator).
pub async fn update_status(
    ctx: &Context,
    rx: &ReliabilityExperiment,
    old: &ReliabilityExperimentStatus,
    status: &ReliabilityExperimentStatus,
) -> Result<(), Error> {
    if status == old {
        return Ok(());
    }
    let namespace = rx.namespace().unwrap_or_default();
    let resource = ApiResource::erase::<ReliabilityExperiment>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
    let mut object = DynamicObject::new(&rx.name_any(), &resource).within(&namespace);
    object.metadata.uid = rx.uid();
    object.metadata.resource_version = rx.resource_version();
    object.data = serde_json::json!({ "status": status });
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
        ctx.writes.send(Queued::Event(reference.clone(), event));
    }
}

/// A dashboard to apply in the background.
pub struct QueuedDashboard {
    namespace: String,
    board: Dashboard,
}

/// One write of the [`WriteQueue`]: an Event, or a dashboard (with whom to
/// tell how its apply went, when someone waits for it).
pub enum Queued {
    Event(ObjectReference, Event),
    Dashboard(QueuedDashboard, Option<tokio::sync::oneshot::Sender<Result<(), Error>>>),
}

/// Retry a failed background dashboard apply after this long.
const DASHBOARD_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// A write nobody waits for is held back while runs are being
/// provisioned, for at most this long after it was queued (a burst of
/// 1,000 new experiments takes about 45 s on two cores; one of 100, 3-6 s).
pub const DEFER_AT_MOST: std::time::Duration = std::time::Duration::from_secs(30);

/// ... and while fewer than this many writes wait behind it: what is held
/// back is held in memory (a dashboard about 8 KiB), so a burst of 1,000
/// new experiments gets its writes interleaved again beyond this many
/// (about a burst of 170's: a dashboard and two Events each).
pub const HOLD_AT_MOST: usize = 512;

/// How many reconciles are provisioning a run (applying its children and
/// writing the status that says so; [`Busy::enter`] for each), and how many
/// queued writes someone waits for: while both say so, the write queue
/// holds back what it can (see [`WriteQueue`]). Reconciles that only
/// observe a run do not hold it back: a lab's Events flow while it runs.
#[derive(Clone, Default)]
pub struct Busy {
    provisioning: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    awaited: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// One reconcile provisioning a run (dropped when it ends).
pub struct Provisioning(Busy);

impl Busy {
    /// Count a reconcile as provisioning until the returned guard is dropped.
    pub fn enter(&self) -> Provisioning {
        self.provisioning.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Provisioning(self.clone())
    }
    /// Whether the queue should hold back a write nobody waits for.
    fn defer(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.provisioning.load(Relaxed) > 0 && self.awaited.load(Relaxed) == 0
    }
}

impl Drop for Provisioning {
    fn drop(&mut self) {
        self.0.provisioning.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The Events and dashboards to write, posted one at a time, in the order
/// queued, by a task of their own. The task ends once the queue's last
/// sender is gone and everything queued is written.
///
/// **Priority.** What a burst of new experiments waits for is its children
/// and its status, not Events or dashboards, and on a busy API server every
/// write slows every other. So while any reconcile provisions a run, the
/// queue holds back its next write for up to [`DEFER_AT_MOST`] after it was
/// queued and while fewer than [`HOLD_AT_MOST`] writes wait, unless a
/// write someone waits for (a dashboard closing a run's window) is queued:
/// then it writes in order at once. Events can thus reach the API server
/// up to 30 s after the status they tell of, in a burst only (with a 5 s
/// bound, a burst slower than that got its first Events and dashboards in
/// its middle, docs/benchmarks.md).
pub struct WriteQueue {
    queue: tokio::sync::mpsc::UnboundedSender<(std::time::Instant, Queued)>,
    busy: Busy,
}

impl WriteQueue {
    /// Start the task: Events through `recorder`, dashboards applied with
    /// `client` (and remembered in `dashboards`; failures counted in `errors`).
    pub(crate) fn start(
        recorder: Recorder,
        client: kube::Client,
        dashboards: Dashboards,
        errors: prometheus::IntCounterVec,
        busy: Busy,
    ) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(std::time::Instant, Queued)>();
        let again = tx.downgrade();
        let holding = busy.clone();
        tokio::spawn(async move {
            while let Some((queued, write)) = rx.recv().await {
                while holding.defer() && queued.elapsed() < DEFER_AT_MOST && rx.len() < HOLD_AT_MOST {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                match write {
                    Queued::Event(reference, event) => {
                        if let Err(e) = recorder.publish(&event, &reference).await {
                            tracing::warn!(error = %e, reason = event.reason, "could not publish an event");
                        }
                    }
                    Queued::Dashboard(write, waiting) => {
                        let current = |d: &Dashboards| {
                            d.lock().expect("dashboards cache").get(&write.board.uid) == Some(&write.board.key)
                        };
                        if waiting.is_none() && !current(&dashboards) {
                            continue; // a newer one is queued
                        }
                        let result = apply::apply_with(&client, &write.namespace, &write.board.child)
                            .await
                            .map(|_| ());
                        if let Err(e) = &result {
                            errors.with_label_values(&[ErrorKind::Apply.as_str()]).inc();
                            tracing::warn!(error = %e, "could not apply a dashboard");
                        }
                        match (waiting, result) {
                            (Some(waiting), result) => {
                                if result.is_err() && current(&dashboards) {
                                    dashboards.lock().expect("dashboards cache").remove(&write.board.uid);
                                }
                                holding.awaited.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                                let _ = waiting.send(result);
                            }
                            (None, Err(_)) if current(&dashboards) => {
                                let again = again.clone();
                                tokio::spawn(async move {
                                    tokio::time::sleep(DASHBOARD_RETRY).await;
                                    if let Some(queue) = again.upgrade() {
                                        let _ = queue.send((std::time::Instant::now(), Queued::Dashboard(write, None)));
                                    }
                                });
                            }
                            _ => {}
                        }
                    }
                }
            }
        });
        Self { queue: tx, busy }
    }

    fn send(&self, write: Queued) {
        if matches!(write, Queued::Dashboard(_, Some(_))) {
            self.busy.awaited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // the task outlives every sender: a closed queue means a runtime going away
        let _ = self.queue.send((std::time::Instant::now(), write));
    }
}

//! The controller behind `relab operator`: reconciles ReliabilityExperiments
//! into running labs and writes what they observed back into their status.
//!
//! Each reconcile is a pipeline:
//!
//! 1. **validate** (pure, [`crate::validate`]): problems -> `Valid=False`
//!    with every field path, one Event, no requeue (a spec change wakes us);
//! 2. **start a run** when `metadata.generation` is new ([`machine::start_run`]):
//!    the finished run goes to `status.history`, the previous run's children
//!    are deleted;
//! 3. **build** the desired children (pure, [`children`]) and **apply** them
//!    with server-side apply under one field manager (Services first: the
//!    rest is configured with their ClusterIPs);
//! 4. **observe** the load generator's pod and Job and the order service's
//!    metrics ([`observe`]);
//! 5. **update status** ([`machine::advance`]) when it changed, and publish
//!    an Event per phase change.
//!
//! A finished run is never applied again: a resync or a restart only looks
//! at `status` and the TTL. Everything the controller knows is in `status`
//! and in the children, so it can be killed at any point and resume.
//! No finalizers: deletion is Kubernetes' garbage collection through the
//! children's owner references.

pub mod children;
pub mod leader;
pub mod machine;
pub mod metrics;
pub mod observe;

use crate::crd::{Phase, ReliabilityExperiment, ReliabilityExperimentStatus};
use children::{Child, LabDefaults, Names, ServiceIps, MANAGED_BY};
use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{predicates, watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use machine::{Loadgen, Note, Observed};
use metrics::OperatorMetrics;
use relab_model::status::get_condition;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The one field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "relab-operator";

/// How `relab operator` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch only this namespace (None: every namespace).
    pub namespace: Option<String>,
    pub defaults: LabDefaults,
    /// `/metrics`, `/healthz`, `/readyz` (None: no server).
    pub metrics_listen: Option<SocketAddr>,
    /// Reconcile an active run this often (progress, phase by time).
    pub poll_interval: Duration,
    /// Read live progress from the order service's metrics.
    pub read_progress: bool,
    /// Names this operator in Events (the pod name in a cluster).
    pub instance: String,
    /// Per-experiment Grafana dashboard ConfigMaps (None: none made).
    pub dashboards: Option<children::DashboardOptions>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: None,
            defaults: LabDefaults::default(),
            metrics_listen: None,
            poll_interval: Duration::from_secs(5),
            read_progress: true,
            instance: std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "relab-operator".into()),
            dashboards: Some(children::DashboardOptions::default()),
        }
    }
}

/// Kinds of reconcile errors (the `kind` label of the errors metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Apply,
    Delete,
    Read,
    Status,
    Service,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Apply,
        ErrorKind::Delete,
        ErrorKind::Read,
        ErrorKind::Status,
        ErrorKind::Service,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Apply => "apply",
            ErrorKind::Delete => "delete",
            ErrorKind::Read => "read",
            ErrorKind::Status => "status",
            ErrorKind::Service => "service",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct Error {
    pub kind: ErrorKind,
    pub what: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

fn err(kind: ErrorKind, what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |e| Error {
        kind,
        what,
        source: Box::new(e),
    }
}

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "the ReliabilityExperiment CRD (reliabilityexperiments.relab.dev) is not installed in this cluster. \
         Install it with `kubectl apply -f crds/reliabilityexperiments.relab.dev.yaml` \
         (or `relab crd | kubectl apply -f -`, or `helm install relab charts/relab`), then start the operator again"
    )]
    CrdMissing,
    #[error("cannot reach the API server: {0}")]
    Kube(#[from] kube::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("metrics server on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

struct Context {
    client: Client,
    recorder: Recorder,
    options: Options,
    metrics: OperatorMetrics,
    /// When this process last applied a run's children, by (uid, generation).
    /// The children of a run never change, so they are re-applied (to repair
    /// drift) at most every [`REAPPLY_EVERY`] rather than on every event.
    applied: std::sync::Mutex<std::collections::HashMap<(String, i64), std::time::Instant>>,
    /// What the dashboard ConfigMap this process last applied was made from, by uid.
    dashboards: std::sync::Mutex<std::collections::HashMap<String, DashboardKey>>,
}

/// Everything an experiment's dashboard depends on besides its fixed
/// identity and the operator's options.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DashboardKey {
    generation: Option<i64>,
    run: Option<i64>,
    start: Option<String>,
    finish: Option<String>,
}

/// Re-apply an active run's children at most this often.
pub const REAPPLY_EVERY: Duration = Duration::from_secs(30);

/// Fails with [`StartError::CrdMissing`] when the CRD is not served.
pub async fn check_crd<K>(api: &Api<K>) -> Result<(), StartError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(StartError::CrdMissing),
        Err(e) => Err(StartError::Kube(e)),
    }
}

/// A running operator: its metrics address, until `stop` is cancelled.
pub struct Running {
    pub metrics_addr: Option<SocketAddr>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Check the CRD, start the metrics server and the controller; the
/// controller runs until `stop` is cancelled (in-flight reconciles finish).
pub async fn start(client: Client, options: Options, stop: CancellationToken) -> Result<Running, StartError> {
    let experiments: Api<ReliabilityExperiment> = scoped(&client, &options.namespace);
    check_crd(&experiments).await?;
    let metrics = OperatorMetrics::new()?;
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: Some(options.instance.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let managed = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    let loadgen_pods = managed.clone().labels(&format!(
        "app.kubernetes.io/managed-by={MANAGED_BY},{}=loadgen",
        children::LABEL_COMPONENT
    ));
    // Only spec changes (a new generation) wake an experiment by itself: its
    // own status writes do not. Children, pods and timers do the rest.
    let (reader, writer) = reflector::store();
    let experiment_changes = watcher::watcher(experiments, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let controller = Controller::for_stream(experiment_changes, reader)
        // a Deployment's status moves with every pod; only its spec matters here
        .owns_stream(
            watcher::watcher(
                scoped::<PartialObjectMeta<Deployment>>(&client, &options.namespace),
                managed.clone(),
            )
            .default_backoff()
            .touched_objects()
            .predicate_filter(predicates::generation, Default::default()),
        )
        .owns(scoped::<Service>(&client, &options.namespace), managed.clone())
        .owns(scoped::<ConfigMap>(&client, &options.namespace), managed.clone())
        .owns(scoped::<Job>(&client, &options.namespace), managed)
        .watches(scoped::<Pod>(&client, &options.namespace), loadgen_pods, |pod: Pod| {
            let name = pod.labels().get(children::LABEL_EXPERIMENT)?.clone();
            Some(ObjectRef::<ReliabilityExperiment>::new(&name).within(&pod.namespace()?))
        })
        .graceful_shutdown_on(stop.clone().cancelled_owned());
    let store = controller.store();
    let metrics_addr = match options.metrics_listen {
        Some(addr) => Some(
            metrics::serve(addr, metrics.clone(), store.clone(), stop.clone())
                .await
                .map_err(|source| StartError::Listen { addr, source })?,
        ),
        None => None,
    };
    {
        let (store, ready) = (store.clone(), metrics.ready.clone());
        tokio::spawn(async move {
            // re-asked every second: with two waiters on the store (this and
            // the controller's runner) a single wait was seen never to wake
            loop {
                match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
                    Ok(Ok(())) => {
                        ready.store(true, Ordering::Relaxed);
                        tracing::info!("cache synced; reconciling");
                        return;
                    }
                    Ok(Err(_)) => return,
                    Err(_) => continue,
                }
            }
        });
    }
    tracing::info!(
        namespace = options.namespace.as_deref().unwrap_or("<all>"),
        metrics = ?metrics_addr,
        "relab operator starting"
    );
    let ctx = Arc::new(Context {
        client,
        recorder,
        options,
        metrics,
        applied: Default::default(),
        dashboards: Default::default(),
    });
    let task = tokio::spawn(async move {
        controller
            .run(reconcile, error_policy, ctx)
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "controller event");
                }
            })
            .await;
        tracing::info!("relab operator stopped");
    });
    Ok(Running { metrics_addr, task })
}

fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn error_policy(rx: Arc<ReliabilityExperiment>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.errors.with_label_values(&[error.kind.as_str()]).inc();
    tracing::warn!(
        experiment = %format!("{}/{}", rx.namespace().unwrap_or_default(), rx.name_any()),
        error = %error,
        kind = error.kind.as_str(),
        "reconcile failed; retrying in 5 s"
    );
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(rx: Arc<ReliabilityExperiment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.duration.start_timer();
    ctx.metrics.reconciles.inc();
    let ns = rx.namespace().unwrap_or_default();
    let span = tracing::info_span!("reconcile", experiment = %format!("{ns}/{}", rx.name_any()));
    Reconciler { rx: &rx, ctx: &ctx, ns }.run().instrument(span).await
}

struct Reconciler<'a> {
    rx: &'a ReliabilityExperiment,
    ctx: &'a Context,
    ns: String,
}

impl Reconciler<'_> {
    async fn run(&self) -> Result<Action, Error> {
        let rx = self.rx;
        let generation = rx.metadata.generation.unwrap_or(0);
        let old = rx.status.clone().unwrap_or_default();
        let now = Utc::now();

        // 1. validate
        let experiment = match crate::crd::validated(rx) {
            Ok(experiment) => experiment,
            Err(problems) => {
                let (status, notes) = machine::invalid(&old, generation, &problems, now);
                self.commit(&old, &status, &notes).await?;
                return Ok(Action::await_change());
            }
        };

        // 2. a new run?
        let names = Names::new(rx);
        let (mut status, mut notes) = (old.clone(), Vec::new());
        let started_now = old.observed_generation != Some(generation);
        if started_now {
            (status, notes) = machine::start_run(&old, generation, &rx.spec, now);
            if old.observed_generation.is_some() {
                // an earlier run (or an invalid spec's generation) may have left children
                self.delete_children(&names.other_runs_selector()).await?;
            }
        }
        if status.phase.is_finished() {
            return self.finished(&old, status, notes, generation).await;
        }
        if rx.spec.suspend {
            let status = machine::suspended(&status, generation, now);
            self.commit(&old, &status, &notes).await?;
            return Ok(Action::await_change());
        }

        // 3. build and apply (skipped when this process applied them lately)
        let key = (rx.uid().unwrap_or_default(), generation);
        let fresh = self
            .ctx
            .applied
            .lock()
            .expect("applied cache")
            .get(&key)
            .is_some_and(|at| at.elapsed() < REAPPLY_EVERY);
        if !fresh {
            let ips = self.apply_services(rx, &names).await?;
            let workloads = children::workloads(rx, &experiment, &ips, &self.ctx.options.defaults);
            futures::future::try_join_all(workloads.iter().map(|child| self.apply(child))).await?;
            let mut applied = self.ctx.applied.lock().expect("applied cache");
            applied.retain(|(uid, _), at| *uid != key.0 && at.elapsed() < REAPPLY_EVERY * 10);
            applied.insert(key, std::time::Instant::now());
        }

        // 4. observe (a run that starts in this reconcile has nothing to see
        // yet: its status goes out first, and the next poll looks)
        let loadgen = if started_now {
            Loadgen::Missing
        } else {
            observe::loadgen(&self.ctx.client, &self.ns, &names)
                .await
                .map_err(err(ErrorKind::Read, "reading the load generator"))?
        };
        let progress = match loadgen {
            Loadgen::Running { .. } if self.ctx.options.read_progress => {
                observe::progress(&self.ctx.client, &self.ns, &names).await
            }
            _ => None,
        };

        // 5. status
        let seen = Observed {
            now: Utc::now(),
            loadgen,
            progress,
        };
        let (status, more) = machine::advance(&rx.spec, &status, generation, &seen);
        notes.extend(more);
        self.commit(&old, &status, &notes).await?;
        Ok(match status.phase {
            p if p.is_finished() => return self.finished(&status, status.clone(), Vec::new(), generation).await,
            Phase::Running | Phase::Draining => Action::requeue(self.ctx.options.poll_interval),
            _ if started_now => Action::requeue(self.ctx.options.poll_interval),
            // pod changes wake us; this is the safety net
            _ => Action::requeue(self.ctx.options.poll_interval * 6),
        })
    }

    /// A finished run: only the TTL is left to act on.
    async fn finished(
        &self,
        old: &ReliabilityExperimentStatus,
        status: ReliabilityExperimentStatus,
        notes: Vec<Note>,
        generation: i64,
    ) -> Result<Action, Error> {
        let now = Utc::now();
        match machine::cleanup_due(&self.rx.spec, &status) {
            Some(due) if now >= due => {
                let done = get_condition(&status.conditions, "WorkloadsDeleted").is_some_and(|c| c.status == "True");
                if !done {
                    self.delete_children(&Names::new(self.rx).experiment_selector()).await?;
                }
                let (status, more) = machine::cleaned_up(&status, generation, now);
                let notes: Vec<Note> = notes.into_iter().chain(more).collect();
                self.commit(old, &status, &notes).await?;
                Ok(Action::await_change())
            }
            Some(due) => {
                self.commit(old, &status, &notes).await?;
                let wait = (due - now).to_std().unwrap_or_default() + Duration::from_millis(100);
                Ok(Action::requeue(wait))
            }
            None => {
                self.commit(old, &status, &notes).await?;
                Ok(Action::await_change())
            }
        }
    }

    async fn apply_services(&self, rx: &ReliabilityExperiment, names: &Names) -> Result<ServiceIps, Error> {
        let services = children::services(rx);
        let applied = futures::future::try_join_all(services.iter().map(|c| self.apply(c))).await?;
        ServiceIps::from_applied(names, &applied).map_err(|message| Error {
            kind: ErrorKind::Service,
            what: "reading the Services' ClusterIPs".into(),
            source: message.into(),
        })
    }

    async fn apply(&self, child: &Child) -> Result<DynamicObject, Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.ctx.client.clone(), &self.ns, &child.kind.api_resource());
        api.patch(
            &child.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&child.body),
        )
        .await
        .map_err(err(
            ErrorKind::Apply,
            format!("applying {:?} {}", child.kind, child.name),
        ))
    }

    /// Delete this experiment's children matching `selector` (Pods go with
    /// their Deployments and Jobs through garbage collection).
    async fn delete_children(&self, selector: &str) -> Result<(), Error> {
        self.delete_kind::<Job>(selector).await?;
        self.delete_kind::<Deployment>(selector).await?;
        self.delete_kind::<Service>(selector).await?;
        self.delete_kind::<ConfigMap>(selector).await?;
        Ok(())
    }

    async fn delete_kind<K>(&self, selector: &str) -> Result<(), Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let found = api
            .list_metadata(&ListParams::default().labels(selector))
            .await
            .map_err(err(ErrorKind::Read, format!("listing children ({selector})")))?;
        for item in found.items {
            let name = item.name_any();
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => tracing::info!(kind = K::kind(&Default::default()).as_ref(), name, "deleted"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(err(ErrorKind::Delete, format!("deleting {name}"))(e)),
            }
        }
        Ok(())
    }

    /// Apply the experiment's dashboard ConfigMap for `status` (when it
    /// differs from what this process last applied) and name it in the status.
    async fn dashboard(&self, status: &mut ReliabilityExperimentStatus) -> Result<(), Error> {
        let Some(options) = &self.ctx.options.dashboards else {
            return Ok(());
        };
        let valid = get_condition(&status.conditions, "Valid").is_some_and(|c| c.status == "True");
        if !valid || status.observed_generation.is_none() {
            return Ok(());
        }
        // the dashboard is a function of the spec (its generation) and of the
        // run's identity and window: compare those, not a built dashboard
        let key = DashboardKey {
            generation: self.rx.metadata.generation,
            run: status.observed_generation,
            start: status.start_time.clone(),
            finish: status.finish_time.clone(),
        };
        let uid = self.rx.uid().unwrap_or_default();
        let current = self.ctx.dashboards.lock().expect("dashboards cache").get(&uid) == Some(&key);
        if !current {
            self.apply(&children::dashboard(self.rx, status, options)).await?;
            self.ctx.dashboards.lock().expect("dashboards cache").insert(uid, key);
        }
        status.dashboard = Some(Names::new(self.rx).dashboard());
        Ok(())
    }

    /// Write the status when it changed (with its dashboard), then publish
    /// the Events.
    async fn commit(
        &self,
        old: &ReliabilityExperimentStatus,
        status: &ReliabilityExperimentStatus,
        notes: &[Note],
    ) -> Result<(), Error> {
        let mut status = status.clone();
        self.dashboard(&mut status).await?;
        let status = &status;
        if status != old {
            // A whole replace (PUT /status) guarded by the resourceVersion we
            // read: the status is exactly what we computed (server-side apply
            // on 1.20 leaves null husks of removed fields), and a concurrent
            // change makes this fail with 409 and reconcile again.
            let api: Api<ReliabilityExperiment> = Api::namespaced(self.ctx.client.clone(), &self.ns);
            let mut object = self.rx.clone();
            object.metadata.managed_fields = None;
            object.status = Some(status.clone());
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            api.replace_status(&self.rx.name_any(), &params, &object)
                .await
                .map_err(err(ErrorKind::Status, "writing the status"))?;
            if status.phase != old.phase {
                tracing::info!(from = ?old.phase, to = ?status.phase, "phase changed");
            }
        }
        let reference = self.rx.object_ref(&());
        for note in notes {
            let event = Event {
                type_: if note.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: note.reason.clone(),
                note: Some(note.message.chars().take(1000).collect()),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = self.ctx.recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, reason = note.reason, "could not publish an event");
            }
        }
        Ok(())
    }
}

//! The controller behind `relab operator`: reconciles ReliabilityExperiments
//! into running labs and writes what they observed back into their status.
//!
//! Each reconcile is a pipeline ([`reconcile`], read it top to bottom):
//! validate -> start a run -> build ([`build`], pure) -> apply ([`apply`])
//! -> observe ([`observe`]) -> the next status ([`machine`], pure) ->
//! dashboard, status write and Events ([`status`]). Only apply and status
//! write to the API.
//!
//! A finished run is never applied again: a resync or a restart only looks
//! at `status` and the TTL. Everything the controller knows is in `status`
//! and in the children, so it can be killed at any point and resume.
//! No finalizers: deletion is Kubernetes' garbage collection through the
//! children's owner references.

pub mod apply;
pub mod build;
pub mod cache;
pub mod children;
pub mod disrupt;
pub mod leader;
pub mod machine;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod reconcile;
pub mod status;
pub mod targets;
#[cfg(test)]
mod tests;

use crate::crd::ReliabilityExperiment;
use build::{LabDefaults, MANAGED_BY};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{predicates, watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use metrics::OperatorMetrics;
use reconcile::reconcile;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
    pub dashboards: Option<build::DashboardOptions>,
    /// What time it is (schedules, TTLs, webhook retries): the wall clock,
    /// or a test's.
    pub clock: Clock,
    /// At most this many experiments reconcile at once (a burst of new
    /// experiments queues instead of opening a connection per child).
    pub max_concurrent_reconciles: u16,
}

/// The controller's clock. Every decision that depends on the time takes
/// it from here, so a test moves time forward instead of sleeping.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>);

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Self(Arc::new(chrono::Utc::now))
    }
    /// Any clock (a test's).
    pub fn from_fn(now: impl Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
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
            dashboards: Some(build::DashboardOptions::default()),
            clock: Clock::system(),
            max_concurrent_reconciles: DEFAULT_CONCURRENT_RECONCILES,
        }
    }
}

/// Reconciles at once by default: enough to keep the API server busy, few
/// enough that a burst of experiments does not open hundreds of connections.
pub const DEFAULT_CONCURRENT_RECONCILES: u16 = 32;

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

/// What every reconcile shares: the client, the write queue, the
/// options, the metrics and this process's caches.
pub struct Context {
    client: Client,
    /// The Events and dashboards to write, in order, off the reconcile path ([`status::WriteQueue`]).
    writes: status::WriteQueue,
    /// The reconciles running now (the write queue holds back while any does).
    busy: status::Busy,
    options: Options,
    metrics: OperatorMetrics,
    /// When this process last applied a run's children, by (uid, generation).
    /// The children of a run never change, so they are re-applied (to repair
    /// drift) at most every [`REAPPLY_EVERY`] rather than on every event.
    applied: std::sync::Mutex<std::collections::HashMap<(String, String), std::time::Instant>>,
    /// What the dashboard ConfigMap this process last applied was made from, by uid.
    dashboards: status::Dashboards,
    /// The webhook client (`spec.notify`).
    http: reqwest::Client,
    /// The resourceVersion each experiment (by uid) had when this process
    /// last replaced its status: while the cache still shows that version,
    /// it is behind this process's own write.
    written: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// The watch caches of the lab's pods and Jobs ([`cache`]).
    caches: cache::Caches,
}

/// Everything an experiment's dashboard depends on besides its fixed
/// identity and the operator's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DashboardKey {
    generation: Option<i64>,
    run: Option<i64>,
    start: Option<String>,
    finish: Option<String>,
    /// The scheduled run and the next tick (the description names them).
    scheduled: (Option<u32>, Option<String>),
}

impl Context {
    /// A context for `client`, with Events signed by `options.instance`
    /// (published by a task of their own: call it within a Tokio runtime).
    pub fn new(client: Client, options: Options, metrics: OperatorMetrics) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(options.instance.clone()),
        };
        let dashboards = status::Dashboards::default();
        let busy = status::Busy::default();
        let writes = status::WriteQueue::start(
            Recorder::new(client.clone(), reporter),
            client.clone(),
            dashboards.clone(),
            metrics.errors.clone(),
            busy.clone(),
        );
        Self {
            writes,
            busy,
            client,
            options,
            metrics,
            applied: Default::default(),
            dashboards,
            http: reqwest::Client::new(),
            written: Default::default(),
            caches: Default::default(),
        }
    }

    /// This context reading pods and Jobs from `caches` once they synced.
    pub fn with_caches(self, caches: cache::Caches) -> Self {
        Self { caches, ..self }
    }
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
    let managed = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    // Only spec changes (a new generation) wake an experiment by itself: its
    // own status writes do not. Children, pods and timers do the rest. The
    // cache keeps no managedFields (nothing reads them; a third of an object).
    let (reader, writer) = reflector::store();
    let experiment_changes = watcher::watcher(experiments, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|rx| rx.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    // the lab's pods and Jobs the reconciles read, cached from the watches
    // that wake the experiments ([`cache`])
    let (pods, pods_writer) = reflector::store();
    let pod_changes = watcher::watcher(
        scoped::<Pod>(&client, &options.namespace),
        watcher::Config::default().labels(&cache::pod_selector()),
    )
    .default_backoff()
    .modify(cache::slim_pod)
    .reflect(pods_writer)
    .touched_objects();
    let (jobs, jobs_writer) = reflector::store();
    // a Job's count of active pods moves with its pod; its spec and its
    // outcome (conditions, failed) are what matter here
    let job_changes = watcher::watcher(scoped::<Job>(&client, &options.namespace), managed.clone())
        .default_backoff()
        .modify(cache::slim_job)
        .reflect(jobs_writer)
        .touched_objects()
        .predicate_filter(job_outcome, Default::default());
    let caches = cache::Caches {
        pods: Some(pods),
        jobs: Some(jobs),
    };
    let config = ControllerConfig::default().concurrency(options.max_concurrent_reconciles);
    let controller = Controller::for_stream(experiment_changes, reader)
        .with_config(config)
        // The Deployments, Services and ConfigMaps are not watched: a run's
        // children never change, and a reconcile re-applies them (repairing
        // drift) at most every REAPPLY_EVERY whatever woke it, so their
        // events would only wake reconciles with nothing to do; the timers
        // bring that repair as soon. Watched, they doubled the API server's
        // watch traffic of a burst of new experiments (docs/benchmarks.md).
        .owns_stream(job_changes)
        // the load generator's pod wakes its experiment (the other cached
        // pods are read at the run's polls)
        .watches_stream(pod_changes, |pod: Pod| {
            if pod.labels().get(build::LABEL_COMPONENT).map(String::as_str) != Some(build::LOADGEN) {
                return None;
            }
            let name = pod.labels().get(build::LABEL_EXPERIMENT)?.clone();
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
    let ctx = Arc::new(Context::new(client, options, metrics).with_caches(caches));
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

/// What of a Job wakes its experiment: its generation and its outcome
/// (conditions and failed pods), not the count of active pods.
fn job_outcome(job: &Job) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hash = std::collections::hash_map::DefaultHasher::new();
    job.metadata.generation.hash(&mut hash);
    if let Some(status) = &job.status {
        status.failed.hash(&mut hash);
        status.succeeded.hash(&mut hash);
        for c in status.conditions.iter().flatten() {
            (&c.type_, &c.status).hash(&mut hash);
        }
    }
    Some(hash.finish())
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

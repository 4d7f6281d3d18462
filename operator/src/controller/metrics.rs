//! The operator's own metrics and its small HTTP server (`/metrics`,
//! `/healthz`, `/readyz`).

use crate::crd::{Phase, ReliabilityExperiment};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use prometheus::{Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub const PHASES: [Phase; 7] = [
    Phase::Pending,
    Phase::Provisioning,
    Phase::Running,
    Phase::Draining,
    Phase::Analyzing,
    Phase::Succeeded,
    Phase::Failed,
];

#[derive(Clone)]
pub struct OperatorMetrics {
    pub registry: Registry,
    pub reconciles: IntCounter,
    pub errors: IntCounterVec,
    pub duration: Histogram,
    pub experiments: IntGaugeVec,
    /// `spec.objectives.successRatio` of every experiment (the burn-rate rules' denominator).
    pub objective_success: GaugeVec,
    /// 1 − percentile of every latency objective, at the bucket bound `le`
    /// that stands for its `maxMs` (see [`crate::monitoring::rules`]).
    pub objective_latency: GaugeVec,
    pub ready: Arc<AtomicBool>,
}

impl OperatorMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounter::with_opts(Opts::new(
            "relab_operator_reconciles_total",
            "Reconciles of ReliabilityExperiments",
        ))?;
        let errors = IntCounterVec::new(
            Opts::new(
                "relab_operator_reconcile_errors_total",
                "Reconciles that failed, by kind of error",
            ),
            &["kind"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "relab_operator_reconcile_duration_seconds",
                "Time spent in one reconcile",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let experiments = IntGaugeVec::new(
            Opts::new("relab_operator_experiments", "ReliabilityExperiments watched, by phase"),
            &["phase"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        let objective_success = GaugeVec::new(
            Opts::new(
                "relab_experiment_objective_success_ratio",
                "spec.objectives.successRatio of each ReliabilityExperiment",
            ),
            &["namespace", "experiment"],
        )?;
        let objective_latency = GaugeVec::new(
            Opts::new(
                "relab_experiment_objective_latency_budget",
                "Share of observations allowed above each latency objective (1 - percentile); \
                 le is the histogram bound standing for maxMs (the largest bucket at or below it)",
            ),
            &["namespace", "experiment", "kind", "percentile", "le", "max_ms"],
        )?;
        registry.register(Box::new(experiments.clone()))?;
        // a replica that runs the controller leads (standbys serve 0, see serve_standby)
        let leader = prometheus::IntGauge::new("relab_operator_leader", "1 when this replica leads")?;
        leader.set(1);
        registry.register(Box::new(leader))?;
        registry.register(Box::new(objective_success.clone()))?;
        registry.register(Box::new(objective_latency.clone()))?;
        for kind in super::ErrorKind::ALL {
            errors.with_label_values(&[kind.as_str()]);
        }
        for phase in PHASES {
            experiments.with_label_values(&[&format!("{phase:?}")]);
        }
        Ok(Self {
            registry,
            reconciles,
            errors,
            duration,
            experiments,
            objective_success,
            objective_latency,
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Experiments by phase and their objectives, from the controller's cache
    /// (deleted ones drop out); run at every scrape.
    pub fn refresh(&self, store: &Store<ReliabilityExperiment>) {
        let mut counts = [0i64; PHASES.len()];
        for rx in store.state() {
            let phase = rx.status.as_ref().map(|s| s.phase).unwrap_or_default();
            if let Some(i) = PHASES.iter().position(|p| *p == phase) {
                counts[i] += 1;
            }
        }
        for (phase, n) in PHASES.iter().zip(counts) {
            self.experiments.with_label_values(&[&format!("{phase:?}")]).set(n);
        }
        self.objective_success.reset();
        self.objective_latency.reset();
        for rx in store.state() {
            self.record_objectives(&rx);
        }
    }

    /// The objective gauges of one experiment.
    pub fn record_objectives(&self, rx: &ReliabilityExperiment) {
        let (ns, name) = (rx.namespace().unwrap_or_default(), rx.name_any());
        let objectives = &rx.spec.objectives;
        if let Some(ratio) = objectives.success_ratio {
            self.objective_success.with_label_values(&[&ns, &name]).set(ratio);
        }
        for (kind, list) in [
            ("api", &objectives.api_latency),
            ("e2e", &objectives.end_to_end_latency),
        ] {
            for o in list {
                let le = crate::monitoring::le_label(crate::monitoring::bucket_bound(o));
                self.objective_latency
                    .with_label_values(&[&ns, &name, kind, o.percentile.as_str(), &le, &o.max_ms.to_string()])
                    .set(1.0 - o.percentile.quantile());
            }
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).expect("utf-8")
    }
}

#[derive(Clone)]
struct ServerState {
    metrics: OperatorMetrics,
    store: Store<ReliabilityExperiment>,
}

async fn metrics_handler(State(s): State<ServerState>) -> impl IntoResponse {
    s.metrics.refresh(&s.store);
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn ready_handler(State(s): State<ServerState>) -> impl IntoResponse {
    if s.metrics.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "cache not synced")
    }
}

/// Serve until `stop`; returns the bound address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    metrics: OperatorMetrics,
    store: Store<ReliabilityExperiment>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let app = axum::Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready_handler))
        .with_state(ServerState { metrics, store });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(bound)
}

/// A standby replica's server (leader election): `/healthz` and `/readyz`
/// answer 200 "standby", `/metrics` says it does not lead.
pub struct Standby {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Standby {
    /// Stop serving and release the address (the controller binds it next).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

pub async fn serve_standby(addr: SocketAddr) -> std::io::Result<Standby> {
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "standby" }))
        .route("/readyz", get(|| async { "standby" }))
        .route(
            "/metrics",
            get(|| async {
                "# HELP relab_operator_leader 1 when this replica leads\n# TYPE relab_operator_leader gauge\nrelab_operator_leader 0\n"
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(Standby { stop, task })
}

//! The operator's own metrics and its small HTTP server (`/metrics`,
//! `/healthz`, `/readyz`).

use crate::crd::{Phase, ReliabilityExperiment};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::Store;
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
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
        registry.register(Box::new(experiments.clone()))?;
        for kind in super::ErrorKind::ALL {
            errors.with_label_values(&[kind.as_str()]);
        }
        Ok(Self {
            registry,
            reconciles,
            errors,
            duration,
            experiments,
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Experiments by phase, from the controller's cache (deleted ones drop out).
    pub fn count_phases(&self, store: &Store<ReliabilityExperiment>) {
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
    s.metrics.count_phases(&s.store);
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

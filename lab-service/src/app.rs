//! Building and running the lab's servers: each binds (port 0 allowed) in
//! `build`, reports its address, and serves in `run_until_stopped` until the
//! cancellation token fires, then shuts down gracefully.

use crate::config::{ApiConfig, WorkerConfig};
use crate::error::Result;
use crate::metrics::{track_http, LabMetrics};
use crate::orders::routes::{self as order_routes, ApiState};
use crate::payment_mock::{self, FaultPlan, MockState};
use crate::worker::WorkerPool;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::get;
use axum::Router;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

/// Wrap a router with request ids, a request span and HTTP metrics.
pub fn instrument(router: Router, metrics: &LabMetrics) -> Router {
    let request_id = HeaderName::from_static(order_routes::REQUEST_ID);
    router
        .route_layer(axum::middleware::from_fn_with_state(metrics.http.clone(), track_http))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let rid = req
                        .headers()
                        .get(order_routes::REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %rid)
                })
                // 5xx here are mostly deliberate (shedding, injected faults); real internal
                // errors are logged where they happen (ApiError::internal)
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// The order API server.
pub struct ApiServer {
    listener: TcpListener,
    state: ApiState,
    metrics: LabMetrics,
}

impl ApiServer {
    pub async fn build(pool: PgPool, config: ApiConfig, metrics: &LabMetrics) -> Result<Self> {
        config.validate()?;
        let listener = TcpListener::bind(config.listen).await?;
        let state = ApiState {
            pool,
            config: Arc::new(config),
            metrics: metrics.pipeline.clone(),
            registry: metrics.registry.clone(),
            queue_depth: Arc::new(AtomicI64::new(0)),
            ready: Arc::new(AtomicBool::new(true)),
        };
        Ok(Self {
            listener,
            state,
            metrics: metrics.clone(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub fn router(&self) -> Router {
        instrument(order_routes::router(self.state.clone()), &self.metrics)
            .layer(DefaultBodyLimit::max(self.state.config.max_body_bytes))
    }

    /// Serve until `stop`; then not ready, finish in-flight requests (bounded
    /// by the configured shutdown timeout) and return.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> Result<()> {
        let router = self.router();
        let sampler = tokio::spawn(sample_queue_depth(self.state.clone(), stop.clone()));
        let ready = self.state.ready.clone();
        let grace = self.state.config.shutdown_timeout;
        let drain_delay = self.state.config.drain_delay;
        let stopped = stop.clone();
        let serve = axum::serve(self.listener, router).with_graceful_shutdown(async move {
            stopped.cancelled().await;
            ready.store(false, Ordering::SeqCst);
            tracing::info!(
                ?drain_delay,
                "API shutting down: not ready, draining in-flight requests"
            );
            tokio::time::sleep(drain_delay).await;
        });
        let serve = tokio::spawn(async move { serve.await });
        stop.cancelled().await;
        match tokio::time::timeout(drain_delay + grace, serve).await {
            Ok(joined) => joined.map_err(|e| crate::error::Error::Other(e.to_string()))??,
            Err(_) => tracing::warn!(?grace, "in-flight requests outlived the shutdown timeout"),
        }
        sampler.abort();
        Ok(())
    }
}

/// Shedding reads a sampled depth so an overloaded database is not asked on every request.
async fn sample_queue_depth(state: ApiState, stop: CancellationToken) {
    loop {
        match crate::orders::queue_depths(&state.pool).await {
            Ok((depth, dead)) => {
                state.queue_depth.store(depth, Ordering::Relaxed);
                state.metrics.queue_depth.set(depth);
                state.metrics.dead_letter_depth.set(dead);
            }
            Err(e) => tracing::warn!(error = %e, "sampling queue depth failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// A worker process: job loops plus a small admin server (`/metrics`, `/healthz`, `/readyz`).
pub struct WorkerServer {
    listener: Option<TcpListener>,
    pool: PgPool,
    config: WorkerConfig,
    metrics: LabMetrics,
}

impl WorkerServer {
    pub async fn build(
        pool: PgPool,
        config: WorkerConfig,
        admin_listen: Option<SocketAddr>,
        metrics: &LabMetrics,
    ) -> Result<Self> {
        config.validate()?;
        let listener = match admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            listener,
            pool,
            config,
            metrics: metrics.clone(),
        })
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Work until `stop`, then drain within the deadline, release leases and return.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> Result<()> {
        let workers = WorkerPool::start(
            self.pool,
            self.config,
            self.metrics.pipeline.clone(),
            stop.child_token(),
        )
        .await?;
        let admin = self.listener.map(|listener| {
            let ready = workers.ready.clone();
            let registry = self.metrics.registry.clone();
            let router = Router::new()
                .route("/healthz", get(|| async { "ok" }))
                .route("/readyz", get(move || readiness(ready.clone())))
                .route(
                    "/metrics",
                    get(move || async move { crate::metrics::render(&registry) }),
                );
            let stopped = stop.clone();
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stopped.cancelled_owned())
                    .await
            })
        });
        stop.cancelled().await;
        workers.shutdown().await?;
        if let Some(a) = admin {
            a.abort();
        }
        Ok(())
    }
}

async fn readiness(ready: Arc<AtomicBool>) -> axum::response::Response {
    use axum::response::IntoResponse;
    if ready.load(Ordering::SeqCst) {
        "ready".into_response()
    } else {
        crate::http_error::ApiError::unavailable("not_ready", "shutting down", 1).into_response()
    }
}

/// The fault-injecting payment mock as a server (its router plus `/metrics`).
pub struct MockServer {
    listener: TcpListener,
    state: MockState,
    metrics: LabMetrics,
}

impl MockServer {
    pub async fn build(listen: SocketAddr, plan: FaultPlan, metrics: &LabMetrics) -> Result<Self> {
        crate::config::check_fault_plan(&plan)?;
        let state = MockState::new(plan, &metrics.registry)?;
        let listener = TcpListener::bind(listen).await?;
        Ok(Self {
            listener,
            state,
            metrics: metrics.clone(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub fn state(&self) -> &MockState {
        &self.state
    }

    pub fn router(&self) -> Router {
        let registry = self.metrics.registry.clone();
        let state = self.state.clone();
        let router = payment_mock::router(self.state.clone()).route(
            "/metrics",
            get(move || async move {
                state.refresh_phase_metric();
                crate::metrics::render(&registry)
            }),
        );
        instrument(router, &self.metrics)
    }

    pub async fn run_until_stopped(self, stop: CancellationToken) -> Result<()> {
        let router = self.router();
        axum::serve(self.listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await?;
        Ok(())
    }
}

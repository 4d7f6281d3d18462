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
use std::sync::atomic::{AtomicBool, Ordering};
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

/// How much of a request body is read, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BodyRead {
    pub limit: usize,
    pub timeout: Duration,
}

/// Read the whole request body within `timeout` before any handler runs:
/// a body that stalls (say `Content-Length: 1000` and 2 bytes sent) gets
/// `408 request_timeout` with `Connection: close`, so it holds neither the
/// connection nor a task past the deadline. Over `limit`: 413, as the
/// extractors would say.
pub async fn read_body_within(
    axum::extract::State(read): axum::extract::State<BodyRead>,
    req: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(read.timeout, axum::body::to_bytes(body, read.limit)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => crate::http_error::ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over {} bytes (or broke off)", read.limit),
        )
        .into_response(),
        Err(_) => {
            let mut response = crate::http_error::ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request body did not arrive within {} ms", read.timeout.as_millis()),
            )
            .into_response();
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
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
            admission: Arc::default(),
            wakeups: Arc::default(),
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
        let config = &self.state.config;
        instrument(order_routes::router(self.state.clone()), &self.metrics)
            .layer(axum::middleware::from_fn_with_state(
                BodyRead {
                    limit: config.max_body_bytes,
                    timeout: config.body_read_timeout,
                },
                read_body_within,
            ))
            .layer(DefaultBodyLimit::max(config.max_body_bytes))
    }

    /// Serve until `stop`; then not ready, finish in-flight requests (bounded
    /// by the configured shutdown timeout) and return.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> Result<()> {
        let router = self.router();
        let sampler = tokio::spawn(sample_queue_depth(self.state.clone(), stop.clone()));
        // until the last request has been served: its job wants a wake-up too
        let wakeups_stop = CancellationToken::new();
        let wakeups = tokio::spawn(
            self.state
                .wakeups
                .clone()
                .run(self.state.pool.clone(), wakeups_stop.clone()),
        );
        let ready = self.state.ready.clone();
        let grace = self.state.config.shutdown_timeout;
        let drain_delay = self.state.config.drain_delay;
        let stopped = stop.clone();
        let serve = crate::serve::serve(self.listener, router, async move {
            stopped.cancelled().await;
            ready.store(false, Ordering::SeqCst);
            tracing::info!(
                ?drain_delay,
                "API shutting down: not ready, draining in-flight requests"
            );
            tokio::time::sleep(drain_delay).await;
        });
        let serve = tokio::spawn(serve);
        stop.cancelled().await;
        match tokio::time::timeout(drain_delay + grace, serve).await {
            Ok(joined) => joined.map_err(|e| crate::error::Error::Other(e.to_string()))??,
            Err(_) => tracing::warn!(?grace, "in-flight requests outlived the shutdown timeout"),
        }
        sampler.abort();
        wakeups_stop.cancel();
        let _ = wakeups.await;
        Ok(())
    }
}

/// Shedding reads a sampled depth so an overloaded database is not asked on every request.
async fn sample_queue_depth(state: ApiState, stop: CancellationToken) {
    loop {
        // one snapshot counts the depth and says which admitted orders it
        // sees (orders/admission.rs). The ids are taken after the snapshot:
        // an order committed before it was admitted before it, so it is
        // asked about and not counted twice (taking them before the
        // statement counted an order admitted in between both in the depth
        // and as unseen, and shed a request below the bound)
        let sampled = async {
            let mut tx = state.pool.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT 1").execute(&mut *tx).await?; // takes the snapshot
            let ids = state.admission.unseen_ids();
            let depths = crate::orders::queue_depths_seeing(&mut *tx, &ids).await?;
            tx.commit().await?;
            Ok::<_, crate::error::Error>(depths)
        };
        match sampled.await {
            Ok((depth, dead, visible)) => {
                state.admission.sampled_depth(depth, &visible);
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
            tokio::spawn(async move { crate::serve::serve(listener, router, stopped.cancelled_owned()).await })
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
    /// The mock on `listen`, its ledger journaled to `ledger_file` (and
    /// reloaded from it), or in memory without one.
    pub async fn build(
        listen: SocketAddr,
        plan: FaultPlan,
        ledger_file: Option<&std::path::Path>,
        metrics: &LabMetrics,
    ) -> Result<Self> {
        crate::config::check_fault_plan(&plan)?;
        let ledger = match ledger_file {
            Some(path) => {
                let ledger = payment_mock::Ledger::open(path).map_err(|e| crate::error::Error::Other(e.to_string()))?;
                tracing::info!(path = %path.display(), charges = ledger.len(), "payment ledger opened");
                ledger
            }
            None => payment_mock::Ledger::default(),
        };
        let state = MockState::with_ledger(plan, ledger, &metrics.registry)?;
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
        crate::serve::serve(self.listener, router, stop.cancelled_owned()).await?;
        Ok(())
    }
}

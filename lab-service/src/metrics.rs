//! Prometheus metrics of the lab app, all on one shared registry.
//!
//! Labels come from small closed sets (route templates, outcomes, reasons,
//! breaker states): never an order id, key or raw path, so 1,000 orders
//! produce one series per route, not 1,000.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use std::sync::Arc;
use std::time::Instant;

/// Latency buckets (seconds) from 1 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    let m = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let m = IntCounter::new(name, help)?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let m = IntGauge::new(name, help)?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

fn histogram(r: &Registry, name: &str, help: &str) -> prometheus::Result<Histogram> {
    let m = Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

/// HTTP metrics: one set per registry, shared by every router on it.
#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
}

impl HttpMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let requests = counter_vec(
            r,
            "relab_http_requests_total",
            "HTTP requests by route template, method and status code",
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "relab_http_request_duration_seconds",
                "HTTP request latency by route template and method",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        r.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }
}

/// axum middleware recording [`HttpMetrics`] under the matched route template.
pub async fn track_http(State(m): State<Arc<HttpMetrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    m.duration
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[&route, &method, resp.status().as_str()])
        .inc();
    resp
}

/// `GET /metrics` in the Prometheus text format.
pub fn render(registry: &Registry) -> Response {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&registry.gather(), &mut buf) {
        Ok(()) => (
            [(axum::http::header::CONTENT_TYPE, encoder.format_type().to_owned())],
            buf,
        )
            .into_response(),
        Err(e) => crate::http_error::ApiError::internal(e).into_response(),
    }
}

/// Metrics of the order pipeline (API and workers).
#[derive(Clone)]
pub struct PipelineMetrics {
    pub orders_created: IntCounter,
    pub idempotent_replays: IntCounter,
    pub idempotency_conflicts: IntCounter,
    pub load_shed: IntCounter,
    /// jobs by outcome: paid, failed, retry_scheduled, dead_lettered, breaker_deferred, bulkhead_deferred, lease_lost
    pub jobs: IntCounterVec,
    pub queue_depth: IntGauge,
    pub dead_letter_depth: IntGauge,
    /// payment call failures by reason: timeout, connect, status_5xx, rate_limited, declined, rejected
    pub payment_failures: IntCounterVec,
    pub payment_calls: IntCounter,
    /// retry loops by result: succeeded, gave_up, permanent, breaker_rejected
    pub retry_loops: IntCounterVec,
    /// calls made after the first one in a loop
    pub retries: IntCounter,
    pub breaker_transitions: IntCounterVec,
    pub breaker_state: IntGauge,
    /// breaker rejections by the state that refused: open, half_open
    pub breaker_rejections: IntCounterVec,
    pub bulkhead_rejections: IntCounter,
    pub bulkhead_in_use: IntGauge,
    pub order_e2e: Histogram,
    pub dead_letter_replays: IntCounter,
}

impl PipelineMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            orders_created: counter(r, "relab_orders_created_total", "Orders accepted by the API (new rows)")?,
            idempotent_replays: counter(
                r,
                "relab_idempotent_replays_total",
                "Order creates answered from an earlier request with the same Idempotency-Key",
            )?,
            idempotency_conflicts: counter(
                r,
                "relab_idempotency_conflicts_total",
                "Order creates refused: same Idempotency-Key, different body",
            )?,
            load_shed: counter(
                r,
                "relab_load_shed_total",
                "Order creates refused with 503 because the queue was past its bound",
            )?,
            jobs: counter_vec(
                r,
                "relab_worker_jobs_total",
                "Payment jobs handled by workers, by outcome",
                &["outcome"],
            )?,
            queue_depth: gauge(r, "relab_queue_depth", "Jobs queued or running (sampled)")?,
            dead_letter_depth: gauge(r, "relab_dead_letter_depth", "Dead-lettered jobs (sampled)")?,
            payment_failures: counter_vec(
                r,
                "relab_payment_failures_total",
                "Failed payment calls by reason",
                &["reason"],
            )?,
            payment_calls: counter(r, "relab_payment_calls_total", "Payment calls made (each attempt)")?,
            retry_loops: counter_vec(r, "relab_retry_loops_total", "Retry loops by result", &["result"])?,
            retries: counter(
                r,
                "relab_retries_total",
                "Payment calls that were retries (attempt > 1)",
            )?,
            breaker_transitions: counter_vec(
                r,
                "relab_breaker_transitions_total",
                "Circuit breaker state changes",
                &["from", "to"],
            )?,
            breaker_state: gauge(
                r,
                "relab_breaker_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open",
            )?,
            breaker_rejections: counter_vec(
                r,
                "relab_breaker_rejections_total",
                "Calls refused by the circuit breaker, by the state that refused",
                &["state"],
            )?,
            bulkhead_rejections: counter(
                r,
                "relab_bulkhead_rejections_total",
                "Payment calls refused because the bulkhead stayed full",
            )?,
            bulkhead_in_use: gauge(
                r,
                "relab_bulkhead_in_use",
                "Payment calls in flight inside the bulkhead",
            )?,
            order_e2e: histogram(
                r,
                "relab_order_e2e_seconds",
                "Order created to final state (paid, failed, dead-lettered)",
            )?,
            dead_letter_replays: counter(
                r,
                "relab_dead_letter_replays_total",
                "Dead-lettered jobs replayed through the API",
            )?,
        })
    }
}

/// The registry of one process and the metric sets on it.
#[derive(Clone)]
pub struct LabMetrics {
    pub registry: Registry,
    pub http: Arc<HttpMetrics>,
    pub pipeline: PipelineMetrics,
}

impl LabMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        Ok(Self {
            http: Arc::new(HttpMetrics::register(&registry)?),
            pipeline: PipelineMetrics::register(&registry)?,
            registry,
        })
    }
}

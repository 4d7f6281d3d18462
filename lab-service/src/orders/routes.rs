//! The order API's HTTP surface.
//!
//! `POST /orders` (Idempotency-Key required), `GET /orders/{id}`,
//! `GET /orders?status=&after=&limit=`, `GET /dead-letters`,
//! `POST /dead-letters/{orderId}/replay`, `/healthz`, `/readyz`, `/metrics`.

use super::{CreateOutcome, NewOrder, ORDER_STATUSES};
use crate::config::ApiConfig;
use crate::http_error::{ApiError, AppJson};
use crate::metrics::PipelineMetrics;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use uuid::Uuid;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const REQUEST_ID: &str = "x-request-id";
/// Set to `true` on a response that repeats an earlier order.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Shared state of the order API.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub config: Arc<ApiConfig>,
    pub metrics: PipelineMetrics,
    pub registry: prometheus::Registry,
    /// Queued + running jobs: sampled in the background, plus what this
    /// process admitted since (shedding reads this, not the DB).
    pub admission: Arc<super::admission::Admission>,
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/orders", post(create_order).get(list_orders))
        .route("/orders/{id}", get(get_order))
        .route("/dead-letters", get(list_dead_letters))
        .route("/dead-letters/{order_id}/replay", post(replay_dead_letter))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<ApiState>) -> Response {
    if s.ready.load(Ordering::SeqCst) && !s.pool.is_closed() {
        "ready".into_response()
    } else {
        ApiError::unavailable("not_ready", "shutting down", 1).into_response()
    }
}

async fn metrics(State(s): State<ApiState>) -> Response {
    crate::metrics::render(&s.registry)
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let raw = headers.get(IDEMPOTENCY_KEY).ok_or_else(|| {
        ApiError::bad_request(
            "missing_idempotency_key",
            "the Idempotency-Key header is required on POST /orders",
        )
        .with_field("Idempotency-Key")
    })?;
    let key = raw.to_str().map_err(|_| {
        ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be visible ASCII")
            .with_field("Idempotency-Key")
    })?;
    if key.is_empty() || key.len() > 255 {
        return Err(
            ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters")
                .with_field("Idempotency-Key"),
        );
    }
    Ok(key.to_owned())
}

#[tracing::instrument(skip_all, fields(idempotency_key, order_id))]
async fn create_order(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: AppJson<NewOrder>,
) -> Result<Response, ApiError> {
    // shed before touching the database: a quick 503 beats a slow timeout
    let permit = match s.admission.try_admit(s.config.max_queue_depth) {
        Ok(permit) => permit,
        Err(depth) => {
            s.metrics.load_shed.inc();
            return Err(ApiError::unavailable(
                "overloaded",
                format!(
                    "the payment queue holds {depth} jobs (bound {}); retry later",
                    s.config.max_queue_depth
                ),
                s.config.shed_retry_after_secs,
            ));
        }
    };
    let key = idempotency_key(&headers)?;
    tracing::Span::current().record("idempotency_key", key.as_str());
    let AppJson(order) = body;
    order.validate()?;
    let request_id = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok());
    let outcome = super::create_order(&s.pool, &key, &order, request_id, s.config.max_job_attempts).await?;
    let resp = match outcome {
        CreateOutcome::Created(o) => {
            permit.inserted();
            tracing::Span::current().record("order_id", tracing::field::display(o.id));
            tracing::info!(order_id = %o.id, "order accepted");
            s.metrics.orders_created.inc();
            (StatusCode::CREATED, AppJson(o)).into_response()
        }
        CreateOutcome::Replayed(o) => {
            tracing::info!(order_id = %o.id, "idempotent replay");
            s.metrics.idempotent_replays.inc();
            let mut r = (StatusCode::OK, AppJson(o)).into_response();
            r.headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            r
        }
        CreateOutcome::Conflict { existing_id } => {
            s.metrics.idempotency_conflicts.inc();
            return Err(ApiError::conflict(
                "idempotency_key_reused",
                format!("Idempotency-Key was already used for order {existing_id} with a different body"),
            )
            .with_field("Idempotency-Key"));
        }
    };
    Ok(resp)
}

fn parse_uuid(field: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|e| {
        let mut err = ApiError::bad_request("invalid_id", format!("{field} must be a UUID: {e}"));
        err.field = Some(field.to_string());
        err
    })
}

async fn get_order(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_uuid("id", &id)?;
    match super::get_order(&s.pool, id).await? {
        Some(o) => Ok(AppJson(o).into_response()),
        None => Err(ApiError::not_found(format!("no order {id}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    items: Vec<T>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<Uuid>,
}

fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(
            ApiError::bad_request("invalid_query", format!("limit must be within 1..=1000, got {limit}"))
                .with_field("limit"),
        );
    }
    Ok(limit)
}

async fn list_orders(
    State(s): State<ApiState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    if let Some(st) = q.status.as_deref() {
        if !ORDER_STATUSES.contains(&st) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("status must be one of {ORDER_STATUSES:?}, got {st:?}"),
            )
            .with_field("status"));
        }
    }
    let after = q.after.as_deref().map(|a| parse_uuid("after", a)).transpose()?;
    let limit = page_limit(q.limit)?;
    let items = super::list_orders(&s.pool, q.status.as_deref(), after, limit).await?;
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|o| o.id))
        .flatten();
    Ok(AppJson(Page { items, next_after }).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterQuery {
    after: Option<String>,
    limit: Option<i64>,
}

async fn list_dead_letters(
    State(s): State<ApiState>,
    q: Result<Query<DeadLetterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let after = q.after.as_deref().map(|a| parse_uuid("after", a)).transpose()?;
    let limit = page_limit(q.limit)?;
    let items = super::list_dead_letters(&s.pool, after, limit).await?;
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|d| d.order_id))
        .flatten();
    Ok(AppJson(Page { items, next_after }).into_response())
}

async fn replay_dead_letter(State(s): State<ApiState>, Path(order_id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_uuid("orderId", &order_id)?;
    if super::replay_dead_letter(&s.pool, id).await? {
        s.metrics.dead_letter_replays.inc();
        tracing::info!(order_id = %id, "dead letter replayed");
        Ok((
            StatusCode::ACCEPTED,
            AppJson(serde_json::json!({"orderId": id, "status": "pending"})),
        )
            .into_response())
    } else if super::get_order(&s.pool, id).await?.is_some() {
        Err(ApiError::conflict(
            "not_dead_lettered",
            format!("order {id} is not dead-lettered"),
        ))
    } else {
        Err(ApiError::not_found(format!("no order {id}")))
    }
}

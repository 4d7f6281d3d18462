//! The order API's HTTP surface.
//!
//! `POST /orders` (Idempotency-Key required), `GET /orders/{id}`,
//! `GET /orders?status=&after=&limit=`, `GET /dead-letters`,
//! `POST /dead-letters/{orderId}/replay`, `/healthz`, `/readyz`, `/metrics`.

use super::{CreateOutcome, NewOrder, ORDER_STATUSES};
use crate::config::ApiConfig;
use crate::http_error::{ApiError, AppJson, ErrorBody};
use crate::metrics::PipelineMetrics;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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
    /// Coalesced NOTIFYs to the workers after new jobs (`queue::WorkerWakeups`).
    pub wakeups: Arc<crate::queue::WorkerWakeups>,
    pub ready: Arc<AtomicBool>,
}

/// The order API's OpenAPI 3.1 document: its paths come from the same
/// `routes!` calls that register the handlers ([`router_and_contract`]), so
/// a route cannot exist undocumented or be documented and missing.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "relab order API",
        description = "Orders in, payments out: the lab's order service."
    ),
    components(schemas(ErrorBody))
)]
struct OrderApiDoc;

/// The routes and their contract, built together.
pub fn router_and_contract() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    OpenApiRouter::with_openapi(OrderApiDoc::openapi())
        .routes(routes!(create_order, list_orders))
        .routes(routes!(get_order))
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_dead_letter))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .split_for_parts()
}

/// The order API's OpenAPI document (served at `/openapi.json`).
pub fn contract() -> utoipa::openapi::OpenApi {
    router_and_contract().1
}

pub fn router(state: ApiState) -> Router {
    let (routes, contract) = router_and_contract();
    routes
        .route("/openapi.json", get(move || async move { axum::Json(contract) }))
        .with_state(state)
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "probes", responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 503 while shutting down (load balancers stop routing here).
#[utoipa::path(get, path = "/readyz", tag = "probes", responses(
    (status = 200, description = "ready", body = String, content_type = "text/plain"),
    (status = 503, description = "shutting down", body = ErrorBody),
))]
async fn readyz(State(s): State<ApiState>) -> Response {
    if s.ready.load(Ordering::SeqCst) && !s.pool.is_closed() {
        "ready".into_response()
    } else {
        ApiError::unavailable("not_ready", "shutting down", 1).into_response()
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "probes", responses((status = 200, description = "metrics", body = String, content_type = "text/plain")))]
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

/// Place an order: stored with its payment job in one transaction, paid
/// asynchronously by the workers. Idempotent by `Idempotency-Key`.
#[utoipa::path(post, path = "/orders", tag = "orders",
    params(("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters; the same key and body replay the first order")),
    request_body = NewOrder,
    responses(
        (status = 201, description = "accepted", body = super::Order),
        (status = 200, description = "an idempotent replay of the first order", body = super::Order,
            headers(("idempotent-replayed" = String, description = "true"))),
        (status = 400, description = "malformed JSON or a missing/invalid Idempotency-Key", body = ErrorBody),
        (status = 408, description = "the body did not arrive in time", body = ErrorBody),
        (status = 409, description = "the key was used with another body", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "not application/json", body = ErrorBody),
        (status = 422, description = "a field is invalid (named in error.field)", body = ErrorBody),
        (status = 503, description = "shed: the payment queue is full; retry after Retry-After", body = ErrorBody,
            headers(("retry-after" = u64, description = "seconds"))),
    ))]
#[tracing::instrument(skip_all, fields(idempotency_key, order_id))]
async fn create_order(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: AppJson<NewOrder>,
) -> Result<Response, ApiError> {
    // shed before touching the database: a quick 503 beats a slow timeout
    let permit = match s.admission.try_admit(Uuid::now_v7(), s.config.max_queue_depth) {
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
    let outcome = super::create_order(&s.pool, &key, &order, request_id, s.config.max_job_attempts, &permit).await?;
    if matches!(outcome, CreateOutcome::Created(_)) {
        s.wakeups.job_committed(&s.pool).await;
    }
    let resp = match outcome {
        CreateOutcome::Created(o) => {
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

/// One order.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "the order's id (a UUID)")),
    responses(
        (status = 200, description = "the order", body = super::Order),
        (status = 400, description = "not a UUID", body = ErrorBody),
        (status = 404, description = "no such order", body = ErrorBody),
    ))]
async fn get_order(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_uuid("id", &id)?;
    match super::get_order(&s.pool, id).await? {
        Some(o) => Ok(AppJson(o).into_response()),
        None => Err(ApiError::not_found(format!("no order {id}"))),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// pending, paid, failed or dead_lettered.
    status: Option<String>,
    /// The last id of the previous page (a UUID).
    after: Option<String>,
    /// 1 to 1000 (default 100).
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
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

/// Orders by id, one page at a time.
#[utoipa::path(get, path = "/orders", tag = "orders", params(ListQuery),
    responses(
        (status = 200, description = "a page", body = Page<super::Order>),
        (status = 400, description = "a bad query parameter (named in error.field)", body = ErrorBody),
    ))]
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeadLetterQuery {
    /// The last order id of the previous page (a UUID).
    after: Option<String>,
    /// 1 to 1000 (default 100).
    limit: Option<i64>,
}

/// Body of a 202 from a dead-letter replay.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Replayed {
    order_id: Uuid,
    /// Always `pending`: the job is queued again.
    status: String,
}

/// Dead-lettered jobs (attempts exhausted), one page at a time.
#[utoipa::path(get, path = "/dead-letters", tag = "dead letters", params(DeadLetterQuery),
    responses(
        (status = 200, description = "a page", body = Page<super::DeadLetter>),
        (status = 400, description = "a bad query parameter (named in error.field)", body = ErrorBody),
    ))]
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

/// Queue a dead-lettered order's payment again.
#[utoipa::path(post, path = "/dead-letters/{order_id}/replay", tag = "dead letters",
    params(("order_id" = String, Path, description = "the order's id (a UUID)")),
    responses(
        (status = 202, description = "queued again", body = Replayed),
        (status = 400, description = "not a UUID", body = ErrorBody),
        (status = 404, description = "no such order", body = ErrorBody),
        (status = 409, description = "the order is not dead-lettered", body = ErrorBody),
    ))]
async fn replay_dead_letter(State(s): State<ApiState>, Path(order_id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_uuid("orderId", &order_id)?;
    if super::replay_dead_letter(&s.pool, id).await? {
        s.metrics.dead_letter_replays.inc();
        tracing::info!(order_id = %id, "dead letter replayed");
        let body = Replayed {
            order_id: id,
            status: "pending".into(),
        };
        Ok((StatusCode::ACCEPTED, AppJson(body)).into_response())
    } else if super::get_order(&s.pool, id).await?.is_some() {
        Err(ApiError::conflict(
            "not_dead_lettered",
            format!("order {id} is not dead-lettered"),
        ))
    } else {
        Err(ApiError::not_found(format!("no order {id}")))
    }
}

//! HTTP surface of the mock: `POST /charges`, `GET|PUT /faults`,
//! `GET /ledger`, `GET /stats`, `GET /healthz`. No `/metrics`: the app that
//! composes this router serves the shared registry.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::faults::{Decision, FaultPlan};
use super::ledger::{ChargeOutcome, ChargeRequest, ChargeResponse, IdempotencyConflict, LedgerSnapshot};
use super::state::{MockState, MockStats, Outcome};
use crate::http_error::{ApiError, AppJson};
use relab_model::FieldError;

/// Request header that makes a charge idempotent.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Response header set (to `true`) on a replayed charge.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest accepted `Idempotency-Key`, in bytes.
const MAX_KEY_LEN: usize = 255;

/// The mock's routes over `state`.
pub fn router(state: MockState) -> Router {
    Router::new()
        .route("/charges", post(create_charge))
        .route("/faults", get(get_faults).put(put_faults))
        .route("/ledger", get(get_ledger))
        .route("/stats", get(get_stats))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled, then
/// finishes in-flight requests (a hanging one may take up to `hangMs`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: MockState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let invalid =
        |message: &str| ApiError::bad_request("invalid_idempotency_key", message).with_field("Idempotency-Key");
    let key = value.to_str().map_err(|_| invalid("must be visible ASCII"))?.trim();
    if key.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(invalid("must be at most 255 bytes"));
    }
    Ok(Some(key.to_string()))
}

fn invalid(error: FieldError) -> ApiError {
    ApiError::invalid_field(error.path, error.message)
}

async fn pause(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

fn gateway_timeout() -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "payment_timeout",
        "the payment provider did not answer in time (injected fault)",
    )
}

fn conflict(error: &IdempotencyConflict) -> ApiError {
    ApiError::conflict("idempotency_key_reused", error.to_string()).with_field("Idempotency-Key")
}

/// `POST /charges`: validate, draw the fault, then act on it. Faults apply to
/// every call, retries included; only a success or a lost response charges.
#[tracing::instrument(name = "payment_mock.charge", skip_all, fields(order_id = %request.order_id, outcome))]
async fn create_charge(
    State(state): State<MockState>,
    headers: HeaderMap,
    AppJson(request): AppJson<ChargeRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    request.validate().map_err(invalid)?;
    let decision = state.next_decision();
    let (outcome, response) = match decision {
        Decision::Success { delay } => {
            let result = state.charge(key.as_deref(), &request);
            pause(delay).await;
            match result {
                Ok(ChargeOutcome::Created(charge)) => (
                    Outcome::Success,
                    Ok((StatusCode::CREATED, AppJson(ChargeResponse::new(&charge, false))).into_response()),
                ),
                Ok(ChargeOutcome::Replayed(charge)) => {
                    let replayed = [(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"))];
                    let body = AppJson(ChargeResponse::new(&charge, true));
                    (Outcome::Replay, Ok((StatusCode::OK, replayed, body).into_response()))
                }
                Err(error) => (Outcome::Conflict, Err(conflict(&error))),
            }
        }
        Decision::LostResponse { hang } => {
            // Charge for real, then lose the answer: the caller only sees a 504.
            let outcome = match state.charge(key.as_deref(), &request) {
                Ok(_) => Outcome::LostResponse,
                Err(_) => Outcome::Conflict,
            };
            state.count(outcome);
            tracing::Span::current().record("outcome", outcome.as_label());
            pause(hang).await;
            return Err(gateway_timeout());
        }
        Decision::Timeout { hang } => {
            state.count(Outcome::Timeout);
            tracing::Span::current().record("outcome", Outcome::Timeout.as_label());
            pause(hang).await;
            return Err(gateway_timeout());
        }
        Decision::Declined { delay } => {
            pause(delay).await;
            let error = ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "card_declined",
                "the card was declined (injected fault)",
            );
            (Outcome::Declined, Err(error))
        }
        Decision::Failure { status, delay } => {
            pause(delay).await;
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let error = ApiError::new(
                status,
                "injected_failure",
                "the payment provider failed (injected fault)",
            );
            (Outcome::Failure, Err(error))
        }
        Decision::RateLimited {
            retry_after_secs,
            delay,
        } => {
            pause(delay).await;
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests (injected fault); retry after the Retry-After delay",
            );
            error.retry_after_secs = Some(retry_after_secs);
            (Outcome::RateLimited, Err(error))
        }
    };
    state.count(outcome);
    tracing::Span::current().record("outcome", outcome.as_label());
    tracing::debug!(outcome = outcome.as_label(), "charge call answered");
    response
}

/// `GET /faults`: the plan in force.
async fn get_faults(State(state): State<MockState>) -> AppJson<FaultPlan> {
    AppJson(state.plan())
}

/// `PUT /faults`: validate and install a plan (reseeds, restarts the clock).
async fn put_faults(
    State(state): State<MockState>,
    AppJson(plan): AppJson<FaultPlan>,
) -> Result<AppJson<FaultPlan>, ApiError> {
    state.replace_plan(plan.clone()).map_err(|errors| {
        let message = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        let field = errors.into_iter().next().map(|e| e.path).unwrap_or_default();
        ApiError::invalid_field(field, message)
    })?;
    tracing::info!(seed = plan.seed, phases = plan.schedule.len(), "fault plan replaced");
    Ok(AppJson(plan))
}

/// `GET /ledger`: every charge, in creation order.
async fn get_ledger(State(state): State<MockState>) -> AppJson<LedgerSnapshot> {
    AppJson(state.ledger())
}

/// `GET /stats`: calls by outcome, charges, active phase.
async fn get_stats(State(state): State<MockState>) -> AppJson<MockStats> {
    AppJson(state.stats())
}

async fn healthz() -> &'static str {
    "ok"
}

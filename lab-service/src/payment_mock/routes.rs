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
use super::ledger::{ChargeError, ChargeOutcome, ChargeRequest, ChargeResponse, LedgerSnapshot};
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

/// A charge that could not be recorded: 409 for a reused key, 503 when the
/// journal could not be written (nothing was charged; not a fault the plan
/// injected, so not counted as one).
fn charge_error(error: &ChargeError) -> (Option<Outcome>, ApiError) {
    match error {
        ChargeError::Conflict(c) => (
            Some(Outcome::Conflict),
            ApiError::conflict("idempotency_key_reused", c.to_string()).with_field("Idempotency-Key"),
        ),
        ChargeError::Journal { .. } => {
            tracing::error!(error = %error, "payment ledger unavailable");
            (
                None,
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ledger_unavailable", error.to_string()),
            )
        }
    }
}

/// `POST /charges`: validate, draw the fault, act on it and count the call,
/// all at once on arrival; only then the injected pause, so that a caller
/// who hangs up during it (a tail latency above its timeout) was counted
/// all the same, with what the mock decided. Faults apply to every call,
/// retries included; only a success or a lost response charges.
#[tracing::instrument(name = "payment_mock.charge", skip_all, fields(order_id = %request.order_id, outcome))]
async fn create_charge(
    State(state): State<MockState>,
    headers: HeaderMap,
    AppJson(request): AppJson<ChargeRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    request.validate().map_err(invalid)?;
    let decision = state.next_decision();
    let (outcome, pause_for, response): (Option<Outcome>, Duration, Result<Response, ApiError>) = match decision {
        Decision::Success { delay } => match state.charge(key.as_deref(), &request) {
            Ok(ChargeOutcome::Created(charge)) => (
                Some(Outcome::Success),
                delay,
                Ok((StatusCode::CREATED, AppJson(ChargeResponse::new(&charge, false))).into_response()),
            ),
            Ok(ChargeOutcome::Replayed(charge)) => {
                let replayed = [(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"))];
                let body = AppJson(ChargeResponse::new(&charge, true));
                (
                    Some(Outcome::Replay),
                    delay,
                    Ok((StatusCode::OK, replayed, body).into_response()),
                )
            }
            Err(error) => {
                let (outcome, error) = charge_error(&error);
                (outcome, delay, Err(error))
            }
        },
        // Charge for real, then lose the answer: the caller only sees a 504.
        Decision::LostResponse { hang } => match state.charge(key.as_deref(), &request) {
            Ok(_) => (Some(Outcome::LostResponse), hang, Err(gateway_timeout())),
            Err(error) => {
                let (outcome, error) = charge_error(&error);
                (outcome, Duration::ZERO, Err(error))
            }
        },
        Decision::Timeout { hang } => (Some(Outcome::Timeout), hang, Err(gateway_timeout())),
        Decision::Declined { delay } => (
            Some(Outcome::Declined),
            delay,
            Err(ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "card_declined",
                "the card was declined (injected fault)",
            )),
        ),
        Decision::Failure { status, delay } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let error = ApiError::new(
                status,
                "injected_failure",
                "the payment provider failed (injected fault)",
            );
            (Some(Outcome::Failure), delay, Err(error))
        }
        Decision::RateLimited {
            retry_after_secs,
            delay,
        } => {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests (injected fault); retry after the Retry-After delay",
            );
            error.retry_after_secs = Some(retry_after_secs);
            (Some(Outcome::RateLimited), delay, Err(error))
        }
    };
    if let Some(outcome) = outcome {
        state.count(outcome);
        tracing::Span::current().record("outcome", outcome.as_label());
    }
    pause(pause_for).await;
    tracing::debug!(outcome = outcome.map(Outcome::as_label), "charge call answered");
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

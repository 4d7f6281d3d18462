//! HTTP surface of the mock: `POST /charges`, `GET|PUT /faults`,
//! `GET /ledger`, `GET /stats`, `GET /healthz`. No `/metrics`: the app that
//! composes this router serves the shared registry.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::faults::{Decision, FaultPlan};
use super::ledger::{ChargeError, ChargeOutcome, ChargeRequest, ChargeResponse, LedgerSnapshot};
use super::state::{MockState, MockStats, Outcome};
use crate::http_error::{ApiError, AppJson, ErrorBody};
use relab_model::FieldError;

/// Request header that makes a charge idempotent.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Response header set (to `true`) on a replayed charge.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest accepted `Idempotency-Key`, in bytes.
const MAX_KEY_LEN: usize = 255;

/// The mock's OpenAPI 3.1 document, from the same `routes!` that register
/// its handlers.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "relab payment mock",
        description = "A payment provider that injects the faults it is told to, with a durable ledger."
    ),
    components(schemas(ErrorBody))
)]
struct MockApiDoc;

/// The routes and their contract, built together.
pub fn router_and_contract() -> (Router<MockState>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    OpenApiRouter::with_openapi(MockApiDoc::openapi())
        .routes(routes!(create_charge))
        .routes(routes!(get_faults, put_faults))
        .routes(routes!(get_ledger))
        .routes(routes!(get_stats))
        .routes(routes!(healthz))
        .split_for_parts()
}

/// The mock's OpenAPI document (served at `/openapi.json`).
pub fn contract() -> utoipa::openapi::OpenApi {
    router_and_contract().1
}

/// The mock's routes over `state`, with `/openapi.json`.
pub fn router(state: MockState) -> Router {
    let (routes, contract) = router_and_contract();
    routes
        .route("/openapi.json", get(move || async move { axum::Json(contract) }))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled, then
/// finishes in-flight requests (a hanging one may take up to `hangMs`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: MockState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    crate::serve::serve(listener, router(state), shutdown.cancelled_owned()).await
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
#[utoipa::path(post, path = "/charges", tag = "charges",
    params(("Idempotency-Key" = Option<String>, Header, description = "at most 255 bytes; a repeated key replays its charge")),
    request_body = ChargeRequest,
    responses(
        (status = 201, description = "charged", body = ChargeResponse),
        (status = 200, description = "a replay of the key's charge", body = ChargeResponse,
            headers(("idempotent-replayed" = String, description = "true"))),
        (status = 400, description = "malformed JSON or header", body = ErrorBody),
        (status = 402, description = "declined (injected)", body = ErrorBody),
        (status = 409, description = "the key was used for another charge", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "not application/json", body = ErrorBody),
        (status = 422, description = "a field is invalid (named in error.field)", body = ErrorBody),
        (status = 429, description = "rate limited (injected)", body = ErrorBody,
            headers(("retry-after" = u64, description = "seconds"))),
        (status = 500, description = "failure (injected)", body = ErrorBody),
        (status = 502, description = "failure (injected)", body = ErrorBody),
        (status = 503, description = "failure (injected), or the ledger could not be written", body = ErrorBody),
        (status = 504, description = "timeout or lost response (injected)", body = ErrorBody),
    ))]
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
        Decision::Success { delay } => match state.charge(key.as_deref(), &request).await {
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
        Decision::LostResponse { hang } => match state.charge(key.as_deref(), &request).await {
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
#[utoipa::path(get, path = "/faults", tag = "faults", responses((status = 200, description = "the fault plan (docs/patterns.md)", body = Object)))]
async fn get_faults(State(state): State<MockState>) -> AppJson<FaultPlan> {
    AppJson(state.plan())
}

/// `PUT /faults`: validate and install a plan (reseeds, restarts the clock).
#[utoipa::path(put, path = "/faults", tag = "faults", request_body(content = Object, description = "a fault plan (docs/patterns.md)"),
    responses(
        (status = 200, description = "installed", body = Object),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "not application/json", body = ErrorBody),
        (status = 422, description = "an invalid plan (the field named)", body = ErrorBody),
    ))]
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
#[utoipa::path(get, path = "/ledger", tag = "ledger", responses((status = 200, description = "every charge", body = LedgerSnapshot)))]
async fn get_ledger(State(state): State<MockState>) -> AppJson<LedgerSnapshot> {
    AppJson(state.ledger())
}

/// `GET /stats`: calls by outcome, charges, active phase.
#[utoipa::path(get, path = "/stats", tag = "ledger", responses((status = 200, description = "calls by outcome", body = MockStats)))]
async fn get_stats(State(state): State<MockState>) -> AppJson<MockStats> {
    AppJson(state.stats())
}

#[utoipa::path(get, path = "/healthz", tag = "probes", responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

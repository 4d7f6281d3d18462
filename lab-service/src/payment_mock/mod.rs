//! The fault-injecting payment mock: the "third party" every experiment's
//! workers pay through, and the ledger the audit trusts.
//!
//! - `POST /charges` with an optional `Idempotency-Key`: a seeded draw picks
//!   the outcome of every call (retries included): success, 402 decline,
//!   injected 5xx, 429 with `Retry-After`, a hang then 504 (not charged), or
//!   a lost response (charged, then a hang and a 504). Successful calls with a
//!   known key replay the first charge; the same key with another body is 409.
//! - `GET|PUT /faults`: the [`FaultPlan`] (seed, base faults, time-phased
//!   schedule such as healthy -> outage -> recovery). A `PUT` validates,
//!   reseeds and restarts the schedule clock.
//! - `GET /ledger`, `GET /stats`, `GET /healthz`.
//!
//! Metrics (on the registry passed to [`MockState::new`]):
//! `relab_mock_calls_total{outcome}` and `relab_mock_charges_total`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use lab_service::payment_mock::{serve, FaultPlan, MockState};
//! let plan = FaultPlan::default();
//! plan.validate().map_err(|errors| format!("{errors:?}"))?;
//! let state = MockState::new(plan, &prometheus::Registry::new())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! serve(listener, state, tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(())
//! # }
//! ```

mod faults;
mod ledger;
mod routes;
mod state;

pub use faults::{decide, Decision, FaultPhase, FaultPlan, FaultSettings, LatencySettings};
pub use ledger::{
    Charge, ChargeError, ChargeOutcome, ChargeRequest, ChargeResponse, IdempotencyConflict, Ledger, LedgerOpenError,
    LedgerSnapshot,
};
pub use relab_model::FieldError;
pub use routes::{contract, router, serve, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
pub use state::{MockState, MockStats, Outcome, OutcomeCounts};

//! The resilience contract between a worker and the payment service.
//!
//! Written here rather than taken from a crate (tower's retry/limit, `failsafe`,
//! `backoff`) because the contract itself is what the lab studies: the exact
//! attempt/retry arithmetic, which failures count against the breaker, and
//! that a breaker rejection (open **or** half-open) is "permanent for now"
//! for the retry loop. Each piece is a small pure state machine with the
//! clock passed in, so the tests drive it on a fake clock. See
//! `docs/patterns.md` for the contract in prose.

pub mod backoff;
pub mod breaker;
pub mod bulkhead;
pub mod retry;

pub use backoff::{Backoff, BackoffConfig};
pub use breaker::{BreakerConfig, BreakerMode, BreakerState, CircuitBreaker, Rejected};
pub use bulkhead::Bulkhead;
pub use retry::{classify_status, CallError, RetryOutcome, RetryPolicy};

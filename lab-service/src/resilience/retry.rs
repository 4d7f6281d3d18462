//! The retry loop and what it may retry.
//!
//! **Attempts vs retries**: `max_attempts` counts calls, including the
//! first. `max_attempts = 4` means one call and up to three retries; the
//! wait before call `n + 1` is backoff retry `n`. `max_attempts = 1` never
//! retries.
//!
//! **What is retried**: timeouts, connection errors, 5xx, 408 and 429 (a
//! `Retry-After` is a floor on the wait). A 4xx business rejection (402
//! declined, 409, 422, ...) is permanent: retrying cannot change the answer.
//!
//! **The breaker**: each call first asks the breaker. A rejection — in open
//! **or** half-open — ends the loop at once as [`RetryOutcome::BreakerRejected`]:
//! "permanent for now". The caller re-queues the work for when the breaker
//! may close; the rejection is not a failed call, spends no attempt and is
//! not an unexpected error. Business rejections count as breaker successes
//! (the dependency answered correctly); only retryable failures count against it.

use super::{Backoff, CircuitBreaker, Rejected};
use std::future::Future;
use std::time::Duration;

/// Why one call failed, already classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Worth another try: `reason` is a metric label (`timeout`, `connect`, `status_5xx`, `rate_limited`).
    Retryable {
        reason: &'static str,
        retry_after: Option<Duration>,
        detail: String,
    },
    /// A definitive answer that retrying cannot change (`declined`, `rejected`).
    Permanent { reason: &'static str, detail: String },
}

/// Every `reason` a failed call can have (`results.payment.failuresByReason` keys).
pub const FAILURE_REASONS: [&str; 6] = [
    "timeout",
    "connect",
    "status_5xx",
    "rate_limited",
    "declined",
    "rejected",
];

impl CallError {
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::Retryable { reason, .. } | CallError::Permanent { reason, .. } => reason,
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            CallError::Retryable { detail, .. } | CallError::Permanent { detail, .. } => detail,
        }
    }
}

/// Classify an HTTP status from the dependency (`retry_after` from its header).
pub fn classify_status(status: u16, retry_after: Option<Duration>, detail: String) -> CallError {
    match status {
        429 => CallError::Retryable {
            reason: "rate_limited",
            retry_after,
            detail,
        },
        408 => CallError::Retryable {
            reason: "timeout",
            retry_after: None,
            detail,
        },
        500..=599 => CallError::Retryable {
            reason: "status_5xx",
            retry_after,
            detail,
        },
        402 => CallError::Permanent {
            reason: "declined",
            detail,
        },
        _ => CallError::Permanent {
            reason: "rejected",
            detail,
        },
    }
}

/// How a retry loop ended.
#[derive(Debug)]
pub enum RetryOutcome<T> {
    Succeeded {
        value: T,
        attempts: u32,
    },
    /// Every attempt failed with a retryable error.
    GaveUp {
        last: CallError,
        attempts: u32,
    },
    /// A non-retryable answer.
    Permanent {
        error: CallError,
        attempts: u32,
    },
    /// The breaker refused (open or half-open): permanent for now.
    BreakerRejected {
        rejected: Rejected,
        attempts: u32,
    },
}

impl<T> RetryOutcome<T> {
    /// The metric label of `relab_retry_loops_total{result}`.
    pub fn result_label(&self) -> &'static str {
        match self {
            RetryOutcome::Succeeded { .. } => "succeeded",
            RetryOutcome::GaveUp { .. } => "gave_up",
            RetryOutcome::Permanent { .. } => "permanent",
            RetryOutcome::BreakerRejected { .. } => "breaker_rejected",
        }
    }

    pub fn attempts(&self) -> u32 {
        match self {
            RetryOutcome::Succeeded { attempts, .. }
            | RetryOutcome::GaveUp { attempts, .. }
            | RetryOutcome::Permanent { attempts, .. }
            | RetryOutcome::BreakerRejected { attempts, .. } => *attempts,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Calls in all, the first included (>= 1).
    pub max_attempts: u32,
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// Run `call(attempt)` (1-based) through the breaker until it succeeds,
    /// fails permanently, runs out of attempts or the breaker refuses.
    /// `on_failure(attempt, &error)` sees every failed call (metrics, logs).
    pub async fn run<T, F, Fut>(
        &self,
        breaker: &CircuitBreaker,
        mut call: F,
        mut on_failure: impl FnMut(u32, &CallError),
    ) -> RetryOutcome<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let max = self.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            let permit = match breaker.acquire() {
                Ok(p) => p,
                Err(rejected) => {
                    return RetryOutcome::BreakerRejected {
                        rejected,
                        attempts: attempt,
                    }
                }
            };
            attempt += 1;
            match call(attempt).await {
                Ok(value) => {
                    permit.record(true);
                    return RetryOutcome::Succeeded {
                        value,
                        attempts: attempt,
                    };
                }
                Err(error @ CallError::Permanent { .. }) => {
                    permit.record(true);
                    on_failure(attempt, &error);
                    return RetryOutcome::Permanent {
                        error,
                        attempts: attempt,
                    };
                }
                Err(error @ CallError::Retryable { .. }) => {
                    permit.record(false);
                    on_failure(attempt, &error);
                    if attempt >= max {
                        return RetryOutcome::GaveUp {
                            last: error,
                            attempts: attempt,
                        };
                    }
                    let floor = match &error {
                        CallError::Retryable { retry_after, .. } => *retry_after,
                        CallError::Permanent { .. } => None,
                    };
                    let delay = self.backoff.delay(attempt, floor, &mut rand::thread_rng());
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::{BackoffConfig, BreakerConfig, BreakerMode, BreakerState};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            backoff: Backoff::new(BackoffConfig {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(4),
                multiplier: 2.0,
                jitter: 0.0,
            }),
        }
    }

    fn no_breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            mode: BreakerMode::Disabled,
            ..Default::default()
        })
    }

    fn server_error() -> CallError {
        classify_status(503, None, "down".into())
    }

    #[tokio::test]
    async fn max_attempts_counts_calls_including_the_first() {
        for max in [1u32, 2, 4] {
            let calls = AtomicU32::new(0);
            let out = policy(max)
                .run(
                    &no_breaker(),
                    |_| async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Err::<(), _>(server_error())
                    },
                    |_, _| {},
                )
                .await;
            assert_eq!(calls.load(Ordering::SeqCst), max, "max_attempts={max}");
            assert!(matches!(out, RetryOutcome::GaveUp { attempts, .. } if attempts == max));
        }
    }

    #[tokio::test]
    async fn succeeds_on_a_later_attempt() {
        let out = policy(4)
            .run(
                &no_breaker(),
                |n| async move {
                    if n < 3 {
                        Err(server_error())
                    } else {
                        Ok(n)
                    }
                },
                |_, _| {},
            )
            .await;
        assert!(matches!(out, RetryOutcome::Succeeded { value: 3, attempts: 3 }));
    }

    #[tokio::test]
    async fn business_rejections_are_not_retried() {
        let calls = AtomicU32::new(0);
        let out = policy(5)
            .run(
                &no_breaker(),
                |_| async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>(classify_status(402, None, "declined".into()))
                },
                |_, _| {},
            )
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(matches!(out, RetryOutcome::Permanent { .. }));
    }

    #[test]
    fn classification() {
        assert!(matches!(
            classify_status(500, None, String::new()),
            CallError::Retryable {
                reason: "status_5xx",
                ..
            }
        ));
        assert!(matches!(
            classify_status(429, Some(Duration::from_secs(1)), String::new()),
            CallError::Retryable {
                reason: "rate_limited",
                retry_after: Some(_),
                ..
            }
        ));
        assert!(matches!(
            classify_status(408, None, String::new()),
            CallError::Retryable { .. }
        ));
        assert!(matches!(
            classify_status(402, None, String::new()),
            CallError::Permanent { reason: "declined", .. }
        ));
        assert!(matches!(
            classify_status(409, None, String::new()),
            CallError::Permanent { reason: "rejected", .. }
        ));
    }

    #[tokio::test]
    async fn an_open_breaker_ends_the_loop_without_a_call() {
        let breaker = CircuitBreaker::new(BreakerConfig {
            mode: BreakerMode::ConsecutiveFailures { threshold: 2 },
            open_timeout: Duration::from_secs(60),
            half_open_probes: 1,
        });
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        // 2 failures trip the breaker; the third call is refused, not made
        let out = policy(10)
            .run(
                &breaker,
                move |_| {
                    let c = c.clone();
                    async move {
                        c.fetch_add(1, Ordering::SeqCst);
                        Err::<(), _>(server_error())
                    }
                },
                |_, _| {},
            )
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        match out {
            RetryOutcome::BreakerRejected { rejected, attempts } => {
                assert_eq!(attempts, 2);
                assert_eq!(rejected.state, BreakerState::Open);
            }
            other => panic!("expected BreakerRejected, got {other:?}"),
        }
    }
}

//! What the mock does to each charge: [`decide`] turns the settings in force
//! and a seeded RNG into one [`Decision`], so the same seed and the same
//! request sequence always give the same fault sequence.
//!
//! The fault model itself (settings, plan, schedule, validation) is the
//! experiment model's, written once for the manifest and the mock:
//! `relab_model::faults`.

use std::time::Duration;

use rand::Rng;
pub use relab_model::faults::{FaultPhase, FaultPlan, FaultSettings, LatencySettings};

/// What the mock does with one charge request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Charge (or replay), after `delay`.
    Success { delay: Duration },
    /// 402 `card_declined` after `delay`; not charged.
    Declined { delay: Duration },
    /// `status` (5xx) after `delay`; not charged.
    Failure { status: u16, delay: Duration },
    /// 429 with `Retry-After` after `delay`; not charged.
    RateLimited { retry_after_secs: u64, delay: Duration },
    /// Hang for `hang`, then 504; not charged.
    Timeout { hang: Duration },
    /// Charge, hang for `hang`, then 504.
    LostResponse { hang: Duration },
}

/// Draws a delay; always consumes exactly two numbers from `rng`.
fn sample_latency(latency: &LatencySettings, rng: &mut impl Rng) -> Duration {
    let jitter_draw: f64 = rng.gen();
    let tail_draw: f64 = rng.gen();
    // floor(u * (n + 1)) is uniform over 0..=n; min() guards rounding at n = u64::MAX.
    let jitter = ((jitter_draw * (latency.jitter_ms as f64 + 1.0)) as u64).min(latency.jitter_ms);
    let tail = if tail_draw < latency.tail_rate {
        latency.tail_ms
    } else {
        0
    };
    Duration::from_millis(latency.base_ms.saturating_add(jitter).saturating_add(tail))
}

/// Decides the fate of one charge request.
///
/// Always consumes exactly four numbers from `rng`: the outcome draw `u` in
/// `[0, 1)` (partitioned in the order decline, failure, rate limit, timeout,
/// lost response, else success), the failure-status pick, and two latency
/// draws. A fixed draw count keeps request *n*'s outcome independent of what
/// earlier requests happened to draw.
pub fn decide(spec: &FaultSettings, rng: &mut impl Rng) -> Decision {
    let u: f64 = rng.gen();
    let status_draw: f64 = rng.gen();
    let delay = sample_latency(&spec.latency, rng);
    let hang = Duration::from_millis(spec.hang_ms);

    let mut edge = 0.0;
    let mut falls_below = |rate: f64| {
        edge += rate;
        u < edge
    };
    if falls_below(spec.decline_rate) {
        Decision::Declined { delay }
    } else if falls_below(spec.failure_rate) {
        let statuses = &spec.failure_statuses;
        let status = if statuses.is_empty() {
            500
        } else {
            let index = ((status_draw * statuses.len() as f64) as usize).min(statuses.len() - 1);
            statuses[index]
        };
        Decision::Failure { status, delay }
    } else if falls_below(spec.rate_limit_rate) {
        Decision::RateLimited {
            retry_after_secs: spec.retry_after_seconds,
            delay,
        }
    } else if falls_below(spec.timeout_rate) {
        Decision::Timeout { hang }
    } else if falls_below(spec.lost_response_rate) {
        Decision::LostResponse { hang }
    } else {
        Decision::Success { delay }
    }
}

#[cfg(test)]
mod tests;

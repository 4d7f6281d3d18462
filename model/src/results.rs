//! The results of one experiment run: what the load generator, the observer
//! and the audit found. It is one JSON document (camelCase) that is, field
//! for field, the `status.results` of a ReliabilityExperiment, so the local
//! runner, the in-cluster load-generator Job and the operator share it.
//! Also the breaker's state as every part of relab names it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything observed in one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunResults {
    /// Length of the load phase in seconds.
    pub load_seconds: f64,
    /// Time spent waiting for the queue to drain after the load phase, in seconds.
    pub drain_seconds: f64,
    /// Whether every accepted order reached a final state before the drain timeout.
    pub drained: bool,
    pub orders: OrderCounts,
    /// paid / accepted (0 when nothing was accepted).
    pub success_ratio: f64,
    /// Order API latency as the client saw it, from the intended send time
    /// (every answer: accepted, shed, rejected and errors).
    pub api_latency_ms: Percentiles,
    /// The same, of accepted orders (201) only.
    #[serde(default)]
    pub accepted_api_latency_ms: Percentiles,
    /// The same, of shed requests (503/429) only.
    #[serde(default)]
    pub shed_api_latency_ms: Percentiles,
    /// Order created -> final state (paid, failed, dead-lettered).
    pub end_to_end_latency_ms: Percentiles,
    pub payment: PaymentResults,
    pub retries: RetryResults,
    pub breaker: BreakerResults,
    /// Largest queued + running job count sampled during the run.
    pub max_queue_depth: i64,
    /// Dead-lettered jobs at the end of the run.
    pub dead_letters: i64,
    pub invariants: InvariantResults,
}

/// Orders by what happened to them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderCounts {
    /// Requests the load generator sent.
    pub sent: u64,
    /// 201 Created.
    pub accepted: u64,
    /// 503/429 load shedding.
    pub shed: u64,
    /// Other 4xx.
    pub rejected: u64,
    /// 5xx other than shedding, and transport errors/timeouts.
    pub errors: u64,
    /// Sends that left later than intended because `maxInFlight` was reached.
    pub late_sends: u64,
    pub paid: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    /// Accepted orders still pending after the drain.
    pub pending: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Summarise an HDR histogram recorded in microseconds.
    pub fn from_micros(h: &hdrhistogram::Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(0.5),
            p90: ms(0.9),
            p95: ms(0.95),
            p99: ms(0.99),
            max: h.max() as f64 / 1000.0,
        }
    }

    /// The named percentile (`p50`, `p90`, `p95`, `p99`, `max`).
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "p50" => Some(self.p50),
            "p90" => Some(self.p90),
            "p95" => Some(self.p95),
            "p99" => Some(self.p99),
            "max" => Some(self.max),
            _ => None,
        }
    }
}

/// Payment calls as the workers made them and as the payment service injected faults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentResults {
    /// Calls the workers made (each attempt).
    pub calls: u64,
    /// Failed calls by reason (timeout, connect, status_5xx, rate_limited, declined, rejected).
    pub failures_by_reason: BTreeMap<String, u64>,
    /// Charges in the payment ledger.
    pub charges: u64,
    /// What the payment service actually injected.
    pub injected: InjectedFaults,
}

/// Fault rates the payment service actually injected (share of its calls).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InjectedFaults {
    pub calls: u64,
    pub failure_rate: f64,
    pub decline_rate: f64,
    pub rate_limit_rate: f64,
    pub timeout_rate: f64,
    pub lost_response_rate: f64,
}

/// Retry loops by how they ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryResults {
    pub succeeded: u64,
    pub gave_up: u64,
    pub permanent: u64,
    pub breaker_rejected: u64,
    /// Calls that were retries (attempt > 1).
    pub retries: u64,
}

/// The circuit breaker over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakerResults {
    /// Transition counts keyed `from->to` (e.g. `closed->open`).
    pub transitions: BTreeMap<String, u64>,
    /// Calls refused by the breaker, keyed by the refusing state (`open`, `half_open`).
    pub rejections: BTreeMap<String, u64>,
    /// Seconds the breaker spent open or half-open (sampled).
    pub seconds_not_closed: f64,
}

/// The invariants the audit checks; all zero in a correct system.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvariantResults {
    /// Accepted orders missing from the database.
    pub lost_orders: u64,
    /// Accepted orders not final after the drain.
    pub stuck_orders: u64,
    /// Orders charged more than once.
    pub double_charges: u64,
    pub charges_without_order: u64,
    pub paid_without_charge: u64,
}

/// One second of the run, for plots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelinePoint {
    /// Seconds since the load started.
    pub second: u32,
    pub sent: u64,
    pub accepted: u64,
    pub shed: u64,
    pub errors: u64,
    pub api_p50_ms: f64,
    pub api_p99_ms: f64,
    /// Orders that reached a final state in this second.
    pub paid: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    /// Payment calls made in this second (from the workers' metrics).
    pub payment_calls: u64,
    /// 0 closed, 1 open, 2 half-open (sampled at the end of the second).
    pub breaker_state: i64,
    pub queue_depth: i64,
}

/// The circuit breaker's state, decoded once for every reader: the
/// `relab_breaker_state` gauge (0, 1, 2), `status.progress.breakerState`,
/// the table and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub const ALL: [BreakerState; 3] = [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen];

    /// The value of the `relab_breaker_state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    /// From the gauge's value; `None` for anything else.
    pub fn from_gauge(value: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.gauge() == value)
    }

    /// `closed`, `open`, `half_open`: the metric labels' spelling, used everywhere.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The name of a gauge value (`unknown` when it is none of the three).
    pub fn name_of_gauge(value: i64) -> &'static str {
        Self::from_gauge(value).map_or("unknown", Self::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_gauge_round_trips_and_unknown_values_say_so() {
        for s in BreakerState::ALL {
            assert_eq!(BreakerState::from_gauge(s.gauge()), Some(s));
        }
        assert_eq!(BreakerState::name_of_gauge(2), "half_open");
        assert_eq!(BreakerState::name_of_gauge(7), "unknown");
    }
}

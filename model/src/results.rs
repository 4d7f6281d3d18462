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
    /// The latency histograms themselves (HDR, serialised), so that runs
    /// and load generators merge exactly instead of averaging percentiles.
    /// Left out where space is short (the Job's termination message trims
    /// them first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histograms: Option<LatencyHistograms>,
    /// The run was stopped early by a `stopWhen` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<crate::ops::Stopped>,
    /// What each of `spec.disruptions` did, and the recovery from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disruptions: Vec<crate::disruptions::DisruptionResult>,
}

impl RunResults {
    /// The repeats of one variant as one result: counts, calls and
    /// durations summed, ratios recomputed, the largest queue depth, and
    /// latency merged exactly from the histograms when every run has them
    /// (else each percentile is the worst run's, and the count the sum).
    pub fn merge(runs: &[RunResults]) -> RunResults {
        let mut out = RunResults {
            drained: true,
            ..RunResults::default()
        };
        for r in runs {
            out.load_seconds += r.load_seconds;
            out.drain_seconds += r.drain_seconds;
            out.drained &= r.drained;
            let (o, i) = (&mut out.orders, &r.orders);
            o.sent += i.sent;
            o.accepted += i.accepted;
            o.shed += i.shed;
            o.rejected += i.rejected;
            o.errors += i.errors;
            o.late_sends += i.late_sends;
            o.paid += i.paid;
            o.failed += i.failed;
            o.dead_lettered += i.dead_lettered;
            o.pending += i.pending;
            out.payment.calls += r.payment.calls;
            out.payment.charges += r.payment.charges;
            add_counts(&mut out.payment.failures_by_reason, &r.payment.failures_by_reason);
            let inj = &mut out.payment.injected;
            let part = &r.payment.injected;
            let weighted = |total: f64, rate: f64| total + rate * part.calls as f64;
            inj.failure_rate = weighted(inj.failure_rate, part.failure_rate);
            inj.decline_rate = weighted(inj.decline_rate, part.decline_rate);
            inj.rate_limit_rate = weighted(inj.rate_limit_rate, part.rate_limit_rate);
            inj.timeout_rate = weighted(inj.timeout_rate, part.timeout_rate);
            inj.lost_response_rate = weighted(inj.lost_response_rate, part.lost_response_rate);
            inj.calls += part.calls;
            let (t, f) = (&mut out.retries, &r.retries);
            t.succeeded += f.succeeded;
            t.gave_up += f.gave_up;
            t.permanent += f.permanent;
            t.breaker_rejected += f.breaker_rejected;
            t.retries += f.retries;
            add_counts(&mut out.breaker.transitions, &r.breaker.transitions);
            add_counts(&mut out.breaker.rejections, &r.breaker.rejections);
            out.breaker.seconds_not_closed += r.breaker.seconds_not_closed;
            out.max_queue_depth = out.max_queue_depth.max(r.max_queue_depth);
            out.dead_letters += r.dead_letters;
            let (v, w) = (&mut out.invariants, &r.invariants);
            v.lost_orders += w.lost_orders;
            v.stuck_orders += w.stuck_orders;
            v.double_charges += w.double_charges;
            v.charges_without_order += w.charges_without_order;
            v.paid_without_charge += w.paid_without_charge;
        }
        let lists: Vec<&[crate::disruptions::DisruptionResult]> =
            runs.iter().map(|r| r.disruptions.as_slice()).collect();
        out.disruptions = crate::disruptions::merge(&lists);
        let inj = &mut out.payment.injected;
        if inj.calls > 0 {
            let calls = inj.calls as f64;
            inj.failure_rate /= calls;
            inj.decline_rate /= calls;
            inj.rate_limit_rate /= calls;
            inj.timeout_rate /= calls;
            inj.lost_response_rate /= calls;
        }
        out.success_ratio = if out.orders.accepted == 0 {
            0.0
        } else {
            out.orders.paid as f64 / out.orders.accepted as f64
        };
        let hists: Option<Vec<&LatencyHistograms>> = runs.iter().map(|r| r.histograms.as_ref()).collect();
        match hists.and_then(|h| LatencyHistograms::merge(&h)) {
            Some(merged) => {
                let p = |text: &str| {
                    decode_histogram(text)
                        .map(|h| Percentiles::from_micros(&h))
                        .unwrap_or_default()
                };
                out.api_latency_ms = p(&merged.api);
                out.accepted_api_latency_ms = p(&merged.accepted_api);
                out.shed_api_latency_ms = p(&merged.shed_api);
                out.end_to_end_latency_ms = p(&merged.end_to_end);
                out.histograms = Some(merged);
            }
            None => {
                out.api_latency_ms = Percentiles::worst(runs.iter().map(|r| &r.api_latency_ms));
                out.accepted_api_latency_ms = Percentiles::worst(runs.iter().map(|r| &r.accepted_api_latency_ms));
                out.shed_api_latency_ms = Percentiles::worst(runs.iter().map(|r| &r.shed_api_latency_ms));
                out.end_to_end_latency_ms = Percentiles::worst(runs.iter().map(|r| &r.end_to_end_latency_ms));
            }
        }
        out
    }

    /// Payment calls per paid order (0 when nothing was paid).
    pub fn calls_per_paid_order(&self) -> f64 {
        if self.orders.paid == 0 {
            0.0
        } else {
            self.payment.calls as f64 / self.orders.paid as f64
        }
    }

    /// Times the breaker opened (`closed->open` and `half_open->open`).
    pub fn breaker_openings(&self) -> u64 {
        self.breaker
            .transitions
            .iter()
            .filter(|(k, _)| k.ends_with("->open"))
            .map(|(_, v)| v)
            .sum()
    }
}

fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

impl Percentiles {
    /// Each percentile the largest of the parts', the count their sum (when
    /// no histograms are at hand to merge).
    pub fn worst<'a>(parts: impl Iterator<Item = &'a Percentiles>) -> Percentiles {
        parts.fold(Percentiles::default(), |a, b| Percentiles {
            count: a.count + b.count,
            p50: a.p50.max(b.p50),
            p90: a.p90.max(b.p90),
            p95: a.p95.max(b.p95),
            p99: a.p99.max(b.p99),
            max: a.max.max(b.max),
        })
    }
}

impl LatencyHistograms {
    /// From the four histograms of a run.
    pub fn encode(
        api: &hdrhistogram::Histogram<u64>,
        accepted: &hdrhistogram::Histogram<u64>,
        shed: &hdrhistogram::Histogram<u64>,
        end_to_end: &hdrhistogram::Histogram<u64>,
    ) -> Self {
        Self {
            api: encode_histogram(api),
            accepted_api: encode_histogram(accepted),
            shed_api: encode_histogram(shed),
            end_to_end: encode_histogram(end_to_end),
        }
    }

    /// All parts added, histogram by histogram; `None` when a part does not decode.
    pub fn merge(parts: &[&LatencyHistograms]) -> Option<LatencyHistograms> {
        let one = |pick: fn(&LatencyHistograms) -> &String| -> Option<String> {
            let mut total: Option<hdrhistogram::Histogram<u64>> = None;
            for part in parts {
                let h = decode_histogram(pick(part))?;
                match total.as_mut() {
                    None => total = Some(h),
                    Some(t) => t.add(&h).ok()?,
                }
            }
            total.map(|t| encode_histogram(&t))
        };
        Some(LatencyHistograms {
            api: one(|h| &h.api)?,
            accepted_api: one(|h| &h.accepted_api)?,
            shed_api: one(|h| &h.shed_api)?,
            end_to_end: one(|h| &h.end_to_end)?,
        })
    }
}

/// HDR histograms (microseconds) in the V2 deflate format, base64.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyHistograms {
    pub api: String,
    pub accepted_api: String,
    pub shed_api: String,
    pub end_to_end: String,
}

/// One histogram as a compact string (V2 + deflate, base64).
pub fn encode_histogram(h: &hdrhistogram::Histogram<u64>) -> String {
    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .expect("an in-memory histogram serialises");
    base64_encode(&bytes)
}

/// A histogram from [`encode_histogram`]'s form; `None` when it is not one.
pub fn decode_histogram(text: &str) -> Option<hdrhistogram::Histogram<u64>> {
    use hdrhistogram::serialization::Deserializer;
    let bytes = base64_decode(text)?;
    Deserializer::new().deserialize(&mut bytes.as_slice()).ok()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
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

    fn hist(values: impl Iterator<Item = u64>) -> hdrhistogram::Histogram<u64> {
        let mut h = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn histograms_from_three_parts_merge_to_the_percentiles_of_all_samples() {
        // three load generators (or runs), each with its own share of samples
        let parts: Vec<Vec<u64>> = (0..3u64)
            .map(|g| {
                (0..5_000u64)
                    .map(|i| 1_000 + (i * 7919 + g * 104_729) % 400_000)
                    .collect()
            })
            .collect();
        let all = hist(parts.iter().flatten().copied());
        let runs: Vec<RunResults> = parts
            .iter()
            .map(|p| {
                let h = hist(p.iter().copied());
                RunResults {
                    api_latency_ms: Percentiles::from_micros(&h),
                    histograms: Some(LatencyHistograms::encode(&h, &h, &h, &h)),
                    ..RunResults::default()
                }
            })
            .collect();
        let merged = RunResults::merge(&runs);
        assert_eq!(merged.api_latency_ms, Percentiles::from_micros(&all));
        assert_eq!(merged.api_latency_ms.count, 15_000);
        let encoded = &runs[0].histograms.as_ref().unwrap().api;
        assert!(
            encoded.len() < 2_000,
            "a run's histogram is compact: {} bytes",
            encoded.len()
        );
        // without histograms: the worst part's percentiles
        let bare: Vec<RunResults> = runs
            .iter()
            .cloned()
            .map(|mut r| {
                r.histograms = None;
                r
            })
            .collect();
        let worst = RunResults::merge(&bare).api_latency_ms;
        assert_eq!(worst.p99, runs.iter().map(|r| r.api_latency_ms.p99).fold(0.0, f64::max));
    }

    #[test]
    fn repeats_sum_counts_and_recompute_ratios() {
        let run = |accepted, paid, calls| RunResults {
            orders: OrderCounts {
                accepted,
                paid,
                ..Default::default()
            },
            payment: PaymentResults {
                calls,
                injected: InjectedFaults {
                    calls,
                    failure_rate: 0.5,
                    ..Default::default()
                },
                ..Default::default()
            },
            max_queue_depth: accepted as i64,
            drained: true,
            ..Default::default()
        };
        let m = RunResults::merge(&[run(100, 90, 200), run(300, 300, 600)]);
        assert_eq!((m.orders.accepted, m.orders.paid), (400, 390));
        assert!((m.success_ratio - 0.975).abs() < 1e-12);
        assert!((m.payment.injected.failure_rate - 0.5).abs() < 1e-12);
        assert_eq!(m.max_queue_depth, 300);
        assert!((m.calls_per_paid_order() - 800.0 / 390.0).abs() < 1e-12);
    }

    #[test]
    fn the_breaker_gauge_round_trips_and_unknown_values_say_so() {
        for s in BreakerState::ALL {
            assert_eq!(BreakerState::from_gauge(s.gauge()), Some(s));
        }
        assert_eq!(BreakerState::name_of_gauge(2), "half_open");
        assert_eq!(BreakerState::name_of_gauge(7), "unknown");
    }
}

//! What the load generator records: how each response is classified, and
//! the counters and HDR histograms (microseconds) overall and per second.

use hdrhistogram::Histogram;
use std::time::Duration;
use uuid::Uuid;

/// Longest latency a histogram holds (larger values are clamped): one hour.
const MAX_TRACKED_MICROS: u64 = 3_600_000_000;

/// An empty latency histogram in microseconds with `sigfig` significant digits.
pub fn latency_histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, sigfig).expect("static histogram bounds are valid")
}

/// What a response meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseClass {
    /// `POST /orders` answered 201 (a `GET` target: any 2xx).
    Accepted,
    /// `POST /orders` answered 200: an earlier order with the same key.
    Replayed,
    /// 503 or 429: load shedding.
    Shed,
    /// Any other 4xx.
    Rejected,
    /// 5xx other than 503, anything unexpected, transport errors and timeouts.
    Error,
}

impl ResponseClass {
    /// Classify a status code; `orders` is true for the `POST /orders` target.
    pub fn of_status(orders: bool, status: u16) -> Self {
        match status {
            201 if orders => Self::Accepted,
            200 if orders => Self::Replayed,
            200..=299 if !orders => Self::Accepted,
            503 | 429 => Self::Shed,
            400..=499 => Self::Rejected,
            _ => Self::Error,
        }
    }
}

/// One finished request, as the request task reports it to the collector.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// Second (since the load started) of the intended send time.
    pub second: u32,
    /// Response complete minus the intended send time (minus the actual
    /// one for a send that left early: see `open_loop`).
    pub latency: Duration,
    /// How far from its intended time the request left, early or late.
    pub send_lag: Duration,
    pub class: ResponseClass,
    /// The new order's id (accepted orders only).
    pub order_id: Option<Uuid>,
}

/// Counters and latency of the requests meant to leave in one second.
#[derive(Debug, Clone)]
pub struct SecondStats {
    pub sent: u64,
    pub accepted: u64,
    pub replayed: u64,
    pub shed: u64,
    pub rejected: u64,
    pub errors: u64,
    /// Latency in microseconds (2 significant digits).
    pub latency: Histogram<u64>,
}

impl Default for SecondStats {
    fn default() -> Self {
        Self {
            sent: 0,
            accepted: 0,
            replayed: 0,
            shed: 0,
            rejected: 0,
            errors: 0,
            latency: latency_histogram(2),
        }
    }
}

impl SecondStats {
    fn count(&mut self, class: ResponseClass) {
        self.sent += 1;
        match class {
            ResponseClass::Accepted => self.accepted += 1,
            ResponseClass::Replayed => self.replayed += 1,
            ResponseClass::Shed => self.shed += 1,
            ResponseClass::Rejected => self.rejected += 1,
            ResponseClass::Error => self.errors += 1,
        }
    }

    /// Another generator's same second, added in.
    pub fn add(&mut self, other: &SecondStats) {
        self.sent += other.sent;
        self.accepted += other.accepted;
        self.replayed += other.replayed;
        self.shed += other.shed;
        self.rejected += other.rejected;
        self.errors += other.errors;
        super::add(&mut self.latency, &other.latency);
    }

    /// A latency percentile (`0.0..=1.0`) in milliseconds; 0 when empty.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        if self.latency.is_empty() {
            0.0
        } else {
            self.latency.value_at_quantile(quantile) as f64 / 1000.0
        }
    }
}

/// Everything recorded so far; the collector task owns it.
#[derive(Debug)]
pub(crate) struct Recorder {
    /// Totals over the run (`latency` unused here: see `latency`).
    pub totals: SecondStats,
    pub late_sends: u64,
    pub late_threshold: Duration,
    /// Latency in microseconds, 3 significant digits: every answer.
    pub latency: Histogram<u64>,
    /// The same, of accepted requests only.
    pub accepted_latency: Histogram<u64>,
    /// The same, of shed requests only.
    pub shed_latency: Histogram<u64>,
    pub send_lag: Histogram<u64>,
    pub seconds: Vec<SecondStats>,
    pub accepted_ids: Vec<Uuid>,
}

impl Recorder {
    pub fn new(late_threshold: Duration) -> Self {
        Self {
            totals: SecondStats::default(),
            late_sends: 0,
            late_threshold,
            latency: latency_histogram(3),
            accepted_latency: latency_histogram(3),
            shed_latency: latency_histogram(3),
            send_lag: latency_histogram(3),
            seconds: Vec::new(),
            accepted_ids: Vec::new(),
        }
    }

    pub fn record(&mut self, sample: Sample) {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let latency = micros(sample.latency);
        self.totals.count(sample.class);
        self.latency.saturating_record(latency);
        match sample.class {
            ResponseClass::Accepted => self.accepted_latency.saturating_record(latency),
            ResponseClass::Shed => self.shed_latency.saturating_record(latency),
            _ => {}
        }
        self.send_lag.saturating_record(micros(sample.send_lag));
        if sample.send_lag > self.late_threshold {
            self.late_sends += 1;
        }
        let index = sample.second as usize;
        if self.seconds.len() <= index {
            self.seconds.resize_with(index + 1, SecondStats::default);
        }
        let second = &mut self.seconds[index];
        second.count(sample.class);
        second.latency.saturating_record(latency);
        if let Some(id) = sample.order_id {
            self.accepted_ids.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_classified_by_status_and_target() {
        use ResponseClass::*;
        let orders = |s| ResponseClass::of_status(true, s);
        assert_eq!(
            [201, 200, 503, 429, 400, 409, 422, 500, 502, 204, 302].map(orders),
            [Accepted, Replayed, Shed, Shed, Rejected, Rejected, Rejected, Error, Error, Error, Error]
        );
        let get = |s| ResponseClass::of_status(false, s);
        assert_eq!(
            [200, 204, 503, 404, 500].map(get),
            [Accepted, Accepted, Shed, Rejected, Error]
        );
    }

    #[test]
    fn samples_land_in_their_intended_second_and_late_ones_are_counted() {
        let mut r = Recorder::new(Duration::from_millis(5));
        let sample = |second, lag_ms, class| Sample {
            second,
            latency: Duration::from_millis(20 + lag_ms),
            send_lag: Duration::from_millis(lag_ms),
            class,
            order_id: None,
        };
        r.record(sample(0, 0, ResponseClass::Accepted));
        r.record(sample(2, 6, ResponseClass::Shed));
        r.record(sample(2, 5, ResponseClass::Error));

        assert_eq!(r.totals.sent, 3);
        assert_eq!((r.totals.accepted, r.totals.shed, r.totals.errors), (1, 1, 1));
        assert_eq!(r.late_sends, 1, "only a lag above 5 ms is late");
        assert_eq!(r.seconds.iter().map(|s| s.sent).collect::<Vec<_>>(), [1, 0, 2]);
        assert_eq!(r.seconds[1].latency_ms(0.99), 0.0);
        assert!((r.seconds[2].latency_ms(1.0) - 26.0).abs() < 0.5);
        assert_eq!(r.latency.len(), 3);
        assert_eq!(
            (r.accepted_latency.len(), r.shed_latency.len()),
            (1, 1),
            "kept apart by class"
        );
        assert!((r.shed_latency.max() as f64 / 1000.0 - 26.0).abs() < 0.5);
    }
}

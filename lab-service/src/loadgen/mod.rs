//! The load generator: open-loop constant arrival rate in stages (no
//! coordinated omission), or closed-loop for benchmarks.
//!
//! **Open loop.** Every request has an *intended* send time computed from
//! the stages alone ([`schedule::Schedule`]); its latency is measured from
//! that time, not from when it actually left. When `max_in_flight` requests
//! are outstanding the next send waits for a slot, leaves late (counted in
//! `late_sends` when more than [`LATE_SEND_THRESHOLD`] late) and the wait
//! shows up in its latency, so a slow server cannot hide its slowness by
//! slowing the client down.
//!
//! The open loop is a pool of long-lived sender tasks (`open_loop`), not a
//! task per request: each takes the next send of the schedule from a shared
//! [`schedule::Cursor`] (one atomic add), sleeps until its intended time
//! (tokio's timer resolution is 1 ms: sends due in the same millisecond
//! leave together), sends on its own keep-alive connection, records and
//! takes the next. The pool keeps about 2 ms worth of sends waiting and
//! grows up to `max_in_flight` senders (one request each) when the server
//! holds them. With `load.parallelism`, generator k of N takes only every
//! N-th send of the schedule ([`Share`]).
//!
//! **Closed loop.** `concurrency` loops send back to back for a duration;
//! latency is measured from the actual send (there is no schedule to fall
//! behind). This is what `wrk` does; it measures capacity, not latency.
//!
//! Targets: `POST {api_url}/orders` with a unique `Idempotency-Key` and a
//! seeded body (201 accepted, 200 replayed, 503/429 shed, other 4xx
//! rejected, everything else an error), or any `GET` URL (2xx accepted).
//!
//! Requests go out through a small keep-alive HTTP/1.1 client of its own
//! (`http1`: plain `http://`, the calling task does the socket I/O on its
//! own connection), cheap enough per request to keep up with `wrk` on the
//! same cores.
//!
//! Live counts go to a [`tokio::sync::watch`] channel of [`LoadProgress`]
//! (about five times a second). This is the HTTP load driver only; the
//! whole run (wait, faults, load, drain, audit) is [`crate::run`].

mod driver;
mod http1;
mod open_loop;
mod record;
mod request;
pub mod schedule;

pub use driver::run_load;
pub use record::{latency_histogram, ResponseClass, SecondStats};

use crate::config::ConfigError;
use crate::summary::Percentiles;
use hdrhistogram::Histogram;
use std::time::Duration;
use uuid::Uuid;

/// A send that leaves more than this after its intended time is a late send.
pub const LATE_SEND_THRESHOLD: Duration = Duration::from_millis(5);

/// One stage of an open-loop run (the experiment model's, which a
/// validated experiment produces).
pub use relab_model::LoadStage;

/// How requests are paced.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadMode {
    /// Constant arrival rate per stage, whatever the server does.
    OpenLoop { stages: Vec<LoadStage> },
    /// `concurrency` loops, each sending its next request when the last one answered.
    ClosedLoop { concurrency: usize, duration: Duration },
}

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `POST {api_url}/orders` with a unique `Idempotency-Key` per request.
    Orders { api_url: String },
    /// `GET {url}` (benchmarks: a trivial endpoint).
    Get { url: String },
}

/// Which part of an open-loop schedule one load generator sends
/// (`load.parallelism`): generator `index` of `of` sends every `of`-th
/// request, starting with the `index`-th. The shares of `0..of` together
/// are the whole schedule, each request once, at its intended time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub index: u32,
    pub of: u32,
}

impl Share {
    /// One generator sends everything.
    pub const WHOLE: Share = Share { index: 0, of: 1 };

    /// Whether request `seq` of the schedule is this share's.
    pub fn takes(&self, seq: u64) -> bool {
        seq % u64::from(self.of.max(1)) == u64::from(self.index)
    }

    /// How many of `total` requests are this share's.
    pub fn of_total(&self, total: u64) -> u64 {
        let of = u64::from(self.of.max(1));
        total / of + u64::from(total % of > u64::from(self.index))
    }
}

/// Load settings independent of the target.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    pub mode: LoadMode,
    /// Open loop: the part of the schedule this generator sends.
    pub share: Share,
    /// Open loop: requests outstanding at most (the next send waits for a slot).
    pub max_in_flight: usize,
    /// A request without a complete answer by then is an error.
    pub request_timeout: Duration,
    /// Seed of the customers and amounts of generated orders.
    pub seed: u64,
}

impl LoadConfig {
    /// Open loop over `stages`, 256 in flight, 10 s request timeout.
    pub fn open_loop(stages: Vec<LoadStage>) -> Self {
        Self {
            mode: LoadMode::OpenLoop { stages },
            share: Share::WHOLE,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(10),
            seed: 1,
        }
    }

    /// `concurrency` closed loops for `duration`.
    pub fn closed_loop(concurrency: usize, duration: Duration) -> Self {
        Self {
            mode: LoadMode::ClosedLoop { concurrency, duration },
            share: Share::WHOLE,
            max_in_flight: concurrency.max(1),
            request_timeout: Duration::from_secs(10),
            seed: 1,
        }
    }

    /// How long the load is meant to last.
    pub fn planned_duration(&self) -> Duration {
        match &self.mode {
            LoadMode::OpenLoop { stages } => schedule::total_duration(stages),
            LoadMode::ClosedLoop { duration, .. } => *duration,
        }
    }

    /// Check the settings; the error names the field (`stages[1].ratePerSec`, `maxInFlight`, ...).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problem = |field: &str, message: String| ConfigError {
            field: field.to_string(),
            message,
        };
        match &self.mode {
            LoadMode::OpenLoop { stages } => {
                if stages.is_empty() {
                    return Err(problem("stages", "at least one stage is required".into()));
                }
                for (i, s) in stages.iter().enumerate() {
                    if !s.rate_per_sec.is_finite() || s.rate_per_sec < 0.0 {
                        return Err(problem(
                            &format!("stages[{i}].ratePerSec"),
                            format!("must be a finite number >= 0, got {}", s.rate_per_sec),
                        ));
                    }
                    if s.duration.is_zero() {
                        return Err(problem(&format!("stages[{i}].duration"), "must be above 0".into()));
                    }
                }
                if schedule::total_sends(stages) == 0 {
                    return Err(problem("stages", "the stages send nothing".into()));
                }
            }
            LoadMode::ClosedLoop { concurrency, duration } => {
                if *concurrency == 0 {
                    return Err(problem("concurrency", "must be at least 1".into()));
                }
                if duration.is_zero() {
                    return Err(problem("duration", "must be above 0".into()));
                }
            }
        }
        if self.share.of == 0 || self.share.index >= self.share.of {
            return Err(problem(
                "share",
                format!("generator {} of {} does not exist", self.share.index, self.share.of),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(problem("maxInFlight", "must be at least 1".into()));
        }
        if self.request_timeout.is_zero() {
            return Err(problem("requestTimeout", "must be above 0".into()));
        }
        Ok(())
    }
}

/// Live counts of the load, published about five times a second while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadProgress {
    /// True from the first send on.
    pub started: bool,
    /// Since the load started.
    pub elapsed: Duration,
    /// Planned length of the load.
    pub planned: Duration,
    pub sent: u64,
    pub accepted: u64,
    pub shed: u64,
    pub errors: u64,
}

/// What the load generator saw.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Requests sent (every one got an answer, an error or a timeout).
    pub sent: u64,
    pub accepted: u64,
    pub replayed: u64,
    pub shed: u64,
    pub rejected: u64,
    pub errors: u64,
    /// Open loop: sends that left more than [`LATE_SEND_THRESHOLD`] after their intended time.
    pub late_sends: u64,
    /// Ids of the orders the API accepted (201), in answer order.
    pub accepted_ids: Vec<Uuid>,
    /// Latency of every answer in microseconds (open loop: from the intended send time).
    pub latency: Histogram<u64>,
    /// The same, of accepted requests (201) only.
    pub accepted_latency: Histogram<u64>,
    /// The same, of shed requests (503/429) only.
    pub shed_latency: Histogram<u64>,
    /// How far from its intended time each request left, early or late,
    /// in microseconds (closed loop: ~0).
    pub send_lag: Histogram<u64>,
    /// Counts and latency per second of intended send time.
    pub seconds: Vec<SecondStats>,
    /// From the start of the load until the last answer came in.
    pub elapsed: Duration,
    /// The load ended early because it was asked to stop.
    pub stopped_early: bool,
}

impl LoadReport {
    /// Answers per second of wall time over the whole load phase.
    pub fn achieved_rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.sent as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency percentiles in milliseconds.
    pub fn latency_ms(&self) -> Percentiles {
        Percentiles::from_micros(&self.latency)
    }
}

impl LoadReport {
    /// The reports of the generators that shared one load, as one: counts
    /// summed, accepted ids joined, latency histograms merged (never
    /// percentiles averaged), each second's stats added, the longest
    /// elapsed; stopped early if any was. None for no report.
    pub fn merge(parts: Vec<LoadReport>) -> Option<LoadReport> {
        let mut parts = parts.into_iter();
        let mut total = parts.next()?;
        for part in parts {
            total.sent += part.sent;
            total.accepted += part.accepted;
            total.replayed += part.replayed;
            total.shed += part.shed;
            total.rejected += part.rejected;
            total.errors += part.errors;
            total.late_sends += part.late_sends;
            total.accepted_ids.extend(part.accepted_ids);
            add(&mut total.latency, &part.latency);
            add(&mut total.accepted_latency, &part.accepted_latency);
            add(&mut total.shed_latency, &part.shed_latency);
            add(&mut total.send_lag, &part.send_lag);
            if total.seconds.len() < part.seconds.len() {
                total.seconds.resize_with(part.seconds.len(), SecondStats::default);
            }
            for (sum, second) in total.seconds.iter_mut().zip(&part.seconds) {
                sum.add(second);
            }
            total.elapsed = total.elapsed.max(part.elapsed);
            total.stopped_early |= part.stopped_early;
        }
        Some(total)
    }
}

/// `into += from`; the load generator's histograms share their bounds, so
/// no value can fall outside (saturated if one ever did).
pub(crate) fn add(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    if into.add(from).is_err() {
        for v in from.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

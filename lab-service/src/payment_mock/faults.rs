//! The fault model: what the mock may do to a charge, when, and how often.
//!
//! A [`FaultPlan`] holds a seed, a `base` [`FaultSpec`] and a time-phased
//! `schedule` (the drill: healthy -> outage -> recovery). Validation is pure
//! and reports every problem with the JSON path of the field. [`decide`] turns
//! a spec and a seeded RNG into one [`Decision`], so the same seed and the same
//! request sequence always give the same fault sequence.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Rates may sum to at most 1; allow for floating-point error (0.1 + 0.2 + 0.7).
const RATE_SUM_TOLERANCE: f64 = 1e-9;

/// The faults injected while one spec is active. Every rate is a probability
/// in `0..=1`; the five outcome rates together must not exceed 1, the rest is
/// success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultSpec {
    /// Respond with one of `failure_statuses`; nothing is charged.
    pub failure_rate: f64,
    /// The 5xx statuses a failure picks from, uniformly.
    pub failure_statuses: Vec<u16>,
    /// Respond 402 `card_declined` (a business rejection, never retryable).
    pub decline_rate: f64,
    /// Respond 429 with `Retry-After: retry_after_secs`; nothing is charged.
    pub rate_limit_rate: f64,
    /// The `Retry-After` of a rate-limited response, in seconds.
    pub retry_after_secs: u64,
    /// Hang for `hang_ms` without charging, then respond 504.
    pub timeout_rate: f64,
    /// Record the charge, then hang for `hang_ms` and respond 504: the
    /// payment happened but the caller never learns it.
    pub lost_response_rate: f64,
    /// How long a timeout or a lost response hangs, in milliseconds.
    pub hang_ms: u64,
    /// Delay added to every response that does not hang.
    pub latency: LatencySpec,
}

impl Default for FaultSpec {
    fn default() -> Self {
        Self {
            failure_rate: 0.0,
            failure_statuses: vec![500, 503],
            decline_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after_secs: 1,
            timeout_rate: 0.0,
            lost_response_rate: 0.0,
            hang_ms: 10_000,
            latency: LatencySpec::default(),
        }
    }
}

/// Response delay: `base_ms + U[0, jitter_ms]`, plus `tail_ms` with
/// probability `tail_rate` (a slow tail for p99s to notice).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LatencySpec {
    /// Delay every response gets, in milliseconds.
    pub base_ms: u64,
    /// Upper bound of the uniform extra delay, in milliseconds (inclusive).
    pub jitter_ms: u64,
    /// Probability in `0..=1` that `tail_ms` is added.
    pub tail_rate: f64,
    /// Extra delay of a tail response, in milliseconds.
    pub tail_ms: u64,
}

/// A named time window of the schedule with its own faults; active while
/// `start_ms <= elapsed < end_ms` (no `end_ms`: until the plan is replaced).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultPhase {
    /// Shown as `activePhase` in the stats (e.g. `outage`).
    pub name: String,
    /// Start, in milliseconds since the plan was installed.
    #[serde(default)]
    pub start_ms: u64,
    /// End (exclusive), in milliseconds since the plan was installed.
    #[serde(default)]
    pub end_ms: Option<u64>,
    /// The faults while this phase is active (instead of `base`).
    #[serde(default)]
    pub faults: FaultSpec,
}

/// Everything the mock needs to decide faults: a seed, the faults outside
/// any phase, and the phases. An outage window is a phase with
/// `failureRate: 1.0` (and e.g. `failureStatuses: [503]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultPlan {
    /// Seed of the decision RNG.
    pub seed: u64,
    /// Faults while no phase is active.
    pub base: FaultSpec,
    /// Phases, sorted by start and not overlapping.
    pub schedule: Vec<FaultPhase>,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self {
            seed: 42,
            base: FaultSpec::default(),
            schedule: Vec::new(),
        }
    }
}

/// One validation problem, with the JSON path of the offending field
/// (e.g. `schedule[1].faults.failureRate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, camelCase as on the wire.
    pub field: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn check_rate(field: String, rate: f64, errors: &mut Vec<FieldError>) {
    if !(0.0..=1.0).contains(&rate) {
        errors.push(FieldError::new(
            field,
            format!("must be a probability within 0..=1, got {rate}"),
        ));
    }
}

fn into_result(errors: Vec<FieldError>) -> Result<(), Vec<FieldError>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

impl FaultSpec {
    /// The five outcome rates with their JSON names, in decision order.
    fn outcome_rates(&self) -> [(&'static str, f64); 5] {
        [
            ("declineRate", self.decline_rate),
            ("failureRate", self.failure_rate),
            ("rateLimitRate", self.rate_limit_rate),
            ("timeoutRate", self.timeout_rate),
            ("lostResponseRate", self.lost_response_rate),
        ]
    }

    /// Checks this spec; `path` is its JSON path (`base`,
    /// `schedule[0].faults`, or empty), prefixed to every reported field.
    /// Returns every problem found, in field order.
    pub fn validate(&self, path: &str) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        self.collect_errors(path, &mut errors);
        into_result(errors)
    }

    fn collect_errors(&self, path: &str, errors: &mut Vec<FieldError>) {
        let rates = self.outcome_rates();
        for (name, rate) in rates {
            check_rate(join(path, name), rate, errors);
        }
        let sum: f64 = rates.iter().map(|(_, rate)| rate).sum();
        if sum > 1.0 + RATE_SUM_TOLERANCE {
            let field = if path.is_empty() { "faults" } else { path };
            errors.push(FieldError::new(
                field,
                format!(
                    "declineRate + failureRate + rateLimitRate + timeoutRate + lostResponseRate \
                     = {sum}, must be at most 1"
                ),
            ));
        }
        if self.failure_rate > 0.0 && self.failure_statuses.is_empty() {
            errors.push(FieldError::new(
                join(path, "failureStatuses"),
                "must not be empty when failureRate > 0",
            ));
        }
        for (i, status) in self.failure_statuses.iter().enumerate() {
            if !(500..=599).contains(status) {
                errors.push(FieldError::new(
                    join(path, &format!("failureStatuses[{i}]")),
                    format!("must be a 5xx status (500..=599), got {status}"),
                ));
            }
        }
        check_rate(join(path, "latency.tailRate"), self.latency.tail_rate, errors);
    }
}

impl FaultPlan {
    /// Checks the base spec, every phase's spec, and the schedule's shape:
    /// `endMs > startMs`, phases sorted by start and not overlapping, names
    /// not empty. Returns every problem found.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        self.base.collect_errors("base", &mut errors);
        let mut previous_end: Option<Option<u64>> = None;
        for (i, phase) in self.schedule.iter().enumerate() {
            let path = format!("schedule[{i}]");
            if phase.name.trim().is_empty() {
                errors.push(FieldError::new(join(&path, "name"), "must not be empty"));
            }
            if let Some(end) = phase.end_ms {
                if end <= phase.start_ms {
                    errors.push(FieldError::new(
                        join(&path, "endMs"),
                        format!("must be greater than startMs ({}), got {end}", phase.start_ms),
                    ));
                }
            }
            match previous_end {
                Some(None) => errors.push(FieldError::new(
                    join(&path, "startMs"),
                    format!("schedule[{}] never ends, so no phase may follow it", i - 1),
                )),
                Some(Some(end)) if phase.start_ms < end => errors.push(FieldError::new(
                    join(&path, "startMs"),
                    format!(
                        "must be at least the end of schedule[{}] ({end} ms): phases must be \
                         sorted by start and must not overlap, got {}",
                        i - 1,
                        phase.start_ms
                    ),
                )),
                _ => {}
            }
            previous_end = Some(phase.end_ms);
            phase.faults.collect_errors(&join(&path, "faults"), &mut errors);
        }
        into_result(errors)
    }

    /// The phase active `elapsed` after the plan was installed: the last one
    /// whose window contains it.
    pub fn active_phase(&self, elapsed: Duration) -> Option<&FaultPhase> {
        let ms = elapsed.as_millis();
        self.schedule
            .iter()
            .rev()
            .find(|phase| u128::from(phase.start_ms) <= ms && phase.end_ms.is_none_or(|end| ms < u128::from(end)))
    }

    /// The spec in force `elapsed` after the plan was installed: the active
    /// phase's faults, else `base`.
    pub fn active_spec(&self, elapsed: Duration) -> &FaultSpec {
        self.active_phase(elapsed).map_or(&self.base, |phase| &phase.faults)
    }
}

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

impl LatencySpec {
    /// Draws a delay; always consumes exactly two numbers from `rng`.
    fn sample(&self, rng: &mut impl Rng) -> Duration {
        let jitter_draw: f64 = rng.gen();
        let tail_draw: f64 = rng.gen();
        // floor(u * (n + 1)) is uniform over 0..=n; min() guards rounding at n = u64::MAX.
        let jitter = ((jitter_draw * (self.jitter_ms as f64 + 1.0)) as u64).min(self.jitter_ms);
        let tail = if tail_draw < self.tail_rate { self.tail_ms } else { 0 };
        Duration::from_millis(self.base_ms.saturating_add(jitter).saturating_add(tail))
    }
}

/// Decides the fate of one charge request.
///
/// Always consumes exactly four numbers from `rng`: the outcome draw `u` in
/// `[0, 1)` (partitioned in the order decline, failure, rate limit, timeout,
/// lost response, else success), the failure-status pick, and two latency
/// draws. A fixed draw count keeps request *n*'s outcome independent of what
/// earlier requests happened to draw.
pub fn decide(spec: &FaultSpec, rng: &mut impl Rng) -> Decision {
    let u: f64 = rng.gen();
    let status_draw: f64 = rng.gen();
    let delay = spec.latency.sample(rng);
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
            retry_after_secs: spec.retry_after_secs,
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

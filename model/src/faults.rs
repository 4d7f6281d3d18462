//! The fault model, written once: what the payment mock may do to a charge,
//! as the manifest states it (`spec.payment`, each `faultsSchedule` phase)
//! and as the mock runs it ([`FaultPlan`], what `PUT /faults` takes).
//!
//! Single-field bounds are schema attributes on [`FaultSettings`]; the
//! manifest is checked against the CRD generated from them and a plan
//! against the schema of [`FaultPlan`] generated from the same attributes.
//! The rules that span fields ([`FaultSettings::check`], [`check_windows`])
//! serve both.

use crate::error::{join, FieldError, Problems};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Rates may sum to at most 1; allow for floating-point error (0.1 + 0.2 + 0.7).
const RATE_SUM_TOLERANCE: f64 = 1e-9;

/// Statuses at most in `failureStatuses`.
pub const MAX_FAILURE_STATUSES: usize = 16;

/// Phases at most in a fault schedule (the manifest's and the mock's).
pub const MAX_FAULT_PHASES: usize = 64;

/// What the payment service does to each call (shares are of all calls).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSettings {
    /// Share of calls answered with one of `failureStatuses` (not charged).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub failure_rate: f64,
    /// 5xx statuses used for failures (one is picked at random per failure).
    #[serde(default = "default_failure_statuses")]
    #[schemars(length(max = MAX_FAILURE_STATUSES), inner(range(min = 500, max = 599)))]
    pub failure_statuses: Vec<u16>,
    /// Share of calls declined with 402 (a business rejection: never retried).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub decline_rate: f64,
    /// Share of calls answered 429 with Retry-After.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub rate_limit_rate: f64,
    /// Retry-After of 429 answers, in seconds.
    #[serde(default = "default_retry_after")]
    #[schemars(range(min = 0, max = 3600))]
    pub retry_after_seconds: u64,
    /// Share of calls that hang past the client's deadline without charging.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub timeout_rate: f64,
    /// Share of calls that are charged but whose response is lost (the client times out).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub lost_response_rate: f64,
    /// How long a hanging call hangs, in milliseconds.
    #[serde(default = "default_hang_ms")]
    #[schemars(range(min = 1, max = 600000))]
    pub hang_ms: u64,
    /// Latency added to every answered call.
    #[serde(default)]
    pub latency: LatencySettings,
}

fn default_failure_statuses() -> Vec<u16> {
    vec![500, 503]
}
fn default_retry_after() -> u64 {
    1
}
fn default_hang_ms() -> u64 {
    10_000
}

impl Default for FaultSettings {
    fn default() -> Self {
        Self {
            failure_rate: 0.0,
            failure_statuses: default_failure_statuses(),
            decline_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after_seconds: default_retry_after(),
            timeout_rate: 0.0,
            lost_response_rate: 0.0,
            hang_ms: default_hang_ms(),
            latency: LatencySettings::default(),
        }
    }
}

/// Latency: `baseMs` + uniform `[0, jitterMs]` + `tailMs` for a `tailRate` share of calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LatencySettings {
    /// Delay every answered call gets, in milliseconds.
    #[serde(default)]
    #[schemars(range(min = 0, max = 600000))]
    pub base_ms: u64,
    /// Upper bound of a uniform extra delay, in milliseconds (inclusive).
    #[serde(default)]
    #[schemars(range(min = 0, max = 600000))]
    pub jitter_ms: u64,
    /// Share of calls that also get `tailMs` (a slow tail for p99s to notice).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub tail_rate: f64,
    /// Extra delay of a tail call, in milliseconds.
    #[serde(default)]
    #[schemars(range(min = 0, max = 600000))]
    pub tail_ms: u64,
}

impl FaultSettings {
    /// The five outcome rates with their names, in the order the mock draws them.
    pub fn outcome_rates(&self) -> [(&'static str, f64); 5] {
        [
            ("declineRate", self.decline_rate),
            ("failureRate", self.failure_rate),
            ("rateLimitRate", self.rate_limit_rate),
            ("timeoutRate", self.timeout_rate),
            ("lostResponseRate", self.lost_response_rate),
        ]
    }

    /// The rules across this settings' fields; `path` names it
    /// (`spec.payment`, `schedule[0].faults`).
    pub fn check(&self, path: &str, p: &mut Problems) {
        let sum: f64 = self.outcome_rates().iter().map(|(_, v)| v).sum();
        if sum > 1.0 + RATE_SUM_TOLERANCE {
            p.add(
                path,
                format!(
                    "declineRate + failureRate + rateLimitRate + timeoutRate + lostResponseRate must be at most 1, got {sum:.3}"
                ),
            );
        }
        if self.failure_rate > 0.0 && self.failure_statuses.is_empty() {
            p.add(
                join(path, "failureStatuses"),
                "must name at least one status when failureRate > 0",
            );
        }
    }

    /// True when calls may hang (timeouts or lost responses).
    pub fn hangs(&self) -> bool {
        self.timeout_rate > 0.0 || self.lost_response_rate > 0.0
    }
}

/// One window of a schedule: the names of its fields and its bounds, in
/// whatever unit the schedule counts.
pub struct Window<'a> {
    /// e.g. `spec.payment.faultsSchedule[1]`.
    pub path: String,
    pub name: &'a str,
    pub start: u64,
    pub end: Option<u64>,
}

/// The rules of a schedule, for the manifest's (seconds) and the mock's
/// (milliseconds) alike: names not blank, every window ends after it starts
/// and within `total` (when given), windows sorted by start and not
/// overlapping (a window without an end runs to the end, so nothing may
/// follow it). `fields` names the start and end fields (`startSeconds`,
/// `endSeconds`), `unit` the unit in messages (`s`, `ms`).
pub fn check_windows<'a>(
    windows: impl IntoIterator<Item = Window<'a>>,
    fields: (&str, &str),
    unit: &str,
    total: Option<u64>,
    p: &mut Problems,
) {
    let (start_field, end_field) = fields;
    let mut previous: Option<(String, Option<u64>)> = None;
    for w in windows {
        if w.name.trim().is_empty() {
            // an empty name is the schema's (minLength 1); a blank one is this rule's
            let problem = if w.name.is_empty() {
                None
            } else {
                Some("must not be blank")
            };
            if let Some(m) = problem {
                p.add(join(&w.path, "name"), m);
            }
        }
        if let Some(total) = total {
            if w.start >= total {
                p.add(
                    join(&w.path, start_field),
                    format!("must be before the end of the load ({total} {unit}), got {}", w.start),
                );
            }
        }
        if let Some(end) = w.end {
            if end <= w.start {
                p.add(
                    join(&w.path, end_field),
                    format!("must be after {start_field} ({} {unit}), got {end}", w.start),
                );
            } else if total.is_some_and(|t| end > t) {
                p.add(
                    join(&w.path, end_field),
                    format!(
                        "must be within the load ({} {unit}), got {end}",
                        total.unwrap_or_default()
                    ),
                );
            }
        }
        match &previous {
            Some((prev, None)) => p.add(
                join(&w.path, start_field),
                format!("{prev} never ends, so no phase may follow it"),
            ),
            Some((prev, Some(end))) if w.start < *end => p.add(
                join(&w.path, start_field),
                format!(
                    "overlaps {prev}, which ends at {end} {unit}: phases must be sorted by start and must not overlap"
                ),
            ),
            _ => {}
        }
        let short = w.path.rsplit('.').next().unwrap_or(&w.path).to_string();
        previous = Some((short, w.end));
    }
}

/// A named time window of the mock's schedule with its own faults; active
/// while `start_ms <= elapsed < end_ms` (no `end_ms`: until the plan is replaced).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultPhase {
    /// Shown as `activePhase` in the stats (e.g. `outage`).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Start, in milliseconds since the plan was installed.
    #[serde(default)]
    pub start_ms: u64,
    /// End (exclusive), in milliseconds since the plan was installed.
    #[serde(default)]
    pub end_ms: Option<u64>,
    /// The faults while this phase is active (instead of `base`).
    #[serde(default)]
    pub faults: FaultSettings,
}

/// Everything the mock needs to decide faults: a seed, the faults outside
/// any phase, and the phases. An outage window is a phase with
/// `failureRate: 1.0` (and e.g. `failureStatuses: [503]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultPlan {
    /// Seed of the decision RNG.
    pub seed: u64,
    /// Faults while no phase is active.
    pub base: FaultSettings,
    /// Phases, sorted by start and not overlapping.
    #[schemars(length(max = MAX_FAULT_PHASES))]
    pub schedule: Vec<FaultPhase>,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self {
            seed: 42,
            base: FaultSettings::default(),
            schedule: Vec::new(),
        }
    }
}

impl FaultPlan {
    /// Every problem of the plan, each with its JSON path
    /// (`schedule[1].faults.failureRate`): the bounds of the plan's schema
    /// (the same attributes the CRD is generated from), then the rules
    /// across fields.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let value = serde_json::to_value(self).expect("a fault plan serializes");
        let mut p = Problems(crate::schema::check_against::<FaultPlan>(&value, ""));
        self.base.check("base", &mut p);
        let windows = self.schedule.iter().enumerate().map(|(i, ph)| Window {
            path: format!("schedule[{i}]"),
            name: &ph.name,
            start: ph.start_ms,
            end: ph.end_ms,
        });
        check_windows(windows, ("startMs", "endMs"), "ms", None, &mut p);
        for (i, ph) in self.schedule.iter().enumerate() {
            ph.faults.check(&format!("schedule[{i}].faults"), &mut p);
        }
        p.into_result()
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

    /// The settings in force `elapsed` after the plan was installed: the
    /// active phase's faults, else `base`.
    pub fn active_settings(&self, elapsed: Duration) -> &FaultSettings {
        self.active_phase(elapsed).map_or(&self.base, |phase| &phase.faults)
    }
}

impl FaultSettings {
    /// Every kind of fault at once at modest rates, with latency and a tail:
    /// the fixture the model's and the payment mock's tests share.
    #[doc(hidden)]
    pub fn mixed() -> Self {
        FaultSettings {
            decline_rate: 0.10,
            failure_rate: 0.20,
            rate_limit_rate: 0.05,
            timeout_rate: 0.05,
            lost_response_rate: 0.10,
            latency: LatencySettings {
                base_ms: 5,
                jitter_ms: 10,
                tail_rate: 0.1,
                tail_ms: 100,
            },
            ..FaultSettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(result: Result<(), Vec<FieldError>>) -> Vec<String> {
        result
            .expect_err("expected validation errors")
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    fn checked(settings: &FaultSettings, path: &str) -> Result<(), Vec<FieldError>> {
        let mut p = Problems::default();
        settings.check(path, &mut p);
        p.into_result()
    }

    fn phase(name: &str, start_ms: u64, end_ms: Option<u64>) -> FaultPhase {
        FaultPhase {
            name: name.to_string(),
            start_ms,
            end_ms,
            faults: FaultSettings::default(),
        }
    }

    fn mixed_spec() -> FaultSettings {
        FaultSettings::mixed()
    }

    #[test]
    fn the_active_phase_follows_elapsed_time() {
        let plan = FaultPlan {
            schedule: vec![
                phase("warmup", 100, Some(200)),
                phase("outage", 200, Some(500)),
                phase("degraded", 800, None),
            ],
            ..FaultPlan::default()
        };
        let at = |ms: u64| plan.active_phase(Duration::from_millis(ms)).map(|p| p.name.as_str());
        assert_eq!(at(0), None);
        assert_eq!(at(99), None);
        assert_eq!(at(100), Some("warmup"));
        assert_eq!(at(199), Some("warmup"));
        assert_eq!(at(200), Some("outage"));
        assert_eq!(at(499), Some("outage"));
        assert_eq!(at(500), None);
        assert_eq!(at(800), Some("degraded"));
        assert_eq!(at(86_400_000), Some("degraded"));
    }

    #[test]
    fn the_active_settings_is_the_phase_faults_else_base() {
        let mut outage = phase("outage", 0, Some(200));
        outage.faults.failure_rate = 1.0;
        outage.faults.failure_statuses = vec![503];
        let plan = FaultPlan {
            schedule: vec![outage],
            ..FaultPlan::default()
        };
        assert_eq!(plan.active_settings(Duration::from_millis(10)).failure_rate, 1.0);
        assert_eq!(plan.active_settings(Duration::from_millis(200)), &plan.base);
    }

    #[test]
    fn defaults_and_wire_names() {
        let plan: FaultPlan = serde_json::from_str("{}").unwrap();
        assert_eq!(plan, FaultPlan::default());
        assert_eq!(plan.seed, 42);
        assert_eq!(plan.base.failure_statuses, vec![500, 503]);
        assert_eq!(plan.base.retry_after_seconds, 1);
        assert_eq!(plan.base.hang_ms, 10_000);

        let plan: FaultPlan = serde_json::from_str(
            r#"{"seed": 1, "base": {"lostResponseRate": 0.5, "latency": {"tailMs": 9}},
                "schedule": [{"name": "outage", "startMs": 5, "endMs": 10}]}"#,
        )
        .unwrap();
        assert_eq!(plan.base.lost_response_rate, 0.5);
        assert_eq!(plan.base.latency.tail_ms, 9);
        assert_eq!(plan.schedule[0].end_ms, Some(10));

        let typo = serde_json::from_str::<FaultPlan>(r#"{"base": {"failurRate": 0.5}}"#);
        assert!(typo.unwrap_err().to_string().contains("failurRate"));
    }

    #[test]
    fn a_valid_plan_passes() {
        let mut outage = phase("outage", 1_000, Some(2_000));
        outage.faults.failure_rate = 1.0;
        outage.faults.failure_statuses = vec![503];
        let plan = FaultPlan {
            base: mixed_spec(),
            schedule: vec![phase("healthy", 0, Some(1_000)), outage, phase("recovery", 2_000, None)],
            ..FaultPlan::default()
        };
        assert_eq!(plan.validate(), Ok(()));
    }

    #[test]
    fn an_out_of_range_rate_in_a_phase_is_reported_with_its_path() {
        let mut second = phase("outage", 100, Some(200));
        second.faults.timeout_rate = -0.1;
        second.faults.latency.tail_rate = 2.0;
        let plan = FaultPlan {
            schedule: vec![phase("healthy", 0, Some(100)), second],
            ..FaultPlan::default()
        };
        assert_eq!(
            fields(plan.validate()),
            ["schedule[1].faults.latency.tailRate", "schedule[1].faults.timeoutRate"]
        );

        let mut base_only = FaultPlan::default();
        base_only.base.failure_rate = 1.5;
        let errors = base_only.validate().unwrap_err();
        assert_eq!(errors[0].path, "base.failureRate");
        assert!(errors[0].to_string().starts_with("base.failureRate: "));
    }

    #[test]
    fn rates_summing_over_one_are_refused() {
        let spec = FaultSettings {
            failure_rate: 0.6,
            decline_rate: 0.5,
            ..FaultSettings::default()
        };
        assert_eq!(fields(checked(&spec, "base")), ["base"]);

        let exactly_one = FaultSettings {
            failure_rate: 0.1,
            decline_rate: 0.2,
            lost_response_rate: 0.7,
            ..FaultSettings::default()
        };
        assert_eq!(checked(&exactly_one, "base"), Ok(()));
    }

    #[test]
    fn failure_statuses_must_be_5xx_and_present_when_failing() {
        let spec = FaultSettings {
            failure_rate: 0.5,
            failure_statuses: vec![503, 404],
            ..FaultSettings::default()
        };
        let plan = FaultPlan {
            schedule: vec![FaultPhase {
                faults: spec,
                ..phase("a", 0, None)
            }],
            ..FaultPlan::default()
        };
        let errors = plan.validate().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "schedule[0].faults.failureStatuses[1]");
        assert!(errors[0].message.contains("404"));

        let empty = FaultSettings {
            failure_rate: 0.5,
            failure_statuses: vec![],
            ..FaultSettings::default()
        };
        assert_eq!(fields(checked(&empty, "base")), ["base.failureStatuses"]);
        let unused = FaultSettings {
            failure_statuses: vec![],
            ..FaultSettings::default()
        };
        assert_eq!(checked(&unused, "base"), Ok(()));
    }

    #[test]
    fn the_schedule_must_be_sorted_without_overlaps() {
        let overlapping = FaultPlan {
            schedule: vec![phase("a", 0, Some(300)), phase("b", 200, Some(400))],
            ..FaultPlan::default()
        };
        assert_eq!(fields(overlapping.validate()), ["schedule[1].startMs"]);

        let unsorted = FaultPlan {
            schedule: vec![phase("a", 500, Some(600)), phase("b", 0, Some(100))],
            ..FaultPlan::default()
        };
        assert_eq!(fields(unsorted.validate()), ["schedule[1].startMs"]);

        let after_forever = FaultPlan {
            schedule: vec![phase("a", 0, None), phase("b", 1_000, Some(2_000))],
            ..FaultPlan::default()
        };
        assert_eq!(fields(after_forever.validate()), ["schedule[1].startMs"]);

        let empty_window = FaultPlan {
            schedule: vec![phase("", 100, Some(100))],
            ..FaultPlan::default()
        };
        assert_eq!(
            fields(empty_window.validate()),
            ["schedule[0].name", "schedule[0].endMs"]
        );
        let blank = FaultPlan {
            schedule: vec![phase("  ", 100, Some(200))],
            ..FaultPlan::default()
        };
        assert_eq!(fields(blank.validate()), ["schedule[0].name"]);
    }
}

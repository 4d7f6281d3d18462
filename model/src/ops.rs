//! Drills as routine operations: `spec.schedule` (when runs start),
//! `spec.stopWhen` (when a run stops early) and `spec.notify` (who hears of
//! a finished run). The rules are pure and take the clock as an argument,
//! so the controller's behaviour around ticks, restarts and DST is tested
//! without waiting.

use crate::error::{FieldError, Problems};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// Start runs on a cron schedule (in the controller; no CronJob).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleSpec {
    /// A standard 5-field cron expression: minute hour day-of-month month
    /// day-of-week (`0 3 * * 1-5`: 03:00 on weekdays).
    #[schemars(length(min = 1, max = 100))]
    pub cron: String,
    /// The IANA time zone the expression is read in (`Europe/Berlin`).
    #[serde(default = "utc")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
    /// No ticks while true. Like any spec change, setting it ends a run in
    /// progress (its children are deleted; the results of finished runs stay).
    #[serde(default)]
    pub suspend: bool,
    /// A tick missed by more than this (the operator was down) is skipped,
    /// not caught up.
    #[serde(default = "default_deadline")]
    #[schemars(range(min = 1, max = 86_400))]
    pub starting_deadline_seconds: u32,
}

fn utc() -> String {
    "UTC".into()
}
fn default_deadline() -> u32 {
    600
}

impl ScheduleSpec {
    /// The parsed expression, or the problem with it.
    pub fn parsed(&self) -> Result<(croner::Cron, chrono_tz::Tz), Vec<FieldError>> {
        let mut p = Problems::default();
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .build()
            .parse(&self.cron)
            .map_err(|e| {
                p.add(
                    "spec.schedule.cron",
                    format!("not a 5-field cron expression ({e}): {:?}", self.cron),
                )
            })
            .ok();
        let tz = chrono_tz::Tz::from_str(&self.time_zone)
            .map_err(|_| {
                p.add(
                    "spec.schedule.timeZone",
                    format!("not an IANA time zone (e.g. UTC, Europe/Berlin): {:?}", self.time_zone),
                )
            })
            .ok();
        match (cron, tz) {
            (Some(c), Some(t)) if p.is_empty() => Ok((c, t)),
            _ => Err(p.0),
        }
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (cron, tz) = self.parsed().ok()?;
        let local = after.with_timezone(&tz);
        cron.find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// What the schedule asks for at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// No tick is due; the next one is at this time (None: never, or suspended).
    Wait { next: Option<DateTime<Utc>> },
    /// The tick at `at` is due: start a run (or skip it when one is going).
    Fire {
        at: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    },
    /// Ticks were missed by more than the starting deadline (the operator
    /// was down): the latest missed one, `at`, is skipped, not caught up.
    Missed {
        at: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    },
}

/// The schedule's decision at `now`, from the last tick handled (the
/// status's `lastScheduleTime`, else when the schedule was first seen).
/// Computed from the status, never from memory: an operator restarted (or a
/// new leader) across a tick sees the same `last` and fires it at most once.
pub fn due(schedule: &ScheduleSpec, last: DateTime<Utc>, now: DateTime<Utc>) -> Tick {
    if schedule.suspend {
        return Tick::Wait { next: None };
    }
    let Some(mut tick) = schedule.next_after(last) else {
        return Tick::Wait { next: None };
    };
    if tick > now {
        return Tick::Wait { next: Some(tick) };
    }
    // the latest tick not after now
    while let Some(following) = schedule.next_after(tick).filter(|t| *t <= now) {
        tick = following;
    }
    let next = schedule.next_after(tick);
    let late = (now - tick).num_seconds();
    if late > i64::from(schedule.starting_deadline_seconds) {
        Tick::Missed { at: tick, next }
    } else {
        Tick::Fire { at: tick, next }
    }
}

/// The live objective a stop condition watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StopObjective {
    /// `spec.objectives.successRatio`.
    SuccessRatio,
}

/// One condition that stops a run early. Exactly one of `objective`,
/// `doubleCharges` and `maxDurationSeconds`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StopCondition {
    /// Stop once this objective cannot be met any more, or is failing over
    /// the last `afterSeconds` of the load (the window; checked from then on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<StopObjective>,
    /// The window (and grace) of `objective`, in seconds of load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub after_seconds: Option<u32>,
    /// true: any double charge seen live stops the run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub double_charges: Option<bool>,
    /// A wall-clock cap on the run (load and drain), whatever happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604_800))]
    pub max_duration_seconds: Option<u32>,
}

/// Stop conditions at most.
pub const MAX_STOP_CONDITIONS: usize = 16;

impl StopCondition {
    /// How the condition reads in the status (`stopWhen[0] successRatio`).
    pub fn describe(&self) -> String {
        match (self.objective, self.double_charges, self.max_duration_seconds) {
            (Some(StopObjective::SuccessRatio), _, _) => {
                format!(
                    "successRatio over the last {} s",
                    self.after_seconds.unwrap_or(DEFAULT_WINDOW)
                )
            }
            (_, Some(true), _) => "doubleCharges".into(),
            (_, _, Some(s)) => format!("maxDurationSeconds {s}"),
            _ => "nothing".into(),
        }
    }
}

/// The window of an objective stop condition without `afterSeconds`.
pub const DEFAULT_WINDOW: u32 = 10;

/// The rules of `stopWhen` across fields.
pub fn check_stop_when(conditions: &[StopCondition], success_target: Option<f64>, p: &mut Problems) {
    for (i, c) in conditions.iter().enumerate() {
        let path = format!("spec.stopWhen[{i}]");
        let set = [
            c.objective.is_some(),
            c.double_charges.is_some(),
            c.max_duration_seconds.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            p.add(
                &path,
                format!("give exactly one of objective, doubleCharges and maxDurationSeconds, got {set}"),
            );
        }
        if c.after_seconds.is_some() && c.objective.is_none() {
            p.add(format!("{path}.afterSeconds"), "belongs to an objective condition");
        }
        if c.objective == Some(StopObjective::SuccessRatio) && success_target.is_none() {
            p.add(
                format!("{path}.objective"),
                "successRatio needs spec.objectives.successRatio, the target it watches",
            );
        }
        if c.double_charges == Some(false) {
            p.add(
                format!("{path}.doubleCharges"),
                "only true stops anything: leave it out instead",
            );
        }
    }
}

/// What the run engine sees of a run once a second, for its stop conditions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveFigures {
    /// Seconds since the run started (load and drain).
    pub elapsed_seconds: f64,
    /// Seconds of load so far (stops growing once the load is over).
    pub load_seconds: f64,
    /// Orders that reached a final state, per second of the run so far
    /// (index = second): (paid, failed or dead-lettered).
    pub finished_per_second: Vec<(u64, u64)>,
    /// Orders the whole load will send (the plan), for "cannot be met any more".
    pub planned_orders: u64,
    /// Orders failed or dead-lettered so far.
    pub failed_so_far: u64,
    /// Orders charged more than once so far (the payment ledger's count).
    pub double_charges: u64,
}

/// Why a run was stopped: the condition, what was seen, and when.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stopped {
    /// e.g. `stopWhen[0] successRatio over the last 10 s`.
    pub condition: String,
    /// What was seen (`success ratio 0.6100 over the last 10 s, target 0.99`).
    pub observed: String,
    /// Seconds after the run started.
    pub at_seconds: f64,
}

/// The first condition that holds, if any.
pub fn first_breach(conditions: &[StopCondition], success_target: Option<f64>, live: &LiveFigures) -> Option<Stopped> {
    conditions.iter().enumerate().find_map(|(i, c)| {
        let observed = breach(c, success_target, live)?;
        Some(Stopped {
            condition: format!("stopWhen[{i}] {}", c.describe()),
            observed,
            at_seconds: live.elapsed_seconds,
        })
    })
}

fn breach(c: &StopCondition, success_target: Option<f64>, live: &LiveFigures) -> Option<String> {
    if let Some(cap) = c.max_duration_seconds {
        return (live.elapsed_seconds >= f64::from(cap))
            .then(|| format!("{:.1} s of run, cap {cap} s", live.elapsed_seconds));
    }
    if c.double_charges == Some(true) {
        return (live.double_charges > 0).then(|| format!("{} orders charged more than once", live.double_charges));
    }
    let target = success_target?;
    let window = c.after_seconds.unwrap_or(DEFAULT_WINDOW) as usize;
    // cannot be met any more: more failures than the whole plan allows
    let allowed = ((1.0 - target) * live.planned_orders as f64 + 1e-9).floor() as u64;
    if live.planned_orders > 0 && live.failed_so_far > allowed {
        return Some(format!(
            "{} orders failed, more than the {allowed} that {} of {} planned orders allow",
            live.failed_so_far, target, live.planned_orders
        ));
    }
    // failing over the last window (once a whole window of load has passed)
    if live.load_seconds < window as f64 || live.finished_per_second.len() < window {
        return None;
    }
    let recent = &live.finished_per_second[live.finished_per_second.len() - window..];
    let (paid, failed) = recent.iter().fold((0, 0), |(p, f), (a, b)| (p + a, f + b));
    let total = paid + failed;
    let ratio = if total == 0 { 1.0 } else { paid as f64 / total as f64 };
    (total > 0 && ratio < target).then(|| format!("success ratio {ratio:.4} over the last {window} s, target {target}"))
}

/// Where a finished run is announced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotifySpec {
    /// One POST of a CloudEvents 1.0 JSON envelope
    /// (`dev.relab.experiment.finished`) per finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
}

/// A webhook whose URL is a secret (it often carries a token).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSpec {
    pub url_secret_ref: SecretKeyRef,
}

/// A key of a Secret in the experiment's namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn schedule(cron: &str, tz: &str) -> ScheduleSpec {
        ScheduleSpec {
            cron: cron.into(),
            time_zone: tz.into(),
            suspend: false,
            starting_deadline_seconds: 600,
        }
    }

    #[test]
    fn ticks_fire_once_each_and_late_ones_are_skipped_not_caught_up() {
        let s = schedule("0 3 * * 1-5", "UTC");
        // Thursday 2026-12-03
        let last = at("2026-12-03T02:00:00Z");
        assert_eq!(
            due(&s, last, at("2026-12-03T02:59:59Z")),
            Tick::Wait {
                next: Some(at("2026-12-03T03:00:00Z"))
            }
        );
        let fire = due(&s, last, at("2026-12-03T03:00:05Z"));
        assert_eq!(
            fire,
            Tick::Fire {
                at: at("2026-12-03T03:00:00Z"),
                next: Some(at("2026-12-04T03:00:00Z"))
            }
        );
        // the same tick, handled (lastScheduleTime moved to it): nothing more, even after a restart
        assert!(matches!(
            due(&s, at("2026-12-03T03:00:00Z"), at("2026-12-03T03:00:07Z")),
            Tick::Wait { .. }
        ));
        // the operator down over the weekend: the latest missed tick is skipped, once
        let missed = due(&s, at("2026-12-04T03:00:00Z"), at("2026-12-07T05:00:00Z"));
        assert_eq!(
            missed,
            Tick::Missed {
                at: at("2026-12-07T03:00:00Z"),
                next: Some(at("2026-12-08T03:00:00Z"))
            }
        );
        let mut off = s.clone();
        off.suspend = true;
        assert_eq!(due(&off, last, at("2026-12-03T03:00:05Z")), Tick::Wait { next: None });
    }

    #[test]
    fn a_zone_keeps_wall_clock_time_across_dst() {
        // 03:00 Berlin is 02:00 UTC in winter and 01:00 UTC in summer
        let s = schedule("0 3 * * *", "Europe/Berlin");
        assert_eq!(
            s.next_after(at("2026-03-28T12:00:00Z")),
            Some(at("2026-03-29T01:00:00Z")),
            "CEST from 29 March"
        );
        assert_eq!(
            s.next_after(at("2026-10-24T12:00:00Z")),
            Some(at("2026-10-25T02:00:00Z")),
            "CET again from 25 October"
        );
        // 02:30 does not exist on the spring-forward day: it fires at the
        // first instant after the gap, 03:00 CEST (as Vixie cron does)
        let gap = schedule("30 2 * * *", "Europe/Berlin");
        let next = gap.next_after(at("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(
            next,
            at("2026-03-29T01:00:00Z"),
            "the missing 02:30 of 29 March runs at 03:00 CEST"
        );
        assert_eq!(gap.next_after(next), Some(at("2026-03-30T00:30:00Z")), "and only then");
        // 02:30 happens twice on the fall-back day: one tick
        let twice = gap.next_after(at("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(twice, at("2026-10-25T00:30:00Z"), "the first 02:30 (CEST)");
        assert_ne!(
            gap.next_after(twice),
            Some(at("2026-10-25T01:30:00Z")),
            "not again at the second 02:30 (CET)"
        );
    }

    #[test]
    fn bad_schedules_name_the_field() {
        let e = schedule("0 3 * *", "UTC").parsed().unwrap_err();
        assert_eq!(e[0].path, "spec.schedule.cron");
        let e = schedule("0 0 3 * * 1", "UTC").parsed().unwrap_err();
        assert_eq!(e[0].path, "spec.schedule.cron", "seconds are not standard cron");
        let e = schedule("0 3 * * *", "Mars/Olympus").parsed().unwrap_err();
        assert_eq!(e[0].path, "spec.schedule.timeZone");
    }

    #[test]
    fn stop_conditions_fire_on_what_they_watch() {
        let ratio = StopCondition {
            objective: Some(StopObjective::SuccessRatio),
            after_seconds: Some(3),
            ..Default::default()
        };
        let doubles = StopCondition {
            double_charges: Some(true),
            ..Default::default()
        };
        let cap = StopCondition {
            max_duration_seconds: Some(60),
            ..Default::default()
        };
        let all = [ratio, doubles, cap];
        let mut live = LiveFigures {
            elapsed_seconds: 5.0,
            load_seconds: 5.0,
            finished_per_second: vec![(10, 0), (10, 0), (10, 0), (10, 0), (10, 0)],
            planned_orders: 1_000,
            ..Default::default()
        };
        assert_eq!(first_breach(&all, Some(0.9), &live), None, "healthy");
        live.finished_per_second.extend([(2, 8), (3, 7), (1, 9)]);
        live.load_seconds = 8.0;
        live.elapsed_seconds = 8.0;
        let s = first_breach(&all, Some(0.9), &live).expect("failing over the last 3 s");
        assert!(s.condition.starts_with("stopWhen[0] successRatio"), "{s:?}");
        assert!(s.observed.contains("0.2000 over the last 3 s"), "{s:?}");
        assert_eq!(s.at_seconds, 8.0);
        // cannot be met any more: 101 failures when 0.9 of 1,000 allows 100
        let doomed = LiveFigures {
            failed_so_far: 101,
            planned_orders: 1_000,
            ..Default::default()
        };
        assert!(first_breach(&all[..1], Some(0.9), &doomed)
            .unwrap()
            .observed
            .contains("more than the 100"));
        let charged = LiveFigures {
            double_charges: 1,
            ..Default::default()
        };
        assert!(first_breach(&all, Some(0.9), &charged)
            .unwrap()
            .condition
            .starts_with("stopWhen[1]"));
        let long = LiveFigures {
            elapsed_seconds: 60.0,
            ..Default::default()
        };
        assert!(first_breach(&all, Some(0.9), &long)
            .unwrap()
            .condition
            .starts_with("stopWhen[2] maxDurationSeconds 60"));
    }

    #[test]
    fn each_condition_says_one_thing() {
        let mut p = Problems::default();
        let both = StopCondition {
            double_charges: Some(true),
            max_duration_seconds: Some(5),
            ..Default::default()
        };
        let lonely_window = StopCondition {
            after_seconds: Some(5),
            double_charges: Some(true),
            ..Default::default()
        };
        let no_target = StopCondition {
            objective: Some(StopObjective::SuccessRatio),
            ..Default::default()
        };
        check_stop_when(
            &[both, lonely_window, no_target, StopCondition::default()],
            None,
            &mut p,
        );
        let paths: Vec<&str> = p.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.stopWhen[0]",
                "spec.stopWhen[1].afterSeconds",
                "spec.stopWhen[2].objective",
                "spec.stopWhen[3]"
            ]
        );
    }
}

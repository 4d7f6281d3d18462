//! Infrastructure disruptions (`spec.disruptions`): worker and order-service
//! crashes, a Postgres restart, a slow or unreachable database, each fired
//! once at a time from the start of the load. This module holds what the
//! manifest asks ([`DisruptionSpec`]), the rules across its fields
//! ([`check_disruptions`]), the plan a runner fires ([`PlannedDisruption`],
//! scaled), what the status reports ([`DisruptionResult`]) and how recovery
//! is measured ([`recovery_at`]).
//!
//! Who fires what: the run engine (`lab-service/src/run/disrupt.rs`) keeps
//! the clock and the record for every runner; the kills and the restart
//! are carried out by the runner's own means (child processes and
//! `pg_ctl` in `relab run`, pod deletion by the operator on a cluster).

use crate::error::Problems;
use crate::results::TimelinePoint;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Disruptions at most in one manifest (their results must fit the load
/// generator's termination message with everything else).
pub const MAX_DISRUPTIONS: usize = 8;

/// How close to steady state the success rate must be again (absolute) for
/// a disruption to count as recovered from.
pub const RECOVERY_TOLERANCE: f64 = 0.05;

/// Seconds of the timeline the recovery's success rate is taken over (a
/// sliding window, so that one second's rounding does not decide it).
pub const RECOVERY_WINDOW: usize = 3;

/// What a disruption does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DisruptionAction {
    /// SIGKILL (`relab run`) or delete with grace 0 (cluster) `fraction` of
    /// the processes or pods that run workers, rounded up, at least one.
    /// Where the API shares the process (every layout today), it dies too.
    KillWorkers,
    /// Kill every order-service process or pod (API and its workers) at once.
    KillOrderService,
    /// An immediate-mode restart of the managed Postgres: same data, crash
    /// recovery, every connection dropped. Not with an external database.
    RestartDatabase,
    /// `addedMs` of latency on every packet, each direction, between the
    /// order service and Postgres for `durationSeconds`.
    DatabaseLatency,
    /// For `durationSeconds`, new connections from the order service to
    /// Postgres are refused and open ones reset.
    DatabaseOutage,
}

impl DisruptionAction {
    pub const ALL: [DisruptionAction; 5] = [
        DisruptionAction::KillWorkers,
        DisruptionAction::KillOrderService,
        DisruptionAction::RestartDatabase,
        DisruptionAction::DatabaseLatency,
        DisruptionAction::DatabaseOutage,
    ];

    /// The manifest's spelling (`KillWorkers`).
    pub fn as_str(self) -> &'static str {
        match self {
            DisruptionAction::KillWorkers => "KillWorkers",
            DisruptionAction::KillOrderService => "KillOrderService",
            DisruptionAction::RestartDatabase => "RestartDatabase",
            DisruptionAction::DatabaseLatency => "DatabaseLatency",
            DisruptionAction::DatabaseOutage => "DatabaseOutage",
        }
    }

    /// Acts through the database fault proxy (which is then put in the
    /// order service's path).
    pub fn through_db_proxy(self) -> bool {
        matches!(
            self,
            DisruptionAction::DatabaseLatency | DisruptionAction::DatabaseOutage
        )
    }

    /// Kills order-service processes or pods.
    pub fn kills(self) -> bool {
        matches!(self, DisruptionAction::KillWorkers | DisruptionAction::KillOrderService)
    }

    /// Lasts `durationSeconds` (the others happen at an instant).
    pub fn has_duration(self) -> bool {
        self.through_db_proxy()
    }
}

/// One disruption of the lab, fired once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisruptionSpec {
    /// Names it in the status, the Events and the plots (unique).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// When it fires, in seconds from the start of the load (within the load).
    #[schemars(range(min = 0, max = 86400))]
    pub at_seconds: u32,
    /// What it does.
    pub action: DisruptionAction,
    /// `KillWorkers`: the share of worker processes or pods killed, in
    /// (0, 1]; rounded up, at least one. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0), extend("exclusiveMinimum" = true))]
    pub fraction: Option<f64>,
    /// `DatabaseLatency`: milliseconds added in each direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60000))]
    pub added_ms: Option<u32>,
    /// `DatabaseLatency` and `DatabaseOutage`: how long it lasts, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub duration_seconds: Option<u32>,
}

/// The rules of `spec.disruptions` across fields. `load_seconds` is the
/// load's length; `external_database` says the database is not relab's
/// own (then it cannot be restarted).
pub fn check_disruptions(list: &[DisruptionSpec], load_seconds: u64, external_database: bool, p: &mut Problems) {
    let mut windows: Vec<(usize, u64, u64)> = Vec::new();
    for (i, d) in list.iter().enumerate() {
        let path = format!("spec.disruptions[{i}]");
        if let Some(j) = list[..i].iter().position(|e| e.name == d.name) {
            p.add(
                format!("{path}.name"),
                format!("{:?} is already the name of spec.disruptions[{j}]", d.name),
            );
        }
        let at = u64::from(d.at_seconds);
        if load_seconds > 0 && at >= load_seconds {
            p.add(
                format!("{path}.atSeconds"),
                format!("must be within the load (under {load_seconds} s), got {at}"),
            );
        }
        let action = d.action.as_str();
        if d.fraction.is_some() && d.action != DisruptionAction::KillWorkers {
            p.add(
                format!("{path}.fraction"),
                format!("belongs to KillWorkers, not {action}"),
            );
        }
        if d.added_ms.is_some() && d.action != DisruptionAction::DatabaseLatency {
            p.add(
                format!("{path}.addedMs"),
                format!("belongs to DatabaseLatency, not {action}"),
            );
        }
        if d.action == DisruptionAction::DatabaseLatency && d.added_ms.is_none() {
            p.add(format!("{path}.addedMs"), "is required for DatabaseLatency");
        }
        match (d.action.has_duration(), d.duration_seconds) {
            (true, None) => p.add(format!("{path}.durationSeconds"), format!("is required for {action}")),
            (false, Some(_)) => p.add(
                format!("{path}.durationSeconds"),
                format!("{action} happens at an instant: leave durationSeconds out"),
            ),
            (true, Some(secs)) => {
                let end = at + u64::from(secs);
                if load_seconds > 0 && end > load_seconds {
                    p.add(
                        format!("{path}.durationSeconds"),
                        format!("must end within the load ({load_seconds} s): {at} + {secs} = {end}"),
                    );
                }
                windows.push((i, at, end));
            }
            (false, None) => {}
        }
        if d.action == DisruptionAction::RestartDatabase && external_database {
            p.add(
                format!("{path}.action"),
                "RestartDatabase needs relab's own Postgres: spec.database.external cannot be restarted",
            );
        }
        if d.action.through_db_proxy() && external_database {
            // the same manifest means the same on both runners: the operator
            // cannot put the proxy in front of a database whose address is
            // in a Secret it never reads
            p.add(
                format!("{path}.action"),
                format!(
                    "{action} needs relab's own Postgres: the proxy cannot be put in front of \
                     spec.database.external, whose address is in a Secret the operator never reads"
                ),
            );
        }
    }
    // the proxy holds one fault at a time: its windows may not overlap
    windows.sort_by_key(|&(_, start, _)| start);
    for pair in windows.windows(2) {
        let ((i, _, end), (j, start, _)) = (pair[0], pair[1]);
        if start < end {
            p.add(
                format!("spec.disruptions[{j}].atSeconds"),
                format!(
                    "overlaps spec.disruptions[{i}] ({:?}, until {end} s): database latency and outage windows may not overlap",
                    list[i].name
                ),
            );
        }
    }
}

/// A disruption as a runner fires it: times scaled and from the load's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedDisruption {
    pub name: String,
    pub action: DisruptionAction,
    /// When to fire, from the start of the load.
    #[serde(with = "millis")]
    pub at: Duration,
    /// How long it lasts (zero for the instant actions).
    #[serde(with = "millis")]
    pub duration: Duration,
    /// `KillWorkers`' share (1 for `KillOrderService`, 0 for the rest).
    pub fraction: f64,
    /// `DatabaseLatency`'s added latency per direction.
    pub added_ms: u32,
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl PlannedDisruption {
    /// The plan of one manifest entry, its seconds multiplied by `time_scale`.
    pub fn of(spec: &DisruptionSpec, time_scale: f64) -> Self {
        let scaled = |secs: u32| Duration::from_secs_f64(f64::from(secs) * time_scale);
        Self {
            name: spec.name.clone(),
            action: spec.action,
            at: scaled(spec.at_seconds),
            duration: spec.duration_seconds.map(scaled).unwrap_or_default(),
            fraction: match spec.action {
                DisruptionAction::KillWorkers => spec.fraction.unwrap_or(1.0),
                DisruptionAction::KillOrderService => 1.0,
                _ => 0.0,
            },
            added_ms: spec.added_ms.unwrap_or(0),
        }
    }

    /// How many of `of` processes or pods a kill takes: `fraction` of them
    /// rounded up, at least one (and at most all).
    pub fn victims(&self, of: usize) -> usize {
        if of == 0 {
            return 0;
        }
        ((self.fraction * of as f64 - 1e-9).ceil() as usize).clamp(1, of)
    }

    /// A result with nothing fired yet.
    pub fn unfired(&self) -> DisruptionResult {
        DisruptionResult {
            name: self.name.clone(),
            action: self.action,
            at_seconds: self.at.as_secs_f64(),
            fired_at_seconds: None,
            ended_at_seconds: None,
            hit: Vec::new(),
            recovered_at_seconds: None,
            recovery_seconds: None,
            error: None,
        }
    }
}

/// What became of one disruption in a run (`status.results.disruptions[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionResult {
    pub name: String,
    pub action: DisruptionAction,
    /// When it was asked for, in seconds from the start of the load.
    pub at_seconds: f64,
    /// When it fired (null: it never did, and the verdict is Inconclusive).
    pub fired_at_seconds: Option<f64>,
    /// When it was over: the window's end, or when the killed processes
    /// were started again / the database was back (a cluster's pods come
    /// back by their Deployment: the firing time).
    #[serde(default)]
    pub ended_at_seconds: Option<f64>,
    /// What it hit: pod names, process ids, connections reset.
    #[serde(default)]
    pub hit: Vec<String>,
    /// When the success rate was back within 5% of steady state and the
    /// queue back under its depth before the disruption (null: never).
    pub recovered_at_seconds: Option<f64>,
    /// recoveredAtSeconds - endedAtSeconds (null: it never recovered).
    pub recovery_seconds: Option<f64>,
    /// Why it could not fire, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DisruptionResult {
    /// Why this disruption leaves the run inconclusive, if it does.
    pub fn inconclusive_reason(&self) -> Option<String> {
        let what = format!("disruption {} ({})", self.name, self.action.as_str());
        match (self.fired_at_seconds, &self.error) {
            (None, Some(e)) => Some(format!("{what} did not fire: {e}")),
            (None, None) => Some(format!("{what} did not fire")),
            (Some(_), _) if self.hit.is_empty() => Some(format!("{what} hit nothing")),
            _ => None,
        }
    }
}

/// The per-second success rate of the recovery rule over `window`: orders
/// paid ÷ orders sent (the pipeline delivering what is offered); `None`
/// when nothing was sent in it (after the load).
fn success_rate(window: &[TimelinePoint]) -> Option<f64> {
    let sent: u64 = window.iter().map(|p| p.sent).sum();
    let paid: u64 = window.iter().map(|p| p.paid).sum();
    (sent > 0).then(|| paid as f64 / sent as f64)
}

/// The steady state before the first disruption fired at `first_fired`
/// seconds: the success rate over the seconds before it (the first second
/// left out: the pipeline fills), at most 1, and the largest queue depth
/// seen then. At most 1: more paid than sent in those seconds is orders
/// of the first second paid late (a slow start), not a pipeline that
/// delivers more than it is offered, and no stretch after the disruption
/// could match it.
pub fn steady_state(timeline: &[TimelinePoint], first_fired: f64) -> (Option<f64>, i64) {
    let before: Vec<TimelinePoint> = timeline
        .iter()
        .filter(|p| p.second >= 1 && f64::from(p.second) + 1.0 <= first_fired)
        .cloned()
        .collect();
    let depth = before.iter().map(|p| p.queue_depth).max().unwrap_or(0);
    (success_rate(&before).map(|r| r.min(1.0)), depth)
}

/// The first second (end of it, from the load's start) at or after `ended`
/// at which the success rate over the last [`RECOVERY_WINDOW`] seconds is
/// within [`RECOVERY_TOLERANCE`] of `steady` (or nothing is sent any more)
/// and the queue is no deeper than `depth_before`. `None`: never.
pub fn recovery_at(timeline: &[TimelinePoint], ended: f64, steady: Option<f64>, depth_before: i64) -> Option<f64> {
    for (i, p) in timeline.iter().enumerate() {
        let at = f64::from(p.second) + 1.0;
        // a window that starts after the disruption ended
        if f64::from(p.second) < ended.floor() || (i + 1) < RECOVERY_WINDOW {
            continue;
        }
        let window = &timeline[i + 1 - RECOVERY_WINDOW..=i];
        if window.iter().any(|w| f64::from(w.second) < ended.floor()) {
            continue;
        }
        let rate_ok = match (success_rate(window), steady) {
            (Some(rate), Some(steady)) => rate >= steady - RECOVERY_TOLERANCE,
            (None, _) | (_, None) => true,
        };
        if rate_ok && p.queue_depth <= depth_before {
            return Some(at.max(ended));
        }
    }
    None
}

/// What a fired disruption's recovery is measured against: when it fired
/// and was over, the steady state's success rate (before the first
/// disruption) and the queue depth before it.
struct Bar {
    fired: f64,
    ended: f64,
    steady: Option<f64>,
    depth_before: i64,
}

/// Each result's [`Bar`], in order; None for one that did not fire.
fn bars(results: &[DisruptionResult], timeline: &[TimelinePoint]) -> Vec<Option<Bar>> {
    let first = results
        .iter()
        .filter_map(|d| d.fired_at_seconds)
        .min_by(|a, b| a.total_cmp(b));
    let steady = first.and_then(|first| steady_state(timeline, first).0);
    results
        .iter()
        .map(|d| {
            let fired = d.fired_at_seconds?;
            Some(Bar {
                fired,
                ended: d.ended_at_seconds.unwrap_or(fired).max(fired),
                steady,
                depth_before: steady_state(timeline, fired).1,
            })
        })
        .collect()
}

/// Fill in each fired disruption's recovery from the run's timeline.
pub fn measure_recovery(results: &mut [DisruptionResult], timeline: &[TimelinePoint]) {
    let bars = bars(results, timeline);
    for (d, bar) in results.iter_mut().zip(bars) {
        let Some(bar) = bar else { continue };
        d.recovered_at_seconds = recovery_at(timeline, bar.ended, bar.steady, bar.depth_before);
        d.recovery_seconds = d
            .recovered_at_seconds
            .map(|at| ((at - bar.ended) * 10.0).round() / 10.0);
    }
}

/// How each fired disruption's recovery was measured, one line each: when
/// it fired and was over, the steady state it had to come back to, when it
/// did, and the timeline from the second before it fired (sent/paid/queue
/// depth per second). For logs and test failures: a recovery figure says
/// what, this says why.
pub fn recovery_account(results: &[DisruptionResult], timeline: &[TimelinePoint]) -> Vec<String> {
    results
        .iter()
        .zip(bars(results, timeline))
        .filter_map(|(d, bar)| {
            let Bar {
                fired,
                ended,
                steady,
                depth_before,
            } = bar?;
            let steady = steady.map_or("none (nothing sent)".to_string(), |s| {
                format!("{s:.3} (>= {:.3} again)", s - RECOVERY_TOLERANCE)
            });
            let recovered = match (d.recovered_at_seconds, d.recovery_seconds) {
                (Some(at), Some(r)) => format!("recovered at {at:.1} s ({r:.1} s after)"),
                _ => format!(
                    "never recovered: no {RECOVERY_WINDOW} s window from {:.0} s with both",
                    ended.floor()
                ),
            };
            let seconds: Vec<String> = timeline
                .iter()
                .filter(|p| f64::from(p.second) + 1.0 >= fired.floor())
                .map(|p| format!("{}:{}/{}/{}", p.second, p.sent, p.paid, p.queue_depth))
                .collect();
            Some(format!(
                "{} ({}): fired {fired:.1} s, over {ended:.1} s; steady success {steady}, queue depth before {depth_before} (<= again); {recovered}; per second (sent/paid/depth) {}",
                d.name,
                d.action.as_str(),
                seconds.join(" ")
            ))
        })
        .collect()
}

/// The repeats of one variant as one list: per disruption, the run that
/// recovered slowest (never recovering, or never firing, is slowest).
pub fn merge(runs: &[&[DisruptionResult]]) -> Vec<DisruptionResult> {
    let Some(first) = runs.first() else { return Vec::new() };
    let badness = |d: &DisruptionResult| match (d.fired_at_seconds, d.recovery_seconds) {
        (None, _) => f64::INFINITY,
        (Some(_), None) => f64::MAX,
        (Some(_), Some(r)) => r,
    };
    first
        .iter()
        .map(|d| {
            runs.iter()
                .filter_map(|run| run.iter().find(|e| e.name == d.name))
                .max_by(|a, b| badness(a).total_cmp(&badness(b)))
                .cloned()
                .unwrap_or_else(|| d.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, at: u32, action: DisruptionAction) -> DisruptionSpec {
        DisruptionSpec {
            name: name.into(),
            at_seconds: at,
            action,
            fraction: None,
            added_ms: None,
            duration_seconds: None,
        }
    }

    fn problems(list: &[DisruptionSpec], load: u64, external: bool) -> Vec<(String, String)> {
        let mut p = Problems::default();
        check_disruptions(list, load, external, &mut p);
        p.0.into_iter().map(|e| (e.path, e.message)).collect()
    }

    #[test]
    fn each_rule_names_its_field() {
        let mut slow = spec("slow", 10, DisruptionAction::DatabaseLatency);
        slow.duration_seconds = Some(10);
        let mut cut = spec("cut", 15, DisruptionAction::DatabaseOutage);
        cut.duration_seconds = Some(5);
        let late = spec("late", 60, DisruptionAction::KillOrderService);
        let mut restart = spec("slow", 5, DisruptionAction::RestartDatabase);
        restart.fraction = Some(0.5);
        let got = problems(&[slow, cut, late, restart], 60, true);
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.disruptions[0].addedMs",
                "spec.disruptions[0].action",
                "spec.disruptions[1].action",
                "spec.disruptions[2].atSeconds",
                "spec.disruptions[3].name",
                "spec.disruptions[3].fraction",
                "spec.disruptions[3].action",
                "spec.disruptions[1].atSeconds",
            ],
            "{got:?}"
        );
        assert!(got[7].1.contains("overlaps spec.disruptions[0]"), "{}", got[7].1);
        assert!(got[6].1.contains("external"), "{}", got[6].1);
    }

    #[test]
    fn windows_must_end_within_the_load_and_instants_take_no_duration() {
        let mut cut = spec("cut", 50, DisruptionAction::DatabaseOutage);
        cut.duration_seconds = Some(20);
        let mut kill = spec("kill", 5, DisruptionAction::KillWorkers);
        kill.duration_seconds = Some(3);
        let got = problems(&[cut, kill], 60, false);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].1.contains("50 + 20 = 70"), "{}", got[0].1);
        assert_eq!(got[1].0, "spec.disruptions[1].durationSeconds");
        let mut ok = spec("ok", 0, DisruptionAction::KillWorkers);
        ok.fraction = Some(0.5);
        assert!(problems(&[ok], 60, true).is_empty());
        let mut slow = spec("slow", 1, DisruptionAction::DatabaseLatency);
        (slow.added_ms, slow.duration_seconds) = (Some(50), Some(5));
        assert!(problems(std::slice::from_ref(&slow), 60, false).is_empty());
        let got = problems(&[slow], 60, true);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "spec.disruptions[0].action");
        assert!(got[0].1.contains("spec.database.external"), "{}", got[0].1);
    }

    #[test]
    fn victims_are_rounded_up_and_at_least_one() {
        let mut plan = PlannedDisruption::of(&spec("k", 1, DisruptionAction::KillWorkers), 1.0);
        plan.fraction = 0.5;
        assert_eq!((plan.victims(1), plan.victims(3), plan.victims(4)), (1, 2, 2));
        plan.fraction = 0.01;
        assert_eq!(plan.victims(5), 1);
        plan.fraction = 1.0;
        assert_eq!((plan.victims(5), plan.victims(0)), (5, 0));
    }

    #[test]
    fn the_plan_is_scaled() {
        let mut d = spec("cut", 20, DisruptionAction::DatabaseOutage);
        d.duration_seconds = Some(8);
        let plan = PlannedDisruption::of(&d, 0.25);
        assert_eq!(
            (plan.at, plan.duration),
            (Duration::from_secs(5), Duration::from_secs(2))
        );
        let back: PlannedDisruption = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
        assert_eq!(back, plan);
    }

    fn point(second: u32, sent: u64, paid: u64, depth: i64) -> TimelinePoint {
        TimelinePoint {
            second,
            sent,
            paid,
            queue_depth: depth,
            ..TimelinePoint::default()
        }
    }

    #[test]
    fn recovery_waits_for_the_rate_and_the_queue() {
        // steady: 10 sent, 10 paid, depth <= 3; a crash at 5 s: nothing paid
        // until 8 s, then a burst that drains the queue by 10 s
        let mut t: Vec<TimelinePoint> = (0..5).map(|s| point(s, 10, 10, 3)).collect();
        t.extend([
            point(5, 10, 0, 13),
            point(6, 10, 0, 23),
            point(7, 10, 0, 33),
            point(8, 10, 20, 23),
            point(9, 10, 20, 13),
            point(10, 10, 20, 3),
            point(11, 10, 10, 3),
        ]);
        let mut results = vec![DisruptionResult {
            fired_at_seconds: Some(5.2),
            hit: vec!["pid 1".into()],
            ..PlannedDisruption::of(&spec("k", 5, DisruptionAction::KillWorkers), 1.0).unfired()
        }];
        measure_recovery(&mut results, &t);
        assert_eq!(results[0].recovered_at_seconds, Some(11.0), "{results:?}");
        assert_eq!(results[0].recovery_seconds, Some(5.8));
        assert_eq!(results[0].inconclusive_reason(), None);
        // and why: the steady state, the depth, the seconds from the one before
        let account = recovery_account(&results, &t);
        assert_eq!(account.len(), 1, "{account:?}");
        for part in [
            "k (KillWorkers): fired 5.2 s, over 5.2 s",
            "steady success 1.000 (>= 0.950 again), queue depth before 3",
            "recovered at 11.0 s (5.8 s after)",
            "(sent/paid/depth) 4:10/10/3 5:10/0/13 ",
            " 11:10/10/3",
        ] {
            assert!(account[0].contains(part), "{part:?} not in {}", account[0]);
        }

        // the queue never comes back under its depth before: never recovered
        for p in &mut t[8..] {
            p.queue_depth = 30;
        }
        measure_recovery(&mut results, &t);
        assert_eq!(
            (results[0].recovered_at_seconds, results[0].recovery_seconds),
            (None, None)
        );
        let account = recovery_account(&results, &t);
        assert!(
            account[0].contains("never recovered: no 3 s window from 5 s"),
            "{account:?}"
        );
    }

    #[test]
    fn a_slow_start_does_not_raise_the_steady_state_above_everything_paid() {
        // second 0 paid nothing (workers still starting), second 1 paid its
        // orders too: 70 paid of 50 sent before the disruption; after it
        // every order is paid again, the queue as before
        let mut t = vec![point(0, 10, 0, 10), point(1, 10, 30, 3)];
        t.extend((2..5).map(|s| point(s, 10, 10, 3)));
        t.extend([point(5, 10, 0, 13), point(6, 10, 20, 3)]);
        t.extend((7..12).map(|s| point(s, 10, 10, 3)));
        assert_eq!(steady_state(&t, 5.0).0, Some(1.0));
        let mut results = vec![DisruptionResult {
            fired_at_seconds: Some(5.0),
            ended_at_seconds: Some(5.5),
            hit: vec!["pid 1".into()],
            ..PlannedDisruption::of(&spec("k", 5, DisruptionAction::KillWorkers), 1.0).unfired()
        }];
        measure_recovery(&mut results, &t);
        assert_eq!(results[0].recovered_at_seconds, Some(8.0), "{results:?}");
    }

    #[test]
    fn a_disruption_that_did_not_fire_or_hit_nothing_is_a_reason() {
        let plan = PlannedDisruption::of(&spec("k", 5, DisruptionAction::KillWorkers), 1.0);
        assert!(plan.unfired().inconclusive_reason().unwrap().contains("did not fire"));
        let hit_nothing = DisruptionResult {
            fired_at_seconds: Some(5.0),
            ..plan.unfired()
        };
        assert!(hit_nothing.inconclusive_reason().unwrap().contains("hit nothing"));
    }

    #[test]
    fn merged_repeats_keep_the_slowest_recovery() {
        let plan = PlannedDisruption::of(&spec("k", 5, DisruptionAction::KillWorkers), 1.0);
        let run = |r: Option<f64>| {
            vec![DisruptionResult {
                fired_at_seconds: Some(5.0),
                hit: vec!["x".into()],
                recovery_seconds: r,
                ..plan.unfired()
            }]
        };
        let (a, b, c) = (run(Some(2.0)), run(Some(7.0)), run(None));
        assert_eq!(merge(&[&a, &b])[0].recovery_seconds, Some(7.0));
        assert_eq!(merge(&[&a, &c, &b])[0].recovery_seconds, None);
    }
}

use super::*;
use crate::crd::CleanupPolicy;
use relab_model::status::get_condition;

fn spec(extra: &str) -> ValidatedExperiment {
    ValidatedExperiment::from_manifest(&format!(
        "apiVersion: relab.dev/v1alpha1\nkind: ReliabilityExperiment\nmetadata: {{name: t}}\nspec:\n  load: {{ratePerSecond: 10, durationSeconds: 30}}\n  objectives: {{successRatio: 0.9}}\n{extra}"
    ))
    .unwrap()
    .0
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

fn seen(at: i64, loadgen: Loadgen) -> Observed {
    Observed {
        now: t(at),
        loadgen,
        progress: None,
        load: None,
    }
}

/// The load generator's own account: `stage`, `secs` into the load.
fn load(stage: lab_service::run::RunStage, secs: f64) -> Option<lab_service::run::RunProgress> {
    Some(lab_service::run::RunProgress {
        stage,
        elapsed: std::time::Duration::from_secs_f64(secs),
        ..Default::default()
    })
}

fn results(success_ratio: f64) -> RunResults {
    let mut r = RunResults {
        success_ratio,
        ..RunResults::default()
    };
    r.orders.accepted = 300;
    r.orders.sent = 300;
    r.drained = true;
    r
}

fn terminated(r: &RunResults) -> Loadgen {
    Loadgen::Terminated {
        exit_code: 0,
        reason: Some("Completed".into()),
        message: Some(lab_service::run::termination_message(r)),
    }
}

#[test]
fn a_run_walks_every_phase_with_an_event_each() {
    let spec = spec("");
    let (s, notes) = start(&spec, &Default::default(), 1, t(0));
    assert_eq!((s.phase, s.observed_generation), (Phase::Pending, Some(1)));
    assert_eq!(notes[0].reason, "RunStarted");
    let (s, notes) = step(&spec, &s, 1, &seen(1, Loadgen::Missing));
    assert_eq!(s.phase, Phase::Provisioning);
    assert_eq!(notes[0].reason, "Provisioning");
    let (s2, notes) = step(&spec, &s, 1, &seen(2, Loadgen::Missing));
    assert_eq!(s2, s, "nothing new seen: nothing changes");
    assert!(notes.is_empty());
    use lab_service::run::RunStage;
    let running = Loadgen::Running { started_at: t(5) };
    let (s, notes) = step(&spec, &s, 1, &seen(6, running.clone()));
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(notes[0].reason, "Running");
    assert_eq!(s.start_time.as_deref(), Some(timestamp(t(5)).as_str()));
    // the lab's pods are still starting: far past the load's length by the
    // clock, but the load generator has not begun, so no Draining
    let waiting = Observed {
        load: load(RunStage::Starting, 0.0),
        ..seen(90, running.clone())
    };
    let (s, notes) = step(&spec, &s, 1, &waiting);
    assert_eq!(s.phase, Phase::Running, "{notes:?}");
    assert_eq!(s.progress.as_ref().unwrap().elapsed_seconds, 0.0);
    assert!(get_condition(&s.conditions, "Ready")
        .unwrap()
        .message
        .contains("waits for the lab"));
    let loading = Observed {
        load: load(RunStage::Load, 12.5),
        ..seen(103, running.clone())
    };
    let (s, _) = step(&spec, &s, 1, &loading);
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(s.progress.as_ref().unwrap().elapsed_seconds, 12.5);
    // unreadable for a moment: the last figure stays, the phase too
    let (s, _) = step(&spec, &s, 1, &seen(200, running.clone()));
    assert_eq!(
        (s.phase, s.progress.as_ref().unwrap().elapsed_seconds),
        (Phase::Running, 12.5)
    );
    let drained = Observed {
        load: load(RunStage::Drain, 30.2),
        ..seen(121, running)
    };
    let (s, notes) = step(&spec, &s, 1, &drained);
    assert_eq!(s.phase, Phase::Draining);
    assert_eq!(notes[0].reason, "Draining");
    assert!(notes[0].message.contains("after 30.2 s"), "{notes:?}");
    let (s, notes) = step(&spec, &s, 1, &seen(40, terminated(&results(0.95))));
    assert_eq!(s.phase, Phase::Succeeded);
    let reasons: Vec<_> = notes.iter().map(|n| n.reason.as_str()).collect();
    assert_eq!(reasons, ["Analyzing", "Succeeded"]);
    assert_eq!(s.verdict.as_ref().unwrap().result, VerdictResult::Passed);
    assert_eq!(s.results.as_ref().unwrap().success_ratio, 0.95);
    assert_eq!(get_condition(&s.conditions, "ObjectivesMet").unwrap().status, "True");
    assert_eq!(get_condition(&s.conditions, "Completed").unwrap().status, "True");
}

#[test]
fn objectives_not_met_fail_the_run() {
    let spec = spec("");
    let (s, _) = start(&spec, &Default::default(), 1, t(0));
    let (s, _) = step(&spec, &s, 1, &seen(40, terminated(&results(0.5))));
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(s.verdict.as_ref().unwrap().result, VerdictResult::Failed);
    let c = get_condition(&s.conditions, "ObjectivesMet").unwrap();
    assert_eq!((c.status.as_str(), c.observed_generation), ("False", Some(1)));
}

#[test]
fn a_crashed_or_unreadable_load_generator_fails_the_run_with_the_reason() {
    let spec = spec("");
    let (s, _) = start(&spec, &Default::default(), 2, t(0));
    let crashed = Loadgen::Terminated {
        exit_code: 1,
        reason: Some("Error".into()),
        message: Some("Error: the order API at http://10.0.0.3:8080/readyz was not ready within 300s".into()),
    };
    let (f, notes) = step(&spec, &s, 2, &seen(9, crashed));
    assert_eq!(f.phase, Phase::Failed);
    assert!(notes[notes.len() - 1].warning);
    let c = get_condition(&f.conditions, "Completed").unwrap();
    assert!(
        c.message.contains("exited with code 1") && c.message.contains("not ready"),
        "{}",
        c.message
    );
    let garbled = Loadgen::Terminated {
        exit_code: 0,
        reason: None,
        message: Some("{not json".into()),
    };
    let (f, _) = step(&spec, &s, 2, &seen(9, garbled));
    assert_eq!(
        get_condition(&f.conditions, "Completed").unwrap().reason,
        "UnreadableResults"
    );
    let deadline = Loadgen::JobFailed {
        reason: "DeadlineExceeded".into(),
        message: "Job was active longer than specified deadline".into(),
    };
    let (f, _) = step(&spec, &s, 2, &seen(9, deadline));
    assert_eq!(f.phase, Phase::Failed);
    assert!(f.results.is_none());
}

#[test]
fn a_new_run_keeps_the_finished_one_in_history_newest_first_and_bounded() {
    let spec = spec("");
    let mut s = ReliabilityExperimentStatus::default();
    for gen in 1..=7 {
        let (next, _) = start(&spec, &s, gen, t(gen * 100));
        let (done, _) = step(
            &spec,
            &next,
            gen,
            &seen(gen * 100 + 50, terminated(&results(0.9 + gen as f64 / 100.0))),
        );
        s = done;
    }
    assert_eq!(s.history.len(), HISTORY_LIMIT);
    assert_eq!(s.history[0].generation, Some(6));
    assert!((s.history[0].success_ratio - 0.96).abs() < 1e-9);
    assert_eq!(s.observed_generation, Some(7));
    let (next, notes) = start(&spec, &s, 8, t(900));
    assert!(next.results.is_none() && next.verdict.is_none());
    assert_eq!(next.history[0].generation, Some(7));
    assert!(notes[0].message.contains("generation 7 -> 8"), "{}", notes[0].message);
}

#[test]
fn invalid_specs_say_every_path_once() {
    let problems = vec![
        FieldError {
            path: "spec.load.durationSeconds".into(),
            message: "is required".into(),
        },
        FieldError {
            path: "spec.orderService.retry.maxBackoffMs".into(),
            message: "must be >= initialBackoffMs".into(),
        },
    ];
    let (s, notes) = invalid(&Default::default(), 4, &problems, t(0));
    let c = get_condition(&s.conditions, "Valid").unwrap();
    assert_eq!((c.status.as_str(), c.observed_generation), ("False", Some(4)));
    assert!(c.message.contains("spec.load.durationSeconds") && c.message.contains("maxBackoffMs"));
    assert_eq!(notes.len(), 1);
    let (again, notes) = invalid(&s, 4, &problems, t(60));
    assert_eq!(again, s);
    assert!(notes.is_empty(), "no event storm on resync");
}

#[test]
fn cleanup_follows_the_ttl_and_the_policy() {
    let mut status = ReliabilityExperimentStatus {
        phase: Phase::Failed,
        finish_time: Some(timestamp(t(100))),
        ..Default::default()
    };
    assert_eq!(cleanup_due(&spec(""), &status), None, "no TTL: kept");
    let sp = spec("  ttlSecondsAfterFinished: 30\n");
    assert_eq!(cleanup_due(&sp, &status), Some(t(130)));
    let sp = spec("  ttlSecondsAfterFinished: 30\n  cleanupPolicy: RetainOnFailure\n");
    assert_eq!(sp.spec().cleanup_policy, CleanupPolicy::RetainOnFailure);
    assert_eq!(cleanup_due(&sp, &status), None, "failed run retained");
    status.phase = Phase::Succeeded;
    assert_eq!(cleanup_due(&sp, &status), Some(t(130)));
    status.phase = Phase::Running;
    assert_eq!(cleanup_due(&sp, &status), None);
}

#[test]
fn the_baseline_gate_compares_with_the_last_passed_run_in_the_history() {
    let spec = spec("  baseline: {maxRegression: {successRatio: 0.01}}\n");
    let passed_before = |ratio: f64, verdict: VerdictResult| RunSummary {
        generation: Some(1),
        verdict,
        success_ratio: ratio,
        ..RunSummary::default()
    };
    let history = vec![
        passed_before(0.80, VerdictResult::Failed),
        passed_before(0.99, VerdictResult::Passed),
    ];
    let (mut s, _) = start(&spec, &Default::default(), 2, t(0));
    s.history = history;
    // 0.95 meets the 0.9 objective, but lost 4 points against generation 1's 0.99
    let (s, _) = step(&spec, &s, 2, &seen(40, terminated(&results(0.95))));
    let b = s.baseline.as_ref().expect("gated");
    assert_eq!(b.baseline, "generation 1");
    assert_eq!(b.result, VerdictResult::Failed);
    assert!(
        b.figures[0].message.contains("0.9500 vs 0.9900 in generation 1"),
        "{b:?}"
    );
    assert_eq!(s.phase, Phase::Failed);
    assert!(s
        .verdict
        .as_ref()
        .unwrap()
        .objectives
        .iter()
        .any(|o| o.name == "baseline.successRatio" && !o.passed));
    // without an earlier Passed run there is nothing to regress from
    let (first, _) = start(&spec, &Default::default(), 1, t(0));
    let (s, _) = step(&spec, &first, 1, &seen(40, terminated(&results(0.95))));
    assert_eq!(s.phase, Phase::Succeeded);
    assert!(s.baseline.as_ref().unwrap().baseline.starts_with("none"));
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A run of the scheduled status `s` played to its end at `now`.
fn finish_run(
    spec: &ValidatedExperiment,
    s: &ReliabilityExperimentStatus,
    now: DateTime<Utc>,
) -> ReliabilityExperimentStatus {
    let running = Loadgen::Running { started_at: now };
    let (s, _) = step(
        spec,
        s,
        1,
        &Observed {
            now,
            ..seen(0, running)
        },
    );
    let (s, _) = step(
        spec,
        &s,
        1,
        &Observed {
            now,
            ..seen(0, terminated(&results(0.95)))
        },
    );
    assert!(s.phase.is_finished());
    s
}

#[test]
fn a_schedule_starts_one_run_per_tick_keeps_history_and_skips_ticks_during_a_run() {
    let spec = spec("  schedule: {cron: \"0 3 * * *\", startingDeadlineSeconds: 60}");
    let (s, notes) = new_generation(&spec, &Default::default(), 1, at("2026-12-04T12:00:00Z"));
    assert_eq!((s.phase, s.scheduled_run), (Phase::Pending, None));
    assert_eq!(s.next_run_time.as_deref(), Some("2026-12-05T03:00:00Z"));
    assert_eq!(notes[0].reason, "Scheduled");
    assert!(schedule::awaiting(&s));
    // before the tick: nothing
    let (s, notes, fired) = schedule::tick(&spec, &s, 1, at("2026-12-05T02:59:59Z"));
    assert!(!fired && notes.is_empty());
    // the tick: run 1
    let (s, notes, fired) = schedule::tick(&spec, &s, 1, at("2026-12-05T03:00:02Z"));
    assert!(fired);
    assert_eq!(notes[0].reason, "RunStarted");
    assert_eq!(
        (s.scheduled_run, s.last_schedule_time.as_deref()),
        (Some(1), Some("2026-12-05T03:00:00Z"))
    );
    assert_eq!(s.next_run_time.as_deref(), Some("2026-12-06T03:00:00Z"));
    // the same instant again (a restart before anything else changed): no second start
    let (again, notes, fired) = schedule::tick(&spec, &s, 1, at("2026-12-05T03:00:02Z"));
    assert!(!fired && notes.is_empty());
    assert_eq!(again, s);
    // still running at the next tick: skipped
    let running = step(
        &spec,
        &s,
        1,
        &Observed {
            now: at("2026-12-05T03:00:10Z"),
            ..seen(
                0,
                Loadgen::Running {
                    started_at: at("2026-12-05T03:00:05Z"),
                },
            )
        },
    )
    .0;
    let (s, notes, fired) = schedule::tick(&spec, &running, 1, at("2026-12-06T03:00:01Z"));
    assert!(!fired);
    assert_eq!(notes[0].reason, "ScheduleSkipped");
    assert_eq!((s.scheduled_run, s.phase), (Some(1), Phase::Running));
    assert_eq!(s.next_run_time.as_deref(), Some("2026-12-07T03:00:00Z"));
    // finished; ticks 3 and 4 make runs 2 and 3, each finished run in the history
    let s = finish_run(&spec, &s, at("2026-12-06T04:00:00Z"));
    let (s, _, fired) = schedule::tick(&spec, &s, 1, at("2026-12-07T03:00:30Z"));
    assert!(fired && s.scheduled_run == Some(2) && s.history.len() == 1);
    assert_eq!(s.history[0].scheduled_run, Some(1));
    let s = finish_run(&spec, &s, at("2026-12-07T04:00:00Z"));
    // down past the deadline at tick 4: missed, not caught up
    let (s, notes, fired) = schedule::tick(&spec, &s, 1, at("2026-12-08T03:05:00Z"));
    assert!(!fired);
    assert_eq!(notes[0].reason, "ScheduleMissed");
    assert_eq!(s.next_run_time.as_deref(), Some("2026-12-09T03:00:00Z"));
    let (s, _, fired) = schedule::tick(&spec, &s, 1, at("2026-12-09T03:00:00Z"));
    assert!(fired);
    assert_eq!((s.scheduled_run, s.history.len()), (Some(3), 2));
    assert_eq!(
        s.history.iter().map(|h| h.scheduled_run).collect::<Vec<_>>(),
        [Some(2), Some(1)],
        "newest first"
    );
}

#[test]
fn a_suspended_schedule_has_no_next_run_and_never_fires() {
    let spec = spec("  schedule: {cron: \"*/5 * * * *\", suspend: true}");
    let (s, _) = new_generation(&spec, &Default::default(), 1, at("2026-12-04T12:00:00Z"));
    assert_eq!(s.next_run_time, None);
    assert_eq!(
        get_condition(&s.conditions, "Scheduled").unwrap().reason,
        "ScheduleSuspended"
    );
    for minutes in [5, 60, 60 * 24] {
        let now = at("2026-12-04T12:00:00Z") + chrono::Duration::minutes(minutes);
        let (next, _, fired) = schedule::tick(&spec, &s, 1, now);
        assert!(!fired && next.next_run_time.is_none());
    }
}

/// The load generator's progress with the record of `spec`'s disruptions:
/// `fired` names those fired (at their time), `failed` those reported failed.
fn load_with(
    spec: &ValidatedExperiment,
    stage: lab_service::run::RunStage,
    secs: f64,
    fired: &[&str],
    failed: &[&str],
) -> lab_service::run::RunProgress {
    let disruptions = spec
        .disruptions()
        .iter()
        .map(|p| {
            let mut d = p.unfired();
            if fired.contains(&p.name.as_str()) {
                d.fired_at_seconds = Some(d.at_seconds + 0.25);
                d.hit = vec!["drill-r1-order-service-abc".into()];
            }
            if failed.contains(&p.name.as_str()) {
                d.error = Some("no order-service pod to kill".into());
            }
            d
        })
        .collect();
    lab_service::run::RunProgress {
        disruptions,
        ..load(stage, secs).unwrap()
    }
}

const DISRUPTIONS: &str = "  disruptions:\n    - {name: crash-workers, atSeconds: 10, action: KillWorkers, fraction: 0.5}\n    - {name: db-restart, atSeconds: 12, action: RestartDatabase}\n    - {name: crash-api, atSeconds: 15, action: KillOrderService}\n";

#[test]
fn a_kill_is_due_once_its_time_has_come_by_the_load_generators_clock_and_only_until_it_is_recorded() {
    use disruptions::{due_kills, next_kill_in};
    use lab_service::run::RunStage;
    use std::time::Duration;
    let spec = spec(DISRUPTIONS);
    let plan = spec.disruptions();
    let names =
        |due: Vec<relab_model::disruptions::PlannedDisruption>| due.into_iter().map(|p| p.name).collect::<Vec<_>>();
    // before the load, and before its time: nothing; the next in 1 s at least, then by the clock
    assert!(due_kills(&plan, &load_with(&spec, RunStage::Starting, 0.0, &[], &[])).is_empty());
    assert_eq!(
        next_kill_in(&plan, &load_with(&spec, RunStage::Starting, 0.0, &[], &[])),
        Some(Duration::from_secs(10))
    );
    let early = load_with(&spec, RunStage::Load, 9.5, &[], &[]);
    assert!(due_kills(&plan, &early).is_empty());
    assert_eq!(next_kill_in(&plan, &early), Some(Duration::from_millis(500)));
    // its time: the kill (never the restart: the load generator's own)
    assert_eq!(
        names(due_kills(&plan, &load_with(&spec, RunStage::Load, 10.0, &[], &[]))),
        ["crash-workers"]
    );
    assert_eq!(
        names(due_kills(&plan, &load_with(&spec, RunStage::Load, 16.0, &[], &[]))),
        ["crash-workers", "crash-api"]
    );
    // recorded fired or failed: no longer due
    let after = load_with(&spec, RunStage::Load, 16.0, &["crash-workers"], &["crash-api"]);
    assert!(due_kills(&plan, &after).is_empty());
    assert_eq!(next_kill_in(&plan, &after), None);
    // the load is over: nothing fires any more
    assert!(due_kills(&plan, &load_with(&spec, RunStage::Drain, 30.0, &[], &[])).is_empty());
    // a disruption the load generator does not know of is never fired
    assert!(due_kills(&plan, &load(RunStage::Load, 20.0).unwrap()).is_empty());
}

#[test]
fn a_kill_takes_a_fraction_of_the_pods_rounded_up_or_all_of_them() {
    use disruptions::victims;
    let spec = spec(DISRUPTIONS);
    let plan = spec.disruptions();
    let pods = |n: usize| (0..n).rev().map(|i| format!("pod-{i}")).collect::<Vec<_>>();
    assert_eq!(
        victims(&plan[0], pods(3)),
        ["pod-0", "pod-1"],
        "half of 3, rounded up, in name order"
    );
    assert_eq!(victims(&plan[0], pods(1)), ["pod-0"], "at least one");
    assert!(victims(&plan[0], Vec::new()).is_empty());
    assert_eq!(
        victims(&plan[2], pods(3)),
        ["pod-0", "pod-1", "pod-2"],
        "KillOrderService: all"
    );
}

#[test]
fn with_worker_pods_of_their_own_kill_workers_takes_only_them_and_kill_order_service_both() {
    use crate::controller::build::{ORDER_SERVICE, WORKERS};
    use disruptions::kill_components;
    use relab_model::disruptions::DisruptionAction::{KillOrderService, KillWorkers};
    // today's layout: the order-service pods run the workers
    assert_eq!(kill_components(KillWorkers, false), [ORDER_SERVICE]);
    assert_eq!(kill_components(KillOrderService, false), [ORDER_SERVICE]);
    // workerReplicas: the workers are pods of their own
    assert_eq!(kill_components(KillWorkers, true), [WORKERS]);
    assert_eq!(kill_components(KillOrderService, true), [ORDER_SERVICE, WORKERS]);
}

#[test]
fn each_disruption_gets_one_event_the_first_time_it_shows_fired() {
    use lab_service::run::RunStage;
    let spec = spec(DISRUPTIONS);
    let running = Loadgen::Running { started_at: t(5) };
    let (s, _) = start(&spec, &Default::default(), 1, t(0));
    let at = |secs: f64, fired: &[&str]| Observed {
        load: Some(load_with(&spec, RunStage::Load, secs, fired, &[])),
        ..seen(6 + secs as i64, running.clone())
    };
    let fired = |notes: &[Note]| {
        notes
            .iter()
            .filter(|n| n.reason == "DisruptionFired")
            .map(|n| n.message.clone())
            .collect::<Vec<_>>()
    };
    let (s, notes) = step(&spec, &s, 1, &at(9.0, &[]));
    assert!(fired(&notes).is_empty());
    // the kill (the operator's) and the restart (the load generator's) alike
    let (s, notes) = step(&spec, &s, 1, &at(13.0, &["crash-workers", "db-restart"]));
    let messages = fired(&notes);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("crash-workers (KillWorkers)") && messages[0].contains("drill-r1-order-service-abc"));
    assert!(messages[1].contains("db-restart (RestartDatabase)"));
    // seen again: no second Event; the next one gets its own
    let (s, notes) = step(&spec, &s, 1, &at(14.0, &["crash-workers", "db-restart"]));
    assert!(fired(&notes).is_empty());
    let (_, notes) = step(&spec, &s, 1, &at(16.0, &["crash-workers", "db-restart", "crash-api"]));
    assert_eq!(fired(&notes).len(), 1);
    assert!(fired(&notes)[0].contains("crash-api (KillOrderService)"));
}

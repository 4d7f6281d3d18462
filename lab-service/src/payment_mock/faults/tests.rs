//! Unit tests of the fault model: seeded decisions, rates, phases, validation.

use super::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn mixed_spec() -> FaultSpec {
    FaultSpec {
        decline_rate: 0.10,
        failure_rate: 0.20,
        rate_limit_rate: 0.05,
        timeout_rate: 0.05,
        lost_response_rate: 0.10,
        latency: LatencySpec {
            base_ms: 5,
            jitter_ms: 10,
            tail_rate: 0.1,
            tail_ms: 100,
        },
        ..FaultSpec::default()
    }
}

fn decisions(seed: u64, n: usize) -> Vec<Decision> {
    let spec = mixed_spec();
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| decide(&spec, &mut rng)).collect()
}

fn fields(result: Result<(), Vec<FieldError>>) -> Vec<String> {
    result
        .expect_err("expected validation errors")
        .into_iter()
        .map(|e| e.field)
        .collect()
}

fn phase(name: &str, start_ms: u64, end_ms: Option<u64>) -> FaultPhase {
    FaultPhase {
        name: name.to_string(),
        start_ms,
        end_ms,
        faults: FaultSpec::default(),
    }
}

#[test]
fn same_seed_gives_the_same_decision_sequence() {
    assert_eq!(decisions(7, 1_000), decisions(7, 1_000));
}

#[test]
fn different_seeds_give_different_decision_sequences() {
    assert_ne!(decisions(7, 1_000), decisions(8, 1_000));
}

#[test]
fn observed_rates_match_the_configured_rates() {
    let n = 20_000;
    let all = decisions(42, n);
    let share = |pred: fn(&Decision) -> bool| all.iter().filter(|d| pred(d)).count() as f64 / n as f64;
    let close = |observed: f64, expected: f64, what: &str| {
        assert!(
            (observed - expected).abs() < 0.02,
            "{what}: observed {observed}, configured {expected}"
        );
    };
    close(share(|d| matches!(d, Decision::Declined { .. })), 0.10, "declined");
    close(share(|d| matches!(d, Decision::Failure { .. })), 0.20, "failure");
    close(
        share(|d| matches!(d, Decision::RateLimited { .. })),
        0.05,
        "rate limited",
    );
    close(share(|d| matches!(d, Decision::Timeout { .. })), 0.05, "timeout");
    close(
        share(|d| matches!(d, Decision::LostResponse { .. })),
        0.10,
        "lost response",
    );
    close(share(|d| matches!(d, Decision::Success { .. })), 0.50, "success");

    let failures: Vec<u16> = all
        .iter()
        .filter_map(|d| match d {
            Decision::Failure { status, .. } => Some(*status),
            _ => None,
        })
        .collect();
    let share_500 = failures.iter().filter(|s| **s == 500).count() as f64 / failures.len() as f64;
    assert!(failures.iter().all(|s| *s == 500 || *s == 503));
    close(share_500, 0.5, "status 500 among failures");
}

#[test]
fn latency_is_base_plus_jitter_plus_an_occasional_tail() {
    let all = decisions(3, 20_000);
    let delays: Vec<u64> = all
        .iter()
        .filter_map(|d| match d {
            Decision::Success { delay }
            | Decision::Declined { delay }
            | Decision::Failure { delay, .. }
            | Decision::RateLimited { delay, .. } => Some(delay.as_millis() as u64),
            Decision::Timeout { .. } | Decision::LostResponse { .. } => None,
        })
        .collect();
    assert!(delays.iter().all(|d| (5..=15).contains(d) || (105..=115).contains(d)));
    assert!(delays.contains(&5) && delays.contains(&15), "jitter covers 0..=10");
    let tail = delays.iter().filter(|d| **d >= 105).count() as f64 / delays.len() as f64;
    assert!((tail - 0.1).abs() < 0.02, "tail share {tail}");
}

#[test]
fn hangs_use_hang_ms_and_extreme_rates_are_absolute() {
    let mut rng = StdRng::seed_from_u64(1);
    let spec = FaultSpec {
        lost_response_rate: 1.0,
        hang_ms: 300,
        ..FaultSpec::default()
    };
    for _ in 0..100 {
        assert_eq!(
            decide(&spec, &mut rng),
            Decision::LostResponse {
                hang: Duration::from_millis(300)
            }
        );
    }
    let healthy = FaultSpec::default();
    for _ in 0..100 {
        assert_eq!(decide(&healthy, &mut rng), Decision::Success { delay: Duration::ZERO });
    }
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
fn the_active_spec_is_the_phase_faults_else_base() {
    let mut outage = phase("outage", 0, Some(200));
    outage.faults.failure_rate = 1.0;
    outage.faults.failure_statuses = vec![503];
    let plan = FaultPlan {
        schedule: vec![outage],
        ..FaultPlan::default()
    };
    assert_eq!(plan.active_spec(Duration::from_millis(10)).failure_rate, 1.0);
    assert_eq!(plan.active_spec(Duration::from_millis(200)), &plan.base);
}

#[test]
fn defaults_and_wire_names() {
    let plan: FaultPlan = serde_json::from_str("{}").unwrap();
    assert_eq!(plan, FaultPlan::default());
    assert_eq!(plan.seed, 42);
    assert_eq!(plan.base.failure_statuses, vec![500, 503]);
    assert_eq!(plan.base.retry_after_secs, 1);
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
        ["schedule[1].faults.timeoutRate", "schedule[1].faults.latency.tailRate"]
    );

    let mut base_only = FaultPlan::default();
    base_only.base.failure_rate = 1.5;
    let errors = base_only.validate().unwrap_err();
    assert_eq!(errors[0].field, "base.failureRate");
    assert!(errors[0].to_string().starts_with("base.failureRate: "));
}

#[test]
fn rates_summing_over_one_are_refused() {
    let spec = FaultSpec {
        failure_rate: 0.6,
        decline_rate: 0.5,
        ..FaultSpec::default()
    };
    assert_eq!(fields(spec.validate("base")), ["base"]);
    assert_eq!(fields(spec.validate("")), ["faults"]);

    let exactly_one = FaultSpec {
        failure_rate: 0.1,
        decline_rate: 0.2,
        lost_response_rate: 0.7,
        ..FaultSpec::default()
    };
    assert_eq!(exactly_one.validate("base"), Ok(()));
}

#[test]
fn failure_statuses_must_be_5xx_and_present_when_failing() {
    let spec = FaultSpec {
        failure_rate: 0.5,
        failure_statuses: vec![503, 404],
        ..FaultSpec::default()
    };
    let errors = spec.validate("schedule[0].faults").unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field, "schedule[0].faults.failureStatuses[1]");
    assert!(errors[0].message.contains("404"));

    let empty = FaultSpec {
        failure_rate: 0.5,
        failure_statuses: vec![],
        ..FaultSpec::default()
    };
    assert_eq!(fields(empty.validate("base")), ["base.failureStatuses"]);
    let unused = FaultSpec {
        failure_statuses: vec![],
        ..FaultSpec::default()
    };
    assert_eq!(unused.validate("base"), Ok(()));
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
}

//! Unit tests of the mock's decisions: seeded, at the configured rates.
//! (The plan's phases and validation are tested with the model,
//! `model/src/faults.rs`.)

use super::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn mixed_spec() -> FaultSettings {
    FaultSettings::mixed()
}

fn decisions(seed: u64, n: usize) -> Vec<Decision> {
    let spec = mixed_spec();
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| decide(&spec, &mut rng)).collect()
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
    let spec = FaultSettings {
        lost_response_rate: 1.0,
        hang_ms: 300,
        ..FaultSettings::default()
    };
    for _ in 0..100 {
        assert_eq!(
            decide(&spec, &mut rng),
            Decision::LostResponse {
                hang: Duration::from_millis(300)
            }
        );
    }
    let healthy = FaultSettings::default();
    for _ in 0..100 {
        assert_eq!(decide(&healthy, &mut rng), Decision::Success { delay: Duration::ZERO });
    }
}

//! Capped exponential backoff with jitter.
//!
//! Retry `n` (1-based: the wait before the second attempt is retry 1) waits
//! `min(max, initial * multiplier^(n-1))`, then jitter takes off a random
//! share of up to `jitter` of it: `delay * (1 - jitter * u)`, `u` in `[0, 1)`.
//! `jitter = 0` is a fixed schedule, `jitter = 1` is "full jitter". The cap
//! holds after jitter, and a server's `Retry-After` is a floor.

use rand::Rng;
use std::time::Duration;

/// Backoff settings, validated by [`BackoffConfig::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    /// Share of each delay that may be taken off at random, 0..=1.
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl BackoffConfig {
    /// Every problem with its field name (`initial`, `max`, `multiplier`, `jitter`).
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.initial.is_zero() {
            problems.push(("initial", "must be greater than zero".to_string()));
        }
        if self.max < self.initial {
            problems.push((
                "max",
                format!(
                    "must be at least the initial backoff ({} ms), got {} ms",
                    self.initial.as_millis(),
                    self.max.as_millis()
                ),
            ));
        }
        if !(self.multiplier >= 1.0 && self.multiplier <= 100.0) {
            problems.push(("multiplier", format!("must be within 1..=100, got {}", self.multiplier)));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            problems.push(("jitter", format!("must be within 0..=1, got {}", self.jitter)));
        }
        problems
    }
}

/// The schedule of one retry loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// The un-jittered delay before retry `retry` (1-based).
    pub fn base_delay(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(64) as i32;
        let factor = self.config.multiplier.powi(exp);
        let secs = self.config.initial.as_secs_f64() * factor;
        let max = self.config.max.as_secs_f64();
        Duration::from_secs_f64(if secs.is_finite() { secs.min(max) } else { max })
    }

    /// The delay before retry `retry` with jitter drawn from `rng`, never
    /// shorter than `floor` (a `Retry-After`) and never above the cap unless
    /// the floor itself is.
    pub fn delay(&self, retry: u32, floor: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let base = self.base_delay(retry);
        let u: f64 = rng.gen();
        let jittered = base.mul_f64(1.0 - self.config.jitter * u);
        match floor {
            Some(f) if f > jittered => f,
            _ => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn cfg(jitter: f64) -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn schedule_doubles_then_caps() {
        let b = Backoff::new(cfg(0.0));
        let got: Vec<u128> = (1..=6).map(|n| b.base_delay(n).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        // without jitter the drawn delay is the base delay
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(b.delay(3, None, &mut rng), Duration::from_millis(400));
    }

    #[test]
    fn huge_retry_numbers_stay_capped() {
        let b = Backoff::new(cfg(0.0));
        assert_eq!(b.base_delay(u32::MAX), Duration::from_millis(1_000));
    }

    #[test]
    fn jitter_stays_within_its_share_and_varies() {
        let b = Backoff::new(cfg(0.5));
        let mut rng = StdRng::seed_from_u64(7);
        let draws: Vec<Duration> = (0..500).map(|_| b.delay(2, None, &mut rng)).collect();
        assert!(draws
            .iter()
            .all(|d| *d > Duration::from_millis(100) && *d <= Duration::from_millis(200)));
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 100, "jitter should spread the delays");
    }

    #[test]
    fn retry_after_is_a_floor() {
        let b = Backoff::new(cfg(1.0));
        let mut rng = StdRng::seed_from_u64(3);
        let d = b.delay(1, Some(Duration::from_secs(2)), &mut rng);
        assert_eq!(d, Duration::from_secs(2));
    }

    #[test]
    fn validation_names_each_bad_field() {
        let bad = BackoffConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_millis(100),
            multiplier: 0.5,
            jitter: 1.5,
        };
        let fields: Vec<&str> = bad.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, vec!["max", "multiplier", "jitter"]);
        assert!(cfg(0.2).validate().is_empty());
    }
}

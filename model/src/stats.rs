//! Confidence intervals for judging repeated runs (`spec.repeat`).
//!
//! - **Success ratio**: with one run, the Wilson score interval on its
//!   orders (the orders are the unit); with several, a Student-t interval of
//!   the per-run ratios (the runs are the unit, because runs with different
//!   seeds differ by more than their orders' sampling error), clamped to 0..1.
//! - **Latency percentiles**: a Student-t interval of the per-run
//!   percentiles (runs as the unit; a percentile of pooled requests would
//!   hide the run-to-run spread).
//!
//! The quantiles come from `statrs`; the formulas are the textbook ones and
//! the unit tests check them against values computed independently.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// A point estimate and its interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Interval {
    pub lower: f64,
    pub point: f64,
    pub upper: f64,
}

impl Interval {
    /// An interval of one value (a single run judged on its point).
    pub fn exact(point: f64) -> Self {
        Self {
            lower: point,
            point,
            upper: point,
        }
    }
}

/// The two-sided `confidence` quantile of the standard normal (1.96 at 0.95).
fn z(confidence: f64) -> f64 {
    let normal = Normal::new(0.0, 1.0).expect("the standard normal");
    normal.inverse_cdf(0.5 + confidence / 2.0)
}

/// Wilson score interval of `successes` out of `n` (`n` = 0: all of 0..1).
pub fn wilson(successes: u64, n: u64, confidence: f64) -> Interval {
    if n == 0 {
        return Interval {
            lower: 0.0,
            point: 0.0,
            upper: 1.0,
        };
    }
    let (n_f, p) = (n as f64, successes as f64 / n as f64);
    let z = z(confidence);
    let z2 = z * z;
    let denominator = 1.0 + z2 / n_f;
    let centre = (p + z2 / (2.0 * n_f)) / denominator;
    let half = z * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt() / denominator;
    Interval {
        lower: (centre - half).max(0.0),
        point: p,
        upper: (centre + half).min(1.0),
    }
}

/// Student-t interval of the mean of `values` (one value: exact).
pub fn mean_interval(values: &[f64], confidence: f64) -> Interval {
    let n = values.len();
    if n == 0 {
        return Interval::default();
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Interval::exact(mean);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .expect("degrees of freedom above 0")
        .inverse_cdf(0.5 + confidence / 2.0);
    let half = t * variance.sqrt() / (n as f64).sqrt();
    Interval {
        lower: mean - half,
        point: mean,
        upper: mean + half,
    }
}

/// The interval of a ratio: Wilson on one run's counts, Student-t over
/// the per-run ratios for several, clamped to 0..1.
pub fn ratio_interval(per_run: &[(u64, u64)], confidence: f64) -> Interval {
    match per_run {
        [] => Interval::default(),
        [(k, n)] => wilson(*k, *n, confidence),
        runs => {
            let ratios: Vec<f64> = runs
                .iter()
                .map(|&(k, n)| if n == 0 { 0.0 } else { k as f64 / n as f64 })
                .collect();
            let i = mean_interval(&ratios, confidence);
            Interval {
                lower: i.lower.max(0.0),
                point: i.point,
                upper: i.upper.min(1.0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() < tol
    }

    #[test]
    fn wilson_matches_the_textbook_values() {
        // 95 of 100 at 95%: [0.8882, 0.9785] (Newcombe 1998, method 3)
        let i = wilson(95, 100, 0.95);
        assert!(close(i.lower, 0.88825, 1e-4) && close(i.upper, 0.97846, 1e-4), "{i:?}");
        // 0 of 10 at 95%: [0, 0.2775]
        let i = wilson(0, 10, 0.95);
        assert!(close(i.lower, 0.0, 1e-9) && close(i.upper, 0.27753, 1e-4), "{i:?}");
        assert_eq!(wilson(0, 0, 0.95).upper, 1.0, "no orders: anything is possible");
    }

    #[test]
    fn the_t_interval_matches_the_textbook_values() {
        // mean 14, s = sqrt(10), n = 5, t(0.975, 4) = 2.776445: 14 -/+ 3.92644
        let i = mean_interval(&[10.0, 12.0, 14.0, 16.0, 18.0], 0.95);
        assert!(
            close(i.lower, 10.07356, 1e-4) && close(i.upper, 17.92644, 1e-4),
            "{i:?}"
        );
        // at 90%: t(0.95, 4) = 2.131847: 14 -/+ 3.01488
        let i = mean_interval(&[10.0, 12.0, 14.0, 16.0, 18.0], 0.90);
        assert!(close(i.upper, 17.01488, 1e-4), "{i:?}");
        assert_eq!(mean_interval(&[7.0], 0.95), Interval::exact(7.0));
    }

    #[test]
    fn several_runs_use_the_spread_of_their_ratios() {
        let i = ratio_interval(&[(98, 100), (99, 100), (100, 100)], 0.95);
        // mean 0.99, s = 0.01, t(0.975, 2) = 4.302653: 0.99 -/+ 0.024842, clamped
        assert!(close(i.lower, 0.965158, 1e-5), "{i:?}");
        assert_eq!(i.upper, 1.0);
    }
}

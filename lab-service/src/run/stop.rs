//! `stopWhen` while a run goes: after every sample (once a second) the
//! conditions are checked on what the sampler saw; the first that holds
//! stops the load. The rules are the model's (`relab_model::ops`).

use super::sampler::Snapshot;
use relab_model::ops::{first_breach, LiveFigures, StopCondition, Stopped};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The stop conditions of a run and what tripped them.
#[derive(Clone)]
pub struct StopWatch {
    conditions: Vec<StopCondition>,
    success_target: Option<f64>,
    planned_orders: u64,
    started: Instant,
    /// When the load ended (the window of an objective counts load only).
    load_over: Arc<Mutex<Option<f64>>>,
    tripped: Arc<Mutex<Option<Stopped>>>,
    /// Cancelled when a condition holds: the load stops.
    pub stop_load: CancellationToken,
}

impl StopWatch {
    pub fn new(
        conditions: Vec<StopCondition>,
        success_target: Option<f64>,
        planned_orders: u64,
        started: Instant,
    ) -> Self {
        Self {
            conditions,
            success_target,
            planned_orders,
            started,
            load_over: Default::default(),
            tripped: Default::default(),
            stop_load: CancellationToken::new(),
        }
    }

    /// Whether a condition watches the ledger's double charges.
    pub fn watches_double_charges(&self) -> bool {
        self.conditions.iter().any(|c| c.double_charges == Some(true))
    }

    /// The load is over (from now on the run drains).
    pub fn load_ended(&self) {
        let mut over = self.load_over.lock().expect("stop watch");
        over.get_or_insert(self.started.elapsed().as_secs_f64());
    }

    /// Check the conditions on the samples so far (each the run's totals
    /// at one second, after `baseline`).
    pub fn check(&self, baseline: &Snapshot, samples: &[Snapshot]) {
        if self.conditions.is_empty() || self.stop_load.is_cancelled() {
            return;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let load_seconds = self.load_over.lock().expect("stop watch").unwrap_or(elapsed);
        let finished = |s: &Snapshot| {
            let since = |status: &str| (s.orders(status) - baseline.orders(status)).max(0) as u64;
            (since("paid"), since("failed") + since("dead_lettered"))
        };
        let totals: Vec<(u64, u64)> = samples.iter().map(finished).collect();
        let per_second = totals
            .iter()
            .enumerate()
            .map(|(i, &(p, f))| {
                let (bp, bf) = if i == 0 { (0, 0) } else { totals[i - 1] };
                (p.saturating_sub(bp), f.saturating_sub(bf))
            })
            .collect();
        let live = LiveFigures {
            elapsed_seconds: elapsed,
            load_seconds,
            finished_per_second: per_second,
            planned_orders: self.planned_orders,
            failed_so_far: totals.last().map_or(0, |t| t.1),
            double_charges: samples.last().map_or(0, |s| s.double_charged_orders),
        };
        if let Some(stopped) = first_breach(&self.conditions, self.success_target, &live) {
            tracing::warn!(condition = %stopped.condition, observed = %stopped.observed, "stop condition met: stopping the run");
            *self.tripped.lock().expect("stop watch") = Some(stopped);
            self.stop_load.cancel();
        }
    }

    /// What stopped the run, if anything did.
    pub fn tripped(&self) -> Option<Stopped> {
        self.tripped.lock().expect("stop watch").clone()
    }

    /// How long the run may still go on under a `maxDurationSeconds` cap.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        let cap = self.conditions.iter().filter_map(|c| c.max_duration_seconds).min()?;
        Some(std::time::Duration::from_secs(u64::from(cap)).saturating_sub(self.started.elapsed()))
    }
}

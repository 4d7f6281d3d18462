//! From an experiment spec to the lab's own settings: the payment mock's
//! fault plan, the order API's and the workers' configuration. Pure; the
//! local runner passes these in-process, the operator as pod environment.

use crate::crd::{BreakerModeSpec, FaultSettings, ReliabilityExperimentSpec};
use lab_service::config::{ApiConfig, WorkerConfig};
use lab_service::loadgen::{LoadConfig, LoadStage};
use lab_service::payment_mock::{FaultPhase, FaultPlan, FaultSpec, LatencySpec};
use lab_service::resilience::{BackoffConfig, BreakerConfig, BreakerMode};
use std::time::Duration;

fn fault_spec(f: &FaultSettings) -> FaultSpec {
    FaultSpec {
        failure_rate: f.failure_rate,
        failure_statuses: f.failure_statuses.clone(),
        decline_rate: f.decline_rate,
        rate_limit_rate: f.rate_limit_rate,
        retry_after_secs: f.retry_after_seconds,
        timeout_rate: f.timeout_rate,
        lost_response_rate: f.lost_response_rate,
        hang_ms: f.hang_ms,
        latency: LatencySpec {
            base_ms: f.latency.base_ms,
            jitter_ms: f.latency.jitter_ms,
            tail_rate: f.latency.tail_rate,
            tail_ms: f.latency.tail_ms,
        },
    }
}

/// The payment mock's plan; phase times are relative to the load's start
/// (the load generator re-sends the plan at that moment, which restarts the
/// mock's schedule clock).
pub fn fault_plan(spec: &ReliabilityExperimentSpec) -> FaultPlan {
    FaultPlan {
        seed: spec.payment.seed,
        base: fault_spec(&spec.payment.faults),
        schedule: spec
            .payment
            .faults_schedule
            .iter()
            .map(|p| FaultPhase {
                name: p.name.clone(),
                start_ms: u64::from(p.start_seconds) * 1000,
                end_ms: p.end_seconds.map(|e| u64::from(e) * 1000),
                faults: fault_spec(&p.faults),
            })
            .collect(),
    }
}

/// The load's stages: `stages` when given, else one stage of `ratePerSecond`
/// for `durationSeconds`.
pub fn load_stages(spec: &ReliabilityExperimentSpec) -> Vec<LoadStage> {
    let load = &spec.load;
    if load.stages.is_empty() {
        vec![LoadStage {
            rate_per_sec: load.rate_per_second.unwrap_or(0.0),
            duration: Duration::from_secs(u64::from(load.duration_seconds.unwrap_or(0))),
        }]
    } else {
        load.stages
            .iter()
            .map(|s| LoadStage {
                rate_per_sec: s.rate_per_second,
                duration: Duration::from_secs(u64::from(s.duration_seconds)),
            })
            .collect()
    }
}

/// The load generator's open loop.
pub fn load_config(spec: &ReliabilityExperimentSpec) -> LoadConfig {
    let mut config = LoadConfig::open_loop(load_stages(spec));
    config.max_in_flight = spec.load.max_in_flight as usize;
    config
}

/// Workers of one order-service replica.
pub fn worker_config(spec: &ReliabilityExperimentSpec, payment_url: &str) -> WorkerConfig {
    let os = &spec.order_service;
    let cb = &os.circuit_breaker;
    let mode = match (cb.enabled, cb.mode) {
        (false, _) => BreakerMode::Disabled,
        (true, BreakerModeSpec::ConsecutiveFailures) => BreakerMode::ConsecutiveFailures {
            threshold: cb.failure_threshold,
        },
        (true, BreakerModeSpec::FailureRatio) => BreakerMode::FailureRatio {
            ratio: cb.failure_ratio,
            min_calls: cb.minimum_calls,
            window: Duration::from_secs(u64::from(cb.window_seconds)),
        },
    };
    WorkerConfig {
        concurrency: os.workers as usize,
        payment_url: payment_url.to_string(),
        payment_timeout: Duration::from_millis(os.payment_timeout_ms),
        retry_max_attempts: os.retry.max_attempts,
        backoff: BackoffConfig {
            initial: Duration::from_millis(os.retry.initial_backoff_ms),
            max: Duration::from_millis(os.retry.max_backoff_ms),
            multiplier: os.retry.multiplier,
            jitter: os.retry.jitter,
        },
        breaker: BreakerConfig {
            mode,
            open_timeout: Duration::from_millis(cb.open_timeout_ms),
            half_open_probes: cb.half_open_probes,
        },
        bulkhead_max_concurrent: os.bulkhead.max_concurrent as usize,
        bulkhead_max_wait: Duration::from_millis(os.bulkhead.max_wait_ms),
        send_idempotency_key: os.idempotency_keys,
        ..WorkerConfig::default()
    }
}

/// The order API of one replica.
pub fn api_config(spec: &ReliabilityExperimentSpec) -> ApiConfig {
    ApiConfig {
        max_queue_depth: i64::from(spec.order_service.max_queue_depth),
        max_job_attempts: spec.order_service.max_job_attempts as i32,
        ..ApiConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::parse_manifest;

    #[test]
    fn spec_settings_reach_the_lab_configs() {
        let rx = parse_manifest(
            r#"
apiVersion: relab.dev/v1alpha1
kind: ReliabilityExperiment
metadata: {name: t}
spec:
  load: {ratePerSecond: 5, durationSeconds: 30}
  payment:
    seed: 7
    failureRate: 0.2
    faultsSchedule: [{name: outage, startSeconds: 10, endSeconds: 20, failureRate: 1.0, failureStatuses: [503]}]
  orderService:
    workers: 3
    maxJobAttempts: 2
    retry: {maxAttempts: 6, initialBackoffMs: 10, maxBackoffMs: 100}
    circuitBreaker: {mode: FailureRatio, failureRatio: 0.4, minimumCalls: 7, windowSeconds: 5}
"#,
        )
        .unwrap();
        let plan = fault_plan(&rx.spec);
        assert_eq!(plan.seed, 7);
        assert_eq!(plan.base.failure_rate, 0.2);
        assert_eq!(
            (plan.schedule[0].start_ms, plan.schedule[0].end_ms),
            (10_000, Some(20_000))
        );
        assert_eq!(plan.schedule[0].faults.failure_statuses, vec![503]);
        assert!(plan.validate().is_ok());
        let w = worker_config(&rx.spec, "http://127.0.0.1:1");
        assert_eq!((w.concurrency, w.retry_max_attempts), (3, 6));
        assert_eq!(
            w.breaker.mode,
            BreakerMode::FailureRatio {
                ratio: 0.4,
                min_calls: 7,
                window: Duration::from_secs(5)
            }
        );
        assert!(w.validate().is_ok());
        assert_eq!(api_config(&rx.spec).max_job_attempts, 2);
    }
}

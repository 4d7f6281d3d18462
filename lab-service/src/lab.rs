//! The lab, wired once: [`Lab::start`] starts the payment mock, the order
//! API replicas and their workers on one database, and returns a
//! [`RunningLab`] with their URLs and metrics. `lab-service all`, `relab
//! run`, the integration-test harness and the pipeline bench all start it
//! here; nothing else builds an `ApiServer`, `WorkerServer` or `MockServer`.
//!
//! [`LabPlan::for_experiment`] (with [`api_config`], [`worker_config`] and
//! [`load_config`]) turns a validated experiment into the lab's own
//! settings: the same mapping the operator puts into its pods' environment.

use crate::app::{ApiServer, MockServer, WorkerServer};
use crate::config::{ApiConfig, WorkerConfig};
use crate::error::{Error, Result};
use crate::loadgen::LoadConfig;
use crate::metrics::LabMetrics;
use crate::payment_mock::{FaultPlan, MockState};
use crate::resilience::{BackoffConfig, BreakerConfig, BreakerMode};
use relab_model::spec::BreakerModeSpec;
use relab_model::ValidatedExperiment;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How the lab's processes share metric registries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsLayout {
    /// One registry for everything, as in one process (`lab-service all`,
    /// the test harness): the API's `/metrics` holds every series.
    Shared,
    /// A registry per order-service replica (its API and workers) and one
    /// for the mock, as separate pods would have (`relab run`).
    PerReplica,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct LabPlan {
    /// The order service's database (migrated).
    pub pool: PgPool,
    /// Order-service replicas: an API and (with `worker`) its workers each.
    pub replicas: usize,
    /// The API's settings; replica 0 listens on `api.listen`, the others on
    /// port 0 of the same address.
    pub api: ApiConfig,
    /// The workers of each replica (`payment_url` is set to the mock's);
    /// `None`: no workers.
    pub worker: Option<WorkerConfig>,
    pub mock_listen: SocketAddr,
    pub faults: FaultPlan,
    /// The payment ledger's journal (None: in memory; see
    /// [`default_ledger_file`]).
    pub ledger_file: Option<PathBuf>,
    pub metrics: MetricsLayout,
}

/// The journal of the payment ledger of the lab on `database_url`, when no
/// file is named: one per database (its name and a hash of the URL) in the
/// temporary directory, so that a lab restarted on the same database finds
/// its charges and idempotency keys again, and a lab on another database
/// does not see them.
pub fn default_ledger_file(database_url: &str) -> PathBuf {
    use sha2::Digest;
    let name: String = database_url
        .rsplit('/')
        .next()
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(63)
        .collect();
    let digest = sha2::Sha256::digest(database_url.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    std::env::temp_dir()
        .join("relab-ledgers")
        .join(format!("{name}-{hash}.jsonl"))
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("static address")
}

impl LabPlan {
    /// The lab of `experiment` on loopback ports: its replicas, API,
    /// workers and fault plan, one registry per replica.
    pub fn for_experiment(experiment: &ValidatedExperiment, pool: PgPool) -> Self {
        let mut api = api_config(experiment);
        api.listen = loopback();
        Self {
            pool,
            replicas: experiment.spec().order_service.replicas as usize,
            api,
            worker: Some(worker_config(experiment, "http://127.0.0.1:0")),
            mock_listen: loopback(),
            faults: experiment.fault_plan(),
            ledger_file: None,
            metrics: MetricsLayout::PerReplica,
        }
    }

    /// Connections the lab's pool needs: each replica's API and workers,
    /// plus the run engine's observer.
    pub fn pool_size(replicas: u32) -> u32 {
        8 + 4 * replicas
    }
}

/// A started lab. Dropping it without [`RunningLab::shutdown`] leaves its
/// servers running until the runtime ends.
pub struct RunningLab {
    /// Base URL of each replica's order API, replica 0 first.
    pub api_urls: Vec<String>,
    /// Base URL of the payment mock.
    pub payment_url: String,
    /// Every `/metrics` endpoint that together holds the lab's series once.
    pub metrics_urls: Vec<String>,
    /// The mock's state (ledger, plan, stats).
    pub mock: MockState,
    /// The registry of each replica (one, shared with the mock, in the
    /// `Shared` layout).
    pub metrics: Vec<LabMetrics>,
    pool: PgPool,
    stop: CancellationToken,
    mock_stop: CancellationToken,
    tasks: Vec<JoinHandle<Result<()>>>,
    mock_task: JoinHandle<Result<()>>,
}

/// The lab's parts, started in dependency order: mock, then each replica's
/// API and workers.
pub struct Lab;

impl Lab {
    pub async fn start(plan: LabPlan) -> Result<RunningLab> {
        let shared = LabMetrics::new()?;
        let mock_metrics = match plan.metrics {
            MetricsLayout::Shared => shared.clone(),
            MetricsLayout::PerReplica => LabMetrics::new()?,
        };
        let mock = MockServer::build(
            plan.mock_listen,
            plan.faults.clone(),
            plan.ledger_file.as_deref(),
            &mock_metrics,
        )
        .await?;
        let payment_url = format!("http://{}", mock.local_addr());
        let mock_state = mock.state().clone();
        let mock_stop = CancellationToken::new();
        let mock_task = tokio::spawn(mock.run_until_stopped(mock_stop.clone()));
        let mut lab = RunningLab {
            api_urls: Vec::new(),
            payment_url,
            metrics_urls: Vec::new(),
            mock: mock_state,
            metrics: Vec::new(),
            pool: plan.pool.clone(),
            stop: CancellationToken::new(),
            mock_stop,
            tasks: Vec::new(),
            mock_task,
        };
        for replica in 0..plan.replicas.max(1) {
            let metrics = match plan.metrics {
                MetricsLayout::Shared => shared.clone(),
                MetricsLayout::PerReplica => LabMetrics::new()?,
            };
            let mut api = plan.api.clone();
            if replica > 0 {
                api.listen.set_port(0);
            }
            let server = ApiServer::build(plan.pool.clone(), api, &metrics).await?;
            let url = format!("http://{}", server.local_addr());
            lab.tasks.push(tokio::spawn(server.run_until_stopped(lab.stop.clone())));
            if let Some(worker) = &plan.worker {
                lab.start_workers(worker.clone(), &metrics).await?;
            }
            if plan.metrics == MetricsLayout::PerReplica || replica == 0 {
                lab.metrics_urls.push(format!("{url}/metrics"));
                lab.metrics.push(metrics);
            }
            lab.api_urls.push(url);
        }
        Ok(lab)
    }
}

impl RunningLab {
    /// Base URL of replica 0's order API.
    pub fn api_url(&self) -> &str {
        &self.api_urls[0]
    }

    /// Start (more) workers against this lab's database and mock, on
    /// `metrics` (e.g. `lab.metrics[0].clone()`).
    pub async fn start_workers(&mut self, mut config: WorkerConfig, metrics: &LabMetrics) -> Result<()> {
        config.payment_url = self.payment_url.clone();
        let workers = WorkerServer::build(self.pool.clone(), config, None, metrics).await?;
        self.tasks
            .push(tokio::spawn(workers.run_until_stopped(self.stop.clone())));
        Ok(())
    }

    /// Stop gracefully: the APIs and workers first (in-flight work finishes
    /// or its leases are released), the mock last so in-flight charges are
    /// answered. The first server error, if any, is returned.
    pub async fn shutdown(self) -> Result<()> {
        self.stop.cancel();
        let mut first: Result<()> = Ok(());
        for task in self.tasks {
            let result = task
                .await
                .map_err(|e| Error::Other(format!("lab task: {e}")))
                .and_then(|r| r);
            if first.is_ok() {
                first = result;
            }
        }
        self.mock_stop.cancel();
        let mock = self
            .mock_task
            .await
            .map_err(|e| Error::Other(format!("payment mock task: {e}")))
            .and_then(|r| r);
        first.and(mock)
    }
}

/// The order API of one replica.
pub fn api_config(experiment: &ValidatedExperiment) -> ApiConfig {
    let os = &experiment.spec().order_service;
    ApiConfig {
        max_queue_depth: i64::from(os.max_queue_depth),
        max_job_attempts: os.max_job_attempts as i32,
        ..ApiConfig::default()
    }
}

/// The workers of one replica.
pub fn worker_config(experiment: &ValidatedExperiment, payment_url: &str) -> WorkerConfig {
    let os = &experiment.spec().order_service;
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

/// The load generator's open loop (scaled stages, the spec's in-flight bound).
pub fn load_config(experiment: &ValidatedExperiment) -> LoadConfig {
    let mut config = LoadConfig::open_loop(experiment.load_stages());
    config.max_in_flight = experiment.spec().load.max_in_flight as usize;
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_settings_reach_the_lab_configs() {
        let (v, _) = ValidatedExperiment::from_manifest(
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
        let plan = v.fault_plan();
        assert_eq!(plan.seed, 7);
        assert_eq!(plan.base.failure_rate, 0.2);
        assert_eq!(
            (plan.schedule[0].start_ms, plan.schedule[0].end_ms),
            (10_000, Some(20_000))
        );
        assert_eq!(plan.schedule[0].faults.failure_statuses, vec![503]);
        assert!(plan.validate().is_ok());
        let w = worker_config(&v, "http://127.0.0.1:1");
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
        assert_eq!(api_config(&v).max_job_attempts, 2);
        assert_eq!(load_config(&v).planned_duration(), Duration::from_secs(30));
    }
}

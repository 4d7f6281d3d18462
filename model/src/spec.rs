//! `ReliabilityExperiment` (`relab.dev/v1alpha1`, short name `rx`): what to
//! run, what to inject, and what "good" means.
//!
//! Every field's `///` becomes `kubectl explain` text. Every bound of a
//! single field is a schema attribute here, and lives nowhere else: the CRD
//! the operator installs carries it, the API server enforces it, and
//! `relab validate` / `relab run` check manifests against that same
//! generated schema ([`crate::schema`]). Rules that span fields are in
//! [`crate::validate`].
//!
//! With the `kube` feature the spec also derives kube's `CustomResource`,
//! which makes the `ReliabilityExperiment` type the operator works with.

use crate::disruptions::{DisruptionSpec, MAX_DISRUPTIONS};
use crate::faults::{FaultSettings, MAX_FAULT_PHASES};
use crate::ops::{NotifySpec, ScheduleSpec, StopCondition, MAX_STOP_CONDITIONS};
#[cfg(feature = "kube")]
use crate::status::ReliabilityExperimentStatus;
use crate::variants::{BaselineSpec, RepeatSpec, Sweep, VariantSpec, MAX_LAB_RUNS};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Items at most in a list of the spec whose length has no meaning of its own.
pub const MAX_LIST_ITEMS: usize = 64;

/// A reliability experiment: load, faults, resilience settings and objectives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "kube", derive(kube::CustomResource))]
#[cfg_attr(
    feature = "kube",
    kube(
        group = "relab.dev",
        version = "v1alpha1",
        kind = "ReliabilityExperiment",
        plural = "reliabilityexperiments",
        shortname = "rx",
        category = "relab",
        namespaced,
        status = "ReliabilityExperimentStatus",
        derive = "PartialEq",
        derive = "Default",
        printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
        printcolumn = r#"{"name":"Verdict","type":"string","jsonPath":".status.verdict.result"}"#,
        printcolumn = r#"{"name":"Success","type":"number","format":"float","jsonPath":".status.results.successRatio"}"#,
        printcolumn = r#"{"name":"P95 ms","type":"number","format":"float","jsonPath":".status.results.apiLatencyMs.p95"}"#,
        printcolumn = r#"{"name":"Next run","type":"date","jsonPath":".status.nextRunTime"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReliabilityExperimentSpec {
    /// Change to start a new run with the same spec (any string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub run_id: Option<String>,
    /// Do not start (or continue provisioning) while true.
    #[serde(default)]
    pub suspend: bool,
    /// The load: arrival rate, duration, stages.
    pub load: LoadSpec,
    /// Faults the payment service injects.
    #[serde(default)]
    pub payment: PaymentSpec,
    /// The order service's resilience settings.
    #[serde(default)]
    pub order_service: OrderServiceSpec,
    /// Where the lab's Postgres comes from.
    #[serde(default)]
    pub database: DatabaseSpec,
    /// The objectives that decide the verdict.
    #[serde(default)]
    pub objectives: ObjectivesSpec,
    /// Delete the lab workloads this many seconds after the run finished (the resource and its results stay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub ttl_seconds_after_finished: Option<i64>,
    /// What to keep after a run: `Always` clean up (after the TTL), or `RetainOnFailure` to keep a failed run's workloads for debugging.
    #[serde(default)]
    pub cleanup_policy: CleanupPolicy,
    /// Image overrides for the lab's workloads.
    #[serde(default)]
    pub images: ImagesSpec,
    /// Configurations to compare: each a full lab run of the same load and
    /// faults, with overrides deep-merged over `orderService` / `payment`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LAB_RUNS))]
    pub variants: Vec<VariantSpec>,
    /// Instead of `variants`: dotted paths to the values each takes
    /// (`orderService.retry.maxAttempts: [1, 3, 5]`); the cross product
    /// becomes the variants, and the status recommends one.
    #[serde(default, skip_serializing_if = "is_empty_sweep")]
    pub sweep: Sweep,
    /// Runs per variant (run i uses payment seed + i) and the confidence of
    /// the intervals each objective is judged on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<RepeatSpec>,
    /// Fail when a figure regresses past these margins against the last
    /// Passed run in `status.history` (`relab run --baseline status.json` locally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineSpec>,
    /// Stop a run early (load stopped, faults cleared, queue drained, audit
    /// kept): it ends Failed with reason `Stopped`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_STOP_CONDITIONS))]
    pub stop_when: Vec<StopCondition>,
    /// Start runs on a cron schedule (the operator; `relab run` runs once).
    /// A spec change ends a run in progress, as it does without a schedule,
    /// and the next run starts at the next tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// Who hears of a finished run (the operator; `relab run` reports locally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifySpec>,
    /// Infrastructure failures, each fired once at a time from the start of
    /// the load: worker or order-service crashes (ungraceful), a Postgres
    /// restart, a slow or unreachable database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_DISRUPTIONS))]
    pub disruptions: Vec<DisruptionSpec>,
}

fn is_empty_sweep(sweep: &Sweep) -> bool {
    sweep.0.is_empty()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CleanupPolicy {
    #[default]
    Always,
    RetainOnFailure,
}

/// Open-loop load: a constant arrival rate, or stages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadSpec {
    /// Orders per second (ignored when `stages` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub rate_per_second: Option<f64>,
    /// Seconds of load at `ratePerSecond` (ignored when `stages` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub duration_seconds: Option<u32>,
    /// Consecutive stages of constant rate; their durations add up to the load's length.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST_ITEMS))]
    pub stages: Vec<LoadStageSpec>,
    /// Orders in flight at most; a send beyond it waits and is counted late.
    #[serde(default = "default_max_in_flight")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_in_flight: u32,
    /// After the load, wait at most this long for every accepted order to reach a final state.
    #[serde(default = "default_drain_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub drain_timeout_seconds: u32,
    /// Load generators that share the load (pods in a cluster, tasks
    /// locally): generator k of N sends every N-th request of the one
    /// schedule, starting with the k-th, so together they send exactly what
    /// one would, each at 1/N of the rate. Their results merge exactly
    /// (counts summed, latency histograms merged) into one verdict.
    /// `maxInFlight` bounds each generator.
    #[serde(default = "one_generator")]
    #[schemars(range(min = 1, max = 16))]
    pub parallelism: u32,
}

fn one_generator() -> u32 {
    1
}
fn default_max_in_flight() -> u32 {
    256
}
fn default_drain_timeout() -> u32 {
    60
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadStageSpec {
    /// Orders per second in this stage.
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub rate_per_second: f64,
    /// Length of this stage in seconds.
    #[schemars(range(min = 1, max = 86400))]
    pub duration_seconds: u32,
}

/// Payment-service faults: the steady state, plus time-phased changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PaymentSpec {
    /// Seed of the fault sequence: same seed, same faults.
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(flatten)]
    pub faults: FaultSettings,
    /// Phases of the drill (e.g. healthy -> outage -> recovery), relative to the start of the load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_FAULT_PHASES))]
    pub faults_schedule: Vec<FaultPhaseSpec>,
}

fn default_seed() -> u64 {
    42
}

impl Default for PaymentSpec {
    fn default() -> Self {
        Self {
            seed: default_seed(),
            faults: FaultSettings::default(),
            faults_schedule: Vec::new(),
        }
    }
}

/// One phase of the fault schedule; its settings replace the steady state while it is active.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultPhaseSpec {
    /// Shown in reports and dashboards (e.g. `outage`).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Seconds after the load starts.
    #[schemars(range(min = 0, max = 86400))]
    pub start_seconds: u32,
    /// Seconds after the load starts; the phase lasts until the end when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub end_seconds: Option<u32>,
    #[serde(flatten)]
    pub faults: FaultSettings,
}

/// The order service (API + workers) and its resilience settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderServiceSpec {
    /// Order service pods (processes locally): each runs the API, and its
    /// payment workers unless `workerReplicas` is set.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 20))]
    pub replicas: u32,
    /// Payment-worker pods (processes locally) of their own, each running
    /// `workers` job loops; the order-service pods then run only the API.
    /// Absent: each order-service pod runs the API and its workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 20))]
    pub worker_replicas: Option<u32>,
    /// Concurrent job loops per worker process (per replica without
    /// `workerReplicas`).
    #[serde(default = "default_workers")]
    #[schemars(range(min = 1, max = 512))]
    pub workers: u32,
    /// Database connections of each API process and of each worker
    /// process: separate pools, so that a burst of orders cannot starve the
    /// workers' claims and completions.
    #[serde(default)]
    pub database_pool: DatabasePoolSpec,
    /// Deadline of one payment call, in milliseconds.
    #[serde(default = "default_payment_timeout")]
    #[schemars(range(min = 1, max = 600000))]
    pub payment_timeout_ms: u64,
    /// Retry loops a job may spend before it is dead-lettered.
    #[serde(default = "default_max_job_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_job_attempts: u32,
    /// Shed new orders (503 + Retry-After) beyond this many queued/running jobs.
    #[serde(default = "default_max_queue_depth")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_queue_depth: u32,
    /// Send the order id as Idempotency-Key on charges (false only to demonstrate double charges).
    #[serde(default = "yes")]
    pub idempotency_keys: bool,
    /// How long a claimed job stays a worker's without its heartbeat (it is
    /// renewed every third of it while the worker lives): after a worker
    /// crash, its jobs wait this long before another worker takes them.
    #[serde(default = "default_lease_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub lease_seconds: u32,
    #[serde(default)]
    pub retry: RetrySpec,
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerSpec,
    #[serde(default)]
    pub bulkhead: BulkheadSpec,
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_workers() -> u32 {
    8
}
fn default_payment_timeout() -> u64 {
    1_000
}
fn default_max_job_attempts() -> u32 {
    5
}
fn default_max_queue_depth() -> u32 {
    10_000
}
fn default_lease_seconds() -> u32 {
    30
}

impl Default for OrderServiceSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            worker_replicas: None,
            workers: default_workers(),
            database_pool: DatabasePoolSpec::default(),
            payment_timeout_ms: default_payment_timeout(),
            max_job_attempts: default_max_job_attempts(),
            max_queue_depth: default_max_queue_depth(),
            idempotency_keys: true,
            lease_seconds: default_lease_seconds(),
            retry: RetrySpec::default(),
            circuit_breaker: CircuitBreakerSpec::default(),
            bulkhead: BulkheadSpec::default(),
        }
    }
}

impl OrderServiceSpec {
    /// Whether the workers run apart from the API (`workerReplicas` set).
    pub fn separate_workers(&self) -> bool {
        self.worker_replicas.is_some()
    }

    /// Processes (pods) that run payment workers: `workerReplicas`, else
    /// one per replica.
    pub fn worker_processes(&self) -> u32 {
        self.worker_replicas.unwrap_or(self.replicas)
    }

    /// The connection pool of each API process (`databasePool.api`).
    pub fn api_pool(&self) -> u32 {
        self.database_pool.api
    }

    /// The connection pool of each worker process: `databasePool.workers`,
    /// else `workers` + [`WORKER_POOL_HEADROOM`], at least [`DEFAULT_API_POOL`].
    pub fn worker_pool(&self) -> u32 {
        self.database_pool
            .workers
            .unwrap_or((self.workers + WORKER_POOL_HEADROOM).max(DEFAULT_API_POOL))
    }
}

/// Default connections of each API process.
pub const DEFAULT_API_POOL: u32 = 16;
/// Connections a worker process gets beyond one per job loop by default
/// (heartbeats, completions, the lease reaper, readiness).
pub const WORKER_POOL_HEADROOM: u32 = 8;
/// Connections a worker process needs beyond one per job loop at least
/// (`databasePool.workers` >= `workers` + this): one for the lease reaper
/// and one for a heartbeat while every job loop holds one.
pub const WORKER_POOL_MIN_HEADROOM: u32 = 2;

/// Connection pools of the order service's processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabasePoolSpec {
    /// Connections of each API process (default 16).
    #[serde(default = "default_api_pool")]
    #[schemars(range(min = 1, max = 1000))]
    pub api: u32,
    /// Connections of each worker process. Default: `workers` + 8 (one per
    /// job loop, plus headroom for lease heartbeats, completions and the
    /// reaper), at least 16. Must be at least `workers` + 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 3, max = 1000))]
    pub workers: Option<u32>,
}

fn default_api_pool() -> u32 {
    DEFAULT_API_POOL
}

impl Default for DatabasePoolSpec {
    fn default() -> Self {
        Self {
            api: DEFAULT_API_POOL,
            workers: None,
        }
    }
}

/// Capped exponential backoff with jitter. `maxAttempts` counts calls, the first included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Calls per retry loop, the first included (4 = 1 call + 3 retries).
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: u32,
    #[serde(default = "default_initial_backoff")]
    #[schemars(range(min = 1, max = 600000))]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff")]
    #[schemars(range(min = 1, max = 600000))]
    pub max_backoff_ms: u64,
    #[serde(default = "default_multiplier")]
    #[schemars(range(min = 1.0, max = 100.0))]
    pub multiplier: f64,
    /// Share of each backoff taken off at random (0 none, 1 full jitter).
    #[serde(default = "default_jitter")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub jitter: f64,
}

fn default_attempts() -> u32 {
    4
}
fn default_initial_backoff() -> u64 {
    50
}
fn default_max_backoff() -> u64 {
    2_000
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_jitter() -> f64 {
    0.5
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            initial_backoff_ms: default_initial_backoff(),
            max_backoff_ms: default_max_backoff(),
            multiplier: default_multiplier(),
            jitter: default_jitter(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BreakerModeSpec {
    #[default]
    ConsecutiveFailures,
    FailureRatio,
}

/// Circuit breaker: closed -> open -> half-open -> closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerSpec {
    /// false: no breaker (for comparison runs).
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub mode: BreakerModeSpec,
    /// ConsecutiveFailures: failures in a row that open the breaker.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 10000))]
    pub failure_threshold: u32,
    /// FailureRatio: failed share over the window that opens the breaker.
    #[serde(default = "default_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub failure_ratio: f64,
    /// FailureRatio: calls in the window needed before the ratio counts.
    #[serde(default = "default_min_calls")]
    #[schemars(range(min = 1, max = 100000))]
    pub minimum_calls: u32,
    /// FailureRatio: sliding window in seconds.
    #[serde(default = "default_window")]
    #[schemars(range(min = 1, max = 3600))]
    pub window_seconds: u32,
    /// How long the breaker stays open before probing, in milliseconds.
    #[serde(default = "default_open_timeout")]
    #[schemars(range(min = 1, max = 3600000))]
    pub open_timeout_ms: u64,
    /// Probe calls allowed in half-open; that many successes close the breaker.
    #[serde(default = "default_probes")]
    #[schemars(range(min = 1, max = 1000))]
    pub half_open_probes: u32,
}

fn default_threshold() -> u32 {
    5
}
fn default_ratio() -> f64 {
    0.5
}
fn default_min_calls() -> u32 {
    20
}
fn default_window() -> u32 {
    10
}
fn default_open_timeout() -> u64 {
    2_000
}
fn default_probes() -> u32 {
    3
}

impl Default for CircuitBreakerSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: BreakerModeSpec::default(),
            failure_threshold: default_threshold(),
            failure_ratio: default_ratio(),
            minimum_calls: default_min_calls(),
            window_seconds: default_window(),
            open_timeout_ms: default_open_timeout(),
            half_open_probes: default_probes(),
        }
    }
}

/// Concurrency limit on payment calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkheadSpec {
    #[serde(default = "default_bulkhead")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_concurrent: u32,
    /// Wait at most this long for a slot, in milliseconds.
    #[serde(default = "default_bulkhead_wait")]
    #[schemars(range(min = 0, max = 600000))]
    pub max_wait_ms: u64,
}

fn default_bulkhead() -> u32 {
    16
}
fn default_bulkhead_wait() -> u64 {
    500
}

impl Default for BulkheadSpec {
    fn default() -> Self {
        Self {
            max_concurrent: default_bulkhead(),
            max_wait_ms: default_bulkhead_wait(),
        }
    }
}

/// Managed (a Postgres per experiment) or external (a Secret with the URL).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseSpec {
    /// Use an existing Postgres: the Secret key holds a postgres:// URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalDatabase>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalDatabase {
    /// Secret in the experiment's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub secret_name: String,
    /// Key in the Secret whose value is the URL.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub secret_key: String,
}

fn default_secret_key() -> String {
    "url".into()
}

/// The SLOs that decide the verdict. Absent objectives are not checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectivesSpec {
    /// Minimum share of accepted orders that end paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub success_ratio: Option<f64>,
    /// Order API latency bounds (of all requests, or only accepted or shed ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LATENCY_OBJECTIVES))]
    pub api_latency: Vec<LatencyObjective>,
    /// Order created -> final state bounds (freshness).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LATENCY_OBJECTIVES))]
    pub end_to_end_latency: Vec<LatencyObjective>,
    /// Orders charged more than once, at most.
    #[serde(default = "zero")]
    #[schemars(range(min = 0))]
    pub max_double_charges: u64,
    /// Accepted orders lost or stuck, at most.
    #[serde(default = "zero")]
    #[schemars(range(min = 0))]
    pub max_lost_orders: u64,
    /// Seconds from each disruption's end until the success rate is back
    /// within 5% of steady state and the queue back under its depth before
    /// the disruption, at most (a disruption never recovered from fails it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub max_recovery_seconds: Option<u32>,
}

fn zero() -> u64 {
    0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Percentile {
    P50,
    P90,
    P95,
    P99,
}

impl Percentile {
    pub fn as_str(self) -> &'static str {
        match self {
            Percentile::P50 => "p50",
            Percentile::P90 => "p90",
            Percentile::P95 => "p95",
            Percentile::P99 => "p99",
        }
    }

    pub fn quantile(self) -> f64 {
        match self {
            Percentile::P50 => 0.5,
            Percentile::P90 => 0.9,
            Percentile::P95 => 0.95,
            Percentile::P99 => 0.99,
        }
    }
}

/// `percentile` of the latency must be at most `maxMs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LatencyObjective {
    pub percentile: Percentile,
    #[schemars(range(min = 0.0, max = 86_400_000.0))]
    pub max_ms: f64,
    /// apiLatency only: whose latency is judged. `All` requests (the
    /// default), only `Accepted` orders (201), or only `Shed` ones (503/429).
    #[serde(default, skip_serializing_if = "LatencyRequests::is_all")]
    pub requests: LatencyRequests,
}

/// Latency objectives at most per list.
pub const MAX_LATENCY_OBJECTIVES: usize = 16;

/// Which of the order API's answers a latency objective is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LatencyRequests {
    /// Every answer (as before this field existed).
    #[default]
    All,
    /// 201 Created only.
    Accepted,
    /// 503/429 load shedding only.
    Shed,
}

impl LatencyRequests {
    pub fn is_all(&self) -> bool {
        *self == LatencyRequests::All
    }
}

/// Images of the lab's workloads (empty: the operator's defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImagesSpec {
    /// Image of the order service, payment mock and load generator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub lab_service: Option<String>,
    /// Image of the managed Postgres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub postgres: Option<String>,
    /// IfNotPresent, Always or Never (checked by relab, not the schema, so
    /// that a wrong value reaches the operator and shows as `Valid=False`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<String>,
}

/// The `imagePullPolicy` values Kubernetes accepts (`spec.images.pullPolicy`,
/// the operator's `--image-pull-policy`).
pub const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];

impl LoadSpec {
    /// Load generators sharing the load (`parallelism`, at least one).
    pub fn generators(&self) -> u32 {
        self.parallelism.max(1)
    }

    /// Total seconds of load (stages win over rate/duration).
    pub fn total_seconds(&self) -> u64 {
        if self.stages.is_empty() {
            u64::from(self.duration_seconds.unwrap_or(0))
        } else {
            self.stages.iter().map(|s| u64::from(s.duration_seconds)).sum()
        }
    }
}

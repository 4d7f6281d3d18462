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
use crate::config::{ApiConfig, DatabaseArgs, WorkerConfig};
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
use std::sync::Arc;
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
    /// Order-service replicas: an API and (with `worker`, without
    /// `worker_replicas`) its workers each.
    pub replicas: usize,
    /// Worker servers (processes) of their own, apart from the APIs, each
    /// with its own registry and admin server (`/metrics`) in the
    /// `PerReplica` layout; None: each replica's workers run beside its API.
    pub worker_replicas: Option<usize>,
    /// The connection pool of each API and of each worker server (made
    /// with `pool`'s connect options; each child process opens its own);
    /// None: they all share `pool`.
    pub pools: Option<PoolSizes>,
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

/// Connections of each API's and each worker server's own pool
/// (`spec.orderService.databasePool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSizes {
    pub api: u32,
    pub workers: u32,
}

impl PoolSizes {
    /// The pool of a process of `role`.
    pub fn of(&self, role: ProcessRole) -> u32 {
        match role {
            ProcessRole::Api => self.api,
            ProcessRole::Worker => self.workers,
        }
    }
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
        let os = &experiment.spec().order_service;
        Self {
            pool,
            replicas: os.replicas as usize,
            worker_replicas: os.worker_replicas.map(|n| n as usize),
            pools: Some(PoolSizes {
                api: os.api_pool(),
                workers: os.worker_pool(),
            }),
            api,
            worker: Some(worker_config(experiment, "http://127.0.0.1:0")),
            mock_listen: loopback(),
            faults: experiment.fault_plan(),
            ledger_file: None,
            metrics: MetricsLayout::PerReplica,
        }
    }

    /// Connections the lab's shared pool needs (each replica's API and
    /// workers, plus the run engine's observer) when its servers share it.
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
    /// The order service's child processes ([`Lab::start_processes`]).
    children: Option<Arc<OrderServiceProcesses>>,
}

/// The lab's parts, started in dependency order: mock, then each replica's
/// API and workers.
pub struct Lab;

impl Lab {
    pub async fn start(plan: LabPlan) -> Result<RunningLab> {
        Self::start_with(plan, None).await
    }

    /// The same lab with the order service as child processes: each
    /// replica's API (`lab-service api`) and its workers (`lab-service
    /// worker`, one process) run separately, their settings passed through
    /// the config codecs (`ApiConfig::to_env`, `WorkerConfig::to_env`,
    /// `DatabaseArgs::to_env`), so that a kill is a real `kill -9`
    /// ([`OrderServiceProcesses`]). The payment mock stays in-process (its
    /// ledger is never killed); `plan.pool` serves only
    /// [`RunningLab::start_workers`]. Every child dies with the lab: on
    /// [`RunningLab::shutdown`] (SIGTERM, then SIGKILL), on drop and on
    /// every error (SIGKILL).
    pub async fn start_processes(plan: LabPlan, children: ChildProcesses) -> Result<RunningLab> {
        Self::start_with(plan, Some(children)).await
    }

    async fn start_with(plan: LabPlan, children: Option<ChildProcesses>) -> Result<RunningLab> {
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
            children: None,
        };
        if let Some(children) = children {
            let group = match OrderServiceProcesses::start(&plan, children, &lab.payment_url).await {
                Ok(group) => group,
                Err(e) => {
                    lab.mock_stop.cancel();
                    return Err(e);
                }
            };
            lab.api_urls = group.api_urls.clone();
            lab.metrics_urls = group.metrics_urls.clone();
            lab.children = Some(Arc::new(group));
            return Ok(lab);
        }
        let pool_for = |role: ProcessRole| match plan.pools {
            Some(sizes) => crate::db::pool_of(&plan.pool, sizes.of(role)),
            None => plan.pool.clone(),
        };
        let registry = || match plan.metrics {
            MetricsLayout::Shared => Ok(shared.clone()),
            MetricsLayout::PerReplica => LabMetrics::new(),
        };
        for replica in 0..plan.replicas.max(1) {
            let metrics = registry()?;
            let mut api = plan.api.clone();
            if replica > 0 {
                api.listen.set_port(0);
            }
            let server = ApiServer::build(pool_for(ProcessRole::Api), api, &metrics).await?;
            let url = format!("http://{}", server.local_addr());
            lab.tasks.push(tokio::spawn(server.run_until_stopped(lab.stop.clone())));
            if let (Some(worker), None) = (&plan.worker, plan.worker_replicas) {
                lab.spawn_workers(pool_for(ProcessRole::Worker), worker.clone(), None, &metrics)
                    .await?;
            }
            if plan.metrics == MetricsLayout::PerReplica || replica == 0 {
                lab.metrics_urls.push(format!("{url}/metrics"));
                lab.metrics.push(metrics);
            }
            lab.api_urls.push(url);
        }
        if let (Some(worker), Some(n)) = (&plan.worker, plan.worker_replicas) {
            for _ in 0..n.max(1) {
                // apart from the APIs: its own registry on its own admin
                // server, as a worker pod's (one registry: the API's /metrics)
                let metrics = registry()?;
                let admin = (plan.metrics == MetricsLayout::PerReplica).then(loopback);
                let served = lab
                    .spawn_workers(pool_for(ProcessRole::Worker), worker.clone(), admin, &metrics)
                    .await?;
                if let Some(addr) = served {
                    lab.metrics_urls.push(format!("http://{addr}/metrics"));
                    lab.metrics.push(metrics);
                }
            }
        }
        Ok(lab)
    }
}

impl RunningLab {
    /// Base URL of replica 0's order API.
    pub fn api_url(&self) -> &str {
        &self.api_urls[0]
    }

    /// The order service's child processes (None: it runs in-process).
    pub fn processes(&self) -> Option<Arc<OrderServiceProcesses>> {
        self.children.clone()
    }

    /// Start (more) workers against this lab's database and mock, on
    /// `metrics` (e.g. `lab.metrics[0].clone()`).
    pub async fn start_workers(&mut self, config: WorkerConfig, metrics: &LabMetrics) -> Result<()> {
        self.spawn_workers(self.pool.clone(), config, None, metrics).await?;
        Ok(())
    }

    /// Workers on `pool` (with an admin server on `admin`: its address).
    async fn spawn_workers(
        &mut self,
        pool: PgPool,
        mut config: WorkerConfig,
        admin: Option<SocketAddr>,
        metrics: &LabMetrics,
    ) -> Result<Option<SocketAddr>> {
        config.payment_url = self.payment_url.clone();
        let workers = WorkerServer::build(pool, config, admin, metrics).await?;
        let served = workers.admin_addr();
        self.tasks
            .push(tokio::spawn(workers.run_until_stopped(self.stop.clone())));
        Ok(served)
    }

    /// Stop gracefully: the APIs and workers first (in-flight work finishes
    /// or its leases are released), the mock last so in-flight charges are
    /// answered. The first server error, if any, is returned.
    pub async fn shutdown(self) -> Result<()> {
        self.stop.cancel();
        let mut first: Result<()> = Ok(());
        if let Some(children) = &self.children {
            first = children.shutdown().await;
        }
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

/// How to start the order service as child processes.
#[derive(Debug, Clone)]
pub struct ChildProcesses {
    /// The program: the `lab-service` binary, or `relab` (with
    /// `args: ["lab-service"]`, its hidden subcommand).
    pub program: PathBuf,
    /// The arguments before the subcommand (`api`, `worker`).
    pub args: Vec<String>,
    /// The order service's database (already migrated); each process
    /// opens its own pool of `database_max_connections`, or of its role's
    /// size in the plan's `pools`.
    pub database: DatabaseArgs,
}

/// Which part of the order service a child process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessRole {
    /// `lab-service api`
    Api,
    /// `lab-service worker` (all the workers of one replica, or one of
    /// the `worker_replicas`)
    Worker,
}

impl std::fmt::Display for ProcessRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProcessRole::Api => "api",
            ProcessRole::Worker => "worker",
        })
    }
}

/// How long a (re)started child gets to answer `/readyz`.
const CHILD_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child gets to exit after SIGTERM before it is killed.
const CHILD_STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// One child process and how to start it again: same program, same
/// environment, same ports (the load generator's API URL and the sampler's
/// metrics URLs stay valid across a restart).
struct LabProcess {
    role: ProcessRole,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// `/readyz` of the API or of the worker's admin server.
    ready_url: String,
    /// stdout and stderr, appended across restarts.
    log: PathBuf,
    child: Option<tokio::process::Child>,
}

impl LabProcess {
    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let child = cmd.spawn().map_err(|e| {
            Error::Other(format!(
                "starting the order service's {} ({}): {e}",
                self.role,
                self.program.display()
            ))
        })?;
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Until `/readyz` answers 200; an exit or the timeout is an error with
    /// the end of the process's log.
    async fn wait_ready(&mut self, http: &reqwest::Client) -> Result<()> {
        let started = tokio::time::Instant::now();
        loop {
            if let Ok(r) = http.get(&self.ready_url).send().await {
                if r.status() == reqwest::StatusCode::OK {
                    return Ok(());
                }
            }
            let exited = match self.child.as_mut() {
                Some(c) => c.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                return Err(Error::Other(format!(
                    "the order service's {} exited ({status}) before it was ready:\n{}",
                    self.role,
                    self.log_tail()
                )));
            }
            if started.elapsed() > CHILD_READY_TIMEOUT {
                return Err(Error::Other(format!(
                    "the order service's {} was not ready ({}) within {CHILD_READY_TIMEOUT:?}:\n{}",
                    self.role,
                    self.ready_url,
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A free loopback port (bound and released: the child binds it next).
fn free_loopback_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The order service of a lab as child processes: an API process per
/// replica, and a worker process per replica (or `worker_replicas` of them). They can be killed with SIGKILL and started
/// again with the same settings ([`OrderServiceProcesses::kill_workers`],
/// [`OrderServiceProcesses::kill_all`]); no lease is released, no in-flight
/// request finishes, no shutdown hook runs: the database is left exactly as
/// a `kill -9` leaves it.
pub struct OrderServiceProcesses {
    procs: tokio::sync::Mutex<Vec<LabProcess>>,
    http: reqwest::Client,
    log_dir: PathBuf,
    api_urls: Vec<String>,
    metrics_urls: Vec<String>,
    workers: usize,
}

impl OrderServiceProcesses {
    async fn start(plan: &LabPlan, children: ChildProcesses, payment_url: &str) -> Result<Self> {
        let log_dir = std::env::temp_dir().join(format!("relab-lab-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&log_dir)?;
        let mut procs = Vec::new();
        let (mut api_urls, mut metrics_urls) = (Vec::new(), Vec::new());
        let command = |sub: &str| {
            let mut args = children.args.clone();
            args.push(sub.to_string());
            args
        };
        let database = |role: ProcessRole| match plan.pools {
            Some(sizes) => DatabaseArgs {
                database_max_connections: sizes.of(role),
                ..children.database.clone()
            },
            None => children.database.clone(),
        };
        let worker_process = |name: String, worker: &WorkerConfig| -> Result<(LabProcess, String)> {
            let mut worker = worker.clone();
            worker.payment_url = payment_url.to_string();
            let admin = SocketAddr::from(([127, 0, 0, 1], free_loopback_port()?));
            let mut env = worker.to_env();
            env.extend(database(ProcessRole::Worker).to_env());
            env.extend(crate::cli::admin_listen_env(admin));
            let process = LabProcess {
                role: ProcessRole::Worker,
                program: children.program.clone(),
                args: command("worker"),
                env,
                ready_url: format!("http://{admin}/readyz"),
                log: log_dir.join(format!("{name}.log")),
                child: None,
            };
            Ok((process, format!("http://{admin}/metrics")))
        };
        for replica in 0..plan.replicas.max(1) {
            let mut api = plan.api.clone();
            let port = match (replica, api.listen.port()) {
                (0, p) if p != 0 => p,
                _ => free_loopback_port()?,
            };
            api.listen = SocketAddr::new(api.listen.ip(), port);
            let url = format!("http://{}", api.listen);
            let mut env = api.to_env();
            env.extend(database(ProcessRole::Api).to_env());
            procs.push(LabProcess {
                role: ProcessRole::Api,
                program: children.program.clone(),
                args: command("api"),
                env,
                ready_url: format!("{url}/readyz"),
                log: log_dir.join(format!("api-{replica}.log")),
                child: None,
            });
            metrics_urls.push(format!("{url}/metrics"));
            api_urls.push(url);
            if let (Some(worker), None) = (&plan.worker, plan.worker_replicas) {
                let (process, metrics) = worker_process(format!("worker-{replica}"), worker)?;
                procs.push(process);
                metrics_urls.push(metrics);
            }
        }
        if let (Some(worker), Some(n)) = (&plan.worker, plan.worker_replicas) {
            for i in 0..n.max(1) {
                let (process, metrics) = worker_process(format!("worker-{i}"), worker)?;
                procs.push(process);
                metrics_urls.push(metrics);
            }
        }
        let workers = procs.iter().filter(|p| p.role == ProcessRole::Worker).count();
        let group = Self {
            procs: tokio::sync::Mutex::new(procs),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .map_err(|e| Error::Other(format!("http client: {e}")))?,
            log_dir,
            api_urls,
            metrics_urls,
            workers,
        };
        // on an error the group is dropped: every child started is killed
        {
            let mut procs = group.procs.lock().await;
            for p in procs.iter_mut() {
                p.spawn()?;
            }
            for p in procs.iter_mut() {
                p.wait_ready(&group.http).await?;
            }
        }
        Ok(group)
    }

    /// Worker processes (one per replica, or `worker_replicas`).
    pub fn worker_processes(&self) -> usize {
        self.workers
    }

    /// The process ids of each role, in replica order.
    pub async fn pids(&self, role: ProcessRole) -> Vec<u32> {
        let procs = self.procs.lock().await;
        procs
            .iter()
            .filter(|p| p.role == role)
            .filter_map(LabProcess::pid)
            .collect()
    }

    /// SIGKILL the first `count` worker processes, wait for them to die,
    /// start them again with the same settings and wait until they are
    /// ready. What was hit: `worker pid N`.
    pub async fn kill_workers(&self, count: usize) -> Result<Vec<String>> {
        self.kill_and_restart(|p| p.role == ProcessRole::Worker, count).await
    }

    /// SIGKILL every API and worker process, then start them all again and
    /// wait until each answers `/readyz`. What was hit: `api pid N`,
    /// `worker pid M`.
    pub async fn kill_all(&self) -> Result<Vec<String>> {
        self.kill_and_restart(|_| true, usize::MAX).await
    }

    async fn kill_and_restart(&self, pick: impl Fn(&LabProcess) -> bool, count: usize) -> Result<Vec<String>> {
        let mut procs = self.procs.lock().await;
        let chosen: Vec<usize> = (0..procs.len()).filter(|&i| pick(&procs[i])).take(count).collect();
        let mut hit = Vec::new();
        // all at once, then wait for each to be gone
        for &i in &chosen {
            let p = &mut procs[i];
            if let Some(child) = p.child.as_mut() {
                if let Some(pid) = child.id() {
                    child.start_kill()?;
                    hit.push(format!("{} pid {pid}", p.role));
                }
            }
        }
        for &i in &chosen {
            if let Some(child) = procs[i].child.as_mut() {
                child.wait().await?;
            }
        }
        for &i in &chosen {
            procs[i].spawn()?;
        }
        for &i in &chosen {
            procs[i].wait_ready(&self.http).await?;
        }
        Ok(hit)
    }

    /// SIGTERM every child (in-flight work finishes or its leases are
    /// released), SIGKILL what has not exited after a while; then the logs
    /// are removed. A child that exited unsuccessfully is an error.
    async fn shutdown(&self) -> Result<()> {
        let mut procs = self.procs.lock().await;
        for p in procs.iter() {
            if let Some(pid) = p.pid() {
                let _ = tokio::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
        }
        let mut first = Ok(());
        for p in procs.iter_mut() {
            let Some(child) = p.child.as_mut() else { continue };
            let status = match tokio::time::timeout(CHILD_STOP_TIMEOUT, child.wait()).await {
                Ok(status) => status?,
                Err(_) => {
                    child.start_kill()?;
                    child.wait().await?;
                    if first.is_ok() {
                        first = Err(Error::Other(format!(
                            "the order service's {} did not stop within {CHILD_STOP_TIMEOUT:?}; killed",
                            p.role
                        )));
                    }
                    continue;
                }
            };
            if !status.success() && first.is_ok() {
                first = Err(Error::Other(format!(
                    "the order service's {} exited with {status}:\n{}",
                    p.role,
                    p.log_tail()
                )));
            }
        }
        first
    }
}

impl Drop for OrderServiceProcesses {
    fn drop(&mut self) {
        // the children themselves are killed by kill_on_drop
        let _ = std::fs::remove_dir_all(&self.log_dir);
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
        lease: Duration::from_secs(u64::from(os.lease_seconds)),
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
        assert_eq!(w.lease, Duration::from_secs(30), "the default lease");
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

    #[tokio::test]
    async fn worker_replicas_and_pools_reach_the_plan() {
        let manifest = |order_service: &str| {
            ValidatedExperiment::from_manifest(&format!(
                "apiVersion: relab.dev/v1alpha1\nkind: ReliabilityExperiment\nmetadata: {{name: t}}\nspec:\n  load: {{ratePerSecond: 5, durationSeconds: 3}}\n  orderService: {order_service}\n"
            ))
            .unwrap()
            .0
        };
        let pool = PgPool::connect_lazy("postgres://postgres@127.0.0.1:1/none").unwrap();
        let plan = LabPlan::for_experiment(&manifest("{replicas: 2}"), pool.clone());
        assert_eq!((plan.replicas, plan.worker_replicas), (2, None), "today's layout");
        assert_eq!(plan.pools, Some(PoolSizes { api: 16, workers: 16 }));
        let plan = LabPlan::for_experiment(
            &manifest("{replicas: 2, workerReplicas: 3, workers: 12, databasePool: {api: 5}}"),
            pool,
        );
        assert_eq!((plan.replicas, plan.worker_replicas), (2, Some(3)));
        assert_eq!(plan.pools, Some(PoolSizes { api: 5, workers: 20 }));
        assert_eq!(plan.pools.unwrap().of(ProcessRole::Worker), 20);
    }
}

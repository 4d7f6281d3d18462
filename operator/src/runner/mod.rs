//! `relab run <experiment.yaml>`: the same manifest a user would
//! `kubectl apply`, run on this machine without a cluster.
//!
//! Postgres (ephemeral from the system's binaries, or a fresh database on
//! `--database-url`), the payment mock, one order API + workers per replica
//! and the load generator all run in-process on loopback ports. The result
//! is the same status the operator writes: printed as a table, written as
//! YAML and JSON, and drawn as an HTML report. Exit code: 0 objectives met,
//! 1 not met or inconclusive, 2 invalid manifest or environment error.

pub mod disruptor;
pub mod junit;
pub mod postgres;
pub mod progress;
pub mod report;
pub mod table;

use crate::crd::{ReliabilityExperimentStatus, VerdictResult};
use lab_service::lab::{self, Lab, LabPlan};
use lab_service::run::targets::MetricsTargets;
use lab_service::run::RunProgress;
use lab_service::run::{ExperimentRun, RunOutput};
use relab_model::compare;
use relab_model::disruptions::DisruptionAction;
use relab_model::status::{self, condition};
use relab_model::validate::ManifestMeta;
use relab_model::{FieldError, ValidatedExperiment};
use std::path::PathBuf;
use std::sync::OnceLock;
use tokio_util::sync::CancellationToken;

/// The program that runs the order service's child processes, and the
/// arguments before `api` / `worker`.
static LAB_PROGRAM: OnceLock<(PathBuf, Vec<String>)> = OnceLock::new();

/// Run the order service's child processes with `program` (the `relab`
/// binary: `relab lab-service api|worker`). Without it, `relab run` uses
/// its own executable, or (from a test binary) the `relab` next to it.
/// Set once per process; a later call is ignored.
pub fn set_lab_program(program: impl Into<PathBuf>) {
    let _ = LAB_PROGRAM.set((program.into(), vec!["lab-service".to_string()]));
}

fn lab_program() -> Result<(PathBuf, Vec<String>), RunError> {
    if let Some(p) = LAB_PROGRAM.get() {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let is_relab = |p: &std::path::Path| p.file_stem().is_some_and(|s| s == "relab") && p.is_file();
    let candidates = [
        Some(exe.clone()),
        exe.parent().map(|d| d.join("relab")),
        exe.parent().and_then(|d| d.parent()).map(|d| d.join("relab")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| is_relab(p))
        .map(|p| (p, vec!["lab-service".to_string()]))
        .ok_or_else(|| {
            RunError::Lab(lab_service::Error::Other(format!(
                "the order service must run as child processes (the experiment kills them), but no relab \
                 program was found next to {}",
                exe.display()
            )))
        })
}

/// Whether `experiment` kills the order service (it then runs as child processes).
fn kills_processes(experiment: &ValidatedExperiment) -> bool {
    experiment.disruptions().iter().any(|d| {
        matches!(
            d.action,
            DisruptionAction::KillWorkers | DisruptionAction::KillOrderService
        )
    })
}

/// Whether `experiment` disrupts the database's network (the fault proxy goes in the path).
fn disrupts_the_network(experiment: &ValidatedExperiment) -> bool {
    experiment.disruptions().iter().any(|d| {
        matches!(
            d.action,
            DisruptionAction::DatabaseLatency | DisruptionAction::DatabaseOutage
        )
    })
}

/// What `relab run` cannot do with these options: restart a server it does
/// not own (`--database-url`).
pub fn check_disruptions(experiment: &ValidatedExperiment, opts: &RunOptions) -> Result<(), RunError> {
    if opts.database_url.is_none() {
        return Ok(());
    }
    let problems: Vec<FieldError> = experiment
        .spec()
        .disruptions
        .iter()
        .enumerate()
        .filter(|(_, d)| d.action == DisruptionAction::RestartDatabase)
        .map(|(i, d)| FieldError {
            path: format!("spec.disruptions[{i}]"),
            message: format!(
                "{:?}: RestartDatabase restarts relab run's own ephemeral Postgres; with --database-url \
                 (a server relab does not own) it cannot be carried out: run without --database-url",
                d.name
            ),
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RunError::Invalid(problems))
    }
}

/// How `relab run` runs (the time scale is the experiment's: [`load_manifest`]).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Use this server (a fresh database is created and dropped) instead of an ephemeral one.
    pub database_url: Option<String>,
    /// Where status.yaml, status.json, timeline.json and report.html go (created).
    pub output_dir: Option<PathBuf>,
    /// `--baseline`: the figures of an earlier run's status, and its name.
    pub baseline: Option<(compare::GateFigures, String)>,
}

/// An earlier run's `status.json` (or `status.yaml`) as a baseline: its
/// merged results' figures. The error says what is wrong with the file.
pub fn read_baseline(path: &std::path::Path) -> Result<(compare::GateFigures, String), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--baseline {}: {e}", path.display()))?;
    let doc: serde_json::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("--baseline {}: not JSON or YAML: {e}", path.display()))?;
    let status: ReliabilityExperimentStatus = serde_json::from_value(doc.get("status").cloned().unwrap_or(doc))
        .map_err(|e| format!("--baseline {}: not a relab status: {e}", path.display()))?;
    let results = status.results.as_ref().ok_or_else(|| {
        format!(
            "--baseline {}: the status has no results (a comparison's status cannot be a baseline)",
            path.display()
        )
    })?;
    Ok(((results).into(), path.display().to_string()))
}

/// Why a run could not produce a verdict (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid manifest:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<FieldError>),
    #[error(transparent)]
    Postgres(#[from] postgres::PostgresError),
    #[error("lab: {0}")]
    Lab(#[from] lab_service::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("writing results: {0}")]
    Io(#[from] std::io::Error),
    #[error("interrupted")]
    Interrupted,
}

/// What a finished local run produced.
pub struct LocalRun {
    pub name: String,
    pub status: ReliabilityExperimentStatus,
    /// The (last) lab run's output: its results and timeline.
    pub output: RunOutput,
    /// Every lab run's output, in execution order.
    pub runs: Vec<LabRunOutput>,
    /// Files written (status.yaml, status.json, timeline.json, report.html).
    pub files: Vec<PathBuf>,
}

impl LocalRun {
    /// 0 objectives met, 1 not met or inconclusive.
    pub fn exit_code(&self) -> u8 {
        match self.status.verdict.as_ref().map(|v| v.result) {
            Some(VerdictResult::Passed) => 0,
            _ => 1,
        }
    }
}

/// Read, validate and time-scale a manifest (every problem, exit 2).
pub fn load_manifest(text: &str, time_scale: f64) -> Result<(ValidatedExperiment, ManifestMeta), RunError> {
    let (experiment, meta) = ValidatedExperiment::from_manifest(text).map_err(RunError::Invalid)?;
    let experiment = experiment.with_time_scale(time_scale).map_err(RunError::Invalid)?;
    Ok((experiment, meta))
}

/// The Postgres server of a `relab run`: ephemeral (stopped afterwards) or
/// `--database-url`'s. Every lab run gets a fresh database on it, dropped
/// after the run.
enum Server {
    Ephemeral(postgres::EphemeralPostgres),
    External(String),
}

impl Server {
    async fn open(opts: &RunOptions) -> Result<Self, RunError> {
        match &opts.database_url {
            None => Ok(Server::Ephemeral(
                tokio::task::spawn_blocking(postgres::EphemeralPostgres::start)
                    .await
                    .expect("join")?,
            )),
            Some(admin_url) => Ok(Server::External(admin_url.clone())),
        }
    }

    fn admin_url(&self) -> String {
        match self {
            Server::Ephemeral(pg) => pg.url(),
            Server::External(url) => url.clone(),
        }
    }

    fn restarter(&self) -> Option<postgres::PgRestarter> {
        match self {
            Server::Ephemeral(pg) => Some(pg.restarter()),
            Server::External(_) => None,
        }
    }
}

/// `url` with its host and port replaced by `addr` (the fault proxy's).
fn through(url: &str, addr: std::net::SocketAddr) -> Result<String, RunError> {
    let bad = |e: String| RunError::Lab(lab_service::Error::Other(format!("database URL {url:?}: {e}")));
    let mut parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    parsed
        .set_host(Some(&addr.ip().to_string()))
        .map_err(|e| bad(e.to_string()))?;
    parsed
        .set_port(Some(addr.port()))
        .map_err(|()| bad("no port can be set".into()))?;
    Ok(parsed.to_string())
}

/// `host:port` of a database URL.
fn host_port(url: &str) -> Result<String, RunError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| RunError::Lab(lab_service::Error::Other(format!("database URL: {e}"))))?;
    Ok(format!(
        "{}:{}",
        parsed.host_str().unwrap_or("127.0.0.1"),
        parsed.port().unwrap_or(5432)
    ))
}

/// One lab run's output, and which variant and repeat it was.
pub struct LabRunOutput {
    pub variant: Option<String>,
    pub repeat: u32,
    pub seed: u64,
    pub output: RunOutput,
}

/// One lab run on a fresh database of `server`: the lab, the run engine,
/// everything stopped and the database dropped afterwards.
async fn run_lab(
    server: &Server,
    experiment: &ValidatedExperiment,
    progress: tokio::sync::watch::Sender<RunProgress>,
    stop: &CancellationToken,
) -> Result<RunOutput, RunError> {
    let admin_url = server.admin_url();
    let name = format!("relab_run_{}", uuid::Uuid::new_v4().simple());
    let url = lab_service::db::create_database(&admin_url, &name).await?;
    let proxy_stop = CancellationToken::new();
    let result = async {
        let pool_size = LabPlan::pool_size(experiment.spec().order_service.replicas);
        let pool = lab_service::db::connect_and_migrate(&url, pool_size).await?;
        // the database fault proxy between the order service and Postgres;
        // the run engine, the sampler and the audit keep the direct URL
        let proxy = if disrupts_the_network(experiment) {
            let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().expect("static address");
            let proxy = lab_service::db_proxy::start(
                lab_service::db_proxy::DbProxyConfig {
                    listen: loopback,
                    upstream: host_port(&url)?,
                    admin_listen: loopback,
                },
                proxy_stop.clone(),
            )
            .await?;
            Some(proxy)
        } else {
            None
        };
        let service_url = match &proxy {
            Some(p) => through(&url, p.listen)?,
            None => url.clone(),
        };
        // the ledger journaled as on a cluster (one file per run, dropped
        // with its database; never on the disrupted database)
        let plan = LabPlan {
            ledger_file: Some(lab_service::lab::default_ledger_file(&url)),
            ..LabPlan::for_experiment(experiment, pool.clone())
        };
        let (running, service_pool) = if kills_processes(experiment) {
            let (program, args) = lab_program()?;
            let os = &experiment.spec().order_service;
            let children = lab::ChildProcesses {
                program,
                args,
                database: lab_service::config::DatabaseArgs {
                    database_url: service_url.clone(),
                    // each process's own: the plan's pools (databasePool)
                    database_max_connections: os.worker_pool(),
                    database_connect_timeout_secs: 30,
                },
            };
            (Lab::start_processes(plan, children).await?, None)
        } else if proxy.is_some() {
            let service_pool = lab_service::db::connect_and_migrate(&service_url, pool_size).await?;
            let plan = LabPlan {
                pool: service_pool.clone(),
                ..plan
            };
            (Lab::start(plan).await?, Some(service_pool))
        } else {
            (Lab::start(plan).await?, None)
        };
        let carrier = disruptor::LocalDisruptor {
            processes: running.processes(),
            postgres: server.restarter(),
        };
        let run = ExperimentRun {
            load: lab::load_config(experiment),
            api_url: running.api_url().to_string(),
            database_url: url.clone(),
            payment_url: running.payment_url.clone(),
            metrics: MetricsTargets::fixed(running.metrics_urls.clone()),
            faults: Some(experiment.fault_plan()),
            drain_timeout: experiment.drain_timeout(),
            wait_ready: std::time::Duration::ZERO,
            stop_when: experiment.spec().stop_when.clone(),
            success_target: experiment.spec().objectives.success_ratio,
            disruptions: experiment.disruptions(),
            db_proxy_url: proxy.as_ref().map(|p| format!("http://{}", p.admin)),
            carrier: Some(lab_service::run::disrupt::Carrier(std::sync::Arc::new(carrier))),
            disruption_log: Default::default(),
            shares: lab_service::run::shares::ShareBoard::new(experiment.spec().load.generators()),
        };
        // load.parallelism: the followers are tasks here
        let output = lab_service::run::shares::run_with_local_followers(run, progress, stop.clone()).await;
        let stopped = running.shutdown().await;
        if let Some(p) = service_pool {
            p.close().await;
        }
        pool.close().await;
        let output = output?;
        stopped?;
        Ok::<_, RunError>(output)
    }
    .await;
    proxy_stop.cancel();
    if let Err(e) = lab_service::db::drop_database(&admin_url, &name).await {
        tracing::warn!(error = %e, database = %name, "could not drop the run's database");
    }
    let _ = std::fs::remove_file(lab_service::lab::default_ledger_file(&url));
    result
}

/// Run a validated experiment on this machine: every lab run of it (its
/// variants and repeats, interleaved A1 B1 A2 B2 ...), one at a time, then
/// the status the operator would write.
pub async fn run_local(
    experiment: &ValidatedExperiment,
    opts: &RunOptions,
    progress: tokio::sync::watch::Sender<RunProgress>,
    stop: CancellationToken,
) -> Result<LocalRun, RunError> {
    let name = experiment.name().to_string();
    check_disruptions(experiment, opts)?;
    let started = chrono::Utc::now();
    let server = Server::open(opts).await?;
    let plan = experiment.lab_runs();
    let (variants_total, runs_total) = (experiment.variants().len(), experiment.repeat().runs);
    let mut status = ReliabilityExperimentStatus {
        run_id: experiment.spec().run_id.clone(),
        start_time: Some(status::timestamp(started)),
        variants: compare::initial_variants(experiment),
        execution: compare::execution(experiment),
        ..ReliabilityExperimentStatus::default()
    };
    let mut outputs = Vec::new();
    for (order, lab_run) in plan.iter().enumerate() {
        let label = match lab_run.variant {
            Some(v) => format!(
                "variant {}/{variants_total}, run {}/{runs_total}",
                v + 1,
                lab_run.repeat + 1
            ),
            None if runs_total > 1 => format!("run {}/{runs_total}", lab_run.repeat + 1),
            None => String::new(),
        };
        progress.send_modify(|p| {
            *p = RunProgress {
                label: label.clone(),
                ..RunProgress::default()
            }
        });
        let run_started = status::timestamp(chrono::Utc::now());
        let output = run_lab(&server, &lab_run.experiment, progress.clone(), &stop).await?;
        if stop.is_cancelled() {
            return Err(RunError::Interrupted);
        }
        let seed = lab_run.experiment.spec().payment.seed;
        if !status.variants.is_empty() {
            let finished = status::timestamp(chrono::Utc::now());
            let verdict = relab_model::verdict::judge(lab_run.experiment.spec(), &output.results).result;
            let record = compare::run_record(
                lab_run.repeat,
                seed,
                order as u32 + 1,
                run_started,
                finished,
                &output.results,
                verdict,
            );
            status.variants[lab_run.variant.unwrap_or(0)].runs.push(record);
        }
        outputs.push(LabRunOutput {
            variant: lab_run.variant.map(|v| experiment.variants()[v].name.clone()),
            repeat: lab_run.repeat,
            seed,
            output,
        });
    }
    drop(server);

    let now = status::timestamp(chrono::Utc::now());
    let baseline = opts.baseline.clone();
    let judged = if status.variants.is_empty() {
        let mut results = outputs[0].output.results.clone();
        results.histograms = None;
        let mut verdict = relab_model::verdict::judge(experiment.spec(), &results);
        status.baseline = compare::gate(experiment.spec(), &mut verdict, &results, baseline);
        let mut judged = status::judged_from(verdict, None, &now);
        judged.conditions[0].message = format!("load, drain and audit finished (drained: {})", results.drained);
        status.results = Some(results);
        judged
    } else {
        compare::conclude(experiment, &mut status, baseline, None, &now)
    };
    status.finish_time = Some(now.clone());
    status.phase = judged.phase;
    status.verdict = Some(judged.verdict);
    status.conditions = vec![condition(
        "Valid",
        "True",
        "SpecValid",
        "the spec passed validation".into(),
        None,
        &now,
    )];
    status.conditions.extend(judged.conditions);
    let files = match &opts.output_dir {
        Some(dir) => write_outputs(dir, experiment, &status, &outputs)?,
        None => Vec::new(),
    };
    let output = outputs.last().map(|o| o.output.clone()).unwrap_or_default();
    Ok(LocalRun {
        name,
        status,
        output,
        runs: outputs,
        files,
    })
}

fn write_outputs(
    dir: &std::path::Path,
    experiment: &ValidatedExperiment,
    status: &ReliabilityExperimentStatus,
    runs: &[LabRunOutput],
) -> Result<Vec<PathBuf>, RunError> {
    std::fs::create_dir_all(dir)?;
    let yaml = serde_yaml::to_string(&serde_json::json!({ "status": status })).expect("status serializes");
    let last = runs.last().map(|r| r.output.timeline.clone()).unwrap_or_default();
    let timelines: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| serde_json::json!({ "variant": r.variant, "repeat": r.repeat, "seed": r.seed, "timeline": r.output.timeline }))
        .collect();
    let mut files = vec![
        ("status.yaml", yaml),
        (
            "status.json",
            serde_json::to_string_pretty(&serde_json::json!({ "status": status })).expect("serializes"),
        ),
        (
            "timeline.json",
            serde_json::to_string_pretty(&last).expect("serializes"),
        ),
    ];
    if runs.len() > 1 {
        files.push((
            "timelines.json",
            serde_json::to_string_pretty(&timelines).expect("serializes"),
        ));
    }
    files.push(("report.html", report::render_status(experiment, status, runs)));
    let mut written = Vec::new();
    for (file, body) in files {
        let path = dir.join(file);
        std::fs::write(&path, body)?;
        written.push(path);
    }
    Ok(written)
}

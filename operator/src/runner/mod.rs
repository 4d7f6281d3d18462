//! `relab run <experiment.yaml>`: the same manifest a user would
//! `kubectl apply`, run on this machine without a cluster.
//!
//! Postgres (ephemeral from the system's binaries, or a fresh database on
//! `--database-url`), the payment mock, one order API + workers per replica
//! and the load generator all run in-process on loopback ports. The result
//! is the same status the operator writes: printed as a table, written as
//! YAML and JSON, and drawn as an HTML report. Exit code: 0 objectives met,
//! 1 not met or inconclusive, 2 invalid manifest or environment error.

pub mod postgres;
pub mod progress;
pub mod report;
pub mod table;

use crate::crd::{ReliabilityExperiment, ReliabilityExperimentStatus, VerdictResult};
use crate::lab_config;
use crate::status;
use crate::validate::{self, FieldError};
use lab_service::app::{ApiServer, MockServer, WorkerServer};
use lab_service::experiment::{run_experiment, ExperimentRun, RunOutput};
use lab_service::loadgen::Progress;
use lab_service::metrics::LabMetrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How `relab run` runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Use this server (a fresh database is created and dropped) instead of an ephemeral one.
    pub database_url: Option<String>,
    /// Where status.yaml, status.json, timeline.json and report.html go (created).
    pub output_dir: Option<PathBuf>,
    /// Multiply every duration (load, stages, fault phases) by this.
    pub time_scale: f64,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            database_url: None,
            output_dir: None,
            time_scale: 1.0,
        }
    }
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
    pub output: RunOutput,
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

/// Read, validate and (optionally) time-scale a manifest.
pub fn load_manifest(text: &str, time_scale: f64) -> Result<ReliabilityExperiment, RunError> {
    let mut rx = validate::parse_manifest(text).map_err(RunError::Invalid)?;
    let problems = validate::validate(&rx.spec);
    if !problems.is_empty() {
        return Err(RunError::Invalid(problems));
    }
    if (time_scale - 1.0).abs() > f64::EPSILON {
        validate::scale_time(&mut rx.spec, time_scale);
    }
    Ok(rx)
}

/// The database the run uses; dropped (or the server stopped) afterwards.
enum Database {
    Ephemeral(postgres::EphemeralPostgres),
    Fresh {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl Database {
    async fn open(opts: &RunOptions) -> Result<Self, RunError> {
        match &opts.database_url {
            None => Ok(Database::Ephemeral(
                tokio::task::spawn_blocking(postgres::EphemeralPostgres::start)
                    .await
                    .expect("join")?,
            )),
            Some(admin_url) => {
                let name = format!("relab_run_{}", uuid::Uuid::new_v4().simple());
                let url = lab_service::db::create_database(admin_url, &name).await?;
                Ok(Database::Fresh {
                    url,
                    admin_url: admin_url.clone(),
                    name,
                })
            }
        }
    }

    fn url(&self) -> String {
        match self {
            Database::Ephemeral(pg) => pg.url(),
            Database::Fresh { url, .. } => url.clone(),
        }
    }

    async fn close(self) {
        if let Database::Fresh { admin_url, name, .. } = self {
            if let Err(e) = lab_service::db::drop_database(&admin_url, &name).await {
                tracing::warn!(error = %e, database = %name, "could not drop the run's database");
            }
        }
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("static address")
}

/// Run a validated experiment on this machine.
pub async fn run_local(
    rx: &ReliabilityExperiment,
    opts: &RunOptions,
    progress: tokio::sync::watch::Sender<Progress>,
    stop: CancellationToken,
) -> Result<LocalRun, RunError> {
    let name = rx.metadata.name.clone().unwrap_or_else(|| "experiment".into());
    let spec = &rx.spec;
    let started = chrono::Utc::now();
    let db = Database::open(opts).await?;
    let result = async {
        let url = db.url();
        let pool = lab_service::db::connect_and_migrate(&url, 8 + 4 * spec.order_service.replicas).await?;
        let lab_stop = CancellationToken::new();
        let mock_metrics = LabMetrics::new().map_err(lab_service::Error::from)?;
        let mock = MockServer::build(loopback(), lab_config::fault_plan(spec), &mock_metrics).await?;
        let payment_url = format!("http://{}", mock.local_addr());
        let mut tasks = vec![tokio::spawn(mock.run_until_stopped(lab_stop.clone()))];
        let mut api_urls = Vec::new();
        for _ in 0..spec.order_service.replicas {
            let metrics = LabMetrics::new().map_err(lab_service::Error::from)?;
            let mut api_cfg = lab_config::api_config(spec);
            api_cfg.listen = loopback();
            let api = ApiServer::build(pool.clone(), api_cfg, &metrics).await?;
            api_urls.push(format!("http://{}", api.local_addr()));
            let workers = WorkerServer::build(
                pool.clone(),
                lab_config::worker_config(spec, &payment_url),
                None,
                &metrics,
            )
            .await?;
            tasks.push(tokio::spawn(api.run_until_stopped(lab_stop.clone())));
            tasks.push(tokio::spawn(workers.run_until_stopped(lab_stop.clone())));
        }
        let run = ExperimentRun {
            load: lab_config::load_config(spec),
            api_url: api_urls[0].clone(),
            database_url: url.clone(),
            payment_url: payment_url.clone(),
            metrics_urls: api_urls.iter().map(|u| format!("{u}/metrics")).collect(),
            faults: Some(lab_config::fault_plan(spec)),
            drain_timeout: Duration::from_secs(u64::from(spec.load.drain_timeout_seconds)),
            wait_ready: Duration::ZERO,
        };
        let output = run_experiment(run, progress, stop.clone()).await;
        lab_stop.cancel();
        for t in tasks {
            let _ = t.await;
        }
        pool.close().await;
        Ok::<_, RunError>(output?)
    }
    .await;
    db.close().await;
    let output = result?;
    if stop.is_cancelled() {
        return Err(RunError::Interrupted);
    }

    let now = status::timestamp(chrono::Utc::now());
    let gen = rx.metadata.generation;
    let judged = status::judge_run(spec, &output.results, gen, &now);
    let mut conditions = vec![status::condition(
        "Valid",
        "True",
        "SpecValid",
        "the spec passed validation".into(),
        gen,
        &now,
    )];
    conditions.extend(judged.conditions);
    let status = ReliabilityExperimentStatus {
        phase: judged.phase,
        observed_generation: gen,
        run_id: spec.run_id.clone(),
        start_time: Some(status::timestamp(started)),
        finish_time: Some(now.clone()),
        conditions,
        progress: None,
        results: Some(output.results.clone()),
        verdict: Some(judged.verdict),
        dashboard: None,
        history: Vec::new(),
    };
    let files = match &opts.output_dir {
        Some(dir) => write_outputs(dir, &name, rx, &status, &output)?,
        None => Vec::new(),
    };
    Ok(LocalRun {
        name,
        status,
        output,
        files,
    })
}

fn write_outputs(
    dir: &std::path::Path,
    name: &str,
    rx: &ReliabilityExperiment,
    status: &ReliabilityExperimentStatus,
    output: &RunOutput,
) -> Result<Vec<PathBuf>, RunError> {
    std::fs::create_dir_all(dir)?;
    let yaml = serde_yaml::to_string(&serde_json::json!({ "status": status })).expect("status serializes");
    let files = [
        ("status.yaml", yaml),
        (
            "status.json",
            serde_json::to_string_pretty(&serde_json::json!({ "status": status })).expect("serializes"),
        ),
        (
            "timeline.json",
            serde_json::to_string_pretty(&output.timeline).expect("serializes"),
        ),
        (
            "report.html",
            report::render(
                name,
                &rx.spec,
                status.results.as_ref().expect("results set"),
                status.verdict.as_ref().expect("verdict set"),
                &output.timeline,
            ),
        ),
    ];
    let mut written = Vec::new();
    for (file, body) in files {
        let path = dir.join(file);
        std::fs::write(&path, body)?;
        written.push(path);
    }
    Ok(written)
}

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

use crate::crd::{ReliabilityExperimentStatus, VerdictResult};
use lab_service::lab::{self, Lab, LabPlan};
use lab_service::run::RunProgress;
use lab_service::run::{run_experiment, ExperimentRun, RunOutput};
use relab_model::status::{self, condition};
use relab_model::validate::ManifestMeta;
use relab_model::{FieldError, ValidatedExperiment};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// How `relab run` runs (the time scale is the experiment's: [`load_manifest`]).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Use this server (a fresh database is created and dropped) instead of an ephemeral one.
    pub database_url: Option<String>,
    /// Where status.yaml, status.json, timeline.json and report.html go (created).
    pub output_dir: Option<PathBuf>,
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

/// Read, validate and time-scale a manifest (every problem, exit 2).
pub fn load_manifest(text: &str, time_scale: f64) -> Result<(ValidatedExperiment, ManifestMeta), RunError> {
    let (experiment, meta) = ValidatedExperiment::from_manifest(text).map_err(RunError::Invalid)?;
    let experiment = experiment.with_time_scale(time_scale).map_err(RunError::Invalid)?;
    Ok((experiment, meta))
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

/// Run a validated experiment on this machine.
pub async fn run_local(
    experiment: &ValidatedExperiment,
    opts: &RunOptions,
    progress: tokio::sync::watch::Sender<RunProgress>,
    stop: CancellationToken,
) -> Result<LocalRun, RunError> {
    let name = experiment.name().to_string();
    let spec = experiment.spec();
    let started = chrono::Utc::now();
    let db = Database::open(opts).await?;
    let result = async {
        let url = db.url();
        let pool_size = LabPlan::pool_size(spec.order_service.replicas);
        let pool = lab_service::db::connect_and_migrate(&url, pool_size).await?;
        let running = Lab::start(LabPlan::for_experiment(experiment, pool.clone())).await?;
        let run = ExperimentRun {
            load: lab::load_config(experiment),
            api_url: running.api_url().to_string(),
            database_url: url.clone(),
            payment_url: running.payment_url.clone(),
            metrics_urls: running.metrics_urls.clone(),
            faults: Some(experiment.fault_plan()),
            drain_timeout: experiment.drain_timeout(),
            wait_ready: std::time::Duration::ZERO,
        };
        let output = run_experiment(run, progress, stop.clone()).await;
        let stopped = running.shutdown().await;
        pool.close().await;
        let output = output?;
        stopped?;
        Ok::<_, RunError>(output)
    }
    .await;
    db.close().await;
    let output = result?;
    if stop.is_cancelled() {
        return Err(RunError::Interrupted);
    }

    let now = status::timestamp(chrono::Utc::now());
    let judged = status::judge_run(spec, &output.results, None, &now);
    let mut conditions = vec![condition(
        "Valid",
        "True",
        "SpecValid",
        "the spec passed validation".into(),
        None,
        &now,
    )];
    conditions.extend(judged.conditions);
    let status = ReliabilityExperimentStatus {
        phase: judged.phase,
        observed_generation: None,
        run_id: spec.run_id.clone(),
        start_time: Some(status::timestamp(started)),
        finish_time: Some(now.clone()),
        conditions,
        progress: None,
        results: Some(output.results.clone()),
        verdict: Some(judged.verdict),
        dashboard: None,
        history: Vec::new(),
        ..ReliabilityExperimentStatus::default()
    };
    let files = match &opts.output_dir {
        Some(dir) => write_outputs(dir, experiment, &status, &output)?,
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
    experiment: &ValidatedExperiment,
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
                experiment.name(),
                experiment.spec(),
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

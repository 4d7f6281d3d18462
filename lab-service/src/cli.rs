//! The `lab-service` command line: `api`, `worker`, `payment-mock`, `all`, `loadgen`.

use crate::app::{ApiServer, MockServer, WorkerServer};
use crate::config::{ApiArgs, ConfigError, DatabaseArgs, WorkerArgs};
use crate::lab::{Lab, LabPlan, MetricsLayout};
use crate::metrics::LabMetrics;
use crate::payment_mock::FaultPlan;
use crate::telemetry::LogFormat;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "lab-service",
    version,
    about = "relab lab app: order API, payment workers, fault-injecting payment mock"
)]
pub struct Cli {
    /// Log format (RUST_LOG sets the filter).
    #[arg(long, value_enum, env = "RELAB_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
pub enum Command {
    /// The order API (POST /orders, dead letters, /metrics).
    Api {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Payment workers: claim jobs and charge them through retry/breaker/bulkhead.
    Worker {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        /// Admin server with /metrics, /healthz, /readyz ("off" to disable).
        #[arg(long, env = "RELAB_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
        admin_listen: String,
    },
    /// The fault-injecting payment service with a ledger.
    PaymentMock {
        #[command(flatten)]
        mock: MockArgs,
    },
    /// API, workers and payment mock in one process (workers use the in-process mock).
    All {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        mock: MockArgs,
    },
    /// Load the order API (open loop), drain, audit, and print the results JSON.
    Loadgen {
        #[command(flatten)]
        args: crate::loadgen::cli::LoadgenArgs,
    },
}

/// Payment mock settings: a whole plan as JSON, and/or single knobs over its base.
#[derive(Debug, Clone, clap::Args)]
pub struct MockArgs {
    #[arg(long = "mock-listen", env = "RELAB_MOCK_LISTEN", default_value = "127.0.0.1:8081")]
    pub mock_listen: SocketAddr,
    /// A fault plan as JSON, or @path to a JSON file (see docs/patterns.md).
    #[arg(long, env = "RELAB_FAULTS")]
    pub faults: Option<String>,
    #[arg(long = "fault-seed", env = "RELAB_FAULT_SEED")]
    pub seed: Option<u64>,
    #[arg(long, env = "RELAB_FAULT_FAILURE_RATE")]
    pub failure_rate: Option<f64>,
    #[arg(long, env = "RELAB_FAULT_DECLINE_RATE")]
    pub decline_rate: Option<f64>,
    #[arg(long, env = "RELAB_FAULT_RATE_LIMIT_RATE")]
    pub rate_limit_rate: Option<f64>,
    #[arg(long, env = "RELAB_FAULT_TIMEOUT_RATE")]
    pub timeout_rate: Option<f64>,
    #[arg(long, env = "RELAB_FAULT_LOST_RESPONSE_RATE")]
    pub lost_response_rate: Option<f64>,
    #[arg(long, env = "RELAB_FAULT_HANG_MS")]
    pub hang_ms: Option<u64>,
    #[arg(long, env = "RELAB_FAULT_LATENCY_BASE_MS")]
    pub latency_base_ms: Option<u64>,
    #[arg(long, env = "RELAB_FAULT_LATENCY_JITTER_MS")]
    pub latency_jitter_ms: Option<u64>,
}

impl MockArgs {
    pub fn plan(&self) -> Result<FaultPlan, ConfigError> {
        let mut plan = match self.faults.as_deref() {
            None => FaultPlan::default(),
            Some(raw) => {
                let text = match raw.strip_prefix('@') {
                    Some(path) => std::fs::read_to_string(path).map_err(|e| ConfigError {
                        field: "--faults (RELAB_FAULTS)".into(),
                        message: format!("cannot read {path}: {e}"),
                    })?,
                    None => raw.to_string(),
                };
                serde_json::from_str(&text).map_err(|e| ConfigError {
                    field: "--faults (RELAB_FAULTS)".into(),
                    message: e.to_string(),
                })?
            }
        };
        let b = &mut plan.base;
        if let Some(v) = self.seed {
            plan.seed = v;
        }
        macro_rules! set {
            ($($opt:ident => $field:expr),*) => { $( if let Some(v) = self.$opt { $field = v; } )* };
        }
        set!(failure_rate => b.failure_rate, decline_rate => b.decline_rate, rate_limit_rate => b.rate_limit_rate,
             timeout_rate => b.timeout_rate, lost_response_rate => b.lost_response_rate, hang_ms => b.hang_ms,
             latency_base_ms => b.latency.base_ms, latency_jitter_ms => b.latency.jitter_ms);
        crate::config::check_fault_plan(&plan)?;
        Ok(plan)
    }
}

/// Cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
        }
        t.cancel();
    });
    token
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    crate::telemetry::init(cli.log_format);
    let metrics = LabMetrics::new()?;
    match cli.command {
        Command::Api { db, api } => {
            let config = api.into_config()?;
            let pool = db.connect().await?;
            let server = ApiServer::build(pool, config, &metrics).await?;
            tracing::info!(addr = %server.local_addr(), "order API listening");
            server.run_until_stopped(shutdown_signal()).await?;
        }
        Command::Worker {
            db,
            worker,
            admin_listen,
        } => {
            let config = worker.into_config()?;
            let admin = parse_optional_addr(&admin_listen)?;
            let pool = db.connect().await?;
            let server = WorkerServer::build(pool, config, admin, &metrics).await?;
            if let Some(a) = server.admin_addr() {
                tracing::info!(addr = %a, "worker admin listening");
            }
            server.run_until_stopped(shutdown_signal()).await?;
        }
        Command::PaymentMock { mock } => {
            let plan = mock.plan()?;
            let server = MockServer::build(mock.mock_listen, plan, &metrics).await?;
            tracing::info!(addr = %server.local_addr(), "payment mock listening");
            server.run_until_stopped(shutdown_signal()).await?;
        }
        Command::All { db, api, worker, mock } => {
            let api = api.into_config()?;
            let plan = mock.plan()?;
            // the workers' payment URL is the in-process mock's, whatever the flag says
            let mut worker = worker;
            worker.payment_url = "http://127.0.0.1:0".into();
            let worker = worker.into_config()?;
            let pool = db.connect().await?;
            let lab = Lab::start(LabPlan {
                pool,
                replicas: 1,
                api,
                worker: Some(worker),
                mock_listen: mock.mock_listen,
                faults: plan,
                metrics: MetricsLayout::Shared,
            })
            .await?;
            tracing::info!(api = %lab.api_url(), payment_mock = %lab.payment_url, "lab running");
            shutdown_signal().cancelled().await;
            lab.shutdown().await?;
        }
        Command::Loadgen { args } => crate::loadgen::cli::run(args).await?,
    }
    Ok(())
}

fn parse_optional_addr(raw: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if raw == "off" {
        return Ok(None);
    }
    raw.parse().map(Some).map_err(|e| ConfigError {
        field: "--admin-listen (RELAB_ADMIN_LISTEN)".into(),
        message: format!("{e}: {raw:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}

//! The `lab-service` command line: `api`, `worker`, `payment-mock`, `all`, `loadgen`.

use crate::app::{ApiServer, MockServer, WorkerServer};
use crate::config::{ApiArgs, ConfigError, DatabaseArgs, WorkerArgs};
use crate::lab::{Lab, LabPlan, MetricsLayout};
use crate::metrics::LabMetrics;
use crate::payment_mock::FaultPlan;
use crate::telemetry::LogFormat;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "lab-service",
    version,
    about = "relab lab app: order API, payment workers, fault-injecting payment mock"
)]
pub struct Cli {
    /// Log format (RUST_LOG sets the filter).
    #[arg(long, value_enum, env = crate::telemetry::LOG_FORMAT_ENV, default_value = "text", global = true)]
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
        #[arg(long, env = ADMIN_LISTEN_ENV, default_value = "127.0.0.1:9090")]
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
        args: crate::run::cli::LoadgenArgs,
    },
    /// A TCP fault proxy in front of Postgres (latency, outages), controlled over HTTP.
    DbProxy {
        #[command(flatten)]
        proxy: crate::db_proxy::DbProxyArgs,
    },
}

/// The variable of `lab-service worker`'s admin address (`--admin-listen`).
const ADMIN_LISTEN_ENV: &str = "RELAB_ADMIN_LISTEN";

/// `lab-service worker`'s admin server address, for its environment.
pub fn admin_listen_env(addr: SocketAddr) -> Vec<(&'static str, String)> {
    vec![(ADMIN_LISTEN_ENV, addr.to_string())]
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
    /// The ledger's journal: every charge and idempotency key, fsynced
    /// before it is answered, reloaded at start (`payment-mock` without it:
    /// in memory only; `all` without it: a file per database in the
    /// temporary directory, see `lab::default_ledger_file`).
    #[arg(long, env = LEDGER_FILE_ENV)]
    pub ledger_file: Option<PathBuf>,
}

/// The variable of the mock's `--ledger-file`.
const LEDGER_FILE_ENV: &str = "RELAB_LEDGER_FILE";

/// The payment mock's settings, as `lab-service payment-mock` reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct MockConfig {
    pub listen: SocketAddr,
    pub plan: FaultPlan,
    /// Where the ledger is journaled (None: in memory).
    pub ledger_file: Option<PathBuf>,
}

impl MockConfig {
    /// The `RELAB_*` variables `lab-service payment-mock` reads back into
    /// this configuration (the plan as one JSON document).
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("RELAB_MOCK_LISTEN", self.listen.to_string()),
            (
                "RELAB_FAULTS",
                serde_json::to_string(&self.plan).expect("a fault plan serializes"),
            ),
        ];
        if let Some(path) = &self.ledger_file {
            env.push((LEDGER_FILE_ENV, path.display().to_string()));
        }
        env
    }
}

impl MockArgs {
    /// The listen address and the plan, checked.
    pub fn into_config(self) -> Result<MockConfig, ConfigError> {
        Ok(MockConfig {
            listen: self.mock_listen,
            plan: self.plan()?,
            ledger_file: self.ledger_file,
        })
    }

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

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    crate::telemetry::init(cli.log_format);
    let metrics = LabMetrics::new()?;
    match cli.command {
        Command::Api { db, api } => {
            let config = api.into_config()?;
            let pool = db.connect().await?;
            let server = ApiServer::build(pool, config, &metrics).await?;
            tracing::info!(addr = %server.local_addr(), "order API listening");
            server.run_until_stopped(crate::shutdown::signal()).await?;
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
            server.run_until_stopped(crate::shutdown::signal()).await?;
        }
        Command::PaymentMock { mock } => {
            let mock = mock.into_config()?;
            if mock.ledger_file.is_none() {
                tracing::warn!("no --ledger-file: the ledger lives in memory and a restart forgets every charge");
            }
            let server = MockServer::build(mock.listen, mock.plan, mock.ledger_file.as_deref(), &metrics).await?;
            tracing::info!(addr = %server.local_addr(), "payment mock listening");
            server.run_until_stopped(crate::shutdown::signal()).await?;
        }
        Command::All { db, api, worker, mock } => {
            let api = api.into_config()?;
            let ledger_file = match mock.ledger_file.clone() {
                Some(path) => path,
                None => crate::lab::default_ledger_file(&db.database_url),
            };
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
                worker_replicas: None,
                pools: None,
                mock_listen: mock.mock_listen,
                faults: plan,
                ledger_file: Some(ledger_file),
                metrics: MetricsLayout::Shared,
            })
            .await?;
            tracing::info!(api = %lab.api_url(), payment_mock = %lab.payment_url, "lab running");
            crate::shutdown::signal().cancelled().await;
            lab.shutdown().await?;
        }
        Command::Loadgen { args } => crate::run::cli::run(args).await?,
        Command::DbProxy { proxy } => crate::db_proxy::run(proxy).await?,
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

    /// Parse `subcommand` from the variables `env`, through the real command line.
    fn from_env(subcommand: &str, env: &[(&'static str, String)]) -> Command {
        let cli = Cli::command();
        let sub = cli.find_subcommand(subcommand).expect("subcommand");
        // the global flag (log format) is the top-level command's
        let (global, own): (Vec<_>, Vec<_>) = env
            .iter()
            .cloned()
            .partition(|(k, _)| *k == crate::telemetry::LOG_FORMAT_ENV);
        let mut args = vec!["lab-service".to_string()];
        args.extend(crate::config::env_as_flags(&cli, &global));
        args.push(subcommand.to_string());
        args.extend(crate::config::env_as_flags(sub, &own));
        let parsed = Cli::try_parse_from(args).expect("the environment parses");
        if !global.is_empty() {
            assert_eq!(parsed.log_format, LogFormat::Json);
        }
        parsed.command
    }

    fn database() -> DatabaseArgs {
        DatabaseArgs {
            database_url: "postgres://postgres@10.0.0.10:5432/relab".into(),
            database_max_connections: 7,
            database_connect_timeout_secs: 300,
        }
    }

    fn plan() -> FaultPlan {
        serde_json::from_value(serde_json::json!({
            "seed": 9,
            "base": {"failureRate": 0.1234567891, "latency": {"baseMs": 3, "tailRate": 0.01, "tailMs": 700}},
            "schedule": [{"name": "outage", "startMs": 250, "endMs": 1750, "faults": {"failureRate": 1.0, "failureStatuses": [503]}}]
        }))
        .expect("plan")
    }

    #[test]
    fn every_process_reads_back_the_settings_it_was_given() {
        use crate::config::{ApiConfig, WorkerConfig};
        // the order API, with its database and the log format
        let api = ApiConfig {
            listen: "0.0.0.0:8080".parse().unwrap(),
            max_queue_depth: 123,
            max_job_attempts: 3,
            ..ApiConfig::default()
        };
        let mut env = api.to_env();
        env.extend(database().to_env());
        env.extend(LogFormat::Json.to_env());
        let Command::Api { db, api: args } = from_env("api", &env) else {
            panic!("api")
        };
        assert_eq!(db, database());
        assert_eq!(format!("{:?}", args.into_config().unwrap()), format!("{api:?}"));

        // the workers
        let worker = WorkerConfig {
            worker_id: "w-1".into(),
            concurrency: 5,
            payment_url: "http://10.0.0.11:8081".into(),
            ..WorkerConfig::default()
        };
        let mut env = worker.to_env();
        // as a cluster's container gets it: the shared part, then its own pool
        env.push((crate::config::DATABASE_URL_ENV, database().database_url));
        env.extend(database().to_env_without_url_and_pool());
        env.extend(DatabaseArgs::pool_env(database().database_max_connections));
        env.extend(admin_listen_env("0.0.0.0:9090".parse().unwrap()));
        let Command::Worker {
            db,
            worker: mut args,
            admin_listen,
        } = from_env("worker", &env)
        else {
            panic!("worker")
        };
        assert_eq!(admin_listen, "0.0.0.0:9090");
        args.worker_id = Some("w-1".into());
        assert_eq!(db, database());
        assert_eq!(format!("{:?}", args.into_config().unwrap()), format!("{worker:?}"));

        // the payment mock: listen address and plan
        let mock = MockConfig {
            listen: "0.0.0.0:8081".parse().unwrap(),
            plan: plan(),
            ledger_file: Some("/var/lib/relab/ledger/charges.jsonl".into()),
        };
        let Command::PaymentMock { mock: args } = from_env("payment-mock", &mock.to_env()) else {
            panic!("payment-mock")
        };
        assert_eq!(args.into_config().unwrap(), mock);

        // the load generator: the run's settings and where the results go
        let stages = crate::loadgen::schedule::parse_stages("5:7.5,0:0.25,40:2").unwrap();
        let mut load = crate::loadgen::LoadConfig::open_loop(stages);
        load.max_in_flight = 33;
        load.request_timeout = std::time::Duration::from_millis(2_500);
        load.seed = 4;
        let loadgen = crate::run::cli::LoadgenConfig {
            run: crate::run::ExperimentRun {
                load,
                api_url: "http://10.0.0.12:8080".into(),
                database_url: database().database_url,
                payment_url: "http://10.0.0.11:8081".into(),
                metrics: crate::run::targets::MetricsTargets::pushed(vec![
                    "http://10.0.0.12:8080/metrics".into(),
                    "http://10.0.0.12:9090/metrics".into(),
                ]),
                faults: Some(plan()),
                drain_timeout: std::time::Duration::from_secs(45),
                wait_ready: std::time::Duration::from_secs(300),
                stop_when: serde_json::from_str(
                    r#"[{"objective": "successRatio", "afterSeconds": 5}, {"doubleCharges": true}]"#,
                )
                .unwrap(),
                success_target: Some(0.95),
                disruptions: vec![relab_model::disruptions::PlannedDisruption {
                    name: "db-cut".into(),
                    action: relab_model::disruptions::DisruptionAction::DatabaseOutage,
                    at: std::time::Duration::from_secs(4),
                    duration: std::time::Duration::from_millis(2500),
                    fraction: 0.0,
                    added_ms: 0,
                }],
                db_proxy_url: Some("http://10.0.0.13:6433".into()),
                carrier: None,
                disruption_log: Default::default(),
                shares: crate::run::shares::ShareBoard::new(3),
            },
            output: None,
            termination_log: Some("/dev/termination-log".into()),
            progress_listen: Some("0.0.0.0:9091".parse().unwrap()),
            leader_url: Some("http://10.0.0.13:9091".into()),
        };
        let mut env = loadgen.to_env();
        env.push((crate::config::DATABASE_URL_ENV, database().database_url));
        let Command::Loadgen { args } = from_env("loadgen", &env) else {
            panic!("loadgen")
        };
        assert_eq!(format!("{:?}", args.into_config().unwrap()), format!("{loadgen:?}"));

        // the database fault proxy
        let proxy = crate::db_proxy::DbProxyConfig {
            listen: "0.0.0.0:6432".parse().unwrap(),
            upstream: "10.0.0.13:5432".into(),
            admin_listen: "0.0.0.0:6433".parse().unwrap(),
        };
        let Command::DbProxy { proxy: args } = from_env("db-proxy", &proxy.to_env()) else {
            panic!("db-proxy")
        };
        assert_eq!(args.into_config().unwrap(), proxy);
    }
}

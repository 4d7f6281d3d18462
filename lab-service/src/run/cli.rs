//! `lab-service loadgen` (the cluster's load-generator Job): run the run
//! engine against a running lab (load, drain, audit), print progress to
//! stderr and the results JSON to stdout, and optionally write the full
//! output and a Kubernetes termination message.

use super::shares::ShareBoard;
use super::targets::{MetricsTargets, TargetList};
use super::{run_experiment, termination_message, ExperimentRun, RunOutput, RunProgress, RunStage};
use crate::config::ConfigError;
use crate::loadgen::schedule::{format_stages, parse_stages, stage};
use crate::loadgen::{LoadConfig, LoadMode};
use crate::payment_mock::FaultPlan;
use axum::response::IntoResponse;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

/// Flags of `lab-service loadgen` (each also a `RELAB_*` variable).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Base URL of the order API.
    #[arg(long, env = "RELAB_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api_url: String,
    /// postgres:// URL of the lab database (for observing and auditing).
    #[arg(long, env = "RELAB_DATABASE_URL")]
    pub database_url: String,
    /// Base URL of the payment mock (faults, ledger, stats).
    #[arg(long, env = "RELAB_PAYMENT_URL", default_value = "http://127.0.0.1:8081")]
    pub payment_url: String,
    /// A Prometheus endpoint of the lab (repeat per process; default: {api-url}/metrics).
    #[arg(long = "metrics-url", env = "RELAB_METRICS_URLS", value_delimiter = ',')]
    pub metrics_urls: Vec<String>,
    /// The lab's endpoints are posted during the run (`POST /metrics-targets`
    /// on the progress server, by the operator as pods come and go); the
    /// --metrics-url list is then read only if none ever arrives.
    #[arg(long, env = "RELAB_METRICS_PUSHED", default_value_t = false, action = clap::ArgAction::Set)]
    pub metrics_pushed: bool,
    /// Orders per second (with --duration-secs; or use --stages).
    #[arg(long, env = "RELAB_LOAD_RATE")]
    pub rate: Option<f64>,
    /// Length of the load at --rate, in seconds.
    #[arg(long, env = "RELAB_LOAD_DURATION_SECS")]
    pub duration_secs: Option<f64>,
    /// Stages as rate:seconds pairs, e.g. 50:10,100:20 (instead of --rate/--duration-secs).
    #[arg(long, env = "RELAB_LOAD_STAGES")]
    pub stages: Option<String>,
    /// Requests outstanding at most; later sends wait (and count as late).
    #[arg(long, env = "RELAB_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
    /// Per-request deadline of the load generator.
    #[arg(long, env = "RELAB_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Longest wait after the load for accepted orders to finish.
    #[arg(long, env = "RELAB_DRAIN_TIMEOUT_SECS", default_value_t = 60)]
    pub drain_timeout_secs: u64,
    /// Seed of generated customers and amounts.
    #[arg(long = "load-seed", env = "RELAB_LOAD_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Fault plan to install on the payment mock before the load: JSON, or @path to a JSON file.
    #[arg(long, env = "RELAB_FAULTS")]
    pub faults: Option<String>,
    /// Wait at most this long for the database, the order API and the payment mock before the load.
    #[arg(long, env = "RELAB_WAIT_READY_SECS", default_value_t = 0)]
    pub wait_ready_secs: u64,
    /// Stop conditions (`spec.stopWhen`) as a JSON list, checked once a second.
    #[arg(long, env = "RELAB_STOP_WHEN")]
    pub stop_when: Option<String>,
    /// The success ratio a `successRatio` stop condition watches (`spec.objectives.successRatio`).
    #[arg(long, env = "RELAB_SUCCESS_TARGET")]
    pub success_target: Option<f64>,
    /// Write the full output (results and timeline) as JSON here.
    #[arg(long, env = "RELAB_OUTPUT")]
    pub output: Option<PathBuf>,
    /// Write only the results as compact JSON (< 4096 bytes) here, e.g. /dev/termination-log.
    #[arg(long, env = "RELAB_TERMINATION_LOG")]
    pub termination_log: Option<PathBuf>,
    /// Disruptions (`spec.disruptions`, planned and scaled) as a JSON list.
    #[arg(long, env = "RELAB_DISRUPTIONS")]
    pub disruptions: Option<String>,
    /// Admin URL of the database fault proxy in the order service's path.
    #[arg(long, env = "RELAB_DB_PROXY_URL")]
    pub db_proxy_url: Option<String>,
    /// Load generators sharing the load (`load.parallelism`), this one
    /// leading: it waits for the others to join its progress server.
    #[arg(long, env = "RELAB_LOAD_PARALLELISM", default_value_t = 1)]
    pub load_parallelism: u32,
    /// Follow the leading load generator at this URL (its progress server):
    /// send only the share it hands out, and report to it
    /// (`lab-service/src/run/shares.rs`).
    #[arg(long, env = LOAD_LEADER_URL_ENV)]
    pub load_leader_url: Option<String>,
    /// Serve the run's progress as JSON at `GET /progress` on this address
    /// (the operator reads its stage: Draining starts when the load says so).
    #[arg(long, env = "RELAB_PROGRESS_LISTEN")]
    pub progress_listen: Option<std::net::SocketAddr>,
}

fn problem(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

fn check_url(field: &str, url: &str) -> Result<String, ConfigError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) || reqwest::Url::parse(url).is_err() {
        return Err(problem(
            field,
            format!("must be an http:// or https:// URL, got {url:?}"),
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// What `lab-service loadgen` runs: the run's settings and where its
/// results go. Crosses into the load generator's pod as environment
/// ([`LoadgenConfig::to_env`], read back by [`LoadgenArgs`]).
#[derive(Debug, Clone)]
pub struct LoadgenConfig {
    pub run: ExperimentRun,
    pub output: Option<PathBuf>,
    pub termination_log: Option<PathBuf>,
    /// Where `GET /progress` is served (None: not served).
    pub progress_listen: Option<std::net::SocketAddr>,
    /// A follower of `load.parallelism`: the leading load generator's
    /// progress server (None: this one leads, or runs alone).
    pub leader_url: Option<String>,
}

/// The variable of [`LoadgenConfig::leader_url`] (set on the followers' pods only).
pub const LOAD_LEADER_URL_ENV: &str = "RELAB_LOAD_LEADER_URL";

impl LoadgenConfig {
    /// The `RELAB_*` variables `lab-service loadgen` reads back into this
    /// configuration, but the database URL (the database settings' own:
    /// [`crate::config::DatabaseArgs::to_env`], as it may come from a Secret).
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let run = &self.run;
        let stages = match &run.load.mode {
            LoadMode::OpenLoop { stages } => format_stages(stages),
            LoadMode::ClosedLoop { .. } => unreachable!("the load generator runs an open loop"),
        };
        let mut env = vec![
            ("RELAB_API_URL", run.api_url.clone()),
            ("RELAB_PAYMENT_URL", run.payment_url.clone()),
            ("RELAB_METRICS_URLS", run.metrics.fixed_urls().join(",")),
            ("RELAB_METRICS_PUSHED", run.metrics.is_pushed().to_string()),
            ("RELAB_LOAD_STAGES", stages),
            ("RELAB_MAX_IN_FLIGHT", run.load.max_in_flight.to_string()),
            (
                "RELAB_REQUEST_TIMEOUT_MS",
                run.load.request_timeout.as_millis().to_string(),
            ),
            ("RELAB_LOAD_SEED", run.load.seed.to_string()),
            ("RELAB_DRAIN_TIMEOUT_SECS", run.drain_timeout.as_secs().to_string()),
            ("RELAB_WAIT_READY_SECS", run.wait_ready.as_secs().to_string()),
            ("RELAB_LOAD_PARALLELISM", run.shares.generators().to_string()),
        ];
        if let Some(plan) = &run.faults {
            env.push((
                "RELAB_FAULTS",
                serde_json::to_string(plan).expect("a fault plan serializes"),
            ));
        }
        if !run.stop_when.is_empty() {
            env.push((
                "RELAB_STOP_WHEN",
                serde_json::to_string(&run.stop_when).expect("stop conditions serialize"),
            ));
        }
        if let Some(target) = run.success_target {
            env.push(("RELAB_SUCCESS_TARGET", target.to_string()));
        }
        if !run.disruptions.is_empty() {
            env.push((
                "RELAB_DISRUPTIONS",
                serde_json::to_string(&run.disruptions).expect("disruptions serialize"),
            ));
        }
        if let Some(url) = &run.db_proxy_url {
            env.push(("RELAB_DB_PROXY_URL", url.clone()));
        }
        if let Some(path) = &self.output {
            env.push(("RELAB_OUTPUT", path.display().to_string()));
        }
        if let Some(path) = &self.termination_log {
            env.push(("RELAB_TERMINATION_LOG", path.display().to_string()));
        }
        if let Some(addr) = self.progress_listen {
            env.push(("RELAB_PROGRESS_LISTEN", addr.to_string()));
        }
        if let Some(url) = &self.leader_url {
            env.push((LOAD_LEADER_URL_ENV, url.clone()));
        }
        env
    }
}

impl LoadgenArgs {
    /// Check every flag: the run and where its results go.
    pub fn into_config(self) -> Result<LoadgenConfig, ConfigError> {
        let output = self.output.clone();
        let termination_log = self.termination_log.clone();
        let progress_listen = self.progress_listen;
        let leader_url = self
            .load_leader_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .map(|u| check_url("--load-leader-url (RELAB_LOAD_LEADER_URL)", u.trim()))
            .transpose()?;
        if self.load_parallelism == 0 {
            return Err(problem(
                "--load-parallelism (RELAB_LOAD_PARALLELISM)",
                "must be at least 1",
            ));
        }
        Ok(LoadgenConfig {
            run: self.into_run()?,
            output,
            termination_log,
            progress_listen,
            leader_url,
        })
    }

    /// Check every flag and build the run; the error names the flag.
    pub fn into_run(self) -> Result<ExperimentRun, ConfigError> {
        const STAGES: &str = "--stages (RELAB_LOAD_STAGES)";
        const RATE: &str = "--rate (RELAB_LOAD_RATE)";
        const DURATION: &str = "--duration-secs (RELAB_LOAD_DURATION_SECS)";
        let stages = match (&self.stages, self.rate, self.duration_secs) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(problem(
                    STAGES,
                    "give either --stages or --rate with --duration-secs, not both",
                ))
            }
            (Some(raw), None, None) => parse_stages(raw).map_err(|m| problem(STAGES, m))?,
            (None, Some(rate), Some(secs)) => {
                if !rate.is_finite() || rate <= 0.0 {
                    return Err(problem(RATE, format!("must be above 0 orders per second, got {rate}")));
                }
                vec![stage(rate, secs).map_err(|m| problem(DURATION, m))?]
            }
            (None, Some(_), None) => return Err(problem(DURATION, "is required with --rate")),
            (None, None, Some(_)) => return Err(problem(RATE, "is required with --duration-secs")),
            (None, None, None) => return Err(problem(STAGES, "give --stages, or --rate and --duration-secs")),
        };
        if self.max_in_flight == 0 {
            return Err(problem("--max-in-flight (RELAB_MAX_IN_FLIGHT)", "must be at least 1"));
        }
        if self.request_timeout_ms == 0 {
            return Err(problem(
                "--request-timeout-ms (RELAB_REQUEST_TIMEOUT_MS)",
                "must be above 0",
            ));
        }
        let api_url = check_url("--api-url (RELAB_API_URL)", &self.api_url)?;
        let payment_url = check_url("--payment-url (RELAB_PAYMENT_URL)", &self.payment_url)?;
        let mut metrics_urls = self
            .metrics_urls
            .iter()
            .filter(|u| !u.trim().is_empty())
            .map(|u| check_url("--metrics-url (RELAB_METRICS_URLS)", u.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if metrics_urls.is_empty() {
            metrics_urls.push(format!("{api_url}/metrics"));
        }
        if !self.database_url.starts_with("postgres://") && !self.database_url.starts_with("postgresql://") {
            return Err(problem(
                "--database-url (RELAB_DATABASE_URL)",
                "must be a postgres:// URL",
            ));
        }
        let faults = self.faults.as_deref().map(parse_faults).transpose()?;
        let stop_when = self
            .stop_when
            .as_deref()
            .map(parse_stop_when)
            .transpose()?
            .unwrap_or_default();
        if let Some(t) = self.success_target {
            if !(0.0..=1.0).contains(&t) {
                return Err(problem(
                    "--success-target (RELAB_SUCCESS_TARGET)",
                    format!("must be within 0 to 1, got {t}"),
                ));
            }
        }
        let mut rules = relab_model::error::Problems::default();
        relab_model::ops::check_stop_when(&stop_when, self.success_target, &mut rules);
        if let Some(e) = rules.0.first() {
            return Err(problem("--stop-when (RELAB_STOP_WHEN)", e.to_string()));
        }
        let disruptions: Vec<relab_model::disruptions::PlannedDisruption> = self
            .disruptions
            .as_deref()
            .map(|raw| {
                serde_json::from_str(raw).map_err(|e| problem("--disruptions (RELAB_DISRUPTIONS)", e.to_string()))
            })
            .transpose()?
            .unwrap_or_default();
        let db_proxy_url = self
            .db_proxy_url
            .as_deref()
            .map(|u| check_url("--db-proxy-url (RELAB_DB_PROXY_URL)", u))
            .transpose()?;
        if db_proxy_url.is_none() {
            if let Some(d) = disruptions.iter().find(|d| d.action.through_db_proxy()) {
                return Err(problem(
                    "--db-proxy-url (RELAB_DB_PROXY_URL)",
                    format!("is required: disruption {:?} acts through the database proxy", d.name),
                ));
            }
        }
        // the database restart is this process's to carry out (over SQL);
        // kills are the operator's, reported to the progress server
        let carrier = disruptions
            .iter()
            .any(|d| d.action == relab_model::disruptions::DisruptionAction::RestartDatabase)
            .then(|| {
                super::disrupt::Carrier(std::sync::Arc::new(super::disrupt::SqlRestart {
                    database_url: self.database_url.clone(),
                    back_within: Duration::from_secs(120),
                }))
            });
        let mut load = LoadConfig::open_loop(stages);
        load.max_in_flight = self.max_in_flight;
        load.request_timeout = Duration::from_millis(self.request_timeout_ms);
        load.seed = self.seed;
        load.validate().map_err(|e| problem(STAGES, e.to_string()))?;
        Ok(ExperimentRun {
            load,
            api_url,
            database_url: self.database_url,
            payment_url,
            metrics: match self.metrics_pushed {
                true => MetricsTargets::pushed(metrics_urls),
                false => MetricsTargets::fixed(metrics_urls),
            },
            faults,
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            wait_ready: Duration::from_secs(self.wait_ready_secs),
            stop_when,
            success_target: self.success_target,
            disruption_log: Default::default(),
            shares: ShareBoard::new(self.load_parallelism),
            disruptions,
            db_proxy_url,
            carrier,
        })
    }
}

/// Stop conditions from a JSON list.
fn parse_stop_when(raw: &str) -> Result<Vec<relab_model::ops::StopCondition>, ConfigError> {
    serde_json::from_str(raw).map_err(|e| problem("--stop-when (RELAB_STOP_WHEN)", e.to_string()))
}

/// A fault plan from JSON or `@path`, validated.
fn parse_faults(raw: &str) -> Result<FaultPlan, ConfigError> {
    const FIELD: &str = "--faults (RELAB_FAULTS)";
    let text = match raw.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| problem(FIELD, format!("cannot read {path}: {e}")))?,
        None => raw.to_string(),
    };
    let plan: FaultPlan = serde_json::from_str(&text).map_err(|e| problem(FIELD, e.to_string()))?;
    plan.validate().map_err(|errors| {
        let all = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        problem(FIELD, all)
    })?;
    Ok(plan)
}

/// Run `lab-service loadgen`. Completing the run is success (exit 0) whatever
/// the results say; verdicts are decided elsewhere.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let LoadgenConfig {
        run,
        output,
        termination_log,
        progress_listen,
        leader_url,
    } = args.into_config()?;
    if let Some(leader) = leader_url {
        // a follower: its share only; the leader reports the run
        let target = crate::loadgen::Target::Orders {
            api_url: run.api_url.clone(),
        };
        let ticket =
            super::shares::follow(&leader, &target, &run.load, run.wait_ready, &crate::shutdown::signal()).await?;
        eprintln!("share {} of {} sent and reported to {leader}", ticket.index, ticket.of);
        return Ok(());
    }
    let (progress, watcher) = watch::channel(RunProgress::default());
    let last = watcher.clone();
    let served = match progress_listen {
        Some(addr) => Some(serve_progress(addr, watcher.clone(), &run).await?.0),
        None => None,
    };
    let printer = tokio::spawn(print_progress(watcher));
    let result = run_experiment(run, progress, crate::shutdown::signal()).await;
    printer.abort();
    if let Some(server) = served {
        server.abort();
    }
    let last = last.borrow().clone();
    if std::io::stderr().is_terminal() {
        eprintln!("\r\x1b[2K{}", progress_bar(&last));
    } else {
        eprintln!("{}", progress_line(&last));
    }
    let out: RunOutput = result?;
    if let Some(path) = &output {
        let json = serde_json::to_vec_pretty(&out)?;
        std::fs::write(path, json).map_err(|e| anyhow::anyhow!("writing --output {}: {e}", path.display()))?;
    }
    if let Some(path) = &termination_log {
        std::fs::write(path, termination_message(&out.results))
            .map_err(|e| anyhow::anyhow!("writing --termination-log {}: {e}", path.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &out.results)?;
    writeln!(stdout)?;
    Ok(())
}

/// `GET /progress` on `addr`: the run's [`RunProgress`] as JSON (its
/// `stage` says when the load is over; `disruptions` what has fired),
/// `GET /metrics` (the disruptions for Prometheus:
/// [`super::disrupt::DisruptionLog::render_metrics`]), and
/// `POST /disruptions/{name}` ([`super::disrupt::Report`]): the operator
/// reports a disruption it carried out (204; 409 when the name is unknown
/// or already reported, 422 for a body that is not a report), and
/// `POST /metrics-targets` ([`TargetList`]): the lab's `/metrics` endpoints
/// the sampler reads from now on (204; 422 when a URL is bad or the run
/// reads a fixed list; [`super::targets`]), and `load.parallelism`'s
/// `POST /load-shares` (join: 200 with the index, 409 when all have),
/// `GET /load-shares` and `POST /load-shares/{index}` (a follower's report:
/// 204, 409 when unknown or already in, 422 when it does not decode;
/// [`super::shares`]). Bound before the run starts, so a port in use
/// fails the load generator at once; returns the address bound.
pub async fn serve_progress(
    addr: std::net::SocketAddr,
    watcher: watch::Receiver<RunProgress>,
    run: &ExperimentRun,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, std::net::SocketAddr)> {
    use axum::extract::Path;
    use axum::http::StatusCode;
    let log = run.disruption_log.clone();
    let targets = run.metrics.clone();
    let (joins, board, reports_in) = (run.shares.clone(), run.shares.clone(), run.shares.clone());
    let (reports, metrics) = (log.clone(), log.clone());
    let echoed = targets.clone();
    let app = axum::Router::new()
        .route(
            "/progress",
            axum::routing::get(move || {
                let mut now = watcher.borrow().clone();
                now.disruptions = log.results();
                now.metrics_targets = echoed.pushed_list();
                async move { axum::Json(now) }
            }),
        )
        .route(
            "/load-shares",
            axum::routing::post(move || {
                let joined = joins.join();
                async move {
                    match joined {
                        Ok(ticket) => axum::Json(ticket).into_response(),
                        Err(e) => (StatusCode::CONFLICT, e).into_response(),
                    }
                }
            })
            .get(move || {
                let state = board.state();
                async move { axum::Json(state) }
            }),
        )
        .route(
            "/load-shares/{index}",
            axum::routing::post(
                move |Path(index): Path<u32>, axum::Json(report): axum::Json<super::shares::ShareReport>| {
                    let taken = match report.decode() {
                        Ok(report) => reports_in.report(index, report).map_err(|e| (StatusCode::CONFLICT, e)),
                        Err(e) => Err((StatusCode::UNPROCESSABLE_ENTITY, e)),
                    };
                    async move {
                        match taken {
                            Ok(()) => StatusCode::NO_CONTENT.into_response(),
                            Err(refused) => refused.into_response(),
                        }
                    }
                },
            ),
        )
        .route(
            "/metrics-targets",
            axum::routing::post(move |axum::Json(list): axum::Json<TargetList>| {
                let taken = targets.push(list.clone());
                async move {
                    match taken {
                        Ok(()) => {
                            tracing::info!(targets = ?list.metrics, "metrics targets posted");
                            StatusCode::NO_CONTENT.into_response()
                        }
                        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, e).into_response(),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = metrics.render_metrics();
                async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
            }),
        )
        .route(
            "/disruptions/{name}",
            axum::routing::post(
                move |Path(name): Path<String>, axum::Json(report): axum::Json<super::disrupt::Report>| {
                    let taken = reports.report(&name, report);
                    async move {
                        match taken {
                            Ok(d) => {
                                tracing::warn!(disruption = %name, hit = ?d.hit, error = ?d.error, "disruption reported");
                                StatusCode::NO_CONTENT.into_response()
                            }
                            Err(e) => (StatusCode::CONFLICT, e).into_response(),
                        }
                    }
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--progress-listen {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    Ok((
        tokio::spawn(async move {
            // the lab's servers' own serve (a header read timeout); stopped by abort
            if let Err(e) = crate::serve::serve(listener, app, std::future::pending()).await {
                tracing::warn!(error = %e, "progress server stopped");
            }
        }),
        bound,
    ))
}

/// One line per second on a log (not a TTY); a redrawn bar on a terminal.
async fn print_progress(mut watcher: watch::Receiver<RunProgress>) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if watcher.has_changed().is_err() {
            return;
        }
        let p = watcher.borrow_and_update().clone();
        if p.stage == RunStage::Starting {
            continue;
        }
        if tty {
            eprint!("\r\x1b[2K{}", progress_bar(&p));
        } else {
            eprintln!("{}", progress_line(&p));
        }
    }
}

/// `[load] 12.0s/30.0s sent=600 accepted=598 ...`
pub fn progress_line(p: &RunProgress) -> String {
    let label = if p.label.is_empty() {
        String::new()
    } else {
        format!("{}: ", p.label)
    };
    format!(
        "{label}[{}] {:.1}s/{:.1}s sent={} accepted={} shed={} errors={} paid={} failed={} dead_lettered={} queue={} breaker={}",
        p.stage,
        p.elapsed.as_secs_f64(),
        p.planned.as_secs_f64(),
        p.sent,
        p.accepted,
        p.shed,
        p.errors,
        p.paid,
        p.failed,
        p.dead_lettered,
        p.queue_depth,
        relab_model::results::BreakerState::name_of_gauge(p.breaker_state)
    )
}

fn progress_bar(p: &RunProgress) -> String {
    const WIDTH: usize = 30;
    let planned = p.planned.as_secs_f64();
    let share = if planned > 0.0 {
        (p.elapsed.as_secs_f64() / planned).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let filled = (share * WIDTH as f64).round() as usize;
    format!(
        "[{}{}] {}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        progress_line(p)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct L {
        #[command(flatten)]
        args: LoadgenArgs,
    }

    fn parse(extra: &[&str]) -> Result<ExperimentRun, ConfigError> {
        let mut argv = vec!["l", "--database-url", "postgres://postgres@127.0.0.1/x"];
        argv.extend_from_slice(extra);
        L::try_parse_from(argv).expect("parses").args.into_run()
    }

    #[test]
    fn rate_and_duration_make_one_stage_and_metrics_default_to_the_api() {
        let run = parse(&["--rate", "50", "--duration-secs", "10", "--api-url", "http://a:1/"]).unwrap();
        assert_eq!(run.load.planned_duration(), Duration::from_secs(10));
        assert_eq!(run.load.max_in_flight, 256);
        assert_eq!(run.drain_timeout, Duration::from_secs(60));
        assert_eq!(run.api_url, "http://a:1");
        assert_eq!(run.metrics.current(), ["http://a:1/metrics"]);
        assert!(!run.metrics.is_pushed());
        assert!(run.faults.is_none());
    }

    #[test]
    fn stages_faults_and_repeated_metrics_urls_are_taken() {
        let run = parse(&[
            "--stages",
            "50:10,100:20",
            "--metrics-url",
            "http://a/metrics",
            "--metrics-url",
            "http://b/metrics",
            "--faults",
            r#"{"base": {"failureRate": 0.3}}"#,
        ])
        .unwrap();
        assert_eq!(run.load.planned_duration(), Duration::from_secs(30));
        assert_eq!(run.metrics.current().len(), 2);
        assert_eq!(run.faults.unwrap().base.failure_rate, 0.3);
    }

    #[test]
    fn bad_flags_are_named() {
        let field = |extra: &[&str]| parse(extra).unwrap_err().field;
        assert!(field(&["--stages", "50:x"]).contains("--stages"));
        assert!(field(&["--stages", "50:1", "--rate", "5"]).contains("--stages"));
        assert!(field(&["--rate", "5"]).contains("--duration-secs"));
        assert!(field(&["--rate", "0", "--duration-secs", "5"]).contains("--rate"));
        assert!(field(&[]).contains("--stages"));
        assert!(field(&["--rate", "5", "--duration-secs", "5", "--max-in-flight", "0"]).contains("--max-in-flight"));
        assert!(field(&["--rate", "5", "--duration-secs", "5", "--api-url", "localhost:1"]).contains("--api-url"));
        assert!(field(&[
            "--rate",
            "5",
            "--duration-secs",
            "5",
            "--faults",
            r#"{"base":{"failureRate":2}}"#
        ])
        .contains("--faults"));
        assert!(field(&["--rate", "5", "--duration-secs", "5", "--faults", "@/nonexistent"]).contains("--faults"));
    }

    #[test]
    fn the_progress_line_names_phase_and_counts() {
        let p = RunProgress {
            stage: RunStage::Drain,
            elapsed: Duration::from_millis(12_500),
            planned: Duration::from_secs(10),
            sent: 500,
            breaker_state: 1,
            ..RunProgress::default()
        };
        let line = progress_line(&p);
        assert!(line.starts_with("[drain] 12.5s/10.0s sent=500"), "{line}");
        assert!(line.ends_with("breaker=open"), "{line}");
        assert!(progress_bar(&p).contains(&"#".repeat(30)));
    }
}

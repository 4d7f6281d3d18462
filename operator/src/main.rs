use clap::{Parser, Subcommand};
use relab_model::validate::read_bounded;
use relab_model::ValidatedExperiment;
use relab_operator::controller::build::LedgerVolume;
use relab_operator::controller::{self, children::LabDefaults};
use relab_operator::crdgen;
use relab_operator::runner::{self, RunError, RunOptions};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// relab: reliability experiments for retry, breaker, idempotency and queueing choices.
#[derive(Debug, Parser)]
#[command(name = "relab", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the ReliabilityExperiment CRD (or write it to crds/ with --write).
    Crd {
        /// Write to crds/ under this workspace root instead of printing.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// Check a manifest: print every problem with its field path (exit 2 if any).
    Validate {
        manifest: PathBuf,
        /// Print the manifest as the operator reads it, every default filled
        /// in (the stored resource holds only what was written).
        #[arg(long)]
        effective: bool,
    },
    /// Run the controller: reconcile ReliabilityExperiments in the cluster of the kubeconfig (or in-cluster).
    ///
    /// Exit code: 0 after SIGTERM/Ctrl-C, 2 when it cannot start (no cluster, CRD not installed).
    Operator {
        /// Watch only this namespace (least privilege: a Role suffices); default: all namespaces.
        #[arg(long, env = "RELAB_WATCH_NAMESPACE", conflicts_with = "all_namespaces")]
        namespace: Option<String>,
        /// Watch every namespace (the default; needs a ClusterRole).
        #[arg(long)]
        all_namespaces: bool,
        /// Address of /metrics, /healthz and /readyz ("off" to disable).
        #[arg(long, env = "RELAB_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
        metrics_listen: String,
        /// Default image of the lab's order service, payment mock and load generator.
        #[arg(long, env = "RELAB_LAB_IMAGE")]
        lab_image: Option<String>,
        /// Default image of the lab's Postgres.
        #[arg(long, env = "RELAB_POSTGRES_IMAGE")]
        postgres_image: Option<String>,
        /// Default imagePullPolicy of the lab's pods (Always, IfNotPresent, Never).
        #[arg(long, env = "RELAB_IMAGE_PULL_POLICY", value_parser = relab_model::spec::PULL_POLICIES)]
        image_pull_policy: Option<String>,
        /// How long the load generator waits for the lab to become ready.
        #[arg(long, env = "RELAB_WAIT_READY_SECS", default_value_t = 300)]
        wait_ready_secs: u64,
        /// Where the payment mock journals its ledger: `claim` (a
        /// PersistentVolumeClaim per run: it survives the pod's deletion) or
        /// `emptyDir` (clusters without storage: container restarts only).
        #[arg(long, env = "RELAB_LEDGER_VOLUME", default_value = "claim", value_parser = ["claim", "emptyDir"])]
        ledger_volume: String,
        /// The StorageClass of the ledger's claim (default: the cluster's default class).
        #[arg(long, env = "RELAB_LEDGER_STORAGE_CLASS")]
        ledger_storage_class: Option<String>,
        /// The ledger claim's size.
        #[arg(long, env = "RELAB_LEDGER_SIZE", default_value = "64Mi")]
        ledger_size: String,
        /// Reconcile running experiments this often (live progress).
        #[arg(long, env = "RELAB_POLL_INTERVAL_SECS", default_value_t = 5)]
        poll_interval_secs: u64,
        /// At most this many experiments reconcile at once.
        #[arg(long, env = "RELAB_MAX_CONCURRENT_RECONCILES", default_value_t = controller::DEFAULT_CONCURRENT_RECONCILES)]
        max_concurrent_reconciles: u16,
        /// Log format (RUST_LOG sets the filter).
        #[arg(long, value_enum, env = "RELAB_LOG_FORMAT", default_value = "json")]
        log_format: lab_service::telemetry::LogFormat,
        /// Label of each experiment's dashboard ConfigMap, KEY=VALUE (repeat; default grafana_dashboard=1).
        #[arg(long = "dashboard-label", value_name = "KEY=VALUE", value_parser = key_value)]
        dashboard_labels: Vec<(String, String)>,
        /// Annotation of each experiment's dashboard ConfigMap, KEY=VALUE (repeat; e.g. grafana_folder=relab).
        #[arg(long = "dashboard-annotation", value_name = "KEY=VALUE", value_parser = key_value)]
        dashboard_annotations: Vec<(String, String)>,
        /// Make no dashboard ConfigMaps.
        #[arg(long)]
        no_dashboards: bool,
        /// Elect one active replica through a Lease (for replicas > 1).
        #[arg(long, env = "RELAB_LEADER_ELECT")]
        leader_elect: bool,
        /// Namespace of the Lease (default: the pod's namespace from POD_NAMESPACE, else the watched one).
        #[arg(long, env = "RELAB_LEADER_ELECTION_NAMESPACE")]
        leader_election_namespace: Option<String>,
        /// Name of the Lease.
        #[arg(long, env = "RELAB_LEADER_ELECTION_LEASE", default_value = "relab-operator")]
        leader_election_lease: String,
        /// Lease duration: a standby takes over this long after the leader stops renewing.
        #[arg(long, env = "RELAB_LEASE_DURATION_SECS", default_value_t = 15)]
        lease_duration_secs: u64,
        /// How often the leader renews the Lease (and standbys retry).
        #[arg(long, env = "RELAB_RENEW_PERIOD_SECS", default_value_t = 5)]
        renew_period_secs: u64,
    },
    /// Print the chart's generated monitoring files (overview dashboard,
    /// Prometheus rules), or write them under a workspace root with --write.
    Monitoring {
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// Run an experiment on this machine, without a cluster.
    ///
    /// Exit code: 0 objectives met, 1 not met or inconclusive, 2 invalid manifest or environment error.
    Run {
        /// The ReliabilityExperiment manifest (the same file you would kubectl apply).
        manifest: PathBuf,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// The lab's own program (`lab-service ...`): `relab run` starts the
    /// order service's API and workers as `relab lab-service api|worker`
    /// child processes when an experiment kills them.
    #[command(hide = true, disable_help_flag = true, disable_version_flag = true)]
    LabService {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// What `relab run` prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

/// `relab run`'s options beyond the manifest.
#[derive(Debug, clap::Args)]
struct RunFlags {
    /// Use this Postgres server (a fresh database is created and dropped) instead of an ephemeral one.
    #[arg(long, env = "RELAB_DATABASE_URL")]
    database_url: Option<String>,
    /// Directory for status.yaml, status.json, timeline.json, report.html
    /// (default: relab-results/<name>-<time>).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Multiply every duration of the load and fault schedule (e.g. 0.25 for a quick run).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// No progress bar, only the results.
    #[arg(long, short)]
    quiet: bool,
    /// An earlier run's status.json to gate on: the run fails when a
    /// figure named in spec.baseline.maxRegression regressed past its margin.
    #[arg(long, value_name = "STATUS_JSON")]
    baseline: Option<PathBuf>,
    /// Also write the verdict as a JUnit XML report here (one testsuite
    /// per variant, one testcase per objective), for CI.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// `table` (default): the results table on stdout. `json`: the status
    /// JSON on stdout for scripts, the table on stderr.
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { manifest, flags } => {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            rt.block_on(run(manifest, flags))
        }
        Command::LabService { args } => {
            use clap::Parser as _;
            let cli = lab_service::cli::Cli::parse_from(std::iter::once("lab-service".to_string()).chain(args));
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(lab_service::cli::run(cli)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lab-service: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Operator {
            namespace,
            all_namespaces: _,
            metrics_listen,
            lab_image,
            postgres_image,
            image_pull_policy,
            wait_ready_secs,
            ledger_volume,
            ledger_storage_class,
            ledger_size,
            poll_interval_secs,
            max_concurrent_reconciles,
            log_format,
            dashboard_labels,
            dashboard_annotations,
            no_dashboards,
            leader_elect,
            leader_election_namespace,
            leader_election_lease,
            lease_duration_secs,
            renew_period_secs,
        } => {
            lab_service::telemetry::init(log_format);
            let metrics_listen = match metrics_listen.as_str() {
                "off" => None,
                raw => match raw.parse() {
                    Ok(a) => Some(a),
                    Err(e) => {
                        eprintln!("relab: --metrics-listen (RELAB_METRICS_LISTEN): {e}: {raw:?}");
                        return ExitCode::from(2);
                    }
                },
            };
            if poll_interval_secs == 0 {
                eprintln!("relab: --poll-interval-secs (RELAB_POLL_INTERVAL_SECS) must be at least 1");
                return ExitCode::from(2);
            }
            if leader_elect && (renew_period_secs == 0 || renew_period_secs >= lease_duration_secs) {
                eprintln!(
                    "relab: --renew-period-secs ({renew_period_secs}) must be at least 1 and less than --lease-duration-secs ({lease_duration_secs})"
                );
                return ExitCode::from(2);
            }
            let dashboards = (!no_dashboards).then(|| {
                let mut d = controller::children::DashboardOptions::default();
                if !dashboard_labels.is_empty() {
                    d.labels = dashboard_labels.into_iter().collect();
                }
                d.annotations = dashboard_annotations.into_iter().collect();
                d
            });
            let base = LabDefaults::default();
            let options = controller::Options {
                namespace,
                defaults: LabDefaults {
                    lab_image: lab_image.unwrap_or(base.lab_image),
                    postgres_image: postgres_image.unwrap_or(base.postgres_image),
                    pull_policy: image_pull_policy.unwrap_or(base.pull_policy),
                    wait_ready_secs,
                    ledger_volume: match ledger_volume.as_str() {
                        "emptyDir" => LedgerVolume::EmptyDir,
                        _ => LedgerVolume::Claim {
                            storage_class: ledger_storage_class.filter(|c| !c.is_empty()),
                            size: ledger_size,
                        },
                    },
                },
                metrics_listen,
                poll_interval: std::time::Duration::from_secs(poll_interval_secs),
                dashboards,
                max_concurrent_reconciles,
                ..controller::Options::default()
            };
            let election = leader_elect.then(|| {
                let namespace = leader_election_namespace
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .or_else(|| options.namespace.clone())
                    .unwrap_or_else(|| "default".into());
                controller::leader::Election {
                    namespace,
                    lease: leader_election_lease,
                    identity: options.instance.clone(),
                    lease_duration: std::time::Duration::from_secs(lease_duration_secs),
                    renew: std::time::Duration::from_secs(renew_period_secs),
                }
            });
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            rt.block_on(operator(options, election))
        }
        Command::Monitoring { write: None } => {
            print!("{}", relab_operator::monitoring::overview_json());
            print!("---\n{}", relab_operator::monitoring::rules::rules_yaml());
            ExitCode::SUCCESS
        }
        Command::Monitoring { write: Some(root) } => match relab_operator::monitoring::write(&root) {
            Ok(paths) => {
                for p in paths {
                    eprintln!("wrote {}", p.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("relab: cannot write the monitoring files under {}: {e}", root.display());
                ExitCode::from(2)
            }
        },
        Command::Crd { write: None } => {
            print!("{}", crdgen::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Crd { write: Some(root) } => {
            // crds/ and the chart's copy (helm installs charts/relab/crds/)
            for rel in [crdgen::CRD_PATH, crdgen::CHART_CRD_PATH] {
                let path = root.join(rel);
                if let Err(e) = std::fs::write(&path, crdgen::crd_yaml()) {
                    eprintln!("relab: cannot write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
                eprintln!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Command::Validate { manifest, effective } => {
            let text = match read_manifest(&manifest) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("relab: {e}");
                    return ExitCode::from(2);
                }
            };
            let problems = match ValidatedExperiment::from_manifest(&text) {
                Ok((experiment, meta)) if effective => {
                    print!("{}", effective_manifest(&experiment, meta));
                    return ExitCode::SUCCESS;
                }
                Ok(_) => Vec::new(),
                Err(p) => p,
            };
            if problems.is_empty() {
                println!("{}: valid", manifest.display());
                ExitCode::SUCCESS
            } else {
                for p in &problems {
                    eprintln!("{}: {p}", manifest.display());
                }
                ExitCode::from(2)
            }
        }
    }
}

/// `experiment` as a manifest (YAML) with every default of its spec written
/// in: the custom resource it makes ([`relab_operator::crd::resource`]).
fn effective_manifest(experiment: &ValidatedExperiment, meta: relab_model::validate::ManifestMeta) -> String {
    let rx = relab_operator::crd::resource(relab_model::validate::Manifest {
        metadata: meta,
        spec: experiment.spec().clone(),
    });
    serde_yaml::to_string(&rx).expect("a manifest serializes")
}

/// A manifest file, read at most to the limit (`/dev/zero` answers at once);
/// the error names the file and the problem.
fn read_manifest(path: &std::path::Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    read_bounded(file).map_err(|problems| {
        let p = &problems[0];
        format!("{}: {}", path.display(), p)
    })
}

/// `KEY=VALUE` of a repeated flag.
fn key_value(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {raw:?}")),
    }
}

async fn operator(options: controller::Options, election: Option<controller::leader::Election>) -> ExitCode {
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no Kubernetes client: set KUBECONFIG or run in a cluster");
            eprintln!("relab: no Kubernetes client ({e}): set KUBECONFIG or run in a cluster");
            return ExitCode::from(2);
        }
    };
    let stop = lab_service::shutdown::signal();
    // With leader election, a standby answers /healthz and /readyz (so a
    // rollout of several replicas completes) until it leads.
    let lost = CancellationToken::new();
    if let Some(election) = &election {
        let standby = match options.metrics_listen {
            Some(addr) => match controller::metrics::serve_standby(addr).await {
                Ok(server) => Some(server),
                Err(e) => {
                    eprintln!("relab: metrics server on {addr}: {e}");
                    return ExitCode::from(2);
                }
            },
            None => None,
        };
        if !election.acquire(&client, &stop).await {
            return ExitCode::SUCCESS;
        }
        if let Some(server) = standby {
            server.stop().await;
        }
        let (election, client, stop, lost) = (election.clone(), client.clone(), stop.clone(), lost.clone());
        tokio::spawn(async move { election.keep(&client, stop, lost).await });
    }
    let controller_stop = stop.child_token();
    {
        let (lost, controller_stop) = (lost.clone(), controller_stop.clone());
        tokio::spawn(async move {
            lost.cancelled().await;
            controller_stop.cancel();
        });
    }
    match controller::start(client, options, controller_stop).await {
        Ok(running) => {
            let _ = running.task.await;
            if lost.is_cancelled() {
                eprintln!("relab: lost the leader Lease; exiting so that the pod restarts as a candidate");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("relab: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(manifest: PathBuf, flags: RunFlags) -> ExitCode {
    let RunFlags {
        database_url,
        output,
        time_scale,
        quiet,
        baseline,
        junit,
        format,
    } = flags;
    let fail = |msg: String| {
        eprintln!("relab: {msg}");
        ExitCode::from(2)
    };
    let text = match read_manifest(&manifest) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let experiment = match runner::load_manifest(&text, time_scale) {
        Ok((experiment, _)) => experiment,
        Err(e) => return fail(format!("{}: {e}", manifest.display())),
    };
    let name = experiment.name().to_string();
    let baseline = match baseline {
        None => None,
        Some(_) if experiment.spec().baseline.is_none() => {
            return fail(format!(
                "{}: --baseline needs spec.baseline.maxRegression to say which figures may regress, and by how much",
                manifest.display()
            ))
        }
        Some(path) => match runner::read_baseline(&path) {
            Ok(b) => Some(b),
            Err(e) => return fail(e),
        },
    };
    let output_dir = output.unwrap_or_else(|| {
        PathBuf::from("relab-results").join(format!("{name}-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S")))
    });
    let opts = RunOptions {
        database_url,
        output_dir: Some(output_dir),
        baseline,
    };
    // the operator's parts of a drill as an operation: said, not silently dropped
    if let Some(schedule) = &experiment.spec().schedule {
        eprintln!(
            "relab: spec.schedule ({:?} in {}) is the operator's; relab run runs once, now",
            schedule.cron, schedule.time_zone
        );
    }
    if experiment.spec().notify.is_some() {
        eprintln!("relab: spec.notify is the operator's; relab run reports here and in its output files");
    }
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nrelab: interrupted; stopping the load and cleaning up");
            on_signal.cancel();
        }
    });
    let (tx, rx_progress) = tokio::sync::watch::channel(Default::default());
    let planned = experiment.load_duration();
    let bar = (!quiet).then(|| runner::progress::spawn(rx_progress, planned, std::io::stderr().is_terminal()));
    let result = runner::run_local(&experiment, &opts, tx, stop).await;
    if let Some(bar) = bar {
        bar.finish().await;
    }
    match result {
        Ok(run) => {
            let mut files = run.files.clone();
            if let Some(path) = &junit {
                if let Err(e) = std::fs::write(path, runner::junit::render(&run.name, &run.status)) {
                    return fail(format!("--junit {}: {e}", path.display()));
                }
                files.push(path.clone());
            }
            // the table and the file list go to stderr when stdout carries the JSON
            let mut human = String::new();
            human.push_str(&runner::table::render(&run.name, &run.status));
            for f in &files {
                human.push_str(&format!("  wrote {}\n", f.display()));
            }
            if let Some(report) = files.iter().find(|f| f.extension().is_some_and(|e| e == "html")) {
                let abs = std::fs::canonicalize(report).unwrap_or(report.clone());
                human.push_str(&format!("  report: file://{}\n", abs.display()));
            }
            match format {
                OutputFormat::Table => print!("{human}"),
                OutputFormat::Json => {
                    eprint!("{human}");
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&run.status).expect("a status serializes")
                    );
                }
            }
            ExitCode::from(run.exit_code())
        }
        Err(RunError::Interrupted) => fail("interrupted before the run finished; nothing was judged".into()),
        Err(e) => fail(e.to_string()),
    }
}

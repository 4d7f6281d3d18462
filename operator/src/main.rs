use clap::{Parser, Subcommand};
use relab_operator::runner::{self, RunError, RunOptions};
use relab_operator::{crdgen, validate};
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
    Validate { manifest: PathBuf },
    /// Run an experiment on this machine, without a cluster.
    ///
    /// Exit code: 0 objectives met, 1 not met or inconclusive, 2 invalid manifest or environment error.
    Run {
        /// The ReliabilityExperiment manifest (the same file you would kubectl apply).
        manifest: PathBuf,
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            manifest,
            database_url,
            output,
            time_scale,
            quiet,
        } => {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            rt.block_on(run(manifest, database_url, output, time_scale, quiet))
        }
        Command::Crd { write: None } => {
            print!("{}", crdgen::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Crd { write: Some(root) } => {
            let path = root.join(crdgen::CRD_PATH);
            match std::fs::write(&path, crdgen::crd_yaml()) {
                Ok(()) => {
                    eprintln!("wrote {}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("relab: cannot write {}: {e}", path.display());
                    ExitCode::from(2)
                }
            }
        }
        Command::Validate { manifest } => {
            let text = match std::fs::read_to_string(&manifest) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("relab: cannot read {}: {e}", manifest.display());
                    return ExitCode::from(2);
                }
            };
            let problems = match validate::parse_manifest(&text) {
                Ok(rx) => validate::validate(&rx.spec),
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

async fn run(
    manifest: PathBuf,
    database_url: Option<String>,
    output: Option<PathBuf>,
    time_scale: f64,
    quiet: bool,
) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("relab: {msg}");
        ExitCode::from(2)
    };
    if !(time_scale > 0.0 && time_scale <= 100.0) {
        return fail(format!("--time-scale must be within (0, 100], got {time_scale}"));
    }
    let text = match std::fs::read_to_string(&manifest) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read {}: {e}", manifest.display())),
    };
    let rx = match runner::load_manifest(&text, time_scale) {
        Ok(rx) => rx,
        Err(e) => return fail(format!("{}: {e}", manifest.display())),
    };
    let name = rx.metadata.name.clone().unwrap_or_else(|| "experiment".into());
    let output_dir = output.unwrap_or_else(|| {
        PathBuf::from("relab-results").join(format!("{name}-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S")))
    });
    let opts = RunOptions {
        database_url,
        output_dir: Some(output_dir),
        time_scale,
    };
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nrelab: interrupted; stopping the load and cleaning up");
            on_signal.cancel();
        }
    });
    let (tx, rx_progress) = tokio::sync::watch::channel(Default::default());
    let load_seconds = relab_operator::validate::load_seconds(&rx.spec);
    let bar = (!quiet).then(|| runner::progress::spawn(rx_progress, load_seconds, std::io::stderr().is_terminal()));
    let result = runner::run_local(&rx, &opts, tx, stop).await;
    if let Some(bar) = bar {
        bar.finish().await;
    }
    match result {
        Ok(run) => {
            print!("{}", runner::table::render(&run.name, &run.status));
            for f in &run.files {
                println!("  wrote {}", f.display());
            }
            if let Some(report) = run.files.iter().find(|f| f.extension().is_some_and(|e| e == "html")) {
                let abs = std::fs::canonicalize(report).unwrap_or(report.clone());
                println!("  report: file://{}", abs.display());
            }
            ExitCode::from(run.exit_code())
        }
        Err(RunError::Interrupted) => fail("interrupted before the run finished; nothing was judged".into()),
        Err(e) => fail(e.to_string()),
    }
}

use clap::{Parser, Subcommand};
use relab_operator::{crdgen, validate};
use std::path::PathBuf;
use std::process::ExitCode;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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

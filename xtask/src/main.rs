//! Everyday recipes, runnable on a machine with only the Rust toolchain:
//!
//! * `cargo xtask run M`  — install Postgres' binaries if missing, then `relab run M`
//! * `cargo xtask setup`  — install/start Postgres, promtool, wrk, hyperfine; helm, buildah, umoci, lua (idempotent)
//! * `cargo xtask test`   — setup, start a real Kubernetes control plane, the whole test suite, stop it
//! * `cargo xtask e2e`    — images, a single-node cluster (root), the end-to-end suite, teardown
//! * `cargo xtask lint`   — rustfmt --check and clippy -D warnings
//! * `cargo xtask bench`  — the benchmarks recorded in docs/benchmarks.md

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The workspace this `cargo xtask` was run in: `cargo run` sets
/// `CARGO_MANIFEST_DIR` at run time too. The compile-time value is only the
/// fallback: with a target directory shared by two clones (CI's cache), the
/// `xtask` binary cargo runs may have been linked from the other clone.
fn root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    Path::new(&manifest_dir).parent().expect("workspace root").to_path_buf()
}

/// Drop what `cargo run` set for this xtask binary (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_*`, ...) from a child's environment: build scripts that track
/// one of them (ring's tracks `CARGO_MANIFEST_DIR`) would otherwise see it
/// change between `cargo xtask test` and a plain `cargo build`, and rebuild
/// ring, rustls, kube and every crate above them on each switch.
fn without_run_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_by_run = key.starts_with("CARGO_PKG_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            );
        if set_by_run {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: $ {cmd:?}");
    let cmd = without_run_env(cmd);
    let status = cmd.current_dir(root()).status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn setup() -> Result<(), String> {
    run(Command::new("bash").arg("scripts/setup.sh"))?;
    // helm, kubectl, buildah, umoci, prometheus, lua5.1: the chart, image,
    // dashboard and Argo CD tests
    run(Command::new("bash").arg("scripts/tools.sh"))
}

/// Start the Kubernetes control plane (built once from Debian's source and
/// cached; see docs/control-plane.md), run every test with it, stop it.
fn test(args: Vec<&str>) -> Result<(), String> {
    eprintln!("xtask: $ bash scripts/k8s/control-plane.sh start");
    let out = Command::new("bash")
        .args(["scripts/k8s/control-plane.sh", "start"])
        .current_dir(root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("control-plane.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("starting the Kubernetes control plane failed: {}", out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kubeconfig = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("export KUBECONFIG="))
        .ok_or_else(|| format!("control-plane.sh printed no KUBECONFIG: {stdout}"))?
        .to_string();
    let result = run(cargo()
        .args(["test", "--workspace", "--all-targets"])
        .args(args)
        .env("RELAB_KUBECONFIG", &kubeconfig));
    let stopped = run(Command::new("bash").args(["scripts/k8s/control-plane.sh", "stop"]));
    result.and(stopped)
}

/// The end-to-end suite on a real single-node cluster (root, disposable
/// machine; docs/e2e.md): `tests/e2e/run.sh` builds the images, starts the
/// cluster, runs `tests/e2e.rs` and tears the cluster down, also when the
/// suite fails or is interrupted (its shell traps EXIT, INT and TERM).
fn e2e(args: Vec<&str>) -> Result<(), String> {
    run(Command::new("bash").arg("tests/e2e/run.sh").args(args))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.iter().skip(1).map(String::as_str);
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("run") => {
            // relab's own exit code (0 met, 1 not met, 2 error) is the answer
            if let Err(e) = run(Command::new("bash").args(["scripts/setup.sh", "run"])) {
                eprintln!("xtask: {e}");
                return ExitCode::from(2);
            }
            let args: Vec<&str> = rest.collect();
            let manifest = args.first().copied().unwrap_or("deploy/examples/flaky-payments.yaml");
            let mut relab = cargo();
            let status = without_run_env(&mut relab)
                .args([
                    "run",
                    "--quiet",
                    "-p",
                    "relab-operator",
                    "--bin",
                    "relab",
                    "--",
                    "run",
                    manifest,
                ])
                .args(args.iter().skip(1))
                .current_dir(root())
                .status();
            return match status {
                Ok(s) => ExitCode::from(s.code().unwrap_or(2) as u8),
                Err(e) => {
                    eprintln!("xtask: cargo run: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Some("test") => setup().and_then(|()| test(rest.collect())),
        Some("e2e") => setup().and_then(|()| e2e(rest.collect())),
        Some("lint") => run(cargo().args(["fmt", "--all", "--check"]))
            .and_then(|()| run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])))
            .and_then(|()| {
                // the packaging tests' Tiltfile evaluator, outside the workspace
                let tool = "packaging/tilt-eval/Cargo.toml";
                run(cargo().args(["fmt", "--check", "--manifest-path", tool]))
            }),
        Some("bench") => setup().and_then(|()| run(Command::new("bash").arg("scripts/bench.sh").args(rest))),
        _ => Err("usage: cargo xtask <run [manifest] [relab run flags]|setup|test|e2e|lint|bench> [args]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `cargo xtask bench variants`: what a comparison costs beyond its runs.
//!
//! A 10 s manifest with 4 variants x 3 runs (12 lab runs) through
//! `relab run`'s engine, side by side in one process with the reference: the
//! same 12 lab runs, each as an experiment of its own (its variant's merged
//! spec with its seed), run one after the other. Both use the Postgres at
//! `RELAB_TEST_DATABASE_URL` (a fresh database per lab run). The target: the
//! comparison costs at most the sum of its runs plus 10% (ratio <= 1.10).
//! Prints both wall times, the ratio and the machine's load.

use relab_operator::runner::{self, RunOptions};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

const MANIFEST: &str = r#"
apiVersion: relab.dev/v1alpha1
kind: ReliabilityExperiment
metadata: {name: bench-variants}
spec:
  load: {ratePerSecond: 40, durationSeconds: 10, drainTimeoutSeconds: 30}
  payment: {failureRate: 0.2, latency: {baseMs: 3, jitterMs: 5}}
  orderService:
    retry: {maxAttempts: 3, initialBackoffMs: 20, maxBackoffMs: 200}
  variants:
    - {name: a}
    - {name: b, orderService: {retry: {maxAttempts: 2}}}
    - {name: c, orderService: {circuitBreaker: {enabled: false}}}
    - {name: d, orderService: {workers: 4}}
  repeat: {runs: 3}
  objectives: {successRatio: 0.9}
"#;

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::main]
async fn main() {
    let db = std::env::var("RELAB_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let opts = RunOptions {
        database_url: Some(db),
        ..RunOptions::default()
    };
    let (experiment, _) = runner::load_manifest(MANIFEST, 1.0).expect("the bench manifest is valid");
    let plan = experiment.lab_runs();
    // `cargo test --all-targets` runs every bench target once without
    // `--bench`: check the plan only (the 252 s of lab runs are for `cargo bench`)
    if !std::env::args().any(|a| a == "--bench") {
        assert_eq!(plan.len(), 12, "4 variants x 3 runs");
        eprintln!(
            "[bench] plan of {} lab runs checked; `cargo xtask bench variants` measures it",
            plan.len()
        );
        return;
    }
    eprintln!("[bench] load before: {}", load());

    // reference: every lab run as an experiment of its own
    let started = Instant::now();
    for lab in &plan {
        let (tx, _rx) = tokio::sync::watch::channel(Default::default());
        runner::run_local(&lab.experiment, &opts, tx, CancellationToken::new())
            .await
            .expect("a single run");
    }
    let separate = started.elapsed().as_secs_f64();

    // the comparison
    let started = Instant::now();
    let (tx, _rx) = tokio::sync::watch::channel(Default::default());
    let run = runner::run_local(&experiment, &opts, tx, CancellationToken::new())
        .await
        .expect("the comparison");
    let together = started.elapsed().as_secs_f64();
    assert_eq!(run.runs.len(), plan.len());

    let ratio = together / separate;
    println!(
        "variants: {} lab runs (4 variants x 3 runs, 10 s each): comparison {together:.1} s, the same runs one by one {separate:.1} s, ratio {ratio:.3} (target <= 1.10); load after: {}",
        plan.len(),
        load()
    );
}

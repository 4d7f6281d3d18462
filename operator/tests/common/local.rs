//! `relab run` in-process for the tests of local runs, and the processes
//! its hits name (`worker pid 1234`).

use lab_service::summary::RunResults;
use relab_operator::runner::{self, LocalRun, RunOptions};
use tokio_util::sync::CancellationToken;

/// `relab run` of the manifest `text` at `time_scale`, on `database_url`'s
/// server (None: an ephemeral Postgres of its own, which a
/// `RestartDatabase` restarts); the order service's child processes (kill
/// disruptions) are `relab lab-service ...`. Prints the results table.
pub async fn run_text(text: &str, time_scale: f64, database_url: Option<String>) -> LocalRun {
    runner::set_lab_program(env!("CARGO_BIN_EXE_relab"));
    let (experiment, _) = runner::load_manifest(text, time_scale).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let opts = RunOptions {
        database_url,
        ..RunOptions::default()
    };
    let (tx, _rx) = tokio::sync::watch::channel(Default::default());
    let run = runner::run_local(&experiment, &opts, tx, CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", experiment.name()));
    eprintln!("{}", runner::table::render(&run.name, &run.status));
    run
}

/// The process id at the end of a hit (`worker pid 1234`, `api pid 99`).
pub fn pid_in(hit: &str) -> u32 {
    hit.rsplit(' ').next().unwrap().trim_end_matches(')').parse().unwrap()
}

/// Whether `pid` runs (a zombie does not).
pub fn is_running(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// The audit found nothing: no order lost or stuck, none charged twice, no
/// charge without its order, no paid order without its charge.
#[allow(dead_code)] // not every test binary audits
pub fn invariants_hold(r: &RunResults) {
    let i = &r.invariants;
    assert_eq!(
        (
            i.lost_orders,
            i.stuck_orders,
            i.double_charges,
            i.charges_without_order,
            i.paid_without_charge
        ),
        (0, 0, 0, 0, 0),
        "the audit: {i:?}"
    );
}

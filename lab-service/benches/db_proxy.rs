//! What the database fault proxy costs in the path: `SELECT 1` at 1,000
//! queries/s over one connection, straight to Postgres and through
//! `lab-service db-proxy` (no faults set), in alternating rounds of one run on
//! the same server. Prints each round's p50/p99 and the median over rounds
//! of the p50 difference (target: at most 100 µs; docs/benchmarks.md).
//!
//!   cargo xtask bench db-proxy
//!
//! Knobs: RELAB_BENCH_DATABASE_URL (default: RELAB_TEST_DATABASE_URL, then
//! the local trust Postgres), RELAB_BENCH_ROUNDS (3), RELAB_BENCH_SECONDS
//! (10 per side per round), RELAB_BENCH_RATE (1000). Without `--bench`
//! (`cargo test --all-targets`) one short round checks the bench still runs.

mod common;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use lab_service::db_proxy::{self, DbProxyConfig};
use sqlx::Connection;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn main() -> Result<()> {
    let bench = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(bench))
}

async fn run(bench: bool) -> Result<()> {
    let url = std::env::var("RELAB_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("RELAB_TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let rounds: usize = common::env_or("RELAB_BENCH_ROUNDS", if bench { 3 } else { 1 })?;
    let seconds: f64 = common::env_or("RELAB_BENCH_SECONDS", if bench { 10.0 } else { 0.5 })?;
    let rate: f64 = common::env_or("RELAB_BENCH_RATE", 1000.0)?;
    let mut through = reqwest::Url::parse(&url).context("the database URL")?;
    let upstream = format!(
        "{}:{}",
        through.host_str().context("a host in the database URL")?,
        through.port().unwrap_or(5432)
    );
    let proxy = db_proxy::start(
        DbProxyConfig {
            listen: "127.0.0.1:0".parse()?,
            upstream,
            admin_listen: "127.0.0.1:0".parse()?,
        },
        CancellationToken::new(),
    )
    .await?;
    through.set_host(Some("127.0.0.1"))?;
    through.set_port(Some(proxy.listen.port())).ok().context("a port")?;
    let through = through.to_string();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "db-proxy bench: SELECT 1 at {rate} queries/s, {seconds} s per side, {rounds} rounds; load average before: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("round  side    queries  p50 µs  p99 µs");
    let mut differences = Vec::new();
    for round in 1..=rounds {
        let direct = measure(&url, rate, seconds).await?;
        let proxied = measure(&through, rate, seconds).await?;
        for (side, h) in [("direct", &direct), ("proxy", &proxied)] {
            println!(
                "{round:>5}  {side:<6} {:>8}  {:>6}  {:>6}",
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99)
            );
        }
        differences.push(proxied.value_at_quantile(0.5) as i64 - direct.value_at_quantile(0.5) as i64);
    }
    differences.sort();
    let median = differences[differences.len() / 2];
    println!("p50 added by the proxy, median over rounds: {median} µs (target <= 100 µs; rounds: {differences:?})");
    let stats = proxy.stats();
    anyhow::ensure!(
        stats.accepted >= rounds as u64,
        "the proxy carried the queries: {stats:?}"
    );
    proxy.stop.cancel();
    Ok(())
}

/// `SELECT 1` at `rate` per second for `seconds` over one connection to
/// `url`: each query's latency, in µs.
async fn measure(url: &str, rate: f64, seconds: f64) -> Result<Histogram<u64>> {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    // warm the connection (statement cache, TCP)
    for _ in 0..50 {
        sqlx::query("SELECT 1").execute(&mut conn).await?;
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        tick.tick().await;
        let t = Instant::now();
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        h.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    conn.close().await?;
    Ok(h)
}

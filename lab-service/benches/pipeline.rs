//! Benchmark (not a test): paid orders per second of the lab **with its
//! default settings**, saturated, against `pgbench` running the reference
//! queue (`bench/pgbench/reference-queue.sql`, a verbatim copy of the shared
//! `../shared/bench/reference-queue.sql`: a plain, unbatched queue on the
//! lab's schema, three single-row transactions per order) on the same
//! Postgres server right after, in alternating rounds; then the queue's
//! pickup latency at half the lab's saturated rate. Targets: a median ratio
//! of at least 0.60 over the rounds, a lab rate that varies by less than 20%
//! between rounds, and an end-to-end p50 under 10 ms at half saturation.
//! Results are recorded in `docs/benchmarks.md`.
//!
//! ```text
//! cargo bench -p lab-service --bench pipeline        # or: cargo xtask bench pipeline
//! ```
//!
//! Each round:
//! 1. Lab: a fresh database; the lab an experiment gets without any
//!    `orderService` setting (`LabPlan::for_experiment` on a default spec:
//!    8 workers, bulkhead 16, API pool 16, worker pool 16, shedding at a
//!    queue of 10,000), healthy payment mock (no faults, no added latency)
//!    with its journaled ledger, all in this process on loopback. A warm-up,
//!    then `RELAB_BENCH_CLIENTS` closed-loop HTTP clients POST orders
//!    without pause (a shed order is offered again 100 ms later) for
//!    `RELAB_BENCH_SETTLE_SECS` + `RELAB_BENCH_SECS`. **Paid orders/s = orders
//!    whose `finished_at` falls in the last `RELAB_BENCH_SECS` (database
//!    clock) / that time.** The queue is sampled to show the lab was
//!    saturated (jobs waiting during the whole window).
//! 2. pgbench on a second fresh database with the same schema,
//!    `RELAB_BENCH_PGBENCH_CLIENTS` clients for `RELAB_BENCH_SECS`.
//!
//! Then, pickup: a fresh lab (same defaults) offered orders open loop at
//! half the median saturated rate for `RELAB_BENCH_PICKUP_SECS`; the p50 of
//! `finished_at - created_at` (order inserted -> order paid) is reported.
//!
//! Knobs (environment): `RELAB_BENCH_ROUNDS` (3), `RELAB_BENCH_SECS` (15),
//! `RELAB_BENCH_SETTLE_SECS` (3), `RELAB_BENCH_CLIENTS` (32, the lab's HTTP
//! clients), `RELAB_BENCH_PGBENCH_CLIENTS` (16), `RELAB_BENCH_WARMUP` (1000
//! orders), `RELAB_BENCH_PICKUP_SECS` (10; 0 skips it), `RELAB_BENCH_LEDGER`
//! (`journal`, as every lab, or `memory`), `RELAB_BENCH_DATABASE_URL` /
//! `RELAB_TEST_DATABASE_URL` (server to create the databases on),
//! `RELAB_PGBENCH` (pgbench binary), `RUST_LOG` (default
//! `warn,sqlx::query=error`).
//!
//! Run by `cargo test --all-targets` (no `--bench` argument) it only says that
//! it is skipped: it needs minutes and a quiet machine.

mod common;
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use common::env_or;
use lab_service::lab::{Lab, LabPlan, RunningLab};
use lab_service::payment_mock::FaultPlan;
use relab_model::ValidatedExperiment;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

const ORDER_BODY: &str = r#"{"customerId":"c-1","amountCents":1234,"currency":"EUR"}"#;
/// Initial values of the variables the script's claim sets with `\aset`.
const PGBENCH_DEFAULTS: [&str; 4] = ["-D", "r_id=0", "-D", "r_lease=00000000-0000-0000-0000-000000000000"];
/// An experiment with nothing but its load: every lab setting at its default.
const DEFAULT_EXPERIMENT: &str = "apiVersion: relab.dev/v1alpha1\nkind: ReliabilityExperiment\n\
                                  metadata: {name: bench}\nspec:\n  load: {ratePerSecond: 5, durationSeconds: 3}\n";

#[derive(Debug, Clone)]
struct Settings {
    admin_url: String,
    rounds: usize,
    secs: u64,
    settle_secs: u64,
    clients: usize,
    pgbench_clients: usize,
    warmup: usize,
    pickup_secs: u64,
    pgbench: String,
    /// The payment ledger journaled to a file (as every real lab) or in memory.
    journal: bool,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let admin_url = std::env::var("RELAB_BENCH_DATABASE_URL")
            .or_else(|_| std::env::var("RELAB_TEST_DATABASE_URL"))
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let s = Self {
            admin_url,
            rounds: env_or("RELAB_BENCH_ROUNDS", 3)?,
            secs: env_or("RELAB_BENCH_SECS", 15)?,
            settle_secs: env_or("RELAB_BENCH_SETTLE_SECS", 3)?,
            clients: env_or("RELAB_BENCH_CLIENTS", 32)?,
            pgbench_clients: env_or("RELAB_BENCH_PGBENCH_CLIENTS", 16)?,
            warmup: env_or("RELAB_BENCH_WARMUP", 1_000)?,
            pickup_secs: env_or("RELAB_BENCH_PICKUP_SECS", 10)?,
            pgbench: std::env::var("RELAB_PGBENCH").unwrap_or_else(|_| "pgbench".into()),
            journal: match std::env::var("RELAB_BENCH_LEDGER").as_deref() {
                Ok("journal") | Err(_) => true,
                Ok("memory") => false,
                Ok(other) => bail!("RELAB_BENCH_LEDGER must be journal or memory, got {other:?}"),
            },
        };
        if s.rounds == 0 || s.secs == 0 || s.clients == 0 || s.pgbench_clients == 0 {
            bail!("rounds, seconds, clients and pgbench clients must all be at least 1");
        }
        Ok(s)
    }
}

/// Clock ticks per second of `/proc/<pid>/stat`.
struct CpuClock {
    ticks_per_sec: f64,
}

impl CpuClock {
    fn new() -> Self {
        let ticks = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
            .unwrap_or(100.0);
        Self { ticks_per_sec: ticks }
    }
}

/// CPU time of one process so far, in clock ticks (utime + stime).
fn process_ticks(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the parenthesised command name; utime and stime are 14 and 15
    let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
    Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
}

/// CPU spent by a set of processes during a phase: the client side (this
/// process or pgbench) and the Postgres backends serving one database (they
/// come and go, so they are sampled while they live; one first seen after
/// the start counts from zero).
struct CpuAccount {
    ticks_per_sec: f64,
    client: u32,
    base: HashMap<u32, f64>,
    last: HashMap<u32, f64>,
}

impl CpuAccount {
    fn start(cpu: &CpuClock, client: u32, backends: &[i32]) -> Self {
        let mut a = Self {
            ticks_per_sec: cpu.ticks_per_sec,
            client,
            base: HashMap::new(),
            last: HashMap::new(),
        };
        for pid in std::iter::once(client).chain(backends.iter().map(|p| *p as u32)) {
            if let Some(t) = process_ticks(pid) {
                a.base.insert(pid, t);
                a.last.insert(pid, t);
            }
        }
        a
    }

    fn sample(&mut self, backends: &[i32]) {
        for pid in std::iter::once(self.client).chain(backends.iter().map(|p| *p as u32)) {
            if let Some(t) = process_ticks(pid) {
                self.base.entry(pid).or_insert(0.0);
                self.last.insert(pid, t);
            }
        }
    }

    /// (client, Postgres backends) CPU seconds.
    fn seconds(&self) -> (f64, f64) {
        let used = |pid: &u32| self.last[pid] - self.base.get(pid).copied().unwrap_or(0.0);
        let client = self.last.get(&self.client).map(|_| used(&self.client)).unwrap_or(0.0);
        let backends: f64 = self.last.keys().filter(|p| **p != self.client).map(used).sum();
        (client / self.ticks_per_sec, backends / self.ticks_per_sec)
    }
}

/// Backends connected to the observer's database, the observer excluded.
async fn backend_pids(observer: &PgPool) -> Result<Vec<i32>> {
    Ok(sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(observer)
    .await?)
}

/// Databases created by this run, dropped at the end (also on failure,
/// SIGINT and SIGTERM).
#[derive(Default)]
struct Databases(Mutex<Vec<String>>);

impl Databases {
    async fn create(&self, s: &Settings, role: &str) -> Result<String> {
        let name = format!("relab_bench_{role}_{}", Uuid::new_v4().simple());
        self.0.lock().unwrap().push(name.clone());
        lab_service::db::create_database(&s.admin_url, &name)
            .await
            .with_context(|| {
                format!(
                    "cannot create database {name} on {} (run scripts/setup.sh)",
                    s.admin_url
                )
            })
    }

    async fn drop_all(&self, s: &Settings) {
        let names = std::mem::take(&mut *self.0.lock().unwrap());
        for name in names {
            if let Err(e) = lab_service::db::drop_database(&s.admin_url, &name).await {
                eprintln!("pipeline bench: could not drop database {name}: {e}");
            }
        }
    }
}

/// Cumulative work of the database (backends report it at least every
/// second), and of the server's other databases: the machine is shared, and
/// so is the server (its WAL flushes above all).
#[derive(Debug, Clone, Copy, Default)]
struct DbWork {
    xacts: i64,
    jobs_index_scans: i64,
    /// Transactions of every other database on the server.
    others_xacts: i64,
    /// WAL syncs of the whole server.
    wal_syncs: i64,
}

impl DbWork {
    async fn read(pool: &PgPool) -> Result<Self> {
        let (xacts, jobs_index_scans, others_xacts, wal_syncs): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()),
                    coalesce((SELECT idx_scan FROM pg_stat_user_tables WHERE relname = 'jobs'), 0)::bigint,
                    (SELECT coalesce(sum(xact_commit + xact_rollback), 0)::bigint FROM pg_stat_database
                      WHERE datname IS DISTINCT FROM current_database()),
                    (SELECT wal_sync::bigint FROM pg_stat_wal)",
        )
        .fetch_one(pool)
        .await?;
        Ok(Self {
            xacts,
            jobs_index_scans,
            others_xacts,
            wal_syncs,
        })
    }

    /// Other databases' transactions and the server's WAL syncs per second since `before`.
    fn neighbours(&self, before: &Self, seconds: f64) -> String {
        format!(
            "other databases {:.0} xacts/s, server {:.0} WAL syncs/s",
            (self.others_xacts - before.others_xacts) as f64 / seconds.max(1e-3),
            (self.wal_syncs - before.wal_syncs) as f64 / seconds.max(1e-3)
        )
    }
}

/// One saturated lab phase.
struct LabRun {
    paid_per_sec: f64,
    paid: i64,
    accepted: u64,
    shed: u64,
    queued_min: i64,
    queued_mean: f64,
    queued_max: i64,
    running_mean: f64,
    xacts_per_order: f64,
    index_scans_per_order: f64,
    e2e_p50_ms: f64,
    client_ms_per_order: f64,
    pg_ms_per_order: f64,
    /// What the lab's active backends were waiting on, most frequent first
    /// (share of samples of active backends).
    waits: String,
    neighbours: String,
    load: String,
}

/// One look at what the lab's active backends wait on (`None`: on CPU).
async fn sample_waits(observer: &PgPool, counts: &mut HashMap<String, u64>) -> Result<()> {
    let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT wait_event_type, wait_event FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'",
    )
    .fetch_all(observer)
    .await?;
    for (kind, event) in rows {
        let key = match (kind, event) {
            (Some(k), Some(e)) => format!("{k}:{e}"),
            _ => "CPU".to_string(),
        };
        *counts.entry(key).or_default() += 1;
    }
    Ok(())
}

fn top_waits(counts: &HashMap<String, u64>, n: usize) -> String {
    let total: u64 = counts.values().sum();
    let mut v: Vec<(&String, &u64)> = counts.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1));
    v.iter()
        .take(n)
        .map(|(k, c)| format!("{k} {:.0}%", **c as f64 * 100.0 / total.max(1) as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lab with every setting at its default, on `url`'s (migrated) database.
async fn start_default_lab(s: &Settings, url: &str) -> Result<(RunningLab, PgPool)> {
    let (experiment, _) = ValidatedExperiment::from_manifest(DEFAULT_EXPERIMENT)
        .map_err(|e| anyhow::anyhow!("the default experiment is invalid: {e:?}"))?;
    let pool = lab_service::db::connect_and_migrate(url, 2).await?;
    let plan = LabPlan {
        // healthy, no added latency (also the default spec's)
        faults: FaultPlan::default(),
        ledger_file: s.journal.then(|| lab_service::lab::default_ledger_file(url)),
        ..LabPlan::for_experiment(&experiment, pool.clone())
    };
    let lab = Lab::start(plan).await?;
    Ok((lab, pool))
}

/// Counts of the closed-loop clients.
#[derive(Default)]
struct Offered {
    accepted: AtomicU64,
    shed: AtomicU64,
}

/// `clients` HTTP clients POSTing orders back to back until `stop`; a shed
/// order (503) is offered again after 100 ms.
fn offer_orders(
    api_url: &str,
    clients: usize,
    limit: Option<u64>,
    stop: Arc<AtomicBool>,
    offered: Arc<Offered>,
) -> tokio::task::JoinSet<Result<()>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client");
    let url = format!("{api_url}/orders");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, url, stop, offered) = (http.clone(), url.clone(), stop.clone(), offered.clone());
        set.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if limit.is_some_and(|l| offered.accepted.load(Ordering::Relaxed) >= l) {
                    break;
                }
                let r = http
                    .post(&url)
                    .header("idempotency-key", Uuid::new_v4().to_string())
                    .header("content-type", "application/json")
                    .body(ORDER_BODY)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => {
                        offered.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) if r.status() == 503 => {
                        offered.shed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok(r) => bail!(
                        "POST /orders: HTTP {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    ),
                    Err(_) if stop.load(Ordering::Relaxed) => return Ok(()),
                    Err(e) => bail!("POST /orders: {e}"),
                }
            }
            Ok(())
        });
    }
    set
}

async fn paid_count(observer: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'paid'")
        .fetch_one(observer)
        .await?)
}

async fn db_now(observer: &PgPool) -> Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(observer)
        .await?)
}

async fn run_lab(s: &Settings, url: &str, cpu: &CpuClock) -> Result<LabRun> {
    let (lab, pool) = start_default_lab(s, url).await?;
    let observer = PgPoolOptions::new().max_connections(1).connect(url).await?;
    let load = loadavg();

    // warm-up: connections open, caches warm, nothing measured
    let stop = Arc::new(AtomicBool::new(false));
    let warm = Arc::new(Offered::default());
    let mut clients = offer_orders(
        lab.api_url(),
        s.clients,
        Some(s.warmup as u64),
        stop.clone(),
        warm.clone(),
    );
    while let Some(j) = clients.join_next().await {
        j??;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while paid_count(&observer).await? < s.warmup as i64 {
        if Instant::now() > deadline {
            bail!("the warm-up's orders were not paid within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let offered = Arc::new(Offered::default());
    let mut clients = offer_orders(lab.api_url(), s.clients, None, stop.clone(), offered.clone());
    tokio::time::sleep(Duration::from_secs(s.settle_secs)).await;

    let t0 = db_now(&observer).await?;
    let work0 = DbWork::read(&observer).await?;
    let mut account = CpuAccount::start(cpu, std::process::id(), &backend_pids(&observer).await?);
    let window = Instant::now() + Duration::from_secs(s.secs);
    let mut samples: Vec<(i64, i64)> = Vec::new();
    let mut waits = HashMap::new();
    while Instant::now() < window {
        account.sample(&backend_pids(&observer).await?);
        for _ in 0..5 {
            sample_waits(&observer, &mut waits).await?;
        }
        let (queued, running): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'running')
             FROM jobs WHERE status IN ('queued', 'running')",
        )
        .fetch_one(&observer)
        .await?;
        samples.push((queued, running));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let t1 = db_now(&observer).await?;
    account.sample(&backend_pids(&observer).await?);
    let work1 = DbWork::read(&observer).await?;
    stop.store(true, Ordering::Relaxed);
    while let Some(j) = clients.join_next().await {
        j??;
    }

    let (paid, p50): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at))
         FROM orders WHERE status = 'paid' AND finished_at >= $1 AND finished_at < $2",
    )
    .bind(t0)
    .bind(t1)
    .fetch_one(&observer)
    .await?;
    let seconds = (t1 - t0).num_microseconds().unwrap_or(1) as f64 / 1e6;
    let (client_cpu, pg_cpu) = account.seconds();
    observer.close().await;
    lab.shutdown().await?;
    pool.close().await;
    let _ = std::fs::remove_file(lab_service::lab::default_ledger_file(url));

    let n = samples.len().max(1) as f64;
    let per = |a: i64, b: i64| (a - b) as f64 / paid.max(1) as f64;
    Ok(LabRun {
        paid_per_sec: paid as f64 / seconds,
        paid,
        accepted: offered.accepted.load(Ordering::Relaxed),
        shed: offered.shed.load(Ordering::Relaxed),
        queued_min: samples.iter().map(|s| s.0).min().unwrap_or(0),
        queued_mean: samples.iter().map(|s| s.0 as f64).sum::<f64>() / n,
        queued_max: samples.iter().map(|s| s.0).max().unwrap_or(0),
        running_mean: samples.iter().map(|s| s.1 as f64).sum::<f64>() / n,
        xacts_per_order: per(work1.xacts, work0.xacts),
        index_scans_per_order: per(work1.jobs_index_scans, work0.jobs_index_scans),
        e2e_p50_ms: p50.unwrap_or(0.0) * 1e3,
        client_ms_per_order: client_cpu * 1e3 / paid.max(1) as f64,
        pg_ms_per_order: pg_cpu * 1e3 / paid.max(1) as f64,
        waits: top_waits(&waits, 4),
        neighbours: work1.neighbours(&work0, seconds),
        load,
    })
}

/// Pickup latency at an offered rate well below saturation.
struct PickupRun {
    rate: f64,
    orders: i64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    load: String,
}

/// Orders offered open loop at `rate`/s (one POST per tick, at most 256 in
/// flight) for `secs`; end-to-end latency of those created after the first second.
async fn run_pickup(s: &Settings, url: &str, rate: f64) -> Result<PickupRun> {
    let (lab, pool) = start_default_lab(s, url).await?;
    let observer = PgPoolOptions::new().max_connections(1).connect(url).await?;
    let load = loadavg();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs(1 + s.pickup_secs);
    let mut t0 = None;
    let started = Instant::now();
    let mut sent = tokio::task::JoinSet::new();
    while Instant::now() < end {
        tick.tick().await;
        if t0.is_none() && started.elapsed() >= Duration::from_secs(1) {
            t0 = Some(db_now(&observer).await?);
        }
        let permit = in_flight.clone().acquire_owned().await?;
        let (http, url) = (http.clone(), format!("{}/orders", lab.api_url()));
        sent.spawn(async move {
            let _permit = permit;
            let r = http
                .post(url)
                .header("idempotency-key", Uuid::new_v4().to_string())
                .header("content-type", "application/json")
                .body(ORDER_BODY)
                .send()
                .await?;
            anyhow::ensure!(r.status() == 201, "POST /orders: HTTP {}", r.status());
            Ok(())
        });
        while let Some(done) = sent.try_join_next() {
            done??;
        }
    }
    while let Some(done) = sent.join_next().await {
        done??;
    }
    // every order of the window paid
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'pending'")
            .fetch_one(&observer)
            .await?;
        if pending == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{pending} orders still pending 30 s after the pickup run");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (orders, p50, p90, p99): (i64, Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT count(*),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)),
                percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at))
         FROM orders WHERE status = 'paid' AND created_at >= $1",
    )
    .bind(t0.context("the pickup run ended before its first second")?)
    .fetch_one(&observer)
    .await?;
    observer.close().await;
    lab.shutdown().await?;
    pool.close().await;
    let _ = std::fs::remove_file(lab_service::lab::default_ledger_file(url));
    Ok(PickupRun {
        rate,
        orders,
        p50_ms: p50.unwrap_or(0.0) * 1e3,
        p90_ms: p90.unwrap_or(0.0) * 1e3,
        p99_ms: p99.unwrap_or(0.0) * 1e3,
        load,
    })
}

struct PgbenchRun {
    neighbours: String,
    tps: f64,
    transactions: u64,
    failed: String,
    latency_ms: String,
    xacts_per_order: f64,
    client_ms_per_order: f64,
    pg_ms_per_order: f64,
    load: String,
}

fn script_path() -> Result<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/pgbench/reference-queue.sql");
    p.canonicalize()
        .with_context(|| format!("pgbench script {} not found", p.display()))
}

fn pgbench_args(s: &Settings, script: &str, db: &str) -> Vec<String> {
    let mut args: Vec<String> = ["-n", "-M", "prepared", "-f", script, "-c"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.push(s.pgbench_clients.to_string());
    args.extend(["-j".into(), "2".into(), "-T".into(), s.secs.to_string()]);
    args.push("--no-vacuum".into());
    args.extend(PGBENCH_DEFAULTS.iter().map(|a| a.to_string()));
    args.push(db.to_string());
    args
}

fn field<'a>(out: &'a str, prefix: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.trim().strip_prefix(prefix)).map(str::trim)
}

async fn run_pgbench(s: &Settings, url: &str, cpu: &CpuClock) -> Result<PgbenchRun> {
    // the schema: the app's own migrations
    lab_service::db::connect_and_migrate(url, 1).await?.close().await;
    let script = script_path()?;
    let args = pgbench_args(s, &script.to_string_lossy(), url);
    let observer = PgPoolOptions::new().max_connections(1).connect(url).await?;
    let load = loadavg();
    let work0 = DbWork::read(&observer).await?;
    let started = Instant::now();
    let child = tokio::process::Command::new(&s.pgbench)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {} (set RELAB_PGBENCH)", s.pgbench))?;
    let mut account = CpuAccount::start(cpu, child.id().unwrap_or(0), &[]);
    let output = child.wait_with_output();
    tokio::pin!(output);
    let out = loop {
        tokio::select! {
            out = &mut output => break out?,
            _ = tokio::time::sleep(Duration::from_millis(100)) => account.sample(&backend_pids(&observer).await?),
        }
    };
    let (client_cpu, pg_cpu) = account.seconds();
    let elapsed = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        bail!("pgbench failed ({}):\n{stdout}\n{stderr}", out.status);
    }
    let tps = field(&stdout, "tps = ")
        .filter(|_| stdout.contains("(without initial connection time)"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no `tps = ... (without initial connection time)` line in:\n{stdout}"))?;
    let transactions: u64 = field(&stdout, "number of transactions actually processed:")
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    // the sessions have exited: their statistics are in
    tokio::time::sleep(Duration::from_millis(500)).await;
    let work1 = DbWork::read(&observer).await?;
    observer.close().await;
    let per = |x: f64| x / transactions.max(1) as f64;
    Ok(PgbenchRun {
        neighbours: work1.neighbours(&work0, elapsed),
        tps,
        transactions,
        failed: field(&stdout, "number of failed transactions:")
            .unwrap_or("?")
            .to_string(),
        latency_ms: field(&stdout, "latency average =").unwrap_or("?").to_string(),
        xacts_per_order: per((work1.xacts - work0.xacts) as f64),
        client_ms_per_order: per(client_cpu * 1e3),
        pg_ms_per_order: per(pg_cpu * 1e3),
        load,
    })
}

async fn server_version(s: &Settings) -> String {
    let Ok(p) = PgPoolOptions::new().max_connections(1).connect(&s.admin_url).await else {
        return "?".into();
    };
    let v: Option<String> = sqlx::query_scalar("SHOW server_version").fetch_one(&p).await.ok();
    p.close().await;
    v.unwrap_or_else(|| "?".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// SIGINT or SIGTERM, so that the databases are dropped on the way out.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// (max - min) / median: how far the rounds spread.
fn spread(v: &[f64]) -> f64 {
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    let min = v.iter().copied().fold(f64::MAX, f64::min);
    (max - min) / median(v.to_vec()).max(1e-9)
}

struct Round {
    lab: LabRun,
    pgb: PgbenchRun,
}

async fn run_rounds(s: &Settings, dbs: &Databases, cpu: &CpuClock) -> Result<(Vec<Round>, Option<PickupRun>)> {
    let mut rounds = Vec::new();
    for n in 1..=s.rounds {
        eprintln!(
            "pipeline bench: round {n}/{}: lab ({} clients, {} s)",
            s.rounds, s.clients, s.secs
        );
        let url = dbs.create(s, "lab").await?;
        let lab = run_lab(s, &url, cpu).await.context("lab run")?;
        dbs.drop_all(s).await;
        eprintln!(
            "pipeline bench: round {n}/{}: lab {:.0} paid/s; pgbench ({} clients, {} s)",
            s.rounds, lab.paid_per_sec, s.pgbench_clients, s.secs
        );
        // pgbench only after the lab has stopped: one at a time on the same server
        let url = dbs.create(s, "pgb").await?;
        let pgb = run_pgbench(s, &url, cpu).await.context("pgbench run")?;
        dbs.drop_all(s).await;
        rounds.push(Round { lab, pgb });
    }
    if s.pickup_secs == 0 {
        return Ok((rounds, None));
    }
    let rate = median(rounds.iter().map(|r| r.lab.paid_per_sec).collect()) / 2.0;
    eprintln!("pipeline bench: pickup at {rate:.0} orders/s for {} s", s.pickup_secs);
    let url = dbs.create(s, "pick").await?;
    let pickup = run_pickup(s, &url, rate.max(1.0)).await.context("pickup run")?;
    dbs.drop_all(s).await;
    Ok((rounds, Some(pickup)))
}

#[tokio::main]
async fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("pipeline bench: skipped (not a test; run `cargo bench -p lab-service --bench pipeline`)");
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx::query=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();

    let s = Settings::from_env()?;
    let cpu = CpuClock::new();
    let run_started = Instant::now();
    let load_before = loadavg();
    let dbs = Databases::default();
    let outcome = tokio::select! {
        r = run_rounds(&s, &dbs, &cpu) => r,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    dbs.drop_all(&s).await;
    let (rounds, pickup) = outcome?;

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let version = server_version(&s).await;
    println!();
    println!("## Order pipeline (lab defaults, saturated) vs pgbench (reference queue), alternating rounds");
    println!();
    println!("| round | lab paid/s | pgbench tps | ratio | lab queue min / mean / max | lab running (of 8) | lab e2e p50 | DB xacts per order lab / pgbench | jobs index scans per order (lab) | CPU per order lab client+PG / pgbench client+PG | load avg at lab / pgbench start |");
    println!("|---:|---:|---:|---:|---|---:|---:|---|---:|---|---|");
    for (i, r) in rounds.iter().enumerate() {
        let (l, p) = (&r.lab, &r.pgb);
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {} / {:.0} / {} | {:.1} | {:.0} ms | {:.2} / {:.2} | {:.2} | {:.2}+{:.2} / {:.2}+{:.2} ms | {} / {} |",
            i + 1,
            l.paid_per_sec,
            p.tps,
            l.paid_per_sec / p.tps,
            l.queued_min,
            l.queued_mean,
            l.queued_max,
            l.running_mean,
            l.e2e_p50_ms,
            l.xacts_per_order,
            p.xacts_per_order,
            l.index_scans_per_order,
            l.client_ms_per_order,
            l.pg_ms_per_order,
            p.client_ms_per_order,
            p.pg_ms_per_order,
            l.load,
            p.load
        );
    }
    let ratios: Vec<f64> = rounds.iter().map(|r| r.lab.paid_per_sec / r.pgb.tps).collect();
    let lab_rates: Vec<f64> = rounds.iter().map(|r| r.lab.paid_per_sec).collect();
    let pgb_rates: Vec<f64> = rounds.iter().map(|r| r.pgb.tps).collect();
    let (median_ratio, lab_spread) = (median(ratios.clone()), spread(&lab_rates));
    println!();
    println!(
        "median ratio {:.2} (target >= 0.60: {}); lab rate median {:.0} paid/s, spread {:.0}% (target < 20%: {}); pgbench median {:.0} tps, spread {:.0}%",
        median_ratio,
        if median_ratio >= 0.60 { "met" } else { "NOT met" },
        median(lab_rates.clone()),
        lab_spread * 100.0,
        if lab_spread < 0.20 { "met" } else { "NOT met" },
        median(pgb_rates.clone()),
        spread(&pgb_rates) * 100.0
    );
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "round {}: lab {} paid in the window, {} accepted and {} shed (503) by the API during settle + window, active backends: {}; {}; pgbench {} transactions, failed {}, latency average {}, {}",
            i + 1,
            r.lab.paid,
            r.lab.accepted,
            r.lab.shed,
            r.lab.waits,
            r.lab.neighbours,
            r.pgb.transactions,
            r.pgb.failed,
            r.pgb.latency_ms,
            r.pgb.neighbours
        );
    }
    if let Some(p) = &pickup {
        println!();
        println!(
            "pickup: {} orders offered open loop at {:.0}/s (half the median saturated rate): e2e (inserted -> paid) p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms (target p50 < 10 ms: {}); reference: pgbench latency average for an order's three transactions, 16 clients: {}; load avg at start {}",
            p.orders,
            p.rate,
            p.p50_ms,
            p.p90_ms,
            p.p99_ms,
            if p.p50_ms < 10.0 { "met" } else { "NOT met" },
            rounds.last().map(|r| r.pgb.latency_ms.as_str()).unwrap_or("?"),
            p.load
        );
    }
    println!();
    println!("commands:");
    println!(
        "  cargo bench -p lab-service --bench pipeline   (RELAB_BENCH_ROUNDS={} RELAB_BENCH_SECS={} RELAB_BENCH_SETTLE_SECS={} RELAB_BENCH_CLIENTS={} RELAB_BENCH_PGBENCH_CLIENTS={} RELAB_BENCH_WARMUP={} RELAB_BENCH_PICKUP_SECS={} RELAB_BENCH_LEDGER={})",
        s.rounds, s.secs, s.settle_secs, s.clients, s.pgbench_clients, s.warmup, s.pickup_secs,
        if s.journal { "journal" } else { "memory" }
    );
    let mut shown = pgbench_args(
        &s,
        "bench/pgbench/reference-queue.sql",
        "<fresh database with the lab schema>",
    );
    shown.insert(0, "pgbench".into());
    println!("  {}", shown.join(" "));
    println!(
        "machine: {cores} cores (nproc), shared with other engineers' builds and tests; PostgreSQL {version}; load average before {load_before}, after {}",
        loadavg()
    );
    println!("run took {:.0} s", run_started.elapsed().as_secs_f64());
    Ok(())
}

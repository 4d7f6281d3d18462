//! Benchmark (not a test): end-to-end paid orders per second of the lab with a
//! healthy payment mock, side by side in one run with `pgbench` running the
//! reference queue (`bench/pgbench/reference-queue.sql`, a verbatim copy of
//! the shared `../shared/bench/reference-queue.sql`: a plain, unbatched
//! queue on the lab's schema, three transactions per order)
//! against the same Postgres server. Target: the lab reaches at least 50% of
//! pgbench's rate. Results are recorded in `docs/benchmarks.md`.
//!
//! ```text
//! cargo bench -p lab-service --bench pipeline        # or: cargo xtask bench pipeline
//! ```
//!
//! 1. Lab: a fresh database; payment mock (default, healthy `FaultPlan`), order
//!    API and workers in this process on loopback, as the integration tests
//!    start them. A warm-up, then `RELAB_BENCH_ORDERS` orders POSTed by
//!    `RELAB_BENCH_CLIENTS` concurrent HTTP clients; the time runs from the
//!    first POST until the last of them is `paid` (its `finished_at`).
//! 2. pgbench: a second fresh database with the same schema (the app's
//!    migrations), the custom script with the same client count.
//! 3. A markdown table row (rates and ratio), the same comparison in CPU per
//!    order, probes of where the lab spends its time, the commands and the
//!    machine; both databases are dropped (also on failure, SIGINT, SIGTERM).
//!
//! Knobs (environment): `RELAB_BENCH_ORDERS` (20000), `RELAB_BENCH_CLIENTS` (32),
//! `RELAB_BENCH_WORKERS` (worker concurrency, 16), `RELAB_BENCH_BULKHEAD` (32),
//! `RELAB_BENCH_POOL` (the one DB pool of API + workers, 48: a connection per
//! client plus one per worker loop; see docs/benchmarks.md), `RELAB_BENCH_WARMUP`
//! (1000 orders), `RELAB_BENCH_PGBENCH_SECS` (20), `RELAB_BENCH_LEDGER` (`journal`,
//! the payment ledger fsynced to a file as in every lab, or `memory`), `RELAB_BENCH_DATABASE_URL` /
//! `RELAB_TEST_DATABASE_URL` (server to create the databases on), `RELAB_PGBENCH`
//! (pgbench binary), `RUST_LOG` (default `warn,sqlx::query=error`: sqlx's
//! slow-statement warnings would flood the output under this load).
//!
//! Run by `cargo test --all-targets` (no `--bench` argument) it only says that
//! it is skipped: it needs minutes and a quiet machine.

mod common;
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use common::env_or;
use lab_service::config::{ApiConfig, WorkerConfig};
use lab_service::lab::{Lab, LabPlan, MetricsLayout, RunningLab};
use lab_service::metrics::LabMetrics;
use lab_service::payment_mock::FaultPlan;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const ORDER_BODY: &str = r#"{"customerId":"c-1","amountCents":1234,"currency":"EUR"}"#;
/// Initial values of the variables the script's claim sets with `\aset`.
const PGBENCH_DEFAULTS: [&str; 4] = ["-D", "r_id=0", "-D", "r_lease=00000000-0000-0000-0000-000000000000"];

#[derive(Debug, Clone)]
struct Settings {
    admin_url: String,
    orders: usize,
    clients: usize,
    workers: usize,
    bulkhead: usize,
    pool: u32,
    warmup: usize,
    pgbench_secs: u64,
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
            orders: env_or("RELAB_BENCH_ORDERS", 20_000)?,
            clients: env_or("RELAB_BENCH_CLIENTS", 32)?,
            workers: env_or("RELAB_BENCH_WORKERS", 16)?,
            bulkhead: env_or("RELAB_BENCH_BULKHEAD", 32)?,
            pool: env_or("RELAB_BENCH_POOL", 48)?,
            warmup: env_or("RELAB_BENCH_WARMUP", 1_000)?,
            pgbench_secs: env_or("RELAB_BENCH_PGBENCH_SECS", 20)?,
            pgbench: std::env::var("RELAB_PGBENCH").unwrap_or_else(|_| "pgbench".into()),
            journal: match std::env::var("RELAB_BENCH_LEDGER").as_deref() {
                Ok("journal") | Err(_) => true,
                Ok("memory") => false,
                Ok(other) => bail!("RELAB_BENCH_LEDGER must be journal or memory, got {other:?}"),
            },
        };
        if s.orders == 0 || s.clients == 0 || s.workers == 0 || s.bulkhead == 0 || s.pool == 0 || s.pgbench_secs == 0 {
            bail!("orders, clients, workers, bulkhead, pool and pgbench seconds must all be at least 1");
        }
        Ok(s)
    }
}

/// CPU time used so far: (this process, the whole machine), in seconds.
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

    fn now(&self) -> (f64, f64) {
        let own = process_ticks(std::process::id()).unwrap_or(0.0);
        let busy = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().next()?;
                let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal (guest is inside user)
                let total: f64 = v.iter().take(8).sum();
                Some(total - v.get(3)? - v.get(4)?)
            })
            .unwrap_or(0.0);
        (own / self.ticks_per_sec, busy / self.ticks_per_sec)
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

async fn admin_pool(s: &Settings) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(&s.admin_url)
        .await
        .with_context(|| format!("cannot reach Postgres at {} (run scripts/setup.sh)", s.admin_url))
}

async fn create_database(s: &Settings, name: &str) -> Result<String> {
    lab_service::db::create_database(&s.admin_url, name)
        .await
        .with_context(|| {
            format!(
                "cannot create database {name} on {} (run scripts/setup.sh)",
                s.admin_url
            )
        })
}

async fn drop_database(s: &Settings, name: &str) {
    if let Err(e) = lab_service::db::drop_database(&s.admin_url, name).await {
        eprintln!("pipeline bench: could not drop database {name}: {e}");
    }
}

/// What the database did, from its cumulative statistics (backends report
/// them at least when they exit): transactions, and scans and updates of `jobs`.
#[derive(Debug, Clone, Copy, Default)]
struct DbWork {
    xacts: i64,
    jobs_index_scans: i64,
    jobs_seq_scans: i64,
    jobs_updates: i64,
}

impl DbWork {
    async fn read(pool: &PgPool) -> Result<Self> {
        let (xacts, jobs_index_scans, jobs_seq_scans, jobs_updates): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()),
                    coalesce(idx_scan, 0)::bigint, seq_scan::bigint, n_tup_upd::bigint
             FROM pg_stat_user_tables WHERE relname = 'jobs'",
        )
        .fetch_one(pool)
        .await?;
        Ok(Self {
            xacts,
            jobs_index_scans,
            jobs_seq_scans,
            jobs_updates,
        })
    }

    /// After the sessions of a phase have exited.
    async fn read_after_exit(url: &str) -> Result<Self> {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        let w = Self::read(&pool).await;
        pool.close().await;
        w
    }

    /// Per order since `before`, as text.
    fn per_order(&self, before: &Self, orders: f64) -> String {
        let per = |a: i64, b: i64| (a - b) as f64 / orders.max(1.0);
        format!(
            "{:.2} DB transactions, {:.2} jobs index scans, {:.3} jobs seq scans, {:.2} jobs row updates per order",
            per(self.xacts, before.xacts),
            per(self.jobs_index_scans, before.jobs_index_scans),
            per(self.jobs_seq_scans, before.jobs_seq_scans),
            per(self.jobs_updates, before.jobs_updates)
        )
    }
}

struct LabRun {
    seconds: f64,
    paid_per_sec: f64,
    /// Until the last POST of the measured phase was answered.
    post_seconds: f64,
    e2e_p50_ms: f64,
    e2e_p99_ms: f64,
    max_queued: i64,
    mean_queued: f64,
    mean_running: f64,
    mean_idle_conns: f64,
    own_cpu_cores: f64,
    /// CPU per paid order: this process (API, workers, mock, HTTP clients) and the lab's Postgres backends.
    client_ms_per_order: f64,
    pg_ms_per_order: f64,
    machine_cpu_cores: f64,
    payment_calls: u64,
    post_retries: usize,
    /// Database work per paid order, warm-up included (every session of the
    /// lab, the bench's observer too).
    db_work: String,
}

/// The lab under test (the one `Lab` the binary, the runner and the tests
/// start) and a client for its API.
struct BenchLab {
    lab: RunningLab,
    api_url: String,
    http: reqwest::Client,
}

impl BenchLab {
    async fn start(s: &Settings, url: &str) -> Result<(Self, PgPool)> {
        let pool = lab_service::db::connect_and_migrate(url, s.pool).await?;
        let lab = Lab::start(LabPlan {
            pool: pool.clone(),
            replicas: 1,
            api: ApiConfig {
                listen: "127.0.0.1:0".parse()?,
                // throughput, not shedding: the whole batch may sit in the queue
                max_queue_depth: (s.warmup + s.orders) as i64 + 1_000,
                ..ApiConfig::default()
            },
            worker: Some(WorkerConfig {
                concurrency: s.workers,
                bulkhead_max_concurrent: s.bulkhead,
                ..WorkerConfig::default()
            }),
            worker_replicas: None,
            pools: None,
            mock_listen: "127.0.0.1:0".parse()?,
            faults: FaultPlan::default(),
            ledger_file: s.journal.then(|| lab_service::lab::default_ledger_file(url)),
            metrics: MetricsLayout::Shared,
        })
        .await?;
        let api_url = lab.api_url().to_string();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        Ok((Self { lab, api_url, http }, pool))
    }

    fn metrics(&self) -> &LabMetrics {
        &self.lab.metrics[0]
    }

    /// POST `n` orders from `clients` concurrent clients; the number of
    /// re-sent requests (same key) is returned.
    async fn post_orders(&self, n: usize, clients: usize) -> Result<usize> {
        let next = Arc::new(AtomicUsize::new(0));
        let retries = Arc::new(AtomicUsize::new(0));
        let url = format!("{}/orders", self.api_url);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let (http, url, next, retries) = (self.http.clone(), url.clone(), next.clone(), retries.clone());
            set.spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let key = Uuid::new_v4().to_string();
                    let mut tries = 0;
                    loop {
                        let sent = http
                            .post(&url)
                            .header("idempotency-key", &key)
                            .header("content-type", "application/json")
                            .body(ORDER_BODY)
                            .send()
                            .await;
                        let problem = match sent {
                            Ok(r) if r.status() == 201 => break,
                            Ok(r) => format!("HTTP {}: {}", r.status(), r.text().await.unwrap_or_default()),
                            Err(e) => e.to_string(),
                        };
                        tries += 1;
                        if tries >= 5 {
                            bail!("POST /orders failed 5 times: {problem}");
                        }
                        retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Ok(())
            });
        }
        while let Some(joined) = set.join_next().await {
            joined??;
        }
        Ok(retries.load(Ordering::Relaxed))
    }

    async fn stop(self) -> Result<()> {
        Ok(self.lab.shutdown().await?)
    }
}

/// One observation while the lab drains: jobs queued, jobs running, idle connections in the app's pool.
type Sample = (i64, i64, usize);

async fn wait_until_paid(
    observer: &PgPool,
    app_pool: &PgPool,
    total: i64,
    timeout: Duration,
    samples: &mut Vec<Sample>,
    mut cpu: Option<&mut CpuAccount>,
) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Some(cpu) = cpu.as_deref_mut() {
            cpu.sample(&backend_pids(observer).await?);
        }
        let (paid, queued, running): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM orders WHERE status = 'paid'),
                    (SELECT count(*) FROM jobs WHERE status = 'queued'),
                    (SELECT count(*) FROM jobs WHERE status = 'running')",
        )
        .fetch_one(observer)
        .await?;
        samples.push((queued, running, app_pool.num_idle()));
        if paid >= total {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("only {paid} of {total} orders paid after {timeout:?} ({queued} jobs queued, {running} running)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_lab(s: &Settings, url: &str, cpu: &CpuClock) -> Result<LabRun> {
    let (lab, pool) = BenchLab::start(s, url).await?;
    let observer = PgPoolOptions::new().max_connections(1).connect(url).await?;
    let mut samples = Vec::new();

    eprintln!("pipeline bench: lab warm-up, {} orders", s.warmup);
    if s.warmup > 0 {
        lab.post_orders(s.warmup, s.clients).await?;
        wait_until_paid(
            &observer,
            &pool,
            s.warmup as i64,
            Duration::from_secs(60),
            &mut samples,
            None,
        )
        .await?;
    }
    let calls_before = lab.metrics().pipeline.payment_calls.get();
    samples.clear();

    eprintln!(
        "pipeline bench: lab, {} orders from {} clients ({} workers, bulkhead {}, pool {})",
        s.orders, s.clients, s.workers, s.bulkhead, s.pool
    );
    let cpu_before = cpu.now();
    let mut account = CpuAccount::start(cpu, std::process::id(), &backend_pids(&observer).await?);
    let start_wall: DateTime<Utc> = Utc::now();
    let started = Instant::now();
    let posting = {
        let lab = &lab;
        async move {
            let retries = lab.post_orders(s.orders, s.clients).await?;
            Ok::<_, anyhow::Error>((retries, started.elapsed()))
        }
    };
    let total = (s.warmup + s.orders) as i64;
    let (posted, paid) = tokio::join!(
        posting,
        wait_until_paid(
            &observer,
            &pool,
            total,
            Duration::from_secs(300),
            &mut samples,
            Some(&mut account)
        )
    );
    let (post_retries, post_elapsed) = posted?;
    paid?;
    let cpu_after = cpu.now();
    account.sample(&backend_pids(&observer).await?);
    let (client_cpu, pg_cpu) = account.seconds();
    let polled = started.elapsed().as_secs_f64();

    // exact end: when the last measured order was marked paid (same machine clock)
    let (last_paid, p50, p99): (Option<DateTime<Utc>>, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT max(finished_at),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at))
         FROM orders WHERE created_at >= $1 AND status = 'paid'",
    )
    .bind(start_wall)
    .fetch_one(&observer)
    .await?;
    let seconds = last_paid
        .map(|t| (t - start_wall).num_microseconds().unwrap_or(0) as f64 / 1e6)
        .filter(|s| *s > 0.0)
        .unwrap_or(polled);
    let payment_calls = lab.metrics().pipeline.payment_calls.get() - calls_before;
    observer.close().await;
    lab.stop().await?;
    pool.close().await;
    let db_work = DbWork::read_after_exit(url)
        .await?
        // from the fresh database on, warm-up included: a busy backend reports its
        // statistics only every second or so, an idle one after ~10 s
        .per_order(&DbWork::default(), (s.warmup + s.orders) as f64);

    let n = samples.len().max(1) as f64;
    Ok(LabRun {
        seconds,
        paid_per_sec: s.orders as f64 / seconds,
        post_seconds: post_elapsed.as_secs_f64(),
        e2e_p50_ms: p50.unwrap_or(0.0) * 1e3,
        e2e_p99_ms: p99.unwrap_or(0.0) * 1e3,
        max_queued: samples.iter().map(|s| s.0).max().unwrap_or(0),
        mean_queued: samples.iter().map(|s| s.0 as f64).sum::<f64>() / n,
        mean_running: samples.iter().map(|s| s.1 as f64).sum::<f64>() / n,
        mean_idle_conns: samples.iter().map(|s| s.2 as f64).sum::<f64>() / n,
        own_cpu_cores: (cpu_after.0 - cpu_before.0) / polled,
        client_ms_per_order: client_cpu * 1e3 / s.orders as f64,
        pg_ms_per_order: pg_cpu * 1e3 / s.orders as f64,
        machine_cpu_cores: (cpu_after.1 - cpu_before.1) / polled,
        payment_calls,
        post_retries,
        db_work,
    })
}

struct PgbenchRun {
    tps: f64,
    transactions: u64,
    failed: String,
    latency_ms: String,
    paid: i64,
    db_work: String,
    machine_cpu_cores: f64,
    /// CPU per transaction (= order): pgbench itself and its Postgres backends.
    client_ms_per_order: f64,
    pg_ms_per_order: f64,
    command: String,
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
    args.push(s.clients.to_string());
    args.extend(["-j".into(), "2".into(), "-T".into(), s.pgbench_secs.to_string()]);
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
    let work_before = DbWork::read_after_exit(url).await?;
    let script = script_path()?;
    let args = pgbench_args(s, &script.to_string_lossy(), url);
    eprintln!(
        "pipeline bench: pgbench, {} clients for {} s",
        s.clients, s.pgbench_secs
    );
    let observer = PgPoolOptions::new().max_connections(1).connect(url).await?;
    let before = cpu.now();
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
    let elapsed = started.elapsed().as_secs_f64();
    let after = cpu.now();
    observer.close().await;
    let (client_cpu, pg_cpu) = account.seconds();
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
    let transactions = field(&stdout, "number of transactions actually processed:")
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let failed = field(&stdout, "number of failed transactions:")
        .unwrap_or("?")
        .to_string();
    let latency_ms = field(&stdout, "latency average =").unwrap_or("?").to_string();
    let db_work = DbWork::read_after_exit(url)
        .await?
        .per_order(&work_before, transactions as f64);
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    let paid: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'paid'")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    let mut shown = pgbench_args(
        s,
        "bench/pgbench/reference-queue.sql",
        "<fresh database with the lab schema>",
    );
    shown.insert(0, "pgbench".into());
    Ok(PgbenchRun {
        tps,
        transactions,
        failed,
        latency_ms,
        paid,
        db_work,
        machine_cpu_cores: (after.1 - before.1) / elapsed,
        client_ms_per_order: client_cpu * 1e3 / transactions.max(1) as f64,
        pg_ms_per_order: pg_cpu * 1e3 / transactions.max(1) as f64,
        command: shown.join(" "),
    })
}

async fn server_version(s: &Settings) -> String {
    match admin_pool(s).await {
        Ok(p) => {
            let v: Option<String> = sqlx::query_scalar("SHOW server_version").fetch_one(&p).await.ok();
            p.close().await;
            v.unwrap_or_else(|| "?".into())
        }
        Err(_) => "?".into(),
    }
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
    let suffix = Uuid::new_v4().simple().to_string();
    let (lab_db, pgb_db) = (format!("relab_bench_lab_{suffix}"), format!("relab_bench_pgb_{suffix}"));

    let phases = async {
        let lab = async {
            let url = create_database(&s, &lab_db).await?;
            run_lab(&s, &url, &cpu).await
        }
        .await
        .context("lab run")?;
        // pgbench only after the lab has stopped: one at a time on the same server
        let pgb = async {
            let url = create_database(&s, &pgb_db).await?;
            run_pgbench(&s, &url, &cpu).await
        }
        .await
        .context("pgbench run")?;
        Ok::<_, anyhow::Error>((lab, pgb))
    };
    let outcome = tokio::select! {
        r = phases => r,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    // also after a failure or Ctrl-C (pgbench is killed when its handle drops)
    drop_database(&s, &lab_db).await;
    drop_database(&s, &pgb_db).await;
    let (lab, pgb) = outcome?;

    let ratio = lab.paid_per_sec / pgb.tps;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let version = server_version(&s).await;
    println!();
    println!("| lab paid orders/s | pgbench tps (orders/s) | ratio | target |");
    println!("|---:|---:|---:|---|");
    println!(
        "| {:.0} | {:.0} | {:.0}% | >= 50%: {} |",
        lab.paid_per_sec,
        pgb.tps,
        ratio * 100.0,
        if ratio >= 0.5 { "met" } else { "NOT met" }
    );
    println!();
    println!(
        "lab:     {} orders in {:.2} s (first POST -> last paid), {} clients, {} workers, bulkhead {}, pool {}, warm-up {}",
        s.orders, lab.seconds, s.clients, s.workers, s.bulkhead, s.pool, s.warmup
    );
    println!(
        "         POSTs answered after {:.2} s ({:.0}/s, {} re-sent); e2e p50 {:.1} ms, p99 {:.1} ms; {} payment calls",
        lab.post_seconds,
        s.orders as f64 / lab.post_seconds,
        lab.post_retries,
        lab.e2e_p50_ms,
        lab.e2e_p99_ms,
        lab.payment_calls
    );
    println!("         {}", lab.db_work);
    println!(
        "         jobs queued: mean {:.1}, max {}; running: mean {:.1} of {} workers; idle pool connections: mean {:.1} of {}",
        lab.mean_queued, lab.max_queued, lab.mean_running, s.workers, lab.mean_idle_conns, s.pool
    );
    println!(
        "         CPU: lab process (API + workers + mock + clients) {:.2} cores, machine {:.2} of {cores}",
        lab.own_cpu_cores, lab.machine_cpu_cores
    );
    println!(
        "pgbench: {} transactions ({} paid orders), failed {}, latency average {}; CPU: machine {:.2} of {cores}",
        pgb.transactions, pgb.paid, pgb.failed, pgb.latency_ms, pgb.machine_cpu_cores
    );
    println!("         {}", pgb.db_work);
    println!();
    // the same comparison in CPU per order: what the rates would be if CPU
    // were the only limit, whatever else the machine was doing meanwhile
    let (lab_cpu, pgb_cpu) = (
        lab.client_ms_per_order + lab.pg_ms_per_order,
        pgb.client_ms_per_order + pgb.pg_ms_per_order,
    );
    println!("| CPU per paid order | client side | Postgres backends | total |");
    println!("|---|---:|---:|---:|");
    println!(
        "| lab (API + workers + mock + HTTP clients) | {:.2} ms | {:.2} ms | {:.2} ms |",
        lab.client_ms_per_order, lab.pg_ms_per_order, lab_cpu
    );
    println!(
        "| pgbench | {:.2} ms | {:.2} ms | {:.2} ms |",
        pgb.client_ms_per_order, pgb.pg_ms_per_order, pgb_cpu
    );
    println!(
        "| ratio pgbench / lab (CPU-bound rate ratio) | | {:.0}% | {:.0}% |",
        pgb.pg_ms_per_order / lab.pg_ms_per_order.max(1e-9) * 100.0,
        pgb_cpu / lab_cpu.max(1e-9) * 100.0
    );
    println!();
    println!("commands:");
    println!("  cargo bench -p lab-service --bench pipeline   (RELAB_BENCH_ORDERS={} RELAB_BENCH_CLIENTS={} RELAB_BENCH_WORKERS={} RELAB_BENCH_BULKHEAD={} RELAB_BENCH_POOL={} RELAB_BENCH_PGBENCH_SECS={} RELAB_BENCH_LEDGER={})",
        s.orders, s.clients, s.workers, s.bulkhead, s.pool, s.pgbench_secs, if s.journal { "journal" } else { "memory" });
    println!("  {}", pgb.command);
    println!(
        "machine: {cores} cores (nproc), PostgreSQL {version}, load average before {load_before}, after {}",
        loadavg()
    );
    println!("run took {:.0} s", run_started.elapsed().as_secs_f64());
    Ok(())
}

//! Benchmark (not a test): the load generator next to `wrk`, in one run, on
//! the same trivial endpoint (the payment mock's `GET /healthz`, served by
//! a separate `lab-service payment-mock` process, so both tools are outside
//! clients of the same server). Results are recorded in `docs/benchmarks.md`.
//!
//! ```text
//! cargo bench -p lab-service --bench loadgen         # or: scripts/bench.sh loadgen
//! ```
//!
//! (a) Open loop: hold each rate of `RELAB_BENCH_RATE` (30000; a list such
//!     as `10000,20000,30000` steps through them to find the ceiling) for
//!     `RELAB_BENCH_OPEN_SECS` (30) s. Target: every planned send made, the
//!     achieved rate (answers / wall time of the load phase) within 0.5% of
//!     the asked one, and the send lag (actual - intended send time) p99
//!     under 2 ms. Client and server CPU per request and the load average
//!     before and after are printed for each rate.
//! (b) Closed loop: `wrk -t2 -c<N> -d<S>s` and the load generator's closed
//!     loop with N loops for S s, alternating, `RELAB_BENCH_ROUNDS` (5) rounds
//!     each; N = `RELAB_BENCH_CONNECTIONS` (64), S = `RELAB_BENCH_CLOSED_SECS`
//!     (10). Target: the best load-generator round reaches at least 80% of the
//!     best wrk round (medians shown too: the machine is shared). CPU time of client and server per request is shown, as
//!     it explains the ratio on a small machine.
//!
//! Other knobs: `RELAB_BENCH_MAX_IN_FLIGHT` (1024, open loop), `RELAB_BENCH_ROUNDS=0`
//! (open loop only), `RELAB_WRK`
//! (the wrk binary). Run by `cargo test --all-targets` (no `--bench`
//! argument) it only says that it is skipped.

mod common;
use anyhow::{bail, Context, Result};
use common::env_or;
use lab_service::loadgen::{run_load, LoadConfig, LoadProgress, LoadReport, LoadStage, Target};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ; 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

struct Settings {
    /// Open-loop rates, run one after the other (steps to find the ceiling).
    rates: Vec<f64>,
    open_secs: u64,
    max_in_flight: usize,
    connections: usize,
    closed_secs: u64,
    rounds: usize,
    wrk: String,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let s = Self {
            rates: rates(&std::env::var("RELAB_BENCH_RATE").unwrap_or_else(|_| "30000".into()))?,
            open_secs: env_or("RELAB_BENCH_OPEN_SECS", 30)?,
            max_in_flight: env_or("RELAB_BENCH_MAX_IN_FLIGHT", 1_024)?,
            connections: env_or("RELAB_BENCH_CONNECTIONS", 64)?,
            closed_secs: env_or("RELAB_BENCH_CLOSED_SECS", 10)?,
            rounds: env_or("RELAB_BENCH_ROUNDS", 5)?,
            wrk: std::env::var("RELAB_WRK").unwrap_or_else(|_| "wrk".into()),
        };
        if s.open_secs == 0 || s.max_in_flight == 0 {
            bail!("open seconds and max in flight must be above 0");
        }
        if s.connections < 2 || s.closed_secs == 0 {
            bail!("connections (at least 2: wrk -t2) and closed seconds must be above 0");
        }
        Ok(s)
    }
}

/// `30000` or `10000,20000,30000`: requests per second, each above 0.
fn rates(raw: &str) -> Result<Vec<f64>> {
    raw.split(',')
        .map(|r| match r.trim().parse::<f64>() {
            Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
            _ => bail!("RELAB_BENCH_RATE={raw:?}: {r:?} is not a rate above 0"),
        })
        .collect()
}

/// User + system CPU seconds of a process (a zombie still reports its own).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the parenthesised command name: state is field 3, utime 14, stime 15
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS)
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The server under load: `lab-service payment-mock`, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    async fn start() -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(env!("CARGO_BIN_EXE_lab-service"))
            .args(["payment-mock", "--mock-listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting lab-service payment-mock")?;
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}/healthz"),
        };
        let http = reqwest::Client::new();
        let started = Instant::now();
        while !matches!(http.get(&server.url).send().await, Ok(r) if r.status().is_success()) {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("the payment mock did not answer {} within 10 s", server.url);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    fn cpu(&self) -> f64 {
        cpu_seconds(self.child.id()).unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One closed-loop (or open-loop) measurement.
struct Round {
    tool: &'static str,
    requests: u64,
    seconds: f64,
    errors: u64,
    client_cpu: f64,
    server_cpu: f64,
}

impl Round {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// CPU microseconds per request.
    fn per_request(&self, cpu: f64) -> f64 {
        cpu * 1e6 / self.requests.max(1) as f64
    }

    fn row(&self) -> String {
        format!(
            "| {} | {:.0} | {} | {} | {:.1} | {:.1} |",
            self.tool,
            self.rate(),
            self.requests,
            self.errors,
            self.per_request(self.client_cpu),
            self.per_request(self.server_cpu)
        )
    }
}

async fn loadgen(server: &Server, config: LoadConfig) -> Result<(LoadReport, f64, f64)> {
    let (progress, _watcher) = watch::channel(LoadProgress::default());
    let target = Target::Get {
        url: server.url.clone(),
    };
    let (client0, server0) = (cpu_seconds(std::process::id()).unwrap_or(0.0), server.cpu());
    let report = run_load(&target, &config, &progress, &CancellationToken::new()).await?;
    let client = cpu_seconds(std::process::id()).unwrap_or(0.0) - client0;
    Ok((report, client, server.cpu() - server0))
}

async fn closed_loadgen(s: &Settings, server: &Server) -> Result<Round> {
    let config = LoadConfig::closed_loop(s.connections, Duration::from_secs(s.closed_secs));
    let (report, client_cpu, server_cpu) = loadgen(server, config).await?;
    Ok(Round {
        tool: "relab loadgen (closed loop)",
        requests: report.sent,
        seconds: report.elapsed.as_secs_f64(),
        errors: report.errors + report.rejected + report.shed,
        client_cpu,
        server_cpu,
    })
}

fn wrk_command(s: &Settings, server: &Server, secs: u64, connections: usize) -> Vec<String> {
    vec![
        s.wrk.clone(),
        "-t2".into(),
        format!("-c{connections}"),
        format!("-d{secs}s"),
        server.url.clone(),
    ]
}

/// Run wrk to completion; its CPU time is read from its zombie before reaping.
async fn wrk(s: &Settings, server: &Server, secs: u64, connections: usize) -> Result<Round> {
    let argv = wrk_command(s, server, secs, connections);
    let server0 = server.cpu();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", argv[0]))?;
    let pid = child.id();
    let mut client_cpu = 0.0;
    loop {
        match process_state(pid) {
            Some('Z') | None => break,
            _ => {
                client_cpu = cpu_seconds(pid).unwrap_or(client_cpu);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    client_cpu = cpu_seconds(pid).unwrap_or(client_cpu);
    let server_cpu = server.cpu() - server0;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} failed: {text}{}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    let rate: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))?;
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no request count in wrk's output: {text}"))?;
    let non_2xx: u64 = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let socket_errors = field("Socket errors:").is_some() as u64;
    Ok(Round {
        tool: "wrk",
        requests,
        seconds: requests as f64 / rate,
        errors: non_2xx + socket_errors,
        client_cpu,
        server_cpu,
    })
}

/// Open-loop targets: the achieved rate within this many percent of the asked one...
const RATE_TOLERANCE_PCT: f64 = 0.5;
/// ...and 99% of sends within this many milliseconds of their intended time.
const SEND_LAG_P99_MS: f64 = 2.0;

/// One open-loop run at one rate.
struct OpenRun {
    rate: f64,
    report: LoadReport,
    planned: u64,
    client_cpu: f64,
    server_cpu: f64,
    load_before: String,
    load_after: String,
}

impl OpenRun {
    fn achieved(&self) -> f64 {
        self.report.achieved_rate()
    }

    fn error_pct(&self) -> f64 {
        (self.achieved() - self.rate) / self.rate * 100.0
    }

    fn lag_ms(&self, q: f64) -> f64 {
        self.report.send_lag.value_at_quantile(q) as f64 / 1000.0
    }

    fn per_request(&self, cpu: f64) -> f64 {
        cpu * 1e6 / self.report.sent.max(1) as f64
    }

    /// Every planned send made, the rate within the tolerance, the send lag p99 under the bound.
    fn met(&self) -> bool {
        self.report.sent == self.planned
            && self.error_pct().abs() <= RATE_TOLERANCE_PCT
            && self.lag_ms(0.99) < SEND_LAG_P99_MS
    }

    fn row(&self) -> String {
        let r = &self.report;
        let latency = r.latency_ms();
        format!(
            "| {:.0}/s | {:.1}/s | {:+.3}% | {} / {} | {} | {} | {:.2} / {:.2} / {:.2} ms | {:.2} / {:.2} / {:.2} ms | {:.1} µs | {:.1} µs | {} → {} | {} |",
            self.rate,
            self.achieved(),
            self.error_pct(),
            r.sent,
            self.planned,
            r.errors + r.shed + r.rejected,
            r.late_sends,
            self.lag_ms(0.5),
            self.lag_ms(0.99),
            r.send_lag.max() as f64 / 1000.0,
            latency.p50,
            latency.p99,
            latency.max,
            self.per_request(self.client_cpu),
            self.per_request(self.server_cpu),
            self.load_before,
            self.load_after,
            if self.met() { "met" } else { "MISSED" },
        )
    }
}

async fn open_loop(s: &Settings, server: &Server, rate: f64) -> Result<OpenRun> {
    let stages = vec![LoadStage {
        rate_per_sec: rate,
        duration: Duration::from_secs(s.open_secs),
    }];
    let planned = lab_service::loadgen::schedule::total_sends(&stages);
    let mut config = LoadConfig::open_loop(stages);
    config.max_in_flight = s.max_in_flight;
    let load_before = loadavg();
    let (report, client_cpu, server_cpu) = loadgen(server, config).await?;
    Ok(OpenRun {
        rate,
        report,
        planned,
        client_cpu,
        server_cpu,
        load_before,
        load_after: loadavg(),
    })
}

async fn open_loops(s: &Settings, server: &Server, cores: usize) -> Result<()> {
    let mut runs = Vec::new();
    for &rate in &s.rates {
        eprintln!("[bench] open loop: {rate}/s for {} s", s.open_secs);
        runs.push(open_loop(s, server, rate).await?);
    }
    println!(
        "\n### (a) open loop: {} s per rate, max in flight {}; target: achieved within {RATE_TOLERANCE_PCT}% of asked, send lag p99 < {SEND_LAG_P99_MS} ms",
        s.open_secs, s.max_in_flight
    );
    println!();
    println!("| asked | achieved | error | sent / planned | errors | late sends (>5 ms) | send lag p50 / p99 / max | latency p50 / p99 / max (from intended time) | client CPU/req | server CPU/req | load avg (1 min) before → after | target |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for run in &runs {
        println!("{}", run.row());
    }
    println!();
    for run in &runs {
        let per_second: Vec<u64> = run.report.seconds.iter().map(|x| x.sent).collect();
        let (client, server) = (run.per_request(run.client_cpu), run.per_request(run.server_cpu));
        println!(
            "{:.0}/s: load phase {:.3} s, sends per intended second min {} max {}; CPU (client {client:.1} + server {server:.1} µs/req) × {:.0}/s = {:.2} of {cores} cores",
            run.rate,
            run.report.elapsed.as_secs_f64(),
            per_second.iter().min().unwrap_or(&0),
            per_second.iter().max().unwrap_or(&0),
            run.achieved(),
            (client + server) * run.achieved() / 1e6,
        );
    }
    match runs.iter().filter(|r| r.met()).map(|r| r.rate).max_by(f64::total_cmp) {
        Some(ceiling) => println!("\nhighest asked rate that met the target in this run: {ceiling:.0}/s"),
        None => println!("\nno asked rate met the target in this run"),
    }
    Ok(())
}

async fn closed_loops(s: &Settings, server: &Server) -> Result<()> {
    let mut rounds = Vec::new();
    for round in 0..s.rounds {
        eprintln!("[bench] closed loop round {}/{}: wrk", round + 1, s.rounds);
        rounds.push(wrk(s, server, s.closed_secs, s.connections).await?);
        eprintln!("[bench] closed loop round {}/{}: relab loadgen", round + 1, s.rounds);
        rounds.push(closed_loadgen(s, server).await?);
    }
    println!(
        "\n### (b) closed loop: {} connections for {} s, {} rounds each (alternating)",
        s.connections, s.closed_secs, s.rounds
    );
    println!();
    println!("| tool | req/s | requests | errors | client CPU µs/req | server CPU µs/req |");
    println!("|---|---|---|---|---|---|");
    for r in &rounds {
        println!("{}", r.row());
    }
    let rates = |tool: &str| {
        let mut r: Vec<f64> = rounds
            .iter()
            .filter(|r| r.tool.starts_with(tool))
            .map(Round::rate)
            .collect();
        r.sort_by(f64::total_cmp);
        r
    };
    let (wrk_rates, our_rates) = (rates("wrk"), rates("relab"));
    let best = |r: &[f64]| r.last().copied().unwrap_or(0.0);
    let median = |r: &[f64]| r.get(r.len() / 2).copied().unwrap_or(0.0);
    let ratio = best(&our_rates) / best(&wrk_rates) * 100.0;
    println!(
        "\nbest rounds: relab loadgen {:.0} req/s vs wrk {:.0} req/s = {ratio:.1}% of wrk; target >= 80%: {}",
        best(&our_rates),
        best(&wrk_rates),
        if ratio >= 80.0 { "MET" } else { "MISSED" }
    );
    println!(
        "median rounds: relab loadgen {:.0} req/s vs wrk {:.0} req/s = {:.1}% of wrk",
        median(&our_rates),
        median(&wrk_rates),
        median(&our_rates) / median(&wrk_rates) * 100.0
    );
    println!(
        "wrk command: {}",
        wrk_command(s, server, s.closed_secs, s.connections).join(" ")
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("loadgen bench: skipped (not a test; run `cargo bench -p lab-service --bench loadgen`)");
        return Ok(());
    }
    let s = Settings::from_env()?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_before = loadavg();
    let server = Server::start().await?;
    println!("## loadgen vs wrk on GET {}", server.url);
    println!(
        "\nmachine: {cores} cores, load average before {load_before}; server: `lab-service payment-mock` (release), own process"
    );
    // warm up the server and both clients' code paths; not recorded
    wrk(&s, &server, 2, s.connections).await?;
    loadgen(&server, LoadConfig::closed_loop(s.connections, Duration::from_secs(2))).await?;

    open_loops(&s, &server, cores).await?;
    if s.rounds > 0 {
        closed_loops(&s, &server).await?;
    }
    println!("\nload average after: {}", loadavg());
    Ok(())
}

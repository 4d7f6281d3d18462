//! Operator benchmark (not a test): N experiments applied at once to a real
//! API server; time from create to "every child applied" (the status turns
//! `Provisioning`, which the operator writes only after applying them all),
//! reconciles per second, and the operator process's resident memory.
//!
//! Needs a cluster (`RELAB_KUBECONFIG` or `KUBECONFIG`); `scripts/bench.sh
//! operator` starts the loopback control plane when none is given. The
//! operator runs as its own process (the release `relab` binary), watching a
//! fresh namespace, which is deleted afterwards. The cluster helpers are the
//! controller tests' (`tests/common`).
//!
//! Targets: create -> children applied within 1.25x of the reference (the
//! same children applied directly by one client in the same run) at p99;
//! operator peak RSS < 64 MiB, no reconcile errors, every experiment past
//! `Pending`. Each phase's namespace is deleted, and gone, before the next.
//!
//! Rounds: each round times both sides, alternating which goes first
//! (operator then reference, then reference then operator, ...), so that a
//! control plane that drifts over the run weighs on both alike; the target
//! is judged on every round's latencies pooled, each round also printed.
//!
//! Knobs: `RELAB_BENCH_EXPERIMENTS` (default 100), `RELAB_BENCH_ROUNDS`
//! (default 2), `RELAB_BENCH_REFERENCE` (`0`: no reference phase and one
//! round; `cargo xtask bench operator-1000` runs 1,000 experiments so),
//! `RELAB_BENCH_OPERATOR_ARGS` (more `relab operator` flags, split at
//! spaces, e.g. `--no-dashboards`, to see what a step costs). Run by `cargo test --all-targets` (no `--bench`
//! argument) it only says it is skipped.

#[path = "../tests/common/mod.rs"]
mod common;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use relab_operator::controller::build::{self, LabDefaults, ServiceIps};
use relab_operator::crd::{Phase, ReliabilityExperiment};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) used so far by the processes whose command
/// name is `comm` (the control plane's, found in /proc), or by `pid`.
fn cpu_seconds(select: impl Fn(u32, &str) -> bool) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ... utime stime: fields 14 and 15, counted after the ')'
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        if !select(pid, comm) {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        total += (field(11) + field(12)) / ticks;
    }
    total
}

/// The CPU of the control plane's processes (and of `operator`, when
/// given) over a phase: started by [`CpuUse::start`], printed by `print`.
struct CpuUse {
    operator: Option<u32>,
    at_start: [f64; 4],
}

impl CpuUse {
    const WHO: [&'static str; 3] = ["kube-apiserver", "etcd", "kube-controller"];

    fn now(operator: Option<u32>) -> [f64; 4] {
        let [a, e, c] = Self::WHO.map(|name| cpu_seconds(|_, comm| comm == name));
        let o = operator.map_or(0.0, |p| cpu_seconds(|pid, _| pid == p));
        [a, e, c, o]
    }
    fn start(operator: Option<u32>) -> Self {
        Self {
            operator,
            at_start: Self::now(operator),
        }
    }
    fn line(&self) -> String {
        let now = Self::now(self.operator);
        let used: Vec<f64> = now.iter().zip(self.at_start).map(|(b, a)| b - a).collect();
        let operator = match self.operator {
            Some(_) => format!(", operator {:.2} s", used[3]),
            None => String::new(),
        };
        format!(
            "  CPU in the phase             API server {:.2} s, etcd {:.2} s, controller-manager {:.2} s{operator}",
            used[0], used[1], used[2]
        )
    }
}

/// What the API server says it served (its own `/metrics`): requests by
/// verb and resource with their server-side seconds (watches left out: a
/// watch's duration is its lifetime), and watch events sent by kind with
/// their bytes. Taken before and after a phase; [`ApiServed::since`] prints
/// where the API server's time went in between.
#[derive(Default)]
struct ApiServed {
    /// (verb, resource[/subresource]) -> (count, seconds)
    requests: HashMap<(String, String), (f64, f64)>,
    /// kind -> (events, bytes)
    watch_events: HashMap<String, (f64, f64)>,
    /// Why `/metrics` could not be read, when it could not.
    unread: Option<String>,
}

/// `now - before` per key, where it grew, largest second figure first.
fn grown<'a, K: Eq + std::hash::Hash>(
    before: &HashMap<K, (f64, f64)>,
    now: &'a HashMap<K, (f64, f64)>,
) -> Vec<(&'a K, f64, f64)> {
    let mut grown: Vec<(&K, f64, f64)> = now
        .iter()
        .map(|(key, (a, b))| {
            let (a0, b0) = before.get(key).copied().unwrap_or_default();
            (key, a - a0, b - b0)
        })
        .filter(|(_, a, _)| *a > 0.0)
        .collect();
    grown.sort_by(|x, y| y.2.total_cmp(&x.2));
    grown
}

impl ApiServed {
    async fn now(client: &Client) -> Self {
        let request = http::Request::get("/metrics").body(Vec::new()).expect("a request");
        let text = match client.request_text(request).await {
            Ok(text) => text,
            Err(e) => {
                return Self {
                    unread: Some(e.to_string()),
                    ..Self::default()
                }
            }
        };
        let mut served = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let label = |key: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
                    .map(|v| v.trim_end_matches(['"', '}']).to_string())
                    .unwrap_or_default()
            };
            match name {
                "apiserver_request_duration_seconds_count" | "apiserver_request_duration_seconds_sum" => {
                    let verb = label("verb");
                    if verb == "WATCH" || verb == "CONNECT" {
                        continue;
                    }
                    let resource = match label("subresource") {
                        sub if sub.is_empty() => label("resource"),
                        sub => format!("{}/{sub}", label("resource")),
                    };
                    let entry = served.requests.entry((verb, resource)).or_default();
                    match name.ends_with("_count") {
                        true => entry.0 += value,
                        false => entry.1 += value,
                    }
                }
                "apiserver_watch_events_total" => served.watch_events.entry(label("kind")).or_default().0 += value,
                "apiserver_watch_events_sizes_sum" => served.watch_events.entry(label("kind")).or_default().1 += value,
                _ => {}
            }
        }
        served
    }

    /// The requests (most server time first) and watch events since `self`.
    async fn since(&self, client: &Client) -> String {
        let now = Self::now(client).await;
        if let Some(why) = self.unread.as_ref().or(now.unread.as_ref()) {
            return format!("  API server's /metrics not read: {why}");
        }
        let mut out =
            String::from("  API requests in the phase    (server-side seconds, summed over concurrent requests)\n");
        for ((verb, resource), count, secs) in grown(&self.requests, &now.requests).into_iter().take(10) {
            out += &format!("    {verb:<7} {resource:<34} {count:>6.0}  {secs:>7.2} s\n");
        }
        let listed: Vec<String> = grown(&self.watch_events, &now.watch_events)
            .iter()
            .map(|(kind, n, bytes)| format!("{kind} {n:.0} ({:.0} KiB)", bytes / 1024.0))
            .collect();
        out += &format!("  watch events sent            {}", listed.join(", "));
        out
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// A sample of the operator's metrics (0 when not rendered yet).
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    common::operator_metric(addr, name).await.unwrap_or(0.0)
}

/// The target: the operator's p99 within this factor of the reference's.
const RATIO_TARGET: f64 = 1.25;

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One timed phase of a round.
#[derive(Clone, Copy)]
enum Side {
    Operator,
    Reference,
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("operator bench: skipped (not a test; run `cargo xtask bench operator`)");
        return;
    }
    let n: usize = std::env::var("RELAB_BENCH_EXPERIMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let with_reference = std::env::var("RELAB_BENCH_REFERENCE").map_or(true, |v| v != "0");
    // rounds alternate which side goes first (operator, reference, then
    // reference, operator, ...): a control plane that drifts (warms up,
    // grows its heap, compacts) weighs on both sides alike
    let rounds: usize = match with_reference {
        true => std::env::var("RELAB_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2)
            .max(1),
        false => 1,
    };
    let (_, kubeconfig) = common::kubeconfig();
    let load_before = loadavg();
    let mut operator_runs: Vec<OperatorRun> = Vec::new();
    let mut references: Vec<Vec<Duration>> = Vec::new();
    for round in 0..rounds {
        let order = match (with_reference, round % 2) {
            (false, _) => vec![Side::Operator],
            (true, 0) => vec![Side::Operator, Side::Reference],
            (true, _) => vec![Side::Reference, Side::Operator],
        };
        for (i, side) in order.into_iter().enumerate() {
            if round > 0 || i > 0 {
                // let the controller-manager settle after the last phase
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            println!("round {} of {rounds}:", round + 1);
            match side {
                Side::Operator => {
                    let kubeconfig = kubeconfig.clone();
                    operator_runs
                        .push(in_fresh_namespace(move |client, ns| operator_run(client, ns, n, kubeconfig)).await);
                }
                Side::Reference => {
                    references.push(in_fresh_namespace(move |client, ns| reference(client, ns, n)).await)
                }
            }
        }
    }
    let load_after = loadavg();

    println!(
        "summary: {n} experiments, {rounds} round(s); operator flags beyond the defaults: [{}]; load average before {load_before}, after {load_after}",
        std::env::var("RELAB_BENCH_OPERATOR_ARGS").unwrap_or_default()
    );
    if with_reference && operator_runs.iter().all(|run| !run.latencies.is_empty()) {
        println!("  create -> children applied   operator   reference   ratio");
        for (round, (op, reference)) in operator_runs.iter().zip(&references).enumerate() {
            compare(
                &format!("round {}  p50 / p99         ", round + 1),
                &op.latencies,
                reference,
            );
        }
        // every round's latencies together, each side
        let pooled = |runs: Vec<&Vec<Duration>>| {
            let mut all: Vec<Duration> = runs.into_iter().flatten().copied().collect();
            all.sort();
            all
        };
        let op = pooled(operator_runs.iter().map(|run| &run.latencies).collect());
        let reference = pooled(references.iter().collect());
        let met = compare("all rounds p50 / p99       ", &op, &reference) <= RATIO_TARGET;
        println!(
            "  target: p99 of all rounds within {RATIO_TARGET}x of the reference's {}",
            if met { "met" } else { "MISSED" }
        );
    }
    let peak_rss_kib = operator_runs.iter().map(|run| run.peak_rss_kib).max().unwrap_or(0);
    let errors: u64 = operator_runs.iter().map(|run| run.errors).sum();
    let reached = operator_runs.iter().map(|run| run.reached).min().unwrap_or(0);
    let rss_ok = peak_rss_kib < 64 * 1024;
    println!(
        "  targets: peak RSS {:.1} MiB < 64 MiB {}, reconcile errors {} = 0 {}, past Pending {}/{n} {} (the worst round)",
        peak_rss_kib as f64 / 1024.0,
        if rss_ok { "met" } else { "MISSED" },
        errors,
        if errors == 0 { "met" } else { "MISSED" },
        reached,
        if reached == n { "met" } else { "MISSED" },
    );
}

/// Print one row of the comparison, `label` then p50 / p99 of each side
/// (sorted latencies) and their ratios; returns the p99 ratio.
fn compare(label: &str, op: &[Duration], reference: &[Duration]) -> f64 {
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-3);
    let (p50, p99) = (percentile(op, 0.50), percentile(op, 0.99));
    let (r50, r99) = (percentile(reference, 0.50), percentile(reference, 0.99));
    println!(
        "  {label} {:>5.0} / {:>5.0} ms  {:>5.0} / {:>5.0} ms   {:.2}x / {:.2}x",
        ms(p50),
        ms(p99),
        ms(r50),
        ms(r99),
        ratio(p50, r50),
        ratio(p99, r99)
    );
    ratio(p99, r99)
}

/// Run `body` in a fresh namespace (the CRD applied), delete the namespace,
/// and wait until it is gone (at most 10 minutes), so that the next phase,
/// and whoever else shares the control plane, finds it idle again.
async fn in_fresh_namespace<T, F, Fut>(body: F) -> T
where
    F: FnOnce(Client, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    common::in_namespace(|client, ns| async move {
        let out = body(client, ns.clone()).await;
        let _ = tx.send((ns, out));
    })
    .await;
    let (ns, out) = rx.await.expect("the phase finished");
    let client = common::client().await;
    let namespaces: Api<Namespace> = Api::all(client);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(600) {
        match namespaces.get_opt(&ns).await {
            Ok(None) => {
                println!("  namespace {ns} deleted in {:.1} s", started.elapsed().as_secs_f64());
                return out;
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    println!("  warning: namespace {ns} still there after 600 s");
    out
}

/// What the operator phase measured.
struct OperatorRun {
    /// create -> past Pending, per experiment that got there, sorted.
    latencies: Vec<Duration>,
    peak_rss_kib: u64,
    /// `relab_operator_reconcile_errors_total`, every kind.
    errors: u64,
    /// Experiments past Pending.
    reached: usize,
}

/// The sum of a metric over its labels (0 when not rendered yet).
async fn metric_sum(addr: SocketAddr, name: &str) -> f64 {
    common::operator_metrics_text(addr)
        .await
        .lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The operator as its own process, stopped by its PID however the run ends.
async fn operator_run(client: Client, ns: String, n: usize, kubeconfig: String) -> OperatorRun {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = std::fs::File::create(std::env::temp_dir().join("relab-bench-operator.log")).unwrap();
    let extra = std::env::var("RELAB_BENCH_OPERATOR_ARGS").unwrap_or_default();
    let operator = Command::new(env!("CARGO_BIN_EXE_relab"))
        .args([
            "operator",
            "--namespace",
            &ns,
            "--metrics-listen",
            &metrics_addr.to_string(),
        ])
        .args(extra.split_whitespace())
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start relab operator");
    let pid = operator.id();
    let _stop = Cleanup(operator);
    measure(client, ns, n, metrics_addr, pid).await
}

struct Cleanup(std::process::Child);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn measure(client: Client, ns: String, n: usize, metrics_addr: SocketAddr, pid: u32) -> OperatorRun {
    common::operator_ready(metrics_addr, 30).await;
    let idle_rss = rss_kib(pid, "VmRSS:");

    // watch for Provisioning (children applied)
    let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch_api = api.clone();
    let watching = tokio::spawn(async move {
        let mut stream = watcher::watcher(watch_api, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = stream.next().await {
            if let watcher::Event::Apply(rx) | watcher::Event::InitApply(rx) = event {
                let phase = rx.status.as_ref().map(|s| s.phase).unwrap_or_default();
                if phase != Phase::Pending {
                    let _ = tx.send((rx.name_any(), Instant::now()));
                }
            }
        }
    });

    // created as written, as `kubectl create -f` does (the typed struct
    // would send every default too: a 3.6 KB object instead of 1.7 KB)
    let template = common::example_as_written("baseline.yaml");
    let as_written = common::experiments_as_written(&client, &ns);
    let reconciles_before = metric(metrics_addr, "relab_operator_reconciles_total").await;
    let served = ApiServed::now(&client).await;
    let cpu = CpuUse::start(Some(pid));
    let start = Instant::now();
    let creates = (0..n).map(|i| {
        let api = as_written.clone();
        let mut rx = template.clone();
        rx.metadata.name = Some(format!("bench-{i:03}"));
        async move {
            let sent = Instant::now();
            api.create(&PostParams::default(), &rx).await.expect("create");
            (rx.name_any(), sent)
        }
    });
    let created: HashMap<String, Instant> = futures::future::join_all(creates).await.into_iter().collect();
    let all_created = start.elapsed();

    // 180 s, and 0.5 s more per experiment past 100
    let wait = Duration::from_secs(180) + Duration::from_millis(500) * n.saturating_sub(100) as u32;
    let mut applied: HashMap<String, Instant> = HashMap::new();
    let deadline = tokio::time::Instant::now() + wait;
    while applied.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, at))) => {
                applied.entry(name).or_insert(at);
            }
            _ => {
                println!(
                    "  only {} of {n} experiments past Pending within {wait:?}",
                    applied.len()
                );
                break;
            }
        }
    }
    let wall = start.elapsed();
    let cpu = cpu.line();
    let served = served.since(&client).await;
    let reconciles = metric(metrics_addr, "relab_operator_reconciles_total").await - reconciles_before;
    let peak_rss = rss_kib(pid, "VmHWM:");
    let rss = rss_kib(pid, "VmRSS:");
    // errors show a moment later (a refused write is counted when it is
    // retried); what the burst caused is there after a few seconds
    tokio::time::sleep(Duration::from_secs(5)).await;
    let errors = metric_sum(metrics_addr, "relab_operator_reconcile_errors_total").await;
    let reconciles_after = metric(metrics_addr, "relab_operator_reconciles_total").await - reconciles_before;
    watching.abort();

    let mut latencies: Vec<Duration> = applied
        .iter()
        .map(|(name, at)| at.saturating_duration_since(created[name]))
        .collect();
    latencies.sort();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let made = deployments
        .list_metadata(&ListParams::default().labels("app.kubernetes.io/managed-by=relab-operator"))
        .await
        .unwrap()
        .items
        .len();

    println!("operator bench: {n} experiments created at once (baseline.yaml), one namespace");
    println!("  creates returned after       {:>8.0} ms", ms(all_created));
    println!(
        "  all past Pending after       {:>8.0} ms ({} of {n})",
        ms(wall),
        applied.len()
    );
    if !latencies.is_empty() {
        println!(
            "  create -> children applied   p50 {:.0} ms   p99 {:.0} ms   max {:.0} ms",
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().unwrap())
        );
    }
    println!(
        "  reconciles                   {reconciles:.0} in {:.1} s = {:.1}/s ({reconciles_after:.0} after 5 s more)",
        wall.as_secs_f64(),
        reconciles / wall.as_secs_f64()
    );
    println!("  reconcile errors             {errors:.0} (every kind, 5 s after the last)");
    println!("  deployments applied          {made} (expected {})", 3 * n);
    println!(
        "  operator RSS                 idle {:.1} MiB, at the end {:.1} MiB, peak {:.1} MiB",
        idle_rss as f64 / 1024.0,
        rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
    println!("{cpu}");
    println!("{served}");
    OperatorRun {
        latencies,
        peak_rss_kib: peak_rss,
        errors: errors as u64,
        reached: applied.len(),
    }
}

/// The reference: the same children applied straight from this process
/// (Services, then the rest with their ClusterIPs, all concurrently), with no
/// operator in between; the API server's (and controller-manager's) floor.
async fn reference(client: Client, ns: String, n: usize) -> Vec<Duration> {
    let api = common::experiments_as_written(&client, &ns);
    let template = common::example_as_written("baseline.yaml");
    let mut stored: Vec<ReliabilityExperiment> = Vec::new();
    // the experiments exist before the clock starts (the operator's phase
    // counts their creation): what creating them costs, for comparison
    let creates = CpuUse::start(None);
    for i in 0..n {
        let mut rx = template.clone();
        rx.metadata.name = Some(format!("ref-{i:03}"));
        let created = api.create(&PostParams::default(), &rx).await.expect("create");
        stored.push(created.try_parse().expect("an experiment"));
    }
    let creates = creates
        .line()
        .replace("CPU in the phase         ", "CPU of the creates (untimed)");
    let apply = |child: &build::Child| {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &child.kind.api_resource());
        let (name, body) = (child.name.clone(), child.body.clone());
        async move {
            api.patch(&name, &PatchParams::apply("relab-bench").force(), &Patch::Apply(&body))
                .await
                .expect("apply")
        }
    };
    let served = ApiServed::now(&client).await;
    let cpu = CpuUse::start(None);
    let start = Instant::now();
    let runs = stored.iter().map(|rx| {
        let apply = &apply;
        async move {
            let experiment = relab_operator::crd::validated(rx).expect("a valid example");
            let owner = build::Owner::of(rx);
            let applied = futures::future::join_all(build::services(&owner, &experiment).iter().map(apply)).await;
            let ips = ServiceIps::from_applied(&owner.names, &applied).expect("ClusterIPs");
            let rest = build::workloads(&owner, &experiment, &ips, &LabDefaults::default());
            futures::future::join_all(rest.iter().map(apply)).await;
            start.elapsed()
        }
    });
    let mut latencies = futures::future::join_all(runs).await;
    let cpu = cpu.line();
    let served = served.since(&client).await;
    latencies.sort();
    println!("reference: the same children applied directly by one client, {n} experiments at once");
    println!(
        "  start -> children applied    p50 {:.0} ms   p99 {:.0} ms   max {:.0} ms",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap())
    );
    println!("{cpu}");
    println!("{served}");
    println!("{creates}");
    latencies
}

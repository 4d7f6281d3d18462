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
//! Knobs: `RELAB_BENCH_EXPERIMENTS` (default 100). Run by `cargo test
//! --all-targets` (no `--bench` argument) it only says it is skipped.

#[path = "../tests/common/mod.rs"]
mod common;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
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

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// A sample of the operator's metrics (0 when not rendered yet).
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    common::operator_metric(addr, name).await.unwrap_or(0.0)
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
    let (_, kubeconfig) = common::kubeconfig();
    // each phase in a fresh namespace (CRD applied), deleted afterwards
    common::in_namespace(|client, ns| async move { operator_run(client, ns, n, kubeconfig).await }).await;
    // let the controller-manager settle, then the reference, side by side in the same run
    tokio::time::sleep(Duration::from_secs(5)).await;
    common::in_namespace(|client, ns| async move { reference(client, ns, n).await }).await;
}

/// The operator as its own process, stopped by its PID however the run ends.
async fn operator_run(client: Client, ns: String, n: usize, kubeconfig: String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = std::fs::File::create(std::env::temp_dir().join("relab-bench-operator.log")).unwrap();
    let operator = Command::new(env!("CARGO_BIN_EXE_relab"))
        .args([
            "operator",
            "--namespace",
            &ns,
            "--metrics-listen",
            &metrics_addr.to_string(),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start relab operator");
    let pid = operator.id();
    let _stop = Cleanup(operator);
    measure(client, ns, n, metrics_addr, pid).await;
}

struct Cleanup(std::process::Child);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn measure(client: Client, ns: String, n: usize, metrics_addr: SocketAddr, pid: u32) {
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

    let template = common::example("baseline.yaml");
    let reconciles_before = metric(metrics_addr, "relab_operator_reconciles_total").await;
    let start = Instant::now();
    let creates = (0..n).map(|i| {
        let api = api.clone();
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

    let mut applied: HashMap<String, Instant> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while applied.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, at))) => {
                applied.entry(name).or_insert(at);
            }
            _ => panic!("only {} of {n} experiments provisioned within 180 s", applied.len()),
        }
    }
    let wall = start.elapsed();
    let reconciles = metric(metrics_addr, "relab_operator_reconciles_total").await - reconciles_before;
    let errors = metric(metrics_addr, "relab_operator_reconcile_errors_total{kind=\"apply\"}").await;
    let peak_rss = rss_kib(pid, "VmHWM:");
    let rss = rss_kib(pid, "VmRSS:");
    watching.abort();

    let mut latencies: Vec<Duration> = created
        .iter()
        .map(|(name, sent)| applied[name].saturating_duration_since(*sent))
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
    println!(
        "  creates returned after       {:>8.0} ms",
        all_created.as_secs_f64() * 1e3
    );
    println!("  all provisioned after        {:>8.0} ms", wall.as_secs_f64() * 1e3);
    println!(
        "  create -> children applied   p50 {:.0} ms   p99 {:.0} ms   max {:.0} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "  reconciles                   {reconciles:.0} in {:.1} s = {:.1}/s (apply errors {errors:.0})",
        wall.as_secs_f64(),
        reconciles / wall.as_secs_f64()
    );
    println!("  deployments applied          {made} (expected {})", 3 * n);
    println!(
        "  operator RSS                 idle {:.1} MiB, now {:.1} MiB, peak {:.1} MiB",
        idle_rss as f64 / 1024.0,
        rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
    let p99_ok = percentile(&latencies, 0.99) < Duration::from_secs(2);
    let rss_ok = peak_rss < 64 * 1024;
    println!(
        "  targets: p99 < 2 s {}, peak RSS < 64 MiB {}",
        if p99_ok { "met" } else { "MISSED" },
        if rss_ok { "met" } else { "MISSED" }
    );
}

/// The reference: the same children applied straight from this process
/// (Services, then the rest with their ClusterIPs, all concurrently), with no
/// operator in between; the API server's (and controller-manager's) floor.
async fn reference(client: Client, ns: String, n: usize) {
    let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
    let template = common::example("baseline.yaml");
    let mut stored = Vec::new();
    for i in 0..n {
        let mut rx = template.clone();
        rx.metadata.name = Some(format!("ref-{i:03}"));
        stored.push(api.create(&PostParams::default(), &rx).await.expect("create"));
    }
    let apply = |child: &build::Child| {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &child.kind.api_resource());
        let (name, body) = (child.name.clone(), child.body.clone());
        async move {
            api.patch(&name, &PatchParams::apply("relab-bench").force(), &Patch::Apply(&body))
                .await
                .expect("apply")
        }
    };
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
    latencies.sort();
    println!("reference: the same children applied directly by one client, {n} experiments at once");
    println!(
        "  start -> children applied    p50 {:.0} ms   p99 {:.0} ms   max {:.0} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
}

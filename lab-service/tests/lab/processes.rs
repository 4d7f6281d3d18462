//! Real processes: a worker killed with SIGKILL mid-job, graceful SIGTERM
//! shutdown, 2,000 orders through `lab-service all`, and the logs' ids.

use crate::harness::{bin, eventually, fast_worker, get_json_at, plan, LabOptions, TestDb, TestLab};
use futures::StreamExt;
use lab_service::audit;
use serde_json::{json, Value};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A child process that is killed if the test ends early.
struct Proc(Child);

impl Proc {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < timeout, "process did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn job_row(db: &TestDb, order: Uuid) -> (String, Option<String>, i32) {
    sqlx::query_as("SELECT status, lease_owner, claims FROM jobs WHERE order_id = $1")
        .bind(order)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_worker_killed_mid_job_loses_nothing_and_the_order_is_charged_once() {
    let mut lab = TestLab::start(LabOptions {
        worker: None,
        faults: plan(json!({"base": {"latency": {"baseMs": 1500}}})),
        ..LabOptions::default()
    })
    .await;
    let mut victim = Proc(
        Command::new(bin())
            .args([
                "worker",
                "--worker-id",
                "victim",
                "--lease-ms",
                "1000",
                "--admin-listen",
                "off",
                "--concurrency",
                "1",
            ])
            .args(["--database-url", &lab.db.url, "--payment-url", &lab.mock_url])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let order = lab.create_order(2500).await;
    eventually(
        Duration::from_secs(15),
        "the victim holds the job and its charge is in flight",
        || async { job_row(&lab.db, order.id).await.1.as_deref() == Some("victim") && lab.ledger().await.len() == 1 },
    )
    .await;

    victim.0.kill().unwrap(); // SIGKILL: no cleanup at all
    victim.0.wait().unwrap();
    let mut takeover = fast_worker();
    takeover.payment_timeout = Duration::from_secs(5);
    lab.spawn_workers(takeover).await;
    let paid = lab.wait_for_status(order.id, "paid", Duration::from_secs(20)).await;

    let (_, _, claims) = job_row(&lab.db, order.id).await;
    assert_eq!(claims, 2, "the job was taken over once");
    let ledger = lab.ledger().await;
    let charges: Vec<_> = ledger.iter().filter(|c| c.order_id == order.id).collect();
    assert_eq!(charges.len(), 1, "charged exactly once: {charges:?}");
    assert_eq!(paid.charge_id.as_deref(), Some(charges[0].charge_id.as_str()));
    assert!(
        lab.mock_stats().await["byOutcome"]["replay"].as_u64().unwrap() >= 1,
        "the takeover replayed the charge"
    );
    lab.stop().await;
}

struct AllProcess {
    proc: Proc,
    api: String,
    mock: String,
}

fn spawn_all(db: &TestDb, extra: &[&str], log_to: Option<&std::path::Path>) -> AllProcess {
    let (api_port, mock_port) = (free_port(), free_port());
    let mut cmd = Command::new(bin());
    cmd.args([
        "--log-format",
        "json",
        "all",
        "--listen",
        &format!("127.0.0.1:{api_port}"),
    ])
    .args([
        "--mock-listen",
        &format!("127.0.0.1:{mock_port}"),
        "--database-url",
        &db.url,
    ])
    .args(extra)
    .env("RUST_LOG", if log_to.is_some() { "info" } else { "warn" })
    .stdout(Stdio::null());
    if let Some(path) = log_to {
        cmd.stderr(std::fs::File::create(path).unwrap());
    }
    AllProcess {
        proc: Proc(cmd.spawn().unwrap()),
        api: format!("http://127.0.0.1:{api_port}"),
        mock: format!("http://127.0.0.1:{mock_port}"),
    }
}

async fn wait_ready(http: &reqwest::Client, api: &str) {
    eventually(Duration::from_secs(30), "lab-service all is ready", || async {
        matches!(http.get(format!("{api}/readyz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
}

async fn post_order(http: &reqwest::Client, api: &str, key: &str) -> reqwest::Response {
    http.post(format!("{api}/orders"))
        .header("idempotency-key", key)
        .json(&json!({"customerId": "c-9", "amountCents": 1999, "currency": "EUR"}))
        .send()
        .await
        .unwrap()
}

/// `count` orders (keys `<prefix>-<n>`), `parallel` at a time; each must be
/// accepted (201). Their ids.
async fn place_orders(http: &reqwest::Client, api: &str, prefix: &str, count: usize, parallel: usize) -> Vec<Uuid> {
    futures::stream::iter(0..count)
        .map(|n| async move {
            let r = post_order(http, api, &format!("{prefix}-{n}")).await;
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .parse::<Uuid>()
                .unwrap()
        })
        .buffer_unordered(parallel)
        .collect()
        .await
}

#[tokio::test]
async fn sigterm_drains_unready_finishes_in_flight_work_and_exits_zero() {
    let db = TestDb::new().await;
    let log = std::env::temp_dir().join(format!("relab-sigterm-{}.log", Uuid::new_v4().simple()));
    let mut all = spawn_all(
        &db,
        &["--latency-base-ms", "700", "--api-drain-delay-ms", "800"],
        Some(&log),
    );
    let http = reqwest::Client::new();
    wait_ready(&http, &all.api).await;
    let resp = post_order(&http, &all.api, "sigterm-1").await;
    assert_eq!(resp.status(), 201);
    let order: Value = resp.json().await.unwrap();
    let id: Uuid = order["id"].as_str().unwrap().parse().unwrap();
    eventually(Duration::from_secs(10), "the job is in flight", || async {
        job_row(&db, id).await.0 == "running"
    })
    .await;

    let sent = Instant::now();
    all.proc.signal("-TERM");
    // the signal is handled asynchronously: readiness must turn 503 within the drain delay
    eventually(
        Duration::from_millis(700),
        "/readyz answers 503 while draining",
        || async { matches!(http.get(format!("{}/readyz", all.api)).send().await, Ok(r) if r.status() == 503) },
    )
    .await;
    let status = all.proc.wait_for_exit(Duration::from_secs(15));

    assert!(status.success(), "exit status {status}");
    assert!(sent.elapsed() < Duration::from_secs(12));
    let (job_status, lease, _) = job_row(&db, id).await;
    assert_eq!(
        (job_status.as_str(), lease),
        ("done", None),
        "in-flight job finished before exit"
    );
    let (order_status,): (String,) = sqlx::query_as("SELECT status FROM orders WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(order_status, "paid");

    // every log line of the job names the order and the request that created it
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let accepted = lines
        .iter()
        .find(|l| l["fields"]["message"] == "order accepted")
        .expect("an 'order accepted' line");
    let request_id = accepted["span"]["request_id"]
        .as_str()
        .or_else(|| accepted["spans"][0]["request_id"].as_str())
        .expect("request id on the API line");
    assert!(!request_id.is_empty());
    assert_eq!(accepted["fields"]["order_id"], id.to_string());
    let job_lines: Vec<&Value> = lines.iter().filter(|l| l["span"]["name"] == "job").collect();
    assert!(
        job_lines.iter().any(|l| l["fields"]["message"] == "order paid"),
        "{text}"
    );
    for l in &job_lines {
        assert_eq!(l["span"]["order_id"], id.to_string(), "{l}");
        assert_eq!(l["span"]["request_id"], request_id, "{l}");
    }
}

#[tokio::test]
async fn sigterm_past_the_deadline_releases_the_lease_and_still_exits_zero() {
    let db = TestDb::new().await;
    let mut all = spawn_all(
        &db,
        &["--latency-base-ms", "8000", "--worker-shutdown-deadline-ms", "300"],
        None,
    );
    let http = reqwest::Client::new();
    wait_ready(&http, &all.api).await;
    let resp = post_order(&http, &all.api, "sigterm-2").await;
    let id: Uuid = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    eventually(Duration::from_secs(10), "the job is in flight", || async {
        job_row(&db, id).await.0 == "running"
    })
    .await;

    all.proc.signal("-TERM");
    let status = all.proc.wait_for_exit(Duration::from_secs(12));

    assert!(status.success(), "exit status {status}");
    let (job_status, lease, _) = job_row(&db, id).await;
    assert_eq!(
        (job_status.as_str(), lease),
        ("queued", None),
        "lease released for another worker"
    );
}

#[tokio::test]
async fn two_thousand_orders_through_all_with_flaky_payments_lose_nothing_and_charge_nothing_twice() {
    let db = TestDb::new().await;
    let mut all = spawn_all(
        &db,
        &[
            "--failure-rate",
            "0.3",
            "--lost-response-rate",
            "0.05",
            "--fault-seed",
            "7",
            "--hang-ms",
            "300",
            "--payment-timeout-ms",
            "150",
            "--concurrency",
            "32",
            "--bulkhead-max-concurrent",
            "32",
            "--retry-max-attempts",
            "4",
            "--retry-initial-backoff-ms",
            "5",
            "--retry-max-backoff-ms",
            "50",
            "--breaker-failure-threshold",
            "8",
            "--breaker-open-timeout-ms",
            "200",
            "--max-job-attempts",
            "5",
            "--database-max-connections",
            "40",
        ],
        None,
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    wait_ready(&http, &all.api).await;

    let accepted = place_orders(&http, &all.api, "bulk", 2000, 32).await;
    let drained = audit::wait_for_drain(&db.pool, Duration::from_secs(240)).await.unwrap();
    let ledger = audit::fetch_ledger(&http, &all.mock).await.unwrap();
    let report = audit::audit(&db.pool, &ledger, Some(&accepted)).await.unwrap();

    assert!(drained, "pipeline did not drain: {report:?}");
    assert_eq!(report.orders, 2000);
    assert_eq!(
        report.count("paid") + report.count("failed") + report.count("dead_lettered"),
        2000,
        "{report:?}"
    );
    assert!(report.passed(), "invariants violated: {report:?}");
    let stats = get_json_at(&http, &format!("{}/stats", all.mock)).await;
    assert!(
        stats["byOutcome"]["lostResponse"].as_u64().unwrap() > 50,
        "lost responses were injected: {stats}"
    );
    assert!(stats["byOutcome"]["replay"].as_u64().unwrap() > 0, "{stats}");
    eprintln!("2000 orders: {report:?}; mock: {stats}");
    all.proc.signal("-TERM");
    assert!(all.proc.wait_for_exit(Duration::from_secs(20)).success());
}

/// The ledger outlives its process (issue: "the payment ledger dies with its
/// process"): `lab-service all` is `kill -9`ed mid-run while workers retry
/// around lost responses, then started again on the same database. Every
/// charge made before the kill is still in the ledger, every retried key
/// replays, and the audit is exact: no order charged twice, one charge per
/// paid order.
#[tokio::test]
async fn all_killed_mid_run_and_restarted_keeps_every_charge_and_charges_nothing_twice() {
    let db = TestDb::new().await;
    let ledger_file = std::env::temp_dir().join(format!("relab-ledger-kill-{}.jsonl", Uuid::new_v4().simple()));
    let ledger_arg = ledger_file.display().to_string();
    let flags = [
        "--lost-response-rate",
        "0.3",
        "--fault-seed",
        "11",
        "--hang-ms",
        "200",
        "--payment-timeout-ms",
        "100",
        "--concurrency",
        "16",
        "--retry-max-attempts",
        "6",
        "--retry-initial-backoff-ms",
        "5",
        "--retry-max-backoff-ms",
        "40",
        "--max-job-attempts",
        "10",
        "--ledger-file",
        &ledger_arg,
    ];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut first = spawn_all(&db, &flags, None);
    wait_ready(&http, &first.api).await;
    let mut accepted = place_orders(&http, &first.api, "kill", 300, 16).await;
    // mid-run: some charged, some retrying around a lost response
    eventually(Duration::from_secs(30), "a third of the orders charged", || async {
        audit::fetch_ledger(&http, &first.mock)
            .await
            .map(|l| l.len() >= 100)
            .unwrap_or(false)
    })
    .await;
    let before = audit::fetch_ledger(&http, &first.mock).await.unwrap();
    first.proc.signal("-KILL");
    first.proc.wait_for_exit(Duration::from_secs(10));
    let (paid_at_kill,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders WHERE status = 'paid'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(paid_at_kill < 300, "the kill came mid-run ({paid_at_kill} of 300 paid)");

    let second = spawn_all(&db, &flags, None);
    wait_ready(&http, &second.api).await;
    // the restarted lab takes more orders too
    accepted.extend(place_orders(&http, &second.api, "after", 20, 4).await);
    let drained = audit::wait_for_drain(&db.pool, Duration::from_secs(120)).await.unwrap();
    let after = audit::fetch_ledger(&http, &second.mock).await.unwrap();
    let report = audit::audit(&db.pool, &after, Some(&accepted)).await.unwrap();

    assert!(drained, "{report:?}");
    let kept: std::collections::HashSet<&str> = after.iter().map(|c| c.charge_id.as_str()).collect();
    let forgotten: Vec<_> = before.iter().filter(|c| !kept.contains(c.charge_id.as_str())).collect();
    assert!(forgotten.is_empty(), "charges forgotten by the restart: {forgotten:?}");
    assert_eq!(report.double_charged_orders, 0, "{report:?}");
    assert_eq!(report.lost_orders, 0, "{report:?}");
    assert_eq!(report.paid_without_charge, 0, "{report:?}");
    assert_eq!(report.charges_without_order, 0, "{report:?}");
    assert_eq!(
        report.count("paid") as usize,
        after.len(),
        "one charge per paid order: {report:?}"
    );
    let stats = get_json_at(&http, &format!("{}/stats", second.mock)).await;
    assert!(
        stats["byOutcome"]["replay"].as_u64().unwrap() > 0,
        "retried keys replayed after the restart: {stats}"
    );
    drop(second);
    let _ = std::fs::remove_file(&ledger_file);
}

/// The same for a standalone `lab-service payment-mock` (the cluster's pod):
/// a charge made just before `kill -9`, retried with its key after the
/// restart, is a replay of the same charge.
#[tokio::test]
async fn a_killed_payment_mock_replays_a_key_it_charged_before_the_kill() {
    let ledger_file = std::env::temp_dir().join(format!("relab-ledger-mock-{}.jsonl", Uuid::new_v4().simple()));
    let port = free_port();
    let start = || {
        Proc(
            Command::new(bin())
                .args(["payment-mock", "--mock-listen", &format!("127.0.0.1:{port}")])
                .arg("--ledger-file")
                .arg(&ledger_file)
                .args(["--lost-response-rate", "1.0", "--hang-ms", "50"])
                .env("RUST_LOG", "warn")
                .spawn()
                .unwrap(),
        )
    };
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let charge = |key: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.post(format!("{url}/charges"))
                .header("idempotency-key", key)
                .json(
                    &json!({"orderId": "00000000-0000-0000-0000-000000000007", "amountCents": 500, "currency": "EUR"}),
                )
                .send()
                .await
        }
    };
    let up = || async {
        eventually(Duration::from_secs(15), "the mock answers", || async {
            matches!(http.get(format!("{url}/healthz")).send().await, Ok(r) if r.status() == 200)
        })
        .await
    };
    let mut mock = start();
    up().await;
    // charged, then the answer lost (every call, lostResponseRate 1.0)
    assert_eq!(charge("k-1").await.unwrap().status(), 504);
    mock.signal("-KILL");
    mock.wait_for_exit(Duration::from_secs(10));

    let _mock = start();
    up().await;
    http.put(format!("{url}/faults"))
        .json(&json!({"seed": 1}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let retry = charge("k-1").await.unwrap();
    assert_eq!(retry.status(), 200, "a replay, not a new charge");
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let ledger = audit::fetch_ledger(&http, &url).await.unwrap();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    let _ = std::fs::remove_file(&ledger_file);
}

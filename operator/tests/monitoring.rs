//! Dashboards and alerting rules against a real Prometheus (Debian's
//! `prometheus`, `scripts/tools.sh`) scraping a real run.
//!
//! The run is the cluster's, played on loopback: the same `lab-service`
//! processes the operator's pods run (payment-mock, api, worker, loadgen),
//! with the environment of the operator's ConfigMap (`lab_environment`) and
//! the listen addresses remapped to free local ports. Prometheus scrapes them
//! with the labels the chart's PodMonitor gives (`namespace`, `experiment`),
//! plus the operator's objective metrics, and evaluates the chart's rules.
//! Then every panel and annotation query of both dashboards must parse and
//! return data for that experiment, and every rule must evaluate cleanly.

mod common;

use common::free_port;
use relab_operator::controller::children::{
    lab_environment, LabDefaults, ServiceIps, API_PORT, LOADGEN_PROGRESS_PORT, MOCK_PORT, WORKER_ADMIN_PORT,
};
use relab_operator::controller::metrics::OperatorMetrics;
use relab_operator::crd::{LatencyObjective, Percentile, ReliabilityExperiment, ReliabilityExperimentStatus};
use relab_operator::monitoring::{dashboard, RULES_PATH};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NS: &str = "relab-monitoring";
const NAME: &str = "drill";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn tool(name: &str) -> PathBuf {
    let found = Command::new(name).arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "{name} not found: run `bash scripts/tools.sh` (Debian package prometheus)"
    );
    name.into()
}

/// The `lab-service` binary next to this test's `relab` (cargo test
/// --workspace builds both).
fn lab_service_bin() -> PathBuf {
    let relab = Path::new(env!("CARGO_BIN_EXE_relab"));
    let bin = relab.with_file_name("lab-service");
    assert!(
        bin.exists(),
        "{} missing: build it with `cargo build -p lab-service` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// Children stopped (by PID) when dropped.
struct Procs(Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn wait_http(url: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} not up within {secs} s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn experiment() -> ReliabilityExperiment {
    let mut rx = common::example_variant("outage-drill.yaml", "with-breaker");
    common::shorten(&mut rx.spec, 0.5);
    rx.metadata.name = Some(NAME.into());
    rx.metadata.namespace = Some(NS.into());
    rx.spec.objectives.api_latency = vec![LatencyObjective {
        percentile: Percentile::P95,
        max_ms: 100.0,
        requests: Default::default(),
    }];
    rx.spec.objectives.end_to_end_latency = vec![LatencyObjective {
        percentile: Percentile::P95,
        max_ms: 5000.0,
        requests: Default::default(),
    }];
    // a kill, which the operator (played here) carries out and reports
    rx.spec.disruptions = vec![relab_model::disruptions::DisruptionSpec {
        name: KILL.into(),
        at_seconds: 3,
        action: relab_model::disruptions::DisruptionAction::KillWorkers,
        fraction: None,
        added_ms: None,
        duration_seconds: None,
    }];
    rx
}

const KILL: &str = "crash-workers";

async fn query(prometheus: &str, expr: &str, start: f64, end: f64) -> Value {
    let answer: Value = reqwest::Client::new()
        .get(format!("{prometheus}/api/v1/query_range"))
        .query(&[
            ("query", expr.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", "1".to_string()),
        ])
        .send()
        .await
        .expect("prometheus answers")
        .json()
        .await
        .expect("prometheus JSON");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_and_rule_works_against_prometheus_scraping_a_real_run() {
    let (promtool, prometheus_bin, lab) = (tool("promtool"), tool("prometheus"), lab_service_bin());

    // the chart's rules are valid, and their unit tests pass
    let rules = root().join(RULES_PATH);
    let out = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(root().join("operator/tests/fixtures/rules-test.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // the lab, as the operator's pods run it
    let rx = experiment();
    let admin = std::env::var("RELAB_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db_name = format!("relab_monitoring_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let db_url = lab_service::db::create_database(&admin, &db_name)
        .await
        .expect("scratch database");
    let (api, admin_port, mock, progress) = (free_port(), free_port(), free_port(), free_port());
    let local = |v: &str| {
        v.replace(&format!("127.0.0.1:{API_PORT}"), &format!("127.0.0.1:{api}"))
            .replace(&format!("127.0.0.1:{MOCK_PORT}"), &format!("127.0.0.1:{mock}"))
            .replace(
                &format!("127.0.0.1:{WORKER_ADMIN_PORT}"),
                &format!("127.0.0.1:{admin_port}"),
            )
            .replace(
                &format!("0.0.0.0:{LOADGEN_PROGRESS_PORT}"),
                &format!("127.0.0.1:{progress}"),
            )
    };
    let ips = ServiceIps {
        postgres: None,
        db_proxy: None,
        payment_mock: "127.0.0.1".into(),
        order_service: "127.0.0.1".into(),
        loadgen: None,
        workers: None,
    };
    let dir = std::env::temp_dir().join(format!(
        "relab-monitoring-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut env: BTreeMap<String, String> = lab_environment(
        &relab_operator::crd::validated(&rx).expect("a valid experiment"),
        &ips,
        &LabDefaults {
            wait_ready_secs: 60,
            ..LabDefaults::default()
        },
    )
    .into_iter()
    .map(|(k, v)| (k, local(&v)))
    .collect();
    env.insert("RELAB_DATABASE_URL".into(), db_url.clone());
    env.insert(
        "RELAB_TERMINATION_LOG".into(),
        dir.join("termination-log").display().to_string(),
    );
    env.insert("RELAB_LOG_FORMAT".into(), "text".into());
    let spawn = |args: &[&str], more: &[(&str, String)], log: &str| {
        let mut cmd = Command::new(&lab);
        cmd.args(args)
            .envs(&env)
            .envs(more.iter().map(|(k, v)| (*k, v.clone())))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(log)).unwrap());
        cmd.spawn().unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    let mut procs = Procs(vec![
        (
            "payment-mock".into(),
            spawn(
                &["payment-mock"],
                &[("RELAB_MOCK_LISTEN", format!("127.0.0.1:{mock}"))],
                "mock.log",
            ),
        ),
        (
            "api".into(),
            spawn(&["api"], &[("RELAB_API_LISTEN", format!("127.0.0.1:{api}"))], "api.log"),
        ),
        (
            "worker".into(),
            spawn(
                &["worker"],
                &[("RELAB_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))],
                "worker.log",
            ),
        ),
    ]);

    // the operator's objective metrics (what the chart's ServiceMonitor scrapes)
    let metrics = OperatorMetrics::new().unwrap();
    metrics.record_objectives(&rx);
    let operator_port = free_port();
    let served = metrics.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = served.clone();
            async move { m.render() }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", operator_port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Prometheus: 1 s scrapes with the PodMonitor's labels, the chart's rules every second
    let rules_copy = dir.join("relab.rules.yaml");
    let mut groups: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&rules).unwrap()).unwrap();
    for g in groups["groups"].as_sequence_mut().unwrap() {
        g["interval"] = "1s".into();
    }
    std::fs::write(&rules_copy, serde_yaml::to_string(&groups).unwrap()).unwrap();
    let prom_port = free_port();
    let config = format!(
        r#"global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{rules}"]
scrape_configs:
  - job_name: lab
    static_configs:
      - targets: ["127.0.0.1:{api}"]
        labels: {{namespace: {NS}, experiment: {NAME}, component: order-service, pod: order-0}}
      - targets: ["127.0.0.1:{admin_port}"]
        labels: {{namespace: {NS}, experiment: {NAME}, component: order-service, pod: order-0}}
      - targets: ["127.0.0.1:{mock}"]
        labels: {{namespace: {NS}, experiment: {NAME}, component: payment-mock, pod: mock-0}}
      - targets: ["127.0.0.1:{progress}"]
        labels: {{namespace: {NS}, experiment: {NAME}, component: loadgen, pod: loadgen-0}}
  - job_name: operator
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:{operator_port}"]
"#,
        rules = rules_copy.display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    procs.0.push((
        "prometheus".into(),
        Command::new(&prometheus_bin)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus starts"),
    ));
    let prom = format!("http://127.0.0.1:{prom_port}");
    wait_http(&format!("{prom}/-/ready"), 30).await;
    wait_http(&format!("http://127.0.0.1:{api}/readyz"), 60).await;

    // the load generator, as the operator's Job runs it
    let start = chrono::Utc::now();
    let loadgen = spawn(&["loadgen"], &[], "loadgen.log");
    procs.0.push(("loadgen".into(), loadgen));
    let deadline = Instant::now() + Duration::from_secs(120);
    let at = rx.spec.disruptions[0].at_seconds as f64;
    let mut reported = false;
    let status = loop {
        if let Some(s) = procs.0.last_mut().unwrap().1.try_wait().unwrap() {
            break s;
        }
        // the operator, played: the kill reported once it is due by the load's clock
        if !reported {
            let seen: Option<Value> = match reqwest::get(format!("http://127.0.0.1:{progress}/progress")).await {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            if seen.is_some_and(|p| p["stage"] == "load" && p["elapsedSeconds"].as_f64().unwrap_or(0.0) >= at) {
                let answer = reqwest::Client::new()
                    .post(format!("http://127.0.0.1:{progress}/disruptions/{KILL}"))
                    .json(&serde_json::json!({"hit": ["order-0"]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 204, "the report is taken");
                reported = true;
            }
        }
        assert!(Instant::now() < deadline, "the load generator did not finish in 120 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        status.success(),
        "loadgen failed: {}",
        std::fs::read_to_string(dir.join("loadgen.log")).unwrap_or_default()
    );
    assert!(reported, "the load reached the kill's time");
    let results: relab_model::results::RunResults =
        serde_json::from_str(&std::fs::read_to_string(dir.join("termination-log")).unwrap()).unwrap();
    let kill = &results.disruptions[0];
    assert_eq!(
        (kill.name.as_str(), kill.hit.as_slice()),
        (KILL, ["order-0".to_string()].as_slice())
    );
    assert!(kill.fired_at_seconds.is_some_and(|f| f >= at), "{kill:?}");
    // two more scrapes and rule evaluations after the end
    tokio::time::sleep(Duration::from_secs(3)).await;
    let finish = chrono::Utc::now();
    let (t0, t1) = (start.timestamp() as f64, finish.timestamp() as f64);

    // every query of both dashboards parses and returns data for this experiment
    let status = ReliabilityExperimentStatus {
        start_time: Some(start.to_rfc3339()),
        finish_time: Some(finish.to_rfc3339()),
        observed_generation: Some(1),
        ..Default::default()
    };
    let board = dashboard::experiment(NS, NAME, &rx.spec, &status);
    let overview = dashboard::overview();
    let mut checked = 0;
    for (what, expr) in dashboard::queries(&board).into_iter().chain(
        dashboard::queries(&overview)
            .into_iter()
            .map(|(w, e)| (format!("overview {w}"), e)),
    ) {
        // Grafana's template variables, as "All" selects them
        let expr = expr.replace("$namespace", ".*").replace("$experiment", ".*");
        let answer = query(&prom, &expr, t0, t1).await;
        assert_eq!(answer["status"], "success", "{what}: {expr}\n{answer}");
        let result = answer["data"]["result"].as_array().unwrap();
        assert!(!result.is_empty(), "{what} returned no data: {expr}");
        if !what.starts_with("overview") || expr.contains("experiment") {
            for series in result {
                let m = &series["metric"];
                assert!(
                    m.get("experiment").is_none_or(|e| e == NAME),
                    "{what} returned another experiment's series: {m}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 25, "{checked} queries");

    // every rule evaluated without error, and the burn rates have data
    let rules_state: Value = reqwest::get(format!("{prom}/api/v1/rules"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut evaluated = 0;
    for g in rules_state["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(r["health"], "ok", "rule {} failed: {}", r["name"], r["lastError"]);
            evaluated += 1;
        }
    }
    assert!(evaluated >= 20, "{evaluated} rules loaded");
    for burn in [
        "relab:order_error_budget_burn:rate1m",
        "relab:api_latency_budget_burn:rate1m",
        "relab:e2e_latency_budget_burn:rate1m",
    ] {
        let answer = query(&prom, burn, t0, t1).await;
        let result = answer["data"]["result"].as_array().cloned().unwrap_or_default();
        assert!(!result.is_empty(), "{burn} has no data: {answer}");
        assert_eq!(result[0]["metric"]["experiment"], NAME);
    }
    // the outage shows: failures burned the success-ratio budget at some point
    let peak = query(&prom, "max_over_time(relab:order_error_ratio:rate1m[5m])", t1, t1).await;
    eprintln!("peak error ratio over the run: {}", peak["data"]["result"]);

    drop(procs);
    lab_service::db::drop_database(&admin, &db_name).await.ok();
    std::fs::remove_dir_all(&dir).ok();
}

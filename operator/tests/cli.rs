//! `relab` as a user runs it: invalid manifests exit 2 naming the field; the
//! README's command runs an example end to end on an ephemeral Postgres.

use std::process::Command;

const BASE: &str = r#"apiVersion: relab.dev/v1alpha1
kind: ReliabilityExperiment
metadata: {name: bad}
spec:
  load: {ratePerSecond: 20, durationSeconds: 10}
  payment: {failureRate: 0.3}
  orderService:
    retry: {maxAttempts: 4, initialBackoffMs: 50, maxBackoffMs: 800}
"#;

fn relab(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_relab")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn invalid_manifests_exit_2_and_name_the_field() {
    let dir = std::env::temp_dir().join(format!("relab-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "out-of-range rate",
            "failureRate: 0.3",
            "failureRate: 1.5",
            "spec.payment.failureRate",
        ),
        (
            "unknown field",
            "maxAttempts: 4,",
            "maxAttempts: 4, retries: 3,",
            "spec.orderService.retry.retries",
        ),
        (
            "negative duration",
            "durationSeconds: 10",
            "durationSeconds: -10",
            "spec.load.durationSeconds",
        ),
        (
            "inconsistent backoff",
            "maxBackoffMs: 800",
            "maxBackoffMs: 10",
            "spec.orderService.retry.maxBackoffMs",
        ),
        (
            "fault phase past the load",
            "failureRate: 0.3}",
            "failureRate: 0.3, faultsSchedule: [{name: o, startSeconds: 5, endSeconds: 30}]}",
            "spec.payment.faultsSchedule[0].endSeconds",
        ),
        ("wrong kind", "kind: ReliabilityExperiment", "kind: Experiment", "kind"),
        // the CRD schema's bounds (the API server refuses these too: tests/bounds.rs)
        (
            "too many workers",
            "retry: {",
            "workers: 1000000\n    retry: {",
            "spec.orderService.workers",
        ),
        (
            "too many replicas",
            "retry: {",
            "replicas: 100\n    retry: {",
            "spec.orderService.replicas",
        ),
        (
            "too many worker replicas",
            "retry: {",
            "workerReplicas: 21\n    retry: {",
            "spec.orderService.workerReplicas",
        ),
        (
            "an API pool of none",
            "retry: {",
            "databasePool: {api: 0}\n    retry: {",
            "spec.orderService.databasePool.api",
        ),
        (
            "a worker pool below its job loops",
            "retry: {",
            "workers: 32\n    databasePool: {workers: 32}\n    retry: {",
            "spec.orderService.databasePool.workers",
        ),
        (
            "too many retry attempts",
            "maxAttempts: 4,",
            "maxAttempts: 1000,",
            "spec.orderService.retry.maxAttempts",
        ),
        (
            "a hang of 1e9 ms",
            "failureRate: 0.3}",
            "failureRate: 0.3, hangMs: 1000000000}",
            "spec.payment.hangMs",
        ),
        (
            "a phase name of 100 characters",
            "failureRate: 0.3}",
            "failureRate: 0.3, faultsSchedule: [{name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, startSeconds: 1, endSeconds: 2}]}",
            "spec.payment.faultsSchedule[0].name",
        ),
        // disruptions: each rule names its field
        (
            "a disruption past the load",
            "  orderService:\n",
            "  disruptions: [{name: crash, atSeconds: 10, action: KillWorkers}]\n  orderService:\n",
            "spec.disruptions[0].atSeconds",
        ),
        (
            "a kill of none",
            "  orderService:\n",
            "  disruptions: [{name: crash, atSeconds: 2, action: KillWorkers, fraction: 0}]\n  orderService:\n",
            "spec.disruptions[0].fraction",
        ),
        (
            "an unknown action",
            "  orderService:\n",
            "  disruptions: [{name: boom, atSeconds: 2, action: KillTheDatacenter}]\n  orderService:\n",
            "spec.disruptions[0].action",
        ),
        (
            "overlapping database windows",
            "  orderService:\n",
            "  disruptions: [{name: slow, atSeconds: 1, action: DatabaseLatency, addedMs: 50, durationSeconds: 5}, \
             {name: cut, atSeconds: 3, action: DatabaseOutage, durationSeconds: 2}]\n  orderService:\n",
            "spec.disruptions[1].atSeconds",
        ),
        (
            "a latency without its milliseconds",
            "  orderService:\n",
            "  disruptions: [{name: slow, atSeconds: 1, action: DatabaseLatency, durationSeconds: 5}]\n  orderService:\n",
            "spec.disruptions[0].addedMs",
        ),
        (
            "restarting an external database",
            "  orderService:\n",
            "  database: {external: {secretName: db}}\n  disruptions: [{name: r, atSeconds: 1, action: RestartDatabase}]\n  orderService:\n",
            "spec.disruptions[0].action",
        ),
    ];
    for (what, from, to, field) in cases {
        let manifest = BASE.replace(from, to);
        assert_ne!(manifest, BASE, "{what}: fixture did not change");
        let path = dir.join("bad.yaml");
        std::fs::write(&path, manifest).unwrap();
        for cmd in ["validate", "run"] {
            let (code, _, stderr) = relab(&[cmd, path.to_str().unwrap()]);
            assert_eq!(code, 2, "{what} ({cmd}): {stderr}");
            assert!(
                stderr.contains(field),
                "{what} ({cmd}): stderr does not name {field}: {stderr}"
            );
        }
    }
    let (code, _, stderr) = relab(&["run", "/nonexistent/x.yaml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn validate_effective_prints_the_spec_with_every_default_filled_in_and_it_reads_back_the_same() {
    let dir = std::env::temp_dir().join(format!("relab-cli-effective-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (manifest, again) = (dir.join("as-written.yaml"), dir.join("effective.yaml"));
    std::fs::write(&manifest, BASE.replace("name: bad", "name: good")).unwrap();
    let (code, stdout, stderr) = relab(&["validate", "--effective", manifest.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let printed: serde_json::Value = serde_yaml::from_str(&stdout).unwrap();
    assert_eq!(printed["metadata"]["name"], "good");
    // written: retry's three fields; filled in: the rest of it, and what the
    // manifest never mentions
    assert_eq!(printed["spec"]["orderService"]["retry"]["maxAttempts"], 4);
    assert!(
        printed["spec"]["orderService"]["retry"]["jitter"].is_number(),
        "{stdout}"
    );
    assert_eq!(printed["spec"]["load"]["maxInFlight"], 256, "{stdout}");
    // the printed manifest is valid and prints itself again
    std::fs::write(&again, &stdout).unwrap();
    let (code, twice, stderr) = relab(&["validate", "--effective", again.to_str().unwrap()]);
    assert_eq!((code, twice), (0, stdout), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hostile_documents_are_refused_at_once_naming_the_limit() {
    let dir = std::env::temp_dir().join(format!("relab-cli-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // endless input: answers at once (a read bounded by the 1 MiB limit)
    let started = std::time::Instant::now();
    let (code, _, stderr) = relab(&["validate", "/dev/zero"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("1048576"), "names the limit: {stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // a 50 MB manifest, refused before parsing
    let big = dir.join("big.yaml");
    let mut text = BASE.to_string();
    text.push_str(&format!("# {}\n", "x".repeat(50 * 1024 * 1024)));
    std::fs::write(&big, text).unwrap();
    for cmd in ["validate", "run"] {
        let (code, _, stderr) = relab(&[cmd, big.to_str().unwrap()]);
        assert_eq!(code, 2, "{cmd}: {stderr}");
        assert!(stderr.contains("1048576"), "{cmd}: {stderr}");
    }
    // 10,000 fault phases: past the schema's maxItems
    let phases = (0..10_000)
        .map(|i| format!("{{name: p{i}, startSeconds: 0}}"))
        .collect::<Vec<_>>()
        .join(", ");
    let many = dir.join("many.yaml");
    std::fs::write(
        &many,
        BASE.replace(
            "failureRate: 0.3}",
            &format!("failureRate: 0.3, faultsSchedule: [{phases}]}}"),
        ),
    )
    .unwrap();
    let (code, _, stderr) = relab(&["validate", many.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("spec.payment.faultsSchedule:"),
        "{}",
        &stderr[..stderr.len().min(500)]
    );
    // a time scale out of range names the flag
    let ok = dir.join("ok.yaml");
    std::fs::write(&ok, BASE).unwrap();
    let (code, _, stderr) = relab(&["run", ok.to_str().unwrap(), "--time-scale", "0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--time-scale"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_readme_command_runs_an_example_on_an_ephemeral_postgres_and_writes_the_report() {
    let dir = std::env::temp_dir().join(format!("relab-readme-{}", std::process::id()));
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/flaky-payments.yaml");
    let (code, stdout, stderr) = relab(&["run", example, "--time-scale", "0.1", "--output", dir.to_str().unwrap()]);
    assert!(code == 0 || code == 1, "exit {code}: {stderr}");
    assert!(stdout.contains("verdict:"), "{stdout}");
    for f in ["status.yaml", "status.json", "timeline.json", "report.html"] {
        assert!(dir.join(f).exists(), "{f} missing; stdout: {stdout}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("status.json")).unwrap()).unwrap();
    let phase = status["status"]["phase"].as_str().unwrap();
    assert_eq!(
        phase == "Succeeded",
        code == 0,
        "exit code follows the verdict: {status}"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Circuit breaker state"));
    assert!(!html.contains("<script"), "the report needs no scripts or network");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_postgres_is_exit_2_with_a_message_that_says_how_to_install_it() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/baseline.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_relab"))
        .args(["run", example, "--quiet"])
        .env("RELAB_PG_BIN", "/nonexistent")
        .env_remove("RELAB_DATABASE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("PostgreSQL server binaries") && stderr.contains("scripts/setup.sh"),
        "{stderr}"
    );
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[test]
fn ctrl_c_stops_the_run_and_removes_the_ephemeral_postgres() {
    let tmp = std::env::temp_dir().join(format!("relab-sigint-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    // runuser'd postgres must be able to reach its data directory
    Command::new("chmod")
        .args(["755", tmp.to_str().unwrap()])
        .status()
        .unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/baseline.yaml");
    let child = Command::new(env!("CARGO_BIN_EXE_relab"))
        .args(["run", example, "--quiet", "--output", tmp.join("out").to_str().unwrap()])
        .env("TMPDIR", &tmp)
        .env_remove("RELAB_DATABASE_URL")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // wait until the ephemeral server is up, then interrupt mid-load
    let started = std::time::Instant::now();
    while processes_mentioning(tmp.to_str().unwrap())
        .iter()
        .all(|c| !c.contains("postgres"))
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "postgres never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);

    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("relab-pg-"))
        .collect();
    assert!(left.is_empty(), "ephemeral Postgres directory left behind: {left:?}");
    assert!(
        processes_mentioning(tmp.to_str().unwrap()).is_empty(),
        "processes left behind"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn the_operator_without_a_cluster_exits_2_and_says_why() {
    let out = Command::new(env!("CARGO_BIN_EXE_relab"))
        .args(["operator", "--metrics-listen", "off", "--log-format", "text"])
        .env("KUBECONFIG", "/nonexistent/relab-kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("KUBECONFIG"), "{stderr}");
}

#[test]
fn the_operator_refuses_a_bad_flag_value_naming_it() {
    let (code, _, stderr) = relab(&["operator", "--metrics-listen", "here:nine"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--metrics-listen"), "{stderr}");
    let (code, _, stderr) = relab(&["operator", "--image-pull-policy", "Sometimes"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--image-pull-policy"), "{stderr}");
}

/// A fresh directory holding `<dir>/manifest.yaml`: the ReliabilityExperiment
/// whose `metadata:` and `spec:` are `body`.
fn temp_manifest(tag: &str, body: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("relab-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("manifest.yaml");
    std::fs::write(
        &manifest,
        format!("apiVersion: relab.dev/v1alpha1\nkind: ReliabilityExperiment\n{body}"),
    )
    .unwrap();
    (dir, manifest)
}

fn test_database_url() -> String {
    std::env::var("RELAB_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `relab run MANIFEST --quiet` on the test database, its output in
/// `<dir>/out`, with `extra` flags.
fn relab_run_in(dir: &std::path::Path, manifest: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let (db, out) = (test_database_url(), dir.join("out"));
    let mut args = vec![
        "run",
        manifest.to_str().unwrap(),
        "--quiet",
        "--database-url",
        &db,
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    relab(&args)
}

#[test]
fn a_baseline_gate_fails_a_run_that_regressed_naming_figure_values_and_baseline() {
    let (dir, manifest) = temp_manifest(
        "baseline",
        "metadata: {name: gated}\nspec:\n  load: {ratePerSecond: 20, durationSeconds: 3}\n  baseline: {maxRegression: {successRatio: 0.01, apiLatencyP95: 0.2}}\n",
    );
    let baseline = |p95: f64| {
        let path = dir.join(format!("baseline-{p95}.json"));
        let status = serde_json::json!({"status": {"phase": "Succeeded", "results": {
            "loadSeconds": 3.0, "drainSeconds": 0.1, "drained": true,
            "orders": {"sent": 60, "accepted": 60, "shed": 0, "rejected": 0, "errors": 0, "lateSends": 0,
                       "paid": 60, "failed": 0, "deadLettered": 0, "pending": 0},
            "successRatio": 1.0,
            "apiLatencyMs": {"count": 60, "p50": p95, "p90": p95, "p95": p95, "p99": p95, "max": p95},
            "endToEndLatencyMs": {"count": 60, "p50": 1.0, "p90": 1.0, "p95": 1.0, "p99": 1.0, "max": 1.0},
            "payment": {"calls": 60, "failuresByReason": {}, "charges": 60,
                        "injected": {"calls": 60, "failureRate": 0.0, "declineRate": 0.0, "rateLimitRate": 0.0, "timeoutRate": 0.0, "lostResponseRate": 0.0}},
            "retries": {"succeeded": 60, "gaveUp": 0, "permanent": 0, "breakerRejected": 0, "retries": 0},
            "breaker": {"transitions": {}, "rejections": {}, "secondsNotClosed": 0.0},
            "maxQueueDepth": 3, "deadLetters": 0,
            "invariants": {"lostOrders": 0, "stuckOrders": 0, "doubleCharges": 0, "chargesWithoutOrder": 0, "paidWithoutCharge": 0}
        }}});
        std::fs::write(&path, serde_json::to_string(&status).unwrap()).unwrap();
        path
    };
    let run = |b: &std::path::Path| relab_run_in(&dir, &manifest, &["--baseline", b.to_str().unwrap()]);
    // a baseline whose API p95 was 0.001 ms: any real run regressed past 20%
    let fast = baseline(0.001);
    let (code, stdout, stderr) = run(&fast);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("apiLatencyP95") && stdout.contains("regressed"),
        "{stdout}"
    );
    assert!(stdout.contains(fast.to_str().unwrap()), "names the baseline: {stdout}");
    assert!(stdout.contains("vs 0.00"), "both values: {stdout}");
    // a baseline of 10 s: within the margin, the run passes
    let (code, stdout, stderr) = run(&baseline(10_000.0));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("within the margin"), "{stdout}");
    // no spec.baseline: the flag is refused, naming what is missing
    std::fs::write(&manifest, BASE).unwrap();
    let (code, _, stderr) = run(&fast);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("spec.baseline.maxRegression"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Drills in CI: a run stopped by `stopWhen` (every charge declined, the
/// window fails at once) exits 1, the table says which condition stopped it,
/// `--format json` puts the status (and only it) on stdout, and `--junit`
/// writes a report a JUnit parser reads, the stop condition a failed case.
#[test]
fn a_stopped_run_exits_1_says_why_and_reports_in_json_and_junit() {
    let (dir, manifest) = temp_manifest(
        "stop",
        "metadata: {name: stopped}\nspec:\n  load: {ratePerSecond: 20, durationSeconds: 60}\n  payment: {declineRate: 1.0}\n  objectives: {successRatio: 0.5}\n  stopWhen: [{objective: successRatio, afterSeconds: 2}]\n",
    );
    let junit = dir.join("junit.xml");
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = relab_run_in(
        &dir,
        &manifest,
        &["--format", "json", "--junit", junit.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(40),
        "stopped, not run for 60 s"
    );
    // stdout is the status JSON alone; the table went to stderr
    let status: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is the status JSON");
    assert_eq!(status["phase"], "Failed", "{status}");
    let stopped = &status["results"]["stopped"];
    assert!(
        stopped["condition"].as_str().unwrap().starts_with("stopWhen[0]"),
        "{stopped}"
    );
    let met = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ObjectivesMet")
        .unwrap();
    assert_eq!(met["reason"], "Stopped", "{met}");
    assert!(stderr.contains("stopWhen"), "the table says why: {stderr}");
    // the JUnit report: the stop condition is a failed testcase with what was seen
    let xml = std::fs::read_to_string(&junit).unwrap();
    let suites = junit_parser::from_reader(std::io::Cursor::new(xml.as_bytes())).expect("valid JUnit XML");
    let case = suites.suites[0]
        .cases
        .iter()
        .find(|c| c.original_name == "stopWhen")
        .expect("a stopWhen case");
    let junit_parser::TestStatus::Failure(f) = &case.status else {
        panic!("{xml}")
    };
    assert!(f.message.contains("success ratio"), "{}", f.message);
    let _ = std::fs::remove_dir_all(&dir);
}

//! The Argo CD health check, `deploy/argocd/health-reliabilityexperiment.lua`,
//! run with Debian's `lua5.1` (Argo CD runs it with gopher-lua, also Lua 5.1)
//! against experiments whose statuses come from the operator's own phase
//! machine (`controller::machine`), serialized as the API server would hand
//! them to Argo CD: when the status changes shape, these cases change with it.
//!
//! The harness loads the script the way Argo CD does: `obj` is a global
//! table, and only the base, table and a safe os library are there (no
//! `string`, no `math`, no string methods), so a script that would fail in
//! Argo CD fails here too.
//!
//! Also: `deploy/argocd/argocd-cm-patch.yaml` carries the script verbatim
//! (`RELAB_UPDATE_ARGOCD_PATCH=1` rewrites it from the `.lua`).
//!
//! Needs `lua5.1` on PATH (`bash scripts/tools.sh` installs it); fails, never
//! skips, without it.

use chrono::{DateTime, Duration, TimeZone, Utc};
use lab_service::run::{RunProgress, RunStage};
use lab_service::summary::{InjectedFaults, InvariantResults, OrderCounts, PaymentResults, Percentiles, RunResults};
use relab_operator::controller::machine::{self, Loadgen, Observed};
use relab_operator::crd::{parse, problems};
use relab_operator::crd::{
    FaultPhaseSpec, LiveProgress, Phase, ReliabilityExperiment, ReliabilityExperimentStatus, VerdictResult,
};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SCRIPT: &str = "deploy/argocd/health-reliabilityexperiment.lua";
const PATCH: &str = "deploy/argocd/argocd-cm-patch.yaml";
const HEALTH_KEY: &str = "resource.customizations.health.relab.dev_ReliabilityExperiment";
/// The health statuses Argo CD accepts from a script (anything else becomes Unknown).
const ARGO_STATUSES: [&str; 6] = ["Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

// ---------------------------------------------------------------- harness

/// `value` as a Lua table constructor, as Argo CD's decodeValue builds it:
/// objects keyed by string, arrays 1-based, numbers as numbers, null absent.
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|v| {
                    assert!(!v.is_null(), "a null inside an array would leave a hole: {value}");
                    lua_literal(v)
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            // three digits, so a digit after it is not read as part of it
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\{:03}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Loads the script, sets `obj`, takes away what Argo CD's sandbox does not
/// load, runs it, and prints the status and (from the next line on) the message.
const HARNESS: &str = r#"
local script_path = ...
local write, open, load, safe_os = io.write, io.open, loadstring, { time = os.time, date = os.date, clock = os.clock }
local file = assert(open(script_path, "rb"))
local source = file:read("*a")
file:close()
local health = assert(load(source, "@" .. script_path))
obj = OBJ
-- Argo CD (util/lua/lua.go) opens package, base, table and a safe os only
string, math, io, debug, coroutine = nil, nil, nil, nil, nil
os = safe_os
getmetatable("").__index = nil
local result = health()
if type(result) ~= "table" then
  error("the script returned " .. type(result) .. ", not a table")
end
if type(result.status) ~= "string" or type(result.message) ~= "string" then
  error("status and message must be strings, got " .. type(result.status) .. " and " .. type(result.message))
end
write(result.status, "\n", result.message)
"#;

#[derive(Debug)]
struct Health {
    status: String,
    message: String,
}

fn lua5_1() -> &'static str {
    match Command::new("lua5.1").arg("-v").output() {
        Ok(out) if out.status.success() => "lua5.1",
        Ok(out) => panic!("lua5.1 -v failed: {out:?}"),
        Err(e) => panic!(
            "lua5.1 is needed to run the Argo CD health check ({e}); install it with `bash scripts/tools.sh` \
             (or apt-get install lua5.1)"
        ),
    }
}

fn run_script(script: &Path, obj: &Value) -> Result<Health, String> {
    let harness = HARNESS.replace("OBJ", &lua_literal(obj));
    let mut child = Command::new(lua5_1())
        .arg("-")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lua5.1");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(harness.as_bytes())
        .expect("write the harness");
    let out = child.wait_with_output().expect("lua5.1 runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).expect("utf-8 output");
    let (status, message) = text.split_once('\n').expect("status and message lines");
    Ok(Health {
        status: status.to_string(),
        message: message.to_string(),
    })
}

fn health_of(obj: &Value) -> Health {
    let health = run_script(&repo().join(SCRIPT), obj).unwrap_or_else(|e| panic!("{SCRIPT} failed on\n{obj:#}\n{e}"));
    assert!(
        ARGO_STATUSES.contains(&health.status.as_str()),
        "Argo CD would not accept the status {health:?}"
    );
    eprintln!("{} | {}", health.status, health.message);
    health
}

fn health(rx: &ReliabilityExperiment) -> Health {
    health_of(&serde_json::to_value(rx).expect("the experiment serializes"))
}

#[track_caller]
fn assert_health(h: &Health, status: &str, parts: &[&str]) {
    assert_eq!(h.status, status, "{h:?}");
    for part in parts {
        assert!(h.message.contains(part), "message lacks {part:?}: {h:?}");
    }
}

// ---------------------------------------------------------------- fixtures

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

/// deploy/examples/flaky-payments.yaml as the API server stores it (40 s of
/// load, 30% failures asked, objectives: 0.99 paid, API p95 <= 250 ms).
fn flaky_payments(generation: i64) -> ReliabilityExperiment {
    let text = std::fs::read_to_string(repo().join("deploy/examples/flaky-payments.yaml")).unwrap();
    let mut rx = parse(&text).unwrap_or_else(|e| panic!("flaky-payments.yaml: {e:?}"));
    rx.metadata.namespace = Some("relab".into());
    rx.metadata.generation = Some(generation);
    rx.metadata.uid = Some("3f1c2a4e-0000-4000-8000-000000000001".into());
    rx
}

fn with_status(mut rx: ReliabilityExperiment, status: ReliabilityExperimentStatus) -> ReliabilityExperiment {
    rx.status = Some(status);
    rx
}

fn started(rx: &ReliabilityExperiment) -> ReliabilityExperimentStatus {
    let generation = rx.metadata.generation.unwrap();
    machine::start_run(&ReliabilityExperimentStatus::default(), generation, &rx.spec, t0()).0
}

fn step(
    rx: &ReliabilityExperiment,
    status: &ReliabilityExperimentStatus,
    now: DateTime<Utc>,
    loadgen: Loadgen,
    progress: Option<LiveProgress>,
) -> ReliabilityExperimentStatus {
    // the load generator's own account: in its load since it started
    let since = match &loadgen {
        Loadgen::Running { started_at } => (now - *started_at).to_std().unwrap_or_default(),
        _ => std::time::Duration::ZERO,
    };
    let stage = if since.as_secs_f64() >= rx.spec.load.total_seconds() as f64 {
        RunStage::Drain
    } else {
        RunStage::Load
    };
    let load = Some(RunProgress {
        stage,
        elapsed: since,
        ..Default::default()
    });
    let seen = Observed {
        now,
        loadgen,
        progress,
        load,
    };
    machine::advance(&rx.spec, status, rx.metadata.generation.unwrap(), &seen).0
}

fn loadgen_started() -> DateTime<Utc> {
    t0() + Duration::seconds(5)
}

fn running(rx: &ReliabilityExperiment) -> ReliabilityExperimentStatus {
    let provisioning = step(
        rx,
        &started(rx),
        t0() + Duration::seconds(2),
        Loadgen::Waiting { reason: None },
        None,
    );
    step(
        rx,
        &provisioning,
        loadgen_started() + Duration::milliseconds(12_400),
        Loadgen::Running {
            started_at: loadgen_started(),
        },
        Some(LiveProgress {
            elapsed_seconds: 0.0,
            sent: 480,
            paid: 470,
            failed: 3,
            breaker_state: "closed".into(),
        }),
    )
}

/// What the load generator reports: 2000 orders accepted, `paid` of them
/// paid, API p95 41.26 ms, the payment service injecting `injected_failures`.
fn results(paid: u64, injected_failures: f64) -> RunResults {
    RunResults {
        load_seconds: 40.0,
        drain_seconds: 1.5,
        drained: true,
        orders: OrderCounts {
            sent: 2000,
            accepted: 2000,
            paid,
            failed: 2000 - paid,
            ..Default::default()
        },
        success_ratio: paid as f64 / 2000.0,
        api_latency_ms: Percentiles {
            count: 2000,
            p50: 12.0,
            p90: 30.5,
            p95: 41.26,
            p99: 80.0,
            max: 120.0,
        },
        end_to_end_latency_ms: Percentiles {
            count: 2000,
            p50: 40.0,
            p90: 210.0,
            p95: 330.0,
            p99: 900.0,
            max: 1800.0,
        },
        payment: PaymentResults {
            calls: 2900,
            charges: paid,
            injected: InjectedFaults {
                calls: 2900,
                failure_rate: injected_failures,
                ..Default::default()
            },
            ..Default::default()
        },
        invariants: InvariantResults::default(),
        ..Default::default()
    }
}

/// The run of `rx` up to the load generator's exit with `results`.
fn finished(rx: &ReliabilityExperiment, results: &RunResults) -> ReliabilityExperimentStatus {
    step(
        rx,
        &running(rx),
        loadgen_started() + Duration::seconds(43),
        Loadgen::Terminated {
            exit_code: 0,
            reason: Some("Completed".into()),
            message: Some(serde_json::to_string(results).unwrap()),
        },
        None,
    )
}

fn passed(rx: &ReliabilityExperiment) -> ReliabilityExperimentStatus {
    let status = finished(rx, &results(1991, 0.3));
    assert_eq!(
        (status.phase, status.verdict.as_ref().map(|v| v.result)),
        (Phase::Succeeded, Some(VerdictResult::Passed)),
        "fixture: {status:#?}"
    );
    status
}

// ---------------------------------------------------------------- cases

#[test]
fn no_status_yet_is_progressing() {
    let h = health(&flaky_payments(1));
    assert_health(&h, "Progressing", &["no status yet"]);
}

#[test]
fn a_new_run_is_progressing_through_its_phases() {
    let rx = flaky_payments(1);

    let pending = started(&rx);
    assert_eq!(pending.phase, Phase::Pending);
    assert_health(
        &health(&with_status(rx.clone(), pending.clone())),
        "Progressing",
        &["Pending"],
    );

    let provisioning = step(
        &rx,
        &pending,
        t0() + Duration::seconds(2),
        Loadgen::Waiting {
            reason: Some("ContainerCreating".into()),
        },
        None,
    );
    assert_eq!(provisioning.phase, Phase::Provisioning);
    assert_health(
        &health(&with_status(rx.clone(), provisioning)),
        "Progressing",
        &["Provisioning", "ContainerCreating"],
    );

    let mut analyzing = pending;
    analyzing.phase = Phase::Analyzing;
    assert_health(&health(&with_status(rx, analyzing)), "Progressing", &["Analyzing"]);
}

#[test]
fn running_shows_the_live_progress() {
    let rx = flaky_payments(1);
    let status = running(&rx);
    assert_eq!(status.phase, Phase::Running);
    let h = health(&with_status(rx, status));
    assert_health(&h, "Progressing", &[]);
    assert_eq!(
        h.message,
        "Running: 12 s elapsed, 480 sent, 470 paid, 3 failed, breaker closed"
    );
}

#[test]
fn draining_is_progressing() {
    let rx = flaky_payments(1);
    let status = step(
        &rx,
        &running(&rx),
        loadgen_started() + Duration::seconds(41),
        Loadgen::Running {
            started_at: loadgen_started(),
        },
        None,
    );
    assert_eq!(status.phase, Phase::Draining);
    let h = health(&with_status(rx, status));
    assert_health(&h, "Progressing", &["Draining: 41 s elapsed", "breaker closed"]);
}

#[test]
fn passed_is_healthy_with_the_key_figures() {
    let rx = flaky_payments(1);
    let h = health(&with_status(rx.clone(), passed(&rx)));
    assert_health(&h, "Healthy", &[]);
    assert_eq!(
        h.message,
        "Succeeded: verdict Passed; success ratio 0.9955, API p95 41.3 ms, 2000 accepted, 0 double charges, 0 lost"
    );
}

#[test]
fn objectives_not_met_is_degraded_and_names_them() {
    let rx = flaky_payments(1);
    let status = finished(&rx, &results(1900, 0.3));
    assert_eq!(
        (status.phase, status.verdict.as_ref().map(|v| v.result)),
        (Phase::Failed, Some(VerdictResult::Failed))
    );
    let h = health(&with_status(rx, status));
    assert_health(
        &h,
        "Degraded",
        &[
            "Failed: verdict Failed",
            "not met: successRatio 0.9500 (>= 0.99)",
            "success ratio 0.95,",
            "API p95 41.3 ms",
        ],
    );
    assert!(!h.message.contains("apiLatency"), "only the missed objectives: {h:?}");
}

#[test]
fn inconclusive_is_degraded_with_the_reasons() {
    // every objective met, but the payment service injected 1% failures
    // where 30% were asked: the run did not test what it claims
    let rx = flaky_payments(1);
    let status = finished(&rx, &results(1991, 0.01));
    assert_eq!(
        (status.phase, status.verdict.as_ref().map(|v| v.result)),
        (Phase::Failed, Some(VerdictResult::Inconclusive))
    );
    let h = health(&with_status(rx, status));
    assert_health(
        &h,
        "Degraded",
        &[
            "Failed: verdict Inconclusive (payment failureRate: asked 0.3",
            "injected 0.010",
            "success ratio 0.9955",
        ],
    );
}

#[test]
fn a_run_that_could_not_finish_is_degraded_with_the_cause() {
    let rx = flaky_payments(1);
    let status = step(
        &rx,
        &running(&rx),
        loadgen_started() + Duration::seconds(600),
        Loadgen::JobFailed {
            reason: "DeadlineExceeded".into(),
            message: "Job was active longer than specified deadline".into(),
        },
        None,
    );
    assert_eq!((status.phase, status.verdict.is_none()), (Phase::Failed, true));
    let h = health(&with_status(rx, status));
    assert_health(
        &h,
        "Degraded",
        &[
            "Failed without results: LoadgenFailed",
            "DeadlineExceeded",
            "active longer than specified deadline",
        ],
    );
}

#[test]
fn an_invalid_spec_is_degraded_with_the_problems() {
    // generation 1 passed; generation 2 asks for a phase that ends before it starts
    let first = flaky_payments(1);
    let old = passed(&first);
    let mut rx = flaky_payments(2);
    rx.spec.payment.faults_schedule.push(FaultPhaseSpec {
        name: "outage".into(),
        start_seconds: 20,
        end_seconds: Some(10),
        ..Default::default()
    });
    let found = problems(&rx);
    assert!(!found.is_empty(), "fixture: the spec must be refused");
    let status = machine::invalid(&old, 2, &found, t0() + Duration::seconds(120)).0;
    assert_eq!(status.phase, Phase::Succeeded, "the earlier run's status stays");
    let h = health(&with_status(rx.clone(), status.clone()));
    assert_health(
        &h,
        "Degraded",
        &["Invalid spec: ", "spec.payment.faultsSchedule[0].endSeconds"],
    );

    // fixed in generation 3, not reconciled yet: the refusal is old news
    rx.metadata.generation = Some(3);
    let h = health(&with_status(rx, status));
    assert_health(
        &h,
        "Progressing",
        &["start generation 3", "the status is of generation 1"],
    );
}

#[test]
fn suspended_before_it_started() {
    let mut rx = flaky_payments(1);
    rx.spec.suspend = true;
    let status = machine::suspended(&started(&rx), 1, t0());
    let h = health(&with_status(rx, status));
    assert_health(&h, "Suspended", &["Suspended (Pending)", "spec.suspend is true"]);
}

#[test]
fn a_spec_change_not_yet_started_is_progressing() {
    let first = flaky_payments(1);
    let status = passed(&first);
    let h = health(&with_status(flaky_payments(2), status));
    assert_health(
        &h,
        "Progressing",
        &["start generation 2", "the status is of generation 1"],
    );
}

#[test]
fn deleted_workloads_keep_the_verdict() {
    let rx = flaky_payments(1);
    let status = machine::cleaned_up(&passed(&rx), 1, t0() + Duration::seconds(3600)).0;
    let h = health(&with_status(rx, status));
    assert_health(&h, "Healthy", &["Succeeded: verdict Passed", "(lab workloads deleted)"]);
}

#[test]
fn an_unknown_phase_is_unknown_not_an_error() {
    let rx = flaky_payments(1);
    let mut obj = serde_json::to_value(with_status(rx.clone(), running(&rx))).unwrap();
    obj["status"]["phase"] = "Exploded".into();
    let h = health_of(&obj);
    assert_health(&h, "Unknown", &["Unknown phase Exploded"]);
}

/// The harness must really refuse what Argo CD's sandbox lacks, or the
/// cases above would prove nothing about string.format & co.
#[test]
fn the_harness_sandbox_has_no_string_or_math_library() {
    let dir = std::env::temp_dir().join(format!("relab-argocd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let obj = serde_json::json!({"metadata": {"name": "x"}});
    for (name, body) in [
        (
            "format",
            r#"return {status = string.format("%s", "Healthy"), message = ""}"#,
        ),
        ("method", r#"return {status = ("Healthy"):sub(1), message = ""}"#),
        (
            "math",
            r#"return {status = "Healthy", message = tostring(math.floor(1.5))}"#,
        ),
    ] {
        let script = dir.join(format!("{name}.lua"));
        std::fs::write(&script, body).unwrap();
        let result = run_script(&script, &obj);
        assert!(result.is_err(), "{name}: the sandbox let it run: {result:?}");
    }
    let script = dir.join("plain.lua");
    std::fs::write(
        &script,
        r#"return {status = "Healthy", message = obj.metadata.name .. " " .. table.concat({1, 2}, ",")}"#,
    )
    .unwrap();
    let h = run_script(&script, &obj).expect("base and table are there");
    assert_eq!((h.status.as_str(), h.message.as_str()), ("Healthy", "x 1,2"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn lua_literals_escape_strings() {
    let obj = serde_json::json!({"metadata": {"name": "a\"b\\c\nd\u{1}9 é"}});
    let dir = std::env::temp_dir().join(format!("relab-argocd-lit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("echo.lua");
    std::fs::write(&script, r#"return {status = "Healthy", message = obj.metadata.name}"#).unwrap();
    let h = run_script(&script, &obj).unwrap();
    assert_eq!(h.message, "a\"b\\c\nd\u{1}9 é");
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------- the patch

/// The patch, rebuilt from its own header (everything up to the health key)
/// and the `.lua` indented under it.
fn patch_from_script(patch: &str, script: &str) -> String {
    let marker = format!("  {HEALTH_KEY}: |\n");
    let at = patch
        .find(&marker)
        .unwrap_or_else(|| panic!("{PATCH}: no `{}` line", marker.trim_end()));
    let mut out = patch[..at + marker.len()].to_string();
    for line in script.lines() {
        if !line.is_empty() {
            out.push_str("    ");
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[test]
fn the_argocd_cm_patch_carries_the_script_verbatim() {
    let script = std::fs::read_to_string(repo().join(SCRIPT)).unwrap();
    let patch_path = repo().join(PATCH);
    let patch = std::fs::read_to_string(&patch_path).unwrap();
    if std::env::var_os("RELAB_UPDATE_ARGOCD_PATCH").is_some() {
        let updated = patch_from_script(&patch, &script);
        if updated != patch {
            std::fs::write(&patch_path, &updated).unwrap();
            eprintln!("rewrote {PATCH} from {SCRIPT}");
        }
        return;
    }
    let doc: serde_yaml::Value = serde_yaml::from_str(&patch).unwrap_or_else(|e| panic!("{PATCH}: {e}"));
    assert_eq!(doc["apiVersion"].as_str(), Some("v1"));
    assert_eq!(doc["kind"].as_str(), Some("ConfigMap"));
    assert_eq!(doc["metadata"]["name"].as_str(), Some("argocd-cm"));
    let embedded = doc["data"][HEALTH_KEY]
        .as_str()
        .unwrap_or_else(|| panic!("{PATCH}: no data.{HEALTH_KEY}"));
    assert!(
        embedded == script,
        "{PATCH} does not carry {SCRIPT} verbatim; rewrite it with \
         RELAB_UPDATE_ARGOCD_PATCH=1 cargo test -p relab-operator --test argocd"
    );
    // and the generator agrees with the file (the header is kept as is)
    assert_eq!(patch_from_script(&patch, &script), patch);
}

#[test]
fn the_applications_point_at_real_paths_and_the_health_key_matches_the_crd() {
    let crd = relab_operator::crdgen::crd();
    assert_eq!(
        HEALTH_KEY,
        format!(
            "resource.customizations.health.{}_{}",
            crd.spec.group, crd.spec.names.kind
        )
    );
    for (file, path) in [
        ("deploy/argocd/relab-chart.yaml", "charts/relab"),
        ("deploy/argocd/relab-drills.yaml", "deploy/examples"),
    ] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let app: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(app["apiVersion"].as_str(), Some("argoproj.io/v1alpha1"), "{file}");
        assert_eq!(app["kind"].as_str(), Some("Application"), "{file}");
        assert_eq!(app["spec"]["source"]["path"].as_str(), Some(path), "{file}");
        assert!(repo().join(path).is_dir(), "{file}: {path} is not a directory");
        let options: Vec<&str> = app["spec"]["syncPolicy"]["syncOptions"]
            .as_sequence()
            .map(|s| s.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        assert!(options.contains(&"ServerSideApply=true"), "{file}: {options:?}");
    }
    // the drills land where the chart's operator watches (watchScope: namespace)
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join("deploy/argocd/relab-chart.yaml")).unwrap()).unwrap();
    let drills: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join("deploy/argocd/relab-drills.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        chart["spec"]["destination"]["namespace"],
        drills["spec"]["destination"]["namespace"]
    );
    // every drill the Application syncs is a valid experiment
    let exclude = drills["spec"]["source"]["directory"]["exclude"].as_str().unwrap_or("");
    let mut synced = 0;
    for entry in std::fs::read_dir(repo().join("deploy/examples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".yaml") || exclude.trim_matches(['{', '}']).split(',').any(|e| e == name) {
            continue;
        }
        let rx = parse(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(problems(&rx).is_empty(), "{name}: {:?}", problems(&rx));
        synced += 1;
    }
    assert!(synced >= 3, "only {synced} drills synced");
}

#[test]
fn a_schedule_waiting_for_its_first_tick_is_healthy_and_suspended_when_suspended() {
    let mut rx = flaky_payments(1);
    rx.spec.schedule = Some(relab_model::ops::ScheduleSpec {
        cron: "0 3 * * 1-5".into(),
        time_zone: "Europe/Berlin".into(),
        suspend: false,
        starting_deadline_seconds: 600,
    });
    let experiment = relab_operator::crd::validated(&rx).unwrap();
    let (waiting, _) = machine::new_generation(&experiment, &Default::default(), 1, t0());
    // 2025-03-01 is a Saturday: Monday 03:00 CET is 02:00 UTC
    assert_eq!(waiting.next_run_time.as_deref(), Some("2025-03-03T02:00:00Z"));
    let h = health(&with_status(rx.clone(), waiting));
    assert_health(
        &h,
        "Healthy",
        &["Scheduled: the first run starts at 2025-03-03T02:00:00Z"],
    );

    rx.spec.schedule.as_mut().unwrap().suspend = true;
    let experiment = relab_operator::crd::validated(&rx).unwrap();
    let (off, _) = machine::new_generation(&experiment, &Default::default(), 1, t0());
    assert_eq!(off.next_run_time, None);
    assert_health(&health(&with_status(rx, off)), "Suspended", &["Schedule suspended"]);
}

#[test]
fn a_finished_scheduled_run_says_when_the_next_one_starts() {
    let rx = flaky_payments(1);
    let mut status = passed(&rx);
    status.scheduled_run = Some(4);
    status.next_run_time = Some("2025-03-04T02:00:00Z".into());
    let h = health(&with_status(rx, status));
    assert_health(
        &h,
        "Healthy",
        &["Succeeded: verdict Passed", "; next run 2025-03-04T02:00:00Z"],
    );
}

#[test]
fn a_stopped_run_is_degraded_and_says_what_stopped_it() {
    let rx = flaky_payments(1);
    let mut r = results(1991, 0.3);
    r.stopped = Some(relab_model::ops::Stopped {
        condition: "stopWhen[0] successRatio over the last 10 s".into(),
        observed: "success ratio 0.6100 over the last 10 s, target 0.99".into(),
        at_seconds: 14.0,
    });
    let status = finished(&rx, &r);
    assert_eq!(status.phase, Phase::Failed, "{:?}", status.verdict);
    let h = health(&with_status(rx, status));
    assert_health(
        &h,
        "Degraded",
        &["stopped early by stopWhen[0] successRatio over the last 10 s at 14 s: success ratio 0.6100"],
    );
}

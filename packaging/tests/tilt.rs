//! The Tiltfile, checked against what it points at, since Tilt itself cannot
//! run here (no Docker, no kind): its `helm(set=…)` keys exist in the chart's
//! values.yaml; its Dockerfiles exist and every file they COPY is inside the
//! build context Tilt sends (`only=`); the images it builds are the images it
//! gives the chart; the operator workload it names is the Deployment
//! `helm template` renders for its release (with the image, the metrics port
//! it forwards, and the lab image in an environment variable, where
//! `match_in_env_vars` finds it); and the drill it applies and port-forwards
//! exists, in the namespace the operator watches, under the names the
//! operator gives its children.
//!
//! The Tiltfile is evaluated by a real Starlark interpreter (the `starlark`
//! crate) with Tilt's built-ins stubbed: each records its arguments, and the
//! checks read those. A syntax error, a built-in Tilt has not (here: that
//! the stubs do not know), or a built-in called without a required argument
//! fails the evaluation with the interpreter's message.
//!
//! Needs helm (`bash scripts/tools.sh` puts it in
//! `${RELAB_CACHE:-/var/cache/relab}/tools/bin`); fails, never skips, without it.

use relab_operator::controller::children::{Names, API_PORT, WORKER_ADMIN_PORT};
use relab_operator::crd::{parse, problems};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

// ---------------------------------------------------------------- what the interpreter recorded

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Str(String),
    List(Vec<Expr>),
    Call(Call),
    /// Numbers, True/False and names that are not assigned in the file.
    Word(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Call {
    name: String,
    args: Vec<Expr>,
    kwargs: BTreeMap<String, Expr>,
}

impl Expr {
    fn str(&self) -> &str {
        match self {
            Expr::Str(s) => s,
            other => panic!("expected a string literal, got {other:?}"),
        }
    }
    fn strs(&self) -> Vec<&str> {
        match self {
            Expr::List(items) => items.iter().map(Expr::str).collect(),
            Expr::Str(s) => vec![s.as_str()],
            other => panic!("expected a list of strings, got {other:?}"),
        }
    }
    fn list(&self) -> &[Expr] {
        match self {
            Expr::List(items) => items,
            other => panic!("expected a list, got {other:?}"),
        }
    }
    fn call(&self) -> &Call {
        match self {
            Expr::Call(c) => c,
            other => panic!("expected a call, got {other:?}"),
        }
    }
}

impl Call {
    /// Argument `name`, given by keyword or at `position`.
    fn arg(&self, position: usize, name: &str) -> Option<&Expr> {
        self.kwargs.get(name).or_else(|| self.args.get(position))
    }
    fn req(&self, position: usize, name: &str) -> &Expr {
        self.arg(position, name)
            .unwrap_or_else(|| panic!("{}(): no {name} argument", self.name))
    }
}

// ---------------------------------------------------------------- Tilt, stubbed

/// Evaluate a Tiltfile with the real Starlark interpreter (the `starlark`
/// crate) and Tilt's built-ins stubbed, in `packaging/tilt-eval`: a tool of
/// its own, outside the workspace, because `starlark` turns on serde_json's
/// `arbitrary_precision`, which cargo would unify into every crate of the
/// workspace (the generated CRD's numbers became `$serde_json::private::Number`
/// maps). Every recorded call, in order; an error is the interpreter's message.
fn evaluate(name: &str, text: &str) -> Result<Vec<Call>, String> {
    use std::io::Write;
    let tool = tilt_eval();
    let mut child = Command::new(&tool)
        .arg(name)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", tool.display()));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let calls: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("tilt-eval prints JSON");
    Ok(calls.iter().map(call_of).collect())
}

fn call_of(v: &serde_json::Value) -> Call {
    Call {
        name: v["name"].as_str().unwrap_or_default().to_string(),
        args: v["args"].as_array().into_iter().flatten().map(expr_of).collect(),
        kwargs: v["kwargs"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), expr_of(v)))
            .collect(),
    }
}

fn expr_of(v: &serde_json::Value) -> Expr {
    match v {
        serde_json::Value::String(s) => Expr::Str(s.clone()),
        serde_json::Value::Array(items) => Expr::List(items.iter().map(expr_of).collect()),
        serde_json::Value::Object(o) if o.contains_key("call") => Expr::Call(call_of(&o["call"])),
        serde_json::Value::Object(o) => Expr::Word(o["word"].as_str().unwrap_or_default().to_string()),
        other => Expr::Word(other.to_string()),
    }
}

/// The `tilt-eval` tool, built once (cached in the target directory).
fn tilt_eval() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let manifest = repo().join("packaging/tilt-eval/Cargo.toml");
            // its own target dir under the workspace's: its dependencies' features stay its own
            let exe = std::env::current_exe().unwrap();
            let target = exe
                .ancestors()
                .nth(3)
                .expect("<target>/<profile>/deps/<test>")
                .join("tilt-eval");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .args(["build", "--quiet", "--locked", "--manifest-path"])
                .arg(&manifest)
                .env("CARGO_TARGET_DIR", &target)
                .output()
                .expect("run cargo");
            assert!(
                out.status.success(),
                "building tilt-eval: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            target.join("debug/tilt-eval")
        })
        .clone()
}

fn tiltfile() -> Vec<Call> {
    let text = std::fs::read_to_string(repo().join("Tiltfile")).expect("Tiltfile at the repository root");
    evaluate("Tiltfile", &text).unwrap_or_else(|e| panic!("the Tiltfile does not evaluate: {e}"))
}

fn calls<'a>(all: &'a [Call], name: &str) -> Vec<&'a Call> {
    all.iter().filter(|c| c.name == name).collect()
}

fn one<'a>(all: &'a [Call], name: &str) -> &'a Call {
    let found = calls(all, name);
    assert_eq!(found.len(), 1, "expected one {name}() call, found {}", found.len());
    found[0]
}

// ---------------------------------------------------------------- what the Tiltfile says

/// The chart install: `helm(chart, name=, namespace=, set=[...])`.
struct HelmInstall {
    chart: String,
    release: String,
    namespace: String,
    set: Vec<(String, String)>,
}

impl HelmInstall {
    fn value(&self, key: &str) -> &str {
        self.set
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the Tiltfile's helm() does not set {key}"))
    }
}

fn helm_install(all: &[Call]) -> HelmInstall {
    let helms: Vec<&Call> = calls(all, "k8s_yaml")
        .into_iter()
        .filter_map(|c| match c.args.first() {
            Some(Expr::Call(inner)) if inner.name == "helm" => Some(inner),
            _ => None,
        })
        .collect();
    assert_eq!(helms.len(), 1, "expected one k8s_yaml(helm(...))");
    let h = helms[0];
    HelmInstall {
        chart: h.req(0, "paths").str().to_string(),
        release: h.req(99, "name").str().to_string(),
        namespace: h.req(99, "namespace").str().to_string(),
        set: h
            .req(99, "set")
            .strs()
            .into_iter()
            .map(|s| {
                let (k, v) = s
                    .split_once('=')
                    .unwrap_or_else(|| panic!("set entry {s:?} is not key=value"));
                assert!(!v.contains(','), "set entry {s:?}: helm splits --set values at commas");
                (k.to_string(), v.to_string())
            })
            .collect(),
    }
}

/// A `docker_build(ref, context, dockerfile=, only=, ...)`.
struct Build<'a> {
    image: &'a str,
    context: &'a str,
    dockerfile: &'a str,
    only: Vec<&'a str>,
    env_match: bool,
}

fn builds(all: &[Call]) -> Vec<Build<'_>> {
    calls(all, "docker_build")
        .into_iter()
        .map(|c| Build {
            image: c.req(0, "ref").str(),
            context: c.req(1, "context").str(),
            dockerfile: c.arg(99, "dockerfile").map(Expr::str).unwrap_or("Dockerfile"),
            only: c.arg(99, "only").map(Expr::strs).unwrap_or_default(),
            env_match: matches!(c.arg(99, "match_in_env_vars"), Some(Expr::Word(w)) if w == "True"),
        })
        .collect()
}

fn build_with_dockerfile<'a>(all: &'a [Build<'a>], dockerfile: &str) -> &'a Build<'a> {
    all.iter()
        .find(|b| b.dockerfile == dockerfile)
        .unwrap_or_else(|| panic!("no docker_build of {dockerfile}"))
}

const OPERATOR_DOCKERFILE: &str = "deploy/docker/operator.Dockerfile";
const LAB_DOCKERFILE: &str = "deploy/docker/lab-service.Dockerfile";

// ---------------------------------------------------------------- helm

fn helm() -> PathBuf {
    let cache = std::env::var("RELAB_CACHE").unwrap_or_else(|_| "/var/cache/relab".into());
    let cached = Path::new(&cache).join("tools/bin/helm");
    if cached.is_file() {
        return cached;
    }
    if Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return "helm".into();
    }
    panic!(
        "helm is needed to render charts/relab ({} is missing and there is none on PATH): \
         run `bash scripts/tools.sh`",
        cached.display()
    )
}

/// `helm template` of the chart as the Tiltfile installs it.
fn rendered(install: &HelmInstall) -> Vec<serde_yaml::Value> {
    let mut cmd = Command::new(helm());
    cmd.current_dir(repo()).args([
        "template",
        &install.release,
        &install.chart,
        "--namespace",
        &install.namespace,
    ]);
    for (k, v) in &install.set {
        cmd.args(["--set", &format!("{k}={v}")]);
    }
    let out = cmd.output().expect("run helm");
    assert!(
        out.status.success(),
        "helm template {} {} failed (is the chart complete?):\n{}",
        install.release,
        install.chart,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("helm's output is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

// ---------------------------------------------------------------- the checks

#[test]
fn every_set_key_is_a_value_of_the_chart() {
    let all = tiltfile();
    let install = helm_install(&all);
    let chart = repo().join(&install.chart);
    assert!(chart.join("Chart.yaml").is_file(), "{}: no Chart.yaml", chart.display());
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap()).unwrap();
    assert!(!install.set.is_empty());
    for (key, value) in &install.set {
        let mut node = &values;
        for part in key.split('.') {
            node = node.get(part).unwrap_or_else(|| {
                panic!(
                    "set {key}={value}: {} has no {key}",
                    chart.join("values.yaml").display()
                )
            });
        }
        assert!(
            !node.is_mapping() && !node.is_sequence(),
            "set {key}={value}: {key} is not a single value in values.yaml"
        );
    }
    for key in ["image.pullPolicy", "lab.pullPolicy"] {
        assert_eq!(
            install.value(key),
            "IfNotPresent",
            "{key}: Tilt's images are loaded into the node"
        );
    }
}

#[test]
fn the_images_tilt_builds_are_the_images_the_chart_gets() {
    let all = tiltfile();
    let install = helm_install(&all);
    let builds = builds(&all);
    assert_eq!(builds.len(), 2, "two images: the operator and the lab service");
    let operator = build_with_dockerfile(&builds, OPERATOR_DOCKERFILE);
    let lab = build_with_dockerfile(&builds, LAB_DOCKERFILE);
    assert_eq!(operator.image, install.value("image.repository"));
    assert_eq!(lab.image, install.value("lab.image.repository"));
    for b in [operator, lab] {
        assert!(
            !b.image.contains(':'),
            "{}: Tilt refs carry no tag (Tilt tags its builds)",
            b.image
        );
    }
    assert!(
        lab.env_match,
        "the lab image reaches pods only through the operator's environment: match_in_env_vars=True"
    );
    // the same names as scripts/images.sh builds and the quickstart loads into kind
    let quickstart = std::fs::read_to_string(repo().join("docs/quickstart-kind.md")).unwrap();
    for (repo_key, tag_key) in [
        ("image.repository", "image.tag"),
        ("lab.image.repository", "lab.image.tag"),
    ] {
        let reference = format!("{}:{}", install.value(repo_key), install.value(tag_key));
        assert!(
            quickstart.contains(&reference),
            "docs/quickstart-kind.md never mentions {reference}"
        );
    }
}

/// COPY/ADD sources of a Dockerfile (not `--from=` stages), with ARG
/// defaults substituted.
fn copied_sources(dockerfile: &str) -> Vec<String> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut sources = Vec::new();
    // join continuation lines
    let joined = dockerfile.replace("\\\n", " ");
    for line in joined.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next() else { continue };
        match instruction.to_ascii_uppercase().as_str() {
            "ARG" => {
                for w in words {
                    if let Some((k, v)) = w.split_once('=') {
                        args.entry(k.to_string())
                            .or_insert_with(|| v.trim_matches('"').to_string());
                    }
                }
            }
            "COPY" | "ADD" => {
                let words: Vec<&str> = words.collect();
                if words.iter().any(|w| w.starts_with("--from")) {
                    continue;
                }
                let paths: Vec<&str> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
                let paths: Vec<String> = if line.contains('[') {
                    serde_json::from_str(line[line.find('[').unwrap()..].trim()).unwrap_or_default()
                } else {
                    paths.iter().map(|s| s.to_string()).collect()
                };
                if paths.len() < 2 {
                    continue;
                }
                for src in &paths[..paths.len() - 1] {
                    let mut s = src.clone();
                    for (k, v) in &args {
                        s = s.replace(&format!("${{{k}}}"), v).replace(&format!("${k}"), v);
                    }
                    sources.push(s);
                }
            }
            _ => {}
        }
    }
    sources
}

fn covered(only: &[&str], source: &str) -> bool {
    let source = source.trim_start_matches("./").trim_end_matches('/');
    // up to the first glob or unresolved variable
    let fixed = source.split(['*', '?', '[', '$']).next().unwrap_or("");
    if source == "." || source.is_empty() || fixed.is_empty() {
        // the whole (filtered) context, or cannot tell
        return true;
    }
    only.is_empty()
        || only.iter().any(|o| {
            let o = o.trim_start_matches("./").trim_end_matches('/');
            fixed == o || fixed.starts_with(&format!("{o}/")) || (fixed.len() < source.len() && o.starts_with(fixed))
        })
}

#[test]
fn the_dockerfiles_exist_and_copy_only_what_the_context_holds() {
    let all = tiltfile();
    for b in builds(&all) {
        let context = repo().join(b.context);
        assert!(
            context.is_dir(),
            "{}: context {} is not a directory",
            b.image,
            b.context
        );
        let dockerfile = repo().join(b.dockerfile);
        let text = std::fs::read_to_string(&dockerfile)
            .unwrap_or_else(|e| panic!("{}: {} ({e})", b.image, dockerfile.display()));
        for o in &b.only {
            assert!(
                context.join(o).exists(),
                "{}: only= names {o}, which does not exist",
                b.image
            );
        }
        let sources = copied_sources(&text);
        for src in &sources {
            assert!(
                covered(&b.only, src),
                "{}: {} copies {src}, which only= {:?} leaves out of the build context",
                b.image,
                b.dockerfile,
                b.only
            );
        }
        // a `COPY . .` that runs cargo needs the whole workspace in the context
        if text.contains("cargo build") && sources.iter().any(|s| s == ".") && !b.only.is_empty() {
            let manifest: toml_lite::Workspace = toml_lite::workspace(&repo().join("Cargo.toml"));
            for needed in ["Cargo.toml", "Cargo.lock"]
                .into_iter()
                .chain(manifest.members.iter().map(String::as_str))
            {
                assert!(
                    covered(&b.only, needed),
                    "{}: cargo builds the workspace in the image, but only= {:?} leaves out {needed}",
                    b.image,
                    b.only
                );
            }
        }
    }
}

/// Just enough of Cargo.toml: the workspace members (no toml crate here).
mod toml_lite {
    pub struct Workspace {
        pub members: Vec<String>,
    }

    pub fn workspace(path: &std::path::Path) -> Workspace {
        let text = std::fs::read_to_string(path).unwrap();
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("members"))
            .unwrap_or_else(|| panic!("{}: no workspace members line", path.display()));
        let list = &line[line.find('[').expect("members = [...]")..];
        Workspace {
            members: serde_json::from_str(list).expect("members on one line, as a JSON-like list"),
        }
    }
}

#[test]
fn the_operator_resource_is_the_deployment_helm_renders() {
    let all = tiltfile();
    let install = helm_install(&all);
    let docs = rendered(&install);

    let resource = one(&all, "k8s_resource");
    let workload = resource.req(0, "workload").str();
    let operators: Vec<&serde_yaml::Value> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("Deployment"))
        .filter(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .is_some_and(|cs| cs.iter().any(|c| c["name"].as_str() == Some("operator")))
        })
        .collect();
    assert_eq!(
        operators.len(),
        1,
        "helm template renders {} Deployments with an `operator` container",
        operators.len()
    );
    let deployment = operators[0];
    assert_eq!(
        deployment["metadata"]["name"].as_str(),
        Some(workload),
        "k8s_resource('{workload}') must name the operator Deployment of release {}",
        install.release
    );
    if let Some(ns) = deployment["metadata"]["namespace"].as_str() {
        assert_eq!(ns, install.namespace);
    }
    let container = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("operator"))
        .unwrap();

    let image = format!("{}:{}", install.value("image.repository"), install.value("image.tag"));
    assert_eq!(container["image"].as_str(), Some(image.as_str()));
    assert_eq!(container["imagePullPolicy"].as_str(), Some("IfNotPresent"));

    // the port_forward reaches the container's metrics port
    let forwards = resource.req(99, "port_forwards").list();
    let metrics_port = container["ports"]
        .as_sequence()
        .and_then(|ps| ps.iter().find(|p| p["name"].as_str() == Some("metrics")))
        .and_then(|p| p["containerPort"].as_u64())
        .expect("the operator container has a port named metrics");
    let forwarded: Vec<u64> = forwards
        .iter()
        .map(|f| {
            let pf = f.call();
            assert_eq!(pf.name, "port_forward");
            let container_port = pf.arg(1, "container_port").or_else(|| pf.arg(0, "local_port")).unwrap();
            match container_port {
                Expr::Word(w) => w.parse().expect("a port number"),
                other => panic!("port_forward port {other:?}"),
            }
        })
        .collect();
    assert!(
        forwarded.contains(&metrics_port),
        "port_forwards {forwarded:?} miss the metrics port {metrics_port}"
    );

    // match_in_env_vars: the lab image must be the whole value of an env var
    let lab_image = format!(
        "{}:{}",
        install.value("lab.image.repository"),
        install.value("lab.image.tag")
    );
    let env = container["env"].as_sequence().cloned().unwrap_or_default();
    assert!(
        env.iter().any(|e| e["value"].as_str() == Some(lab_image.as_str())),
        "the operator container has no env var whose value is {lab_image} (e.g. RELAB_LAB_IMAGE): \
         Tilt's match_in_env_vars could not swap in its build; env: {env:?}"
    );
}

#[test]
fn the_drill_is_applied_where_the_operator_watches_and_forwarded_by_its_names() {
    let all = tiltfile();
    let install = helm_install(&all);
    let locals = calls(&all, "local_resource");

    // resource_deps name resources this file defines
    // (`uncategorized`: Tilt's own resource of the objects no workload claims)
    let mut defined: Vec<&str> = locals.iter().map(|c| c.req(0, "name").str()).collect();
    defined.push("uncategorized");
    for r in calls(&all, "k8s_resource") {
        defined.push(r.arg(99, "new_name").unwrap_or_else(|| r.req(0, "workload")).str());
    }
    for c in locals.iter().copied().chain(calls(&all, "k8s_resource")) {
        for dep in c.arg(99, "resource_deps").map(Expr::strs).unwrap_or_default() {
            assert!(
                defined.contains(&dep),
                "resource_deps {dep:?} is not a resource: {defined:?}"
            );
        }
    }

    // the drill: its manifest is a valid experiment, applied in the release
    // namespace (watchScope: namespace by default)
    let drill = locals
        .iter()
        .find(|c| c.arg(99, "cmd").is_some_and(|cmd| cmd.str().contains("kubectl apply")))
        .expect("a local_resource that applies an example");
    let cmd = drill.req(99, "cmd").str();
    let deps = drill.req(99, "deps").strs();
    assert_eq!(deps.len(), 1);
    let manifest = deps[0];
    assert!(cmd.contains(&format!("-f {manifest}")), "{cmd}");
    let text = std::fs::read_to_string(repo().join(manifest)).unwrap_or_else(|e| panic!("{manifest}: {e}"));
    let rx = parse(&text).unwrap_or_else(|e| panic!("{manifest}: {e:?}"));
    assert!(problems(&rx).is_empty(), "{manifest}: {:?}", problems(&rx));
    let name = rx.metadata.name.clone().unwrap();
    assert!(rx.metadata.namespace.is_none(), "{manifest} must not pin a namespace");
    let watch_scope = install
        .set
        .iter()
        .find(|(k, _)| k == "watchScope")
        .map(|(_, v)| v.as_str());
    if watch_scope != Some("cluster") {
        assert!(
            cmd.contains(&format!("kubectl apply -n {} -f", install.namespace)),
            "the operator watches only {}: {cmd}",
            install.namespace
        );
    }
    for part in cmd.split("&&").map(str::trim).filter(|p| p.starts_with("kubectl")) {
        assert!(part.contains(&format!("-n {}", install.namespace)), "{part}");
        if !part.contains(" apply ") {
            assert!(part.contains(&format!("rx/{name}")), "{part}: not rx/{name}");
        }
    }

    // the port-forward: the order service of the current run, by the
    // operator's naming, on the API and worker-metrics ports
    let forward = locals
        .iter()
        .find_map(|c| c.arg(99, "serve_cmd").map(Expr::str))
        .expect("a local_resource serving a port-forward");
    let mut rx7 = rx.clone();
    rx7.metadata.generation = Some(7);
    let service = Names::new(&rx7).order_service().replace("-r7-", "-r$gen-");
    assert!(
        forward.contains(&format!("svc/{service} ")),
        "{forward}: not svc/{service}"
    );
    assert!(forward.contains(&format!("rx/{name}")), "{forward}");
    assert!(forward.contains("{.status.observedGeneration}"), "{forward}");
    assert!(forward.contains(&format!("-n {}", install.namespace)), "{forward}");
    for port in [API_PORT, WORKER_ADMIN_PORT] {
        assert!(
            forward.contains(&format!(":{port}")),
            "{forward}: nothing forwarded to {port}"
        );
    }
}

// ---------------------------------------------------------------- the interpreter itself

#[test]
fn the_interpreter_records_calls_with_their_arguments() {
    let src = r#"
# comment
X = 'a' + "b"  # trailing
def image(name):
    return 'localhost/' + name
docker_build(image('op'), '.', only=[X, 'c'], match_in_env_vars=True, n=2.5)
k8s_yaml(helm('charts/relab', set=['%s=%d' % ('k', 1)]))
"#;
    let calls = evaluate("test.star", src).expect("evaluates");
    let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["docker_build", "helm", "k8s_yaml"]);
    let build = &calls[0];
    assert_eq!(
        build.args,
        vec![Expr::Str("localhost/op".into()), Expr::Str(".".into())]
    );
    assert_eq!(build.kwargs["only"].strs(), vec!["ab", "c"]);
    assert_eq!(build.kwargs["match_in_env_vars"], Expr::Word("True".into()));
    assert_eq!(build.kwargs["n"], Expr::Word("2.5".into()));
    let helm = calls[2].args[0].call();
    assert_eq!(helm.name, "helm");
    assert_eq!(helm.kwargs["set"].list().len(), 1);
    assert_eq!(
        helm.kwargs["set"].strs(),
        vec!["k=1"],
        "real Starlark: % formatting evaluated"
    );
}

#[test]
fn a_broken_tiltfile_fails_with_the_interpreters_message() {
    for (src, says) in [
        ("docker_build('a', '.'", "Parse error"),
        ("kubernetes_deploy('x')", "Variable `kubernetes_deploy` not found"),
        ("docker_build('a')", "Wrong number of positional arguments"),
        ("k8s_resource(workload='relab', new_name=1, nonsense=", "Parse error"),
    ] {
        let err = evaluate("broken.star", src).expect_err(src);
        assert!(err.contains(says), "{src}: {err}");
    }
}

#[test]
fn dockerfile_sources_and_coverage() {
    let text = "ARG BINARIES=target/release\nFROM x AS build\nCOPY Cargo.toml Cargo.lock ./\nCOPY --from=build /a /b\n\
                COPY ${BINARIES}/relab /usr/local/bin/\nCOPY [\"crds/x.yaml\", \"/crds/\"]\nRUN cargo build\n";
    let sources = copied_sources(text);
    assert_eq!(
        sources,
        vec!["Cargo.toml", "Cargo.lock", "target/release/relab", "crds/x.yaml"]
    );
    let only = ["Cargo.toml", "Cargo.lock", "crds"];
    assert!(covered(&only, "Cargo.toml"));
    assert!(covered(&only, "crds/x.yaml"));
    assert!(!covered(&only, "target/release/relab"));
    assert!(covered(&only, "."), "COPY . copies the context only= made");
    assert!(covered(&[], "lab-service"));
    assert!(covered(&["operator"], "operator/src/*.rs"));
}

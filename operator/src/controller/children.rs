//! The desired objects of one run (pure): names, labels, and every child's
//! manifest as server-side-apply JSON.
//!
//! Each run of an experiment (one `metadata.generation`) gets children of its
//! own, named `<experiment>-r<generation>-<component>` and labelled
//! `relab.dev/run=<generation>`: a new run never talks to the previous run's
//! database or mock, and the previous run's objects are deleted by label.
//!
//! Built in two steps because the lab finds its parts by Service ClusterIP
//! (the test cluster has no DNS): first the Services ([`services`]), then,
//! with their assigned IPs, everything else ([`workloads`]).

use crate::crd::{ReliabilityExperiment, ReliabilityExperimentStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{ApiResource, DynamicObject};
use kube::{Resource, ResourceExt};
use lab_service::lab;
use lab_service::loadgen::schedule::format_stages;
use relab_model::ValidatedExperiment;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const LABEL_EXPERIMENT: &str = "relab.dev/experiment";
pub const LABEL_RUN: &str = "relab.dev/run";
pub const LABEL_COMPONENT: &str = "relab.dev/component";
pub const MANAGED_BY: &str = "relab-operator";

pub const API_PORT: i32 = 8080;
pub const WORKER_ADMIN_PORT: i32 = 9090;
pub const MOCK_PORT: i32 = 8081;
pub const POSTGRES_PORT: i32 = 5432;

/// Operator-wide defaults for the lab's pods (flags of `relab operator`);
/// `spec.images` overrides them per experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct LabDefaults {
    pub lab_image: String,
    pub postgres_image: String,
    pub pull_policy: String,
    /// How long the load generator waits for the database, API and mock.
    pub wait_ready_secs: u64,
}

impl Default for LabDefaults {
    fn default() -> Self {
        Self {
            lab_image: format!("ghcr.io/relab-dev/lab-service:{}", env!("CARGO_PKG_VERSION")),
            postgres_image: "docker.io/library/postgres:16-alpine".into(),
            pull_policy: "IfNotPresent".into(),
            wait_ready_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Service,
    ConfigMap,
    Deployment,
    Job,
}

impl Kind {
    /// The API resource of this kind, for applying a [`Child`] as a `DynamicObject`.
    pub fn api_resource(self) -> ApiResource {
        match self {
            Kind::Service => ApiResource::erase::<Service>(&()),
            Kind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            Kind::Deployment => ApiResource::erase::<Deployment>(&()),
            Kind::Job => ApiResource::erase::<Job>(&()),
        }
    }
}

/// One desired object.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub kind: Kind,
    pub name: String,
    pub body: Value,
}

/// Names of one run's children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub experiment: String,
    pub generation: i64,
    base: String,
}

impl Names {
    pub fn new(rx: &ReliabilityExperiment) -> Self {
        let experiment = rx.name_any();
        let generation = rx.metadata.generation.unwrap_or(0);
        Self {
            base: format!("{experiment}-r{generation}"),
            experiment,
            generation,
        }
    }
    pub fn postgres(&self) -> String {
        format!("{}-postgres", self.base)
    }
    pub fn payment_mock(&self) -> String {
        format!("{}-payment-mock", self.base)
    }
    pub fn order_service(&self) -> String {
        format!("{}-order-service", self.base)
    }
    pub fn config(&self) -> String {
        format!("{}-config", self.base)
    }
    pub fn loadgen(&self) -> String {
        format!("{}-loadgen", self.base)
    }
    /// `relab.dev/experiment=<name>,relab.dev/run=<generation>`
    pub fn run_selector(&self) -> String {
        format!("{LABEL_EXPERIMENT}={},{LABEL_RUN}={}", self.experiment, self.generation)
    }
    /// Every child of this experiment that belongs to another run (never
    /// the dashboard, which outlives runs).
    pub fn other_runs_selector(&self) -> String {
        format!(
            "{LABEL_EXPERIMENT}={},{LABEL_RUN}!={},{LABEL_COMPONENT}!={DASHBOARD}",
            self.experiment, self.generation
        )
    }
    /// Every workload of this experiment (not the dashboard: like the
    /// results, it stays after the TTL).
    pub fn experiment_selector(&self) -> String {
        format!("{LABEL_EXPERIMENT}={},{LABEL_COMPONENT}!={DASHBOARD}", self.experiment)
    }
    /// The experiment's dashboard ConfigMap (one per experiment, updated per run).
    pub fn dashboard(&self) -> String {
        format!("{}-dashboard", self.experiment)
    }
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_EXPERIMENT.into(), self.experiment.clone()),
            (LABEL_RUN.into(), self.generation.to_string()),
            (LABEL_COMPONENT.into(), component.into()),
            ("app.kubernetes.io/name".into(), "relab-lab".into()),
            ("app.kubernetes.io/component".into(), component.into()),
            ("app.kubernetes.io/instance".into(), self.experiment.clone()),
            ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
        ])
    }
    fn selector(&self, component: &str) -> Value {
        json!({
            LABEL_EXPERIMENT: self.experiment,
            LABEL_RUN: self.generation.to_string(),
            LABEL_COMPONENT: component,
        })
    }
}

/// Cluster IPs the API server assigned to this run's Services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceIps {
    /// None with an external database.
    pub postgres: Option<String>,
    pub payment_mock: String,
    pub order_service: String,
}

impl ServiceIps {
    /// From this run's Services as the API server returned them; the error
    /// names a Service that has no ClusterIP.
    pub fn from_applied(names: &Names, applied: &[DynamicObject]) -> Result<Self, String> {
        let mut ips = ServiceIps {
            postgres: None,
            payment_mock: String::new(),
            order_service: String::new(),
        };
        for service in applied {
            let name = service.name_any();
            let ip = service.data["spec"]["clusterIP"]
                .as_str()
                .filter(|ip| !ip.is_empty() && *ip != "None")
                .ok_or_else(|| format!("Service {name} has no ClusterIP assigned"))?
                .to_string();
            if name == names.postgres() {
                ips.postgres = Some(ip);
            } else if name == names.payment_mock() {
                ips.payment_mock = ip;
            } else {
                ips.order_service = ip;
            }
        }
        Ok(ips)
    }
}

fn metadata(rx: &ReliabilityExperiment, names: &Names, name: String, component: &str) -> Value {
    let owner = rx
        .controller_owner_ref(&())
        .expect("a stored experiment has a name and uid");
    json!({
        "name": name,
        "namespace": rx.namespace(),
        "labels": names.labels(component),
        "ownerReferences": [owner],
    })
}

fn object(api_version: &str, kind: &str, metadata: Value, spec: (&str, Value)) -> Value {
    let mut o = json!({ "apiVersion": api_version, "kind": kind, "metadata": metadata });
    o[spec.0] = spec.1;
    o
}

/// Seconds a lab pod gets between SIGTERM and SIGKILL: enough for the order
/// service to drain (readiness off, in-flight jobs finished), short enough
/// that deleting an experiment frees its node within seconds rather than
/// Kubernetes' default 30 s per pod.
pub const LAB_GRACE_SECONDS: i64 = 10;

/// Component label of the dashboard ConfigMap.
pub const DASHBOARD: &str = "dashboard";

/// How the operator publishes per-experiment Grafana dashboards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardOptions {
    /// Labels Grafana's dashboard sidecar selects on (e.g. `grafana_dashboard=1`).
    pub labels: BTreeMap<String, String>,
    /// Annotations for the sidecar (e.g. `grafana_folder=relab`).
    pub annotations: BTreeMap<String, String>,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        Self {
            labels: BTreeMap::from([("grafana_dashboard".into(), "1".into())]),
            annotations: BTreeMap::new(),
        }
    }
}

/// The experiment's Grafana dashboard as a ConfigMap (key
/// `relab-<namespace>-<name>.json`), for the status of the current run.
pub fn dashboard(
    rx: &ReliabilityExperiment,
    status: &ReliabilityExperimentStatus,
    options: &DashboardOptions,
) -> Child {
    let names = Names::new(rx);
    let ns = rx.namespace().unwrap_or_default();
    let board = crate::monitoring::dashboard::experiment(&ns, &names.experiment, &rx.spec, status);
    let mut meta = metadata(rx, &names, names.dashboard(), DASHBOARD);
    let labels = meta["labels"].as_object_mut().expect("labels");
    labels.remove(LABEL_RUN);
    for (k, v) in &options.labels {
        labels.insert(k.clone(), json!(v));
    }
    if !options.annotations.is_empty() {
        meta["annotations"] = json!(options.annotations);
    }
    let key = format!("relab-{ns}-{}.json", names.experiment);
    Child {
        kind: Kind::ConfigMap,
        name: names.dashboard(),
        body: object(
            "v1",
            "ConfigMap",
            meta,
            (
                "data",
                json!({ key: serde_json::to_string_pretty(&board).expect("dashboard serializes") }),
            ),
        ),
    }
}

/// Services first: the other children need their ClusterIPs.
pub fn services(rx: &ReliabilityExperiment) -> Vec<Child> {
    let names = Names::new(rx);
    let service = |name: String, component: &str, ports: Value| Child {
        kind: Kind::Service,
        body: object(
            "v1",
            "Service",
            metadata(rx, &names, name.clone(), component),
            (
                "spec",
                json!({ "type": "ClusterIP", "selector": names.selector(component), "ports": ports }),
            ),
        ),
        name,
    };
    let mut out = Vec::new();
    if rx.spec.database.external.is_none() {
        out.push(service(
            names.postgres(),
            "postgres",
            json!([{ "name": "postgres", "port": POSTGRES_PORT, "targetPort": "postgres", "protocol": "TCP" }]),
        ));
    }
    out.push(service(
        names.payment_mock(),
        "payment-mock",
        json!([{ "name": "http", "port": MOCK_PORT, "targetPort": "http", "protocol": "TCP" }]),
    ));
    out.push(service(
        names.order_service(),
        "order-service",
        json!([
            { "name": "http", "port": API_PORT, "targetPort": "http", "protocol": "TCP" },
            { "name": "worker-metrics", "port": WORKER_ADMIN_PORT, "targetPort": "worker-metrics", "protocol": "TCP" },
        ]),
    ));
    out
}

/// The managed database's URL (trust auth inside the lab, see docs/operator.md).
pub fn managed_database_url(postgres_ip: &str) -> String {
    format!("postgres://postgres@{postgres_ip}:{POSTGRES_PORT}/relab")
}

/// The lab's `RELAB_*` environment, shared through one ConfigMap by the
/// order service's containers, the payment mock and the load generator.
pub fn lab_environment(
    experiment: &ValidatedExperiment,
    ips: &ServiceIps,
    defaults: &LabDefaults,
) -> BTreeMap<String, String> {
    let spec = experiment.spec();
    let payment_url = format!("http://{}:{MOCK_PORT}", ips.payment_mock);
    let api_url = format!("http://{}:{API_PORT}", ips.order_service);
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in lab::api_config(experiment).to_env() {
        env.insert(k.into(), v);
    }
    for (k, v) in lab::worker_config(experiment, &payment_url).to_env() {
        env.insert(k.into(), v);
    }
    let plan = serde_json::to_string(&experiment.fault_plan()).expect("a fault plan serializes");
    let extra = [
        ("RELAB_LOG_FORMAT", "json".to_string()),
        ("RELAB_FAULTS", plan),
        ("RELAB_API_URL", api_url.clone()),
        (
            "RELAB_METRICS_URLS",
            format!(
                "{api_url}/metrics,http://{}:{WORKER_ADMIN_PORT}/metrics",
                ips.order_service
            ),
        ),
        ("RELAB_LOAD_STAGES", format_stages(&experiment.load_stages())),
        ("RELAB_MAX_IN_FLIGHT", spec.load.max_in_flight.to_string()),
        ("RELAB_DRAIN_TIMEOUT_SECS", spec.load.drain_timeout_seconds.to_string()),
        ("RELAB_WAIT_READY_SECS", defaults.wait_ready_secs.to_string()),
        (
            "RELAB_DATABASE_CONNECT_TIMEOUT_SECS",
            defaults.wait_ready_secs.to_string(),
        ),
        ("RELAB_TERMINATION_LOG", "/dev/termination-log".to_string()),
    ];
    for (k, v) in extra {
        env.insert(k.into(), v);
    }
    if let Some(ip) = &ips.postgres {
        env.insert("RELAB_DATABASE_URL".into(), managed_database_url(ip));
    }
    env
}

/// Non-root, read-only root filesystem, no privilege escalation, no capabilities.
fn security_context(user: i64) -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": user,
        "runAsGroup": user,
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

fn resources(cpu_request: &str, memory_request: &str, cpu_limit: &str, memory_limit: &str) -> Value {
    json!({
        "requests": { "cpu": cpu_request, "memory": memory_request },
        "limits": { "cpu": cpu_limit, "memory": memory_limit },
    })
}

fn http_probe(path: &str, port: &str, period: i32) -> Value {
    json!({ "httpGet": { "path": path, "port": port }, "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": 3 })
}

const LAB_USER: i64 = 65532;
const POSTGRES_USER: i64 = 70;

struct Images {
    lab: String,
    postgres: String,
    pull_policy: String,
}

fn images(rx: &ReliabilityExperiment, defaults: &LabDefaults) -> Images {
    let i = &rx.spec.images;
    Images {
        lab: i.lab_service.clone().unwrap_or_else(|| defaults.lab_image.clone()),
        postgres: i.postgres.clone().unwrap_or_else(|| defaults.postgres_image.clone()),
        pull_policy: i.pull_policy.clone().unwrap_or_else(|| defaults.pull_policy.clone()),
    }
}

/// Environment every lab container gets besides the ConfigMap: the external
/// database's URL from its Secret (an explicit `env` wins over `envFrom`).
fn database_env(rx: &ReliabilityExperiment) -> Value {
    match &rx.spec.database.external {
        Some(ext) => json!([{
            "name": "RELAB_DATABASE_URL",
            "valueFrom": { "secretKeyRef": { "name": ext.secret_name, "key": ext.secret_key } },
        }]),
        None => json!([]),
    }
}

fn with_env(base: &Value, more: &[(&str, String)]) -> Value {
    let mut list = base.as_array().cloned().unwrap_or_default();
    for (k, v) in more {
        list.push(json!({ "name": k, "value": v }));
    }
    Value::Array(list)
}

fn deployment(rx: &ReliabilityExperiment, names: &Names, name: String, component: &str, pod: Value) -> Child {
    let labels = names.labels(component);
    Child {
        kind: Kind::Deployment,
        body: object(
            "apps/v1",
            "Deployment",
            metadata(rx, names, name.clone(), component),
            (
                "spec",
                json!({
                    "replicas": 1,
                    // one lab per run: never two databases or mocks side by side
                    "strategy": { "type": "Recreate" },
                    "selector": { "matchLabels": names.selector(component) },
                    "template": { "metadata": { "labels": labels }, "spec": pod },
                }),
            ),
        ),
        name,
    }
}

/// Everything but the Services: the lab's ConfigMap, the Deployments of
/// Postgres (managed only), the payment mock and the order service, and the
/// load generator's Job.
pub fn workloads(
    rx: &ReliabilityExperiment,
    experiment: &ValidatedExperiment,
    ips: &ServiceIps,
    defaults: &LabDefaults,
) -> Vec<Child> {
    let names = Names::new(rx);
    let spec = experiment.spec();
    let img = images(rx, defaults);
    let config_name = names.config();
    let env_from = json!([{ "configMapRef": { "name": config_name } }]);
    let db_env = database_env(rx);
    let mut out = vec![Child {
        kind: Kind::ConfigMap,
        body: object(
            "v1",
            "ConfigMap",
            metadata(rx, &names, config_name.clone(), "config"),
            ("data", json!(lab_environment(experiment, ips, defaults))),
        ),
        name: config_name,
    }];

    if spec.database.external.is_none() {
        let replicas = i64::from(spec.order_service.replicas);
        // two pools of 16 per order-service pod, the load generator's 4, psql headroom
        let max_connections = 32 * replicas + 20;
        out.push(deployment(
            rx,
            &names,
            names.postgres(),
            "postgres",
            json!({
                "automountServiceAccountToken": false,
                // the lab's data is disposable once the run is judged: Postgres'
                // SIGTERM (smart shutdown) would wait for every client
                "terminationGracePeriodSeconds": LAB_GRACE_SECONDS,
                "securityContext": { "fsGroup": POSTGRES_USER, "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
                "containers": [{
                    "name": "postgres",
                    "image": img.postgres,
                    "imagePullPolicy": img.pull_policy,
                    "args": ["-c", format!("max_connections={max_connections}"), "-c", "fsync=off"],
                    "env": [
                        { "name": "POSTGRES_HOST_AUTH_METHOD", "value": "trust" },
                        { "name": "POSTGRES_DB", "value": "relab" },
                        { "name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata" },
                    ],
                    "ports": [{ "name": "postgres", "containerPort": POSTGRES_PORT, "protocol": "TCP" }],
                    "readinessProbe": {
                        "exec": { "command": ["pg_isready", "-h", "127.0.0.1", "-U", "postgres", "-d", "relab"] },
                        "periodSeconds": 2, "timeoutSeconds": 2,
                    },
                    "livenessProbe": { "tcpSocket": { "port": "postgres" }, "initialDelaySeconds": 30, "periodSeconds": 10 },
                    "resources": resources("100m", "256Mi", "1", "1Gi"),
                    "securityContext": security_context(POSTGRES_USER),
                    "volumeMounts": [
                        { "name": "data", "mountPath": "/var/lib/postgresql/data" },
                        { "name": "run", "mountPath": "/var/run/postgresql" },
                        { "name": "tmp", "mountPath": "/tmp" },
                    ],
                }],
                "volumes": [
                    { "name": "data", "emptyDir": {} },
                    { "name": "run", "emptyDir": {} },
                    { "name": "tmp", "emptyDir": {} },
                ],
            }),
        ));
    }

    let lab_pod = |containers: Value, restart: &str| {
        json!({
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": LAB_GRACE_SECONDS,
            "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": containers,
        })
    };
    let lab_container = |name: &str, args: &[&str], env: Value, extra: Value| {
        let mut c = json!({
            "name": name,
            "image": img.lab,
            "imagePullPolicy": img.pull_policy,
            "args": args,
            "envFrom": env_from,
            "env": env,
            "securityContext": security_context(LAB_USER),
        });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c
    };

    out.push(deployment(
        rx,
        &names,
        names.payment_mock(),
        "payment-mock",
        lab_pod(
            json!([lab_container(
                "payment-mock",
                &["payment-mock"],
                json!([{ "name": "RELAB_MOCK_LISTEN", "value": format!("0.0.0.0:{MOCK_PORT}") }]),
                json!({
                    "ports": [{ "name": "http", "containerPort": MOCK_PORT, "protocol": "TCP" }],
                    "readinessProbe": http_probe("/healthz", "http", 2),
                    "livenessProbe": http_probe("/healthz", "http", 10),
                    "resources": resources("50m", "32Mi", "1", "256Mi"),
                }),
            )]),
            "Always",
        ),
    ));

    let mut order = deployment(
        rx,
        &names,
        names.order_service(),
        "order-service",
        lab_pod(
            json!([
                lab_container(
                    "api",
                    &["api"],
                    with_env(&db_env, &[("RELAB_API_LISTEN", format!("0.0.0.0:{API_PORT}"))]),
                    json!({
                        "ports": [{ "name": "http", "containerPort": API_PORT, "protocol": "TCP" }],
                        "readinessProbe": http_probe("/readyz", "http", 2),
                        "livenessProbe": http_probe("/healthz", "http", 10),
                        "resources": resources("100m", "64Mi", "1", "512Mi"),
                    }),
                ),
                lab_container(
                    "worker",
                    &["worker"],
                    with_env(
                        &db_env,
                        &[("RELAB_ADMIN_LISTEN", format!("0.0.0.0:{WORKER_ADMIN_PORT}"))]
                    ),
                    json!({
                        "ports": [{ "name": "worker-metrics", "containerPort": WORKER_ADMIN_PORT, "protocol": "TCP" }],
                        "readinessProbe": http_probe("/readyz", "worker-metrics", 2),
                        "livenessProbe": http_probe("/healthz", "worker-metrics", 10),
                        "resources": resources("100m", "64Mi", "1", "512Mi"),
                    }),
                ),
            ]),
            "Always",
        ),
    );
    order.body["spec"]["replicas"] = json!(spec.order_service.replicas);
    order.body["spec"]["template"]["metadata"]["annotations"] = json!({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": API_PORT.to_string(),
        "prometheus.io/path": "/metrics",
    });
    out.push(order);

    // wait for the lab + load + drain + audit, with room to spare
    let deadline =
        defaults.wait_ready_secs + spec.load.total_seconds() + u64::from(spec.load.drain_timeout_seconds) + 300;
    let job_name = names.loadgen();
    let mut job_pod = lab_pod(
        json!([lab_container(
            "loadgen",
            &["loadgen"],
            db_env.clone(),
            json!({
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "resources": resources("100m", "64Mi", "1", "256Mi"),
            }),
        )]),
        "Never",
    );
    job_pod["activeDeadlineSeconds"] = json!(deadline);
    out.push(Child {
        kind: Kind::Job,
        body: object(
            "batch/v1",
            "Job",
            metadata(rx, &names, job_name.clone(), "loadgen"),
            (
                "spec",
                json!({
                    // a second attempt would load a database the first one already filled
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": deadline,
                    "template": { "metadata": { "labels": names.labels("loadgen") }, "spec": job_pod },
                }),
            ),
        ),
        name: job_name,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{resource, validated};
    use k8s_openapi::api::core::v1::Container;
    use relab_model::validate::parse_manifest;

    fn v(rx: &ReliabilityExperiment) -> ValidatedExperiment {
        validated(rx).expect("a valid experiment")
    }

    fn experiment(spec_yaml: &str) -> ReliabilityExperiment {
        let mut rx = resource(parse_manifest(&format!(
            "apiVersion: relab.dev/v1alpha1\nkind: ReliabilityExperiment\nmetadata: {{name: drill, namespace: lab}}\nspec:\n{spec_yaml}"
        ))
        .expect("valid manifest"));
        rx.metadata.uid = Some("3f0c6f7e-0000-4000-8000-000000000001".into());
        rx.metadata.generation = Some(3);
        rx
    }

    fn ips(pg: bool) -> ServiceIps {
        ServiceIps {
            postgres: pg.then(|| "10.0.0.10".to_string()),
            payment_mock: "10.0.0.11".into(),
            order_service: "10.0.0.12".into(),
        }
    }

    fn container<'a>(d: &'a Deployment, name: &str) -> &'a Container {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .find(|c| c.name == name)
            .unwrap()
    }

    #[test]
    fn every_child_parses_as_its_kubernetes_type_with_owner_and_labels() {
        let rx = experiment("  load: {ratePerSecond: 5, durationSeconds: 10}\n");
        let mut all = services(&rx);
        all.extend(workloads(&rx, &v(&rx), &ips(true), &LabDefaults::default()));
        assert_eq!(all.len(), 3 + 5);
        for child in &all {
            let meta: kube::api::ObjectMeta =
                serde_json::from_value(child.body["metadata"].clone()).expect("object meta");
            assert_eq!(meta.name.as_deref(), Some(child.name.as_str()));
            assert!(child.name.starts_with("drill-r3-"), "{}", child.name);
            assert!(child.name.len() <= 63);
            assert_eq!(meta.namespace.as_deref(), Some("lab"));
            let owner = &meta.owner_references.as_ref().expect("owner")[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str()),
                ("ReliabilityExperiment", "drill")
            );
            assert_eq!(owner.controller, Some(true));
            let labels = meta.labels.expect("labels");
            assert_eq!(labels[LABEL_EXPERIMENT], "drill");
            assert_eq!(labels[LABEL_RUN], "3");
            match child.kind {
                Kind::Service => drop(serde_json::from_value::<Service>(child.body.clone()).expect("Service")),
                Kind::ConfigMap => drop(serde_json::from_value::<ConfigMap>(child.body.clone()).expect("ConfigMap")),
                Kind::Deployment => drop(serde_json::from_value::<Deployment>(child.body.clone()).expect("Deployment")),
                Kind::Job => drop(serde_json::from_value::<Job>(child.body.clone()).expect("Job")),
            }
        }
    }

    #[test]
    fn pods_are_hardened_with_probes_and_resources() {
        let rx = experiment("  load: {ratePerSecond: 5, durationSeconds: 10}\n");
        for child in workloads(&rx, &v(&rx), &ips(true), &LabDefaults::default()) {
            let pod = match child.kind {
                Kind::Deployment | Kind::Job => child.body["spec"]["template"]["spec"].clone(),
                _ => continue,
            };
            assert_eq!(
                pod["terminationGracePeriodSeconds"], LAB_GRACE_SECONDS,
                "{}",
                child.name
            );
            for c in pod["containers"].as_array().unwrap() {
                let sc = &c["securityContext"];
                assert_eq!(sc["runAsNonRoot"], true, "{}", child.name);
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{}", child.name);
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{}", child.name);
                assert!(c["resources"]["limits"]["memory"].is_string(), "{}", child.name);
                assert!(c["resources"]["requests"]["cpu"].is_string(), "{}", child.name);
                if child.kind == Kind::Deployment {
                    assert!(c["readinessProbe"].is_object(), "{} {}", child.name, c["name"]);
                    assert!(c["livenessProbe"].is_object(), "{} {}", child.name, c["name"]);
                }
            }
        }
    }

    #[test]
    fn the_spec_reaches_the_lab_through_the_config_map() {
        let rx = experiment(
            "  load: {stages: [{ratePerSecond: 5, durationSeconds: 10}, {ratePerSecond: 20, durationSeconds: 5}]}\n  payment: {failureRate: 0.3}\n  orderService:\n    workers: 3\n    circuitBreaker: {failureThreshold: 7, openTimeoutMs: 1500}\n",
        );
        let env = lab_environment(&v(&rx), &ips(true), &LabDefaults::default());
        assert_eq!(env["RELAB_BREAKER_FAILURE_THRESHOLD"], "7");
        assert_eq!(env["RELAB_BREAKER_OPEN_TIMEOUT_MS"], "1500");
        assert_eq!(env["RELAB_WORKER_CONCURRENCY"], "3");
        assert_eq!(env["RELAB_PAYMENT_URL"], "http://10.0.0.11:8081");
        assert_eq!(env["RELAB_API_URL"], "http://10.0.0.12:8080");
        assert_eq!(env["RELAB_DATABASE_URL"], "postgres://postgres@10.0.0.10:5432/relab");
        assert_eq!(env["RELAB_LOAD_STAGES"], "5:10,20:5");
        let plan: lab_service::payment_mock::FaultPlan = serde_json::from_str(&env["RELAB_FAULTS"]).unwrap();
        assert_eq!(plan.base.failure_rate, 0.3);
    }

    #[test]
    fn an_external_database_comes_from_its_secret_and_has_no_postgres() {
        let rx = experiment(
            "  load: {ratePerSecond: 5, durationSeconds: 10}\n  database: {external: {secretName: shared-pg, secretKey: dsn}}\n",
        );
        let svcs = services(&rx);
        assert!(svcs.iter().all(|c| !c.name.ends_with("-postgres")));
        let w = workloads(&rx, &v(&rx), &ips(false), &LabDefaults::default());
        assert!(w.iter().all(|c| !c.name.ends_with("-postgres")));
        let env = lab_environment(&v(&rx), &ips(false), &LabDefaults::default());
        assert!(!env.contains_key("RELAB_DATABASE_URL"));
        let order = w.iter().find(|c| c.name.ends_with("-order-service")).unwrap();
        let d: Deployment = serde_json::from_value(order.body.clone()).unwrap();
        let from = container(&d, "api")
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "RELAB_DATABASE_URL")
            .unwrap();
        let key = from.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((key.name.as_str(), key.key.as_str()), ("shared-pg", "dsn"));
    }

    #[test]
    fn images_and_pull_policy_come_from_the_spec_or_the_defaults() {
        let rx = experiment(
            "  load: {ratePerSecond: 5, durationSeconds: 10}\n  images: {labService: 'localhost/relab/lab-service:dev', pullPolicy: Never}\n",
        );
        let defaults = LabDefaults {
            postgres_image: "localhost/relab/postgres:dev".into(),
            ..LabDefaults::default()
        };
        let w = workloads(&rx, &v(&rx), &ips(true), &defaults);
        let d = |suffix: &str| -> Deployment {
            serde_json::from_value(w.iter().find(|c| c.name.ends_with(suffix)).unwrap().body.clone()).unwrap()
        };
        let api = container(&d("-order-service"), "api").clone();
        assert_eq!(api.image.as_deref(), Some("localhost/relab/lab-service:dev"));
        assert_eq!(api.image_pull_policy.as_deref(), Some("Never"));
        let pg = container(&d("-postgres"), "postgres").clone();
        assert_eq!(pg.image.as_deref(), Some("localhost/relab/postgres:dev"));
    }

    #[test]
    fn service_ips_come_from_the_applied_services_by_name() {
        let rx = experiment("  load: {ratePerSecond: 5, durationSeconds: 10}\n");
        let names = Names::new(&rx);
        let applied = |name: String, ip: &str| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": name },
                "spec": { "clusterIP": ip },
            }))
            .unwrap()
        };
        let all = [
            applied(names.postgres(), "10.0.0.10"),
            applied(names.payment_mock(), "10.0.0.11"),
            applied(names.order_service(), "10.0.0.12"),
        ];
        assert_eq!(ServiceIps::from_applied(&names, &all).unwrap(), ips(true));
        let pending = [applied(names.payment_mock(), "")];
        let e = ServiceIps::from_applied(&names, &pending).unwrap_err();
        assert!(e.contains("drill-r3-payment-mock"), "{e}");
    }

    #[test]
    fn building_twice_gives_the_same_objects() {
        let rx = experiment("  load: {ratePerSecond: 5, durationSeconds: 10}\n");
        let d = LabDefaults::default();
        assert_eq!(services(&rx), services(&rx));
        assert_eq!(
            workloads(&rx, &v(&rx), &ips(true), &d),
            workloads(&rx, &v(&rx), &ips(true), &d)
        );
    }
}

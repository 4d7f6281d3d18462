use super::*;
use crate::crd::ReliabilityExperiment;
use crate::crd::{resource, validated};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::DynamicObject;
use relab_model::validate::parse_manifest;
use serde_json::json;
use std::collections::BTreeMap;

fn v(rx: &ReliabilityExperiment) -> ValidatedExperiment {
    validated(rx).expect("a valid experiment")
}

fn owner(rx: &ReliabilityExperiment) -> Owner {
    Owner::of(rx)
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
        db_proxy: None,
        payment_mock: "10.0.0.11".into(),
        order_service: "10.0.0.12".into(),
        loadgen: None,
        workers: None,
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
    let mut all = services(&owner(&rx), &v(&rx));
    all.extend(workloads(&owner(&rx), &v(&rx), &ips(true), &LabDefaults::default()));
    assert_eq!(
        all.len(),
        3 + 6,
        "3 Services, the ConfigMap, the ledger claim, 3 Deployments, the Job"
    );
    for child in &all {
        let meta: kube::api::ObjectMeta = serde_json::from_value(child.body["metadata"].clone()).expect("object meta");
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
            Kind::PersistentVolumeClaim => drop(
                serde_json::from_value::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(child.body.clone())
                    .expect("PersistentVolumeClaim"),
            ),
            Kind::Deployment => drop(serde_json::from_value::<Deployment>(child.body.clone()).expect("Deployment")),
            Kind::Job => drop(serde_json::from_value::<Job>(child.body.clone()).expect("Job")),
        }
    }
}

#[test]
fn pods_are_hardened_with_probes_and_resources() {
    let rx = experiment("  load: {ratePerSecond: 5, durationSeconds: 10}\n");
    for child in workloads(&owner(&rx), &v(&rx), &ips(true), &LabDefaults::default()) {
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
    // each process finds its own listen address (on every interface) in the one map
    assert_eq!(env["RELAB_API_LISTEN"], "0.0.0.0:8080");
    assert_eq!(env["RELAB_ADMIN_LISTEN"], "0.0.0.0:9090");
    assert_eq!(env["RELAB_MOCK_LISTEN"], "0.0.0.0:8081");
    assert_eq!(
        env["RELAB_METRICS_URLS"],
        "http://10.0.0.12:8080/metrics,http://10.0.0.12:9090/metrics"
    );
}

#[test]
fn the_load_generator_writes_its_results_where_the_kubelet_reads_the_termination_message() {
    let rx = experiment("  load: {ratePerSecond: 5, durationSeconds: 10}\n");
    let env = lab_environment(&v(&rx), &ips(true), &LabDefaults::default());
    let job = workloads(&owner(&rx), &v(&rx), &ips(true), &LabDefaults::default())
        .into_iter()
        .find(|c| c.kind == Kind::Job)
        .unwrap();
    let job: Job = serde_json::from_value(job.body).unwrap();
    let pod = job.spec.unwrap().template.spec.unwrap();
    let loadgen = &pod.containers[0];
    assert_eq!(
        loadgen.termination_message_path.as_deref(),
        Some(env["RELAB_TERMINATION_LOG"].as_str())
    );
    assert_eq!(loadgen.termination_message_policy.as_deref(), Some("File"));
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
}

#[test]
fn an_external_database_comes_from_its_secret_and_has_no_postgres() {
    let rx = experiment(
        "  load: {ratePerSecond: 5, durationSeconds: 10}\n  database: {external: {secretName: shared-pg, secretKey: dsn}}\n",
    );
    let svcs = services(&owner(&rx), &v(&rx));
    assert!(svcs.iter().all(|c| !c.name.ends_with("-postgres")));
    let w = workloads(&owner(&rx), &v(&rx), &ips(false), &LabDefaults::default());
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
    let w = workloads(&owner(&rx), &v(&rx), &ips(true), &defaults);
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
    let with_workers = [
        applied(names.order_service(), "10.0.0.12"),
        applied(names.workers(), "10.0.0.14"),
        applied(names.payment_mock(), "10.0.0.11"),
    ];
    let found = ServiceIps::from_applied(&names, &with_workers).unwrap();
    assert_eq!(
        (found.order_service.as_str(), found.workers.as_deref()),
        ("10.0.0.12", Some("10.0.0.14"))
    );
    assert_eq!(found.worker_metrics(), "10.0.0.14");
    assert_eq!(ips(true).worker_metrics(), "10.0.0.12");
    let pending = [applied(names.payment_mock(), "")];
    let e = ServiceIps::from_applied(&names, &pending).unwrap_err();
    assert!(e.contains("drill-r3-payment-mock"), "{e}");
}

#[test]
fn building_twice_gives_the_same_objects() {
    let rx = experiment("  load: {ratePerSecond: 5, durationSeconds: 10}\n");
    let d = LabDefaults::default();
    assert_eq!(services(&owner(&rx), &v(&rx)), services(&owner(&rx), &v(&rx)));
    assert_eq!(
        workloads(&owner(&rx), &v(&rx), &ips(true), &d),
        workloads(&owner(&rx), &v(&rx), &ips(true), &d)
    );
}

/// The fixtures of the golden files: a managed database with stages,
/// a fault schedule and two replicas; an external database and own images;
/// database disruptions (the fault proxy in the order service's path).
const GOLDEN: [(&str, &str, bool); 4] = [
    (
        "managed",
        "  load: {stages: [{ratePerSecond: 5, durationSeconds: 10}, {ratePerSecond: 20, durationSeconds: 5}], maxInFlight: 64, drainTimeoutSeconds: 45}\n  payment:\n    seed: 9\n    failureRate: 0.3\n    faultsSchedule: [{name: outage, startSeconds: 2, endSeconds: 8, failureRate: 1.0}]\n  orderService:\n    replicas: 2\n    workers: 3\n    circuitBreaker: {failureThreshold: 7, openTimeoutMs: 1500}\n",
        true,
    ),
    (
        "external",
        "  load: {ratePerSecond: 5, durationSeconds: 10}\n  database: {external: {secretName: shared-pg, secretKey: dsn}}\n  images: {labService: 'localhost/relab/lab-service:dev', pullPolicy: Never}\n",
        false,
    ),
    ("database-disruptions", DISRUPTIONS, true),
    ("worker-replicas", WORKER_REPLICAS, true),
];

/// Workers apart from the API, each side with its own pool.
const WORKER_REPLICAS: &str = "  load: {ratePerSecond: 5, durationSeconds: 10}\n  orderService:\n    replicas: 2\n    workerReplicas: 3\n    workers: 12\n    databasePool: {api: 8, workers: 20}\n";

/// A database latency window and a worker kill.
const DISRUPTIONS: &str = "  load: {ratePerSecond: 5, durationSeconds: 30}\n  disruptions:\n    - {name: db-slow, atSeconds: 5, action: DatabaseLatency, addedMs: 200, durationSeconds: 5}\n    - {name: crash-workers, atSeconds: 12, action: KillWorkers, fraction: 0.5}\n";

/// The Service IPs of `rx`'s run (the proxy's and the workers' when it has them).
fn ips_of(rx: &ReliabilityExperiment, pg: bool) -> ServiceIps {
    ServiceIps {
        db_proxy: db_proxy::needed(&v(rx)).then(|| "10.0.0.13".to_string()),
        loadgen: (v(rx).spec().load.generators() > 1).then(|| "10.0.0.15".to_string()),
        workers: v(rx)
            .spec()
            .order_service
            .separate_workers()
            .then(|| "10.0.0.14".to_string()),
        ..ips(pg)
    }
}

fn env_of(c: &Container) -> BTreeMap<String, String> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn worker_replicas_run_the_workers_in_a_deployment_of_their_own() {
    let rx = experiment(WORKER_REPLICAS);
    let ips = ips_of(&rx, true);
    let svcs = services(&owner(&rx), &v(&rx));
    let workers_svc = svcs
        .iter()
        .find(|c| c.name == "drill-r3-workers")
        .expect("the workers' Service");
    assert_eq!(workers_svc.body["spec"]["selector"][LABEL_COMPONENT], WORKERS);
    assert_eq!(workers_svc.body["spec"]["ports"][0]["name"], "worker-metrics");
    let all = workloads(&owner(&rx), &v(&rx), &ips, &LabDefaults::default());
    let deployment = |name: &str| -> Deployment {
        serde_json::from_value(all.iter().find(|c| c.name == name).unwrap().body.clone()).unwrap()
    };
    let order = deployment("drill-r3-order-service");
    let pod = order.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let names: Vec<_> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["api"], "the API alone");
    assert_eq!(order.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(env_of(container(&order, "api"))["RELAB_DATABASE_MAX_CONNECTIONS"], "8");

    let workers = deployment("drill-r3-workers");
    let spec = workers.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    assert_eq!(labels[LABEL_COMPONENT], "workers");
    assert_eq!(spec.selector.match_labels.as_ref().unwrap()[LABEL_COMPONENT], "workers");
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.containers.len(), 1);
    let worker = container(&workers, "worker");
    assert_eq!(worker.args, Some(vec!["worker".to_string()]));
    let port = &worker.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("worker-metrics"), WORKER_ADMIN_PORT)
    );
    assert_eq!(env_of(worker)["RELAB_DATABASE_MAX_CONNECTIONS"], "20");

    // the sampler reads the workers' metrics through their Service; Postgres
    // takes every pool: 2 APIs x 8 + 3 workers x 20 + 20
    let env = lab_environment(&v(&rx), &ips, &LabDefaults::default());
    assert_eq!(
        env["RELAB_METRICS_URLS"],
        "http://10.0.0.12:8080/metrics,http://10.0.0.14:9090/metrics"
    );
    assert!(
        !env.contains_key("RELAB_DATABASE_MAX_CONNECTIONS"),
        "each container's own"
    );
    let postgres = deployment("drill-r3-postgres");
    let args = container(&postgres, "postgres").args.clone().unwrap().join(" ");
    assert!(args.contains("max_connections=96"), "{args}");
}

#[test]
fn without_worker_replicas_each_order_service_pod_runs_the_api_and_the_workers_with_their_own_pools() {
    let rx = experiment("  load: {ratePerSecond: 5, durationSeconds: 10}\n  orderService: {workers: 30}\n");
    assert!(services(&owner(&rx), &v(&rx))
        .iter()
        .all(|c| !c.name.ends_with("-workers")));
    let all = workloads(&owner(&rx), &v(&rx), &ips(true), &LabDefaults::default());
    assert!(all.iter().all(|c| !c.name.ends_with("-workers")));
    let order: Deployment = serde_json::from_value(
        all.iter()
            .find(|c| c.name == "drill-r3-order-service")
            .unwrap()
            .body
            .clone(),
    )
    .unwrap();
    assert_eq!(env_of(container(&order, "api"))["RELAB_DATABASE_MAX_CONNECTIONS"], "16");
    assert_eq!(
        env_of(container(&order, "worker"))["RELAB_DATABASE_MAX_CONNECTIONS"],
        "38",
        "workers + 8"
    );
}

#[test]
fn a_database_disruption_puts_the_fault_proxy_in_the_order_services_path_only() {
    let rx = experiment(DISRUPTIONS);
    let names = services(&owner(&rx), &v(&rx))
        .into_iter()
        .map(|c| c.name)
        .collect::<Vec<_>>();
    assert!(names.contains(&"drill-r3-db-proxy".to_string()), "{names:?}");
    let ips = ips_of(&rx, true);
    let all = workloads(&owner(&rx), &v(&rx), &ips, &LabDefaults::default());
    let proxy = all
        .iter()
        .find(|c| c.name == "drill-r3-db-proxy")
        .expect("the proxy's Deployment");
    assert_eq!(proxy.kind, Kind::Deployment);
    let proxy: Deployment = serde_json::from_value(proxy.body.clone()).unwrap();
    assert_eq!(container(&proxy, "db-proxy").args, Some(vec!["db-proxy".to_string()]));
    let env = lab_environment(&v(&rx), &ips, &LabDefaults::default());
    // the load generator (and the audit) stay direct; it drives the proxy's admin
    assert_eq!(env["RELAB_DATABASE_URL"], "postgres://postgres@10.0.0.10:5432/relab");
    assert_eq!(
        env["RELAB_DB_PROXY_URL"],
        format!("http://10.0.0.13:{DB_PROXY_ADMIN_PORT}")
    );
    assert_eq!(env["RELAB_DB_PROXY_UPSTREAM"], "10.0.0.10:5432");
    assert_eq!(env["RELAB_DB_PROXY_LISTEN"], "0.0.0.0:5432");
    assert_eq!(
        env["RELAB_DB_PROXY_ADMIN_LISTEN"],
        format!("0.0.0.0:{DB_PROXY_ADMIN_PORT}")
    );
    // the order service (API and workers) goes through the proxy
    let order: Deployment = serde_json::from_value(
        all.iter()
            .find(|c| c.name == "drill-r3-order-service")
            .unwrap()
            .body
            .clone(),
    )
    .unwrap();
    for name in ["api", "worker"] {
        let env = container(&order, name).env.clone().expect("its own database URL");
        assert_eq!(env[0].name, "RELAB_DATABASE_URL");
        assert_eq!(
            env[0].value.as_deref(),
            Some("postgres://postgres@10.0.0.13:5432/relab")
        );
    }
    // no database disruption: no proxy anywhere
    let rx = experiment("  load: {ratePerSecond: 5, durationSeconds: 30}\n  disruptions:\n    - {name: crash, atSeconds: 5, action: KillOrderService}\n");
    assert!(!db_proxy::needed(&v(&rx)));
    assert!(services(&owner(&rx), &v(&rx))
        .iter()
        .all(|c| !c.name.contains("db-proxy")));
    let env = lab_environment(&v(&rx), &ips_of(&rx, true), &LabDefaults::default());
    assert!(!env.contains_key("RELAB_DB_PROXY_URL") && !env.contains_key("RELAB_DB_PROXY_UPSTREAM"));
}

/// Every child of a run as applied, but the lab's environment (the
/// ConfigMap's data, which follows lab-service's settings and is checked
/// above), compared with `golden/<name>.json`. The golden files were taken
/// from the `json!` builders these typed ones replaced (equal after
/// dropping empty lists; the listen addresses moved from the containers'
/// `env` into the ConfigMap). After a deliberate change, regenerate with
/// `RELAB_BLESS=1 cargo test -p relab-operator --lib golden` and review the diff.
#[test]
fn the_children_match_the_golden_files() {
    for (name, yaml, managed) in GOLDEN {
        let rx = experiment(yaml);
        let mut all = services(&owner(&rx), &v(&rx));
        all.extend(workloads(
            &owner(&rx),
            &v(&rx),
            &ips_of(&rx, managed),
            &LabDefaults::default(),
        ));
        let mut bodies: Vec<serde_json::Value> = all.into_iter().map(|c| c.body).collect();
        let config = bodies
            .iter_mut()
            .find(|b| b["metadata"]["name"] == "drill-r3-config")
            .expect("the lab's ConfigMap");
        config["data"] = json!("<the lab's environment>");
        let built = serde_json::to_string_pretty(&bodies).unwrap() + "\n";
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("src/controller/build/golden/{name}.json"));
        if std::env::var_os("RELAB_BLESS").is_some() {
            std::fs::write(&path, &built).unwrap();
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            golden == built,
            "{name}: the children differ from {} (RELAB_BLESS=1 rewrites it; review the diff):\n{built}",
            path.display()
        );
    }
}

#[test]
fn the_ledger_lives_on_a_claim_of_its_own_unless_the_operator_says_empty_dir() {
    let rx = experiment("  load: {ratePerSecond: 5, durationSeconds: 10}\n");
    let find = |children: &[Child], kind: Kind| children.iter().find(|c| c.kind == kind).cloned();
    let mock = |children: &[Child]| {
        children
            .iter()
            .find(|c| c.name == "drill-r3-payment-mock")
            .expect("the mock's Deployment")
            .body["spec"]["template"]["spec"]
            .clone()
    };
    let defaults = LabDefaults {
        ledger_volume: LedgerVolume::Claim {
            storage_class: Some("fast".into()),
            size: "128Mi".into(),
        },
        ..LabDefaults::default()
    };
    let with = workloads(&owner(&rx), &v(&rx), &ips(true), &defaults);
    let claim = find(&with, Kind::PersistentVolumeClaim).expect("a claim");
    assert_eq!(claim.name, "drill-r3-payment-ledger");
    assert_eq!(claim.body["spec"]["storageClassName"], "fast");
    assert_eq!(claim.body["spec"]["resources"]["requests"]["storage"], "128Mi");
    assert_eq!(claim.body["spec"]["accessModes"], serde_json::json!(["ReadWriteOnce"]));
    let pod = mock(&with);
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "drill-r3-payment-ledger"
    );
    assert_eq!(pod["securityContext"]["fsGroup"], pod::LAB_USER);
    let without = workloads(
        &owner(&rx),
        &v(&rx),
        &ips(true),
        &LabDefaults {
            ledger_volume: LedgerVolume::EmptyDir,
            ..LabDefaults::default()
        },
    );
    assert!(find(&without, Kind::PersistentVolumeClaim).is_none());
    assert!(mock(&without)["volumes"][0]["emptyDir"].is_object());
}

#[test]
fn parallel_load_generators_get_a_service_to_join_the_first_and_a_job_of_followers() {
    let rx = experiment("  load: {ratePerSecond: 30, durationSeconds: 10, parallelism: 3}\n");
    let owner = owner(&rx);
    let applied = services(&owner, &v(&rx));
    let loadgen = applied
        .iter()
        .find(|c| c.name == owner.names.loadgen())
        .expect("the first load generator's Service");
    assert_eq!(loadgen.body["spec"]["selector"]["relab.dev/component"], "loadgen");
    assert_eq!(loadgen.body["spec"]["ports"][0]["port"], 9091);

    let children = workloads(&owner, &v(&rx), &ips_of(&rx, true), &LabDefaults::default());
    let shares = children
        .iter()
        .find(|c| c.name == owner.names.loadgen_shares())
        .expect("the followers' Job");
    let spec = &shares.body["spec"];
    assert_eq!(
        (spec["parallelism"].as_i64(), spec["completions"].as_i64()),
        (Some(2), Some(2))
    );
    assert_eq!(spec["backoffLimit"], 0, "a share sent twice would be two loads");
    let pod = &spec["template"];
    assert_eq!(
        pod["metadata"]["labels"]["relab.dev/component"], "loadgen-share",
        "not the first's pods"
    );
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "RELAB_LOAD_LEADER_URL" && e["value"] == "http://10.0.0.15:9091"),
        "{env:?}"
    );
    // the first one leads: it waits for two to join
    let config = children.iter().find(|c| c.name == owner.names.config()).unwrap();
    assert_eq!(config.body["data"]["RELAB_LOAD_PARALLELISM"], "3");

    // one generator: neither the Service nor the Job
    let one = experiment("  load: {ratePerSecond: 30, durationSeconds: 10}\n");
    let owner = self::owner(&one);
    assert!(services(&owner, &v(&one))
        .iter()
        .all(|c| c.name != owner.names.loadgen()));
    assert!(
        workloads(&owner, &v(&one), &ips_of(&one, true), &LabDefaults::default())
            .iter()
            .all(|c| c.name != owner.names.loadgen_shares())
    );
}

//! The Helm chart (charts/relab) with Debian-free helm v4 (`scripts/tools.sh`)
//! against the real API server of `scripts/k8s/control-plane.sh`: lint,
//! schema errors, install in both RBAC modes and uninstall. The operator's
//! run under exactly the chart's RBAC is in tests/controller.rs
//! (`the_operator_reconciles_a_whole_run_with_only_the_charts_rbac`).

#[path = "../../operator/tests/common/mod.rs"]
mod common;

use common::{apply_crd, chart_dir, client, helm, CRD_NAME};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;

fn chart() -> String {
    chart_dir().to_string_lossy().into_owned()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

#[test]
fn the_chart_lints_strictly_and_its_crd_and_monitoring_files_are_the_generated_ones() {
    let (ok, out, err) = helm(&["lint", "--strict", &chart()]);
    assert!(ok, "helm lint --strict failed:\n{out}{err}");
    let crd = std::fs::read_to_string(chart_dir().join("crds/reliabilityexperiments.relab.dev.yaml")).unwrap();
    let generated = relab_operator::crdgen::crd_yaml();
    if crd != generated {
        let _ = std::fs::write(std::env::temp_dir().join("relab-generated-crd.yaml"), &generated);
    }
    assert!(
        crd == generated,
        "charts/relab/crds/ is stale: run `cargo run -p relab-operator --bin relab -- crd --write .`"
    );
}

#[test]
fn bad_values_fail_at_install_with_the_schemas_message() {
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["--set", "watchScope=everywhere"],
            &["/watchScope", "namespace", "cluster"],
        ),
        (&["--set", "replicaCount=0"], &["/replicaCount", "minimum"]),
        (&["--set", "image.pullPolicy=Sometimes"], &["/image/pullPolicy"]),
        (&["--set", "metrics.port=http"], &["/metrics/port", "integer"]),
        (&["--set", "dashbords.enabled=false"], &["dashbords", "not allowed"]),
    ];
    let chart = chart();
    for (set, want) in cases {
        let mut args = vec!["template", "bad", chart.as_str()];
        args.extend_from_slice(set);
        let (ok, out, err) = helm(&args);
        assert!(!ok, "{set:?} was accepted:\n{out}");
        for w in want {
            assert!(err.contains(w), "{set:?}: the error does not say {w:?}:\n{err}");
        }
    }
}

async fn create_namespace(client: &Client, ns: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut object = Namespace::default();
    object.metadata.name = Some(ns.into());
    api.create(&Default::default(), &object).await.expect("namespace");
}

async fn names<K>(api: Api<K>, selector: &str) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut v: Vec<String> = api
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list")
        .items
        .iter()
        .map(|o| o.name_any())
        .collect();
    v.sort();
    v
}

fn args_of(deployment: &Deployment) -> Vec<String> {
    deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap_or_default()
}

/// Install, check every object, uninstall, check nothing is left.
async fn install_and_check(scope: &str, replicas: u32) {
    let client = client().await;
    apply_crd(&client).await; // helm keeps an existing CRD (crds/ is install-only)
    let ns = unique("relab-chart");
    let release = unique("rel");
    create_namespace(&client, &ns).await;
    let replicas_arg = format!("replicaCount={replicas}");
    let (ok, out, err) = helm(&[
        "install",
        &release,
        &chart(),
        "--namespace",
        &ns,
        "--set",
        &format!("watchScope={scope}"),
        "--set",
        &replicas_arg,
        "--set",
        "image.repository=localhost/relab-operator",
        "--set",
        "image.tag=dev",
        "--set",
        "dashboards.annotations.grafana_folder=relab",
    ]);
    assert!(ok, "helm install ({scope}):\n{out}{err}");
    assert!(
        out.contains("kubectl apply -n"),
        "NOTES tell what to apply next:\n{out}"
    );
    let full = format!("{release}-relab");
    let selector = format!("app.kubernetes.io/instance={release}");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = deployments.get(&full).await.expect("the operator Deployment");
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(replicas as i32));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(full.as_str()));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("localhost/relab-operator:dev"));
    assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some() && c.resources.is_some());
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
    let args = args_of(&d);
    match scope {
        "cluster" => assert!(args.contains(&"--all-namespaces".to_string()), "{args:?}"),
        _ => assert!(args.contains(&format!("--namespace={ns}")), "{args:?}"),
    }
    assert_eq!(
        args.contains(&"--leader-elect".to_string()),
        replicas > 1,
        "leader election exactly when replicas > 1: {args:?}"
    );
    assert!(
        args.contains(&"--dashboard-label=grafana_dashboard=1".to_string()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--dashboard-annotation=grafana_folder=relab".to_string()),
        "{args:?}"
    );
    // every flag the chart passes is one the operator accepts
    let check = std::process::Command::new(relab_packaging::workspace_bin("relab"))
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "relab {args:?}: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    assert_eq!(
        names(Api::<ServiceAccount>::namespaced(client.clone(), &ns), &selector).await,
        vec![full.clone()]
    );
    assert_eq!(
        names(Api::<Service>::namespaced(client.clone(), &ns), &selector).await,
        vec![format!("{full}-metrics")]
    );
    let boards = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get(&format!("{full}-overview-dashboard"))
        .await
        .expect("the overview dashboard ConfigMap");
    assert_eq!(boards.labels().get("grafana_dashboard").map(String::as_str), Some("1"));
    let json: serde_json::Value =
        serde_json::from_str(&boards.data.unwrap()["relab-overview.json"]).expect("dashboard JSON");
    assert_eq!(json["uid"], "relab-overview");

    let roles = names(Api::<Role>::namespaced(client.clone(), &ns), &selector).await;
    let bindings = names(Api::<RoleBinding>::namespaced(client.clone(), &ns), &selector).await;
    let cluster_roles = names(Api::<ClusterRole>::all(client.clone()), &selector).await;
    let cluster_bindings = names(Api::<ClusterRoleBinding>::all(client.clone()), &selector).await;
    let election = format!("{full}-leader-election");
    let mut want_roles = match scope {
        "cluster" => vec![],
        _ => vec![full.clone()],
    };
    if replicas > 1 {
        want_roles.push(election.clone());
    }
    want_roles.sort();
    assert_eq!(roles, want_roles);
    assert_eq!(bindings, want_roles);
    let want_cluster = if scope == "cluster" { vec![full.clone()] } else { vec![] };
    assert_eq!(cluster_roles, want_cluster);
    assert_eq!(cluster_bindings, want_cluster);
    // least privilege: no wildcard, no secrets
    let rules = match scope {
        "cluster" => Api::<ClusterRole>::all(client.clone()).get(&full).await.unwrap().rules,
        _ => {
            Api::<Role>::namespaced(client.clone(), &ns)
                .get(&full)
                .await
                .unwrap()
                .rules
        }
    }
    .unwrap();
    let granted: BTreeMap<String, Vec<String>> = rules
        .iter()
        .flat_map(|r| {
            r.resources
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(move |res| (res, r.verbs.clone()))
        })
        .collect();
    // secrets: get only, for spec.notify's webhook URL (never list or watch:
    // the operator cannot enumerate them)
    assert_eq!(granted.get("secrets"), Some(&vec!["get".to_string()]), "{granted:?}");
    // spec.disruptions: pods deleted (kills) and the kills reported to the
    // load generator through the pod proxy (POST = create); namespaced only
    let verbs = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        granted.get("pods").cloned(),
        verbs(&["get", "list", "watch", "delete"]),
        "{granted:?}"
    );
    assert_eq!(
        granted.get("pods/proxy").cloned(),
        verbs(&["get", "create"]),
        "{granted:?}"
    );
    assert_eq!(granted.get("services/proxy").cloned(), verbs(&["get"]), "{granted:?}");
    for cluster_wide in ["nodes", "namespaces", "pods/exec", "pods/eviction"] {
        assert!(!granted.contains_key(cluster_wide), "{cluster_wide}: {granted:?}");
    }
    assert!(!rules.iter().any(|r| r.verbs.contains(&"*".into())), "{rules:?}");
    assert!(
        !rules
            .iter()
            .any(|r| r.resources.as_ref().is_some_and(|v| v.contains(&"*".into()))),
        "{rules:?}"
    );

    let (ok, out, err) = helm(&["uninstall", &release, "--namespace", &ns, "--wait", "--timeout", "60s"]);
    assert!(ok, "helm uninstall:\n{out}{err}");
    assert!(names(Api::<Deployment>::namespaced(client.clone(), &ns), &selector)
        .await
        .is_empty());
    assert!(names(Api::<Role>::namespaced(client.clone(), &ns), &selector)
        .await
        .is_empty());
    assert!(names(Api::<ClusterRole>::all(client.clone()), &selector)
        .await
        .is_empty());
    assert!(names(Api::<ConfigMap>::namespaced(client.clone(), &ns), &selector)
        .await
        .is_empty());
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    assert!(
        crds.get_opt(CRD_NAME).await.unwrap().is_some(),
        "helm keeps CRDs (and the experiments) on uninstall"
    );
    Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await
        .ok();
}

#[tokio::test]
async fn the_chart_installs_in_namespace_mode_with_a_role_and_uninstalls_cleanly() {
    install_and_check("namespace", 1).await;
}

#[tokio::test]
async fn the_chart_installs_in_cluster_mode_with_a_cluster_role_and_leader_election() {
    install_and_check("cluster", 2).await;
}

//! The controller against a real Kubernetes API server (and
//! kube-controller-manager, which turns Deployments and Jobs into pods and
//! garbage-collects): `scripts/k8s/control-plane.sh start`, as in
//! `tests/apiserver.rs`. Each test has a namespace of its own and an operator
//! of its own watching only that namespace.
//!
//! There is no kubelet, so pods stay Pending. To complete a run the test
//! plays the kubelet for the load generator's pod only: it marks the pod
//! running, then terminated with a termination message produced by a real
//! local run of the same spec (`relab run`'s engine against the test
//! Postgres). The operator must then write those results and the verdict
//! `relab run` gave.

mod common;

use common::{client, example, in_namespace, operator_metric, operator_ready};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Client, Resource, ResourceExt};
use relab_model::status::get_condition;
use relab_operator::controller::{self, children::LabDefaults, Options, StartError};
use relab_operator::crd::{Phase, ReliabilityExperiment};
use relab_operator::runner::{self, LocalRun, RunOptions};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const LAB_IMAGE: &str = "localhost/relab/lab-service:test";

/// Evaluate `$probe` (an expression that may `.await`) until it is `Some`.
macro_rules! eventually {
    ($secs:expr, $what:expr, $probe:expr) => {{
        let deadline = tokio::time::Instant::now() + Duration::from_secs($secs);
        loop {
            if let Some(v) = $probe {
                break v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not within {} s: {}",
                $secs,
                $what
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }};
}

/// An operator watching one namespace, in this process.
struct Operator {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    metrics: SocketAddr,
}

impl Operator {
    async fn start(client: &Client, ns: &str) -> Self {
        Self::start_with(client, ns, controller::Clock::system()).await
    }

    async fn start_with(client: &Client, ns: &str, clock: controller::Clock) -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            // the operator's own logs, when asked for (they would drown the test output)
            lab_service::telemetry::init(lab_service::telemetry::LogFormat::Text);
        }
        let stop = CancellationToken::new();
        let options = Options {
            namespace: Some(ns.to_string()),
            defaults: LabDefaults {
                lab_image: LAB_IMAGE.into(),
                pull_policy: "Never".into(),
                ..LabDefaults::default()
            },
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            poll_interval: Duration::from_secs(1),
            read_progress: true,
            instance: format!("test-{ns}"),
            dashboards: Some(Default::default()),
            clock,
            max_concurrent_reconciles: controller::DEFAULT_CONCURRENT_RECONCILES,
        };
        let running = controller::start(client.clone(), options, stop.clone())
            .await
            .expect("the operator starts");
        let metrics = running.metrics_addr.expect("metrics server");
        operator_ready(metrics, 20).await;
        Self {
            stop,
            task: running.task,
            metrics,
        }
    }

    /// A hard stop at whatever await point the controller is (like SIGKILL).
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        self.stop.cancel();
    }

    async fn metric(&self, name_and_labels: &str) -> f64 {
        operator_metric(self.metrics, name_and_labels)
            .await
            .unwrap_or_else(|| panic!("{name_and_labels} not in the operator's metrics"))
    }
}

fn admin_url() -> String {
    std::env::var("RELAB_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// An example, shortened (the same spec goes to the cluster and to the local run).
fn shortened(file: &str, scale: f64, name: &str) -> ReliabilityExperiment {
    let mut rx = example(file);
    common::shorten(&mut rx.spec, scale);
    rx.metadata.name = Some(name.into());
    rx
}

/// A real local run of `rx`'s spec: the source of the termination message.
async fn local_run(rx: &ReliabilityExperiment) -> LocalRun {
    let opts = RunOptions {
        database_url: Some(admin_url()),
        ..RunOptions::default()
    };
    let (tx, _rx) = tokio::sync::watch::channel(Default::default());
    let experiment = relab_operator::crd::validated(rx).expect("a valid experiment");
    runner::run_local(&experiment, &opts, tx, CancellationToken::new())
        .await
        .expect("the local run finishes")
}

/// [`local_run`] in the background, while the test sets up the cluster side.
fn spawn_local_run(rx: &ReliabilityExperiment) -> tokio::task::JoinHandle<LocalRun> {
    let rx = rx.clone();
    tokio::spawn(async move { local_run(&rx).await })
}

fn message_of(run: &LocalRun) -> String {
    lab_service::run::termination_message(run.status.results.as_ref().expect("results"))
}

/// Poll `name` until `pred` holds; panics with the last status after `secs`.
async fn wait_for(
    api: &Api<ReliabilityExperiment>,
    name: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&ReliabilityExperiment) -> bool,
) -> ReliabilityExperiment {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let rx = api.get(name).await.expect("read the experiment");
        if pred(&rx) {
            return rx;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{name}: not {what} within {secs} s; status:\n{}",
                serde_yaml::to_string(&rx.status).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn phase(rx: &ReliabilityExperiment) -> Phase {
    rx.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

async fn labelled<K>(client: &Client, ns: &str, selector: &str) -> Vec<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list")
        .items
}

/// The load generator's pod of `generation`, once the Job controller made it.
async fn loadgen_pod(client: &Client, ns: &str, name: &str, generation: i64) -> Pod {
    loadgen_pod_of(client, ns, name, &generation.to_string()).await
}

/// The load generator's pod of the run labelled `run` (`3`, or `3-1` for lab
/// run 1 of a comparison).
async fn loadgen_pod_of(client: &Client, ns: &str, name: &str, run: &str) -> Pod {
    let selector = format!("relab.dev/experiment={name},relab.dev/run={run},relab.dev/component=loadgen");
    eventually!(30, "the Job controller creates the load generator's pod", {
        labelled::<Pod>(client, ns, &selector).await.into_iter().next()
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The kubelet's part: the load generator's container is running.
async fn kubelet_runs(client: &Client, ns: &str, pod: &Pod) {
    let t = now();
    let status = json!({ "status": {
        "phase": "Running",
        "startTime": t,
        "containerStatuses": [{
            "name": "loadgen", "ready": true, "started": true, "restartCount": 0,
            "image": LAB_IMAGE, "imageID": "",
            "state": { "running": { "startedAt": t } },
        }],
    }});
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status: running");
}

/// The kubelet's part: the container exited 0 with `message` in
/// /dev/termination-log.
async fn kubelet_terminates(client: &Client, ns: &str, pod: &Pod, message: &str) {
    let t = now();
    let status = json!({ "status": {
        "phase": "Succeeded",
        "containerStatuses": [{
            "name": "loadgen", "ready": false, "started": false, "restartCount": 0,
            "image": LAB_IMAGE, "imageID": "",
            "state": { "terminated": {
                "exitCode": 0, "reason": "Completed", "message": message,
                "startedAt": t, "finishedAt": t,
            } },
        }],
    }});
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status: terminated");
}

async fn event_reasons(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let events: Vec<Event> = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items;
    events
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

/// Results and verdict as the operator wrote them equal the local run's.
fn assert_same_outcome(rx: &ReliabilityExperiment, local: &LocalRun) {
    let status = rx.status.as_ref().expect("status");
    let sent: lab_service::summary::RunResults = serde_json::from_str(&message_of(local)).unwrap();
    assert_eq!(status.results.as_ref(), Some(&sent), "results as reported by the Job");
    let theirs = status.verdict.as_ref().expect("verdict");
    let ours = local.status.verdict.as_ref().unwrap();
    assert_eq!(theirs.result, ours.result, "overall verdict");
    let per = |v: &relab_operator::crd::Verdict| {
        v.objectives
            .iter()
            .map(|o| (o.name.clone(), o.passed))
            .collect::<Vec<_>>()
    };
    assert_eq!(per(theirs), per(ours), "per-objective verdict");
    assert_eq!(phase(rx), local.status.phase);
}

/// Play one whole run of generation `generation`: running, then terminated
/// with `message`; returns the finished experiment.
async fn complete_run(
    client: &Client,
    api: &Api<ReliabilityExperiment>,
    ns: &str,
    name: &str,
    generation: i64,
    message: &str,
) -> ReliabilityExperiment {
    complete_run_of(client, api, ns, name, &generation.to_string(), message).await
}

#[tokio::test]
async fn an_applied_experiment_gets_its_lab_then_the_results_and_verdict_of_its_job() {
    in_namespace(|client, ns| async move {
        let rx = shortened("flaky-payments.yaml", 0.1, "flaky");
        let local = spawn_local_run(&rx);
        let operator = Operator::start(&client, &ns).await;
        let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
        let created = api.create(&PostParams::default(), &rx).await.unwrap();
        let uid = created.uid().unwrap();
        wait_for(&api, "flaky", 30, "Provisioning", |rx| phase(rx) == Phase::Provisioning).await;

        // every child: owner, labels, settings
        let run = "relab.dev/experiment=flaky,relab.dev/run=1";
        let services: Vec<Service> = labelled(&client, &ns, run).await;
        let mut names: Vec<String> = services.iter().map(|s| s.name_any()).collect();
        names.sort();
        assert_eq!(
            names,
            ["flaky-r1-order-service", "flaky-r1-payment-mock", "flaky-r1-postgres"]
        );
        let deployments: Vec<Deployment> = labelled(&client, &ns, run).await;
        assert_eq!(deployments.len(), 3);
        let jobs: Vec<Job> = labelled(&client, &ns, run).await;
        assert_eq!(jobs.len(), 1);
        let configs: Vec<ConfigMap> = labelled(&client, &ns, run).await;
        assert_eq!(configs.len(), 1);
        let owned_by_it = |meta: &kube::api::ObjectMeta| {
            let o = &meta.owner_references.as_ref().expect("owner")[0];
            o.uid == uid && o.controller == Some(true) && o.kind == "ReliabilityExperiment"
        };
        assert!(services.iter().all(|o| owned_by_it(&o.metadata)));
        assert!(deployments.iter().all(|o| owned_by_it(&o.metadata)));
        assert!(jobs.iter().all(|o| owned_by_it(&o.metadata)));
        assert!(configs.iter().all(|o| owned_by_it(&o.metadata)));
        let data = configs[0].data.as_ref().unwrap();
        let breaker = &rx.spec.order_service.circuit_breaker;
        assert_eq!(
            data["RELAB_BREAKER_FAILURE_THRESHOLD"],
            breaker.failure_threshold.to_string()
        );
        assert_eq!(
            data["RELAB_RETRY_MAX_ATTEMPTS"],
            rx.spec.order_service.retry.max_attempts.to_string()
        );
        let mock_ip = services
            .iter()
            .find(|s| s.name_any() == "flaky-r1-payment-mock")
            .and_then(|s| s.spec.as_ref()?.cluster_ip.clone())
            .unwrap();
        assert_eq!(
            data["RELAB_PAYMENT_URL"],
            format!("http://{mock_ip}:8081"),
            "by ClusterIP, no DNS"
        );
        for d in &deployments {
            let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            for c in &pod.containers {
                let sc = c.security_context.as_ref().expect("security context");
                assert_eq!(sc.run_as_non_root, Some(true));
                assert_eq!(sc.read_only_root_filesystem, Some(true));
                assert_eq!(sc.allow_privilege_escalation, Some(false));
                assert!(c.readiness_probe.is_some() && c.resources.is_some(), "{}", c.name);
            }
        }
        // the controller-manager turns them into (Pending) pods
        for component in ["postgres", "payment-mock", "order-service", "loadgen"] {
            let sel = format!("{run},relab.dev/component={component}");
            let pods = eventually!(30, &format!("a {component} pod"), {
                let pods: Vec<Pod> = labelled(&client, &ns, &sel).await;
                (!pods.is_empty()).then_some(pods)
            });
            if component == "order-service" {
                let c = &pods[0].spec.as_ref().unwrap().containers;
                assert_eq!(c.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["api", "worker"]);
                assert_eq!(c[0].image.as_deref(), Some(LAB_IMAGE));
            }
        }

        // the kubelet's part, with a real run's results
        let local = local.await.unwrap();
        let pod = loadgen_pod(&client, &ns, "flaky", 1).await;
        kubelet_runs(&client, &ns, &pod).await;
        let running = wait_for(&api, "flaky", 30, "Running", |rx| phase(rx) == Phase::Running).await;
        let st = running.status.as_ref().unwrap();
        assert!(st.start_time.is_some() && st.progress.is_some(), "{st:?}");
        // Draining comes from the load generator's own stage, never the
        // clock: this pod (no kubelet, no IP) cannot be asked, so however long
        // past the load's length, the run is still Running (the e2e suite
        // sees Draining from a real load generator)
        let load = rx.spec.load.total_seconds();
        tokio::time::sleep(Duration::from_secs(load + 3)).await;
        let still = api.get("flaky").await.unwrap();
        assert_eq!(phase(&still), Phase::Running, "{:?}", still.status);
        kubelet_terminates(&client, &ns, &pod, &message_of(&local)).await;
        let done = wait_for(&api, "flaky", 30, "finished", |rx| phase(rx).is_finished()).await;
        assert_same_outcome(&done, &local);
        let st = done.status.as_ref().unwrap();
        assert_eq!(get_condition(&st.conditions, "Completed").unwrap().status, "True");
        assert_eq!(
            get_condition(&st.conditions, "Valid").unwrap().observed_generation,
            Some(1)
        );
        // its Grafana dashboard: named in the status, labelled for the
        // sidecar, owned by the experiment, covering the finished run
        assert_eq!(st.dashboard.as_deref(), Some("flaky-dashboard"));
        let board = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get("flaky-dashboard")
            .await
            .unwrap();
        assert_eq!(board.labels().get("grafana_dashboard").map(String::as_str), Some("1"));
        assert!(owned_by_it(&board.metadata));
        let json: serde_json::Value =
            serde_json::from_str(&board.data.as_ref().unwrap()[&format!("relab-{ns}-flaky.json")]).unwrap();
        assert_eq!(json["title"], format!("relab: {ns}/flaky"));
        assert_ne!(
            json["time"]["to"], "now",
            "a finished run's window is closed: {}",
            json["time"]
        );
        let text = reqwest::get(format!("http://{}/metrics", operator.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with("relab_experiment_objective_success_ratio{")
                    && l.contains(&format!("namespace=\"{ns}\""))
                    && l.contains("experiment=\"flaky\"")),
            "the objective the burn-rate rules divide by:\n{text}"
        );
        eprintln!(
            "operator verdict {:?} = relab run verdict {:?}",
            st.verdict.as_ref().unwrap().result,
            local.status.verdict.as_ref().unwrap().result
        );

        // an Event per phase change
        let reasons = eventually!(10, "every phase's event", {
            let r = event_reasons(&client, &ns, "flaky").await;
            ["RunStarted", "Provisioning", "Running", "Analyzing"]
                .iter()
                .all(|x| r.iter().any(|y| y == x))
                .then_some(r)
        });
        assert!(reasons.iter().any(|r| r == "Succeeded" || r == "Failed"), "{reasons:?}");

        // operator metrics
        assert!(operator.metric("relab_operator_reconciles_total").await >= 5.0);
        let finished_phase = format!("{:?}", done.status.as_ref().unwrap().phase);
        let gauge = format!("relab_operator_experiments{{phase=\"{finished_phase}\"}}");
        assert_eq!(operator.metric(&gauge).await, 1.0);

        // idempotent: a reconcile triggered by a metadata change changes nothing
        let children_versions = |d: &[Deployment]| d.iter().map(|d| d.resource_version().unwrap()).collect::<Vec<_>>();
        let before = children_versions(&labelled::<Deployment>(&client, &ns, run).await);
        let reconciles = operator.metric("relab_operator_reconciles_total").await;
        // (the experiment's own metadata does not wake it, nor a Job's
        // metadata or count of active pods, nor its Services, Deployments
        // and ConfigMaps, which are not watched; a change to its load
        // generator's pod does)
        Api::<Pod>::namespaced(client.clone(), &ns)
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"touched": "yes"}}})),
            )
            .await
            .unwrap();
        eventually!(10, "a reconcile after the touch", {
            (operator.metric("relab_operator_reconciles_total").await > reconciles).then_some(())
        });
        let after = api.get("flaky").await.unwrap();
        assert_eq!(after.status, done.status, "status unchanged");
        assert_eq!(
            children_versions(&labelled::<Deployment>(&client, &ns, run).await),
            before
        );
        operator.kill().await;
    })
    .await;
}

#[tokio::test]
async fn a_spec_change_starts_a_new_run_keeps_history_and_restarts_do_not_rerun() {
    in_namespace(|client, ns| async move {
        let rx = shortened("flaky-payments.yaml", 0.1, "gitops");
        let local = spawn_local_run(&rx);
        let operator = Operator::start(&client, &ns).await;
        let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &rx).await.unwrap();
        let local = local.await.unwrap();
        let first = complete_run(&client, &api, &ns, "gitops", 1, &message_of(&local)).await;
        assert_same_outcome(&first, &local);
        let first_status = first.status.clone().unwrap();

        // GitOps: a new runId is a new generation, so a new run
        api.patch(
            "gitops",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"runId": "second"}})),
        )
        .await
        .unwrap();
        let second = wait_for(&api, "gitops", 30, "a new run", |rx| {
            rx.status.as_ref().is_some_and(|s| s.observed_generation == Some(2))
        })
        .await;
        let st = second.status.as_ref().unwrap();
        assert!(st.results.is_none() && !st.phase.is_finished(), "{st:?}");
        assert_eq!(st.run_id.as_deref(), Some("second"));
        let h = &st.history[0];
        assert_eq!(h.generation, Some(1));
        assert_eq!(h.verdict, first_status.verdict.as_ref().unwrap().result);
        assert_eq!(
            h.orders_accepted,
            first_status.results.as_ref().unwrap().orders.accepted
        );
        // the first run's lab is gone, the second's is there
        eventually!(30, "run 1's children deleted", {
            let old: Vec<Deployment> = labelled(&client, &ns, "relab.dev/experiment=gitops,relab.dev/run=1").await;
            let jobs: Vec<Job> = labelled(&client, &ns, "relab.dev/experiment=gitops,relab.dev/run=1").await;
            (old.is_empty() && jobs.is_empty()).then_some(())
        });
        let new: Vec<Deployment> = labelled(&client, &ns, "relab.dev/experiment=gitops,relab.dev/run=2").await;
        assert_eq!(new.len(), 3);
        let done = complete_run(&client, &api, &ns, "gitops", 2, &message_of(&local)).await;
        let job_uid = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.uid().unwrap()).collect::<Vec<_>>();
        let jobs_before = job_uid(labelled(&client, &ns, "relab.dev/experiment=gitops").await);
        assert_eq!(jobs_before.len(), 1);
        let events_before = event_reasons(&client, &ns, "gitops").await.len();

        // a restart after completion (and the resync it brings) does not re-run
        operator.kill().await;
        let operator = Operator::start(&client, &ns).await;
        eventually!(10, "the new operator reconciled", {
            (operator.metric("relab_operator_reconciles_total").await >= 1.0).then_some(())
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = api.get("gitops").await.unwrap();
        assert_eq!(after.status, done.status, "status untouched by the restart");
        assert_eq!(
            job_uid(labelled(&client, &ns, "relab.dev/experiment=gitops").await),
            jobs_before
        );
        assert_eq!(
            event_reasons(&client, &ns, "gitops").await.len(),
            events_before,
            "no new events"
        );
        operator.kill().await;
    })
    .await;
}

#[tokio::test]
async fn an_operator_killed_mid_run_resumes_and_writes_the_results_once() {
    in_namespace(|client, ns| async move {
        let mut rx = common::example_variant("outage-drill.yaml", "no-breaker");
        common::shorten(&mut rx.spec, 0.15);
        rx.metadata.name = Some("resume".into());
        let local = spawn_local_run(&rx);
        let operator = Operator::start(&client, &ns).await;
        let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &rx).await.unwrap();
        let pod = loadgen_pod(&client, &ns, "resume", 1).await;
        kubelet_runs(&client, &ns, &pod).await;
        wait_for(&api, "resume", 30, "Running", |rx| phase(rx) == Phase::Running).await;
        operator.kill().await;
        let versions = async || {
            // the run's children (the dashboard is rewritten when the run finishes)
            let sel = "relab.dev/experiment=resume,relab.dev/component!=dashboard";
            let mut v: Vec<String> = labelled::<Deployment>(&client, &ns, sel)
                .await
                .iter()
                .map(|o| o.resource_version().unwrap())
                .collect();
            v.extend(
                labelled::<Service>(&client, &ns, sel)
                    .await
                    .iter()
                    .map(|o| o.resource_version().unwrap()),
            );
            v.extend(
                labelled::<ConfigMap>(&client, &ns, sel)
                    .await
                    .iter()
                    .map(|o| o.resource_version().unwrap()),
            );
            v.sort();
            v
        };
        let before = versions().await;

        // while no operator runs, the load generator finishes
        let local = local.await.unwrap();
        kubelet_terminates(&client, &ns, &pod, &message_of(&local)).await;
        let operator = Operator::start(&client, &ns).await;
        let done = wait_for(&api, "resume", 30, "finished", |rx| phase(rx).is_finished()).await;
        assert_eq!(versions().await, before, "the new operator's re-apply changed nothing");
        assert_same_outcome(&done, &local);
        let board = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get("resume-dashboard")
            .await
            .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&board.data.unwrap()[&format!("relab-{ns}-resume.json")]).unwrap();
        assert_ne!(
            json["time"]["to"], "now",
            "the resumed operator closed the dashboard's window"
        );
        eprintln!(
            "resumed run: verdict {:?}, as under relab run",
            done.status.as_ref().unwrap().verdict.as_ref().unwrap().result
        );
        let jobs: Vec<Job> = labelled(&client, &ns, "relab.dev/experiment=resume").await;
        assert_eq!(jobs.len(), 1, "no second load generator");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let reasons = event_reasons(&client, &ns, "resume").await;
        assert_eq!(
            reasons.iter().filter(|r| *r == "Analyzing").count(),
            1,
            "results written once: {reasons:?}"
        );
        assert!(done.status.as_ref().unwrap().history.is_empty());
        operator.kill().await;
    })
    .await;
}

#[tokio::test]
async fn an_invalid_spec_gets_valid_false_with_every_path_and_no_requeue_storm() {
    in_namespace(|client, ns| async move {
        let operator = Operator::start(&client, &ns).await;
        let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
        let mut rx = shortened("flaky-payments.yaml", 0.1, "bad");
        // each field is within its schema bounds; together they make no sense
        rx.spec.order_service.retry.initial_backoff_ms = 500;
        rx.spec.order_service.retry.max_backoff_ms = 100;
        rx.spec.images.pull_policy = Some("Sometimes".into());
        api.create(&PostParams::default(), &rx).await.unwrap();
        let bad = wait_for(&api, "bad", 30, "Valid=False", |rx| {
            rx.status
                .as_ref()
                .and_then(|s| get_condition(&s.conditions, "Valid"))
                .is_some_and(|c| c.status == "False")
        })
        .await;
        let valid = get_condition(&bad.status.as_ref().unwrap().conditions, "Valid")
            .unwrap()
            .clone();
        eprintln!("Valid=False: {}", valid.message);
        assert!(
            valid.message.contains("spec.orderService.retry.maxBackoffMs"),
            "{}",
            valid.message
        );
        assert!(valid.message.contains("spec.images.pullPolicy"), "{}", valid.message);
        assert_eq!(valid.observed_generation, Some(1));
        let reconciles = operator.metric("relab_operator_reconciles_total").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            operator.metric("relab_operator_reconciles_total").await,
            reconciles,
            "no requeue while nothing changes"
        );
        let reasons = event_reasons(&client, &ns, "bad").await;
        assert_eq!(reasons, ["InvalidSpec"]);
        let nothing: Vec<Deployment> = labelled(&client, &ns, "relab.dev/experiment=bad").await;
        assert!(nothing.is_empty(), "nothing applied for an invalid spec");

        // fixed: it starts
        api.patch(
            "bad",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"orderService": {"retry": {"maxBackoffMs": 1000}}, "images": {"pullPolicy": "Never"}}}),
            ),
        )
        .await
        .unwrap();
        let fixed = wait_for(&api, "bad", 30, "Provisioning", |rx| phase(rx) == Phase::Provisioning).await;
        let c = get_condition(&fixed.status.as_ref().unwrap().conditions, "Valid").unwrap();
        assert_eq!((c.status.as_str(), c.observed_generation), ("True", Some(2)));
        operator.kill().await;
    })
    .await;
}

#[tokio::test]
async fn deleting_an_experiment_garbage_collects_every_child_and_one_applied_again_at_once_gets_children_of_its_own() {
    in_namespace(|client, ns| async move {
        let operator = Operator::start(&client, &ns).await;
        let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &shortened("baseline.yaml", 0.1, "gone"))
            .await
            .unwrap();
        wait_for(&api, "gone", 30, "Provisioning", |rx| phase(rx) == Phase::Provisioning).await;
        let sel = "relab.dev/experiment=gone";
        eventually!(30, "pods made", {
            let pods: Vec<Pod> = labelled(&client, &ns, sel).await;
            (pods.len() >= 4).then_some(())
        });
        // deleted with its children orphaned (what a garbage collector that
        // has not got to them yet leaves too), and applied again a second
        // later (different creation seconds): the new run's children are all
        // its own, made after it, none of the earlier one's taken over
        api.delete("gone", &DeleteParams::orphan()).await.unwrap();
        eventually!(30, "the earlier experiment gone (its children orphaned)", {
            api.get_opt("gone").await.unwrap().is_none().then_some(())
        });
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let again = api
            .create(&PostParams::default(), &shortened("baseline.yaml", 0.1, "gone"))
            .await
            .unwrap();
        let created = again.metadata.creation_timestamp.clone().unwrap();
        wait_for(&api, "gone", 60, "Provisioning again", |rx| {
            rx.uid() == again.uid() && phase(rx) == Phase::Provisioning
        })
        .await;
        let made_after =
            |meta: &kube::api::ObjectMeta| meta.creation_timestamp.as_ref().is_some_and(|t| t.0 >= created.0);
        let d: Vec<Deployment> = labelled(&client, &ns, sel).await;
        let j: Vec<Job> = labelled(&client, &ns, sel).await;
        let s: Vec<Service> = labelled(&client, &ns, sel).await;
        assert!(
            !d.is_empty() && !j.is_empty() && !s.is_empty(),
            "the new run's children"
        );
        let old: Vec<String> = d
            .iter()
            .map(|o| &o.metadata)
            .chain(j.iter().map(|o| &o.metadata))
            .chain(s.iter().map(|o| &o.metadata))
            .filter(|meta| !made_after(meta))
            .map(|meta| {
                format!(
                    "{} (created {:?})",
                    meta.name.as_deref().unwrap_or_default(),
                    meta.creation_timestamp
                )
            })
            .collect();
        assert!(
            old.is_empty(),
            "the earlier experiment's children taken over: {old:?}, the new one created {created:?}"
        );
        api.delete("gone", &DeleteParams::default()).await.unwrap();
        eventually!(60, "every child garbage-collected", {
            let d: Vec<Deployment> = labelled(&client, &ns, sel).await;
            let s: Vec<Service> = labelled(&client, &ns, sel).await;
            let c: Vec<ConfigMap> = labelled(&client, &ns, sel).await;
            let j: Vec<Job> = labelled(&client, &ns, sel).await;
            let p: Vec<Pod> = labelled(&client, &ns, sel).await;
            (d.is_empty() && s.is_empty() && c.is_empty() && j.is_empty() && p.is_empty()).then_some(())
        });
        assert!(api.get_opt("gone").await.unwrap().is_none(), "no finalizer holds it");
        operator.kill().await;
    })
    .await;
}

#[tokio::test]
async fn the_ttl_removes_workloads_but_keeps_results_unless_a_failed_run_is_retained() {
    in_namespace(|client, ns| async move {
        let base = shortened("flaky-payments.yaml", 0.1, "x");
        let local = local_run(&base).await;
        let message = message_of(&local);
        let operator = Operator::start(&client, &ns).await;
        let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
        // the same lab twice; objectives do not change the run, only its verdict
        let mut clean = base.clone();
        clean.metadata.name = Some("clean".into());
        clean.spec.ttl_seconds_after_finished = Some(1);
        let mut keep = base.clone();
        keep.metadata.name = Some("keep".into());
        keep.spec.ttl_seconds_after_finished = Some(1);
        keep.spec.cleanup_policy = relab_operator::crd::CleanupPolicy::RetainOnFailure;
        keep.spec.objectives.api_latency = vec![relab_operator::crd::LatencyObjective {
            percentile: relab_operator::crd::Percentile::P50,
            max_ms: 0.001,
            requests: Default::default(),
        }];
        for rx in [&clean, &keep] {
            api.create(&PostParams::default(), rx).await.unwrap();
        }
        let (c, k) = tokio::join!(
            complete_run(&client, &api, &ns, "clean", 1, &message),
            complete_run(&client, &api, &ns, "keep", 1, &message)
        );
        assert_eq!(k.status.as_ref().unwrap().phase, Phase::Failed);
        assert_eq!(c.status.as_ref().unwrap().phase, local.status.phase);
        let cleaned = wait_for(&api, "clean", 30, "WorkloadsDeleted", |rx| {
            rx.status
                .as_ref()
                .and_then(|s| get_condition(&s.conditions, "WorkloadsDeleted"))
                .is_some_and(|c| c.status == "True")
        })
        .await;
        assert!(cleaned.status.as_ref().unwrap().results.is_some(), "results stay");
        eventually!(30, "clean's workloads deleted", {
            let d: Vec<Deployment> = labelled(&client, &ns, "relab.dev/experiment=clean").await;
            let j: Vec<Job> = labelled(&client, &ns, "relab.dev/experiment=clean").await;
            (d.is_empty() && j.is_empty()).then_some(())
        });
        if c.status.as_ref().unwrap().phase == Phase::Failed {
            eprintln!("note: the local run failed its objectives; the TTL applies to it (policy Always)");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let kept: Vec<Deployment> = labelled(&client, &ns, "relab.dev/experiment=keep").await;
        assert_eq!(kept.len(), 3, "a failed run's lab is retained for debugging");
        operator.kill().await;
    })
    .await;
}

#[tokio::test]
async fn a_missing_crd_is_reported_with_how_to_install_it() {
    let client = client().await;
    let gvk = GroupVersionKind::gvk("missing.relab.dev", "v1", "Nothing");
    let api: Api<DynamicObject> = Api::all_with(client, &ApiResource::from_gvk(&gvk));
    match controller::check_crd(&api).await {
        Err(e @ StartError::CrdMissing) => {
            let text = e.to_string();
            assert!(
                text.contains("kubectl apply -f crds/reliabilityexperiments.relab.dev.yaml"),
                "{text}"
            );
        }
        other => panic!("expected CrdMissing, got {other:?}"),
    }
}

#[tokio::test]
async fn the_operator_reconciles_a_whole_run_with_only_the_charts_rbac() {
    in_namespace(|client, ns| async move {
        let rx = shortened("flaky-payments.yaml", 0.1, "rbac");
        let local = spawn_local_run(&rx);
        // the chart in namespace mode (ServiceAccount, Role, RoleBinding, and
        // the leader-election Role since replicas > 1) into this namespace
        let chart = common::chart_dir().to_string_lossy().into_owned();
        let (ok, out, err) = common::helm(&["install", "rbac", &chart, "--namespace", &ns, "--set", "replicaCount=2"]);
        assert!(ok, "helm install:\n{out}{err}");
        let operator_client = common::impersonating(&ns, "rbac-relab").await;

        // really in force: the account cannot read Secrets
        let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(operator_client.clone(), &ns)
            .list(&ListParams::default())
            .await;
        assert!(
            matches!(&secrets, Err(kube::Error::Api(s)) if s.code == 403),
            "{secrets:?}"
        );

        // spec.disruptions' rights: delete pods and POST through the pod
        // proxy, in its own namespace only; nothing cluster-wide
        for (verb, resource, subresource, namespace, allowed) in [
            ("delete", "pods", "", Some(ns.as_str()), true),
            ("create", "pods", "proxy", Some(ns.as_str()), true),
            ("get", "pods", "proxy", Some(ns.as_str()), true),
            ("delete", "pods", "", Some("default"), false),
            ("create", "pods", "proxy", Some("default"), false),
            ("create", "pods", "exec", Some(ns.as_str()), false),
            ("deletecollection", "pods", "", Some(ns.as_str()), false),
            ("delete", "nodes", "", None, false),
        ] {
            assert_eq!(
                can(&operator_client, verb, resource, subresource, namespace).await,
                allowed,
                "{verb} {resource}/{subresource} in {namespace:?}"
            );
        }

        // leader election under the chart's Role: take, renew, and a second
        // candidate stands by
        let election = |identity: &str| controller::leader::Election {
            namespace: ns.clone(),
            lease: "rbac-relab".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        };
        assert!(
            election("replica-a").try_acquire(&operator_client).await.unwrap(),
            "takes the Lease"
        );
        assert!(
            election("replica-a").try_acquire(&operator_client).await.unwrap(),
            "renews it"
        );
        assert!(
            !election("replica-b").try_acquire(&operator_client).await.unwrap(),
            "b stands by"
        );

        // a whole run, the operator acting only as the chart's ServiceAccount
        let operator = Operator::start(&operator_client, &ns).await;
        let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &rx).await.unwrap();
        let local = local.await.unwrap();
        let done = complete_run(&client, &api, &ns, "rbac", 1, &message_of(&local)).await;
        assert_same_outcome(&done, &local);
        assert_eq!(
            done.status.as_ref().unwrap().dashboard.as_deref(),
            Some("rbac-dashboard")
        );
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get("rbac-dashboard")
            .await
            .expect("dashboard");
        let reasons = event_reasons(&client, &ns, "rbac").await;
        assert!(
            reasons.iter().any(|r| r == "RunStarted"),
            "events are allowed: {reasons:?}"
        );
        for kind in controller::ErrorKind::ALL {
            let errors = operator
                .metric(&format!(
                    "relab_operator_reconcile_errors_total{{kind=\"{}\"}}",
                    kind.as_str()
                ))
                .await;
            assert_eq!(
                errors,
                0.0,
                "{} errors under the chart's RBAC (forbidden?)",
                kind.as_str()
            );
        }
        operator.kill().await;
        let (ok, out, err) = common::helm(&["uninstall", "rbac", "--namespace", &ns]);
        assert!(ok, "helm uninstall:\n{out}{err}");
    })
    .await;
}

/// Whether `client`'s user may `verb` `resource`/`subresource` in
/// `namespace` (a SelfSubjectAccessReview: the API server's own answer).
async fn can(client: &Client, verb: &str, resource: &str, subresource: &str, namespace: Option<&str>) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                resource: Some(resource.into()),
                subresource: (!subresource.is_empty()).then(|| subresource.to_string()),
                namespace: namespace.map(String::from),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("a self subject access review")
        .status
        .is_some_and(|s| s.allowed)
}

/// A test host of this test's own: a network namespace joined to this one
/// by a veth pair (host end `.1`, the namespace's end `.2` of a /30 in
/// 10.251.0.0/16). The API server refuses to proxy to loopback, so the
/// played load-generator pod has the namespace's address: `relab lab-service
/// db-proxy` (the lab's own TCP proxy, no faults) listens there on `port`
/// and forwards to the host end, where the test serves. Traffic never
/// leaves the machine. Needs root; removed (forwarder by PID, then the
/// namespace and its veth pair) on drop.
struct TestHost {
    netns: String,
    host_ip: std::net::Ipv4Addr,
    pod_ip: std::net::Ipv4Addr,
    forwarder: std::process::Child,
}

impl TestHost {
    fn ip(args: &[&str]) {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("iproute2's ip");
        assert!(
            out.status.success(),
            "ip {}: {} (this test makes a network namespace: run it as root)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn create(port: u16, upstream_port: u16) -> Self {
        // unique per test host: this process's, and within it a count
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let k = (std::process::id() * 7 + n) % 250 + 1;
        let netns = format!("relab-ct-{}-{n}", std::process::id());
        let (host_end, pod_end) = (format!("rct{k}h"), format!("rct{k}n"));
        let host_ip = std::net::Ipv4Addr::new(10, 251, k as u8, 1);
        let pod_ip = std::net::Ipv4Addr::new(10, 251, k as u8, 2);
        Self::ip(&["netns", "add", &netns]);
        Self::ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &pod_end]);
        Self::ip(&["link", "set", &pod_end, "netns", &netns]);
        Self::ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_end]);
        Self::ip(&["link", "set", &host_end, "up"]);
        let pod_cidr = format!("{pod_ip}/30");
        for args in [
            ["addr", "add", pod_cidr.as_str(), "dev", pod_end.as_str()].as_slice(),
            &["link", "set", pod_end.as_str(), "up"],
            &["link", "set", "lo", "up"],
        ] {
            let mut all = vec!["-n", netns.as_str()];
            all.extend_from_slice(args);
            Self::ip(&all);
        }
        let forwarder = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .arg(env!("CARGO_BIN_EXE_relab"))
            .args(["lab-service", "db-proxy"])
            .arg(format!("--listen={pod_ip}:{port}"))
            .arg(format!("--upstream={host_ip}:{upstream_port}"))
            .arg("--admin-listen=127.0.0.1:0")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("nsenter the test host");
        let host = Self {
            netns,
            host_ip,
            pod_ip,
            forwarder,
        };
        // listening once the namespace's end accepts (from here, through the veth)
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect((pod_ip, port)).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the test host's forwarder did not listen"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        host
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = self.forwarder.kill();
        let _ = self.forwarder.wait();
        // deleting the namespace deletes the veth pair
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

/// The load generator's progress server, played: `GET /progress` says the
/// load runs (its seconds since it started) with the record of `planned`;
/// `POST /disruptions/{name}` records a report like the real one (204, 409
/// when unknown or already reported) and keeps its body.
#[derive(Clone)]
struct PlayedLoadgen {
    started: std::time::Instant,
    record: std::sync::Arc<std::sync::Mutex<Vec<relab_model::disruptions::DisruptionResult>>>,
    reports: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
    /// When the operator read `/progress` (seconds of load): a kill is due
    /// once its time has come *and* the operator has seen the load running
    reads: std::sync::Arc<std::sync::Mutex<Vec<f64>>>,
    /// Each list of `/metrics` URLs the operator posted, in order
    targets: std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>,
}

impl PlayedLoadgen {
    async fn serve(ip: std::net::Ipv4Addr, port: u16, planned: &[relab_model::disruptions::PlannedDisruption]) -> Self {
        use axum::extract::{Path, State};
        use axum::http::StatusCode;
        let played = PlayedLoadgen {
            started: std::time::Instant::now(),
            record: std::sync::Arc::new(std::sync::Mutex::new(planned.iter().map(|p| p.unfired()).collect())),
            reports: Default::default(),
            reads: Default::default(),
            targets: Default::default(),
        };
        let app = axum::Router::new()
            .route(
                "/progress",
                axum::routing::get(|State(p): State<PlayedLoadgen>| async move {
                    p.reads.lock().unwrap().push(p.started.elapsed().as_secs_f64());
                    axum::Json(lab_service::run::RunProgress {
                        stage: lab_service::run::RunStage::Load,
                        elapsed: p.started.elapsed(),
                        planned: Duration::from_secs(60),
                        disruptions: p.record.lock().unwrap().clone(),
                        metrics_targets: p.targets.lock().unwrap().last().cloned(),
                        ..Default::default()
                    })
                }),
            )
            .route(
                "/disruptions/{name}",
                axum::routing::post(
                    |State(p): State<PlayedLoadgen>,
                     Path(name): Path<String>,
                     axum::Json(body): axum::Json<serde_json::Value>| async move {
                        let now = p.started.elapsed().as_secs_f64();
                        let mut record = p.record.lock().unwrap();
                        let Some(d) = record.iter_mut().find(|d| d.name == name) else {
                            return StatusCode::CONFLICT;
                        };
                        if d.fired_at_seconds.is_some() || d.error.is_some() {
                            return StatusCode::CONFLICT;
                        }
                        match body["error"].as_str() {
                            Some(e) => d.error = Some(e.into()),
                            None => {
                                d.fired_at_seconds = Some(now);
                                d.hit = serde_json::from_value(body["hit"].clone()).unwrap_or_default();
                            }
                        }
                        p.reports.lock().unwrap().push((name, body));
                        StatusCode::NO_CONTENT
                    },
                ),
            )
            .route(
                "/metrics-targets",
                axum::routing::post(
                    |State(p): State<PlayedLoadgen>,
                     axum::Json(list): axum::Json<lab_service::run::targets::TargetList>| async move {
                        p.targets.lock().unwrap().push(list.metrics);
                        StatusCode::NO_CONTENT
                    },
                ),
            )
            .with_state(played.clone());
        let listener = tokio::net::TcpListener::bind((ip, port))
            .await
            .expect("the played load generator's port");
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        played
    }
}

#[tokio::test]
async fn a_kill_deletes_order_service_pods_with_grace_0_reports_them_to_the_load_generator_and_is_an_event() {
    in_namespace(|client, ns| async move {
        let rx = relab_operator::crd::parse(
            "apiVersion: relab.dev/v1alpha1\nkind: ReliabilityExperiment\nmetadata: {name: kill}\nspec:\n  load: {ratePerSecond: 5, durationSeconds: 60}\n  orderService: {replicas: 3}\n  disruptions:\n    - {name: crash-workers, atSeconds: 3, action: KillWorkers, fraction: 0.5}\n",
        )
        .expect("a valid manifest");
        let planned = relab_operator::crd::validated(&rx).unwrap().disruptions();
        let operator = Operator::start(&client, &ns).await;
        let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &rx).await.unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let order_selector = "relab.dev/experiment=kill,relab.dev/run=1,relab.dev/component=order-service";
        let before: Vec<String> = eventually!(30, "the order service's 3 pods", {
            let names: Vec<String> = labelled::<Pod>(&client, &ns, order_selector)
                .await
                .iter()
                .map(|p| p.name_any())
                .collect();
            (names.len() == 3).then_some(names)
        });
        bind_to_a_node(&client, &ns, &before).await;
        // running, each with an IP (played: nothing listens there; the
        // operator only tells the load generator where to read)
        let mut ips = std::collections::BTreeMap::new();
        for (k, name) in before.iter().enumerate() {
            let ip = format!("10.252.0.{}", k + 1);
            let status = json!({ "status": { "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}] } });
            pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .expect("pod status: running");
            ips.insert(name.clone(), ip);
        }
        let (host, played) = loadgen_runs_on_a_test_host(&client, &ns, "kill", &planned).await;
        // the sampler reads each pod's API and workers, never the Service
        let first = eventually!(15, "the pods' metrics posted to the load generator", {
            played.targets.lock().unwrap().first().cloned()
        });
        let mut every: Vec<String> = ips
            .values()
            .flat_map(|ip| [format!("http://{ip}:8080/metrics"), format!("http://{ip}:9090/metrics")])
            .collect();
        every.sort();
        assert_eq!(first, every);

        // the kill fires within about a second of its time by the load
        // generator's clock, or of the operator's first look at the load if
        // that came later (the pod's status is played after the load began)
        let (name, body) = eventually!(20, "the kill reported to the load generator", {
            played.reports.lock().unwrap().first().cloned()
        });
        let fired_at = played.record.lock().unwrap()[0].fired_at_seconds.expect("fired");
        let reads = played.reads.lock().unwrap().clone();
        let due = reads.first().map_or(3.0, |first| first.max(3.0));
        assert_eq!(name, "crash-workers");
        assert!(
            fired_at >= 3.0 && fired_at < due + 2.5,
            "fired at {fired_at:.2} s for 3 s; the operator read the progress at {reads:.2?}"
        );
        let hit: Vec<String> = serde_json::from_value(body["hit"].clone()).expect("hit, no error: {body}");
        assert_eq!(hit.len(), 2, "half of 3 pods, rounded up: {body}");
        for pod in &hit {
            assert!(before.contains(pod), "{pod} is one of the run's order-service pods");
            assert!(
                pods.get_opt(pod).await.unwrap().is_none(),
                "{pod} is gone at once (grace 0), though bound to a node"
            );
        }
        let survivor = before.iter().find(|p| !hit.contains(p)).unwrap();
        assert!(pods.get_opt(survivor).await.unwrap().is_some(), "the other pod lives");
        // one Event, once the record shows it fired
        let message = eventually!(15, "a DisruptionFired Event", {
            disruption_events(&client, &ns).await.into_iter().next()
        });
        assert!(message.contains("crash-workers (KillWorkers)"), "{message}");
        assert!(hit.iter().all(|p| message.contains(p.as_str())), "{message}");
        // the killed pods leave the sampler's list (their replacements have no IP here)
        let survivor_only = vec![
            format!("http://{}:8080/metrics", ips[survivor]),
            format!("http://{}:9090/metrics", ips[survivor]),
        ];
        eventually!(15, "the killed pods' metrics taken off the list", {
            (played.targets.lock().unwrap().last() == Some(&survivor_only)).then_some(())
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(played.reports.lock().unwrap().len(), 1, "fired once");
        assert_eq!(played.targets.lock().unwrap().len(), 2, "posted only when the list changed");
        let reasons = event_reasons(&client, &ns, "kill").await;
        assert_eq!(reasons.iter().filter(|r| *r == "DisruptionFired").count(), 1, "{reasons:?}");
        operator.kill().await;
        drop(host);
    })
    .await;
}

/// Bind `pods` to a node (the scheduler's part): a pod deleted with any
/// grace but 0 would then wait for a kubelet that never comes.
async fn bind_to_a_node(client: &Client, ns: &str, pods: &[String]) {
    for name in pods {
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "played-node"},
        });
        let request = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{name}/binding"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&binding).unwrap())
            .unwrap();
        client.request_text(request).await.expect("bind the pod");
    }
}

#[tokio::test]
async fn with_worker_replicas_a_kill_workers_deletes_worker_pods_only() {
    in_namespace(|client, ns| async move {
        let rx = relab_operator::crd::parse(
            "apiVersion: relab.dev/v1alpha1\nkind: ReliabilityExperiment\nmetadata: {name: kill-workers}\nspec:\n  load: {ratePerSecond: 5, durationSeconds: 60}\n  orderService: {replicas: 1, workerReplicas: 3}\n  disruptions:\n    - {name: crash-workers, atSeconds: 2, action: KillWorkers, fraction: 0.5}\n",
        )
        .expect("a valid manifest");
        let planned = relab_operator::crd::validated(&rx).unwrap().disruptions();
        let operator = Operator::start(&client, &ns).await;
        let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &rx).await.unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let run = "relab.dev/experiment=kill-workers,relab.dev/run=1";
        let names_of = |component: &'static str| {
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                labelled::<Pod>(&client, &ns, &format!("{run},relab.dev/component={component}"))
                    .await
                    .iter()
                    .map(|p| p.name_any())
                    .collect::<Vec<String>>()
            }
        };
        let (api_pods, workers) = eventually!(30, "1 API pod and 3 worker pods", {
            let (a, w) = (names_of("order-service").await, names_of("workers").await);
            (a.len() == 1 && w.len() == 3).then_some((a, w))
        });
        bind_to_a_node(&client, &ns, &[api_pods.clone(), workers.clone()].concat()).await;
        let (host, played) = loadgen_runs_on_a_test_host(&client, &ns, "kill-workers", &planned).await;
        let (_, body) = eventually!(15, "the kill reported to the load generator", {
            played.reports.lock().unwrap().first().cloned()
        });
        let hit: Vec<String> = serde_json::from_value(body["hit"].clone()).expect("hit, no error: {body}");
        assert_eq!(hit.len(), 2, "half of 3 worker pods, rounded up: {body}");
        assert!(hit.iter().all(|p| workers.contains(p)), "worker pods only: {hit:?} of {workers:?}");
        assert!(pods.get_opt(&api_pods[0]).await.unwrap().is_some(), "the API pod lives");
        operator.kill().await;
        drop(host);
    })
    .await;
}

/// The kubelet's part for a load generator the test plays: its pod runs
/// on a test host of the test's own (the pod's IP), where the played
/// progress server answers through the API server's pod proxy; its load
/// starts now.
async fn loadgen_runs_on_a_test_host(
    client: &Client,
    ns: &str,
    name: &str,
    planned: &[relab_model::disruptions::PlannedDisruption],
) -> (TestHost, PlayedLoadgen) {
    let loadgen = loadgen_pod(client, ns, name, 1).await;
    let upstream = common::free_port();
    let host = TestHost::create(
        relab_operator::controller::build::LOADGEN_PROGRESS_PORT as u16,
        upstream,
    )
    .await;
    let played = PlayedLoadgen::serve(host.host_ip, upstream, planned).await;
    let (ip, t) = (host.pod_ip.to_string(), now());
    let status = json!({ "status": {
        "phase": "Running", "startTime": t, "podIP": ip, "podIPs": [{"ip": ip}],
        "containerStatuses": [{
            "name": "loadgen", "ready": true, "started": true, "restartCount": 0,
            "image": LAB_IMAGE, "imageID": "", "state": { "running": { "startedAt": t } },
        }],
    }});
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(&loadgen.name_any(), &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status: running");
    (host, played)
}

/// The `DisruptionFired` Events' notes.
async fn disruption_events(client: &Client, ns: &str) -> Vec<String> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("DisruptionFired"))
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test]
async fn database_disruptions_put_the_proxy_in_the_order_services_path_and_what_the_load_generator_fires_is_an_event() {
    in_namespace(|client, ns| async move {
        let rx = relab_operator::crd::parse(
            "apiVersion: relab.dev/v1alpha1\nkind: ReliabilityExperiment\nmetadata: {name: dbd}\nspec:\n  load: {ratePerSecond: 5, durationSeconds: 60}\n  orderService: {replicas: 2}\n  disruptions:\n    - {name: db-cut, atSeconds: 2, action: DatabaseOutage, durationSeconds: 3}\n    - {name: db-slow, atSeconds: 6, action: DatabaseLatency, addedMs: 50, durationSeconds: 2}\n    - {name: db-restart, atSeconds: 10, action: RestartDatabase}\n    - {name: crash-all, atSeconds: 3, action: KillOrderService}\n",
        )
        .expect("a valid manifest");
        let planned = relab_operator::crd::validated(&rx).unwrap().disruptions();
        let operator = Operator::start(&client, &ns).await;
        Api::<ReliabilityExperiment>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &rx)
            .await
            .unwrap();
        // the proxy's Deployment and Service, in the order service's path
        let proxy: Service = eventually!(30, "the db proxy's Service", {
            Api::<Service>::namespaced(client.clone(), &ns).get_opt("dbd-r1-db-proxy").await.unwrap()
        });
        let proxy_ip = proxy.spec.unwrap().cluster_ip.unwrap();
        let proxy_deploy: Deployment = eventually!(30, "the db proxy's Deployment", {
            Api::<Deployment>::namespaced(client.clone(), &ns).get_opt("dbd-r1-db-proxy").await.unwrap()
        });
        let proxy_pod = proxy_deploy.spec.unwrap().template.spec.unwrap();
        assert_eq!(proxy_pod.containers[0].args.as_deref(), Some(["db-proxy".to_string()].as_slice()));
        let order: Deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
            .get("dbd-r1-order-service")
            .await
            .unwrap();
        for c in order.spec.unwrap().template.spec.unwrap().containers {
            let url = c
                .env
                .unwrap_or_default()
                .into_iter()
                .find(|e| e.name == "RELAB_DATABASE_URL")
                .and_then(|e| e.value)
                .unwrap_or_default();
            assert!(url.contains(&format!("@{proxy_ip}:")), "{}: {url}", c.name);
        }
        let config: ConfigMap = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get("dbd-r1-config")
            .await
            .unwrap();
        let env = config.data.unwrap();
        assert!(!env["RELAB_DATABASE_URL"].contains(&proxy_ip), "the load generator's own URL is direct");
        assert!(env["RELAB_DB_PROXY_URL"].contains(&proxy_ip), "{}", env["RELAB_DB_PROXY_URL"]);
        let told: Vec<relab_model::disruptions::PlannedDisruption> =
            serde_json::from_str(&env["RELAB_DISRUPTIONS"]).unwrap();
        assert_eq!(told, planned, "the load generator gets the whole plan");

        // the run: the kill is the operator's (both pods), the rest the load generator's
        let order_selector = "relab.dev/experiment=dbd,relab.dev/run=1,relab.dev/component=order-service";
        let before: Vec<String> = eventually!(30, "the order service's 2 pods", {
            let names: Vec<String> = labelled::<Pod>(&client, &ns, order_selector)
                .await
                .iter()
                .map(|p| p.name_any())
                .collect();
            (names.len() == 2).then_some(names)
        });
        let (host, played) = loadgen_runs_on_a_test_host(&client, &ns, "dbd", &planned).await;
        let (name, body) = eventually!(15, "the kill reported", {
            played.reports.lock().unwrap().first().cloned()
        });
        assert_eq!(name, "crash-all");
        let mut hit: Vec<String> = serde_json::from_value(body["hit"].clone()).unwrap();
        hit.sort();
        let mut all = before.clone();
        all.sort();
        assert_eq!(hit, all, "every order-service pod");
        assert_eq!(played.reports.lock().unwrap().len(), 1, "the database's are not the operator's to fire");
        // the load generator fires the database ones itself (played)
        let now = played.started.elapsed().as_secs_f64();
        for d in played.record.lock().unwrap().iter_mut().filter(|d| d.name.starts_with("db-")) {
            d.fired_at_seconds = Some(now);
            d.hit = vec![format!("{} hit", d.name)];
        }
        let notes = eventually!(20, "four DisruptionFired Events", {
            let notes = disruption_events(&client, &ns).await;
            (notes.len() >= 4).then_some(notes)
        });
        for want in [
            "db-cut (DatabaseOutage)",
            "db-slow (DatabaseLatency)",
            "db-restart (RestartDatabase)",
            "crash-all (KillOrderService)",
        ] {
            assert_eq!(
                notes.iter().filter(|n| n.contains(want)).count(),
                1,
                "{want} once: {notes:?}"
            );
        }
        operator.kill().await;
        drop(host);
    })
    .await;
}

/// A `relab operator` process with leader election, stopped by PID on drop.
struct OperatorProcess {
    child: std::process::Child,
    metrics: SocketAddr,
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_elected_operator(ns: &str, identity: &str) -> OperatorProcess {
    let port = common::free_port();
    let metrics: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_relab"))
        .args([
            "operator",
            "--namespace",
            ns,
            "--leader-elect",
            "--leader-election-namespace",
            ns,
        ])
        .args([
            "--leader-election-lease",
            "test-lease",
            "--lease-duration-secs",
            "3",
            "--renew-period-secs",
            "1",
        ])
        .args(["--metrics-listen", &metrics.to_string(), "--log-format", "text"])
        .args(["--lab-image", LAB_IMAGE, "--image-pull-policy", "Never"])
        .env("KUBECONFIG", common::kubeconfig().1)
        .env("POD_NAME", identity)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("relab operator starts");
    OperatorProcess { child, metrics }
}

/// `relab_operator_leader` of a process (None while it does not answer).
async fn leader_gauge(p: &OperatorProcess) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", p.metrics))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("relab_operator_leader "))
        .and_then(|v| v.trim().parse().ok())
}

async fn lease_holder(client: &Client, ns: &str) -> Option<(String, i32)> {
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), ns)
        .get_opt("test-lease")
        .await
        .unwrap()?;
    let spec = lease.spec?;
    Some((spec.holder_identity?, spec.lease_transitions.unwrap_or(0)))
}

#[tokio::test]
async fn two_operator_processes_elect_one_leader_and_the_standby_takes_over() {
    in_namespace(|client, ns| async move {
        let a = spawn_elected_operator(&ns, "replica-a");
        let up = |p: SocketAddr| async move {
            reqwest::get(format!("http://{p}/readyz"))
                .await
                .is_ok_and(|r| r.status().is_success())
        };
        eventually!(30, "replica-a leads", {
            (leader_gauge(&a).await == Some(1.0)).then_some(())
        });
        let b = spawn_elected_operator(&ns, "replica-b");
        eventually!(30, "replica-b answers /readyz as a standby", {
            up(b.metrics).await.then_some(())
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(leader_gauge(&b).await, Some(0.0), "b stands by while a renews");
        let (holder, transitions) = lease_holder(&client, &ns).await.expect("the Lease");
        assert_eq!(holder, "replica-a");

        // the leader dies without a word (SIGKILL): b takes over after the lease expires
        let killed_at = tokio::time::Instant::now();
        drop(a);
        eventually!(30, "replica-b takes over", {
            (leader_gauge(&b).await == Some(1.0)).then_some(())
        });
        let took = killed_at.elapsed();
        assert!(took >= Duration::from_secs(2), "not before the lease expired: {took:?}");
        let (holder, after) = lease_holder(&client, &ns).await.unwrap();
        assert_eq!(holder, "replica-b");
        assert_eq!(after, transitions + 1, "one transition");
        eprintln!("standby took over {took:?} after the leader was killed (lease 3 s, renew 1 s)");

        // and reconciles
        let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
        api.create(
            &PostParams::default(),
            &shortened("baseline.yaml", 0.1, "after-takeover"),
        )
        .await
        .unwrap();
        wait_for(&api, "after-takeover", 30, "Provisioning by the new leader", |rx| {
            phase(rx) == Phase::Provisioning
        })
        .await;
        drop(b);
    })
    .await;
}

#[tokio::test]
async fn a_comparison_runs_one_lab_after_the_other_and_judges_its_variants_as_relab_run_does() {
    in_namespace(|client, ns| async move {
        let rx = shortened("outage-drill.yaml", 0.15, "versus");
        let local = spawn_local_run(&rx);
        let operator = Operator::start(&client, &ns).await;
        let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &rx).await.unwrap();
        let local = local.await.unwrap();
        assert_eq!(local.runs.len(), 2, "two variants, one run each");
        for (k, lab) in local.runs.iter().enumerate() {
            let run = format!("1-{k}");
            let pod = loadgen_pod_of(&client, &ns, "versus", &run).await;
            // each lab run gets children of its own, with its variant on its pods
            let labels = pod.labels();
            assert_eq!(labels.get("relab.dev/variant"), lab.variant.as_ref(), "{labels:?}");
            let config: Vec<ConfigMap> =
                labelled(&client, &ns, &format!("relab.dev/run={run},relab.dev/component=config")).await;
            let breaker = &config[0].data.as_ref().unwrap()["RELAB_BREAKER_MODE"];
            let want = if lab.variant.as_deref() == Some("no-breaker") {
                "disabled"
            } else {
                "consecutive-failures"
            };
            assert_eq!(breaker, want, "lab run {k} runs its variant's settings");
            kubelet_runs(&client, &ns, &pod).await;
            let message = lab_service::run::termination_message(&lab.output.results);
            kubelet_terminates(&client, &ns, &pod, &message).await;
            if k == 0 {
                // the next lab run starts once the first one reported; the first one's children go
                loadgen_pod_of(&client, &ns, "versus", "1-1").await;
                eventually!(30, "lab run 0's Deployments are deleted", {
                    labelled::<Deployment>(&client, &ns, "relab.dev/run=1-0")
                        .await
                        .is_empty()
                        .then_some(())
                });
            }
        }
        let done = wait_for(&api, "versus", 60, "finished", |rx| phase(rx).is_finished()).await;
        let status = done.status.as_ref().unwrap();
        assert_eq!(phase(&done), local.status.phase);
        assert_eq!(
            status.verdict.as_ref().unwrap().result,
            local.status.verdict.as_ref().unwrap().result
        );
        let per = |s: &relab_operator::crd::ReliabilityExperimentStatus| {
            s.variants
                .iter()
                .map(|v| (v.name.clone(), v.verdict, v.expectation_met, v.runs.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            per(status),
            per(&local.status),
            "per-variant verdicts equal relab run's"
        );
        let objectives = |s: &relab_operator::crd::ReliabilityExperimentStatus| {
            s.variants
                .iter()
                .flat_map(|v| v.objectives.iter().map(|o| (v.name.clone(), o.name.clone(), o.result)))
                .collect::<Vec<_>>()
        };
        assert_eq!(objectives(status), objectives(&local.status));
        assert_eq!(
            status.comparison.as_ref().map(|c| c.rows.len()),
            Some(2),
            "the comparison side by side"
        );
        assert_eq!(
            status.execution.as_ref().map(|e| (e.lab_runs, e.concurrency)),
            Some((2, 1))
        );
        let reasons = event_reasons(&client, &ns, "versus").await;
        // (the Events API folds repeats of one reason into a series)
        assert!(reasons.iter().any(|r| r == "LabRunFinished"), "{reasons:?}");
        operator.kill().await;
    })
    .await;
}

/// A clock the test moves: the wall clock plus an offset in seconds.
#[derive(Clone, Default)]
struct TestClock(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl TestClock {
    fn clock(&self) -> controller::Clock {
        let offset = self.0.clone();
        controller::Clock::from_fn(move || {
            chrono::Utc::now() + chrono::Duration::seconds(offset.load(std::sync::atomic::Ordering::SeqCst))
        })
    }
    /// Move the clock to `at` (the test's "now" from then on).
    fn set(&self, at: chrono::DateTime<chrono::Utc>) {
        let offset = (at - chrono::Utc::now()).num_seconds();
        self.0.store(offset, std::sync::atomic::Ordering::SeqCst);
    }
}

fn rfc3339(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn count(reasons: &[String], reason: &str) -> usize {
    reasons.iter().filter(|r| r.as_str() == reason).count()
}

#[tokio::test]
async fn a_schedule_runs_once_per_tick_skips_a_tick_during_a_run_fires_once_across_restarts_and_suspends() {
    in_namespace(|client, ns| async move {
        let mut rx = shortened("flaky-payments.yaml", 0.1, "nightly");
        let local = spawn_local_run(&rx);
        rx.spec.schedule = Some(relab_model::ops::ScheduleSpec {
            cron: "0 3 * * *".into(),
            time_zone: "Europe/Berlin".into(),
            suspend: false,
            starting_deadline_seconds: 600,
        });
        let time = TestClock::default();
        let operator = Operator::start_with(&client, &ns, time.clock()).await;
        let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &rx).await.unwrap();

        // created: no run, the next 03:00 Berlin as nextRunTime
        let waiting = wait_for(&api, "nightly", 30, "waiting for its first tick", |rx| {
            rx.status.as_ref().is_some_and(|s| s.next_run_time.is_some())
        })
        .await;
        let st = waiting.status.clone().unwrap();
        assert_eq!((st.phase, st.scheduled_run), (Phase::Pending, None));
        let tick1 = rfc3339(st.next_run_time.as_deref().unwrap());
        let berlin = tick1.with_timezone(&chrono_tz::Europe::Berlin);
        assert_eq!(berlin.format("%H:%M").to_string(), "03:00", "{tick1}");
        assert_eq!(
            get_condition(&st.conditions, "Scheduled").unwrap().reason,
            "AwaitingTick"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let jobs: Vec<Job> = labelled(&client, &ns, "relab.dev/experiment=nightly").await;
        assert!(jobs.is_empty(), "nothing runs before the first tick");

        // the tick: scheduled run 1, children named after it
        time.set(tick1 + chrono::Duration::seconds(5));
        let first = wait_for(&api, "nightly", 30, "scheduled run 1", |rx| {
            rx.status.as_ref().is_some_and(|s| s.scheduled_run == Some(1))
        })
        .await;
        let st = first.status.clone().unwrap();
        assert_eq!(
            st.last_schedule_time.as_deref(),
            Some(tick1.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).as_str())
        );
        let tick2 = rfc3339(st.next_run_time.as_deref().unwrap());
        assert_eq!(
            tick2 - tick1,
            chrono::Duration::days(1),
            "daily (no DST change in between or not)"
        );
        let pod = loadgen_pod_of(&client, &ns, "nightly", "1s1").await;
        kubelet_runs(&client, &ns, &pod).await;
        wait_for(&api, "nightly", 30, "Running", |rx| phase(rx) == Phase::Running).await;

        // the next tick while run 1 goes on: skipped, not queued
        time.set(tick2 + chrono::Duration::seconds(5));
        let skipped = wait_for(&api, "nightly", 30, "the tick skipped", |rx| {
            rx.status
                .as_ref()
                .and_then(|s| s.next_run_time.as_deref())
                .map(rfc3339)
                .is_some_and(|t| t > tick2)
        })
        .await;
        let st = skipped.status.clone().unwrap();
        assert_eq!((st.scheduled_run, st.phase), (Some(1), Phase::Running));
        let tick3 = rfc3339(st.next_run_time.as_deref().unwrap());
        eventually!(10, "a ScheduleSkipped Event", {
            (count(&event_reasons(&client, &ns, "nightly").await, "ScheduleSkipped") == 1).then_some(())
        });
        let local = local.await.unwrap();
        kubelet_terminates(&client, &ns, &pod, &message_of(&local)).await;
        let done1 = wait_for(&api, "nightly", 30, "run 1 finished", |rx| phase(rx).is_finished()).await;
        assert_same_outcome(&done1, &local);

        // the operator is down across tick 3: the new one fires it, once
        operator.kill().await;
        time.set(tick3 + chrono::Duration::seconds(30));
        let operator = Operator::start_with(&client, &ns, time.clock()).await;
        let second = wait_for(&api, "nightly", 30, "scheduled run 2", |rx| {
            rx.status.as_ref().is_some_and(|s| s.scheduled_run == Some(2))
        })
        .await;
        let st = second.status.clone().unwrap();
        assert_eq!(st.history.len(), 1, "run 1 in the history");
        assert_eq!(
            (st.history[0].generation, st.history[0].scheduled_run),
            (Some(1), Some(1))
        );
        assert_eq!(
            st.history[0].verdict,
            done1.status.as_ref().unwrap().verdict.as_ref().unwrap().result
        );
        eventually!(30, "run 1's children deleted", {
            let jobs: Vec<Job> = labelled(&client, &ns, "relab.dev/experiment=nightly,relab.dev/run=1s1").await;
            jobs.is_empty().then_some(())
        });
        // killed and restarted again at the same instant: still run 2
        operator.kill().await;
        let operator = Operator::start_with(&client, &ns, time.clock()).await;
        eventually!(10, "the new operator reconciled", {
            (operator.metric("relab_operator_reconciles_total").await >= 1.0).then_some(())
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = api.get("nightly").await.unwrap();
        assert_eq!(
            again.status.as_ref().unwrap().scheduled_run,
            Some(2),
            "the tick fired once"
        );
        assert_eq!(count(&event_reasons(&client, &ns, "nightly").await, "RunStarted"), 2);
        let done2 = complete_run_of(&client, &api, &ns, "nightly", "1s2", &message_of(&local)).await;
        assert_eq!(done2.status.as_ref().unwrap().scheduled_run, Some(2));

        // suspended: a spec change; no nextRunTime and no run at the next tick
        api.patch(
            "nightly",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"schedule": {"suspend": true}}})),
        )
        .await
        .unwrap();
        let suspended = wait_for(&api, "nightly", 30, "suspended", |rx| {
            rx.status.as_ref().is_some_and(|s| s.observed_generation == Some(2))
        })
        .await;
        let st = suspended.status.clone().unwrap();
        assert_eq!((st.next_run_time.as_deref(), st.scheduled_run), (None, None));
        assert_eq!(
            get_condition(&st.conditions, "Scheduled").unwrap().reason,
            "ScheduleSuspended"
        );
        assert_eq!(st.history.len(), 2, "both runs in the history");
        time.set(tick3 + chrono::Duration::days(1) + chrono::Duration::seconds(5));
        tokio::time::sleep(Duration::from_secs(8)).await;
        let still = api.get("nightly").await.unwrap();
        assert_eq!(
            still.status.as_ref().unwrap().scheduled_run,
            None,
            "no tick while suspended"
        );
        let jobs: Vec<Job> = labelled(&client, &ns, "relab.dev/experiment=nightly").await;
        assert!(
            jobs.is_empty(),
            "no run's Job: {:?}",
            jobs.iter().map(|j| j.name_any()).collect::<Vec<_>>()
        );
        operator.kill().await;
    })
    .await;
}

/// [`complete_run`] for the run labelled `run` (`2`, `1s2`, ...).
async fn complete_run_of(
    client: &Client,
    api: &Api<ReliabilityExperiment>,
    ns: &str,
    name: &str,
    run: &str,
    message: &str,
) -> ReliabilityExperiment {
    let pod = loadgen_pod_of(client, ns, name, run).await;
    kubelet_runs(client, ns, &pod).await;
    wait_for(api, name, 30, "Running", |rx| {
        matches!(phase(rx), Phase::Running | Phase::Draining)
    })
    .await;
    kubelet_terminates(client, ns, &pod, message).await;
    wait_for(api, name, 30, "finished", |rx| phase(rx).is_finished()).await
}

/// What a receiver was sent: (content type, body) per POST.
type Posts = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver on loopback: answers the first `fail_first` POSTs
/// with 500, then 200; keeps every body.
struct Receiver {
    url: String,
    bodies: Posts,
}

async fn receiver(fail_first: usize) -> Receiver {
    use axum::http::{HeaderMap, StatusCode};
    let bodies: Posts = Default::default();
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let mut all = kept.lock().unwrap();
                let kind = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                all.push((kind, body.to_vec()));
                if all.len() <= fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook?token=s3cret", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, bodies }
}

#[tokio::test]
async fn a_finished_run_is_posted_once_as_a_cloudevent_retried_after_a_500_and_never_again_after_a_restart() {
    in_namespace(|client, ns| async move {
        let hook = receiver(1).await;
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
            "metadata": {"name": "drill-hook"},
            "stringData": {"url": hook.url},
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &secret).await.unwrap();
        let mut rx = shortened("flaky-payments.yaml", 0.1, "hooked");
        let local = spawn_local_run(&rx);
        rx.spec.notify = Some(relab_model::ops::NotifySpec {
            webhook: Some(relab_model::ops::WebhookSpec {
                url_secret_ref: relab_model::ops::SecretKeyRef {
                    name: "drill-hook".into(),
                    key: "url".into(),
                },
            }),
        });
        let operator = Operator::start(&client, &ns).await;
        let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &rx).await.unwrap();
        let local = local.await.unwrap();
        let pod = loadgen_pod(&client, &ns, "hooked", 1).await;
        kubelet_runs(&client, &ns, &pod).await;
        // nothing is sent before the run is over
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(hook.bodies.lock().unwrap().is_empty());
        kubelet_terminates(&client, &ns, &pod, &message_of(&local)).await;
        let done = wait_for(&api, "hooked", 30, "delivered", |rx| {
            rx.status
                .as_ref()
                .and_then(|s| s.notification.as_ref())
                .is_some_and(|n| n.state == relab_model::status::NotificationState::Delivered)
        })
        .await;
        let st = done.status.clone().unwrap();
        let n = st.notification.clone().unwrap();
        assert_eq!(n.attempts, 2, "the 500, then the delivery: {n:?}");
        assert_eq!(n.event_id, format!("{}/1", done.uid().unwrap()));
        assert!(
            !serde_json::to_string(&st).unwrap().contains("s3cret"),
            "the secret URL never reaches the status"
        );
        assert_eq!(get_condition(&st.conditions, "Notified").unwrap().status, "True");
        assert_eq!(
            st.phase, local.status.phase,
            "the webhook does not change the verdict's phase"
        );
        let bodies = hook.bodies.lock().unwrap().clone();
        assert_eq!(bodies.len(), 2);
        let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
        assert_eq!(json(&bodies[0].1), json(&bodies[1].1), "a retry sends the same event");
        assert!(
            bodies[1].0.starts_with("application/cloudevents+json"),
            "{}",
            bodies[1].0
        );
        // a CloudEvents 1.0 event, read with the SDK
        let event: cloudevents::Event = serde_json::from_slice(&bodies[1].1).expect("a CloudEvents envelope");
        use cloudevents::AttributesReader;
        assert_eq!(event.specversion(), cloudevents::event::SpecVersion::V10);
        assert_eq!(event.ty(), "dev.relab.experiment.finished");
        assert_eq!(event.id(), n.event_id);
        assert_eq!(event.subject(), Some("hooked"));
        let data: serde_json::Value = match event.data() {
            Some(cloudevents::Data::Json(v)) => v.clone(),
            other => panic!("JSON data expected, got {other:?}"),
        };
        let verdict = st.verdict.as_ref().unwrap();
        assert_eq!(data["verdict"], json!(verdict.result));
        assert_eq!(data["objectives"].as_array().unwrap().len(), verdict.objectives.len());
        assert_eq!(
            data["figures"]["ordersAccepted"],
            json!(st.results.as_ref().unwrap().orders.accepted)
        );
        assert_eq!(data["dashboard"], json!(st.dashboard));
        let reasons = event_reasons(&client, &ns, "hooked").await;
        assert_eq!(
            (count(&reasons, "NotificationFailed"), count(&reasons, "Notified")),
            (1, 1),
            "{reasons:?}"
        );

        // a restart (and the resync it brings) sends nothing again
        operator.kill().await;
        let operator = Operator::start(&client, &ns).await;
        eventually!(10, "the new operator reconciled", {
            (operator.metric("relab_operator_reconciles_total").await >= 1.0).then_some(())
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(hook.bodies.lock().unwrap().len(), 2, "delivered once per run");
        operator.kill().await;
    })
    .await;
}

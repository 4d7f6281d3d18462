//! The whole loop on a real single-node cluster (`cargo xtask e2e`, which
//! builds the images, starts `tests/e2e/cluster/cluster.sh`, loads the images
//! and runs `cargo test --test e2e`; the target is `test = false`, so plain
//! `cargo test` leaves it out): `helm install` of charts/relab with
//! the project's own images, `kubectl apply`-equivalent creates of the
//! examples (shortened), real pods, and the verdict in the status. Then the
//! drills: an order-service pod deleted, the payment-mock pod deleted (its
//! ledger on its claim), the operator restarted and Postgres restarted, each
//! mid-run. Works against any cluster whose kubeconfig `RELAB_KUBECONFIG`
//! names and which has the images (docs/e2e.md). A cluster without a default
//! StorageClass (the project's own single-node cluster) gets a played
//! provisioner: [`static_volumes`] binds each claim of its class to a
//! hostPath volume it makes, as the tests elsewhere play the kubelet.

mod common;

use common::{client, helm};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use lab_service::summary::RunResults;
use relab_operator::crd::{Phase, ReliabilityExperiment, VerdictResult};
use relab_operator::runner::{self, LocalRun, RunOptions};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const RELEASE: &str = "relab-e2e";
const SCALE: f64 = 0.25;

fn image(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.into())
}

fn manifest(file: &str, scale: f64, name: &str) -> ReliabilityExperiment {
    let mut rx = common::example(file);
    common::shorten(&mut rx.spec, scale);
    rx.metadata.name = Some(name.into());
    rx
}

async fn local_run(rx: &ReliabilityExperiment) -> LocalRun {
    let admin = std::env::var("RELAB_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let experiment = relab_operator::crd::validated(rx).unwrap_or_else(|e| panic!("{}: {e:?}", rx.name_any()));
    // a database restart needs relab run's own (ephemeral) Postgres
    let restarts = experiment
        .disruptions()
        .iter()
        .any(|d| d.action == relab_model::disruptions::DisruptionAction::RestartDatabase);
    let opts = RunOptions {
        database_url: (!restarts).then_some(admin),
        ..RunOptions::default()
    };
    let (tx, _rx) = tokio::sync::watch::channel(Default::default());
    runner::run_local(&experiment, &opts, tx, CancellationToken::new())
        .await
        .expect("the local run")
}

/// The chart installed into its own namespace with the locally built images.
/// The StorageClass of the played provisioner.
const STATIC_CLASS: &str = "relab-e2e-static";
/// Where its hostPath volumes live on the node (this machine).
const STATIC_ROOT: &str = "/var/lib/relab-e2e/volumes";

/// The ledger claims' StorageClass: None when the cluster has a default
/// one; else [`STATIC_CLASS`], made here, with [`static_volumes`] binding
/// its claims.
async fn storage_class(client: &Client, stop: CancellationToken) -> Option<String> {
    use k8s_openapi::api::storage::v1::StorageClass;
    let classes: Api<StorageClass> = Api::all(client.clone());
    let default = classes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .any(|c| {
            c.annotations()
                .get("storageclass.kubernetes.io/is-default-class")
                .is_some_and(|v| v == "true")
        });
    if default {
        eprintln!("[e2e] the cluster has a default StorageClass: the ledger claims use it");
        return None;
    }
    let class: StorageClass = serde_json::from_value(serde_json::json!({
        "metadata": {"name": STATIC_CLASS},
        "provisioner": "relab.dev/e2e-played",
        "reclaimPolicy": "Retain",
        "volumeBindingMode": "Immediate",
    }))
    .unwrap();
    if classes.get_opt(STATIC_CLASS).await.unwrap().is_none() {
        classes.create(&PostParams::default(), &class).await.unwrap();
    }
    tokio::spawn(static_volumes(client.clone(), stop));
    eprintln!(
        "[e2e] no default StorageClass: {STATIC_CLASS}, its claims bound to hostPath volumes under {STATIC_ROOT}"
    );
    Some(STATIC_CLASS.into())
}

/// The played provisioner: every Pending claim of [`STATIC_CLASS`] gets a
/// hostPath PersistentVolume of its own, bound to it by `claimRef`; a
/// Released one (its claim deleted with its run) is deleted with its
/// directory. Until `stop`.
async fn static_volumes(client: Client, stop: CancellationToken) {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    while !stop.is_cancelled() {
        for claim in claims
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let spec = claim.spec.clone().unwrap_or_default();
            if spec.storage_class_name.as_deref() != Some(STATIC_CLASS) || spec.volume_name.is_some() {
                continue;
            }
            let uid = claim.uid().unwrap_or_default();
            let name = format!("relab-e2e-{}", &uid[..uid.len().min(18)]);
            if volumes.get_opt(&name).await.unwrap_or(None).is_some() {
                continue;
            }
            let dir = format!("{STATIC_ROOT}/{uid}");
            std::fs::create_dir_all(&dir).unwrap();
            // any user's (the lab runs as 65532; hostPath has no fsGroup)
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
            let size = spec
                .resources
                .and_then(|r| r.requests)
                .and_then(|r| r.get("storage").cloned())
                .map(|q| q.0)
                .unwrap_or_else(|| "64Mi".into());
            let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": STATIC_CLASS,
                    "hostPath": {"path": dir, "type": "Directory"},
                    "claimRef": {
                        "namespace": claim.namespace(),
                        "name": claim.name_any(),
                        "uid": uid,
                    },
                },
            }))
            .unwrap();
            match volumes.create(&PostParams::default(), &pv).await {
                Ok(_) => eprintln!("[e2e] played provisioner: {name} for claim {}", claim.name_any()),
                Err(e) => eprintln!("[e2e] played provisioner: {name}: {e}"),
            }
        }
        for pv in volumes
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
            let ours = pv.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()) == Some(STATIC_CLASS);
            if released && ours {
                let _ = volumes.delete(&pv.name_any(), &DeleteParams::default()).await;
                if let Some(path) = pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.host_path.as_ref())
                    .map(|h| h.path.clone())
                {
                    let _ = std::fs::remove_dir_all(path);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn install(client: &Client, ns: &str, ledger_class: Option<&str>) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(ns).await.unwrap().is_none() {
        let mut object = Namespace::default();
        object.metadata.name = Some(ns.into());
        namespaces.create(&PostParams::default(), &object).await.unwrap();
    }
    let operator = image("RELAB_E2E_OPERATOR_IMAGE", "localhost/relab-operator:dev");
    let lab = image("RELAB_E2E_LAB_IMAGE", "localhost/relab-lab-service:dev");
    let postgres = image("RELAB_E2E_POSTGRES_IMAGE", "localhost/relab-postgres:dev");
    let (op_repo, op_tag) = operator.rsplit_once(':').unwrap();
    let (lab_repo, lab_tag) = lab.rsplit_once(':').unwrap();
    let chart = common::chart_dir().to_string_lossy().into_owned();
    let started = Instant::now();
    let (ok, out, err) = helm(&[
        "install",
        RELEASE,
        &chart,
        "--namespace",
        ns,
        "--wait",
        "--timeout",
        "180s",
        "--set",
        &format!("image.repository={op_repo}"),
        "--set",
        &format!("image.tag={op_tag}"),
        "--set",
        "image.pullPolicy=Never",
        "--set",
        &format!("lab.image.repository={lab_repo}"),
        "--set",
        &format!("lab.image.tag={lab_tag}"),
        "--set",
        &format!("lab.postgresImage={postgres}"),
        "--set",
        "lab.pullPolicy=Never",
        "--set",
        "pollIntervalSeconds=2",
        "--set",
        "logFormat=text",
        "--set",
        &format!("lab.ledger.storageClass={}", ledger_class.unwrap_or_default()),
    ]);
    assert!(ok, "helm install:\n{out}{err}");
    eprintln!("[e2e] helm install --wait: {:.1} s", started.elapsed().as_secs_f64());
}

struct Watched {
    rx: ReliabilityExperiment,
    progress_moved: bool,
    /// The most seconds of load the status showed while it ran: the load
    /// generator's own account, read through the pod proxy (0 if never read).
    load_seconds: f64,
}

/// Wait until every named experiment finished, noting whether its live
/// progress moved while it ran.
async fn wait_all(api: &Api<ReliabilityExperiment>, names: &[&str], secs: u64) -> BTreeMap<String, Watched> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut sent: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut load_seconds: BTreeMap<String, f64> = BTreeMap::new();
    let mut last_phase: BTreeMap<String, Phase> = BTreeMap::new();
    loop {
        let mut done = BTreeMap::new();
        for name in names {
            let rx = api.get(name).await.unwrap();
            let status = rx.status.clone().unwrap_or_default();
            if last_phase.get(*name) != Some(&status.phase) {
                eprintln!("[e2e] {name}: {:?}", status.phase);
                last_phase.insert(name.to_string(), status.phase);
            }
            if let Some(p) = &status.progress {
                sent.entry(name.to_string()).or_default().push(p.sent);
                if !status.phase.is_finished() {
                    let most = load_seconds.entry(name.to_string()).or_default();
                    *most = most.max(p.elapsed_seconds);
                }
            }
            if status.phase.is_finished() {
                let s = sent.get(*name).cloned().unwrap_or_default();
                let moved = s.windows(2).any(|w| w[1] > w[0]);
                done.insert(
                    name.to_string(),
                    Watched {
                        rx,
                        progress_moved: moved,
                        load_seconds: load_seconds.get(*name).copied().unwrap_or_default(),
                    },
                );
            }
        }
        if done.len() == names.len() {
            return done;
        }
        assert!(
            Instant::now() < deadline,
            "not finished within {secs} s: {:?}",
            last_phase
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn results(rx: &ReliabilityExperiment) -> &RunResults {
    rx.status
        .as_ref()
        .and_then(|s| s.results.as_ref())
        .unwrap_or_else(|| panic!("{} has no results: {:?}", rx.name_any(), rx.status))
}

/// The merged results of one variant of a comparison.
fn variant_results<'a>(rx: &'a ReliabilityExperiment, variant: &str) -> &'a RunResults {
    rx.status
        .as_ref()
        .and_then(|s| s.variants.iter().find(|v| v.name == variant))
        .and_then(|v| v.results.as_ref())
        .unwrap_or_else(|| {
            panic!(
                "{} has no variant {variant} with results: {:?}",
                rx.name_any(),
                rx.status
            )
        })
}

/// A variant as judged: name, verdict, expectation met, per-objective results.
type Judged = (
    String,
    Option<VerdictResult>,
    Option<bool>,
    Vec<(String, VerdictResult)>,
);

/// Each variant as judged.
fn per_variant(status: &relab_operator::crd::ReliabilityExperimentStatus) -> Vec<Judged> {
    status
        .variants
        .iter()
        .map(|v| {
            let objectives = v.objectives.iter().map(|o| (o.name.clone(), o.result)).collect();
            (v.name.clone(), v.verdict, v.expectation_met, objectives)
        })
        .collect()
}

fn verdict(rx: &ReliabilityExperiment) -> VerdictResult {
    rx.status.as_ref().unwrap().verdict.as_ref().expect("verdict").result
}

fn no_lost_or_double(r: &RunResults, what: &str) {
    let i = &r.invariants;
    assert_eq!((i.lost_orders, i.double_charges), (0, 0), "{what}: {i:?}");
}

/// What each example says it demonstrates, from the status the operator wrote.
/// `pods`: what the run's pods said when a disruption failed (else empty).
fn demonstrates(file: &str, rx: &ReliabilityExperiment, pods: &str) {
    if file == "outage-drill.yaml" {
        // a comparison: each variant shows what it is meant to show
        let (with, without) = (variant_results(rx, "with-breaker"), variant_results(rx, "no-breaker"));
        no_lost_or_double(with, "with-breaker");
        no_lost_or_double(without, "no-breaker");
        assert!(
            with.breaker.transitions.get("closed->open").copied().unwrap_or(0) >= 1,
            "{:?}",
            with.breaker
        );
        assert_eq!(with.orders.dead_lettered, 0);
        assert!(without.breaker.transitions.is_empty(), "{:?}", without.breaker);
        assert!(without.orders.dead_lettered > 0, "{:?}", without.orders);
        let ratio = rx
            .status
            .as_ref()
            .unwrap()
            .comparison
            .as_ref()
            .and_then(|c| c.ratio.clone())
            .expect("a ratio");
        assert!(ratio.payment_calls > 1.2, "{ratio:?}");
        return;
    }
    let r = results(rx);
    no_lost_or_double(r, file);
    match file {
        "baseline.yaml" => {
            assert_eq!(r.orders.paid, r.orders.accepted, "{:?}", r.orders);
            assert_eq!(r.retries.retries, 0);
        }
        "flaky-payments.yaml" => {
            assert!(r.payment.injected.failure_rate > 0.15, "{:?}", r.payment.injected);
            assert!(r.retries.retries > 0);
            assert!(r.success_ratio >= 0.99, "{}", r.success_ratio);
        }
        "lost-responses.yaml" => {
            assert!(
                r.payment.failures_by_reason.get("timeout").copied().unwrap_or(0) > 0,
                "{:?}",
                r.payment
            );
        }
        "overload.yaml" => assert!(r.orders.shed > 0, "{:?}", r.orders),
        // each disruption fired on the cluster and hit something (pods, the
        // database, connections)
        "worker-crash.yaml" | "database-restart.yaml" | "database-slow.yaml" | "database-outage.yaml" => {
            assert!(!r.disruptions.is_empty(), "{file}: no disruption recorded");
            for d in &r.disruptions {
                assert!(d.fired_at_seconds.is_some(), "{file}: {d:?}\nits pods then:\n{pods}");
            }
        }
        "scale-out.yaml" => {
            // each of the two worker pods read once (not through the
            // Service): their calls are what the mock saw
            assert_eq!(
                r.payment.calls, r.payment.injected.calls,
                "every worker pod's calls counted once: {:?}",
                r.payment
            );
            assert!(r.retries.retries > 0, "{:?}", r.retries);
            assert_eq!(r.payment.charges, r.orders.paid, "{:?}", r.payment);
            assert_eq!(r.orders.paid, r.orders.accepted, "{:?}", r.orders);
            // three generators' histograms merged into one
            assert_eq!(r.api_latency_ms.count, r.orders.sent, "{:?}", r.api_latency_ms);
        }
        other => panic!("no expectations for {other}"),
    }
}

fn summary(rx: &ReliabilityExperiment) -> String {
    let status = rx.status.as_ref().unwrap();
    if status.results.is_none() {
        return status
            .variants
            .iter()
            .map(|v| {
                let r = v.results.clone().unwrap_or_default();
                format!(
                    "{:<26} {:?} {:<12} variant {:<14} {:?} (expect {:?}) paid {:>4} dead {:>3} calls {:>5} success {:.4} breaker opened {}",
                    rx.name_any(),
                    status.phase,
                    format!("{:?}", verdict(rx)),
                    v.name,
                    v.verdict.unwrap_or_default(),
                    v.expect,
                    r.orders.paid,
                    r.orders.dead_lettered,
                    r.payment.calls,
                    r.success_ratio,
                    r.breaker_openings()
                )
            })
            .collect::<Vec<_>>()
            .join("\n[e2e]   ");
    }
    let r = results(rx);
    format!(
        "{:<26} {:?} {:<12} accepted {:>4} paid {:>4} dead {:>3} shed {:>3} success {:.4} api p95 {:>7.1} ms retries {:>4} breaker opened {} lost {} double {}",
        rx.name_any(),
        rx.status.as_ref().unwrap().phase,
        format!("{:?}", verdict(rx)),
        r.orders.accepted,
        r.orders.paid,
        r.orders.dead_lettered,
        r.orders.shed,
        r.success_ratio,
        r.api_latency_ms.p95,
        r.retries.retries,
        r.breaker.transitions.get("closed->open").copied().unwrap_or(0),
        r.invariants.lost_orders,
        r.invariants.double_charges,
    )
}

async fn pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
}

/// Each pod of experiment `name`: its phase, and per container its
/// restarts, state and how its last run ended, with its last log lines
/// (and those of the earlier run, `--previous`, where it restarted).
async fn pod_account(client: &Client, ns: &str, name: &str) -> String {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let mut out = String::new();
    for pod in pods(client, ns, &format!("relab.dev/experiment={name}")).await {
        let status = pod.status.clone().unwrap_or_default();
        out += &format!("pod {} {:?}\n", pod.name_any(), status.phase);
        for c in status.container_statuses.unwrap_or_default() {
            out += &format!(
                "  {} restarts {} state {:?}\n  last state {:?}\n",
                c.name, c.restart_count, c.state, c.last_state
            );
            let runs = [(false, "its last lines"), (true, "its previous run's last lines")];
            for (previous, what) in runs.into_iter().take(if c.restart_count > 0 { 2 } else { 1 }) {
                let params = kube::api::LogParams {
                    container: Some(c.name.clone()),
                    previous,
                    tail_lines: Some(40),
                    ..Default::default()
                };
                match api.logs(&pod.name_any(), &params).await {
                    Ok(log) => out += &format!("  {what}:\n{log}\n"),
                    Err(e) => out += &format!("  {what}: {e}\n"),
                }
            }
        }
    }
    out
}

/// Whether `probe` held within `secs` (asked every 500 ms).
async fn within<F, Fut>(secs: u64, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !probe().await {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    true
}

async fn wait_until<F, Fut>(secs: u64, what: &str, probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(within(secs, probe).await, "not within {secs} s: {what}");
}

async fn running_with_progress(api: &Api<ReliabilityExperiment>, name: &str, min_sent: u64) {
    wait_until(240, &format!("{name} running with progress >= {min_sent}"), || async {
        let rx = api.get(name).await.unwrap();
        let s = rx.status.unwrap_or_default();
        s.phase == Phase::Running && s.progress.is_some_and(|p| p.sent >= min_sent)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_and_drills_on_a_real_cluster() {
    let client = client().await;
    let ns = "relab-e2e";

    // relab run of each example first (the reference verdicts)
    let examples = [
        "baseline.yaml",
        "flaky-payments.yaml",
        "lost-responses.yaml",
        "outage-drill.yaml",
        "overload.yaml",
        // spec.disruptions: kills by the operator, the rest by the load generator
        "worker-crash.yaml",
        "database-restart.yaml",
        "database-slow.yaml",
        "database-outage.yaml",
        // replicas 3, workerReplicas 2, load.parallelism 3: exact when scaled out
        "scale-out.yaml",
    ];
    // the comparison and the disruptions need time to show: a crash's pods
    // come back, a window lasts, recovery is measured after it
    let scale = |file: &str| {
        let longer = file.starts_with("outage") || file.starts_with("worker-crash") || file.starts_with("database-");
        if longer {
            0.5
        } else {
            SCALE
        }
    };
    let name = |file: &str| file.trim_end_matches(".yaml").to_string();
    let mut local = BTreeMap::new();
    for file in examples {
        let t = Instant::now();
        let run = local_run(&manifest(file, scale(file), &name(file))).await;
        eprintln!(
            "[e2e] relab run {file}: {:?} in {:.1} s",
            run.status.verdict.as_ref().map(|v| v.result),
            t.elapsed().as_secs_f64()
        );
        local.insert(file, run);
    }

    let provisioner = CancellationToken::new();
    let ledger_class = storage_class(&client, provisioner.clone()).await;
    install(&client, ns, ledger_class.as_deref()).await;
    let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), ns);

    // the examples, two at a time (2 cores)
    let mut finished = BTreeMap::new();
    let mut pod_accounts: BTreeMap<String, String> = BTreeMap::new();
    for pair in examples.chunks(2) {
        let t = Instant::now();
        for file in pair {
            kubectl_apply(ns, &manifest(file, scale(file), &name(file)));
        }
        let names: Vec<String> = pair.iter().map(|f| name(f)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let done = wait_all(&api, &refs, 420).await;
        eprintln!("[e2e] {refs:?} finished in {:.1} s", t.elapsed().as_secs_f64());
        finished.extend(pair.iter().map(|f| {
            (
                *f,
                done.get(&name(f))
                    .map(|w| (w.rx.clone(), w.progress_moved, w.load_seconds))
                    .unwrap(),
            )
        }));
        for name in &refs {
            let board = done[*name]
                .rx
                .status
                .as_ref()
                .unwrap()
                .dashboard
                .clone()
                .expect("status.dashboard");
            Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get(&board)
                .await
                .expect("the dashboard ConfigMap");
        }
        if refs.contains(&"scale-out") {
            // the two load generators that followed the first sent their shares and reported
            let selector = "relab.dev/experiment=scale-out,relab.dev/component=loadgen-share";
            // what the run ended as, said when the followers did not succeed
            let ended = done["scale-out"].rx.status.clone().unwrap_or_default();
            let what = format!(
                "the followers' Job: 2 succeeded (scale-out ended {:?}, conditions {:?})",
                ended.phase, ended.conditions
            );
            let jobs = || async {
                Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), ns)
                    .list(&ListParams::default().labels(selector))
                    .await
                    .unwrap()
                    .items
            };
            let succeeded = within(60, || async {
                let jobs = jobs().await;
                jobs.len() == 1 && jobs[0].status.as_ref().and_then(|s| s.succeeded) == Some(2)
            })
            .await;
            if !succeeded {
                // and what the Job and the pods said
                let job = jobs().await.into_iter().map(|j| j.status).collect::<Vec<_>>();
                let pods = pod_account(&client, ns, "scale-out").await;
                panic!("not within 60 s: {what}\nthe Job's status: {job:?}\nits pods:\n{pods}");
            }
        }
        // a run with disruptions: what its pods said (restarts, how the
        // last container ended, its last log lines: the load generator's
        // account of each recovery among them), read before they go, for
        // an assertion that fails below
        for name in &refs {
            let rx = &done[*name].rx;
            let disrupted = rx
                .status
                .as_ref()
                .and_then(|s| s.results.as_ref())
                .is_some_and(|r| !r.disruptions.is_empty());
            if disrupted {
                pod_accounts.insert(name.to_string(), pod_account(&client, ns, name).await);
            }
        }
        // deleting an experiment removes every pod it made (and frees the
        // node for the next pair)
        let t = Instant::now();
        for name in &refs {
            remove(&client, ns, &api, name).await;
        }
        eprintln!(
            "[e2e] {refs:?} deleted, every pod stopped in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    eprintln!("[e2e] verdicts and key figures from the status the operator wrote:");
    for file in examples {
        eprintln!("[e2e]   {}", summary(&finished[file].0));
    }
    for file in examples {
        let (rx, progress_moved, load_seconds) = &finished[file];
        demonstrates(file, rx, pod_accounts.get(&name(file)).map_or("", String::as_str));
        assert!(progress_moved, "{file}: the live progress never moved while it ran");
        // the phase machine hears the load generator itself (Draining comes
        // from its stage): its seconds of load reached the status
        assert!(
            *load_seconds > 0.0,
            "{file}: the load generator's own progress (GET /progress through the pod proxy) never reached the status"
        );
        // same verdict direction as relab run, per objective
        let theirs = rx.status.as_ref().unwrap().verdict.as_ref().unwrap();
        let ours = local[file].status.verdict.as_ref().unwrap();
        let per = |v: &relab_operator::crd::Verdict| {
            v.objectives
                .iter()
                .map(|o| (o.name.clone(), o.passed))
                .collect::<Vec<_>>()
        };
        let why = || {
            let objectives = |v: &relab_operator::crd::Verdict| {
                v.objectives
                    .iter()
                    .map(|o| format!("  {} {}: observed {} ({})\n", o.name, o.target, o.observed, o.passed))
                    .collect::<String>()
            };
            let disruptions = |r: Option<&relab_model::results::RunResults>| {
                r.map(|r| format!("{:#?}", r.disruptions)).unwrap_or_default()
            };
            let ours_account = relab_model::disruptions::recovery_account(
                &local[file].output.results.disruptions,
                &local[file].output.timeline,
            );
            format!(
                "in the cluster:\n{}{}\nits pods before they went:\n{}\nrelab run:\n{}{}\n{}",
                objectives(theirs),
                disruptions(rx.status.as_ref().unwrap().results.as_ref()),
                pod_accounts.get(&name(file)).map_or("", String::as_str),
                objectives(ours),
                disruptions(local[file].status.results.as_ref()),
                ours_account.join("\n")
            )
        };
        assert_eq!(
            per(theirs),
            per(ours),
            "{file}: per-objective verdict in the cluster vs relab run\n{}",
            why()
        );
        assert_eq!(
            theirs.result, ours.result,
            "{file}: verdict in the cluster vs relab run"
        );
        assert_eq!(
            per_variant(rx.status.as_ref().unwrap()),
            per_variant(&local[file].status),
            "{file}: per-variant verdicts in the cluster vs relab run"
        );
    }

    drills(&client, ns, &api).await;

    all_experiment_pods_gone(&client, ns).await;
    // the ledger claims went with their runs (owner references)
    wait_until(120, "every ledger claim gone", || async {
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    })
    .await;
    provisioner.cancel();

    // helm uninstall leaves no operator object
    let (ok, out, err) = helm(&["uninstall", RELEASE, "--namespace", ns, "--wait", "--timeout", "120s"]);
    assert!(ok, "helm uninstall:\n{out}{err}");
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let (ok, left, err) = common::kubectl(&[
        "get",
        "deployments,services,configmaps,serviceaccounts,roles,rolebindings,leases",
        "-n",
        ns,
        "-l",
        &selector,
        "-o",
        "name",
    ]);
    assert!(ok, "kubectl get: {err}");
    assert_eq!(left.trim(), "", "objects the release left behind");
    let (ok, left, err) = common::kubectl(&["get", "clusterroles,clusterrolebindings", "-l", &selector, "-o", "name"]);
    assert!(ok, "kubectl get: {err}");
    assert_eq!(left.trim(), "", "cluster objects the release left behind");
    wait_until(120, "the operator's pods gone", || async {
        pods(&client, ns, &selector).await.is_empty()
    })
    .await;
    Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await
        .ok();
}

/// A disruption `action` named `name` at a third of `rx`'s load.
fn disruption(rx: &ReliabilityExperiment, name: &str, action: &str) -> relab_model::disruptions::DisruptionSpec {
    let at = (rx.spec.load.total_seconds() / 3).max(1);
    serde_json::from_value(serde_json::json!({"name": name, "atSeconds": at, "action": action})).expect("a disruption")
}

/// The drills, two at a time like the examples (2 cores); the operator's
/// restart alone, since it pauses every run's reconciles.
async fn drills(client: &Client, ns: &str, api: &Api<ReliabilityExperiment>) {
    tokio::join!(
        drill_order_service_killed(client, ns, api),
        drill_postgres_restarted(client, ns, api)
    );
    tokio::join!(drill_mock_deleted(client, ns, api), drill_stopped(client, ns, api));
    drill_operator_restarted(client, ns, api).await;
}

/// Drill: the order service killed mid-run, as a manifest asks
/// (KillOrderService: the operator deletes its pods with grace 0): a new
/// one takes over
async fn drill_order_service_killed(client: &Client, ns: &str, api: &Api<ReliabilityExperiment>) {
    let mut rx = manifest("flaky-payments.yaml", 0.75, "drill-pod-delete");
    rx.spec.disruptions = vec![disruption(&rx, "kill-order-service", "KillOrderService")];
    api.create(&PostParams::default(), &rx).await.unwrap();
    running_with_progress(api, "drill-pod-delete", 1).await;
    let sel = "relab.dev/experiment=drill-pod-delete,relab.dev/component=order-service";
    let old = pods(client, ns, sel).await;
    assert_eq!(old.len(), 1);
    let done = wait_all(api, &["drill-pod-delete"], 420)
        .await
        .remove("drill-pod-delete")
        .unwrap()
        .rx;
    let fired = &results(&done).disruptions[0];
    assert!(fired.fired_at_seconds.is_some(), "{fired:?}");
    assert_eq!(fired.hit, [old[0].name_any()], "the operator deleted the pod");
    eprintln!(
        "[e2e] drill: the operator killed order-service pod {}",
        old[0].name_any()
    );
    let now = pods(client, ns, sel).await;
    assert!(
        now.iter().all(|p| p.name_any() != old[0].name_any()),
        "a new pod took over"
    );
    let r = results(&done);
    eprintln!("[e2e]   {}", summary(&done));
    no_lost_or_double(r, "order-service pod deleted mid-run");
    assert_eq!(
        r.orders.accepted,
        r.orders.paid + r.orders.failed + r.orders.dead_lettered + r.orders.pending,
        "{:?}",
        r.orders
    );

    remove(client, ns, api, "drill-pod-delete").await;
}

/// Drill: the payment-mock pod deleted mid-run (grace 0, like a node's loss of
/// the process): the new pod mounts the run's ledger claim and comes back
/// with every charge and idempotency key, so retried charges are replays
/// and the audit stays exact
async fn drill_mock_deleted(client: &Client, ns: &str, api: &Api<ReliabilityExperiment>) {
    let rx = manifest("lost-responses.yaml", 0.75, "drill-mock-delete");
    api.create(&PostParams::default(), &rx).await.unwrap();
    wait_until(240, "drill-mock-delete running with paid orders", || async {
        let s = api.get("drill-mock-delete").await.unwrap().status.unwrap_or_default();
        s.phase == Phase::Running && s.progress.is_some_and(|p| p.paid >= 20)
    })
    .await;
    let sel = "relab.dev/experiment=drill-mock-delete,relab.dev/component=payment-mock";
    let old = pods(client, ns, sel).await;
    assert_eq!(old.len(), 1);
    Api::<Pod>::namespaced(client.clone(), ns)
        .delete(
            &old[0].name_any(),
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await
        .unwrap();
    eprintln!("[e2e] drill: deleted payment-mock pod {} (grace 0)", old[0].name_any());
    let done = wait_all(api, &["drill-mock-delete"], 420)
        .await
        .remove("drill-mock-delete")
        .unwrap()
        .rx;
    let now = pods(client, ns, sel).await;
    assert!(
        now.iter().all(|p| p.name_any() != old[0].name_any()),
        "a new mock pod took over"
    );
    let r = results(&done);
    eprintln!("[e2e]   {}", summary(&done));
    no_lost_or_double(r, "payment-mock pod deleted mid-run");
    // a ledger lost with the pod would hold only the charges made after it
    assert!(
        r.payment.charges >= r.orders.paid && r.orders.paid > 0,
        "every paid order's charge is in the ledger: {} charges, {} paid",
        r.payment.charges,
        r.orders.paid
    );
    remove(client, ns, api, "drill-mock-delete").await;
}

/// Drill: the operator restarted mid-run: the run completes once
async fn drill_operator_restarted(client: &Client, ns: &str, api: &Api<ReliabilityExperiment>) {
    let rx = manifest("baseline.yaml", 0.75, "drill-operator-restart");
    api.create(&PostParams::default(), &rx).await.unwrap();
    running_with_progress(api, "drill-operator-restart", 30).await;
    let op_sel = format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator");
    for p in pods(client, ns, &op_sel).await {
        Api::<Pod>::namespaced(client.clone(), ns)
            .delete(&p.name_any(), &DeleteParams::default())
            .await
            .unwrap();
        eprintln!("[e2e] drill: deleted operator pod {}", p.name_any());
    }
    let done = wait_all(api, &["drill-operator-restart"], 420)
        .await
        .remove("drill-operator-restart")
        .unwrap()
        .rx;
    eprintln!("[e2e]   {}", summary(&done));
    no_lost_or_double(results(&done), "operator restarted mid-run");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let analyzing = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("drill-operator-restart"))
        .filter(|e| e.reason.as_deref() == Some("Analyzing"))
        .count();
    assert_eq!(analyzing, 1, "results written once");
    let jobs = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("relab.dev/experiment=drill-operator-restart"))
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 1, "one load generator");

    remove(client, ns, api, "drill-operator-restart").await;
}

/// Drill: Postgres restarted mid-run, as a manifest asks (RestartDatabase:
/// the load generator's immediate shutdown over SQL; the container
/// restarts in place on its volume): the lab recovers, and the audit
/// says what happened
async fn drill_postgres_restarted(client: &Client, ns: &str, api: &Api<ReliabilityExperiment>) {
    let mut rx = manifest("baseline.yaml", 0.75, "drill-postgres-restart");
    rx.spec.disruptions = vec![disruption(&rx, "restart-postgres", "RestartDatabase")];
    api.create(&PostParams::default(), &rx).await.unwrap();
    running_with_progress(api, "drill-postgres-restart", 1).await;
    let pg = pods(
        client,
        ns,
        "relab.dev/experiment=drill-postgres-restart,relab.dev/component=postgres",
    )
    .await;
    let restarts = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|c| c[0].restart_count)
            .unwrap_or(0)
    };
    let before = restarts(&pg[0]);
    let pods_api = Api::<Pod>::namespaced(client.clone(), ns);
    wait_until(240, "postgres restarted in place (same pod)", || async {
        pods_api
            .get(&pg[0].name_any())
            .await
            .map(|p| restarts(&p) > before)
            .unwrap_or(false)
    })
    .await;
    eprintln!("[e2e] drill: postgres restarted in {}", pg[0].name_any());
    let done = wait_all(api, &["drill-postgres-restart"], 420)
        .await
        .remove("drill-postgres-restart")
        .unwrap()
        .rx;
    eprintln!("[e2e]   {}", summary(&done));
    let r = results(&done);
    assert!(r.orders.paid > 0, "the lab recovered: {:?}", r.orders);
    // honest audit: every accepted order is accounted for in some state, and the figures add up
    assert_eq!(
        r.orders.accepted,
        r.orders.paid + r.orders.failed + r.orders.dead_lettered + r.orders.pending,
        "{:?}",
        r.orders
    );
    assert_eq!(r.invariants.double_charges, 0, "{:?}", r.invariants);
    remove(client, ns, api, "drill-postgres-restart").await;
}

/// Drill: a stop condition on the cluster: the load generator reads
/// spec.stopWhen from the run's ConfigMap and stops its own load at the
/// cap, the audit still runs, and the run ends Failed, reason Stopped
async fn drill_stopped(client: &Client, ns: &str, api: &Api<ReliabilityExperiment>) {
    let mut rx = manifest("flaky-payments.yaml", 0.75, "drill-stop");
    rx.spec.stop_when = vec![relab_model::ops::StopCondition {
        max_duration_seconds: Some(8),
        ..Default::default()
    }];
    let planned = rx.spec.load.total_seconds() as f64;
    api.create(&PostParams::default(), &rx).await.unwrap();
    let done = wait_all(api, &["drill-stop"], 420)
        .await
        .remove("drill-stop")
        .unwrap()
        .rx;
    eprintln!("[e2e]   {}", summary(&done));
    let st = done.status.as_ref().unwrap();
    assert_eq!(st.phase, Phase::Failed, "{st:?}");
    let stopped = results(&done).stopped.clone().expect("results.stopped");
    assert!(
        stopped.condition.starts_with("stopWhen[0] maxDurationSeconds 8"),
        "{stopped:?}"
    );
    // breach to stop: within 2 s of the cap (the engine samples once a second)
    assert!(
        (8.0..=10.0).contains(&stopped.at_seconds),
        "stopped at {} s of a {planned} s load: {stopped:?}",
        stopped.at_seconds
    );
    let met = st.conditions.iter().find(|c| c.type_ == "ObjectivesMet").unwrap();
    assert_eq!(
        (met.status.as_str(), met.reason.as_str()),
        ("False", "Stopped"),
        "{met:?}"
    );
    no_lost_or_double(results(&done), "stopped by stopWhen");
    remove(client, ns, api, "drill-stop").await;
}

/// `kubectl apply -f` of the (time-scaled) manifest, as a user would.
fn kubectl_apply(ns: &str, rx: &ReliabilityExperiment) {
    let path = std::env::temp_dir().join(format!("relab-e2e-{}.yaml", rx.name_any()));
    std::fs::write(&path, serde_yaml::to_string(rx).unwrap()).unwrap();
    let (ok, out, err) = common::kubectl(&["apply", "-n", ns, "-f", &path.to_string_lossy()]);
    assert!(ok, "kubectl apply {}: {out}{err}", path.display());
    std::fs::remove_file(&path).ok();
}

/// Delete an experiment and wait until every pod it made is gone.
///
/// "Gone" here: deleted and no container running. Kubelet 1.20 removes the
/// pod objects themselves up to a minute later; the suite checks at its end
/// that every pod object of every experiment has gone
/// ([`all_experiment_pods_gone`]).
async fn remove(client: &Client, ns: &str, api: &Api<ReliabilityExperiment>, name: &str) {
    api.delete(name, &DeleteParams::background()).await.unwrap();
    wait_until(180, &format!("every pod of {name} stopped and deleted"), || async {
        pods(client, ns, &format!("relab.dev/experiment={name}"))
            .await
            .iter()
            .all(|p| {
                let running = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.state.as_ref().is_some_and(|st| st.running.is_some()))
                    });
                p.metadata.deletion_timestamp.is_some() && !running
            })
    })
    .await;
}

/// Every pod the operator made in `ns` is gone, objects included.
async fn all_experiment_pods_gone(client: &Client, ns: &str) {
    wait_until(240, "every experiment pod object gone", || async {
        pods(client, ns, "app.kubernetes.io/managed-by=relab-operator")
            .await
            .is_empty()
    })
    .await;
}

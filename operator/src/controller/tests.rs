//! Reconciles against a mocked API server (kube's client over a
//! `tower_test` mock, as kube-rs/controller-rs does): each test states
//! every request the reconcile must make, in order, and answers it as the
//! API server would. What needs a real server (watches, garbage
//! collection, the kubelet's pod states) is in `operator/tests/controller.rs`.

use super::reconcile::reconcile;
use super::*;
use crate::crd::{Phase, ReliabilityExperimentStatus};
use http::{Method, Request, Response};
use kube::client::Body;
use relab_model::status::get_condition;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

/// The mocked API server's side: takes the client's requests one by one.
struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// One request the reconcile made.
struct Seen {
    method: Method,
    path: String,
    body: Value,
}

impl ApiServer {
    /// The next request; `answer` makes the response body from it.
    async fn next(&mut self, answer: impl FnOnce(&Seen) -> Value) -> Seen {
        let (request, send) = tokio::time::timeout(Duration::from_secs(10), self.0.next_request())
            .await
            .expect("the reconcile made its next request within 10 s")
            .expect("the client is still there");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("a request body");
        let seen = Seen {
            method: parts.method,
            path: parts.uri.path().to_string(),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("a JSON body")
            },
        };
        let reply = serde_json::to_vec(&answer(&seen)).expect("a JSON answer");
        send.send_response(Response::builder().body(Body::from(reply)).expect("a response"));
        seen
    }

    /// A server-side apply of `path` (answered with the object, a Service
    /// with a ClusterIP); returns the applied object.
    async fn expect_apply(&mut self, path: &str) -> Value {
        let seen = self.next(applied).await;
        assert_eq!((&seen.method, seen.path.as_str()), (&Method::PATCH, path));
        seen.body
    }

    /// `n` server-side applies made concurrently (in any order): their paths.
    async fn expect_applies(&mut self, n: usize) -> Vec<String> {
        let mut paths = Vec::new();
        for _ in 0..n {
            let seen = self.next(applied).await;
            assert_eq!(seen.method, Method::PATCH, "{}", seen.path);
            paths.push(seen.path);
        }
        paths.sort();
        paths
    }

    /// The status replace (PUT .../status, answered as stored); returns the status.
    async fn expect_status_replace(&mut self) -> ReliabilityExperimentStatus {
        let seen = self.next(|s| s.body.clone()).await;
        assert_eq!(
            (&seen.method, seen.path.as_str()),
            (
                &Method::PUT,
                "/apis/relab.dev/v1alpha1/namespaces/lab/reliabilityexperiments/drill/status"
            )
        );
        assert_eq!(
            seen.body["metadata"]["resourceVersion"], "41",
            "guarded by the resourceVersion read"
        );
        assert_eq!(
            (seen.body["spec"].is_null(), seen.body["kind"].as_str()),
            (true, Some("ReliabilityExperiment")),
            "the status alone is sent (the subresource keeps the spec as stored)"
        );
        serde_json::from_value(seen.body["status"].clone()).expect("a status")
    }

    /// One Event published on the experiment; returns its reason.
    async fn expect_event(&mut self) -> String {
        let seen = self.next(|s| s.body.clone()).await;
        assert_eq!(
            (&seen.method, seen.path.as_str()),
            (&Method::POST, "/apis/events.k8s.io/v1/namespaces/lab/events")
        );
        assert_eq!(seen.body["regarding"]["name"], "drill");
        seen.body["reason"].as_str().expect("a reason").to_string()
    }

    /// A metadata list of `collection` (answered with one object, `name`),
    /// then the DELETE of that object.
    async fn expect_list_then_delete(&mut self, collection: &str, api_version: &str, kind: &str, name: &str) {
        let object = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
        let list = self.next(|_| metadata_list(json!([object.clone()]))).await;
        assert_eq!((&list.method, list.path.as_str()), (&Method::GET, collection));
        let delete = self.next(|_| object.clone()).await;
        assert_eq!(
            (&delete.method, delete.path.as_str()),
            (&Method::DELETE, format!("{collection}/{name}").as_str())
        );
    }

    /// No further request once the client is gone.
    async fn expect_no_more(mut self) {
        let next = tokio::time::timeout(Duration::from_secs(10), self.0.next_request())
            .await
            .expect("the client was dropped");
        if let Some((request, _)) = next {
            panic!("unexpected request: {} {}", request.method(), request.uri());
        }
    }
}

/// A metadata list (`list_metadata`'s answer) of `items`.
fn metadata_list(items: Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items})
}

/// An applied object as the API server returns it (Services get a ClusterIP).
fn applied(seen: &Seen) -> Value {
    let mut object = seen.body.clone();
    if object["kind"] == "Service" {
        let n = seen.path.len() % 200;
        object["spec"]["clusterIP"] = json!(format!("10.0.0.{n}"));
    }
    object
}

fn options() -> Options {
    Options {
        instance: "relab-operator-test".into(),
        ..Options::default()
    }
}

fn context(options: Options) -> (Arc<Context>, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let metrics = OperatorMetrics::new().expect("metrics");
    (Arc::new(Context::new(client, options, metrics)), ApiServer(handle))
}

/// A stored experiment `drill` in `lab` at generation 3.
fn stored(spec_yaml: &str, status: Option<ReliabilityExperimentStatus>) -> Arc<ReliabilityExperiment> {
    let mut rx = crate::crd::parse(&format!(
        "apiVersion: relab.dev/v1alpha1\nkind: ReliabilityExperiment\nmetadata: {{name: drill, namespace: lab}}\nspec:\n{spec_yaml}"
    ))
    .expect("a manifest the schema accepts");
    rx.metadata.uid = Some("3f0c6f7e-0000-4000-8000-000000000003".into());
    rx.metadata.generation = Some(3);
    rx.metadata.resource_version = Some("41".into());
    rx.status = status;
    Arc::new(rx)
}

const LOAD: &str = "  load: {ratePerSecond: 5, durationSeconds: 10}\n";

#[tokio::test]
async fn an_invalid_spec_writes_valid_false_naming_every_field_and_one_event_and_applies_nothing() {
    let (ctx, mut server) = context(options());
    let rx = stored(
        "  load: {ratePerSecond: 5}\n  orderService: {retry: {initialBackoffMs: 500, maxBackoffMs: 100}}\n",
        None,
    );
    let verifier = tokio::spawn(async move {
        let status = server.expect_status_replace().await;
        let valid = get_condition(&status.conditions, "Valid").expect("Valid");
        assert_eq!((valid.status.as_str(), valid.reason.as_str()), ("False", "InvalidSpec"));
        for path in ["spec.load.durationSeconds", "spec.orderService.retry.maxBackoffMs"] {
            assert!(valid.message.contains(path), "{path} missing: {}", valid.message);
        }
        assert_eq!(status.observed_generation, None, "no run starts");
        assert_eq!(server.expect_event().await, "InvalidSpec");
        server.expect_no_more().await;
    });
    let action = reconcile(rx, ctx).await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    verifier.await.expect("the API server saw what it expected");
}

#[tokio::test]
async fn a_suspended_spec_stays_pending_with_suspended_true_and_applies_only_its_dashboard() {
    let (ctx, mut server) = context(options());
    let rx = stored(&format!("{LOAD}  suspend: true\n"), None);
    let verifier = tokio::spawn(async move {
        let status = server.expect_status_replace().await;
        assert_eq!((status.phase, status.observed_generation), (Phase::Pending, Some(3)));
        let suspended = get_condition(&status.conditions, "Suspended").expect("Suspended");
        assert_eq!(suspended.status, "True");
        assert_eq!(status.dashboard.as_deref(), Some("drill-dashboard"));
        let board = server
            .expect_apply("/api/v1/namespaces/lab/configmaps/drill-dashboard")
            .await;
        assert_eq!(board["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(server.expect_event().await, "RunStarted");
        server.expect_no_more().await;
    });
    let action = reconcile(rx, ctx).await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    verifier.await.expect("the API server saw what it expected");
}

#[tokio::test]
async fn an_experiment_being_deleted_at_a_new_generation_starts_no_run_and_writes_nothing() {
    let (ctx, server) = context(options());
    // what orphan or foreground deletion leaves to see: a deletion time, a
    // finalizer, and the generation bumped past the status's
    let mut rx = (*stored(LOAD, None)).clone();
    rx.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-12-07T12:00:00Z".parse().unwrap(),
    ));
    rx.metadata.finalizers = Some(vec!["orphan".into()]);
    let verifier = tokio::spawn(server.expect_no_more());
    let action = reconcile(Arc::new(rx), ctx).await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    verifier.await.expect("the API server saw no request");
}

#[tokio::test]
async fn a_finished_run_is_not_applied_again_and_writes_nothing() {
    let (ctx, server) = context(Options {
        dashboards: None,
        ..options()
    });
    let finished = ReliabilityExperimentStatus {
        phase: Phase::Succeeded,
        observed_generation: Some(3),
        finish_time: Some("2026-01-01T00:00:00Z".into()),
        ..ReliabilityExperimentStatus::default()
    };
    let rx = stored(LOAD, Some(finished));
    let verifier = tokio::spawn(server.expect_no_more());
    let action = reconcile(rx, ctx).await.expect("reconciled");
    assert_eq!(action, Action::await_change(), "no TTL: nothing left to do");
    verifier.await.expect("the API server saw no request");
}

#[tokio::test]
async fn a_new_run_applies_its_services_then_the_workloads_then_writes_provisioning_then_its_dashboard() {
    let (ctx, mut server) = context(options());
    let rx = stored(LOAD, None);
    let verifier = tokio::spawn(async move {
        let services = server.expect_applies(3).await;
        assert_eq!(
            services,
            ["drill-r3-order-service", "drill-r3-payment-mock", "drill-r3-postgres"]
                .map(|n| format!("/api/v1/namespaces/lab/services/{n}"))
        );
        let workloads = server.expect_applies(6).await;
        assert_eq!(
            workloads,
            [
                "/api/v1/namespaces/lab/configmaps/drill-r3-config",
                "/api/v1/namespaces/lab/persistentvolumeclaims/drill-r3-payment-ledger",
                "/apis/apps/v1/namespaces/lab/deployments/drill-r3-order-service",
                "/apis/apps/v1/namespaces/lab/deployments/drill-r3-payment-mock",
                "/apis/apps/v1/namespaces/lab/deployments/drill-r3-postgres",
                "/apis/batch/v1/namespaces/lab/jobs/drill-r3-loadgen",
            ]
        );
        // the status first (what a burst of new experiments waits for), then
        // the dashboard it names, then the Events
        let status = server.expect_status_replace().await;
        assert_eq!(status.phase, Phase::Provisioning);
        server
            .expect_apply("/api/v1/namespaces/lab/configmaps/drill-dashboard")
            .await;
        let reasons = [server.expect_event().await, server.expect_event().await];
        assert_eq!(reasons, ["RunStarted", "Provisioning"]);
        server.expect_no_more().await;
    });
    let action = reconcile(rx.clone(), ctx.clone()).await.expect("reconciled");
    assert_eq!(action, Action::requeue(ctx.options.poll_interval));
    // woken again before the cache shows the status just written (the
    // children's watch events do that): no request, a look again shortly
    let again = reconcile(rx, ctx.clone()).await.expect("reconciled");
    assert_eq!(again, Action::requeue(Duration::from_millis(200)));
    drop(ctx);
    verifier.await.expect("the API server saw what it expected");
}

#[tokio::test]
async fn queued_writes_wait_for_the_provisioning_reconciles_and_a_superseded_dashboard_is_not_applied() {
    let (ctx, mut server) = context(options());
    let rx = stored(LOAD, None);
    let experiment = crate::crd::validated(&rx).expect("a valid spec");
    let owner = build::Owner::of(&rx);
    let now = ctx.options.clock.now();
    let (mut first, _) = machine::new_generation(&experiment, &Default::default(), 3, now);
    let mut second = first.clone();
    second.start_time = Some("2026-01-01T12:00:00Z".into());

    // two dashboards of one experiment queued while a reconcile provisions a run: nothing is written yet
    let running = ctx.busy.enter();
    for status in [&mut first, &mut second] {
        let board = status::dashboard(&ctx, &owner, &experiment, status).expect("a new dashboard is due");
        status::apply_dashboard(&ctx, "lab", board, false)
            .await
            .expect("queued");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), server.0.next_request())
            .await
            .is_err(),
        "no write while a reconcile provisions a run"
    );

    // the reconcile ends: only the newer dashboard is applied
    drop(running);
    let board = server
        .expect_apply("/api/v1/namespaces/lab/configmaps/drill-dashboard")
        .await;
    let json = board["data"]
        .as_object()
        .expect("data")
        .values()
        .next()
        .expect("a dashboard")
        .to_string();
    assert!(
        json.contains("2026-01-01"),
        "the newer dashboard (its run's start) was applied"
    );
    drop(ctx);
    server.expect_no_more().await;
}

#[tokio::test]
async fn a_new_run_over_an_earlier_experiments_children_of_its_names_deletes_them_first_and_applies_nothing() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::{reflector, watcher};
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let mut context = Context::new(client, options(), OperatorMetrics::new().expect("metrics"));
    // this experiment was created at 12:00:10; an earlier one of the same
    // name (deleted, applied again) left its load generator's Job and pod
    // under the same names, created at 12:00:00 and still going
    let mut rx = (*stored(LOAD, None)).clone();
    rx.metadata.creation_timestamp = Some(Time("2026-12-07T12:00:10Z".parse().unwrap()));
    let earlier = |name: &str| {
        let mut meta = kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("lab".into()),
            creation_timestamp: Some(Time("2026-12-07T12:00:00Z".parse().unwrap())),
            ..Default::default()
        };
        meta.labels = Some(
            [
                ("relab.dev/experiment", "drill"),
                ("relab.dev/run", "3"),
                ("relab.dev/component", "loadgen"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        );
        meta
    };
    let (pods, mut pod_writer) = reflector::store::<Pod>();
    let (jobs, mut job_writer) = reflector::store::<k8s_openapi::api::batch::v1::Job>();
    pod_writer.apply_watcher_event(&watcher::Event::Init);
    pod_writer.apply_watcher_event(&watcher::Event::InitApply(Pod {
        metadata: earlier("drill-r3-loadgen-x7k2p"),
        ..Pod::default()
    }));
    pod_writer.apply_watcher_event(&watcher::Event::InitDone);
    job_writer.apply_watcher_event(&watcher::Event::Init);
    job_writer.apply_watcher_event(&watcher::Event::InitApply(k8s_openapi::api::batch::v1::Job {
        metadata: earlier("drill-r3-loadgen"),
        ..Default::default()
    }));
    job_writer.apply_watcher_event(&watcher::Event::InitDone);
    context.caches = cache::Caches {
        pods: Some(pods),
        jobs: Some(jobs),
    };
    let ctx = Arc::new(context);
    let mut server = ApiServer(handle);
    let verifier = tokio::spawn(async move {
        // each kind of child listed under this run's labels; the earlier Job deleted
        server
            .expect_list_then_delete(
                "/apis/batch/v1/namespaces/lab/jobs",
                "batch/v1",
                "Job",
                "drill-r3-loadgen",
            )
            .await;
        for path in [
            "/apis/apps/v1/namespaces/lab/deployments",
            "/api/v1/namespaces/lab/services",
            "/api/v1/namespaces/lab/configmaps",
            "/api/v1/namespaces/lab/persistentvolumeclaims",
        ] {
            let seen = server.next(|_| metadata_list(json!([]))).await;
            assert_eq!((&seen.method, seen.path.as_str()), (&Method::GET, path));
        }
        // and its pods (an orphaned one has no owner for the garbage collector)
        server
            .expect_list_then_delete("/api/v1/namespaces/lab/pods", "v1", "Pod", "drill-r3-loadgen-x7k2p")
            .await;
        // nothing applied, no status written: the run waits for them to go
        server.expect_no_more().await;
    });
    let action = reconcile(Arc::new(rx), ctx.clone()).await.expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    drop(ctx);
    verifier.await.expect("the API server saw what it expected");
}

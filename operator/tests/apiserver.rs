//! The CRD against a real Kubernetes API server: server-side apply of the
//! CRD, schema bounds refused with their field path, the status subresource,
//! printer columns.
//!
//! Needs a cluster: `RELAB_KUBECONFIG` (preferred) or `KUBECONFIG` must name a
//! kubeconfig. Locally:
//!
//! ```sh
//! eval "$(bash scripts/k8s/control-plane.sh start)"   # kube-apiserver 1.20 + etcd on loopback
//! cargo test -p relab-operator --test apiserver
//! bash scripts/k8s/control-plane.sh stop
//! ```
//!
//! Any other cluster works too (e.g. kind). Each test works in a namespace of
//! its own (random name, deleted afterwards); the CRD is cluster-wide and is
//! applied (idempotently) by every test with one field manager.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use relab_operator::crd::{Phase, ReliabilityExperiment};
use serde_json::{json, Value};

mod common;

use common::{apply_crd, client, example, in_namespace, CRD_NAME, FIELD_MANAGER};

/// The API server's message for a refused create.
async fn refused_create(api: &Api<ReliabilityExperiment>, rx: &ReliabilityExperiment) -> String {
    match api.create(&PostParams::default(), rx).await {
        Ok(_) => panic!("the API server accepted {:?}", rx.spec),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        Err(e) => panic!("expected a 422 from the API server, got {e}"),
    }
}

#[tokio::test]
async fn crd_applies_server_side_and_becomes_established() {
    let client = client().await;
    let crd = apply_crd(&client).await;
    assert_eq!(crd.spec.group, "relab.dev");
    assert_eq!(crd.spec.names.short_names.as_deref(), Some(&["rx".to_string()][..]));
    // Applying the same object again with the same manager changes nothing.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let again = crds
        .patch(
            CRD_NAME,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&relab_operator::crdgen::crd()),
        )
        .await
        .unwrap();
    assert_eq!(
        again.metadata.generation, crd.metadata.generation,
        "re-apply is a no-op"
    );
    let managers: Vec<String> = again
        .managed_fields()
        .iter()
        .filter(|m| m.operation.as_deref() == Some("Apply"))
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == FIELD_MANAGER),
        "the fields are owned by the {FIELD_MANAGER} apply manager: {managers:?}"
    );
}

#[tokio::test]
async fn valid_experiment_round_trips_with_its_spec_intact() {
    in_namespace(|client, ns| async move {
        let api: Api<ReliabilityExperiment> = Api::namespaced(client, &ns);
        let rx = example("flaky-payments.yaml");
        let created = api.create(&PostParams::default(), &rx).await.unwrap();
        assert_eq!(created.metadata.generation, Some(1));
        let read = api.get(&rx.name_any()).await.unwrap();
        assert_eq!(read.spec, rx.spec, "spec read back as written");
        assert!(read.status.is_none(), "no status until someone writes one");
    })
    .await;
}

#[tokio::test]
async fn schema_bounds_are_enforced_with_the_field_path() {
    in_namespace(|client, ns| async move {
        let api: Api<ReliabilityExperiment> = Api::namespaced(client, &ns);

        let mut rx = example("flaky-payments.yaml");
        rx.metadata.name = Some("failure-rate-too-high".into());
        rx.spec.payment.faults.failure_rate = 1.5;
        let message = refused_create(&api, &rx).await;
        eprintln!("failureRate 1.5: {message}");
        assert!(message.contains("spec.payment.failureRate"), "{message}");

        let mut rx = example("flaky-payments.yaml");
        rx.metadata.name = Some("jitter-too-high".into());
        rx.spec.order_service.retry.jitter = 2.0;
        let message = refused_create(&api, &rx).await;
        eprintln!("jitter 2: {message}");
        assert!(message.contains("spec.orderService.retry.jitter"), "{message}");

        // Nothing was stored.
        assert!(api.list(&ListParams::default()).await.unwrap().items.is_empty());
    })
    .await;
}

#[tokio::test]
async fn status_subresource_by_server_side_apply_survives_spec_updates() {
    in_namespace(|client, ns| async move {
        let api: Api<ReliabilityExperiment> = Api::namespaced(client, &ns);
        let rx = example("flaky-payments.yaml");
        let name = rx.name_any();
        api.create(&PostParams::default(), &rx).await.unwrap();

        let status = json!({
            "apiVersion": ReliabilityExperiment::api_version(&()),
            "kind": ReliabilityExperiment::kind(&()),
            "status": {"phase": "Running", "observedGeneration": 1},
        });
        let patched = api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&status),
            )
            .await
            .unwrap();
        assert_eq!(patched.status.as_ref().map(|s| s.phase), Some(Phase::Running));
        assert_eq!(
            patched.metadata.generation,
            Some(1),
            "a status write is not a new generation"
        );
        let read = api.get(&name).await.unwrap();
        let status = read.status.clone().expect("status stored");
        assert_eq!((status.phase, status.observed_generation), (Phase::Running, Some(1)));

        // A plain update of the main resource, carrying no status at all:
        // the spec changes, the status stays.
        let mut update = read;
        update.status = None;
        update.spec.load.rate_per_second = Some(75.0);
        let updated = api.replace(&name, &PostParams::default(), &update).await.unwrap();
        assert_eq!(
            updated.metadata.generation,
            Some(2),
            "a spec change is a new generation"
        );
        let read = api.get(&name).await.unwrap();
        assert_eq!(read.spec.load.rate_per_second, Some(75.0));
        assert_eq!(
            read.status.as_ref().map(|s| (s.phase, s.observed_generation)),
            Some((Phase::Running, Some(1))),
            "the spec update left the status alone"
        );

        // And a status written through the main resource is ignored.
        let mut sneaky = read;
        sneaky.status.as_mut().unwrap().phase = Phase::Succeeded;
        let after = api.replace(&name, &PostParams::default(), &sneaky).await.unwrap();
        assert_eq!(after.status.map(|s| s.phase), Some(Phase::Running));
    })
    .await;
}

#[tokio::test]
async fn printer_columns_are_stored_and_served() {
    in_namespace(|client, ns| async move {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let stored = crds.get(CRD_NAME).await.unwrap();
        let version = &stored.spec.versions[0];
        let columns: Vec<(&str, &str)> = version
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            columns,
            [
                ("Phase", ".status.phase"),
                ("Verdict", ".status.verdict.result"),
                ("Success", ".status.results.successRatio"),
                ("P95 ms", ".status.results.apiLatencyMs.p95"),
                ("Next run", ".status.nextRunTime"),
                ("Age", ".metadata.creationTimestamp"),
            ]
        );

        // What `kubectl get rx` shows: the server renders the columns as a Table.
        let api: Api<ReliabilityExperiment> = Api::namespaced(client.clone(), &ns);
        let rx = example("flaky-payments.yaml");
        api.create(&PostParams::default(), &rx).await.unwrap();
        let status = json!({
            "apiVersion": ReliabilityExperiment::api_version(&()),
            "kind": ReliabilityExperiment::kind(&()),
            "status": {"phase": "Running"},
        });
        api.patch_status(
            &rx.name_any(),
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
        let url = ReliabilityExperiment::url_path(&(), Some(&ns));
        let mut request = kube::core::Request::new(url).list(&ListParams::default()).unwrap();
        request.headers_mut().insert(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
                .parse()
                .unwrap(),
        );
        let table: Value = client.request(request).await.unwrap();
        assert_eq!(table["kind"], "Table", "{table}");
        let names: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(
            names,
            ["Name", "Phase", "Verdict", "Success", "P95 ms", "Next run", "Age"],
            "{table}"
        );
        let cells = &table["rows"][0]["cells"];
        assert_eq!(
            (&cells[0], &cells[1]),
            (&json!("flaky-payments"), &json!("Running")),
            "{table}"
        );
    })
    .await;
}

//! The payment mock over real HTTP on loopback: idempotency, injected faults,
//! the ledger, the schedule, and input validation.

use std::time::{Duration, Instant};

use lab_service::payment_mock::{
    serve, ChargeResponse, FaultPhase, FaultPlan, FaultSettings, LedgerSnapshot, MockState, MockStats,
};
use prometheus::{Encoder, Registry, TextEncoder};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A mock served on an ephemeral loopback port; stopped on drop.
struct TestMock {
    base_url: String,
    client: reqwest::Client,
    registry: Registry,
    shutdown: CancellationToken,
}

impl Drop for TestMock {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_mock(plan: FaultPlan) -> TestMock {
    plan.validate().expect("test plans are valid");
    let registry = Registry::new();
    let state = MockState::new(plan, &registry).expect("metrics register");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, state, shutdown.clone()));
    TestMock {
        base_url,
        client: client(None),
        registry,
        shutdown,
    }
}

fn client(timeout: Option<Duration>) -> reqwest::Client {
    let builder = reqwest::Client::builder().no_proxy();
    let builder = match timeout {
        Some(timeout) => builder.timeout(timeout),
        None => builder,
    };
    builder.build().unwrap()
}

fn with(spec: FaultSettings) -> FaultPlan {
    FaultPlan {
        base: spec,
        ..FaultPlan::default()
    }
}

fn charge_body(order_id: Uuid, amount_cents: i64) -> Value {
    json!({"orderId": order_id, "amountCents": amount_cents, "currency": "EUR"})
}

impl TestMock {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    async fn charge(&self, key: Option<&str>, body: &Value) -> reqwest::Response {
        self.charge_via(&self.client, key, body).await.expect("mock answers")
    }

    async fn charge_via(
        &self,
        client: &reqwest::Client,
        key: Option<&str>,
        body: &Value,
    ) -> reqwest::Result<reqwest::Response> {
        let mut request = client.post(self.url("/charges")).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    async fn ledger(&self) -> LedgerSnapshot {
        self.get("/ledger").await
    }

    async fn stats(&self) -> MockStats {
        self.get("/stats").await
    }

    async fn put_faults(&self, plan: &Value) -> reqwest::Response {
        self.client.put(self.url("/faults")).json(plan).send().await.unwrap()
    }
}

async fn error_of(response: reqwest::Response) -> Value {
    let body: Value = response.json().await.expect("error bodies are JSON");
    body["error"].clone()
}

#[tokio::test]
async fn a_successful_charge_creates_one_ledger_entry() {
    let mock = spawn_mock(FaultPlan::default()).await;
    let order_id = Uuid::new_v4();

    let response = mock.charge(Some("key-1"), &charge_body(order_id, 1_250)).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let charge: ChargeResponse = response.json().await.unwrap();
    assert_eq!(
        (charge.order_id, charge.amount_cents, charge.replayed),
        (order_id, 1_250, false)
    );
    let ledger = mock.ledger().await;
    assert_eq!(ledger.charges.len(), 1);
    assert_eq!(ledger.charges[0].charge_id, charge.charge_id);
    assert_eq!(ledger.charges[0].idempotency_key.as_deref(), Some("key-1"));
}

#[tokio::test]
async fn the_same_key_twice_is_charged_once_and_replayed() {
    let mock = spawn_mock(FaultPlan::default()).await;
    let body = charge_body(Uuid::new_v4(), 500);

    let first = mock.charge(Some("order-7"), &body).await;
    let second = mock.charge(Some("order-7"), &body).await;

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let first: ChargeResponse = first.json().await.unwrap();
    let second: ChargeResponse = second.json().await.unwrap();
    assert!(second.replayed);
    assert_eq!(second.charge_id, first.charge_id);
    assert_eq!(mock.ledger().await.charges.len(), 1);
    let stats = mock.stats().await;
    assert_eq!(
        (stats.by_outcome.success, stats.by_outcome.replay, stats.charges),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn the_same_key_with_another_amount_is_a_conflict() {
    let mock = spawn_mock(FaultPlan::default()).await;
    let order_id = Uuid::new_v4();
    mock.charge(Some("k"), &charge_body(order_id, 500)).await;

    let response = mock.charge(Some("k"), &charge_body(order_id, 900)).await;

    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(error_of(response).await["code"], "idempotency_key_reused");
    assert_eq!(mock.ledger().await.charges.len(), 1);
}

#[tokio::test]
async fn without_a_key_each_call_charges_again() {
    let mock = spawn_mock(FaultPlan::default()).await;
    let order_id = Uuid::new_v4();

    let first = mock.charge(None, &charge_body(order_id, 500)).await;
    let second = mock.charge(None, &charge_body(order_id, 500)).await;

    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    let ledger = mock.ledger().await;
    assert_eq!(ledger.charges.len(), 2);
    assert_eq!(ledger.charges[0].idempotency_key, None);
    assert_eq!(ledger.double_charged_orders(), [(order_id, 2)]);
}

#[tokio::test]
async fn concurrent_calls_with_one_key_charge_once() {
    let mock = spawn_mock(FaultPlan::default()).await;
    let body = charge_body(Uuid::new_v4(), 500);

    let calls = (0..20).map(|_| mock.charge(Some("same"), &body));
    let statuses: Vec<StatusCode> = futures::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status())
        .collect();

    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 19);
    assert_eq!(mock.ledger().await.charges.len(), 1);
}

#[tokio::test]
async fn an_injected_failure_is_a_5xx_and_charges_nothing() {
    let mock = spawn_mock(with(FaultSettings {
        failure_rate: 1.0,
        failure_statuses: vec![503],
        ..FaultSettings::default()
    }))
    .await;

    let response = mock.charge(Some("k"), &charge_body(Uuid::new_v4(), 500)).await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_of(response).await["code"], "injected_failure");
    assert!(mock.ledger().await.charges.is_empty());
    assert_eq!(mock.stats().await.by_outcome.failure, 1);
}

#[tokio::test]
async fn a_declined_card_is_402_and_charges_nothing() {
    let mock = spawn_mock(with(FaultSettings {
        decline_rate: 1.0,
        ..FaultSettings::default()
    }))
    .await;

    let response = mock.charge(Some("k"), &charge_body(Uuid::new_v4(), 500)).await;

    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(error_of(response).await["code"], "card_declined");
    assert!(mock.ledger().await.charges.is_empty());
}

#[tokio::test]
async fn a_rate_limited_call_carries_retry_after() {
    let mock = spawn_mock(with(FaultSettings {
        rate_limit_rate: 1.0,
        retry_after_seconds: 7,
        ..FaultSettings::default()
    }))
    .await;

    let response = mock.charge(None, &charge_body(Uuid::new_v4(), 500)).await;

    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
    assert!(mock.ledger().await.charges.is_empty());
}

#[tokio::test]
async fn a_lost_response_times_the_client_out_but_charges() {
    let mock = spawn_mock(with(FaultSettings {
        lost_response_rate: 1.0,
        hang_ms: 300,
        ..FaultSettings::default()
    }))
    .await;
    let impatient = client(Some(Duration::from_millis(100)));

    let result = mock
        .charge_via(&impatient, Some("k"), &charge_body(Uuid::new_v4(), 500))
        .await;

    let error = result.expect_err("the response is lost");
    assert!(error.is_timeout(), "expected a client timeout, got {error}");
    // The charge is recorded before the hang; allow a slow machine to get there.
    let deadline = Instant::now() + Duration::from_secs(5);
    while mock.ledger().await.charges.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mock.ledger().await.charges.len(), 1);
    assert_eq!(mock.stats().await.by_outcome.lost_response, 1);
}

#[tokio::test]
async fn a_timeout_hangs_then_504_without_charging() {
    let mock = spawn_mock(with(FaultSettings {
        timeout_rate: 1.0,
        hang_ms: 200,
        ..FaultSettings::default()
    }))
    .await;
    let started = Instant::now();

    let response = mock.charge(Some("k"), &charge_body(Uuid::new_v4(), 500)).await;

    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(mock.ledger().await.charges.is_empty());
}

#[tokio::test]
async fn an_out_of_range_rate_is_refused_with_its_field_path() {
    let mock = spawn_mock(FaultPlan::default()).await;

    let response = mock.put_faults(&json!({"base": {"failureRate": 1.5}})).await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(response).await["field"], "base.failureRate");
    let plan: FaultPlan = mock.get("/faults").await;
    assert_eq!(plan, FaultPlan::default(), "a refused plan changes nothing");
}

#[tokio::test]
async fn an_unknown_fault_knob_is_refused_by_name() {
    let mock = spawn_mock(FaultPlan::default()).await;

    let response = mock.put_faults(&json!({"base": {"failurRate": 0.5}})).await;

    assert!(response.status().is_client_error());
    assert_eq!(error_of(response).await["field"], "failurRate");
}

#[tokio::test]
async fn the_schedule_follows_time_since_the_plan_was_installed() {
    let mock = spawn_mock(FaultPlan::default()).await;
    let plan = FaultPlan {
        schedule: vec![
            FaultPhase {
                name: "outage".into(),
                start_ms: 0,
                end_ms: Some(400),
                faults: FaultSettings {
                    failure_rate: 1.0,
                    failure_statuses: vec![503],
                    ..FaultSettings::default()
                },
            },
            FaultPhase {
                name: "recovery".into(),
                start_ms: 400,
                end_ms: None,
                faults: FaultSettings::default(),
            },
        ],
        ..FaultPlan::default()
    };
    let installed = mock.put_faults(&serde_json::to_value(&plan).unwrap()).await;
    assert_eq!(installed.status(), StatusCode::OK);
    let installed_at = Instant::now();

    let during = mock.charge(None, &charge_body(Uuid::new_v4(), 500)).await;
    let phase_during = mock.stats().await.active_phase;
    tokio::time::sleep(Duration::from_millis(500).saturating_sub(installed_at.elapsed())).await;
    let after = mock.charge(None, &charge_body(Uuid::new_v4(), 500)).await;

    assert_eq!(during.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(phase_during.as_deref(), Some("outage"));
    assert_eq!(after.status(), StatusCode::CREATED);
    assert_eq!(mock.stats().await.active_phase.as_deref(), Some("recovery"));
    assert_eq!(mock.ledger().await.charges.len(), 1);
}

#[tokio::test]
async fn the_same_seed_replays_the_same_fault_sequence() {
    let mock = spawn_mock(FaultPlan::default()).await;
    let plan = json!({"seed": 7, "base": {"declineRate": 0.2, "failureRate": 0.3, "rateLimitRate": 0.2}});
    let mut runs = Vec::new();
    for _ in 0..2 {
        assert_eq!(mock.put_faults(&plan).await.status(), StatusCode::OK);
        let mut statuses = Vec::new();
        for _ in 0..40 {
            let response = mock.charge(None, &charge_body(Uuid::new_v4(), 500)).await;
            statuses.push(response.status().as_u16());
        }
        runs.push(statuses);
    }

    assert_eq!(runs[0], runs[1], "PUT /faults reseeds");
    let distinct: std::collections::BTreeSet<_> = runs[0].iter().collect();
    assert!(distinct.len() >= 4, "a mixed plan gives mixed outcomes: {distinct:?}");
}

#[tokio::test]
async fn bad_charge_input_is_a_4xx_naming_the_field() {
    let mock = spawn_mock(FaultPlan::default()).await;
    let order_id = Uuid::new_v4();
    let cases = [
        (
            json!({"orderId": order_id, "amountCents": -5, "currency": "EUR"}),
            "amountCents",
        ),
        (
            json!({"orderId": order_id, "amountCents": 5, "currency": "eur"}),
            "currency",
        ),
        (json!({"orderId": order_id, "amountCents": 5}), "currency"),
        (
            json!({"orderId": "not-a-uuid", "amountCents": 5, "currency": "EUR"}),
            "orderId",
        ),
        (
            json!({"orderId": order_id, "amountCents": "5", "currency": "EUR"}),
            "amountCents",
        ),
    ];
    for (body, field) in cases {
        let response = mock.charge(None, &body).await;
        assert!(response.status().is_client_error(), "{body}: {}", response.status());
        assert_eq!(error_of(response).await["field"], field, "{body}");
    }

    let malformed = mock
        .client
        .post(mock.url("/charges"))
        .header("content-type", "application/json")
        .body("{\"orderId\":")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(malformed).await["code"], "malformed_json");

    let blank_key = mock.charge(Some(" "), &charge_body(order_id, 5)).await;
    assert_eq!(blank_key.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(blank_key).await["field"], "Idempotency-Key");
    assert!(mock.ledger().await.charges.is_empty());
    assert_eq!(mock.stats().await.calls, 0, "rejected input is not a charge call");
}

#[tokio::test]
async fn health_and_metrics_report_calls_by_outcome() {
    let mock = spawn_mock(FaultPlan::default()).await;
    mock.charge(None, &charge_body(Uuid::new_v4(), 500)).await;

    let health = mock.client.get(mock.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "ok");

    let mut text = Vec::new();
    TextEncoder::new().encode(&mock.registry.gather(), &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("relab_mock_calls_total{outcome=\"success\"} 1"), "{text}");
    assert!(
        text.contains("relab_mock_calls_total{outcome=\"lost_response\"} 0"),
        "{text}"
    );
    assert!(text.contains("relab_mock_charges_total 1"), "{text}");
}

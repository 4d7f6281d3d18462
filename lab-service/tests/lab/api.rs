//! The order API: idempotent create, validation errors, reads and pages.

use crate::harness::{LabOptions, TestLab};
use serde_json::{json, Value};
use uuid::Uuid;

fn no_workers() -> LabOptions {
    LabOptions {
        worker: None,
        ..LabOptions::default()
    }
}

#[tokio::test]
async fn same_key_same_body_replays_the_first_order() {
    let lab = TestLab::start(no_workers()).await;
    let key = Uuid::new_v4().to_string();

    let first = lab.post_order(&key, 1500).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = lab.post_order(&key, 1500).await;

    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders")
        .fetch_one(&lab.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "a replay creates no row");
    assert_eq!(lab.metric("relab_idempotent_replays_total", &[]), 1.0);
    lab.stop().await;
}

#[tokio::test]
async fn same_key_different_body_is_409() {
    let lab = TestLab::start(no_workers()).await;
    let key = Uuid::new_v4().to_string();
    assert_eq!(lab.post_order(&key, 1500).await.status(), 201);

    let resp = lab.post_order(&key, 9999).await;

    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert_eq!(body["error"]["field"], "Idempotency-Key");
    lab.stop().await;
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_exactly_one_order() {
    let lab = TestLab::start(no_workers()).await;
    let key = Uuid::new_v4().to_string();

    let responses = futures::future::join_all((0..24).map(|_| lab.post_order(&key, 700))).await;

    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for r in responses {
        let status = r.status().as_u16();
        assert!(status == 201 || status == 200, "unexpected {status}");
        created += usize::from(status == 201);
        let v: Value = r.json().await.unwrap();
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(created, 1, "exactly one request creates");
    assert_eq!(ids.len(), 1, "every response names the same order");
    let (orders, jobs): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM jobs)")
            .fetch_one(&lab.db.pool)
            .await
            .unwrap();
    assert_eq!((orders, jobs), (1, 1));
    lab.stop().await;
}

async fn post_raw(lab: &TestLab, key: Option<&str>, content_type: &str, body: String) -> (u16, Value) {
    let mut req = lab
        .http
        .post(format!("{}/orders", lab.api_url))
        .header("content-type", content_type)
        .body(body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is not JSON: {text:?}"));
    (status, json)
}

#[tokio::test]
async fn bad_input_is_a_4xx_json_error_that_names_the_problem() {
    let lab = TestLab::start(no_workers()).await;
    let ok = json!({"customerId": "c", "amountCents": 5, "currency": "EUR"}).to_string();
    // (what, idempotency key, content type, body, status, field named)
    type Case<'a> = (&'a str, Option<&'a str>, &'a str, String, u16, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            Some("k1"),
            "application/json",
            "{\"customerId\": ".into(),
            400,
            None,
        ),
        (
            "missing field",
            Some("k2"),
            "application/json",
            json!({"customerId": "c", "currency": "EUR"}).to_string(),
            422,
            Some("amountCents"),
        ),
        (
            "wrong type",
            Some("k3"),
            "application/json",
            json!({"customerId": "c", "amountCents": "5", "currency": "EUR"}).to_string(),
            422,
            Some("amountCents"),
        ),
        (
            "negative amount",
            Some("k4"),
            "application/json",
            json!({"customerId": "c", "amountCents": -5, "currency": "EUR"}).to_string(),
            422,
            Some("amountCents"),
        ),
        (
            "bad currency",
            Some("k5"),
            "application/json",
            json!({"customerId": "c", "amountCents": 5, "currency": "euro"}).to_string(),
            422,
            Some("currency"),
        ),
        (
            "unknown field",
            Some("k6"),
            "application/json",
            json!({"customerId": "c", "amountCents": 5, "currency": "EUR", "x": 1}).to_string(),
            422,
            Some("x"),
        ),
        (
            "no idempotency key",
            None,
            "application/json",
            ok.clone(),
            400,
            Some("Idempotency-Key"),
        ),
        ("not JSON content type", Some("k7"), "text/plain", ok.clone(), 415, None),
        (
            // Postgres refuses 0x00 in text: this was a 500
            "NUL in customerId",
            Some("k9"),
            "application/json",
            json!({"customerId": "c\u{0}x", "amountCents": 5, "currency": "EUR"}).to_string(),
            422,
            Some("customerId"),
        ),
        (
            "escape sequence in customerId",
            Some("k10"),
            "application/json",
            json!({"customerId": "c\u{1b}[2J", "amountCents": 5, "currency": "EUR"}).to_string(),
            422,
            Some("customerId"),
        ),
        (
            // was accepted and charged
            "amount past the documented bound",
            Some("k11"),
            "application/json",
            json!({"customerId": "c", "amountCents": i64::MAX, "currency": "EUR"}).to_string(),
            422,
            Some("amountCents"),
        ),
        (
            "oversized body",
            Some("k8"),
            "application/json",
            format!("{{\"customerId\": \"{}\"}}", "x".repeat(64 * 1024)),
            413,
            None,
        ),
    ];
    for (what, key, ct, body, status, field) in cases {
        let (got, json) = post_raw(&lab, key, ct, body).await;
        assert_eq!(got, status, "{what}: {json}");
        assert!(
            json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {json}"
        );
        if let Some(f) = field {
            assert_eq!(json["error"]["field"], f, "{what}: {json}");
        }
    }
    let (orders,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders")
        .fetch_one(&lab.db.pool)
        .await
        .unwrap();
    assert_eq!(orders, 0, "nothing invalid was stored");
    lab.stop().await;
}

/// `Content-Length: 1000` and 2 bytes sent: the connection used to be held
/// for over 40 s. Now the body read has a deadline: 408, then the server
/// closes the connection.
#[tokio::test]
async fn a_stalled_body_gets_408_and_the_connection_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let lab = TestLab::start(LabOptions {
        api: lab_service::config::ApiConfig {
            body_read_timeout: std::time::Duration::from_millis(500),
            ..crate::harness::api_config()
        },
        ..no_workers()
    })
    .await;
    let addr = lab.api_url.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(
        b"POST /orders HTTP/1.1\r\nHost: lab\r\nContent-Type: application/json\r\n\
          Idempotency-Key: stall-1\r\nContent-Length: 1000\r\n\r\n{}",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    // read to EOF: the server must answer and then close
    tokio::time::timeout(std::time::Duration::from_secs(10), conn.read_to_end(&mut answer))
        .await
        .expect("the server closed the connection")
        .unwrap();
    let waited = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(waited < std::time::Duration::from_secs(5), "held {waited:?}");
    lab.stop().await;
}

/// Half a request's headers, then nothing: the connection used to be held
/// for ever (`axum::serve` gives hyper no timer for its header timeout).
/// Now it is closed after `serve::HEADER_READ_TIMEOUT`.
#[tokio::test]
async fn stalled_headers_get_the_connection_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let lab = TestLab::start(no_workers()).await;
    let addr = lab.api_url.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"POST /orders HTTP/1.1\r\nHost: lab\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let limit = lab_service::serve::HEADER_READ_TIMEOUT;
    let mut answer = Vec::new();
    tokio::time::timeout(
        limit + std::time::Duration::from_secs(10),
        conn.read_to_end(&mut answer),
    )
    .await
    .expect("the server closed the connection")
    .ok();
    let held = started.elapsed();
    assert!(
        held >= limit - std::time::Duration::from_secs(1),
        "closed after {held:?}: too early"
    );
    assert!(held < limit + std::time::Duration::from_secs(5), "held {held:?}");
    lab.stop().await;
}

#[tokio::test]
async fn orders_are_read_one_by_one_and_in_filtered_pages() {
    let lab = TestLab::start(no_workers()).await;
    let mut ids = Vec::new();
    for n in 1..=5 {
        ids.push(lab.create_order(100 * n).await.id);
    }
    sqlx::query("UPDATE orders SET status = 'failed', finished_at = now() WHERE id = $1")
        .bind(ids[1])
        .execute(&lab.db.pool)
        .await
        .unwrap();

    let one = lab.get_order(ids[0]).await;
    assert_eq!(one.amount_cents, 100);

    let page1: Value = lab.get_json("/orders?limit=2").await;
    let after = page1["nextAfter"].as_str().expect("more pages");
    let page2: Value = lab.get_json(&format!("/orders?limit=2&after={after}")).await;
    let got: Vec<&str> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["items"].as_array().unwrap())
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    let want: Vec<String> = ids[..4].iter().map(|i| i.to_string()).collect();
    assert_eq!(got, want, "pages follow creation order");

    let failed: Value = lab.get_json("/orders?status=failed").await;
    assert_eq!(failed["items"].as_array().unwrap().len(), 1);
    assert!(failed.get("nextAfter").is_none());

    let missing = lab.get(&format!("/orders/{}", Uuid::new_v4())).await;
    assert_eq!(missing.status(), 404);
    let bad = lab.get("/orders/not-a-uuid").await;
    assert_eq!(bad.status(), 400);
    let bad_status = lab.get("/orders?status=lost").await;
    assert_eq!(bad_status.status(), 400);
    let v: Value = bad_status.json().await.unwrap();
    assert_eq!(v["error"]["field"], "status");
    lab.stop().await;
}

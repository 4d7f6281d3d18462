//! HTTP client for the payment service (`POST /charges`), with a per-call
//! deadline and every failure classified for the retry loop.

use crate::queue::ClaimedJob;
use crate::resilience::{classify_status, CallError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone)]
pub struct PaymentClient {
    http: reqwest::Client,
    base_url: String,
    timeout: Duration,
    send_idempotency_key: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChargeRequest<'a> {
    order_id: uuid::Uuid,
    amount_cents: i64,
    currency: &'a str,
}

/// The part of the payment service's answer the worker keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Charge {
    pub charge_id: String,
    #[serde(default)]
    pub replayed: bool,
}

impl PaymentClient {
    pub fn new(base_url: &str, timeout: Duration, send_idempotency_key: bool) -> crate::error::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            timeout,
            send_idempotency_key,
        })
    }

    /// Charge the order once. The idempotency key is the order id, so every
    /// retry, replay or takeover of this order is the same charge.
    pub async fn charge(&self, job: &ClaimedJob) -> Result<Charge, CallError> {
        let mut req = self
            .http
            .post(format!("{}/charges", self.base_url))
            .timeout(self.timeout)
            .json(&ChargeRequest {
                order_id: job.order_id,
                amount_cents: job.amount_cents,
                currency: &job.currency,
            });
        if self.send_idempotency_key {
            req = req.header("idempotency-key", job.order_id.to_string());
        }
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status();
        if status.is_success() {
            return resp.json::<Charge>().await.map_err(transport_error);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.text().await.unwrap_or_default();
        let detail = format!(
            "HTTP {}: {}",
            status.as_u16(),
            body.chars().take(200).collect::<String>()
        );
        Err(classify_status(status.as_u16(), retry_after, detail))
    }
}

fn transport_error(e: reqwest::Error) -> CallError {
    let reason = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    CallError::Retryable {
        reason,
        retry_after: None,
        detail: e.to_string(),
    }
}

//! Sending one request to the target and classifying the answer.

use super::http1::{Client, Endpoint};
use super::record::ResponseClass;
use super::Target;
use crate::orders::routes::IDEMPOTENCY_KEY;
use crate::orders::NewOrder;
use rand::rngs::StdRng;
use rand::Rng;
use serde::Deserialize;
use std::time::Duration;
use uuid::Uuid;

/// Number of distinct customers the generated orders spread over.
const CUSTOMERS: u32 = 1_000;

/// A prepared client aimed at one target.
pub(crate) struct Requester {
    client: Client,
    orders: bool,
    /// The encoded request of a `GET` target (the same every time).
    get: Vec<u8>,
    timeout: Duration,
    /// Idempotency keys are `{key_prefix}-{seq}`: unique per run and request.
    key_prefix: String,
}

#[derive(Deserialize)]
struct CreatedOrder {
    id: Uuid,
}

impl Requester {
    pub async fn new(target: &Target, timeout: Duration) -> crate::Result<Self> {
        let (raw, orders) = match target {
            Target::Orders { api_url } => (format!("{}/orders", api_url.trim_end_matches('/')), true),
            Target::Get { url } => (url.clone(), false),
        };
        let endpoint = Endpoint::resolve(&raw)
            .await
            .map_err(|e| crate::Error::Other(format!("load target {e}")))?;
        let client = Client::new(endpoint);
        Ok(Self {
            get: client.encode("GET", &[], b""),
            client,
            orders,
            timeout,
            key_prefix: format!("lg-{}", Uuid::new_v4().simple()),
        })
    }

    /// The body of the next order (orders only): a seeded customer and amount.
    pub fn draw_body(&self, rng: &mut StdRng) -> Option<Vec<u8>> {
        self.orders.then(|| {
            let order = NewOrder {
                customer_id: format!("c-{}", rng.gen_range(0..CUSTOMERS)),
                amount_cents: rng.gen_range(100..=100_000),
                currency: "EUR".into(),
            };
            serde_json::to_vec(&order).expect("an order serializes")
        })
    }

    /// Send request `seq` and read the whole answer (bounded by the timeout).
    pub async fn send(&self, seq: u64, body: Option<Vec<u8>>) -> (ResponseClass, Option<Uuid>) {
        let posted;
        let request = match &body {
            Some(body) => {
                let key = format!("{}-{seq}", self.key_prefix);
                posted = self.client.encode(
                    "POST",
                    &[(IDEMPOTENCY_KEY, &key), ("content-type", "application/json")],
                    body,
                );
                &posted
            }
            None => &self.get,
        };
        let response = match tokio::time::timeout(self.timeout, self.client.send(request)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, seq, "load request failed");
                return (ResponseClass::Error, None);
            }
            Err(_) => {
                tracing::debug!(seq, timeout = ?self.timeout, "load request timed out");
                return (ResponseClass::Error, None);
            }
        };
        let class = ResponseClass::of_status(self.orders, response.status);
        if class != ResponseClass::Accepted || !self.orders {
            return (class, None);
        }
        match serde_json::from_slice::<CreatedOrder>(&response.body) {
            Ok(order) => (class, Some(order.id)),
            Err(e) => {
                // accepted, but the audit could not follow it: count it as an error
                tracing::warn!(error = %e, seq, "201 without an order id");
                (ResponseClass::Error, None)
            }
        }
    }
}

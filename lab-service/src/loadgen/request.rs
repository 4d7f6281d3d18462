//! Sending one request to the target and classifying the answer.

use super::http1::{Client, ConnectionSlot, Endpoint};
use super::record::ResponseClass;
use super::Target;
use crate::orders::routes::IDEMPOTENCY_KEY;
use crate::orders::NewOrder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::{Instant, Sleep};
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

    /// The body of request `seq` of a run seeded with `seed` (orders only):
    /// the same whichever sender or generator sends it.
    pub fn body_of(&self, seed: u64, seq: u64) -> Option<Vec<u8>> {
        if !self.orders {
            return None;
        }
        let mut rng = StdRng::seed_from_u64(seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.draw_body(&mut rng)
    }

    /// A timer for [`Requester::send`]'s timeout, to be kept by one sender
    /// for all its requests: moving a pending timer later costs no lock
    /// on tokio's timer wheel, a new timer per request does.
    pub fn timeout_timer(&self) -> Pin<Box<Sleep>> {
        Box::pin(tokio::time::sleep(self.timeout))
    }

    /// Send request `seq` on the connection in `slot` and read the whole
    /// answer, bounded by the timeout (`timer`, from [`Requester::timeout_timer`]).
    pub async fn send(
        &self,
        slot: &mut ConnectionSlot,
        timer: &mut Pin<Box<Sleep>>,
        seq: u64,
        body: Option<Vec<u8>>,
    ) -> (ResponseClass, Option<Uuid>) {
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
        timer.as_mut().reset(Instant::now() + self.timeout);
        let response = tokio::select! {
            biased;
            answer = self.client.send(slot, request) => match answer {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, seq, "load request failed");
                    return (ResponseClass::Error, None);
                }
            },
            _ = timer.as_mut() => {
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

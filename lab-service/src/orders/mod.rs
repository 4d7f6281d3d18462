//! Orders: the API's model and its repository (orders + their payment job,
//! written in one transaction: the outbox).

pub mod admission;
pub mod routes;

use crate::db::JOBS_CHANNEL;
use crate::error::Result;
use crate::http_error::ApiError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// The largest amount an order (and a charge) may have: one billion in the
/// currency's major unit. Far above any real basket; far below where sums
/// of amounts could overflow an `i64`.
pub const MAX_AMOUNT_CENTS: i64 = 100_000_000_000;

/// Longest `customerId`, in characters.
pub const MAX_CUSTOMER_ID_CHARS: usize = 128;

/// Body of `POST /orders`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewOrder {
    /// 1 to 128 characters, no control characters.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub customer_id: String,
    /// In the currency's minor unit.
    #[schema(minimum = 1, maximum = 100_000_000_000_i64)]
    pub amount_cents: i64,
    /// ISO 4217: three upper-case letters.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

impl NewOrder {
    /// Field-level checks beyond the JSON shape (422 naming the field).
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.customer_id.trim().is_empty() || self.customer_id.chars().count() > MAX_CUSTOMER_ID_CHARS {
            return Err(ApiError::invalid_field(
                "customerId",
                format!("must be 1 to {MAX_CUSTOMER_ID_CHARS} characters"),
            ));
        }
        if let Some(c) = self.customer_id.chars().find(|c| c.is_control()) {
            // Postgres refuses NUL in text; no control character belongs in an id
            return Err(ApiError::invalid_field(
                "customerId",
                format!("must not contain control characters, found U+{:04X}", c as u32),
            ));
        }
        if self.amount_cents <= 0 || self.amount_cents > MAX_AMOUNT_CENTS {
            return Err(ApiError::invalid_field(
                "amountCents",
                format!(
                    "must be a positive number of cents up to {MAX_AMOUNT_CENTS}, got {}",
                    self.amount_cents
                ),
            ));
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ApiError::invalid_field(
                "currency",
                format!(
                    "must be a 3-letter upper-case ISO code such as EUR, got {:?}",
                    self.currency
                ),
            ));
        }
        Ok(())
    }

    /// Fingerprint of the request, to tell a replay from a key reused for another body.
    pub fn fingerprint(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("NewOrder serializes");
        Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Final and in-between states of an order.
pub const ORDER_STATUSES: [&str; 4] = ["pending", "paid", "failed", "dead_lettered"];

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: Uuid,
    pub idempotency_key: String,
    pub customer_id: String,
    pub amount_cents: i64,
    pub currency: String,
    pub status: String,
    pub charge_id: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const ORDER_COLUMNS: &str = "id, idempotency_key, customer_id, amount_cents, currency, status, charge_id, \
                             failure_reason, created_at, updated_at, finished_at";

/// What `create_order` did.
#[derive(Debug)]
pub enum CreateOutcome {
    Created(Order),
    /// Same key, same body: the first order.
    Replayed(Order),
    /// Same key, different body.
    Conflict {
        existing_id: Uuid,
    },
}

/// Insert the order and its job in one statement (the caller then wakes
/// the workers, coalesced: `queue::WorkerWakeups`); or,
/// when the idempotency key exists, tell a replay from a conflict. Concurrent
/// calls with one key create one order: the unique key makes the losers wait
/// for the winner's commit and then see its row.
pub async fn create_order(
    pool: &PgPool,
    key: &str,
    order: &NewOrder,
    request_id: Option<&str>,
    max_attempts: i32,
    permit: &admission::Permit,
) -> Result<CreateOutcome> {
    let fingerprint = order.fingerprint();
    // one statement, one implicit transaction, one round trip: the order and
    // its job, or nothing when the key exists (no job is inserted then)
    let inserted: Option<Order> = sqlx::query_as(&format!(
        "WITH o AS (
             INSERT INTO orders (id, idempotency_key, request_hash, request_id, customer_id, amount_cents, currency)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING {ORDER_COLUMNS}
         ), j AS (
             INSERT INTO jobs (order_id, max_attempts) SELECT id, $8 FROM o
         )
         SELECT {ORDER_COLUMNS} FROM o"
    ))
    .bind(permit.id())
    .bind(key)
    .bind(&fingerprint)
    .bind(request_id)
    .bind(&order.customer_id)
    .bind(order.amount_cents)
    .bind(&order.currency)
    .bind(max_attempts)
    .fetch_optional(pool)
    .await?;
    if let Some(created) = inserted {
        permit.inserted();
        return Ok(CreateOutcome::Created(created));
    }

    let (existing, hash): (Order, String) = {
        let row: (Uuid, String) = sqlx::query_as("SELECT id, request_hash FROM orders WHERE idempotency_key = $1")
            .bind(key)
            .fetch_one(pool)
            .await?;
        (
            get_order(pool, row.0)
                .await?
                .ok_or_else(|| crate::error::Error::Other("order vanished".into()))?,
            row.1,
        )
    };
    if hash == fingerprint {
        Ok(CreateOutcome::Replayed(existing))
    } else {
        Ok(CreateOutcome::Conflict {
            existing_id: existing.id,
        })
    }
}

pub async fn get_order(pool: &PgPool, id: Uuid) -> Result<Option<Order>> {
    Ok(
        sqlx::query_as(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// One page of orders in creation order (ids are UUIDv7), after `after`.
pub async fn list_orders(pool: &PgPool, status: Option<&str>, after: Option<Uuid>, limit: i64) -> Result<Vec<Order>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders
         WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR id > $2)
         ORDER BY id LIMIT $3"
    ))
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// A dead-lettered job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub order_id: Uuid,
    pub job_id: i64,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub dead_at: Option<DateTime<Utc>>,
}

pub async fn list_dead_letters(pool: &PgPool, after: Option<Uuid>, limit: i64) -> Result<Vec<DeadLetter>> {
    Ok(sqlx::query_as(
        "SELECT order_id, id AS job_id, attempts, max_attempts, last_error, finished_at AS dead_at
         FROM jobs WHERE status = 'dead' AND ($1::uuid IS NULL OR order_id > $1)
         ORDER BY order_id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Put a dead-lettered job back in the queue with a fresh attempt budget;
/// `false` when the order is not dead-lettered.
pub async fn replay_dead_letter(pool: &PgPool, order_id: Uuid) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let job = sqlx::query(
        "UPDATE jobs SET status = 'queued', attempts = 0, run_at = clock_timestamp(), finished_at = NULL,
                         updated_at = clock_timestamp()
         WHERE order_id = $1 AND status = 'dead'",
    )
    .bind(order_id)
    .execute(&mut *tx)
    .await?;
    if job.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "UPDATE orders SET status = 'pending', finished_at = NULL, failure_reason = NULL, updated_at = clock_timestamp()
         WHERE id = $1",
    )
    .bind(order_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(JOBS_CHANNEL)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Queued + running and dead jobs, and which of `ids` (order ids) have a
/// job, all in one statement (one snapshot): admission's sample.
pub async fn queue_depths_seeing<'c>(db: impl sqlx::PgExecutor<'c>, ids: &[Uuid]) -> Result<(i64, i64, Vec<Uuid>)> {
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status IN ('queued', 'running')),
                count(*) FILTER (WHERE status = 'dead'),
                coalesce((SELECT array_agg(order_id) FROM jobs WHERE order_id = ANY($1)), '{}')
         FROM jobs WHERE status IN ('queued', 'running', 'dead')",
    )
    .bind(ids)
    .fetch_one(db)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(amount: i64, currency: &str) -> NewOrder {
        NewOrder {
            customer_id: "c1".into(),
            amount_cents: amount,
            currency: currency.into(),
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(
            order(-5, "EUR").validate().unwrap_err().field.as_deref(),
            Some("amountCents")
        );
        assert_eq!(
            order(0, "EUR").validate().unwrap_err().field.as_deref(),
            Some("amountCents")
        );
        assert_eq!(
            order(5, "eur").validate().unwrap_err().field.as_deref(),
            Some("currency")
        );
        assert_eq!(
            order(5, "EURO").validate().unwrap_err().field.as_deref(),
            Some("currency")
        );
        let mut o = order(5, "EUR");
        o.customer_id = " ".into();
        assert_eq!(o.validate().unwrap_err().field.as_deref(), Some("customerId"));
        for hostile in ["c\u{0}1", "c\n1", "c\u{1b}[31m"] {
            o.customer_id = hostile.into();
            let e = o.validate().unwrap_err();
            assert_eq!(e.field.as_deref(), Some("customerId"), "{hostile:?}");
            assert!(e.message.contains("control characters"), "{e:?}");
        }
        assert_eq!(
            order(i64::MAX, "EUR").validate().unwrap_err().field.as_deref(),
            Some("amountCents")
        );
        assert!(order(MAX_AMOUNT_CENTS, "EUR").validate().is_ok());
        assert!(order(MAX_AMOUNT_CENTS + 1, "EUR").validate().is_err());
        assert!(order(5, "EUR").validate().is_ok());
    }

    #[test]
    fn fingerprint_tells_bodies_apart() {
        assert_eq!(order(5, "EUR").fingerprint(), order(5, "EUR").fingerprint());
        assert_ne!(order(5, "EUR").fingerprint(), order(6, "EUR").fingerprint());
    }
}

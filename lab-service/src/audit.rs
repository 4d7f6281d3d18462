//! The invariant audit: after the pipeline drained, every accepted order is
//! paid, failed or dead-lettered (none lost, none stuck), no order was charged
//! twice, and no charge exists without an order. Reads the database and the
//! payment service's ledger; works against any reachable mock.

use crate::error::Result;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// One charge in the payment service's ledger.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerCharge {
    pub charge_id: String,
    pub order_id: Uuid,
    pub idempotency_key: Option<String>,
    pub amount_cents: i64,
}

#[derive(Deserialize)]
struct LedgerPage {
    charges: Vec<LedgerCharge>,
}

pub async fn fetch_ledger(http: &reqwest::Client, payment_url: &str) -> Result<Vec<LedgerCharge>> {
    let page: LedgerPage = http
        .get(format!("{}/ledger", payment_url.trim_end_matches('/')))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(page.charges)
}

/// What the audit found. `passed()` when no invariant is violated.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    pub orders: i64,
    /// Orders by status (`pending`, `paid`, `failed`, `dead_lettered`).
    pub by_status: BTreeMap<String, i64>,
    /// Orders the client was told were accepted but that are not in the database.
    pub lost_orders: i64,
    /// Orders still pending after the drain: stuck.
    pub stuck_orders: i64,
    /// Orders with more than one charge in the ledger.
    pub double_charged_orders: i64,
    /// Charges beyond the first, summed over orders.
    pub extra_charges: i64,
    /// Ledger charges whose order is not in the database.
    pub charges_without_order: i64,
    /// Orders marked paid with no charge in the ledger.
    pub paid_without_charge: i64,
    pub charges: i64,
}

impl AuditReport {
    pub fn passed(&self) -> bool {
        self.lost_orders == 0
            && self.stuck_orders == 0
            && self.double_charged_orders == 0
            && self.charges_without_order == 0
            && self.paid_without_charge == 0
    }

    pub fn count(&self, status: &str) -> i64 {
        self.by_status.get(status).copied().unwrap_or(0)
    }
}

/// Wait until no order is pending, or `timeout`; returns whether it drained.
pub async fn wait_for_drain(pool: &PgPool, timeout: Duration) -> Result<bool> {
    let started = Instant::now();
    loop {
        let (pending,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders WHERE status = 'pending'")
            .fetch_one(pool)
            .await?;
        if pending == 0 {
            return Ok(true);
        }
        if started.elapsed() >= timeout {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Compare the database with the ledger (and, when given, the ids the
/// client saw accepted).
pub async fn audit(pool: &PgPool, ledger: &[LedgerCharge], accepted: Option<&[Uuid]>) -> Result<AuditReport> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, status FROM orders").fetch_all(pool).await?;
    let mut report = AuditReport {
        orders: rows.len() as i64,
        charges: ledger.len() as i64,
        ..Default::default()
    };
    let mut per_order: HashMap<Uuid, i64> = HashMap::new();
    for c in ledger {
        *per_order.entry(c.order_id).or_default() += 1;
    }
    let known: HashSet<Uuid> = rows.iter().map(|(id, _)| *id).collect();
    for (id, status) in &rows {
        *report.by_status.entry(status.clone()).or_default() += 1;
        if status == "paid" && !per_order.contains_key(id) {
            report.paid_without_charge += 1;
        }
    }
    report.stuck_orders = report.count("pending");
    for (order, n) in &per_order {
        if *n > 1 {
            report.double_charged_orders += 1;
            report.extra_charges += n - 1;
        }
        if !known.contains(order) {
            report.charges_without_order += n;
        }
    }
    if let Some(ids) = accepted {
        report.lost_orders = ids.iter().filter(|id| !known.contains(id)).count() as i64;
    }
    Ok(report)
}

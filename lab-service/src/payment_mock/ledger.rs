//! The ledger: every charge the mock made, in creation order, plus the
//! idempotency-key index that turns a repeated request into a replay.
//!
//! The ledger is the ground truth of the audit: an order that appears twice
//! here was charged twice, whatever the order service believes.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use relab_model::FieldError;

/// Body of `POST /charges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargeRequest {
    /// The order being paid.
    pub order_id: Uuid,
    /// Amount in the currency's minor unit; must be positive.
    pub amount_cents: i64,
    /// ISO 4217 code: three uppercase ASCII letters (e.g. `EUR`).
    pub currency: String,
}

impl ChargeRequest {
    /// Checks the values serde cannot: a positive amount and a well-formed
    /// currency code. Reports the first problem, with its JSON field name.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.amount_cents <= 0 {
            return Err(FieldError::new(
                "amountCents",
                format!("must be greater than 0, got {}", self.amount_cents),
            ));
        }
        let well_formed = self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase());
        if !well_formed {
            return Err(FieldError::new(
                "currency",
                format!(
                    "must be an ISO 4217 code of three uppercase letters (e.g. EUR), got {:?}",
                    self.currency
                ),
            ));
        }
        Ok(())
    }
}

/// One recorded charge, as `GET /ledger` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Charge {
    /// Identifier the mock assigned.
    pub charge_id: Uuid,
    /// The order it paid for.
    pub order_id: Uuid,
    /// The `Idempotency-Key` it was created with, if any.
    pub idempotency_key: Option<String>,
    /// Amount in minor units.
    pub amount_cents: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// Body of a successful `POST /charges` (201 new, 200 replayed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargeResponse {
    /// Identifier of the (first) charge.
    pub charge_id: Uuid,
    /// The order it paid for.
    pub order_id: Uuid,
    /// Amount in minor units.
    pub amount_cents: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// True when the key had already produced this charge.
    pub replayed: bool,
    /// When the charge was first recorded.
    pub created_at: DateTime<Utc>,
}

impl ChargeResponse {
    /// The response for `charge`, marked as a replay or not.
    pub fn new(charge: &Charge, replayed: bool) -> Self {
        Self {
            charge_id: charge.charge_id,
            order_id: charge.order_id,
            amount_cents: charge.amount_cents,
            currency: charge.currency.clone(),
            replayed,
            created_at: charge.created_at,
        }
    }
}

/// Body of `GET /ledger`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSnapshot {
    /// Every charge, in creation order.
    pub charges: Vec<Charge>,
}

impl LedgerSnapshot {
    /// Orders charged more than once, with their charge counts, sorted by
    /// order id: the audit's double charges.
    pub fn double_charged_orders(&self) -> Vec<(Uuid, usize)> {
        let mut per_order: BTreeMap<Uuid, usize> = BTreeMap::new();
        for charge in &self.charges {
            *per_order.entry(charge.order_id).or_default() += 1;
        }
        per_order.into_iter().filter(|(_, count)| *count > 1).collect()
    }
}

/// What recording a charge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// A new charge was recorded.
    Created(Charge),
    /// The key already had this charge; nothing new was recorded.
    Replayed(Charge),
}

/// The key was already used for a different request; nothing was recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("idempotency key {key:?} was already used for a different charge ({existing_charge_id})")]
pub struct IdempotencyConflict {
    /// The reused key.
    pub key: String,
    /// The charge the key belongs to.
    pub existing_charge_id: Uuid,
}

/// In-memory ledger with an idempotency-key index.
#[derive(Debug, Default)]
pub struct Ledger {
    charges: Vec<Charge>,
    by_key: HashMap<String, usize>,
}

impl Ledger {
    /// Records a charge, or replays the one `key` already produced.
    ///
    /// Without a key every call records a new charge. A key that was used
    /// with a different order, amount or currency is a conflict.
    pub fn charge(
        &mut self,
        key: Option<&str>,
        request: &ChargeRequest,
        now: DateTime<Utc>,
    ) -> Result<ChargeOutcome, IdempotencyConflict> {
        if let Some(key) = key {
            if let Some(&index) = self.by_key.get(key) {
                let existing = &self.charges[index];
                let same_request = existing.order_id == request.order_id
                    && existing.amount_cents == request.amount_cents
                    && existing.currency == request.currency;
                return if same_request {
                    Ok(ChargeOutcome::Replayed(existing.clone()))
                } else {
                    Err(IdempotencyConflict {
                        key: key.to_string(),
                        existing_charge_id: existing.charge_id,
                    })
                };
            }
        }
        let charge = Charge {
            charge_id: Uuid::now_v7(),
            order_id: request.order_id,
            idempotency_key: key.map(str::to_string),
            amount_cents: request.amount_cents,
            currency: request.currency.clone(),
            created_at: now,
        };
        if let Some(key) = key {
            self.by_key.insert(key.to_string(), self.charges.len());
        }
        self.charges.push(charge.clone());
        Ok(ChargeOutcome::Created(charge))
    }

    /// Number of charges recorded.
    pub fn len(&self) -> usize {
        self.charges.len()
    }

    /// True when nothing has been charged.
    pub fn is_empty(&self) -> bool {
        self.charges.is_empty()
    }

    /// A copy of every charge, in creation order.
    pub fn snapshot(&self) -> LedgerSnapshot {
        LedgerSnapshot {
            charges: self.charges.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(amount_cents: i64) -> ChargeRequest {
        ChargeRequest {
            order_id: Uuid::from_u128(1),
            amount_cents,
            currency: "EUR".into(),
        }
    }

    #[test]
    fn a_repeated_key_replays_the_first_charge() {
        let mut ledger = Ledger::default();
        let first = ledger.charge(Some("k"), &request(100), Utc::now()).unwrap();
        let second = ledger.charge(Some("k"), &request(100), Utc::now()).unwrap();
        let ChargeOutcome::Created(created) = first else {
            panic!("expected a new charge")
        };
        assert_eq!(second, ChargeOutcome::Replayed(created));
        assert_eq!(ledger.len(), 1);
    }

    #[test]
    fn a_key_reused_for_another_amount_conflicts() {
        let mut ledger = Ledger::default();
        ledger.charge(Some("k"), &request(100), Utc::now()).unwrap();
        let conflict = ledger.charge(Some("k"), &request(200), Utc::now()).unwrap_err();
        assert_eq!(conflict.key, "k");
        assert_eq!(ledger.len(), 1);
    }

    #[test]
    fn without_a_key_every_call_charges_and_the_audit_sees_it() {
        let mut ledger = Ledger::default();
        ledger.charge(None, &request(100), Utc::now()).unwrap();
        ledger.charge(None, &request(100), Utc::now()).unwrap();
        assert_eq!(ledger.len(), 2);
        assert_eq!(ledger.snapshot().double_charged_orders(), [(Uuid::from_u128(1), 2)]);
    }

    #[test]
    fn request_validation_names_the_field() {
        assert_eq!(request(0).validate().unwrap_err().path, "amountCents");
        let mut lower = request(100);
        lower.currency = "eur".into();
        assert_eq!(lower.validate().unwrap_err().path, "currency");
        let mut long = request(100);
        long.currency = "EURO".into();
        assert_eq!(long.validate().unwrap_err().path, "currency");
        assert_eq!(request(100).validate(), Ok(()));
    }
}

//! The ledger: every charge the mock made, in creation order, plus the
//! idempotency-key index that turns a repeated request into a replay.
//!
//! The ledger is the ground truth of the audit: an order that appears twice
//! here was charged twice, whatever the order service believes.
//!
//! Durability: opened on a file ([`Ledger::open`]), every new charge is
//! appended to it as one JSON line inside the lock that decides it, and
//! `fdatasync`ed *before* it is answered: a caller (a new charge, or a
//! replay of one) waits until the journal is synced past its line
//! ([`Durable::wait`]). The syncs are grouped: one `fdatasync` covers every
//! line written before it started, so concurrent charges share it instead
//! of queueing one sync each inside the lock (group commit, as databases
//! do). A process killed at any point (`kill -9`) and started again on the
//! same file knows every charge it ever answered for and every idempotency
//! key, so a retried key is a replay, as with a real payment provider. A
//! torn last line (a kill in the middle of a write, never answered) is cut
//! off on open. A failed write or sync poisons the journal: nothing more is
//! charged (503 `ledger_unavailable`), since memory and disk may disagree.
//! The file belongs to the mock alone: the order service's database can
//! restart or vanish without touching it (docs/patterns.md).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use relab_model::FieldError;

/// Body of `POST /charges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChargeRequest {
    /// The order being paid.
    pub order_id: Uuid,
    /// Amount in the currency's minor unit; must be positive.
    #[schema(minimum = 1, maximum = 100_000_000_000_i64)]
    pub amount_cents: i64,
    /// ISO 4217 code: three uppercase ASCII letters (e.g. `EUR`).
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

impl ChargeRequest {
    /// Checks the values serde cannot: a positive amount and a well-formed
    /// currency code. Reports the first problem, with its JSON field name.
    pub fn validate(&self) -> Result<(), FieldError> {
        let max = crate::orders::MAX_AMOUNT_CENTS;
        if self.amount_cents <= 0 || self.amount_cents > max {
            return Err(FieldError::new(
                "amountCents",
                format!("must be greater than 0 and at most {max}, got {}", self.amount_cents),
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// Why a charge could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChargeError {
    #[error(transparent)]
    Conflict(#[from] IdempotencyConflict),
    /// The journal could not be written: nothing was charged.
    #[error("the ledger's journal {path} could not be written: {message}")]
    Journal { path: String, message: String },
}

/// The ledger's file: one JSON [`Charge`] per line, appended under the
/// ledger's lock and synced in groups ([`GroupSync`]).
#[derive(Debug)]
struct Journal {
    file: std::fs::File,
    path: PathBuf,
    sync: Arc<GroupSync>,
}

/// The journal's syncs: lines are numbered as they are written; a caller
/// waits until `synced` reaches its line, and whoever syncs covers every
/// line written before the sync began.
#[derive(Debug)]
pub struct GroupSync {
    file: Arc<std::fs::File>,
    path: PathBuf,
    /// Lines written (the last line's number).
    written: AtomicU64,
    /// Lines known durable.
    synced: AtomicU64,
    /// `fdatasync` calls made, for the tests and the docs' figures.
    syncs: AtomicU64,
    /// One sync at a time; the others wait for it and usually find their
    /// line covered.
    turn: tokio::sync::Mutex<()>,
    /// Why the journal may no longer be written (a failed write or sync).
    poisoned: std::sync::Mutex<Option<String>>,
}

impl GroupSync {
    fn poison(&self, why: String) {
        *self.poisoned.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
    }

    fn poisoned(&self) -> Option<String> {
        self.poisoned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn error(&self, message: String) -> ChargeError {
        ChargeError::Journal {
            path: self.path.display().to_string(),
            message,
        }
    }

    /// `fdatasync` calls so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Wait until line `line` is durable, syncing when nobody else is.
    async fn wait(&self, line: u64) -> Result<(), ChargeError> {
        loop {
            if self.synced.load(Ordering::Acquire) >= line {
                return Ok(());
            }
            if let Some(why) = self.poisoned() {
                return Err(self.error(why));
            }
            let _turn = self.turn.lock().await;
            if self.synced.load(Ordering::Acquire) >= line {
                return Ok(());
            }
            // every line written so far is in the file: this sync covers them all
            let upto = self.written.load(Ordering::Acquire);
            let file = self.file.clone();
            let synced = tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            self.settle(upto, synced)?;
        }
    }

    /// [`GroupSync::wait`] for a caller outside the runtime (tests, tools).
    fn wait_blocking(&self, line: u64) -> Result<(), ChargeError> {
        if self.synced.load(Ordering::Acquire) >= line {
            return Ok(());
        }
        let upto = self.written.load(Ordering::Acquire);
        self.settle(upto, self.file.sync_data())
    }

    /// Count a sync made after `upto` lines were written: on success they
    /// are durable; on failure the journal is poisoned.
    fn settle(&self, upto: u64, synced: std::io::Result<()>) -> Result<(), ChargeError> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        match synced {
            Ok(()) => {
                self.synced.fetch_max(upto, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                self.poison(format!("fdatasync failed: {e}"));
                Err(self.error(e.to_string()))
            }
        }
    }
}

/// A charge's line in the journal, to wait on before answering.
#[derive(Debug)]
pub struct Durable {
    line: u64,
    sync: Arc<GroupSync>,
}

impl Durable {
    /// Until the line is synced (one `fdatasync` shared with every caller
    /// whose line it covers); Err: the journal failed, nothing may be
    /// answered as charged.
    pub async fn wait(self) -> Result<(), ChargeError> {
        self.sync.wait(self.line).await
    }
}

/// The ledger could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("payment ledger {path}: {message}")]
pub struct LedgerOpenError {
    pub path: String,
    pub message: String,
}

/// Ledger with an idempotency-key index; in memory only, or journaled to a
/// file ([`Ledger::open`]).
#[derive(Debug, Default)]
pub struct Ledger {
    charges: Vec<Charge>,
    /// Each charge's journal line (0: read from the file, durable).
    lines: Vec<u64>,
    by_key: HashMap<String, usize>,
    /// Charges per order, and how many orders have more than one (live).
    per_order: HashMap<Uuid, u32>,
    double_charged: u64,
    journal: Option<Journal>,
}

impl Ledger {
    /// Opens (or creates, with its directory) the journal at `path` and
    /// loads every charge in it. A torn last line is cut off; a corrupt line
    /// before the last is an error (the ledger would lie).
    pub fn open(path: &Path) -> Result<Ledger, LedgerOpenError> {
        let fail = |message: String| LedgerOpenError {
            path: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| fail(format!("cannot open: {e}")))?;
        let mut ledger = Ledger::default();
        let mut good_len = 0u64;
        let mut torn = false;
        {
            let mut reader = std::io::BufReader::new(&mut file);
            let mut line = String::new();
            let mut number = 0usize;
            loop {
                line.clear();
                let n = reader
                    .read_line(&mut line)
                    .map_err(|e| fail(format!("cannot read: {e}")))?;
                if n == 0 {
                    break;
                }
                number += 1;
                match line.strip_suffix('\n').map(serde_json::from_str::<Charge>) {
                    Some(Ok(charge)) => {
                        ledger.insert(charge, 0);
                        good_len += n as u64;
                    }
                    Some(Err(e)) => {
                        // a complete line that does not parse: refuse rather than forget charges
                        return Err(fail(format!("line {number} is not a charge: {e}")));
                    }
                    None => {
                        torn = true;
                        break;
                    }
                }
            }
        }
        if torn {
            tracing::warn!(path = %path.display(), "cutting off a torn last line (a write cut short, never answered)");
            file.set_len(good_len)
                .map_err(|e| fail(format!("cannot cut the torn line: {e}")))?;
        }
        file.seek(std::io::SeekFrom::End(0)).map_err(|e| fail(e.to_string()))?;
        let syncer = file
            .try_clone()
            .map_err(|e| fail(format!("cannot open it twice: {e}")))?;
        ledger.journal = Some(Journal {
            file,
            path: path.to_path_buf(),
            sync: Arc::new(GroupSync {
                file: Arc::new(syncer),
                path: path.to_path_buf(),
                written: AtomicU64::new(0),
                synced: AtomicU64::new(0),
                syncs: AtomicU64::new(0),
                turn: tokio::sync::Mutex::new(()),
                poisoned: Default::default(),
            }),
        });
        Ok(ledger)
    }

    /// The journal's path, when the ledger has one.
    pub fn path(&self) -> Option<&Path> {
        self.journal.as_ref().map(|j| j.path.as_path())
    }

    /// The journal's syncs, when the ledger has one.
    pub fn group_sync(&self) -> Option<Arc<GroupSync>> {
        self.journal.as_ref().map(|j| j.sync.clone())
    }

    fn insert(&mut self, charge: Charge, line: u64) {
        self.lines.push(line);
        let n = self.per_order.entry(charge.order_id).or_default();
        *n += 1;
        if *n == 2 {
            self.double_charged += 1;
        }
        if let Some(key) = &charge.idempotency_key {
            self.by_key.insert(key.clone(), self.charges.len());
        }
        self.charges.push(charge);
    }

    /// Records a charge, or replays the one `key` already produced, and
    /// makes it durable before returning (one `fdatasync` unless a sync
    /// already covered it): for callers outside the runtime. The payment
    /// mock uses [`Ledger::charge_deferred`] and waits outside the lock.
    pub fn charge(
        &mut self,
        key: Option<&str>,
        request: &ChargeRequest,
        now: DateTime<Utc>,
    ) -> Result<ChargeOutcome, ChargeError> {
        let (outcome, durable) = self.charge_deferred(key, request, now)?;
        if let Some(d) = durable {
            d.sync.wait_blocking(d.line)?;
        }
        Ok(outcome)
    }

    /// Records a charge, or replays the one `key` already produced; with a
    /// journal, also what to wait on before the outcome may be answered
    /// (the charge's line, a replay's included: a replay of a charge not
    /// yet synced waits for the same sync).
    ///
    /// Without a key every call records a new charge. A key that was used
    /// with a different order, amount or currency is a conflict. A new
    /// charge is written to the journal before it is recorded: if that
    /// fails, nothing was charged.
    pub fn charge_deferred(
        &mut self,
        key: Option<&str>,
        request: &ChargeRequest,
        now: DateTime<Utc>,
    ) -> Result<(ChargeOutcome, Option<Durable>), ChargeError> {
        if let Some(key) = key {
            if let Some(&index) = self.by_key.get(key) {
                let existing = &self.charges[index];
                let same_request = existing.order_id == request.order_id
                    && existing.amount_cents == request.amount_cents
                    && existing.currency == request.currency;
                return if same_request {
                    let durable = self.journal.as_ref().map(|j| Durable {
                        line: self.lines[index],
                        sync: j.sync.clone(),
                    });
                    Ok((ChargeOutcome::Replayed(existing.clone()), durable))
                } else {
                    Err(IdempotencyConflict {
                        key: key.to_string(),
                        existing_charge_id: existing.charge_id,
                    }
                    .into())
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
        let mut durable = None;
        if let Some(journal) = &mut self.journal {
            let sync = &journal.sync;
            if let Some(why) = sync.poisoned() {
                return Err(sync.error(why));
            }
            let mut line = serde_json::to_vec(&charge).expect("a charge serializes");
            line.push(b'\n');
            if let Err(e) = journal.file.write_all(&line) {
                // a line cut short would make the next one unreadable
                sync.poison(format!("write failed: {e}"));
                return Err(sync.error(e.to_string()));
            }
            let number = sync.written.fetch_add(1, Ordering::AcqRel) + 1;
            durable = Some(Durable {
                line: number,
                sync: sync.clone(),
            });
        }
        let line = durable.as_ref().map_or(0, |d| d.line);
        self.insert(charge.clone(), line);
        Ok((ChargeOutcome::Created(charge), durable))
    }

    /// Orders charged more than once so far (what the audit will call
    /// double charges), without copying the ledger.
    pub fn double_charged_orders(&self) -> u64 {
        self.double_charged
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
        let ChargeError::Conflict(conflict) = ledger.charge(Some("k"), &request(200), Utc::now()).unwrap_err() else {
            panic!("a conflict")
        };
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
        assert_eq!(ledger.double_charged_orders(), 1);
    }

    fn journal_path(name: &str) -> PathBuf {
        std::env::temp_dir()
            .join(format!("relab-ledger-test-{}", Uuid::new_v4().simple()))
            .join(name)
    }

    #[test]
    fn a_reopened_journal_knows_every_charge_and_key() {
        let path = journal_path("ledger.jsonl");
        let first = {
            let mut ledger = Ledger::open(&path).unwrap();
            let ChargeOutcome::Created(c) = ledger.charge(Some("k"), &request(100), Utc::now()).unwrap() else {
                panic!("new")
            };
            ledger.charge(None, &request(100), Utc::now()).unwrap();
            c
            // dropped without any shutdown: what is on disk is all there is
        };
        let mut again = Ledger::open(&path).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again.snapshot().charges[0], first);
        // the key survived: a retry is a replay, not a second charge
        assert_eq!(
            again.charge(Some("k"), &request(100), Utc::now()).unwrap(),
            ChargeOutcome::Replayed(first)
        );
        assert_eq!(again.len(), 2);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_a_corrupt_one_refused() {
        let path = journal_path("ledger.jsonl");
        {
            let mut ledger = Ledger::open(&path).unwrap();
            ledger.charge(Some("a"), &request(100), Utc::now()).unwrap();
        }
        // a kill in the middle of the next write
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"chargeId":"0190"#).unwrap();
        drop(f);
        let mut ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.len(), 1);
        ledger.charge(Some("b"), &request(100), Utc::now()).unwrap();
        drop(ledger);
        assert_eq!(
            Ledger::open(&path).unwrap().len(),
            2,
            "the cut made room for whole lines"
        );
        // a whole line that is not a charge is not silently skipped
        std::fs::write(&path, "not json\n").unwrap();
        let err = Ledger::open(&path).unwrap_err();
        assert!(err.to_string().contains("line 1 is not a charge"), "{err}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_charges_share_one_sync_and_all_survive_a_reopen() {
        let path = journal_path("group");
        let mut ledger = Ledger::open(&path).unwrap();
        let sync = ledger.group_sync().unwrap();
        // 64 charges written (under the lock, one after the other), then
        // their callers wait at once, as concurrent requests do
        let mut waits = Vec::new();
        for i in 0..64i64 {
            let (outcome, durable) = ledger
                .charge_deferred(Some(&format!("k{i}")), &request(100 + i), Utc::now())
                .unwrap();
            assert!(matches!(outcome, ChargeOutcome::Created(_)));
            waits.push(durable.expect("a journaled charge waits for its sync"));
        }
        // a replay of a charge not yet synced waits too
        let (replay, durable) = ledger.charge_deferred(Some("k3"), &request(103), Utc::now()).unwrap();
        assert!(matches!(replay, ChargeOutcome::Replayed(_)));
        waits.push(durable.unwrap());
        let results = futures::future::join_all(waits.into_iter().map(|d| d.wait())).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(sync.syncs(), 1, "one fdatasync covered all 65 callers");
        drop(ledger);
        let again = Ledger::open(&path).unwrap();
        assert_eq!(again.len(), 64);
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

//! The durable job queue in Postgres.
//!
//! Job states: `queued` -> `running` (claimed under a lease) -> `done` |
//! `queued` again (retry or deferral, at `run_at`) | `dead` (dead-lettered).
//! A `running` job whose lease expired is put back to `queued` by
//! [`requeue_expired_leases`] (every worker runs it), so a worker that dies
//! mid-job loses nothing. Every transition out of `running` names the lease
//! token it was claimed with: a worker whose lease was taken over cannot
//! complete the job a second time.
//!
//! ## Batches
//!
//! A worker claims up to `n` due jobs in one statement ([`claim_jobs`]) and
//! completes paid jobs in batches ([`complete_paid_batch`]); its leases are
//! renewed in one statement ([`renew_leases`]). The contract is the
//! single-job one, row by row:
//!
//! - **Every job of a batch has its own lease token** (`gen_random_uuid()`
//!   is evaluated per row), and a claimed job is exactly as if claimed
//!   alone: `FOR UPDATE SKIP LOCKED` keeps other claimers off every row
//!   of the batch, none of them is taken twice.
//! - **Every completion is fenced by its own token**: the batch update joins
//!   `unnest(ids, tokens)` on `id = id AND lease_token = token AND status =
//!   'running'`, so a job whose lease was taken over is simply not updated
//!   (and reported as lost), while the rest of the batch is. Batching never
//!   widens what one worker may change.
//! - **A lost worker loses its whole batch, and nothing else**: its leases
//!   expire, the reaper re-queues each job, another worker claims it with a
//!   new token; the dead worker's late completions match no row. The charge
//!   carries the order id as its idempotency key, so a job paid twice
//!   (charged, then the worker died before recording it) is charged once.
//!   `tests/lab/batches.rs` kills a worker in the middle of a batch.
//!
//! Retries, rejections and dead letters stay one statement per job: they
//! are rare, and each carries its own reason and delay.

use crate::db::JOBS_CHANNEL;
use crate::error::Result;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// A job claimed by this worker, with what the payment call needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    pub job_id: i64,
    pub order_id: Uuid,
    /// Retry loops already spent.
    pub attempts: i32,
    pub max_attempts: i32,
    pub lease_token: Uuid,
    pub amount_cents: i64,
    pub currency: String,
    pub request_id: Option<String>,
}

fn interval(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Claim the oldest due job: `FOR UPDATE SKIP LOCKED`, so concurrent
/// workers never wait on each other or take the same job.
pub async fn claim_next_job(pool: &PgPool, owner: &str, lease: Duration) -> Result<Option<ClaimedJob>> {
    Ok(claim_jobs(pool, owner, lease, 1).await?.pop())
}

/// Claim up to `limit` of the oldest due jobs in one statement, each under a
/// lease token of its own (see the module docs). Fewer (or none) when fewer
/// are due and unlocked.
///
/// The claim commits with `synchronous_commit = off`: it does not wait for
/// its WAL flush (at saturation the server is WAL-flush bound, and every
/// worker commit waited behind the API's inserts). Losing a claim in a
/// server crash is harmless: the job is `queued` again as if never
/// claimed, the worker's token matches nothing, so its completion is
/// fenced off, and the next claim's charge replays the first (the order id
/// is the idempotency key). Completions stay synchronous: a `paid` once
/// read stays paid.
pub async fn claim_jobs<'c>(
    db: impl sqlx::PgExecutor<'c>,
    owner: &str,
    lease: Duration,
    limit: usize,
) -> Result<Vec<ClaimedJob>> {
    // the statement is the database function `claim_jobs`
    // (migrations/0002_claim_plan.sql): planned without sorting, so it walks
    // `jobs_queued_due` in `run_at` order and stops after `limit` rows,
    // whatever the table's statistics say (with stale ones the planner read
    // and sorted every queued job for each claim: the bench's slow mode)
    Ok(sqlx::query_as(
        "SELECT job_id, order_id, attempts, max_attempts, lease_token, amount_cents, currency, request_id
         FROM claim_jobs($1, $2, $3)",
    )
    .bind(owner)
    .bind(interval(lease))
    .bind(limit.max(1) as i64)
    .fetch_all(db)
    .await?)
}

/// Extend the lease while the job is worked on; `false` when it was lost.
pub async fn renew_lease(pool: &PgPool, job: &ClaimedJob, lease: Duration) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE jobs SET lease_expires_at = clock_timestamp() + make_interval(secs => $3)
         WHERE id = $1 AND lease_token = $2 AND status = 'running'",
    )
    .bind(job.job_id)
    .bind(job.lease_token)
    .bind(interval(lease))
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Extend the leases of `jobs` (id, token) in one statement; returns the
/// ids whose lease is still held (each renewal fenced by its own token).
pub async fn renew_leases(pool: &PgPool, jobs: &[(i64, Uuid)], lease: Duration) -> Result<Vec<i64>> {
    let (ids, tokens): (Vec<i64>, Vec<Uuid>) = jobs.iter().copied().unzip();
    Ok(sqlx::query_scalar(
        "UPDATE jobs j SET lease_expires_at = clock_timestamp() + make_interval(secs => $3)
         FROM unnest($1::bigint[], $2::uuid[]) AS held(id, token)
         WHERE j.id = held.id AND j.lease_token = held.token AND j.status = 'running'
         RETURNING j.id",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(interval(lease))
    .fetch_all(pool)
    .await?)
}

/// Times of an order that reached a final state (for end-to-end latency).
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Finished {
    pub created_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

impl Finished {
    pub fn e2e_seconds(&self) -> f64 {
        (self.finished_at - self.created_at).num_microseconds().unwrap_or(0) as f64 / 1e6
    }
}

/// End the job and give the order its final status in one statement.
/// `None` when the lease was lost (another worker owns the job now).
async fn finish(
    pool: &PgPool,
    job: &ClaimedJob,
    job_status: &str,
    order_status: &str,
    spent_attempt: bool,
    charge_id: Option<&str>,
    error: Option<&str>,
) -> Result<Option<Finished>> {
    Ok(sqlx::query_as(
        "WITH j AS (
             UPDATE jobs SET status = $3, attempts = attempts + $4, lease_owner = NULL, lease_token = NULL,
                             lease_expires_at = NULL, last_error = COALESCE($7, last_error),
                             finished_at = clock_timestamp(), updated_at = clock_timestamp()
             WHERE id = $1 AND lease_token = $2 AND status = 'running'
             RETURNING order_id
         )
         UPDATE orders o SET status = $5, charge_id = $6, failure_reason = $7,
                             finished_at = clock_timestamp(), updated_at = clock_timestamp()
         FROM j WHERE o.id = j.order_id
         RETURNING o.created_at, o.finished_at",
    )
    .bind(job.job_id)
    .bind(job.lease_token)
    .bind(job_status)
    .bind(i32::from(spent_attempt))
    .bind(order_status)
    .bind(charge_id)
    .bind(error)
    .fetch_optional(pool)
    .await?)
}

/// The charge went through: order `paid`, job `done`.
pub async fn complete_paid(pool: &PgPool, job: &ClaimedJob, charge_id: &str) -> Result<Option<Finished>> {
    finish(pool, job, "done", "paid", false, Some(charge_id), None).await
}

/// A paid job waiting to be recorded: [`complete_paid_batch`]'s input.
#[derive(Debug, Clone)]
pub struct PaidJob {
    pub job_id: i64,
    pub lease_token: Uuid,
    pub charge_id: String,
}

/// [`complete_paid`] for many jobs in one statement: each job `done` and its
/// order `paid` only where its own lease token still holds. Returns the
/// finished jobs by id; a job missing from the answer had lost its lease.
pub async fn complete_paid_batch(pool: &PgPool, jobs: &[PaidJob]) -> Result<Vec<(i64, Finished)>> {
    // in id order (a tidy input; each job is leased by one worker only, so
    // two batches compete for a row only after a lease was taken over)
    let mut sorted: Vec<&PaidJob> = jobs.iter().collect();
    sorted.sort_by_key(|j| j.job_id);
    let ids: Vec<i64> = sorted.iter().map(|j| j.job_id).collect();
    let tokens: Vec<Uuid> = sorted.iter().map(|j| j.lease_token).collect();
    let charges: Vec<&str> = sorted.iter().map(|j| j.charge_id.as_str()).collect();
    let rows: Vec<(i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "WITH paid AS (
             SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[]) AS p(id, token, charge_id)
         ), j AS (
             UPDATE jobs SET status = 'done', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                             finished_at = clock_timestamp(), updated_at = clock_timestamp()
             FROM paid
             WHERE jobs.id = paid.id AND jobs.lease_token = paid.token AND jobs.status = 'running'
             RETURNING jobs.id, jobs.order_id, paid.charge_id
         )
         UPDATE orders o SET status = 'paid', charge_id = j.charge_id, failure_reason = NULL,
                             finished_at = clock_timestamp(), updated_at = clock_timestamp()
         FROM j WHERE o.id = j.order_id
         RETURNING j.id, o.created_at, o.finished_at",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(&charges)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, created_at, finished_at)| {
            (
                id,
                Finished {
                    created_at,
                    finished_at,
                },
            )
        })
        .collect())
}

/// A business rejection: order `failed`, job `done`.
pub async fn complete_failed(pool: &PgPool, job: &ClaimedJob, reason: &str) -> Result<Option<Finished>> {
    finish(pool, job, "done", "failed", true, None, Some(reason)).await
}

/// Out of attempts: job `dead`, order `dead_lettered`.
pub async fn dead_letter(pool: &PgPool, job: &ClaimedJob, reason: &str) -> Result<Option<Finished>> {
    finish(pool, job, "dead", "dead_lettered", true, None, Some(reason)).await
}

/// Back to `queued`, due after `delay`. `spend_attempt` for a retry loop that
/// gave up; not for a breaker or bulkhead deferral. `false` when the lease was lost.
pub async fn requeue(
    pool: &PgPool,
    job: &ClaimedJob,
    delay: Duration,
    spend_attempt: bool,
    error: &str,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE jobs SET status = 'queued', attempts = attempts + $3,
                         run_at = clock_timestamp() + make_interval(secs => $4),
                         lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                         last_error = $5, updated_at = clock_timestamp()
         WHERE id = $1 AND lease_token = $2 AND status = 'running'",
    )
    .bind(job.job_id)
    .bind(job.lease_token)
    .bind(i32::from(spend_attempt))
    .bind(interval(delay))
    .bind(error)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Put every job leased by `owner` back in the queue, due now (graceful
/// shutdown: whatever did not finish in time goes to another worker).
pub async fn release_leases(pool: &PgPool, owner: &str) -> Result<u64> {
    let r = sqlx::query(
        "UPDATE jobs SET status = 'queued', run_at = clock_timestamp(), lease_owner = NULL, lease_token = NULL,
                         lease_expires_at = NULL, updated_at = clock_timestamp()
         WHERE lease_owner = $1 AND status = 'running'",
    )
    .bind(owner)
    .execute(pool)
    .await?;
    if r.rows_affected() > 0 {
        notify_workers(pool).await?;
    }
    Ok(r.rows_affected())
}

/// Jobs whose worker died (lease expired) go back to the queue, due now.
pub async fn requeue_expired_leases(pool: &PgPool) -> Result<u64> {
    let r = sqlx::query(
        "UPDATE jobs SET status = 'queued', run_at = clock_timestamp(), lease_owner = NULL, lease_token = NULL,
                         lease_expires_at = NULL, last_error = 'lease expired (worker lost)',
                         updated_at = clock_timestamp()
         WHERE status = 'running' AND lease_expires_at < clock_timestamp()",
    )
    .execute(pool)
    .await?;
    if r.rows_affected() > 0 {
        notify_workers(pool).await?;
    }
    Ok(r.rows_affected())
}

/// Wake the workers now (one NOTIFY, in its own transaction).
pub async fn notify_workers(pool: &PgPool) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(JOBS_CHANNEL)
        .execute(pool)
        .await?;
    Ok(())
}

/// The shortest time between two NOTIFYs of one [`WorkerWakeups`].
pub const NOTIFY_MIN_GAP: Duration = Duration::from_millis(2);

/// Wakes the workers after new jobs were committed, coalesced: one NOTIFY
/// for every new job that arrived since the last one, and at most one per
/// [`NOTIFY_MIN_GAP`].
///
/// Why not a `pg_notify` in each order's insert transaction: Postgres
/// serialises the commits of every transaction that notified (a cluster-wide
/// lock held until the commit is flushed), and the listening session runs a
/// transaction for each notification it reads; at saturation that was one
/// extra transaction and one serialised fsync per order. A NOTIFY is only a
/// hint (workers poll as a fallback, and a worker that finds a full batch
/// claims again without waiting), so it is sent after the commit, in a
/// transaction of its own with `synchronous_commit = off` (it writes
/// nothing worth a flush). An idle lab notifies at once, before the order's
/// `201`; a saturated one at most every 2 ms, which delays a sleeping
/// worker's pickup by at most that.
#[derive(Debug, Default)]
pub struct WorkerWakeups {
    wanted: tokio::sync::Notify,
    last_sent: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl WorkerWakeups {
    /// A job was committed: wake the workers. The first job after a quiet
    /// [`NOTIFY_MIN_GAP`] sends the NOTIFY itself, before its request is
    /// answered (an idle lab's pickup waits for nothing); the others leave it
    /// to [`WorkerWakeups::run`], which sends one for all of them at the end of the gap.
    pub async fn job_committed(&self, pool: &PgPool) {
        let now = tokio::time::Instant::now();
        let lead = {
            let mut last = self.last_sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let lead = last.is_none_or(|t| now.duration_since(t) >= NOTIFY_MIN_GAP);
            if lead {
                *last = Some(now);
            }
            lead
        };
        if lead {
            send_wakeup(pool).await;
        } else {
            self.wanted.notify_one();
        }
    }

    /// Send the NOTIFYs that were left to it, until `stop`.
    pub async fn run(self: std::sync::Arc<Self>, pool: PgPool, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wanted.notified() => {}
            }
            let last = *self.last_sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(last) = last {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(last + NOTIFY_MIN_GAP) => {}
                }
            }
            // a job committed from here on asks for the next NOTIFY (the
            // Notify keeps its permit); this one covers every earlier commit
            *self.last_sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(tokio::time::Instant::now());
            send_wakeup(&pool).await;
        }
    }
}

/// One NOTIFY in a transaction of its own that does not wait for its flush.
async fn send_wakeup(pool: &PgPool) {
    let sent = sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')")
        .bind(JOBS_CHANNEL)
        .execute(pool)
        .await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, "waking the workers failed; they will poll");
    }
}

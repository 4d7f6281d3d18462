//! The durable job queue in Postgres.
//!
//! Job states: `queued` -> `running` (claimed under a lease) -> `done` |
//! `queued` again (retry or deferral, at `run_at`) | `dead` (dead-lettered).
//! A `running` job whose lease expired is put back to `queued` by
//! [`requeue_expired_leases`] (every worker runs it), so a worker that dies
//! mid-job loses nothing. Every transition out of `running` names the lease
//! token it was claimed with: a worker whose lease was taken over cannot
//! complete the job a second time.

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
    Ok(sqlx::query_as(
        "WITH next AS (
             SELECT id FROM jobs
             WHERE status = 'queued' AND run_at <= clock_timestamp()
             ORDER BY run_at
             LIMIT 1
             FOR UPDATE SKIP LOCKED
         )
         UPDATE jobs j
         SET status = 'running', lease_owner = $1, lease_token = gen_random_uuid(),
             lease_expires_at = clock_timestamp() + make_interval(secs => $2),
             claims = claims + 1, updated_at = clock_timestamp()
         FROM next, orders o
         WHERE j.id = next.id AND o.id = j.order_id
         RETURNING j.id AS job_id, j.order_id, j.attempts, j.max_attempts, j.lease_token,
                   o.amount_cents, o.currency, o.request_id",
    )
    .bind(owner)
    .bind(interval(lease))
    .fetch_optional(pool)
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

pub async fn notify_workers(pool: &PgPool) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(JOBS_CHANNEL)
        .execute(pool)
        .await?;
    Ok(())
}

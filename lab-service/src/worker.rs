//! Payment workers: claim a job, pay it through bulkhead -> retry -> breaker
//! -> timeout, and record the outcome in one statement.
//!
//! | retry loop ended with | job                     | order          | attempt spent |
//! |-----------------------|-------------------------|----------------|---------------|
//! | succeeded             | done                    | paid           | no            |
//! | permanent (4xx)       | done                    | failed         | yes           |
//! | gave up, budget left  | queued at backoff       | pending        | yes           |
//! | gave up, budget spent | dead                    | dead_lettered  | yes           |
//! | breaker rejected      | queued at breaker retry | pending        | **no**        |
//! | bulkhead full         | queued shortly          | pending        | **no**        |

use crate::config::WorkerConfig;
use crate::db::JOBS_CHANNEL;
use crate::error::Result;
use crate::metrics::PipelineMetrics;
use crate::payment_client::PaymentClient;
use crate::queue::{self, ClaimedJob};
use crate::resilience::{Backoff, Bulkhead, CircuitBreaker, RetryOutcome, RetryPolicy};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Everything one job loop needs; shared by the loops of a process.
struct Shared {
    pool: PgPool,
    config: WorkerConfig,
    metrics: PipelineMetrics,
    client: PaymentClient,
    breaker: CircuitBreaker,
    bulkhead: Bulkhead,
    retry: RetryPolicy,
    job_backoff: Backoff,
    wake: Notify,
}

/// A running set of job loops plus the listener and lease reaper.
pub struct WorkerPool {
    tasks: JoinSet<()>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    pub ready: Arc<AtomicBool>,
}

impl WorkerPool {
    /// Start `config.concurrency` job loops. They stop claiming when `stop`
    /// is cancelled; [`WorkerPool::shutdown`] then drains them.
    pub async fn start(
        pool: PgPool,
        config: WorkerConfig,
        metrics: PipelineMetrics,
        stop: CancellationToken,
    ) -> Result<Self> {
        let breaker = {
            let m = metrics.clone();
            m.breaker_state.set(0);
            CircuitBreaker::with_observer(config.breaker.clone(), move |from, to| {
                m.breaker_transitions
                    .with_label_values(&[from.as_str(), to.as_str()])
                    .inc();
                m.breaker_state.set(to.gauge());
                tracing::warn!(from = from.as_str(), to = to.as_str(), "circuit breaker transition");
            })
        };
        let shared = Arc::new(Shared {
            client: PaymentClient::new(&config.payment_url, config.payment_timeout, config.send_idempotency_key)?,
            bulkhead: Bulkhead::new(config.bulkhead_max_concurrent, config.bulkhead_max_wait),
            retry: RetryPolicy {
                max_attempts: config.retry_max_attempts,
                backoff: Backoff::new(config.backoff.clone()),
            },
            job_backoff: Backoff::new(config.backoff.clone()),
            breaker,
            pool,
            config,
            metrics,
            wake: Notify::new(),
        });
        let mut listener = PgListener::connect_with(&shared.pool).await?;
        listener.listen(JOBS_CHANNEL).await?;

        let mut tasks = JoinSet::new();
        tasks.spawn(listen_for_jobs(listener, shared.clone(), stop.clone()));
        tasks.spawn(reap_expired_leases(shared.clone(), stop.clone()));
        for n in 0..shared.config.concurrency {
            tasks.spawn(job_loop(n, shared.clone(), stop.clone()));
        }
        tracing::info!(worker_id = %shared.config.worker_id, concurrency = shared.config.concurrency, "workers started");
        Ok(Self {
            tasks,
            shared,
            stop,
            ready: Arc::new(AtomicBool::new(true)),
        })
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.shared.breaker
    }

    /// Stop claiming, give in-flight jobs until the deadline, then abort what
    /// is left and release its leases so another worker takes the jobs.
    pub async fn shutdown(mut self) -> Result<u64> {
        self.ready.store(false, Ordering::SeqCst);
        self.stop.cancel();
        let deadline = self.shared.config.shutdown_deadline;
        let drained = tokio::time::timeout(deadline, async { while self.tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                ?deadline,
                "in-flight jobs did not finish before the deadline; aborting them"
            );
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        let released = queue::release_leases(&self.shared.pool, &self.shared.config.worker_id).await?;
        tracing::info!(released, "workers stopped");
        Ok(released)
    }
}

async fn listen_for_jobs(mut listener: PgListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            msg = listener.recv() => match msg {
                Ok(_) => shared.wake.notify_one(),
                Err(e) => {
                    // polling keeps jobs moving; PgListener reconnects on the next recv
                    tracing::warn!(error = %e, "LISTEN connection failed; relying on polling");
                    tokio::time::sleep(shared.config.poll_interval).await;
                }
            }
        }
    }
}

async fn reap_expired_leases(shared: Arc<Shared>, stop: CancellationToken) {
    let every = (shared.config.lease / 2).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match queue::requeue_expired_leases(&shared.pool).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(jobs = n, "re-queued jobs whose lease expired"),
            Err(e) => tracing::warn!(error = %e, "lease reaper failed"),
        }
    }
}

async fn job_loop(n: usize, shared: Arc<Shared>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        match queue::claim_next_job(&shared.pool, &shared.config.worker_id, shared.config.lease).await {
            Ok(Some(job)) => {
                // a claimed job may mean more are due: pass the wake-up on
                shared.wake.notify_one();
                let span = tracing::info_span!("job", order_id = %job.order_id, request_id = job.request_id.as_deref().unwrap_or(""), job_id = job.job_id, loop_no = n);
                process(&shared, job).instrument(span).await;
            }
            Ok(None) => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep(shared.config.poll_interval) => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "claim failed; backing off");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(shared.config.poll_interval) => {}
                }
            }
        }
    }
}

/// Keep renewing the lease until dropped.
fn spawn_heartbeat(shared: &Arc<Shared>, job: &ClaimedJob) -> tokio::task::JoinHandle<()> {
    let (shared, job) = (shared.clone(), job.clone());
    tokio::spawn(async move {
        let every = shared.config.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            match queue::renew_lease(&shared.pool, &job, shared.config.lease).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
        }
    })
}

async fn process(shared: &Arc<Shared>, job: ClaimedJob) {
    let heartbeat = spawn_heartbeat(shared, &job);
    let result = pay(shared, &job).await;
    heartbeat.abort();
    if let Err(e) = result {
        // the lease will expire and the reaper re-queues the job
        tracing::error!(error = %e, "recording the job outcome failed");
    }
}

async fn pay(shared: &Arc<Shared>, job: &ClaimedJob) -> Result<()> {
    let m = &shared.metrics;
    let slot = match shared.bulkhead.enter().await {
        Ok(slot) => slot,
        Err(_) => {
            m.bulkhead_rejections.inc();
            m.jobs.with_label_values(&["bulkhead_deferred"]).inc();
            let delay = shared.config.bulkhead_max_wait.max(Duration::from_millis(20));
            queue::requeue(&shared.pool, job, delay, false, "bulkhead full").await?;
            return Ok(());
        }
    };
    m.bulkhead_in_use.set(shared.bulkhead.in_use() as i64);
    let outcome = shared
        .retry
        .run(
            &shared.breaker,
            |attempt| {
                m.payment_calls.inc();
                if attempt > 1 {
                    m.retries.inc();
                }
                shared.client.charge(job)
            },
            |attempt, err| {
                m.payment_failures.with_label_values(&[err.reason()]).inc();
                tracing::info!(
                    attempt,
                    reason = err.reason(),
                    detail = err.detail(),
                    "payment call failed"
                );
            },
        )
        .await;
    drop(slot);
    m.bulkhead_in_use.set(shared.bulkhead.in_use() as i64);
    m.retry_loops.with_label_values(&[outcome.result_label()]).inc();

    let (label, finished) = match outcome {
        RetryOutcome::Succeeded { value, attempts } => {
            tracing::info!(attempts, charge_id = %value.charge_id, replayed = value.replayed, "order paid");
            ("paid", queue::complete_paid(&shared.pool, job, &value.charge_id).await?)
        }
        RetryOutcome::Permanent { error, .. } => {
            tracing::info!(reason = error.reason(), "order failed: payment rejected");
            (
                "failed",
                queue::complete_failed(&shared.pool, job, &format!("{}: {}", error.reason(), error.detail())).await?,
            )
        }
        RetryOutcome::BreakerRejected { rejected, attempts } => {
            tracing::info!(
                state = rejected.state.as_str(),
                retry_after_ms = rejected.retry_after.as_millis() as u64,
                attempts,
                "breaker rejected the call; deferring without spending an attempt"
            );
            m.jobs.with_label_values(&["breaker_deferred"]).inc();
            m.breaker_rejections.with_label_values(&[rejected.state.as_str()]).inc();
            let reason = format!("circuit breaker {}", rejected.state.as_str());
            if !queue::requeue(&shared.pool, job, rejected.retry_after, false, &reason).await? {
                m.jobs.with_label_values(&["lease_lost"]).inc();
            }
            return Ok(());
        }
        RetryOutcome::GaveUp { last, attempts } => {
            let spent = job.attempts + 1;
            let reason = format!("{} after {attempts} calls: {}", last.reason(), last.detail());
            if spent >= job.max_attempts {
                tracing::warn!(job_attempts = spent, "dead-lettered: out of attempts");
                ("dead_lettered", queue::dead_letter(&shared.pool, job, &reason).await?)
            } else {
                let delay = shared.job_backoff.delay(spent as u32, None, &mut rand::thread_rng());
                tracing::info!(
                    job_attempts = spent,
                    delay_ms = delay.as_millis() as u64,
                    "retry loop gave up; job re-queued"
                );
                m.jobs.with_label_values(&["retry_scheduled"]).inc();
                if !queue::requeue(&shared.pool, job, delay, true, &reason).await? {
                    m.jobs.with_label_values(&["lease_lost"]).inc();
                }
                return Ok(());
            }
        }
    };
    match finished {
        Some(f) => {
            m.jobs.with_label_values(&[label]).inc();
            m.order_e2e.observe(f.e2e_seconds());
        }
        None => {
            tracing::warn!("lease lost before the outcome was recorded; another worker owns the job");
            m.jobs.with_label_values(&["lease_lost"]).inc();
        }
    }
    Ok(())
}

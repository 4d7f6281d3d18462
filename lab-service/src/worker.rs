//! Payment workers: claim jobs, pay each through bulkhead -> retry -> breaker
//! -> timeout, and record the outcome.
//!
//! | retry loop ended with | job                     | order          | attempt spent |
//! |-----------------------|-------------------------|----------------|---------------|
//! | succeeded             | done                    | paid           | no            |
//! | permanent (4xx)       | done                    | failed         | yes           |
//! | gave up, budget left  | queued at backoff       | pending        | yes           |
//! | gave up, budget spent | dead                    | dead_lettered  | yes           |
//! | breaker rejected      | queued at breaker retry | pending        | **no**        |
//! | bulkhead full         | queued shortly          | pending        | **no**        |
//!
//! ## Shape: one claimer, `concurrency` job slots, one recorder of payments
//!
//! - The **claimer** holds a semaphore of `concurrency` slots. When at least
//!   one slot is free it takes every free slot and claims that many due jobs
//!   in one statement (`queue::claim_jobs`), starting one task per job. A
//!   claim never takes more jobs than there are free slots, so no claimed
//!   job waits in memory while its lease runs. It sleeps only after a claim
//!   came back short (the queue is empty), until a NOTIFY, a poll tick or a
//!   freed slot after a full claim.
//! - Each **job task** pays its job and records the outcome; it frees its
//!   slot once the outcome is in the database.
//! - Paid jobs (nearly all of them) are recorded by the **recorder**: it
//!   takes the first waiting payment and every other one already waiting
//!   (up to `concurrency`), and completes them in one statement
//!   (`queue::complete_paid_batch`, each fenced by its own lease). It never
//!   waits to fill a batch: a lone payment is recorded at once, and under
//!   load the payments that arrive during one statement form the next batch.
//! - One **heartbeat** renews the leases of every job in flight in one
//!   statement every `lease / 3`.
//!
//! The batching contract (why a batch is as safe as one job) is in
//! `queue.rs`'s module docs.

use crate::config::WorkerConfig;
use crate::db::JOBS_CHANNEL;
use crate::error::{Error, Result};
use crate::metrics::PipelineMetrics;
use crate::payment_client::PaymentClient;
use crate::queue::{self, ClaimedJob, Finished, PaidJob};
use crate::resilience::{Backoff, Bulkhead, CircuitBreaker, RetryOutcome, RetryPolicy};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

/// Everything the claimer and the job tasks need; shared by a process's workers.
struct Shared {
    pool: PgPool,
    config: WorkerConfig,
    metrics: PipelineMetrics,
    client: PaymentClient,
    breaker: CircuitBreaker,
    bulkhead: Bulkhead,
    retry: RetryPolicy,
    job_backoff: Backoff,
    /// A NOTIFY arrived (or another wake-up): the claimer looks again.
    wake: Notify,
    /// Leases held by this process's job tasks (job id -> token): the heartbeat's list.
    leases: Mutex<HashMap<i64, Uuid>>,
}

/// A running set of workers: the claimer (and its job tasks), the recorder
/// of payments, the heartbeat, the listener and the lease reaper.
pub struct WorkerPool {
    tasks: JoinSet<()>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    pub ready: Arc<AtomicBool>,
}

impl WorkerPool {
    /// Start the workers with `config.concurrency` job slots. They stop
    /// claiming when `stop` is cancelled; [`WorkerPool::shutdown`] then drains them.
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
            leases: Mutex::new(HashMap::new()),
        });
        let mut listener = PgListener::connect_with(&shared.pool).await?;
        listener.listen(JOBS_CHANNEL).await?;

        let (record_tx, record_rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        tasks.spawn(listen_for_jobs(listener, shared.clone(), stop.clone()));
        tasks.spawn(reap_expired_leases(shared.clone(), stop.clone()));
        tasks.spawn(renew_leases(shared.clone(), stop.clone()));
        // ends when the claimer and every job task have dropped their sender
        tasks.spawn(record_payments(shared.clone(), record_rx));
        tasks.spawn(claim_jobs(shared.clone(), Recorder(record_tx), stop.clone()));
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

/// The claimer: free slots -> one claim of that many jobs -> a task per job.
async fn claim_jobs(shared: Arc<Shared>, recorder: Recorder, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(shared.config.concurrency.max(1)));
    let mut running = JoinSet::new();
    while !stop.is_cancelled() {
        let first = tokio::select! {
            _ = stop.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            // reap finished job tasks while every slot is busy
            Some(_) = running.join_next(), if !running.is_empty() => continue,
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let wanted = permits.len();
        match queue::claim_jobs(&shared.pool, &shared.config.worker_id, shared.config.lease, wanted).await {
            Ok(jobs) => {
                let got = jobs.len();
                for (job, slot) in jobs.into_iter().zip(permits.drain(..)) {
                    lock(&shared.leases).insert(job.job_id, job.lease_token);
                    let span = tracing::info_span!("job", order_id = %job.order_id, request_id = job.request_id.as_deref().unwrap_or(""), job_id = job.job_id);
                    let (shared, recorder) = (shared.clone(), recorder.clone());
                    running.spawn(
                        async move {
                            let job_id = job.job_id;
                            if let Err(e) = pay(&shared, &recorder, &job).await {
                                // the lease will expire and the reaper re-queues the job
                                tracing::error!(error = %e, "recording the job outcome failed");
                            }
                            lock(&shared.leases).remove(&job_id);
                            drop(slot);
                        }
                        .instrument(span),
                    );
                }
                drop(permits);
                if got == wanted {
                    // a full claim: more may be due, claim again once a slot is free
                    continue;
                }
            }
            Err(e) => {
                drop(permits);
                tracing::warn!(error = %e, "claim failed; backing off");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(shared.config.poll_interval) => {}
                }
                continue;
            }
        }
        // the queue had fewer due jobs than free slots: wait for news
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(shared.config.poll_interval) => {}
        }
    }
    // stopped claiming: the jobs in flight finish (or are aborted with this task)
    while running.join_next().await.is_some() {}
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The heartbeat: every `lease / 3`, renew every lease in flight in one statement.
async fn renew_leases(shared: Arc<Shared>, stop: CancellationToken) {
    let every = shared.config.lease / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let held: Vec<(i64, Uuid)> = lock(&shared.leases).iter().map(|(id, t)| (*id, *t)).collect();
        if held.is_empty() {
            continue;
        }
        match queue::renew_leases(&shared.pool, &held, shared.config.lease).await {
            Ok(renewed) => {
                // a job recorded meanwhile is no longer running: not a loss
                let renewed: std::collections::HashSet<i64> = renewed.into_iter().collect();
                let leases = lock(&shared.leases);
                let lost = held
                    .iter()
                    .filter(|(id, _)| !renewed.contains(id) && leases.contains_key(id))
                    .count();
                if lost > 0 {
                    tracing::warn!(lost, "leases lost while their jobs ran; another worker owns those jobs");
                }
            }
            Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
        }
    }
}

/// A paid job and where to say how its recording went.
struct PaymentToRecord {
    job: PaidJob,
    done: oneshot::Sender<Result<Option<Finished>>>,
}

/// The sending side of [`record_payments`].
#[derive(Clone)]
struct Recorder(mpsc::UnboundedSender<PaymentToRecord>);

impl Recorder {
    /// Record a paid job (batched with others); `None` when its lease was lost.
    async fn paid(&self, job: &ClaimedJob, charge_id: &str) -> Result<Option<Finished>> {
        let (done, answer) = oneshot::channel();
        let job = PaidJob {
            job_id: job.job_id,
            lease_token: job.lease_token,
            charge_id: charge_id.to_string(),
        };
        self.0
            .send(PaymentToRecord { job, done })
            .map_err(|_| Error::Other("the payment recorder has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Other("the payment recorder has stopped".into()))?
    }
}

/// The recorder: the first paid job waiting plus every other one already
/// waiting (up to `concurrency`), completed in one statement.
async fn record_payments(shared: Arc<Shared>, mut waiting: mpsc::UnboundedReceiver<PaymentToRecord>) {
    let most = shared.config.concurrency.max(1);
    let mut batch = Vec::with_capacity(most);
    while waiting.recv_many(&mut batch, most).await > 0 {
        let jobs: Vec<PaidJob> = batch.iter().map(|p| p.job.clone()).collect();
        match queue::complete_paid_batch(&shared.pool, &jobs).await {
            Ok(finished) => {
                let finished: HashMap<i64, Finished> = finished.into_iter().collect();
                for p in batch.drain(..) {
                    let _ = p.done.send(Ok(finished.get(&p.job.job_id).copied()));
                }
            }
            Err(e) => {
                let e = e.to_string();
                for p in batch.drain(..) {
                    let _ = p
                        .done
                        .send(Err(Error::Other(format!("recording the payment failed: {e}"))));
                }
            }
        }
    }
}

/// Wake the claimer when a job this process re-queued falls due (the one
/// claimer would otherwise see it only at its next poll).
fn wake_when_due(shared: &Arc<Shared>, delay: Duration) {
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        shared.wake.notify_one();
    });
}

async fn pay(shared: &Arc<Shared>, recorder: &Recorder, job: &ClaimedJob) -> Result<()> {
    let m = &shared.metrics;
    let slot = match shared.bulkhead.enter().await {
        Ok(slot) => slot,
        Err(_) => {
            m.bulkhead_rejections.inc();
            m.jobs.with_label_values(&["bulkhead_deferred"]).inc();
            let delay = shared.config.bulkhead_max_wait.max(Duration::from_millis(20));
            queue::requeue(&shared.pool, job, delay, false, "bulkhead full").await?;
            wake_when_due(shared, delay);
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
            ("paid", recorder.paid(job, &value.charge_id).await?)
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
            wake_when_due(shared, rejected.retry_after);
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
                wake_when_due(shared, delay);
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

//! Running the load: the open loop (its senders are in `open_loop`) and
//! the closed loops. Every finished request records itself into one shared
//! [`Recorder`] (a short, rarely contended lock); a publisher task copies
//! its totals into the progress channel a few times a second.

use super::http1::ConnectionSlot;
use super::open_loop::open_loop;
use super::record::{Recorder, Sample};
use super::request::Requester;
use super::{LoadConfig, LoadMode, LoadProgress, LoadReport, Target, LATE_SEND_THRESHOLD};
use crate::error::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the publisher copies the totals into [`LoadProgress`].
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// Run the load described by `config` against `target` until its schedule
/// (or duration) is done, or `stop` is cancelled; then wait for the answers
/// still outstanding (each bounded by the request timeout) and report.
/// Marks `progress` started and keeps its request counts current.
pub async fn run_load(
    target: &Target,
    config: &LoadConfig,
    progress: &watch::Sender<LoadProgress>,
    stop: &CancellationToken,
) -> Result<LoadReport> {
    config.validate()?;
    let requester = Arc::new(Requester::new(target, config.request_timeout).await?);
    let shared = Arc::new(Shared {
        recorder: Mutex::new(Recorder::new(LATE_SEND_THRESHOLD)),
        sent: AtomicU64::new(0),
    });
    let start = Instant::now();
    progress.send_modify(|p| {
        p.started = true;
        p.planned = config.planned_duration();
        p.elapsed = Duration::ZERO;
    });
    let finished = CancellationToken::new();
    let publisher = tokio::spawn(publish_progress(
        shared.clone(),
        progress.clone(),
        start,
        finished.clone(),
    ));
    let stopped_early = match &config.mode {
        LoadMode::OpenLoop { stages } => open_loop(stages, config, requester, &shared, start, stop).await,
        LoadMode::ClosedLoop { concurrency, duration } => {
            closed_loop(*concurrency, *duration, config.seed, requester, &shared, start, stop).await
        }
    };
    let elapsed = start.elapsed();
    finished.cancel();
    publisher
        .await
        .map_err(|e| crate::Error::Other(format!("load progress publisher: {e}")))?;
    let recorder = std::mem::replace(&mut *shared.lock(), Recorder::new(LATE_SEND_THRESHOLD));
    Ok(LoadReport {
        sent: recorder.totals.sent,
        accepted: recorder.totals.accepted,
        replayed: recorder.totals.replayed,
        shed: recorder.totals.shed,
        rejected: recorder.totals.rejected,
        errors: recorder.totals.errors,
        late_sends: recorder.late_sends,
        accepted_ids: recorder.accepted_ids,
        latency: recorder.latency,
        accepted_latency: recorder.accepted_latency,
        shed_latency: recorder.shed_latency,
        send_lag: recorder.send_lag,
        seconds: recorder.seconds,
        elapsed,
        stopped_early,
    })
}

/// What every request of a run writes to.
pub(super) struct Shared {
    recorder: Mutex<Recorder>,
    /// Requests that have left (the recorder only sees finished ones).
    pub sent: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.recorder.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn record(&self, sample: Sample) {
        self.lock().record(sample);
    }
}

/// `concurrency` loops sending back to back until `duration` is over.
async fn closed_loop(
    concurrency: usize,
    duration: Duration,
    seed: u64,
    requester: Arc<Requester>,
    shared: &Arc<Shared>,
    start: Instant,
    stop: &CancellationToken,
) -> bool {
    let deadline = start + duration;
    let seq = Arc::new(AtomicU64::new(0));
    let mut loops = tokio::task::JoinSet::new();
    for n in 0..concurrency {
        let (requester, shared, seq, stop) = (requester.clone(), shared.clone(), seq.clone(), stop.clone());
        loops.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(n as u64));
            let mut connection = ConnectionSlot::default();
            let mut timeout = requester.timeout_timer();
            loop {
                let left = Instant::now();
                if left >= deadline || stop.is_cancelled() {
                    break;
                }
                let body = requester.draw_body(&mut rng);
                shared.sent.fetch_add(1, Ordering::Relaxed);
                let (class, order_id) = requester
                    .send(&mut connection, &mut timeout, seq.fetch_add(1, Ordering::Relaxed), body)
                    .await;
                shared.record(Sample {
                    second: left.duration_since(start).as_secs() as u32,
                    latency: left.elapsed(),
                    send_lag: Duration::ZERO,
                    class,
                    order_id,
                });
            }
        });
    }
    while loops.join_next().await.is_some() {}
    stop.is_cancelled() && Instant::now() < deadline
}

/// Copy the totals into `progress` every [`PROGRESS_INTERVAL`] until `finished`, and once more then.
async fn publish_progress(
    shared: Arc<Shared>,
    progress: watch::Sender<LoadProgress>,
    start: Instant,
    finished: CancellationToken,
) {
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let done = tokio::select! {
            _ = finished.cancelled() => true,
            _ = tick.tick() => false,
        };
        let (accepted, shed, errors) = {
            let r = shared.lock();
            (r.totals.accepted, r.totals.shed, r.totals.errors)
        };
        progress.send_modify(|p| {
            p.elapsed = start.elapsed();
            p.sent = shared.sent.load(Ordering::Relaxed);
            p.accepted = accepted;
            p.shed = shed;
            p.errors = errors;
        });
        if done {
            return;
        }
    }
}

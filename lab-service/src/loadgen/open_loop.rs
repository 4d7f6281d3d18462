//! The open loop: a pool of long-lived sender tasks that take the sends of
//! the schedule in order from one [`Cursor`] (an atomic index), each
//! waiting until its send's intended time, then sending on its own
//! keep-alive connection and recording the answer, and taking the next.
//!
//! A sender is one request in flight at most, so the pool never grows past
//! `max_in_flight` senders. It starts with a few spare senders (enough for
//! the sends due within [`SPARE_WINDOW`] at the highest rate) and grows by
//! one whenever a sender leaves with fewer than that many left waiting, so a
//! slow server gets more senders up to the bound, and past the bound the
//! next send waits for a sender to come back: it leaves late, and its
//! latency, still measured from its intended time, shows the wait.
//!
//! Compared with a task per request and a dispatcher: no spawn, no
//! semaphore and no hand-over per request; sends due in the same
//! millisecond (tokio's timer resolution) wake together from the timer.
//!
//! **Timer resolution.** Tokio's timer fires at the first millisecond tick
//! at or after a deadline, so a sleep until the intended time always ended
//! 0–1 ms late (send lag p50 ~1 ms at every rate, before the wake-up and the
//! other sends of the same tick). A sender sleeps until [`TIMER_TICK`]
//! before its intended time instead: it leaves within about a tick either
//! side of it, centred on it. Its send lag is the distance either way, and
//! its latency counts from whichever came first, the intended time (a late
//! send's wait counts, as ever) or the moment it left (an early send is not
//! credited with time it did not wait).

use super::driver::Shared;
use super::http1::ConnectionSlot;
use super::record::Sample;
use super::request::Requester;
use super::schedule::Cursor;
use super::{LoadConfig, LoadStage};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Waiting senders kept ready: as many as the sends due within this long.
const SPARE_WINDOW: Duration = Duration::from_millis(2);

/// The resolution of tokio's timer: a sender wakes this long before its
/// send's intended time (see the module docs).
const TIMER_TICK: Duration = Duration::from_millis(1);

/// What the senders of one open loop share.
struct Pool {
    cursor: Cursor,
    requester: Arc<Requester>,
    shared: Arc<Shared>,
    start: Instant,
    seed: u64,
    stop: CancellationToken,
    /// Senders started so far (at most `max`).
    senders: AtomicUsize,
    /// Senders not in a request: waiting for a send's time or about to take one.
    waiting: AtomicUsize,
    /// How many waiting senders to keep ready.
    spare: usize,
    /// `max_in_flight`.
    max: usize,
    /// A sender ended because of `stop` with sends left to make.
    stopped: AtomicBool,
}

/// Send every request of this generator's share of the schedule at its
/// intended time, at most `max_in_flight` outstanding; return when all
/// have been answered (or `stop` cut the schedule short, which it returns).
pub(super) async fn open_loop(
    stages: &[LoadStage],
    config: &LoadConfig,
    requester: Arc<Requester>,
    shared: &Arc<Shared>,
    start: Instant,
    stop: &CancellationToken,
) -> bool {
    let cursor = Cursor::new(stages, config.share);
    let spare = spare_senders(cursor.peak_rate(), config.max_in_flight);
    let pool = Arc::new(Pool {
        cursor,
        requester,
        shared: shared.clone(),
        start,
        seed: config.seed,
        stop: stop.clone(),
        senders: AtomicUsize::new(0),
        waiting: AtomicUsize::new(0),
        spare,
        max: config.max_in_flight,
        stopped: AtomicBool::new(false),
    });
    // every sender holds a clone; recv() is None once the last one ended
    let (alive, mut all_ended) = mpsc::channel::<()>(1);
    for _ in 0..spare {
        pool.grow(&alive);
    }
    drop(alive);
    let _ = all_ended.recv().await;
    pool.stopped.load(Ordering::Relaxed)
}

/// Senders kept waiting for a peak rate (per second): the sends due within
/// [`SPARE_WINDOW`], plus one; at least one, at most `max_in_flight`.
fn spare_senders(peak_rate: f64, max_in_flight: usize) -> usize {
    let due = (peak_rate * SPARE_WINDOW.as_secs_f64()).ceil();
    let due = if due.is_finite() && due > 0.0 {
        due.min(max_in_flight as f64) as usize
    } else {
        0
    };
    (due + 1).clamp(1, max_in_flight.max(1))
}

impl Pool {
    /// Start one more sender, unless there are `max` already.
    fn grow(self: &Arc<Self>, alive: &mpsc::Sender<()>) {
        let below_max = |n: usize| (n < self.max).then_some(n + 1);
        if self
            .senders
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, below_max)
            .is_ok()
        {
            self.waiting.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(send_in_turn(self.clone(), alive.clone()));
        }
    }
}

/// One sender: take the next send, wait for its time, send, record, again.
async fn send_in_turn(pool: Arc<Pool>, alive: mpsc::Sender<()>) {
    let mut connection = ConnectionSlot::default();
    let mut timeout = pool.requester.timeout_timer();
    while let Some((seq, offset)) = pool.cursor.claim() {
        if pool.stop.is_cancelled() {
            pool.stopped.store(true, Ordering::Relaxed);
            break;
        }
        let intended = pool.start + offset;
        let wake = intended.checked_sub(TIMER_TICK).unwrap_or(intended).max(pool.start);
        if Instant::now() < wake {
            tokio::select! {
                biased;
                _ = pool.stop.cancelled() => {
                    pool.stopped.store(true, Ordering::Relaxed);
                    break;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        let left = Instant::now();
        if pool.waiting.fetch_sub(1, Ordering::Relaxed) <= pool.spare {
            pool.grow(&alive);
        }
        pool.shared.sent.fetch_add(1, Ordering::Relaxed);
        let body = pool.requester.body_of(pool.seed, seq);
        let (class, order_id) = pool.requester.send(&mut connection, &mut timeout, seq, body).await;
        let done = Instant::now();
        pool.shared.record(Sample {
            second: offset.as_secs() as u32,
            latency: done.saturating_duration_since(left.min(intended)),
            send_lag: left.max(intended).saturating_duration_since(left.min(intended)),
            class,
            order_id,
        });
        pool.waiting.fetch_add(1, Ordering::Relaxed);
    }
    drop(alive);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_senders_cover_two_milliseconds_of_sends_within_the_bound() {
        assert_eq!(spare_senders(30_000.0, 1_024), 61);
        assert_eq!(spare_senders(5_000.0, 1_024), 11);
        assert_eq!(spare_senders(50.0, 1_024), 2);
        assert_eq!(spare_senders(30_000.0, 16), 16, "never past max_in_flight");
        assert_eq!(spare_senders(0.0, 8), 1);
    }
}

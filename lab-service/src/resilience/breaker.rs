//! Circuit breaker: closed -> open -> half-open -> closed | open.
//!
//! * **Closed**: calls pass. Trips to open on `threshold` consecutive
//!   failures ([`BreakerMode::ConsecutiveFailures`]) or when, over the last
//!   `window`, at least `min_calls` calls were made and the failed share is at
//!   least `ratio` ([`BreakerMode::FailureRatio`]).
//! * **Open**: every call is rejected until `open_timeout` has passed since
//!   opening; the rejection says how long is left.
//! * **Half-open**: at most `half_open_probes` probe calls are let through.
//!   When that many probes succeed the breaker closes; any probe failure
//!   re-opens it. Calls beyond the probe budget are **rejected** too — the
//!   "half-open trap": a caller that treats this rejection as a retryable
//!   error burns its attempts against a breaker that is about to close.
//!
//! Results of calls admitted before the latest transition are ignored for
//! state (a slow call from the closed period cannot close a re-opened
//! breaker). The clock is passed in (`*_at` methods) so tests use fake time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the closed state decides to trip.
#[derive(Debug, Clone, PartialEq)]
pub enum BreakerMode {
    /// Never trips: every call passes (for "no breaker" comparison runs).
    Disabled,
    /// Trip after `threshold` failures in a row.
    ConsecutiveFailures { threshold: u32 },
    /// Trip when, over the last `window`, at least `min_calls` calls were made
    /// and the failure share reached `ratio`.
    FailureRatio {
        ratio: f64,
        min_calls: u32,
        window: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub mode: BreakerMode,
    pub open_timeout: Duration,
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            mode: BreakerMode::ConsecutiveFailures { threshold: 5 },
            open_timeout: Duration::from_secs(2),
            half_open_probes: 3,
        }
    }
}

impl BreakerConfig {
    /// Every problem with its field name.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        match &self.mode {
            BreakerMode::Disabled => return p,
            BreakerMode::ConsecutiveFailures { threshold } if *threshold == 0 => {
                p.push(("failureThreshold", "must be at least 1".to_string()))
            }
            BreakerMode::FailureRatio {
                ratio,
                min_calls,
                window,
            } => {
                if !(*ratio > 0.0 && *ratio <= 1.0) {
                    p.push(("failureRatio", format!("must be within (0, 1], got {ratio}")));
                }
                if *min_calls == 0 {
                    p.push(("minimumCalls", "must be at least 1".to_string()));
                }
                if window.is_zero() {
                    p.push(("window", "must be greater than zero".to_string()));
                }
            }
            _ => {}
        }
        if self.open_timeout.is_zero() {
            p.push(("openTimeout", "must be greater than zero".to_string()));
        }
        if self.half_open_probes == 0 {
            p.push(("halfOpenProbes", "must be at least 1".to_string()));
        }
        p
    }
}

/// The breaker's state, also its metric value (0, 1, 2): the model's one
/// decoding, shared with the observer, the status and the reports.
pub use relab_model::results::BreakerState;

/// A call refused by the breaker: permanent for now, try again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub state: BreakerState,
    pub retry_after: Duration,
}

type Observer = Arc<dyn Fn(BreakerState, BreakerState) + Send + Sync>;

struct Core {
    state: BreakerState,
    /// bumped on every transition; permits from older generations do not move state
    generation: u64,
    consecutive_failures: u32,
    window: VecDeque<(Instant, bool)>,
    opened_at: Option<Instant>,
    probes_issued: u32,
    probe_successes: u32,
}

struct Inner {
    config: BreakerConfig,
    core: Mutex<Core>,
    observer: Option<Observer>,
}

/// A thread-safe circuit breaker; clones share state.
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

/// Admission to make one call. Report its result with [`BreakerPermit::record`];
/// a permit dropped unrecorded (the call never happened) frees its probe slot.
#[must_use = "record the call's result on the permit"]
pub struct BreakerPermit {
    inner: Option<Arc<Inner>>,
    generation: u64,
    probe: bool,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_observer_opt(config, None)
    }

    /// `observer(from, to)` runs on every transition (metrics, timelines).
    pub fn with_observer(
        config: BreakerConfig,
        observer: impl Fn(BreakerState, BreakerState) + Send + Sync + 'static,
    ) -> Self {
        Self::with_observer_opt(config, Some(Arc::new(observer)))
    }

    fn with_observer_opt(config: BreakerConfig, observer: Option<Observer>) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                core: Mutex::new(Core {
                    state: BreakerState::Closed,
                    generation: 0,
                    consecutive_failures: 0,
                    window: VecDeque::new(),
                    opened_at: None,
                    probes_issued: 0,
                    probe_successes: 0,
                }),
                observer,
            }),
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.inner.config
    }

    pub fn state(&self) -> BreakerState {
        self.inner.core.lock().expect("breaker lock").state
    }

    pub fn acquire(&self) -> Result<BreakerPermit, Rejected> {
        self.acquire_at(Instant::now())
    }

    /// Ask to make a call at `now`.
    pub fn acquire_at(&self, now: Instant) -> Result<BreakerPermit, Rejected> {
        let cfg = &self.inner.config;
        if cfg.mode == BreakerMode::Disabled {
            return Ok(self.permit(0, false));
        }
        let mut transition = None;
        let result = {
            let mut core = self.inner.core.lock().expect("breaker lock");
            if core.state == BreakerState::Open {
                let opened = core.opened_at.unwrap_or(now);
                let elapsed = now.saturating_duration_since(opened);
                if elapsed >= cfg.open_timeout {
                    transition = Some(core.enter(BreakerState::HalfOpen, now));
                } else {
                    return Err(Rejected {
                        state: BreakerState::Open,
                        retry_after: cfg.open_timeout - elapsed,
                    });
                }
            }
            match core.state {
                BreakerState::Closed => Ok(self.permit(core.generation, false)),
                BreakerState::HalfOpen if core.probes_issued < cfg.half_open_probes => {
                    core.probes_issued += 1;
                    Ok(self.permit(core.generation, true))
                }
                _ => Err(Rejected {
                    state: BreakerState::HalfOpen,
                    // the probes in flight decide soon; look again in a fraction of the open timeout
                    retry_after: (cfg.open_timeout / 4).max(Duration::from_millis(10)),
                }),
            }
        };
        self.notify(transition);
        result
    }

    fn permit(&self, generation: u64, probe: bool) -> BreakerPermit {
        BreakerPermit {
            inner: Some(self.inner.clone()),
            generation,
            probe,
        }
    }

    fn notify(&self, transition: Option<(BreakerState, BreakerState)>) {
        notify(&self.inner, transition)
    }
}

fn notify(inner: &Inner, transition: Option<(BreakerState, BreakerState)>) {
    if let (Some((from, to)), Some(obs)) = (transition, inner.observer.as_ref()) {
        if from != to {
            obs(from, to);
        }
    }
}

impl Core {
    fn enter(&mut self, to: BreakerState, now: Instant) -> (BreakerState, BreakerState) {
        let from = self.state;
        self.state = to;
        self.generation += 1;
        self.consecutive_failures = 0;
        self.window.clear();
        self.probes_issued = 0;
        self.probe_successes = 0;
        self.opened_at = (to == BreakerState::Open).then_some(now);
        (from, to)
    }

    fn should_trip(&mut self, mode: &BreakerMode, now: Instant) -> bool {
        match mode {
            BreakerMode::Disabled => false,
            BreakerMode::ConsecutiveFailures { threshold } => self.consecutive_failures >= *threshold,
            BreakerMode::FailureRatio {
                ratio,
                min_calls,
                window,
            } => {
                while let Some((t, _)) = self.window.front() {
                    if now.saturating_duration_since(*t) > *window {
                        self.window.pop_front();
                    } else {
                        break;
                    }
                }
                let calls = self.window.len() as u32;
                let failures = self.window.iter().filter(|(_, ok)| !ok).count() as f64;
                calls >= *min_calls && failures / calls as f64 >= *ratio
            }
        }
    }
}

impl BreakerPermit {
    /// Report the call's result (only failures that say the dependency is
    /// unhealthy should be `success = false`; a business decline is a success).
    pub fn record(self, success: bool) {
        self.record_at(success, Instant::now())
    }

    pub fn record_at(mut self, success: bool, now: Instant) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if inner.config.mode == BreakerMode::Disabled {
            return;
        }
        let transition = {
            let mut core = inner.core.lock().expect("breaker lock");
            if core.generation != self.generation {
                None
            } else {
                match core.state {
                    BreakerState::Closed => {
                        if success {
                            core.consecutive_failures = 0;
                        } else {
                            core.consecutive_failures += 1;
                        }
                        core.window.push_back((now, success));
                        core.should_trip(&inner.config.mode, now)
                            .then(|| core.enter(BreakerState::Open, now))
                    }
                    BreakerState::HalfOpen if !success => Some(core.enter(BreakerState::Open, now)),
                    BreakerState::HalfOpen => {
                        core.probe_successes += 1;
                        (core.probe_successes >= inner.config.half_open_probes)
                            .then(|| core.enter(BreakerState::Closed, now))
                    }
                    BreakerState::Open => None,
                }
            }
        };
        notify(&inner, transition);
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        // an unrecorded probe (call abandoned before it was made) frees its slot
        if let Some(inner) = self.inner.take() {
            if self.probe {
                let mut core = inner.core.lock().expect("breaker lock");
                if core.generation == self.generation && core.probes_issued > 0 {
                    core.probes_issued -= 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    fn consecutive(threshold: u32) -> BreakerConfig {
        BreakerConfig {
            mode: BreakerMode::ConsecutiveFailures { threshold },
            open_timeout: Duration::from_secs(10),
            half_open_probes: 2,
        }
    }

    type TransitionLog = Arc<StdMutex<Vec<(BreakerState, BreakerState)>>>;

    fn recording(config: BreakerConfig) -> (CircuitBreaker, TransitionLog) {
        let log = Arc::new(StdMutex::new(Vec::new()));
        let l = log.clone();
        let b = CircuitBreaker::with_observer(config, move |from, to| l.lock().unwrap().push((from, to)));
        (b, log)
    }

    fn fail(b: &CircuitBreaker, now: Instant) {
        b.acquire_at(now).expect("admitted").record_at(false, now);
    }

    fn succeed(b: &CircuitBreaker, now: Instant) {
        b.acquire_at(now).expect("admitted").record_at(true, now);
    }

    #[test]
    fn consecutive_failures_trip_and_a_success_resets_the_count() {
        let t0 = Instant::now();
        let (b, log) = recording(consecutive(3));
        fail(&b, t0);
        fail(&b, t0);
        succeed(&b, t0);
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, t0);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(*log.lock().unwrap(), vec![(BreakerState::Closed, BreakerState::Open)]);
    }

    #[test]
    fn open_rejects_with_the_time_left_then_half_opens() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(consecutive(1));
        fail(&b, t0);
        let r = b.acquire_at(t0 + Duration::from_secs(4)).err().expect("rejected");
        assert_eq!(r.state, BreakerState::Open);
        assert_eq!(r.retry_after, Duration::from_secs(6));
        let probe = b.acquire_at(t0 + Duration::from_secs(10)).expect("probe admitted");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        drop(probe);
    }

    #[test]
    fn half_open_admits_a_bounded_number_of_probes_and_rejects_the_rest() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(consecutive(1));
        fail(&b, t0);
        let t1 = t0 + Duration::from_secs(11);
        let p1 = b.acquire_at(t1).expect("probe 1");
        let p2 = b.acquire_at(t1).expect("probe 2");
        let r = b.acquire_at(t1).err().expect("third call rejected in half-open");
        assert_eq!(r.state, BreakerState::HalfOpen);
        assert!(r.retry_after > Duration::ZERO);
        p1.record_at(true, t1);
        assert_eq!(b.state(), BreakerState::HalfOpen, "one success of two is not enough");
        p2.record_at(true, t1);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_reopens_for_a_full_timeout() {
        let t0 = Instant::now();
        let (b, log) = recording(consecutive(1));
        fail(&b, t0);
        let t1 = t0 + Duration::from_secs(10);
        fail(&b, t1);
        assert_eq!(b.state(), BreakerState::Open);
        let r = b.acquire_at(t1 + Duration::from_secs(1)).err().unwrap();
        assert_eq!(r.retry_after, Duration::from_secs(9));
        assert_eq!(
            *log.lock().unwrap(),
            vec![
                (BreakerState::Closed, BreakerState::Open),
                (BreakerState::Open, BreakerState::HalfOpen),
                (BreakerState::HalfOpen, BreakerState::Open),
            ]
        );
    }

    #[test]
    fn an_abandoned_probe_frees_its_slot() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(BreakerConfig {
            half_open_probes: 1,
            ..consecutive(1)
        });
        fail(&b, t0);
        let t1 = t0 + Duration::from_secs(10);
        drop(b.acquire_at(t1).expect("probe"));
        assert!(b.acquire_at(t1).is_ok(), "slot is free again");
    }

    #[test]
    fn results_from_before_a_transition_do_not_move_state() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(consecutive(1));
        let slow = b.acquire_at(t0).unwrap();
        fail(&b, t0); // opens
        slow.record_at(true, t0); // stale success must not close it
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn failure_ratio_needs_minimum_calls_and_forgets_old_calls() {
        let t0 = Instant::now();
        let cfg = BreakerConfig {
            mode: BreakerMode::FailureRatio {
                ratio: 0.5,
                min_calls: 4,
                window: Duration::from_secs(10),
            },
            ..consecutive(1)
        };
        let b = CircuitBreaker::new(cfg);
        fail(&b, t0);
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(b.state(), BreakerState::Closed, "3 calls < minimum 4");
        // 20 s later the old failures left the window
        let t1 = t0 + Duration::from_secs(20);
        succeed(&b, t1);
        succeed(&b, t1);
        fail(&b, t1);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, t1); // 2 of 4 = 0.5
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn disabled_never_rejects() {
        let b = CircuitBreaker::new(BreakerConfig {
            mode: BreakerMode::Disabled,
            ..Default::default()
        });
        let t0 = Instant::now();
        for _ in 0..100 {
            fail(&b, t0);
        }
        assert!(b.acquire_at(t0).is_ok());
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn validation_names_fields() {
        let cfg = BreakerConfig {
            mode: BreakerMode::FailureRatio {
                ratio: 1.5,
                min_calls: 0,
                window: Duration::ZERO,
            },
            open_timeout: Duration::ZERO,
            half_open_probes: 0,
        };
        let fields: Vec<_> = cfg.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            vec![
                "failureRatio",
                "minimumCalls",
                "window",
                "openTimeout",
                "halfOpenProbes"
            ]
        );
    }
}

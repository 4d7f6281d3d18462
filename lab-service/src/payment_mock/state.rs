//! Shared state of the mock: the fault plan with its seeded RNG and schedule
//! clock, the ledger, and the metrics. Cheap to clone (one `Arc`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use chrono::Utc;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::faults::{decide, Decision, FaultPlan};
use super::ledger::{ChargeError, ChargeOutcome, ChargeRequest, Ledger, LedgerSnapshot};
use relab_model::FieldError;

/// How one charge call ended, as counted in `relab_mock_calls_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new charge was recorded and returned.
    Success,
    /// The idempotency key's existing charge was returned.
    Replay,
    /// 402 `card_declined`.
    Declined,
    /// An injected 5xx.
    Failure,
    /// 429 with `Retry-After`.
    RateLimited,
    /// Hung, then 504; not charged.
    Timeout,
    /// Charged (or replayed), then hung and 504.
    LostResponse,
    /// 409: the idempotency key was used for a different request.
    Conflict,
}

impl Outcome {
    /// Every outcome, in the order the stats list them.
    pub const ALL: [Outcome; 8] = [
        Outcome::Success,
        Outcome::Replay,
        Outcome::Declined,
        Outcome::Failure,
        Outcome::RateLimited,
        Outcome::Timeout,
        Outcome::LostResponse,
        Outcome::Conflict,
    ];

    /// The metric label value (snake_case).
    pub fn as_label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Replay => "replay",
            Outcome::Declined => "declined",
            Outcome::Failure => "failure",
            Outcome::RateLimited => "rate_limited",
            Outcome::Timeout => "timeout",
            Outcome::LostResponse => "lost_response",
            Outcome::Conflict => "conflict",
        }
    }
}

/// Body of `GET /stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MockStats {
    /// Charge calls that got past request validation.
    pub calls: u64,
    /// Those calls by outcome.
    pub by_outcome: OutcomeCounts,
    /// Charges in the ledger.
    pub charges: u64,
    /// Name of the schedule phase in force now, if any.
    pub active_phase: Option<String>,
    /// Orders the ledger holds more than one charge of (the audit's double
    /// charges, live: `stopWhen: [{doubleCharges: true}]` watches it).
    #[serde(default)]
    pub double_charged_orders: u64,
}

/// Charge calls by outcome (camelCase names of [`Outcome`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeCounts {
    pub success: u64,
    pub replay: u64,
    pub declined: u64,
    pub failure: u64,
    pub rate_limited: u64,
    pub timeout: u64,
    pub lost_response: u64,
    pub conflict: u64,
}

struct MockMetrics {
    calls: IntCounterVec,
    charges: IntCounter,
    /// 1 for the schedule phase in force, 0 for the others (set at scrape).
    phase: IntGaugeVec,
}

impl MockMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let calls = IntCounterVec::new(
            Opts::new(
                "relab_mock_calls_total",
                "Charge calls to the payment mock, by outcome.",
            ),
            &["outcome"],
        )?;
        let charges = IntCounter::new(
            "relab_mock_charges_total",
            "Charges recorded in the payment mock's ledger.",
        )?;
        let phase = IntGaugeVec::new(
            Opts::new(
                "relab_mock_fault_phase",
                "1 while this fault schedule phase is in force, else 0 (dashboards annotate with it).",
            ),
            &["phase"],
        )?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(charges.clone()))?;
        registry.register(Box::new(phase.clone()))?;
        // Export every series from the start, so rates and dashboards see zeros.
        for outcome in Outcome::ALL {
            calls.with_label_values(&[outcome.as_label()]);
        }
        Ok(Self { calls, charges, phase })
    }

    fn calls(&self, outcome: Outcome) -> u64 {
        self.calls.with_label_values(&[outcome.as_label()]).get()
    }
}

/// The plan and everything derived from it, replaced together.
struct Control {
    plan: FaultPlan,
    rng: StdRng,
    epoch: Instant,
}

impl Control {
    fn new(plan: FaultPlan) -> Self {
        Self {
            rng: StdRng::seed_from_u64(plan.seed),
            epoch: Instant::now(),
            plan,
        }
    }
}

struct Inner {
    control: Mutex<Control>,
    ledger: Mutex<Ledger>,
    metrics: MockMetrics,
}

/// The payment mock's state: fault plan, seeded RNG, schedule clock, ledger
/// and metrics, all in memory. Clones share it.
#[derive(Clone)]
pub struct MockState {
    inner: Arc<Inner>,
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MockState {
    /// Creates the state and registers `relab_mock_calls_total{outcome}` and
    /// `relab_mock_charges_total` on `registry`. The schedule clock starts
    /// now. The plan is used as given: call [`FaultPlan::validate`] first.
    pub fn new(plan: FaultPlan, registry: &Registry) -> Result<Self, prometheus::Error> {
        Self::with_ledger(plan, Ledger::default(), registry)
    }

    /// As [`MockState::new`], over `ledger` (e.g. a journaled one from
    /// [`Ledger::open`], with the charges of earlier lives of the mock).
    pub fn with_ledger(plan: FaultPlan, ledger: Ledger, registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            inner: Arc::new(Inner {
                control: Mutex::new(Control::new(plan)),
                ledger: Mutex::new(ledger),
                metrics: MockMetrics::register(registry)?,
            }),
        })
    }

    /// The plan in force.
    pub fn plan(&self) -> FaultPlan {
        lock(&self.inner.control).plan.clone()
    }

    /// Validates `plan`, then installs it: reseeds the RNG with its seed and
    /// restarts the schedule clock. An invalid plan changes nothing.
    pub fn replace_plan(&self, plan: FaultPlan) -> Result<(), Vec<FieldError>> {
        plan.validate()?;
        *lock(&self.inner.control) = Control::new(plan);
        Ok(())
    }

    /// Draws the fate of the next charge call from the spec active now.
    /// Calls draw in the order they get here.
    pub(crate) fn next_decision(&self) -> Decision {
        let mut control = lock(&self.inner.control);
        let Control { plan, rng, epoch } = &mut *control;
        decide(plan.active_settings(epoch.elapsed()), rng)
    }

    /// Records (or replays) a charge in the ledger, and returns once it is
    /// durable: the journal is written under the ledger's lock and synced
    /// outside it, one sync for every charge waiting (group commit).
    pub(crate) async fn charge(
        &self,
        key: Option<&str>,
        request: &ChargeRequest,
    ) -> Result<ChargeOutcome, ChargeError> {
        let (outcome, durable) = lock(&self.inner.ledger).charge_deferred(key, request, Utc::now())?;
        if let Some(durable) = durable {
            durable.wait().await?;
        }
        if let ChargeOutcome::Created(_) = &outcome {
            self.inner.metrics.charges.inc();
        }
        Ok(outcome)
    }

    /// Counts one charge call.
    pub(crate) fn count(&self, outcome: Outcome) {
        self.inner.metrics.calls.with_label_values(&[outcome.as_label()]).inc();
    }

    /// Every charge so far, in creation order.
    pub fn ledger(&self) -> LedgerSnapshot {
        lock(&self.inner.ledger).snapshot()
    }

    /// Sets `relab_mock_fault_phase{phase}`: 1 for the phase in force now, 0
    /// for every other phase of the plan (call before rendering metrics).
    pub fn refresh_phase_metric(&self) {
        let control = lock(&self.inner.control);
        let active = control
            .plan
            .active_phase(control.epoch.elapsed())
            .map(|p| p.name.as_str());
        let gauge = &self.inner.metrics.phase;
        gauge.reset();
        for phase in &control.plan.schedule {
            gauge
                .with_label_values(&[phase.name.as_str()])
                .set(i64::from(active == Some(phase.name.as_str())));
        }
    }

    /// Calls by outcome, charges, and the phase in force now.
    pub fn stats(&self) -> MockStats {
        let active_phase = {
            let control = lock(&self.inner.control);
            control
                .plan
                .active_phase(control.epoch.elapsed())
                .map(|phase| phase.name.clone())
        };
        // one guard: two in one expression would deadlock (temporaries live to its end)
        let (charges, double_charged_orders) = {
            let ledger = lock(&self.inner.ledger);
            (ledger.len() as u64, ledger.double_charged_orders())
        };
        let metrics = &self.inner.metrics;
        let by_outcome = OutcomeCounts {
            success: metrics.calls(Outcome::Success),
            replay: metrics.calls(Outcome::Replay),
            declined: metrics.calls(Outcome::Declined),
            failure: metrics.calls(Outcome::Failure),
            rate_limited: metrics.calls(Outcome::RateLimited),
            timeout: metrics.calls(Outcome::Timeout),
            lost_response: metrics.calls(Outcome::LostResponse),
            conflict: metrics.calls(Outcome::Conflict),
        };
        MockStats {
            calls: Outcome::ALL.iter().map(|o| metrics.calls(*o)).sum(),
            by_outcome,
            charges,
            double_charged_orders,
            active_phase,
        }
    }
}

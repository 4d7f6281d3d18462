//! The run engine: one experiment run end to end (baseline, faults, load,
//! drain, audit) and the [`RunResults`] that the local runner prints and the
//! operator puts in `status.results`. The HTTP load itself is
//! [`crate::loadgen`]'s; `lab-service loadgen` ([`cli`]) runs this engine in
//! the cluster's Job.
//!
//! 1. connect to the database, take the sampler's baseline;
//! 2. `PUT {payment_url}/faults` when a plan is given (restarts the mock's
//!    schedule clock, so fault phases line up with the load);
//! 3. run the open-loop load against `POST {api_url}/orders`, observing
//!    once a second;
//! 4. wait, bounded, until none of the accepted orders is pending (phase `drain`);
//! 5. audit database against ledger, read the mock's injected-fault stats and
//!    the orders' end-to-end latency, and fill every field of the results.
//!
//! Cancelling `stop` ends the load early; what was accepted is still
//! drained (for at most [`STOPPED_DRAIN_LIMIT`]) and audited.

use crate::audit::{self, AuditReport};
use crate::error::{Error, Result};
use crate::loadgen::{self, latency_histogram, LoadConfig, LoadMode, LoadProgress, LoadReport, Target};
use crate::payment_mock::{FaultPlan, MockStats};
use crate::summary::{
    BreakerResults, InjectedFaults, InvariantResults, LatencyHistograms, OrderCounts, PaymentResults, Percentiles,
    RetryResults, RunResults, TimelinePoint,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod cli;
pub mod disrupt;
pub mod progress;
pub mod sampler;
pub mod shares;
pub mod stop;
pub mod targets;

pub use progress::{RunProgress, RunStage};
use sampler::{Sampler, Snapshot};
use stop::StopWatch;
use targets::MetricsTargets;

/// After a stop request the drain waits at most this long (or the drain timeout, if shorter).
pub const STOPPED_DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Kubernetes keeps at most this many bytes of a container's termination message.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct ExperimentRun {
    pub load: LoadConfig,
    /// Base URL of the order API.
    pub api_url: String,
    pub database_url: String,
    /// Base URL of the payment mock (`/faults`, `/ledger`, `/stats`).
    pub payment_url: String,
    /// Prometheus endpoints of the lab's processes (each once; summed):
    /// fixed, or posted during the run ([`targets`]).
    pub metrics: MetricsTargets,
    /// Installed with `PUT /faults` right before the load.
    pub faults: Option<FaultPlan>,
    /// Longest wait for accepted orders to reach a final state.
    pub drain_timeout: Duration,
    /// Before anything else, wait at most this long for the database, the
    /// order API's `/readyz` and the mock's `/healthz` (zero: expect them up).
    pub wait_ready: Duration,
    /// `spec.stopWhen`: checked once a second; the first that holds stops the run.
    pub stop_when: Vec<relab_model::ops::StopCondition>,
    /// `spec.objectives.successRatio`, the target a successRatio condition watches.
    pub success_target: Option<f64>,
    /// `spec.disruptions`, fired at their times from the load's start ([`disrupt`]).
    pub disruptions: Vec<relab_model::disruptions::PlannedDisruption>,
    /// Admin URL of the database fault proxy in the order service's path
    /// (`DatabaseLatency` / `DatabaseOutage`); None: not in the path.
    pub db_proxy_url: Option<String>,
    /// Who carries out kills and database restarts here (None: nobody here;
    /// an outside carrier reports them to `disruption_log`).
    pub carrier: Option<disrupt::Carrier>,
    /// The record of the disruptions (re-planned at the start of the run);
    /// shared with whoever takes outside reports (the progress server).
    pub disruption_log: disrupt::DisruptionLog,
    /// `load.parallelism`: the generators sharing the load, this one the
    /// leader ([`shares`]; one generator: nobody joins).
    pub shares: shares::ShareBoard,
}

/// The results plus one timeline point per second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOutput {
    pub results: RunResults,
    pub timeline: Vec<TimelinePoint>,
}

/// Poll the order API's `/readyz` and the mock's `/healthz` until both
/// answer 200, for at most `run.wait_ready`; the error names what was not ready.
async fn wait_until_ready(http: &reqwest::Client, run: &ExperimentRun, stop: &CancellationToken) -> Result<()> {
    let checks = [
        ("order API", format!("{}/readyz", run.api_url.trim_end_matches('/'))),
        (
            "payment mock",
            format!("{}/healthz", run.payment_url.trim_end_matches('/')),
        ),
    ];
    let start = Instant::now();
    let mut last_report = start;
    for (what, url) in &checks {
        loop {
            let answer = http.get(url).timeout(Duration::from_secs(2)).send().await;
            let detail = match answer {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => format!("answered {}", r.status()),
                Err(e) => e.to_string(),
            };
            if start.elapsed() >= run.wait_ready {
                return Err(Error::Other(format!(
                    "the {what} at {url} was not ready within {:?}: {detail}",
                    run.wait_ready
                )));
            }
            if stop.is_cancelled() {
                return Err(Error::Other(format!("stopped while waiting for the {what}")));
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                tracing::info!(what, url, detail, "waiting for the lab to be ready");
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    tracing::info!(waited_ms = start.elapsed().as_millis() as u64, "lab ready");
    Ok(())
}

/// Run one experiment; see the module docs for the steps.
pub async fn run_experiment(
    run: ExperimentRun,
    progress: watch::Sender<RunProgress>,
    stop: CancellationToken,
) -> Result<RunOutput> {
    run.load.validate()?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    if !run.wait_ready.is_zero() {
        wait_until_ready(&http, &run, &stop).await?;
    }
    let pool = crate::db::connect_and_migrate_within(&run.database_url, 4, run.wait_ready).await?;
    let payment_url = run.payment_url.trim_end_matches('/').to_string();
    let planned = match &run.load.mode {
        LoadMode::OpenLoop { stages } => crate::loadgen::schedule::total_sends(stages),
        LoadMode::ClosedLoop { .. } => 0,
    };
    let mut lab_sampler = Sampler::new(pool.clone(), http.clone(), run.metrics.clone());

    let baseline = lab_sampler.snapshot(Duration::ZERO).await?;
    // load.parallelism: everyone joins, then all start at once
    let generators = run.shares.generators();
    if generators > 1 {
        let at = run
            .shares
            .start_when_all_joined(run.wait_ready.max(shares::JOIN_PATIENCE))
            .await
            .map_err(Error::Other)?;
        shares::sleep_until(at).await;
    }
    if let Some(plan) = &run.faults {
        install_faults(&http, &payment_url, plan).await?;
    }
    let mock_before = mock_stats(&http, &payment_url).await?;

    // load, observed once a second, with the stop conditions checked on every sample
    let start = Instant::now();
    let watch = StopWatch::new(run.stop_when.clone(), run.success_target, planned, start);
    if watch.watches_double_charges() {
        lab_sampler = lab_sampler.watching_the_ledger(&payment_url);
    }
    let load_stop = CancellationToken::new();
    {
        let (stop, breach, load_stop) = (stop.clone(), watch.stop_load.clone(), load_stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = breach.cancelled() => {}
            }
            load_stop.cancel();
        });
    }
    let load_over = CancellationToken::new();
    run.disruption_log.plan(&run.disruptions);
    let disrupting = disrupt::schedule(
        run.disruptions.clone(),
        run.disruption_log.clone(),
        run.carrier.clone(),
        run.db_proxy_url.clone(),
        http.clone(),
        start,
        load_over.clone(),
    );
    let _end_disruptions = load_over.clone().drop_guard();
    let observing = CancellationToken::new();
    // whatever happens below, the sampler stops with this run
    let _stop_observing = observing.clone().drop_guard();
    let sampling = {
        let (lab_sampler, baseline, progress, observing, watch) = (
            lab_sampler.clone(),
            baseline.clone(),
            progress.clone(),
            observing.clone(),
            watch.clone(),
        );
        tokio::spawn(async move {
            let check = |samples: &[Snapshot]| watch.check(&baseline, samples);
            lab_sampler
                .every_second(&baseline, start, &progress, &observing, check)
                .await
        })
    };
    let target = Target::Orders {
        api_url: run.api_url.clone(),
    };
    let load = {
        // the driver's counts, copied into the run's progress as they come
        let (counts, mut watch_counts) = watch::channel(LoadProgress::default());
        let forward = {
            let progress = progress.clone();
            tokio::spawn(async move {
                while watch_counts.changed().await.is_ok() {
                    let load = *watch_counts.borrow_and_update();
                    progress.send_modify(|p| p.take_load(&load));
                }
            })
        };
        let share = loadgen::Share {
            index: 0,
            of: generators,
        };
        let own = loadgen::LoadConfig {
            share,
            ..run.load.clone()
        };
        let load = loadgen::run_load(&target, &own, &counts, &load_stop).await;
        drop(counts);
        let _ = forward.await;
        let load = load?;
        if generators > 1 {
            // the followers' shares: stopped with this one, merged into one report
            if load.stopped_early {
                run.shares.stop_all();
            }
            let patience = run.load.planned_duration() + run.load.request_timeout + Duration::from_secs(30);
            run.shares.merge_with(load, patience).await.map_err(Error::Other)?
        } else {
            load
        }
    };
    tracing::info!(
        sent = load.sent,
        accepted = load.accepted,
        stopped_early = load.stopped_early,
        "load phase over"
    );

    watch.load_ended();
    // what has not fired by now never will; a kill or restart under way finishes
    load_over.cancel();
    disrupting
        .await
        .map_err(|e| Error::Other(format!("disruption task: {e}")))?;
    let stopped = watch.tripped();
    if let Some(s) = &stopped {
        // a stopped run: faults cleared, so that the queue can drain
        tracing::warn!(condition = %s.condition, "run stopped: clearing the faults, draining, auditing");
        let healthy = FaultPlan {
            seed: run.faults.as_ref().map_or(42, |p| p.seed),
            ..FaultPlan::default()
        };
        install_faults(&http, &payment_url, &healthy).await?;
    }

    // drain
    progress.send_modify(|p| p.stage = RunStage::Drain);
    let mut limit = if stop.is_cancelled() || stopped.is_some() {
        run.drain_timeout.min(STOPPED_DRAIN_LIMIT)
    } else {
        run.drain_timeout
    };
    if let Some(left) = watch.remaining() {
        limit = limit.min(left);
    }
    let drain_started = Instant::now();
    let drained = wait_for_drain(&pool, &load.accepted_ids, limit, &progress, start).await?;
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    observing.cancel();
    let mut samples = sampling.await.map_err(|e| Error::Other(format!("sampler task: {e}")))?;
    if run.metrics.fall_back_if_never_pushed() {
        tracing::warn!(
            fallback = ?run.metrics.fixed_urls(),
            "no metrics targets were posted during the run: the lab's figures are read once, from the fallback"
        );
    }
    let last = lab_sampler
        .snapshot_or_previous(start, samples.last().unwrap_or(&baseline))
        .await;
    sampler::publish(&progress, &baseline, &last, start);
    samples.push(last);

    // audit
    progress.send_modify(|p| p.stage = RunStage::Audit);
    let ledger = audit::fetch_ledger(&http, &payment_url).await?;
    let report = audit::audit(&pool, &ledger, Some(&load.accepted_ids)).await?;
    let mock_after = mock_stats(&http, &payment_url).await?;
    let outcomes = RunOutcomes::fetch(&pool, &load.accepted_ids).await?;

    let mut results = assemble(Assembly {
        load: &load,
        drain_seconds,
        drained,
        outcomes: &outcomes,
        baseline: &baseline,
        samples: &samples,
        mock_before: &mock_before,
        mock_after: &mock_after,
        audit: &report,
    });
    results.stopped = stopped;
    let timeline = sampler::timeline(&load, &baseline, &samples);
    results.disruptions = run.disruption_log.results();
    relab_model::disruptions::measure_recovery(&mut results.disruptions, &timeline);
    for line in relab_model::disruptions::recovery_account(&results.disruptions, &timeline) {
        tracing::info!("recovery of {line}");
    }
    progress.send_modify(|p| {
        p.stage = RunStage::Done;
        // every generator's (load.parallelism: the live counts were this one's share)
        p.sent = results.orders.sent;
        p.accepted = results.orders.accepted;
        p.paid = results.orders.paid;
        p.failed = results.orders.failed;
        p.dead_lettered = results.orders.dead_lettered;
    });
    pool.close().await;
    Ok(RunOutput { results, timeline })
}

async fn install_faults(http: &reqwest::Client, payment_url: &str, plan: &FaultPlan) -> Result<()> {
    put_faults(http.put(format!("{payment_url}/faults")).json(plan), payment_url)
        .await
        .map_err(Error::Other)
}

/// Send a `PUT {base}/faults` (the payment mock's or the database proxy's);
/// the error names the call and, when it answered, the status and body.
pub(crate) async fn put_faults(request: reqwest::RequestBuilder, base: &str) -> std::result::Result<(), String> {
    let resp = request.send().await.map_err(|e| format!("PUT {base}/faults: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("PUT {base}/faults: {status}: {body}"));
    }
    Ok(())
}

async fn mock_stats(http: &reqwest::Client, payment_url: &str) -> Result<MockStats> {
    Ok(http
        .get(format!("{payment_url}/stats"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Wait until none of `ids` is pending, or `limit`; keeps `progress.elapsed` moving.
async fn wait_for_drain(
    pool: &PgPool,
    ids: &[Uuid],
    limit: Duration,
    progress: &watch::Sender<RunProgress>,
    start: Instant,
) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        let (pending,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM orders WHERE status = 'pending' AND id = ANY($1)")
                .bind(ids)
                .fetch_one(pool)
                .await?;
        progress.send_modify(|p| p.elapsed = start.elapsed());
        if pending == 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            tracing::warn!(pending, ?limit, "drain timed out");
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What became of this run's accepted orders, from the database.
#[derive(Debug, Clone, Default)]
struct RunOutcomes {
    paid: u64,
    failed: u64,
    dead_lettered: u64,
    pending: u64,
    /// Jobs of this run's orders that are dead.
    dead_jobs: u64,
    end_to_end: Percentiles,
    end_to_end_histogram: Option<hdrhistogram::Histogram<u64>>,
}

impl RunOutcomes {
    async fn fetch(pool: &PgPool, ids: &[Uuid]) -> Result<Self> {
        let mut out = Self::default();
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM orders WHERE id = ANY($1) GROUP BY status")
                .bind(ids)
                .fetch_all(pool)
                .await?;
        for (status, n) in rows {
            let n = n as u64;
            match status.as_str() {
                "paid" => out.paid = n,
                "failed" => out.failed = n,
                "dead_lettered" => out.dead_lettered = n,
                _ => out.pending += n,
            }
        }
        let (dead,): (i64,) = sqlx::query_as("SELECT count(*) FROM jobs WHERE status = 'dead' AND order_id = ANY($1)")
            .bind(ids)
            .fetch_one(pool)
            .await?;
        out.dead_jobs = dead as u64;
        let micros: Vec<(i64,)> = sqlx::query_as(
            "SELECT (EXTRACT(EPOCH FROM (finished_at - created_at)) * 1000000)::bigint
             FROM orders WHERE id = ANY($1) AND finished_at IS NOT NULL",
        )
        .bind(ids)
        .fetch_all(pool)
        .await?;
        let mut hist = latency_histogram(3);
        for (us,) in micros {
            hist.saturating_record(us.max(1) as u64);
        }
        out.end_to_end = Percentiles::from_micros(&hist);
        out.end_to_end_histogram = Some(hist);
        Ok(out)
    }
}

/// Inputs of [`assemble`].
struct Assembly<'a> {
    load: &'a LoadReport,
    drain_seconds: f64,
    drained: bool,
    outcomes: &'a RunOutcomes,
    baseline: &'a Snapshot,
    samples: &'a [Snapshot],
    mock_before: &'a MockStats,
    mock_after: &'a MockStats,
    audit: &'a AuditReport,
}

fn assemble(a: Assembly<'_>) -> RunResults {
    let (load, outcomes) = (a.load, a.outcomes);
    let then = &a.baseline.counters;
    let now = a.samples.last().map_or(then, |s| &s.counters);
    let loops = sampler::delta_map(&now.retry_loops, &then.retry_loops);
    let loop_count = |result: &str| loops.get(result).copied().unwrap_or(0);
    RunResults {
        load_seconds: load.elapsed.as_secs_f64(),
        drain_seconds: a.drain_seconds,
        drained: a.drained,
        orders: OrderCounts {
            sent: load.sent,
            accepted: load.accepted,
            shed: load.shed,
            rejected: load.rejected,
            errors: load.errors,
            late_sends: load.late_sends,
            paid: outcomes.paid,
            failed: outcomes.failed,
            dead_lettered: outcomes.dead_lettered,
            pending: outcomes.pending,
        },
        success_ratio: if load.accepted == 0 {
            0.0
        } else {
            outcomes.paid as f64 / load.accepted as f64
        },
        api_latency_ms: load.latency_ms(),
        accepted_api_latency_ms: Percentiles::from_micros(&load.accepted_latency),
        shed_api_latency_ms: Percentiles::from_micros(&load.shed_latency),
        end_to_end_latency_ms: outcomes.end_to_end.clone(),
        payment: PaymentResults {
            calls: sampler::delta(now.payment_calls, then.payment_calls),
            failures_by_reason: sampler::delta_map(&now.payment_failures, &then.payment_failures),
            charges: a.mock_after.charges.saturating_sub(a.mock_before.charges),
            injected: injected_faults(a.mock_before, a.mock_after),
        },
        retries: RetryResults {
            succeeded: loop_count("succeeded"),
            gave_up: loop_count("gave_up"),
            permanent: loop_count("permanent"),
            breaker_rejected: loop_count("breaker_rejected"),
            retries: sampler::delta(now.retries, then.retries),
        },
        breaker: BreakerResults {
            transitions: sampler::delta_map(&now.breaker_transitions, &then.breaker_transitions),
            rejections: sampler::delta_map(&now.breaker_rejections, &then.breaker_rejections),
            seconds_not_closed: a.samples.iter().filter(|s| s.counters.breaker_state != 0).count() as f64,
        },
        max_queue_depth: a.samples.iter().map(|s| s.queue_depth).max().unwrap_or(0),
        dead_letters: outcomes.dead_jobs as i64,
        histograms: outcomes.end_to_end_histogram.as_ref().map(|end_to_end| {
            LatencyHistograms::encode(&load.latency, &load.accepted_latency, &load.shed_latency, end_to_end)
        }),
        invariants: InvariantResults {
            lost_orders: a.audit.lost_orders.max(0) as u64,
            stuck_orders: a.audit.stuck_orders.max(0) as u64,
            double_charges: a.audit.double_charged_orders.max(0) as u64,
            charges_without_order: a.audit.charges_without_order.max(0) as u64,
            paid_without_charge: a.audit.paid_without_charge.max(0) as u64,
        },
        stopped: None,
        disruptions: Vec::new(),
    }
}

/// The share of the mock's calls (during this run) that got each fault.
pub fn injected_faults(before: &MockStats, after: &MockStats) -> InjectedFaults {
    let calls = after.calls.saturating_sub(before.calls);
    let (b, a) = (&before.by_outcome, &after.by_outcome);
    let rate = |now: u64, then: u64| {
        if calls == 0 {
            0.0
        } else {
            now.saturating_sub(then) as f64 / calls as f64
        }
    };
    InjectedFaults {
        calls,
        failure_rate: rate(a.failure, b.failure),
        decline_rate: rate(a.declined, b.declined),
        rate_limit_rate: rate(a.rate_limited, b.rate_limited),
        timeout_rate: rate(a.timeout, b.timeout),
        lost_response_rate: rate(a.lost_response, b.lost_response),
    }
}

/// `results` as compact JSON of at most [`TERMINATION_MESSAGE_LIMIT`] bytes.
/// When it does not fit, the latency histograms go first (the percentiles
/// stay; merges then fall back to the worst part's percentiles); if the
/// keyed maps (failure reasons, breaker transitions and rejections) still
/// make it too long they are emptied, largest first, so the message stays
/// valid JSON of the same shape.
pub fn termination_message(results: &RunResults) -> String {
    let encode = |r: &RunResults| serde_json::to_string(r).expect("results serialize");
    let mut message = encode(results);
    if message.len() <= TERMINATION_MESSAGE_LIMIT {
        return message;
    }
    let mut trimmed = results.clone();
    trimmed.histograms = None;
    message = encode(&trimmed);
    if message.len() <= TERMINATION_MESSAGE_LIMIT {
        tracing::info!(
            bytes = message.len(),
            "the latency histograms do not fit the termination message: sent without"
        );
        return message;
    }
    // then each disruption's hits: the first, and how many more
    for d in &mut trimmed.disruptions {
        if d.hit.len() > 1 {
            let more = d.hit.len() - 1;
            d.hit.truncate(1);
            d.hit.push(format!("and {more} more"));
        }
    }
    message = encode(&trimmed);
    if message.len() > TERMINATION_MESSAGE_LIMIT {
        // only how many
        for (d, whole) in trimmed.disruptions.iter_mut().zip(&results.disruptions) {
            if !whole.hit.is_empty() {
                d.hit = vec![format!("{} hit", whole.hit.len())];
            }
        }
        message = encode(&trimmed);
    }
    if message.len() <= TERMINATION_MESSAGE_LIMIT {
        tracing::info!(
            bytes = message.len(),
            "the disruptions' hits were shortened to fit the termination message"
        );
        return message;
    }
    let weight = |m: &std::collections::BTreeMap<String, u64>| m.keys().map(|k| k.len() + 24).sum::<usize>();
    let mut order = [
        (0, weight(&trimmed.payment.failures_by_reason)),
        (1, weight(&trimmed.breaker.transitions)),
        (2, weight(&trimmed.breaker.rejections)),
    ];
    order.sort_by_key(|&(_, w)| std::cmp::Reverse(w));
    for (map, _) in order {
        match map {
            0 => trimmed.payment.failures_by_reason.clear(),
            1 => trimmed.breaker.transitions.clear(),
            _ => trimmed.breaker.rejections.clear(),
        }
        message = encode(&trimmed);
        if message.len() <= TERMINATION_MESSAGE_LIMIT {
            break;
        }
    }
    tracing::warn!(bytes = message.len(), "results trimmed to fit the termination message");
    assert!(
        message.len() <= TERMINATION_MESSAGE_LIMIT,
        "results without their keyed maps are a fixed, small shape"
    );
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment_mock::OutcomeCounts;

    #[test]
    fn the_termination_message_carries_floats_exactly() {
        // seen in CI: 2.979062181 came back as 2.9790621809999998 before
        // serde_json's float_roundtrip feature was enabled
        let mut r = RunResults {
            load_seconds: 2.979062181,
            success_ratio: 0.35135135135135137,
            ..RunResults::default()
        };
        r.api_latency_ms.p99 = 16.735;
        let back: RunResults = serde_json::from_str(&termination_message(&r)).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn injected_rates_are_shares_of_this_runs_calls() {
        let before = MockStats {
            calls: 100,
            by_outcome: OutcomeCounts {
                failure: 50,
                ..Default::default()
            },
            ..Default::default()
        };
        let after = MockStats {
            calls: 300,
            by_outcome: OutcomeCounts {
                failure: 110,
                declined: 20,
                timeout: 2,
                ..Default::default()
            },
            ..Default::default()
        };
        let injected = injected_faults(&before, &after);
        assert_eq!(injected.calls, 200);
        assert!((injected.failure_rate - 0.3).abs() < 1e-9);
        assert!((injected.decline_rate - 0.1).abs() < 1e-9);
        assert!((injected.timeout_rate - 0.01).abs() < 1e-9);
        assert_eq!(injected_faults(&after, &after).failure_rate, 0.0, "no calls, no rate");
    }

    fn realistic_results() -> RunResults {
        let mut r = RunResults::default();
        r.orders.sent = u64::MAX;
        r.api_latency_ms.p99 = 123_456.789;
        for reason in crate::resilience::retry::FAILURE_REASONS {
            r.payment.failures_by_reason.insert(reason.into(), u64::MAX);
        }
        for t in [
            "closed->open",
            "open->half_open",
            "half_open->open",
            "half_open->closed",
        ] {
            r.breaker.transitions.insert(t.into(), u64::MAX);
        }
        for s in ["open", "half_open"] {
            r.breaker.rejections.insert(s.into(), u64::MAX);
        }
        r
    }

    /// The most disruptions a manifest may have, each with long names and
    /// three pods hit, recovered.
    fn disrupted(mut r: RunResults) -> RunResults {
        use relab_model::disruptions::{DisruptionAction, DisruptionResult, MAX_DISRUPTIONS};
        r.disruptions = (0..MAX_DISRUPTIONS)
            .map(|i| DisruptionResult {
                name: format!("{i:02}-{}", "a-rather-long-disruption-name-".repeat(2)),
                action: DisruptionAction::KillOrderService,
                at_seconds: 12_345.678,
                fired_at_seconds: Some(12_345.912),
                ended_at_seconds: Some(12_345.912),
                hit: (0..3)
                    .map(|p| format!("an-experiment-name-of-forty-characters-r12-order-service-7d9f8b6c5-x{p}"))
                    .collect(),
                recovered_at_seconds: Some(12_399.0),
                recovery_seconds: Some(53.1),
                error: None,
            })
            .collect();
        r
    }

    #[test]
    fn the_termination_message_of_full_results_fits_kubernetes_limit() {
        let results = realistic_results();
        let message = termination_message(&results);
        assert!(message.len() < TERMINATION_MESSAGE_LIMIT, "{} bytes", message.len());
        let back: RunResults = serde_json::from_str(&message).unwrap();
        assert_eq!(back, results, "nothing trimmed when it fits");
    }

    #[test]
    fn the_most_disruptions_fit_with_their_hits_shortened_and_every_figure_kept() {
        let results = disrupted(realistic_results());
        let message = termination_message(&results);
        assert!(message.len() <= TERMINATION_MESSAGE_LIMIT, "{} bytes", message.len());
        let back: RunResults = serde_json::from_str(&message).unwrap();
        assert_eq!(back.disruptions.len(), results.disruptions.len());
        for (got, sent) in back.disruptions.iter().zip(&results.disruptions) {
            assert_eq!(
                (got.fired_at_seconds, got.recovery_seconds, &got.name),
                (sent.fired_at_seconds, sent.recovery_seconds, &sent.name)
            );
            assert!(
                got.hit == vec![sent.hit[0].clone(), "and 2 more".to_string()] || got.hit == vec!["3 hit".to_string()],
                "{:?}",
                got.hit
            );
        }
        assert_eq!(back.breaker, results.breaker, "the keyed maps stay");
    }

    #[test]
    fn oversized_results_are_trimmed_to_valid_json_under_the_limit() {
        let mut results = realistic_results();
        for i in 0..200 {
            results
                .payment
                .failures_by_reason
                .insert(format!("an-unexpectedly-long-failure-reason-{i}"), 1);
        }
        let message = termination_message(&results);
        assert!(message.len() <= TERMINATION_MESSAGE_LIMIT, "{} bytes", message.len());
        let back: RunResults = serde_json::from_str(&message).expect("still valid results JSON");
        assert!(
            back.payment.failures_by_reason.is_empty(),
            "the oversized map went first"
        );
        assert_eq!(
            back.breaker.transitions, results.breaker.transitions,
            "the rest is kept"
        );
        assert_eq!(back.orders, results.orders);
    }
}

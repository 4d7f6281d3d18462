//! The sampler: once a second during a run (and at the end) it samples the
//! database (orders by status, queue depth) and the lab's Prometheus
//! `/metrics` endpoints (payment calls and failures, retries, breaker),
//! summed across endpoints (the breaker state: the maximum). Counters are
//! reported as deltas from a baseline taken before the load, so a
//! long-lived lab gives per-run numbers.
//!
//! A process killed and started again (a `KillWorkers` disruption) serves
//! its counters from 0 again: each counter series of each endpoint is
//! therefore summed as an *increase*, as Prometheus' `increase()` does (a
//! value below the last one read is a reset, and the whole new value is
//! increase), so the run's calls, retries and breaker figures stay exact
//! across kills ([`Increases`]).
//!
//! Point it at each process's endpoint once, never through a Service
//! ([`super::targets`]: fixed, or pushed by the operator as pods come and
//! go): in a single-process lab (`lab-service all`, the in-process test
//! lab) the API's `/metrics` already holds the workers' series.

use super::RunProgress;
use crate::error::Result;
use crate::loadgen::LoadReport;
use crate::summary::TimelinePoint;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::targets::MetricsTargets;
pub use prom::{parse_text, ParseError, PromSample};

/// How long each read of a sample may take: one `/metrics` endpoint (a pod
/// that is gone does not answer), the database's counts (a database being
/// restarted or cut off may not answer either). A read that does not answer
/// in time keeps its previous value; the sampler goes on.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The lab's counters and gauges read from its `/metrics` endpoints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabCounters {
    /// `relab_payment_calls_total`
    pub payment_calls: f64,
    /// `relab_payment_failures_total` by `reason`
    pub payment_failures: BTreeMap<String, f64>,
    /// `relab_retry_loops_total` by `result`
    pub retry_loops: BTreeMap<String, f64>,
    /// `relab_retries_total`
    pub retries: f64,
    /// `relab_breaker_transitions_total`, keyed `from->to`
    pub breaker_transitions: BTreeMap<String, f64>,
    /// `relab_breaker_rejections_total` by `state`
    pub breaker_rejections: BTreeMap<String, f64>,
    /// `relab_breaker_state`, the maximum across endpoints (0 closed, 1 open, 2 half-open)
    pub breaker_state: i64,
}

/// The counters the sampler sums (everything [`LabCounters::add`] reads but
/// the breaker state, a gauge).
fn is_counter(name: &str) -> bool {
    matches!(
        name,
        "relab_payment_calls_total"
            | "relab_payment_failures_total"
            | "relab_retry_loops_total"
            | "relab_retries_total"
            | "relab_breaker_transitions_total"
            | "relab_breaker_rejections_total"
    )
}

/// Each counter series of each endpoint read so far, as its increase since
/// it was first read (its first value included): a value below the last
/// one read means the process restarted, and the new value is all
/// increase. A series a restarted process does not serve yet keeps what it
/// had counted.
#[derive(Debug, Default)]
pub struct Increases {
    series: BTreeMap<SeriesKey, Count>,
}

/// An endpoint's series: endpoint, metric name, labels (sorted).
type SeriesKey = (String, String, Vec<(String, String)>);

/// A series' last value read and its increase so far.
type Count = (f64, f64);

impl Increases {
    /// Take one endpoint's reading; its gauges are returned untouched.
    pub fn observe(&mut self, endpoint: &str, samples: &[PromSample]) -> Vec<PromSample> {
        let mut gauges = Vec::new();
        for s in samples {
            if !is_counter(&s.name) {
                gauges.push(s.clone());
                continue;
            }
            if !s.value.is_finite() {
                continue;
            }
            let mut labels = s.labels.clone();
            labels.sort();
            let key = (endpoint.to_string(), s.name.clone(), labels);
            let entry = self.series.entry(key).or_insert((0.0, 0.0));
            let (last, total) = *entry;
            let increase = if s.value < last { s.value } else { s.value - last };
            *entry = (s.value, total + increase);
        }
        gauges
    }

    /// Every series' increase so far, as samples (one per endpoint and series).
    pub fn samples(&self) -> Vec<PromSample> {
        self.series
            .iter()
            .map(|((_, name, labels), (_, total))| PromSample {
                name: name.clone(),
                labels: labels.clone(),
                value: *total,
            })
            .collect()
    }
}

impl LabCounters {
    /// Add one endpoint's samples to these totals.
    pub fn add(&mut self, samples: &[PromSample]) {
        for s in samples {
            match s.name.as_str() {
                "relab_payment_calls_total" => self.payment_calls += s.value,
                "relab_payment_failures_total" => {
                    *self.payment_failures.entry(s.label("reason")).or_default() += s.value
                }
                "relab_retry_loops_total" => *self.retry_loops.entry(s.label("result")).or_default() += s.value,
                "relab_retries_total" => self.retries += s.value,
                "relab_breaker_transitions_total" => {
                    let key = format!("{}->{}", s.label("from"), s.label("to"));
                    *self.breaker_transitions.entry(key).or_default() += s.value;
                }
                "relab_breaker_rejections_total" => {
                    *self.breaker_rejections.entry(s.label("state")).or_default() += s.value
                }
                "relab_breaker_state" if s.value.is_finite() => {
                    self.breaker_state = self.breaker_state.max(s.value as i64)
                }
                _ => {}
            }
        }
    }
}

/// Counter `now - then`, never negative (a restarted process resets its counters).
pub fn delta(now: f64, then: f64) -> u64 {
    (now - then).max(0.0).round() as u64
}

/// Per-key deltas, keeping only keys that moved.
pub fn delta_map(now: &BTreeMap<String, f64>, then: &BTreeMap<String, f64>) -> BTreeMap<String, u64> {
    now.iter()
        .map(|(k, v)| (k.clone(), delta(*v, then.get(k).copied().unwrap_or(0.0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// One observation of the lab.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Since the load started, when its reads were done (zero for the
    /// baseline): the timeline places it by this, not by its rank (a read
    /// that took long delays the ones after it).
    pub offset: Duration,
    /// Every order in the database by status (cumulative).
    pub orders_by_status: BTreeMap<String, i64>,
    /// Jobs queued or running.
    pub queue_depth: i64,
    /// Whether the two above were read for this snapshot (false: the
    /// database did not answer in time, they are the previous snapshot's).
    pub database_read: bool,
    pub counters: LabCounters,
    /// Orders charged more than once, per the payment mock (when watched).
    pub double_charged_orders: u64,
}

impl Snapshot {
    pub fn orders(&self, status: &str) -> i64 {
        self.orders_by_status.get(status).copied().unwrap_or(0)
    }

    /// The second of the load this snapshot closes: the one its reads
    /// ended after (reads done at 3.02 s: second 2).
    fn closes_second(&self) -> usize {
        (self.offset.as_secs() as usize).saturating_sub(1)
    }
}

/// Samples the database and the metrics endpoints.
#[derive(Debug, Clone)]
pub struct Sampler {
    pool: PgPool,
    http: reqwest::Client,
    targets: MetricsTargets,
    /// The payment mock's base URL, when its live double charges are watched.
    mock_url: Option<String>,
    /// The counters' increases so far (shared by the clones of this sampler).
    increases: Arc<Mutex<Increases>>,
}

impl Sampler {
    pub fn new(pool: PgPool, http: reqwest::Client, targets: MetricsTargets) -> Self {
        Self {
            pool,
            http,
            targets,
            mock_url: None,
            increases: Arc::default(),
        }
    }

    /// Also read the payment mock's double charges each second (for
    /// `stopWhen: [{doubleCharges: true}]`).
    pub fn watching_the_ledger(mut self, mock_url: &str) -> Self {
        self.mock_url = Some(mock_url.trim_end_matches('/').to_string());
        self
    }

    async fn double_charged_orders(&self) -> Option<u64> {
        let url = format!("{}/stats", self.mock_url.as_ref()?);
        let read = self.http.get(url).timeout(READ_TIMEOUT).send();
        let stats: crate::payment_mock::MockStats = read.await.ok()?.json().await.ok()?;
        Some(stats.double_charged_orders)
    }

    async fn read_endpoint(&self, url: &str) -> Result<Vec<PromSample>> {
        let text = self
            .http
            .get(url)
            .timeout(READ_TIMEOUT)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| crate::Error::Other(format!("metrics endpoint {url}: {e}")))?
            .text()
            .await?;
        parse_text(&text).map_err(|e| crate::Error::Other(format!("metrics endpoint {url}: {e}")))
    }

    /// Read every metrics endpoint (at once, each within
    /// [`READ_TIMEOUT`]) and sum them, each counter as its increase
    /// ([`Increases`]): the totals, with an error per endpoint that could not
    /// be read (a pod that is gone keeps what it had counted).
    pub async fn scrape_all(&self) -> (LabCounters, Vec<crate::Error>) {
        let urls = self.targets.current();
        let reads = futures::future::join_all(urls.iter().map(|url| self.read_endpoint(url))).await;
        let mut counters = LabCounters::default();
        let mut errors = Vec::new();
        let mut increases = self.increases.lock().expect("increases lock");
        for (url, read) in urls.iter().zip(reads) {
            match read {
                Ok(samples) => counters.add(&increases.observe(url, &samples)),
                Err(e) => errors.push(e),
            }
        }
        counters.add(&increases.samples());
        (counters, errors)
    }

    /// [`Sampler::scrape_all`], where an endpoint that cannot be read is an
    /// error (the baseline's reading).
    pub async fn scrape(&self) -> Result<LabCounters> {
        let (counters, mut errors) = self.scrape_all().await;
        match errors.is_empty() {
            true => Ok(counters),
            false => Err(errors.swap_remove(0)),
        }
    }

    /// Orders by status and the queue depth, from the database (within
    /// [`READ_TIMEOUT`]).
    pub async fn sample_database(&self) -> Result<(BTreeMap<String, i64>, i64)> {
        let read = async {
            let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, count(*) FROM orders GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
            let (depth,): (i64,) = sqlx::query_as("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")
                .fetch_one(&self.pool)
                .await?;
            Ok((rows.into_iter().collect(), depth))
        };
        tokio::time::timeout(READ_TIMEOUT, read).await.unwrap_or_else(|_| {
            Err(crate::Error::Other(format!(
                "the database's counts: no answer within {READ_TIMEOUT:?}"
            )))
        })
    }

    /// One full observation; any failure is an error (use for the baseline).
    pub async fn snapshot(&self, offset: Duration) -> Result<Snapshot> {
        let (orders_by_status, queue_depth) = self.sample_database().await?;
        let counters = self.scrape().await?;
        Ok(Snapshot {
            offset,
            orders_by_status,
            queue_depth,
            database_read: true,
            counters,
            double_charged_orders: self.double_charged_orders().await.unwrap_or(0),
        })
    }

    /// One observation during the run, its offset taken from `start` when
    /// its reads are done: a part that cannot be read keeps the previous
    /// value (and logs a warning) rather than ending the run.
    pub async fn snapshot_or_previous(&self, start: Instant, previous: &Snapshot) -> Snapshot {
        let mut next = previous.clone();
        match self.sample_database().await {
            Ok((orders, depth)) => {
                next.orders_by_status = orders;
                next.queue_depth = depth;
                next.database_read = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "sampling the database failed");
                next.database_read = false;
            }
        }
        let (counters, errors) = self.scrape_all().await;
        for e in &errors {
            tracing::warn!(error = %e, "scraping metrics failed");
        }
        next.counters = counters;
        if let Some(n) = self.double_charged_orders().await {
            next.double_charged_orders = n;
        }
        next.offset = start.elapsed();
        next
    }

    /// Observe once a second from `start` until `done` is cancelled; keeps
    /// `progress` current (order outcomes since `baseline`, breaker, queue)
    /// and hands every snapshot, with the ones before, to `on_sample` (the
    /// stop conditions). Returns one snapshot per second.
    pub async fn every_second(
        &self,
        baseline: &Snapshot,
        start: Instant,
        progress: &watch::Sender<RunProgress>,
        done: &CancellationToken,
        mut on_sample: impl FnMut(&[Snapshot]) + Send,
    ) -> Vec<Snapshot> {
        let mut samples: Vec<Snapshot> = Vec::new();
        let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = done.cancelled() => break,
                _ = tick.tick() => {}
            }
            let previous = samples.last().unwrap_or(baseline);
            let next = self.snapshot_or_previous(start, previous).await;
            publish(progress, baseline, &next, start);
            samples.push(next);
            on_sample(&samples);
        }
        samples
    }
}

/// Copy an observation into the live progress.
pub fn publish(progress: &watch::Sender<RunProgress>, baseline: &Snapshot, now: &Snapshot, start: Instant) {
    let since = |status: &str| (now.orders(status) - baseline.orders(status)).max(0) as u64;
    progress.send_modify(|p| {
        p.elapsed = start.elapsed();
        p.paid = since("paid");
        p.failed = since("failed");
        p.dead_lettered = since("dead_lettered");
        let all = |s: &Snapshot| s.orders_by_status.values().sum::<i64>();
        p.orders = (all(now) - all(baseline)).max(0) as u64;
        p.breaker_state = now.counters.breaker_state;
        p.queue_depth = now.queue_depth;
    });
}

/// One point per second: request counts and API latency from the load
/// generator (by intended send second), order outcomes, payment calls,
/// breaker state and queue depth from the snapshots. A snapshot closes the
/// second its reads ended in (one read at 3.02 s: second 2); its changes
/// since the snapshot before are spread evenly over the seconds since that
/// one (none, when a read took long or the database did not answer: the
/// orders paid meanwhile are not put in the second they were seen in), and
/// the gauges (queue depth, breaker state) are the last reading's until
/// the one that closes a second (as a sampled gauge is read: the value
/// last seen). Order outcomes and the queue come from the snapshots whose
/// database part was read. As long as the longer of the load and the
/// snapshots.
pub fn timeline(load: &LoadReport, baseline: &Snapshot, samples: &[Snapshot]) -> Vec<TimelinePoint> {
    let len = load
        .seconds
        .len()
        .max(samples.last().map_or(0, |s| s.closes_second() + 1));
    let mut points: Vec<TimelinePoint> = (0..len)
        .map(|i| TimelinePoint {
            second: i as u32,
            ..TimelinePoint::default()
        })
        .collect();
    for (point, s) in points.iter_mut().zip(&load.seconds) {
        point.sent = s.sent;
        point.accepted = s.accepted;
        point.shed = s.shed;
        point.errors = s.errors;
        point.api_p50_ms = s.latency_ms(0.5);
        point.api_p99_ms = s.latency_ms(0.99);
    }
    // the metrics: from every snapshot
    for (seconds, before, now) in readings(baseline, samples) {
        let at = *seconds.end();
        let calls = delta(now.counters.payment_calls, before.counters.payment_calls);
        for (i, n) in spread(calls, seconds) {
            points[i].payment_calls += n;
            points[i].breaker_state = if i == at { now } else { before }.counters.breaker_state;
        }
    }
    // the database: from the snapshots that read it
    for (seconds, before, now) in readings(baseline, samples.iter().filter(|s| s.database_read)) {
        let at = *seconds.end();
        let moved = |status: &str| (now.orders(status) - before.orders(status)).max(0) as u64;
        for (i, n) in spread(moved("paid"), seconds.clone()) {
            points[i].paid += n;
            points[i].queue_depth = if i == at { now } else { before }.queue_depth;
        }
        for (i, n) in spread(moved("failed"), seconds.clone()) {
            points[i].failed += n;
        }
        for (i, n) in spread(moved("dead_lettered"), seconds) {
            points[i].dead_lettered += n;
        }
    }
    points
}

/// Each of `readings` with the one before it (`baseline` before the first)
/// and the seconds it covers: from the one after the second the reading
/// before closed to the one it closes, at least that one.
fn readings<'a>(
    baseline: &'a Snapshot,
    readings: impl IntoIterator<Item = &'a Snapshot>,
) -> impl Iterator<Item = (std::ops::RangeInclusive<usize>, &'a Snapshot, &'a Snapshot)> {
    let mut before: (Option<usize>, &Snapshot) = (None, baseline);
    readings.into_iter().map(move |now| {
        let at = now.closes_second();
        let seconds = before.0.map_or(0, |b| (b + 1).min(at))..=at;
        let (_, was) = std::mem::replace(&mut before, (Some(at), now));
        (seconds, was, now)
    })
}

/// `total` over the seconds of `over`, evenly, the remainder to the last
/// ones: (second, share) for each.
fn spread(total: u64, over: std::ops::RangeInclusive<usize>) -> impl Iterator<Item = (usize, u64)> {
    let n = (over.end() + 1 - over.start()) as u64;
    let (each, rest) = (total / n, total % n);
    let first = *over.start();
    over.map(move |i| (i, each + u64::from((i - first) as u64 >= n - rest)))
}

/// A small parser of the Prometheus text exposition format (0.0.4): one
/// sample per line, `name{label="value",...} value [timestamp]`; comments
/// (`# HELP`, `# TYPE`, anything after `#`) and blank lines are skipped.
mod prom {
    use std::fmt;

    /// One sample line.
    #[derive(Debug, Clone, PartialEq)]
    pub struct PromSample {
        pub name: String,
        pub labels: Vec<(String, String)>,
        pub value: f64,
    }

    impl PromSample {
        /// A label's value, empty when absent.
        pub fn label(&self, name: &str) -> String {
            self.labels
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        }
    }

    /// A line that is not a sample, with its 1-based number.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("line {line}: {message}")]
    pub struct ParseError {
        pub line: usize,
        pub message: String,
    }

    /// Parse a whole exposition.
    pub fn parse_text(text: &str) -> Result<Vec<PromSample>, ParseError> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(parse_line(line).map_err(|message| ParseError { line: i + 1, message })?);
        }
        Ok(out)
    }

    fn is_name_char(c: char, first: bool) -> bool {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
    }

    fn parse_line(line: &str) -> Result<PromSample, String> {
        let name_end = line
            .char_indices()
            .find(|&(i, c)| !is_name_char(c, i == 0))
            .map_or(line.len(), |(i, _)| i);
        if name_end == 0 {
            return Err(format!("expected a metric name in {line:?}"));
        }
        let name = line[..name_end].to_string();
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            rest = parse_labels(after, &mut labels)?;
        }
        let mut fields = rest.split_whitespace();
        let raw = fields.next().ok_or_else(|| format!("{name}: missing value"))?;
        let value = parse_value(raw).ok_or_else(|| format!("{name}: {raw:?} is not a number"))?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| format!("{name}: bad timestamp {ts:?}"))?;
        }
        if fields.next().is_some() {
            return Err(format!("{name}: unexpected text after the value"));
        }
        Ok(PromSample { name, labels, value })
    }

    /// Labels after the `{`; returns what follows the closing `}`.
    fn parse_labels<'a>(mut s: &'a str, labels: &mut Vec<(String, String)>) -> Result<&'a str, String> {
        loop {
            s = s.trim_start();
            if let Some(after) = s.strip_prefix('}') {
                return Ok(after);
            }
            let eq = s.find('=').ok_or("label without '='")?;
            let key = s[..eq].trim();
            if key.is_empty()
                || !key
                    .chars()
                    .enumerate()
                    .all(|(i, c)| is_name_char(c, i == 0) && c != ':')
            {
                return Err(format!("bad label name {key:?}"));
            }
            s = s[eq + 1..].trim_start();
            s = s
                .strip_prefix('"')
                .ok_or_else(|| format!("label {key}: value must be quoted"))?;
            let mut value = String::new();
            let mut chars = s.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(format!("label {key}: unterminated value")),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        Some((_, c)) => {
                            value.push('\\');
                            value.push(c);
                        }
                        None => return Err(format!("label {key}: unterminated value")),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((key.to_string(), value));
            s = s[end + 1..].trim_start();
            if let Some(after) = s.strip_prefix(',') {
                s = after;
            } else if !s.starts_with('}') {
                return Err(format!("label {key}: expected ',' or '}}'"));
            }
        }
    }

    fn parse_value(raw: &str) -> Option<f64> {
        match raw {
            "NaN" => Some(f64::NAN),
            "+Inf" | "Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            _ => raw.parse().ok(),
        }
    }

    impl fmt::Display for PromSample {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}{:?} {}", self.name, self.labels, self.value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# HELP relab_payment_calls_total Payment calls made (each attempt)
# TYPE relab_payment_calls_total counter
relab_payment_calls_total 17
# HELP relab_payment_failures_total Failed payment calls by reason
# TYPE relab_payment_failures_total counter
relab_payment_failures_total{reason="status_5xx"} 5
relab_payment_failures_total{reason="timeout"} 2
relab_breaker_transitions_total{from="closed",to="open"} 1
relab_breaker_transitions_total{to="half_open", from="open",} 1
relab_breaker_state 2
relab_http_request_duration_seconds_bucket{route="/orders",method="POST",le="+Inf"} 40 1700000000000
relab_http_request_duration_seconds_sum{route="/orders",method="POST"} 1.5e-2

"#;

    /// A load of `sent` per second for `seconds` seconds.
    fn load(seconds: usize, sent: u64) -> LoadReport {
        use crate::loadgen::{latency_histogram, SecondStats};
        LoadReport {
            sent: sent * seconds as u64,
            accepted: sent * seconds as u64,
            replayed: 0,
            shed: 0,
            rejected: 0,
            errors: 0,
            late_sends: 0,
            accepted_ids: Vec::new(),
            latency: latency_histogram(2),
            accepted_latency: latency_histogram(2),
            shed_latency: latency_histogram(2),
            send_lag: latency_histogram(2),
            seconds: (0..seconds)
                .map(|_| SecondStats {
                    sent,
                    ..SecondStats::default()
                })
                .collect(),
            elapsed: Duration::from_secs(seconds as u64),
            stopped_early: false,
        }
    }

    /// A snapshot read at `at` seconds: `paid` in all, `depth` queued.
    fn read_at(at: f64, paid: i64, depth: i64, calls: f64) -> Snapshot {
        Snapshot {
            offset: Duration::from_secs_f64(at),
            orders_by_status: [("paid".to_string(), paid)].into(),
            queue_depth: depth,
            database_read: true,
            counters: LabCounters {
                payment_calls: calls,
                ..LabCounters::default()
            },
            double_charged_orders: 0,
        }
    }

    fn column(t: &[TimelinePoint], f: impl Fn(&TimelinePoint) -> i64) -> Vec<i64> {
        t.iter().map(f).collect()
    }

    #[test]
    fn the_timeline_places_each_snapshot_by_when_it_was_read_not_by_its_rank() {
        let baseline = read_at(0.0, 0, 0, 0.0);
        // on time: one snapshot per second, each closing the second before
        let on_time = [
            read_at(1.01, 10, 1, 10.0),
            read_at(2.02, 20, 2, 20.0),
            read_at(3.0, 30, 1, 30.0),
        ];
        let t = timeline(&load(3, 10), &baseline, &on_time);
        assert_eq!(column(&t, |p| p.paid as i64), [10, 10, 10]);
        assert_eq!(column(&t, |p| p.queue_depth), [1, 2, 1]);
        assert_eq!(column(&t, |p| p.payment_calls as i64), [10, 10, 10]);

        // the read at 3 s took until 5.5 s (a database being restarted):
        // what it saw is spread over seconds 2 to 4, not put in second 2 with
        // every later snapshot a second (or three) early and the last
        // seconds left empty; the queue is the one last seen until then
        let stalled = [
            read_at(1.0, 10, 1, 10.0),
            read_at(2.0, 20, 1, 20.0),
            read_at(5.5, 50, 9, 50.0),
            read_at(6.5, 60, 1, 60.0),
            read_at(7.5, 70, 1, 70.0),
        ];
        let t = timeline(&load(7, 10), &baseline, &stalled);
        assert_eq!(column(&t, |p| p.paid as i64), [10, 10, 10, 10, 10, 10, 10]);
        assert_eq!(column(&t, |p| p.queue_depth), [1, 1, 1, 1, 9, 1, 1]);
        assert_eq!(column(&t, |p| p.sent as i64), [10; 7]);

        // the database did not answer at 3 s (its part is the previous
        // one's): what the next read saw covers both seconds; the metrics
        // were read, and stay in their own second
        let mut unread = read_at(3.0, 20, 1, 25.0);
        unread.database_read = false;
        let gap = [
            read_at(1.0, 10, 1, 10.0),
            read_at(2.0, 20, 1, 20.0),
            unread,
            read_at(4.0, 41, 1, 40.0),
        ];
        let t = timeline(&load(4, 10), &baseline, &gap);
        assert_eq!(
            column(&t, |p| p.paid as i64),
            [10, 10, 10, 11],
            "the remainder to the later second"
        );
        assert_eq!(column(&t, |p| p.payment_calls as i64), [10, 10, 5, 15]);

        // the last snapshot (after the drain) in the same second as the one
        // before it: added to that second; nothing is lost or made up
        let last = [
            read_at(1.0, 10, 1, 10.0),
            read_at(2.0, 20, 3, 20.0),
            read_at(2.4, 26, 0, 26.0),
        ];
        let t = timeline(&load(2, 10), &baseline, &last);
        assert_eq!(column(&t, |p| p.paid as i64), [10, 16]);
        assert_eq!(column(&t, |p| p.queue_depth), [1, 0]);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_read_held_up_by_a_database_restart_does_not_hide_the_recovery() {
        use relab_model::disruptions::{measure_recovery, DisruptionAction, DisruptionResult};
        // 30 orders a second for 20 s, each paid within its second; the
        // database killed at 8.0 s and back at 10.0 s, its backlog paid by
        // 10.5 s; the read that started at 8.0 s answered at 11.9 s, after
        // the backlog (what a cluster's load generator saw)
        let baseline = read_at(0.0, 0, 0, 0.0);
        let mut reads: Vec<Snapshot> = (1..=7)
            .map(|k| read_at(f64::from(k), 30 * i64::from(k), 2, 0.0))
            .collect();
        reads.push(read_at(11.9, 350, 2, 0.0));
        reads.extend((13..=20).map(|k| read_at(f64::from(k) - 0.1, 350 + 30 * (i64::from(k) - 12), 2, 0.0)));
        reads.push(read_at(20.3, 600, 0, 0.0));
        let t = timeline(&load(20, 30), &baseline, &reads);
        assert_eq!(t.iter().map(|p| p.paid).sum::<u64>(), 600, "nothing lost or made up");
        let mut restart = vec![DisruptionResult {
            name: "db-restart".into(),
            action: DisruptionAction::RestartDatabase,
            at_seconds: 8.0,
            fired_at_seconds: Some(8.0),
            ended_at_seconds: Some(10.0),
            hit: vec!["postgres".into()],
            recovered_at_seconds: None,
            recovery_seconds: None,
            error: None,
        }];
        measure_recovery(&mut restart, &t);
        // placed by rank, that read's 140 paid orders were second 7's: a
        // steady state of 1.52 before the restart, never reached again
        assert_eq!(restart[0].recovery_seconds, Some(3.0), "{restart:?}\n{t:?}");
    }

    #[test]
    fn parses_names_labels_values_and_skips_comments() {
        let samples = parse_text(EXPOSITION).unwrap();
        assert_eq!(samples.len(), 8);
        assert_eq!(samples[0].name, "relab_payment_calls_total");
        assert!(samples[0].labels.is_empty());
        assert_eq!(samples[0].value, 17.0);
        assert_eq!(samples[1].label("reason"), "status_5xx");
        assert_eq!(samples[4].label("from"), "open", "labels in any order, trailing comma");
        assert_eq!(samples[6].label("le"), "+Inf");
        assert_eq!(samples[6].value, 40.0, "the timestamp is not the value");
        assert_eq!(samples[7].value, 0.015);
    }

    #[test]
    fn label_values_may_hold_escapes_commas_and_braces() {
        let s = parse_text(r#"m{path="/a,b}",msg="say \"hi\"\n",back="c:\\x"} NaN"#).unwrap();
        assert_eq!(s[0].label("path"), "/a,b}");
        assert_eq!(s[0].label("msg"), "say \"hi\"\n");
        assert_eq!(s[0].label("back"), "c:\\x");
        assert!(s[0].value.is_nan());
        let inf = parse_text("a +Inf\nb -Inf\nc{} 3").unwrap();
        assert_eq!(
            inf.iter().map(|s| s.value).collect::<Vec<_>>(),
            [f64::INFINITY, f64::NEG_INFINITY, 3.0]
        );
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line_number() {
        for bad in [
            "m{a=\"1\" 2",
            "m{a=1} 2",
            "m{a=\"1\"",
            "m",
            "m abc",
            "{a=\"1\"} 2",
            "m 1 2 3",
        ] {
            let text = format!("# comment\n{bad}");
            let err = parse_text(&text).unwrap_err();
            assert_eq!(err.line, 2, "{bad}: {err}");
        }
    }

    #[test]
    fn counters_sum_across_endpoints_and_the_breaker_state_is_the_maximum() {
        let mut c = LabCounters::default();
        c.add(&parse_text(EXPOSITION).unwrap());
        c.add(
            &parse_text(
                "relab_payment_calls_total 3\nrelab_breaker_state 0\nrelab_retry_loops_total{result=\"gave_up\"} 4",
            )
            .unwrap(),
        );
        assert_eq!(c.payment_calls, 20.0);
        assert_eq!(c.payment_failures["timeout"], 2.0);
        assert_eq!(c.breaker_transitions["closed->open"], 1.0);
        assert_eq!(c.breaker_transitions["open->half_open"], 1.0);
        assert_eq!(c.retry_loops["gave_up"], 4.0);
        assert_eq!(c.breaker_state, 2);
    }

    fn reading(text: &str) -> Vec<PromSample> {
        parse_text(text).unwrap()
    }

    #[test]
    fn counters_are_summed_as_increases_across_a_restart() {
        let mut inc = Increases::default();
        let totals = |inc: &Increases| {
            let mut c = LabCounters::default();
            c.add(&inc.samples());
            c
        };
        // two endpoints; the worker's counters move, then the worker restarts
        inc.observe("api", &reading("relab_payment_calls_total 0"));
        inc.observe(
            "worker",
            &reading("relab_payment_calls_total 10\nrelab_retries_total 4\nrelab_payment_failures_total{reason=\"timeout\"} 2\nrelab_breaker_state 1"),
        );
        let before = totals(&inc);
        assert_eq!((before.payment_calls, before.retries), (10.0, 4.0));
        inc.observe(
            "worker",
            &reading("relab_payment_calls_total 25\nrelab_retries_total 6\nrelab_payment_failures_total{reason=\"timeout\"} 3"),
        );
        // killed: it starts again from 0; its timeout series is not served yet
        let gauges = inc.observe("worker", &reading("relab_payment_calls_total 7\nrelab_breaker_state 2"));
        assert_eq!(gauges.len(), 1, "the gauge is not an increase: {gauges:?}");
        let after = totals(&inc);
        assert_eq!(after.payment_calls, 25.0 + 7.0, "the new value is all increase");
        assert_eq!(
            after.retries, 6.0,
            "a series not served since the restart keeps its count"
        );
        assert_eq!(after.payment_failures["timeout"], 3.0);
        inc.observe(
            "worker",
            &reading("relab_payment_calls_total 9\nrelab_retries_total 1\nrelab_payment_failures_total{reason=\"timeout\"} 1"),
        );
        let later = totals(&inc);
        assert_eq!((later.payment_calls, later.retries), (34.0, 7.0));
        assert_eq!(later.payment_failures["timeout"], 4.0);
        assert_eq!(
            delta(later.payment_calls, before.payment_calls),
            24,
            "exact across the kill"
        );
        // label order does not make another series
        inc.observe(
            "api",
            &reading("relab_breaker_transitions_total{from=\"closed\",to=\"open\"} 1"),
        );
        inc.observe(
            "api",
            &reading("relab_breaker_transitions_total{to=\"open\",from=\"closed\"} 3"),
        );
        assert_eq!(totals(&inc).breaker_transitions["closed->open"], 3.0);
    }

    #[test]
    fn deltas_are_per_run_and_never_negative() {
        assert_eq!(delta(10.0, 4.0), 6);
        assert_eq!(delta(1.0, 4.0), 0, "a restarted process");
        let then = BTreeMap::from([("timeout".to_string(), 2.0)]);
        let now = BTreeMap::from([("timeout".to_string(), 2.0), ("status_5xx".to_string(), 3.0)]);
        assert_eq!(delta_map(&now, &then), BTreeMap::from([("status_5xx".to_string(), 3)]));
    }
}

//! `load.parallelism`: several load generators share one load.
//!
//! The **leader** runs the whole run as usual (baseline, faults,
//! disruptions, sampler, drain, audit) and sends share 0; each **follower**
//! (`lab-service loadgen` with `RELAB_LOAD_LEADER_URL`; locally a task)
//! only sends its share and hands its report to the leader. Generator k of
//! N sends every N-th request of the one schedule starting with the k-th
//! ([`crate::loadgen::Share`]), so together they send what one would.
//!
//! Over the leader's progress server:
//! 1. a follower joins, `POST /load-shares` → its index (1..N);
//! 2. the leader waits until all have joined (bounded by its wait for the
//!    lab, at least [`JOIN_PATIENCE`]), then sets the start one second
//!    ahead by the wall clock (`GET /load-shares` → `startAtUnixMs`;
//!    generators on one node share a clock, across nodes NTP keeps them
//!    within milliseconds), and everyone starts then;
//! 3. a follower stops early when the leader stopped its load early (a
//!    stop condition, a cancelled run: `stopped`), and posts its [`ShareReport`] to
//!    `POST /load-shares/{index}`: counts, accepted order ids, and latency
//!    histograms serialised (HDR V2, deflated), never percentiles;
//! 4. the leader merges the reports with its own
//!    ([`crate::loadgen::LoadReport::merge`]) and goes on: one drain, one
//!    audit, one verdict. A follower that does not report in time fails the
//!    run, naming it (a merge without it would be a wrong answer).

use crate::loadgen::{latency_histogram, LoadConfig, LoadReport, SecondStats, Share, Target};
use relab_model::results::{decode_histogram, encode_histogram};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The leader waits at least this long for its followers to join.
pub const JOIN_PATIENCE: Duration = Duration::from_secs(120);

/// Everyone starts this long after the last follower joined.
pub const START_AHEAD: Duration = Duration::from_secs(1);

/// A follower's answer to joining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub index: u32,
    pub of: u32,
}

/// `GET /load-shares`: who has joined, and when the load starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BoardState {
    pub of: u32,
    pub joined: u32,
    pub reported: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at_unix_ms: Option<u64>,
    /// The leader's load stopped early: every share stops.
    #[serde(default)]
    pub stopped: bool,
}

/// One generator's [`LoadReport`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShareReport {
    pub sent: u64,
    pub accepted: u64,
    pub replayed: u64,
    pub shed: u64,
    pub rejected: u64,
    pub errors: u64,
    pub late_sends: u64,
    pub accepted_ids: Vec<Uuid>,
    pub latency: String,
    pub accepted_latency: String,
    pub shed_latency: String,
    pub send_lag: String,
    pub seconds: Vec<WireSecond>,
    pub elapsed_seconds: f64,
    pub stopped_early: bool,
}

/// One second of a [`ShareReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireSecond {
    pub sent: u64,
    pub accepted: u64,
    pub replayed: u64,
    pub shed: u64,
    pub rejected: u64,
    pub errors: u64,
    pub latency: String,
}

impl From<&LoadReport> for ShareReport {
    fn from(r: &LoadReport) -> Self {
        Self {
            sent: r.sent,
            accepted: r.accepted,
            replayed: r.replayed,
            shed: r.shed,
            rejected: r.rejected,
            errors: r.errors,
            late_sends: r.late_sends,
            accepted_ids: r.accepted_ids.clone(),
            latency: encode_histogram(&r.latency),
            accepted_latency: encode_histogram(&r.accepted_latency),
            shed_latency: encode_histogram(&r.shed_latency),
            send_lag: encode_histogram(&r.send_lag),
            seconds: r
                .seconds
                .iter()
                .map(|s| WireSecond {
                    sent: s.sent,
                    accepted: s.accepted,
                    replayed: s.replayed,
                    shed: s.shed,
                    rejected: s.rejected,
                    errors: s.errors,
                    latency: encode_histogram(&s.latency),
                })
                .collect(),
            elapsed_seconds: r.elapsed.as_secs_f64(),
            stopped_early: r.stopped_early,
        }
    }
}

impl ShareReport {
    /// Back into a [`LoadReport`]; the error names the histogram that does not decode.
    pub fn decode(self) -> Result<LoadReport, String> {
        let hist =
            |field: &str, text: &str| decode_histogram(text).ok_or_else(|| format!("{field}: not an HDR histogram"));
        let seconds = self
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut latency = latency_histogram(2);
                crate::loadgen::add(&mut latency, &hist(&format!("seconds[{i}].latency"), &s.latency)?);
                Ok(SecondStats {
                    sent: s.sent,
                    accepted: s.accepted,
                    replayed: s.replayed,
                    shed: s.shed,
                    rejected: s.rejected,
                    errors: s.errors,
                    latency,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(LoadReport {
            sent: self.sent,
            accepted: self.accepted,
            replayed: self.replayed,
            shed: self.shed,
            rejected: self.rejected,
            errors: self.errors,
            late_sends: self.late_sends,
            accepted_ids: self.accepted_ids,
            latency: hist("latency", &self.latency)?,
            accepted_latency: hist("acceptedLatency", &self.accepted_latency)?,
            shed_latency: hist("shedLatency", &self.shed_latency)?,
            send_lag: hist("sendLag", &self.send_lag)?,
            seconds,
            elapsed: Duration::try_from_secs_f64(self.elapsed_seconds).map_err(|e| format!("elapsedSeconds: {e}"))?,
            stopped_early: self.stopped_early,
        })
    }
}

/// The leader's board: joins, the start, the followers' reports. Clones
/// share one board (the run engine and the progress server).
#[derive(Debug, Clone)]
pub struct ShareBoard {
    inner: Arc<Mutex<Board>>,
    changed: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Board {
    of: u32,
    joined: u32,
    start_at: Option<SystemTime>,
    stopped: bool,
    reports: BTreeMap<u32, LoadReport>,
}

impl Default for ShareBoard {
    fn default() -> Self {
        Self::new(1)
    }
}

impl ShareBoard {
    /// A board for `of` generators (the leader included).
    pub fn new(of: u32) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Board {
                of: of.max(1),
                ..Board::default()
            })),
            changed: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.inner.lock().expect("share board lock")
    }

    /// Generators in all, the leader included.
    pub fn generators(&self) -> u32 {
        self.lock().of
    }

    /// A follower joins: its index, or why not (every share is taken).
    pub fn join(&self) -> Result<Ticket, String> {
        let mut board = self.lock();
        if board.joined + 1 >= board.of {
            return Err(format!("all {} followers have joined already", board.of - 1));
        }
        board.joined += 1;
        let ticket = Ticket {
            index: board.joined,
            of: board.of,
        };
        drop(board);
        self.changed.notify_waiters();
        Ok(ticket)
    }

    pub fn state(&self) -> BoardState {
        let board = self.lock();
        BoardState {
            of: board.of,
            joined: board.joined,
            reported: board.reports.keys().copied().collect(),
            start_at_unix_ms: board
                .start_at
                .map(|t| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64),
            stopped: board.stopped,
        }
    }

    /// The leader's load stopped early (a stop condition, a cancelled
    /// run): the followers stop theirs.
    pub fn stop_all(&self) {
        self.lock().stopped = true;
    }

    /// Follower `index`'s report (once).
    pub fn report(&self, index: u32, report: LoadReport) -> Result<(), String> {
        let mut board = self.lock();
        if index == 0 || index > board.joined {
            return Err(format!("no follower {index} has joined"));
        }
        if board.reports.contains_key(&index) {
            return Err(format!("follower {index} has reported already"));
        }
        board.reports.insert(index, report);
        drop(board);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Wait until `what` holds of the board, at most `within`.
    async fn wait(&self, within: Duration, what: impl Fn(&Board) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            if what(&self.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return what(&self.lock());
            }
        }
    }

    /// The leader: wait for every follower, then set the start
    /// [`START_AHEAD`] from now; the start, or which are missing.
    pub async fn start_when_all_joined(&self, within: Duration) -> Result<SystemTime, String> {
        if !self.wait(within, |b| b.joined + 1 >= b.of).await {
            let b = self.lock();
            return Err(format!(
                "load.parallelism: {} of {} load generators joined within {} s",
                b.joined + 1,
                b.of,
                within.as_secs()
            ));
        }
        let at = SystemTime::now() + START_AHEAD;
        self.lock().start_at = Some(at);
        self.changed.notify_waiters();
        Ok(at)
    }

    /// The leader: its own report merged with every follower's, or which
    /// did not report within `within`.
    pub async fn merge_with(&self, own: LoadReport, within: Duration) -> Result<LoadReport, String> {
        if !self.wait(within, |b| b.reports.len() as u32 + 1 >= b.of).await {
            let b = self.lock();
            let missing: Vec<u32> = (1..b.of).filter(|i| !b.reports.contains_key(i)).collect();
            return Err(format!(
                "load.parallelism: load generator(s) {missing:?} of {} did not report within {} s",
                b.of,
                within.as_secs()
            ));
        }
        let reports = std::mem::take(&mut self.lock().reports);
        let mut parts = vec![own];
        parts.extend(reports.into_values());
        Ok(LoadReport::merge(parts).expect("the leader's own report"))
    }
}

/// Sleep until the wall-clock time `at` (no wait if it has passed).
pub async fn sleep_until(at: SystemTime) {
    if let Ok(left) = at.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
}

/// A follower: join the leader at `leader` (its progress server), wait for
/// the start, send this share of `load` against `target`, stop early when
/// the leader's load is over or `stop` is cancelled, report. `patience`
/// bounds the wait for the leader to answer and to start.
pub async fn follow(
    leader: &str,
    target: &Target,
    load: &LoadConfig,
    patience: Duration,
    stop: &CancellationToken,
) -> crate::Result<Ticket> {
    let leader = leader.trim_end_matches('/');
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let deadline = tokio::time::Instant::now() + patience.max(JOIN_PATIENCE);
    let other = |m: String| crate::Error::Other(m);
    // 1. join (the leader may not be up yet)
    let ticket: Ticket = loop {
        let answer = http.post(format!("{leader}/load-shares")).send().await;
        match answer {
            Ok(r) if r.status().is_success() => break r.json().await?,
            Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => {
                return Err(other(format!(
                    "joining {leader}: {}",
                    r.text().await.unwrap_or_default()
                )))
            }
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(other(format!("the leading load generator at {leader} did not answer")))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    tracing::info!(
        index = ticket.index,
        of = ticket.of,
        "joined the leading load generator"
    );
    // 2. wait for the start
    let start_at = loop {
        if stop.is_cancelled() {
            return Err(other("stopped before the load started".into()));
        }
        let state: Option<BoardState> = match http.get(format!("{leader}/load-shares")).send().await {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            _ => None,
        };
        if let Some(ms) = state.and_then(|s| s.start_at_unix_ms) {
            break UNIX_EPOCH + Duration::from_millis(ms);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(other(format!(
                "the leading load generator at {leader} did not start the load"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    sleep_until(start_at).await;
    // 3. the share, stopped with the leader's load
    let mut mine = load.clone();
    mine.share = Share {
        index: ticket.index,
        of: ticket.of,
    };
    let load_stop = stop.child_token();
    let watching = tokio::spawn(stop_with_leader(http.clone(), leader.to_string(), load_stop.clone()));
    let (counts, _) = tokio::sync::watch::channel(crate::loadgen::LoadProgress::default());
    let report = crate::loadgen::run_load(target, &mine, &counts, &load_stop).await;
    watching.abort();
    let report = report?;
    // 4. report (a few tries: the report is the whole point)
    let wire = ShareReport::from(&report);
    let mut last_error = String::new();
    for _ in 0..5 {
        match http
            .post(format!("{leader}/load-shares/{}", ticket.index))
            .json(&wire)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                tracing::info!(index = ticket.index, sent = report.sent, "share reported");
                return Ok(ticket);
            }
            Ok(r) => last_error = format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(other(format!(
        "reporting share {} to {leader}: {last_error}",
        ticket.index
    )))
}

/// Cancel `stop` once the leader stops its load early (or has been gone
/// for five seconds).
async fn stop_with_leader(http: reqwest::Client, leader: String, stop: CancellationToken) {
    let mut misses = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let state = match http.get(format!("{leader}/load-shares")).send().await {
            Ok(r) => r.json::<BoardState>().await.ok(),
            Err(_) => None,
        };
        match state {
            Some(s) if s.stopped => break,
            Some(_) => misses = 0,
            None if misses >= 10 => break,
            None => misses += 1,
        }
    }
    tracing::warn!("the leading load generator stopped its load (or is gone): stopping this share");
    stop.cancel();
}

/// Locally (`relab run`, tests): `run` with its followers as tasks of this
/// process, joined over a progress server on loopback: the pods' code path,
/// with tasks for pods. One generator: just the run.
pub async fn run_with_local_followers(
    run: super::ExperimentRun,
    progress: tokio::sync::watch::Sender<super::RunProgress>,
    stop: CancellationToken,
) -> crate::Result<super::RunOutput> {
    let generators = run.shares.generators();
    if generators <= 1 {
        return super::run_experiment(run, progress, stop).await;
    }
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let (server, addr) = super::cli::serve_progress(loopback, progress.subscribe(), &run)
        .await
        .map_err(|e| crate::Error::Other(format!("the leading load generator's server: {e}")))?;
    let leader = format!("http://{addr}");
    let target = Target::Orders {
        api_url: run.api_url.clone(),
    };
    let followers: Vec<_> = (1..generators)
        .map(|_| {
            let (leader, target, load, stop) = (leader.clone(), target.clone(), run.load.clone(), stop.clone());
            let patience = run.wait_ready;
            tokio::spawn(async move { follow(&leader, &target, &load, patience, &stop).await })
        })
        .collect();
    let output = super::run_experiment(run, progress, stop).await;
    for follower in followers {
        match follower.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "a load generator sharing the load failed"),
            Err(e) => tracing::warn!(error = %e, "a load generator sharing the load panicked"),
        }
    }
    server.abort();
    output
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::schedule::{total_sends, Schedule};
    use crate::loadgen::LoadStage;

    fn report(latencies: &[u64]) -> LoadReport {
        let mut r = LoadReport {
            sent: latencies.len() as u64,
            accepted: latencies.len() as u64,
            replayed: 0,
            shed: 0,
            rejected: 0,
            errors: 0,
            late_sends: 0,
            accepted_ids: latencies.iter().map(|_| Uuid::new_v4()).collect(),
            latency: latency_histogram(3),
            accepted_latency: latency_histogram(3),
            shed_latency: latency_histogram(3),
            send_lag: latency_histogram(3),
            seconds: Vec::new(),
            elapsed: Duration::from_secs(3),
            stopped_early: false,
        };
        for (i, &v) in latencies.iter().enumerate() {
            r.latency.record(v).unwrap();
            r.accepted_latency.record(v).unwrap();
            let second = i % 3;
            if r.seconds.len() <= second {
                r.seconds.resize_with(second + 1, SecondStats::default);
            }
            r.seconds[second].sent += 1;
            r.seconds[second].latency.record(v).unwrap();
        }
        r
    }

    #[test]
    fn the_shares_of_a_schedule_are_the_schedule_each_request_once() {
        let stages = [
            LoadStage {
                rate_per_sec: 7.0,
                duration: Duration::from_secs(3),
            },
            LoadStage {
                rate_per_sec: 2.5,
                duration: Duration::from_secs(2),
            },
        ];
        let total = total_sends(&stages);
        for of in 1..=4u32 {
            let mut seen: Vec<u64> = Vec::new();
            for index in 0..of {
                let share = Share { index, of };
                let mine: Vec<u64> = (0..total).filter(|&seq| share.takes(seq)).collect();
                assert_eq!(mine.len() as u64, share.of_total(total), "{index} of {of}");
                seen.extend(mine);
            }
            seen.sort();
            assert_eq!(seen, (0..total).collect::<Vec<_>>(), "{of} shares");
        }
        assert_eq!(Schedule::new(&stages).count() as u64, total);
    }

    #[test]
    fn histograms_from_three_generators_merge_to_the_percentiles_of_one_fed_every_sample() {
        // skewed, with a tail that only one generator sees
        let all: Vec<u64> = (0..3000u64)
            .map(|i| 500 + (i * 7919) % 20_000 + if i % 97 == 0 { 900_000 } else { 0 })
            .collect();
        let one = report(&all);
        let parts: Vec<LoadReport> = (0..3)
            .map(|k| report(&all.iter().copied().skip(k).step_by(3).collect::<Vec<_>>()))
            .map(|r| ShareReport::from(&r).decode().expect("the wire form decodes"))
            .collect();
        let merged = LoadReport::merge(parts).unwrap();
        assert_eq!(merged.sent, 3000);
        assert_eq!(merged.accepted_ids.len(), 3000);
        for q in [0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.latency.value_at_quantile(q),
                one.latency.value_at_quantile(q),
                "p{q}"
            );
        }
        assert_eq!(merged.latency.len(), one.latency.len());
        assert_eq!(merged.seconds.iter().map(|s| s.sent).sum::<u64>(), 3000);
        assert_eq!(merged.elapsed, Duration::from_secs(3));
    }

    #[tokio::test]
    async fn the_leader_starts_when_all_joined_and_names_who_did_not_report() {
        let board = ShareBoard::new(3);
        assert_eq!(board.join().unwrap(), Ticket { index: 1, of: 3 });
        let waiting = board.start_when_all_joined(Duration::from_millis(50)).await;
        assert!(waiting.unwrap_err().contains("2 of 3"), "one follower short");
        assert_eq!(board.join().unwrap().index, 2);
        assert!(board.join().is_err(), "no fourth");
        let at = board.start_when_all_joined(Duration::from_millis(50)).await.unwrap();
        assert!(at > SystemTime::now(), "a start ahead, for everyone");
        assert!(board.state().start_at_unix_ms.is_some());
        board.report(2, report(&[1_000])).unwrap();
        assert!(board.report(2, report(&[1_000])).is_err(), "once");
        assert!(board.report(3, report(&[1_000])).is_err(), "no such follower");
        let e = board
            .merge_with(report(&[1_000]), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(e.contains("[1]"), "{e}");
        board.report(1, report(&[2_000, 3_000])).unwrap();
        let merged = board
            .merge_with(report(&[1_000]), Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(merged.sent, 4);
    }
}

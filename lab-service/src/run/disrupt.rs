//! The disruptions of a run (`spec.disruptions`): the run engine keeps
//! their clock and their record for every runner, so that `relab run` and
//! the cluster's load generator report them alike.
//!
//! - `DatabaseLatency` / `DatabaseOutage` go through the database fault
//!   proxy in the order service's path ([`crate::db_proxy`]): the engine
//!   sets its faults (`PUT {dbProxyUrl}/faults`) at the window's start and
//!   clears them at its end; the connections reset are what was hit.
//! - Kills and `RestartDatabase` are carried out by the runner's
//!   [`Disruptor`]: `relab run` SIGKILLs and restarts its child processes
//!   and restarts its ephemeral Postgres; on a cluster the load generator
//!   restarts the managed Postgres itself ([`SqlRestart`]) and the
//!   **operator** deletes the pods (grace 0) and reports what it hit with
//!   `POST /disruptions/{name}` on the load generator's progress server
//!   ([`DisruptionLog::report`]).
//!
//! Every disruption is fired once, at its time from the start of the load;
//! one the load does not reach (stopped early) stays unfired. Recovery is
//! measured after the run from the timeline
//! ([`relab_model::disruptions::measure_recovery`]).

use relab_model::disruptions::{DisruptionAction, DisruptionResult, PlannedDisruption};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a runner's own means did: what was hit (process ids, pod names).
pub type Fired = Result<Vec<String>, String>;

/// Carries out the disruptions that are not the proxy's: kills and
/// database restarts.
pub trait Disruptor: Send + Sync + 'static {
    /// Carry `plan` out and return what it hit once it is over (the killed
    /// processes started again, the database back). `None`: not carried out
    /// here: someone else (the operator) does it and reports it.
    fn fire(&self, plan: &PlannedDisruption) -> Option<futures::future::BoxFuture<'static, Fired>>;
}

/// A runner's [`Disruptor`], shareable and printable in a run's settings.
#[derive(Clone)]
pub struct Carrier(pub Arc<dyn Disruptor>);

impl std::fmt::Debug for Carrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Carrier(..)")
    }
}

/// What an outside carrier (the operator) reports of a disruption it fired.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Report {
    /// Pod names, process ids.
    #[serde(default)]
    pub hit: Vec<String>,
    /// Why it could not be carried out.
    #[serde(default)]
    pub error: Option<String>,
}

/// The record of a run's disruptions, shared by the run engine, its
/// scheduler tasks and the progress server that takes outside reports.
#[derive(Debug, Clone, Default)]
pub struct DisruptionLog {
    inner: Arc<Mutex<LogState>>,
}

#[derive(Debug, Default)]
struct LogState {
    results: Vec<DisruptionResult>,
    /// The load's start (fired times are seconds since), and the wall
    /// clock then.
    start: Option<Instant>,
    start_wall: Option<std::time::SystemTime>,
}

impl DisruptionLog {
    /// A log of `plans`, none fired.
    pub fn new(plans: &[PlannedDisruption]) -> Self {
        let log = Self::default();
        log.plan(plans);
        log
    }

    /// Start over with `plans`, none fired.
    pub fn plan(&self, plans: &[PlannedDisruption]) {
        let mut state = self.inner.lock().expect("log lock");
        state.results = plans.iter().map(PlannedDisruption::unfired).collect();
        state.start = None;
        state.start_wall = None;
    }

    /// Every disruption as recorded so far.
    pub fn results(&self) -> Vec<DisruptionResult> {
        self.inner.lock().expect("log lock").results.clone()
    }

    fn started(&self, at: Instant) {
        let mut state = self.inner.lock().expect("log lock");
        state.start = Some(at);
        state.start_wall = Some(std::time::SystemTime::now() - at.elapsed());
    }

    fn seconds_since_start(&self) -> Option<f64> {
        let state = self.inner.lock().expect("log lock");
        state.start.map(|s| round_ms(s.elapsed().as_secs_f64()))
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut DisruptionResult)) -> bool {
        let mut state = self.inner.lock().expect("log lock");
        match state.results.iter_mut().find(|d| d.name == name) {
            Some(d) => {
                change(d);
                true
            }
            None => false,
        }
    }

    /// An outside carrier fired `name` now: recorded once (a second report
    /// of the same disruption is refused), stamped with the time since the
    /// load started. The error says why it was not taken.
    pub fn report(&self, name: &str, report: Report) -> Result<DisruptionResult, String> {
        let now = self
            .seconds_since_start()
            .ok_or_else(|| "the load has not started".to_string())?;
        let mut state = self.inner.lock().expect("log lock");
        let d = state
            .results
            .iter_mut()
            .find(|d| d.name == name)
            .ok_or_else(|| format!("no disruption is named {name:?}"))?;
        if d.fired_at_seconds.is_some() || d.error.is_some() {
            return Err(format!("disruption {name:?} was already reported"));
        }
        if report.error.is_some() {
            d.error = report.error;
        } else {
            d.fired_at_seconds = Some(now);
            d.ended_at_seconds = Some(now);
            d.hit = report.hit;
        }
        Ok(d.clone())
    }
}

impl DisruptionLog {
    /// The disruptions as Prometheus text, for the load generator's
    /// `/metrics`: `relab_disruptions_fired_total{disruption,action}` (0,
    /// then 1 once fired), `relab_disruption_fired_timestamp_seconds` (the
    /// Unix time it fired, once it has: the dashboard's annotation takes its
    /// time from this value, so any scrape after the firing places it
    /// exactly) and `relab_disruption_active` (1 from firing until its end:
    /// a window's, or until the killed processes or the database are back).
    pub fn render_metrics(&self) -> String {
        use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry};
        let registry = Registry::new();
        let fired = IntCounterVec::new(
            Opts::new("relab_disruptions_fired_total", "Disruptions of this run fired so far"),
            &["disruption", "action"],
        )
        .expect("valid metric");
        let active = IntGaugeVec::new(
            Opts::new(
                "relab_disruption_active",
                "1 while a disruption is in force (from firing until it is over)",
            ),
            &["disruption", "action"],
        )
        .expect("valid metric");
        let fired_at = prometheus::GaugeVec::new(
            Opts::new(
                "relab_disruption_fired_timestamp_seconds",
                "Unix time at which each disruption fired (absent until it has)",
            ),
            &["disruption", "action"],
        )
        .expect("valid metric");
        registry.register(Box::new(fired.clone())).expect("registered once");
        registry.register(Box::new(fired_at.clone())).expect("registered once");
        registry.register(Box::new(active.clone())).expect("registered once");
        let now = self.seconds_since_start();
        let start_wall = self.inner.lock().expect("log lock").start_wall;
        for d in self.results() {
            let labels = [d.name.as_str(), d.action.as_str()];
            let counter = fired.with_label_values(&labels);
            if let Some(at) = d.fired_at_seconds {
                counter.inc();
                if let Some(start) = start_wall {
                    let unix = start
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64();
                    fired_at.with_label_values(&labels).set(unix + at);
                }
            }
            let in_force = match (d.fired_at_seconds, d.ended_at_seconds, now) {
                (Some(_), None, _) => true,
                (Some(_), Some(end), Some(now)) => now < end,
                _ => false,
            };
            active.with_label_values(&labels).set(i64::from(in_force));
        }
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("utf-8")
    }
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// Fire every disruption of `plans` at its time after `start` (spawned
/// tasks, one per disruption), until `load_over` is cancelled: then the
/// database proxy's faults are cleared and what has not fired stays unfired.
pub fn schedule(
    plans: Vec<PlannedDisruption>,
    log: DisruptionLog,
    carrier: Option<Carrier>,
    db_proxy_url: Option<String>,
    http: reqwest::Client,
    start: Instant,
    load_over: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    log.started(start);
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for plan in plans {
            let (log, carrier, proxy, http, over) = (
                log.clone(),
                carrier.clone(),
                db_proxy_url.clone(),
                http.clone(),
                load_over.clone(),
            );
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep_until(start + plan.at) => {}
                    _ = over.cancelled() => return,
                }
                fire_one(&plan, &log, carrier, proxy, &http, start, &over).await;
            }));
        }
        load_over.cancelled().await;
        if let Some(url) = &db_proxy_url {
            if let Err(e) = set_proxy_faults(&http, url, &serde_json::json!({})).await {
                tracing::warn!(error = %e, "could not clear the database proxy's faults after the load");
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    })
}

async fn fire_one(
    plan: &PlannedDisruption,
    log: &DisruptionLog,
    carrier: Option<Carrier>,
    proxy: Option<String>,
    http: &reqwest::Client,
    start: Instant,
    over: &CancellationToken,
) {
    let since = |t: Instant| round_ms(t.duration_since(start).as_secs_f64());
    // kills and restarts: this runner's carrier, or (None) the operator's,
    // which reports them; the proxy's windows are the engine's own
    let work = match plan.action.through_db_proxy() {
        true => None,
        false => match carrier.as_ref().and_then(|c| c.0.fire(plan)) {
            None => return,
            some => some,
        },
    };
    tracing::warn!(disruption = %plan.name, action = plan.action.as_str(), "firing a disruption");
    // in force from now (GET /progress and /metrics show it) until it is over
    let fired = since(Instant::now());
    log.update(&plan.name, |d| d.fired_at_seconds = Some(fired));
    let outcome: Result<(Vec<String>, Instant), String> = match (work, proxy) {
        (Some(work), _) => work.await.map(|hit| (hit, Instant::now())),
        (None, Some(url)) => proxy_window(plan, &url, http, start, over).await,
        (None, None) => Err("no database proxy in the order service's path".to_string()),
    };
    log.update(&plan.name, |d| match outcome {
        Ok((hit, ended)) => {
            d.ended_at_seconds = Some(since(ended));
            d.hit = hit;
        }
        Err(e) => {
            tracing::warn!(disruption = %plan.name, error = %e, "a disruption could not fire");
            d.fired_at_seconds = None;
            d.error = Some(e);
        }
    });
}

/// A latency or outage window through the proxy: set, wait, clear. Hit:
/// the connections reset (outage) or delayed (latency, those open at the
/// start and opened during it).
async fn proxy_window(
    plan: &PlannedDisruption,
    url: &str,
    http: &reqwest::Client,
    start: Instant,
    over: &CancellationToken,
) -> Result<(Vec<String>, Instant), String> {
    let before = proxy_stats(http, url).await?;
    let faults = match plan.action {
        DisruptionAction::DatabaseOutage => serde_json::json!({"outage": true}),
        _ => serde_json::json!({"toUpstreamMs": plan.added_ms, "toClientMs": plan.added_ms}),
    };
    set_proxy_faults(http, url, &faults).await?;
    tokio::select! {
        _ = tokio::time::sleep_until(start + plan.at + plan.duration) => {}
        _ = over.cancelled() => {}
    }
    set_proxy_faults(http, url, &serde_json::json!({})).await?;
    let ended = Instant::now();
    let after = proxy_stats(http, url).await?;
    let hit = match plan.action {
        DisruptionAction::DatabaseOutage => vec![
            format!("{} connections reset", after.reset.saturating_sub(before.reset)),
            format!("{} connections refused", after.refused.saturating_sub(before.refused)),
        ],
        _ => vec![format!(
            "{} connections delayed",
            before.active + after.accepted.saturating_sub(before.accepted)
        )],
    };
    let touched = after.reset + after.refused + after.accepted > before.reset + before.refused + before.accepted;
    let hit = if touched || before.active > 0 { hit } else { Vec::new() };
    Ok((hit, ended))
}

async fn set_proxy_faults(http: &reqwest::Client, url: &str, faults: &serde_json::Value) -> Result<(), String> {
    let request = http
        .put(format!("{url}/faults"))
        .json(faults)
        .timeout(Duration::from_secs(5));
    super::put_faults(request, url).await
}

async fn proxy_stats(http: &reqwest::Client, url: &str) -> Result<crate::db_proxy::ProxyStats, String> {
    let resp = http
        .get(format!("{url}/stats"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("GET {url}/stats: {e}"))?;
    resp.json().await.map_err(|e| format!("GET {url}/stats: {e}"))
}

/// `RestartDatabase` where the database is a server this process can only
/// reach over SQL (the cluster's managed Postgres): an immediate shutdown
/// of the postmaster from inside (`COPY ... TO PROGRAM 'kill -QUIT <pid>'`,
/// superuser), after which its container is restarted in place by the
/// kubelet on the same volume; over once the database answers again.
/// Kills are not this carrier's (the operator's).
#[derive(Debug, Clone)]
pub struct SqlRestart {
    pub database_url: String,
    /// How long to wait for the database to come back.
    pub back_within: Duration,
}

impl Disruptor for SqlRestart {
    fn fire(&self, plan: &PlannedDisruption) -> Option<futures::future::BoxFuture<'static, Fired>> {
        if plan.action != DisruptionAction::RestartDatabase {
            return None;
        }
        let this = self.clone();
        Some(Box::pin(async move { this.restart().await }))
    }
}

impl SqlRestart {
    async fn restart(&self) -> Fired {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.database_url)
            .await
            .map_err(|e| format!("connecting to restart the database: {e}"))?;
        let (before,) = server_started(&mut conn)
            .await
            .map_err(|e| format!("reading the server's start time: {e}"))?;
        let (pid,): (String,) = sqlx::query_as("SELECT pg_read_file('postmaster.pid', 0, 32)")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| format!("reading the postmaster's pid (superuser needed): {e}"))?;
        let pid: u32 = pid
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("postmaster.pid starts with {pid:?}"))?;
        // SIGQUIT: immediate shutdown. The server kills this backend too,
        // so the answer is an error or nothing.
        // (bounded: an answer that never comes must not hold the wait)
        let told = Instant::now();
        let kill = format!("COPY (SELECT 1) TO PROGRAM 'kill -QUIT {pid}'");
        let _ = tokio::time::timeout(ATTEMPT_WITHIN, sqlx::query(&kill).execute(&mut conn)).await;
        drop(conn);
        let deadline = told + self.back_within;
        let mut attempts = 0u32;
        let mut seen: Vec<String> = Vec::new();
        // what the last attempt saw is said if the database is not back in
        // time; each attempt is bounded, so one that hangs (a connection to
        // an address that does not answer) cannot use up the whole wait
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let attempt = async {
                let mut c = sqlx::PgConnection::connect(&self.database_url)
                    .await
                    .map_err(|e| format!("connecting: {e}"))?;
                let (now,) = server_started(&mut c)
                    .await
                    .map_err(|e| format!("reading the start time: {e}"))?;
                Ok::<_, String>(now)
            };
            attempts += 1;
            let last = match tokio::time::timeout(ATTEMPT_WITHIN, attempt).await {
                Ok(Ok(now)) if now != before => {
                    let after = told.elapsed().as_secs_f64();
                    tracing::info!(attempts, after, "the database answers again");
                    return Ok(vec![format!(
                        "postgres (postmaster pid {pid}, started {before}; answering again {after:.1} s after, attempt {attempts})"
                    )]);
                }
                Ok(Ok(_)) => format!("the server answering still started at {before}"),
                Ok(Err(e)) => e,
                Err(_) => format!("no answer within {ATTEMPT_WITHIN:?}"),
            };
            // what the attempts see, each kind once (the wait's story in the log)
            if !seen.contains(&last) {
                tracing::info!(attempts, after = told.elapsed().as_secs_f64(), saw = %last, "the database is not back yet");
                seen.push(last.clone());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "postmaster {pid} was told to stop; the database was not back within {:?} (last attempt: {last})",
                    self.back_within
                ));
            }
        }
    }
}

/// How long one attempt to reach the restarted database may take.
const ATTEMPT_WITHIN: Duration = Duration::from_secs(5);

async fn server_started(conn: &mut sqlx::PgConnection) -> Result<(String,), sqlx::Error> {
    sqlx::query_as("SELECT pg_postmaster_start_time()::text")
        .fetch_one(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use relab_model::disruptions::DisruptionSpec;

    fn plan(name: &str, at_ms: u64, action: DisruptionAction) -> PlannedDisruption {
        let mut p = PlannedDisruption::of(
            &DisruptionSpec {
                name: name.into(),
                at_seconds: 0,
                action,
                fraction: None,
                added_ms: Some(5),
                duration_seconds: Some(1),
            },
            1.0,
        );
        p.at = Duration::from_millis(at_ms);
        p
    }

    /// Kills in 50 ms, and records what it was asked.
    struct FakeKiller(Arc<Mutex<Vec<String>>>);

    impl Disruptor for FakeKiller {
        fn fire(&self, plan: &PlannedDisruption) -> Option<futures::future::BoxFuture<'static, Fired>> {
            if !plan.action.kills() {
                return None;
            }
            self.0.lock().unwrap().push(plan.name.clone());
            let name = plan.name.clone();
            Some(Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(vec![format!("{name}: pid 1")])
            }))
        }
    }

    #[tokio::test]
    async fn each_fires_once_at_its_time_and_what_the_load_does_not_reach_stays_unfired() {
        let plans = vec![
            plan("crash", 100, DisruptionAction::KillWorkers),
            plan("restart", 150, DisruptionAction::RestartDatabase),
            plan("cut", 120, DisruptionAction::DatabaseOutage),
            plan("late", 10_000, DisruptionAction::KillOrderService),
        ];
        let log = DisruptionLog::new(&plans);
        let asked = Arc::new(Mutex::new(Vec::new()));
        let over = CancellationToken::new();
        let task = schedule(
            plans,
            log.clone(),
            Some(Carrier(Arc::new(FakeKiller(asked.clone())))),
            None,
            reqwest::Client::new(),
            Instant::now(),
            over.clone(),
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        over.cancel();
        task.await.unwrap();
        let r = log.results();
        assert_eq!(
            *asked.lock().unwrap(),
            vec!["crash".to_string()],
            "only kills reach this carrier"
        );
        // real time: at its time, over when the carrier returned (50 ms later)
        let (fired, ended) = (r[0].fired_at_seconds.unwrap(), r[0].ended_at_seconds.unwrap());
        assert!((0.1..0.3).contains(&fired), "fired at {fired}");
        assert!(ended - fired >= 0.05, "{fired} -> {ended}");
        assert_eq!(r[0].hit, vec!["crash: pid 1".to_string()]);
        assert_eq!(
            r[1].fired_at_seconds, None,
            "not this carrier's: left for an outside report"
        );
        assert_eq!(r[1].error, None);
        assert_eq!(r[2].fired_at_seconds, None);
        assert!(
            r[2].error.as_deref().unwrap().contains("no database proxy"),
            "{:?}",
            r[2]
        );
        assert_eq!(
            (r[3].fired_at_seconds, &r[3].error),
            (None, &None),
            "past the load: never fired"
        );
        assert!(r[3].inconclusive_reason().unwrap().contains("did not fire"));

        // the outside carrier reports the restart: taken once
        let taken = log
            .report(
                "restart",
                Report {
                    hit: vec!["pg".into()],
                    error: None,
                },
            )
            .unwrap();
        assert_eq!(taken.hit, vec!["pg".to_string()]);
        assert!(taken.fired_at_seconds.unwrap() >= 0.4);
        assert!(log
            .report("restart", Report::default())
            .unwrap_err()
            .contains("already"));
        assert!(log
            .report("nope", Report::default())
            .unwrap_err()
            .contains("no disruption"));
    }

    #[tokio::test]
    async fn reports_before_the_load_are_refused_and_the_metrics_show_each_disruption() {
        let plans = vec![
            plan("crash", 100, DisruptionAction::KillWorkers),
            plan("slow", 0, DisruptionAction::DatabaseLatency),
        ];
        let log = DisruptionLog::new(&plans);
        assert!(log
            .report("crash", Report::default())
            .unwrap_err()
            .contains("not started"));
        log.started(Instant::now());
        tokio::time::sleep(Duration::from_millis(200)).await;
        log.report(
            "crash",
            Report {
                hit: vec!["pod-a".into()],
                error: None,
            },
        )
        .unwrap();
        log.update("slow", |d| d.fired_at_seconds = Some(0.0));
        let text = log.render_metrics();
        for line in [
            r#"relab_disruptions_fired_total{action="KillWorkers",disruption="crash"} 1"#,
            r#"relab_disruptions_fired_total{action="DatabaseLatency",disruption="slow"} 1"#,
            r#"relab_disruption_active{action="DatabaseLatency",disruption="slow"} 1"#,
            r#"relab_disruption_active{action="KillWorkers",disruption="crash"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // the firing's wall-clock time: now, give or take the test's pace
        let stamp: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(r#"relab_disruption_fired_timestamp_seconds{action="KillWorkers",disruption="crash"} "#)
            })
            .expect("the crash's firing time")
            .parse()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - 5.0..=now + 0.01).contains(&stamp), "fired at {stamp}, now {now}");
        log.update("slow", |d| d.ended_at_seconds = Some(0.1));
        assert!(log
            .render_metrics()
            .contains(r#"relab_disruption_active{action="DatabaseLatency",disruption="slow"} 0"#));
    }
}

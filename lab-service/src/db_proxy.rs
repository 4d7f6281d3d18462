//! `lab-service db-proxy`: a TCP fault proxy between the order service and
//! its Postgres (Toxiproxy-style), for the database disruptions of a drill.
//!
//! Bytes pass unchanged. Its faults, set over HTTP (`PUT /faults` on the
//! admin address) and counted there (`GET /stats`):
//!
//! - **latency per direction**: every chunk read from one side is written to
//!   the other `toUpstreamMs` (client -> Postgres) or `toClientMs` (Postgres
//!   -> client) after it arrived, in order; the throughput is not limited;
//! - **outage**: open connections are reset (RST, both sides) and new ones
//!   are refused: accepted and reset at once, before any byte, so the client
//!   sees its connection reset and the proxy counts it (`refused`).
//!
//! Written here rather than taken from Toxiproxy: a Go binary is not in
//! Debian, and the three faults the manifest asks for are a few hundred
//! lines on tokio whose behaviour the tests pin down (`tests/lab/db_proxy.rs`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The largest added latency, per direction (the manifest's own bound).
pub const MAX_LATENCY_MS: u64 = 600_000;

/// What the proxy does to the traffic now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyFaults {
    /// Added to every chunk from the client to Postgres (queries), in ms.
    #[serde(default)]
    pub to_upstream_ms: u64,
    /// Added to every chunk from Postgres to the client (results), in ms.
    #[serde(default)]
    pub to_client_ms: u64,
    /// Reset open connections and refuse new ones.
    #[serde(default)]
    pub outage: bool,
}

impl ProxyFaults {
    /// The problem with these faults, if any (which field, what was wrong).
    pub fn check(&self) -> Result<(), String> {
        for (field, ms) in [("toUpstreamMs", self.to_upstream_ms), ("toClientMs", self.to_client_ms)] {
            if ms > MAX_LATENCY_MS {
                return Err(format!("{field}: at most {MAX_LATENCY_MS} ms, got {ms}"));
            }
        }
        Ok(())
    }
}

/// What the proxy has done, since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStats {
    /// Connections accepted and connected through to Postgres.
    pub accepted: u64,
    /// Connections open now.
    pub active: u64,
    /// Open connections reset by an outage.
    pub reset: u64,
    /// New connections refused during an outage.
    pub refused: u64,
    /// Connections whose Postgres could not be reached (reset at once).
    pub upstream_failures: u64,
    pub bytes_to_upstream: u64,
    pub bytes_to_client: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    active: AtomicU64,
    reset: AtomicU64,
    refused: AtomicU64,
    upstream_failures: AtomicU64,
    bytes_to_upstream: AtomicU64,
    bytes_to_client: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ProxyStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProxyStats {
            accepted: get(&self.accepted),
            active: get(&self.active),
            reset: get(&self.reset),
            refused: get(&self.refused),
            upstream_failures: get(&self.upstream_failures),
            bytes_to_upstream: get(&self.bytes_to_upstream),
            bytes_to_client: get(&self.bytes_to_client),
        }
    }
}

/// Where the proxy listens and what it forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbProxyConfig {
    /// Clients (the order service) connect here.
    pub listen: SocketAddr,
    /// Postgres, as `host:port` (resolved per connection).
    pub upstream: String,
    /// `GET/PUT /faults`, `GET /stats`, `GET /healthz`.
    pub admin_listen: SocketAddr,
}

impl DbProxyConfig {
    /// The `RELAB_*` variables `lab-service db-proxy` reads back into this
    /// configuration.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RELAB_DB_PROXY_LISTEN", self.listen.to_string()),
            ("RELAB_DB_PROXY_UPSTREAM", self.upstream.clone()),
            ("RELAB_DB_PROXY_ADMIN_LISTEN", self.admin_listen.to_string()),
        ]
    }
}

/// Flags of `lab-service db-proxy` (each also a `RELAB_*` variable).
#[derive(Debug, Clone, clap::Args)]
pub struct DbProxyArgs {
    /// Clients connect here.
    #[arg(long = "listen", env = "RELAB_DB_PROXY_LISTEN", default_value = "127.0.0.1:6432")]
    pub listen: SocketAddr,
    /// Postgres as host:port.
    #[arg(long = "upstream", env = "RELAB_DB_PROXY_UPSTREAM", default_value = "127.0.0.1:5432")]
    pub upstream: String,
    /// The control and stats server.
    #[arg(
        long = "admin-listen",
        env = "RELAB_DB_PROXY_ADMIN_LISTEN",
        default_value = "127.0.0.1:6433"
    )]
    pub admin_listen: SocketAddr,
}

impl DbProxyArgs {
    pub fn into_config(self) -> Result<DbProxyConfig, crate::config::ConfigError> {
        let ok = self
            .upstream
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(crate::config::ConfigError {
                field: "--upstream (RELAB_DB_PROXY_UPSTREAM)".into(),
                message: format!("must be host:port, got {:?}", self.upstream),
            });
        }
        Ok(DbProxyConfig {
            listen: self.listen,
            upstream: self.upstream,
            admin_listen: self.admin_listen,
        })
    }
}

/// A running proxy: its addresses, until `stop` is cancelled.
pub struct RunningProxy {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    faults: watch::Sender<ProxyFaults>,
    counters: Arc<Counters>,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl RunningProxy {
    /// Set the faults (what `PUT /faults` does).
    pub fn set_faults(&self, faults: ProxyFaults) {
        self.faults.send_replace(faults);
    }
    pub fn stats(&self) -> ProxyStats {
        self.counters.snapshot()
    }
}

#[derive(Clone)]
struct Shared {
    faults: watch::Sender<ProxyFaults>,
    counters: Arc<Counters>,
}

/// Bind both addresses (a port in use fails at once) and serve until `stop`.
pub async fn start(config: DbProxyConfig, stop: CancellationToken) -> std::io::Result<RunningProxy> {
    let listener = TcpListener::bind(config.listen).await?;
    let admin = TcpListener::bind(config.admin_listen).await?;
    let (listen, admin_addr) = (listener.local_addr()?, admin.local_addr()?);
    let (faults, _) = watch::channel(ProxyFaults::default());
    let counters = Arc::new(Counters::default());
    let shared = Shared {
        faults: faults.clone(),
        counters: counters.clone(),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/faults", get(get_faults).put(put_faults))
        .route("/stats", get(get_stats))
        .with_state(shared.clone());
    let admin_stop = stop.clone();
    let admin_task = tokio::spawn(async move {
        // the lab's servers' own serve: headers must arrive within its timeout
        let _ = crate::serve::serve(admin, app, admin_stop.cancelled_owned()).await;
    });
    let upstream = config.upstream.clone();
    let accept_stop = stop.clone();
    let task = tokio::spawn(async move {
        accept_loop(listener, upstream, shared, accept_stop).await;
        let _ = admin_task.await;
    });
    tracing::info!(%listen, upstream = %config.upstream, admin = %admin_addr, "db proxy listening");
    Ok(RunningProxy {
        listen,
        admin: admin_addr,
        faults,
        counters,
        stop,
        task,
    })
}

async fn get_faults(State(s): State<Shared>) -> Json<ProxyFaults> {
    Json(*s.faults.borrow())
}

async fn put_faults(
    State(s): State<Shared>,
    body: Result<Json<ProxyFaults>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ProxyFaults>, (StatusCode, String)> {
    let Json(faults) = body.map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e.body_text()))?;
    faults.check().map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e))?;
    s.faults.send_replace(faults);
    tracing::info!(?faults, "db proxy faults set");
    Ok(Json(faults))
}

async fn get_stats(State(s): State<Shared>) -> Json<ProxyStats> {
    Json(s.counters.snapshot())
}

async fn accept_loop(listener: TcpListener, upstream: String, shared: Shared, stop: CancellationToken) {
    loop {
        let (client, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // out of descriptors and the like: not the proxy's end
                    tracing::warn!(error = %e, "db proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if shared.faults.borrow().outage {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            reset(client);
            continue;
        }
        let (upstream, shared, stop) = (upstream.clone(), shared.clone(), stop.clone());
        tokio::spawn(async move { connection(client, &upstream, shared, stop).await });
    }
}

/// Close `stream` with a reset (SO_LINGER 0), not a FIN.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn connection(mut client: TcpStream, upstream: &str, shared: Shared, stop: CancellationToken) {
    let c = &shared.counters;
    let mut server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "db proxy: upstream unreachable");
            c.upstream_failures.fetch_add(1, Ordering::Relaxed);
            return reset(client);
        }
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    c.accepted.fetch_add(1, Ordering::Relaxed);
    c.active.fetch_add(1, Ordering::Relaxed);
    let mut faults = shared.faults.subscribe();
    let outage = faults.borrow_and_update().outage;
    let reset_now = if outage {
        true
    } else {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let up = pump(
            cr,
            sw,
            shared.faults.subscribe(),
            Direction::ToUpstream,
            &c.bytes_to_upstream,
        );
        let down = pump(
            sr,
            cw,
            shared.faults.subscribe(),
            Direction::ToClient,
            &c.bytes_to_client,
        );
        tokio::select! {
            _ = async { tokio::join!(up, down) } => false,
            _ = faults.wait_for(|f| f.outage) => true,
            _ = stop.cancelled() => false,
        }
    };
    c.active.fetch_sub(1, Ordering::Relaxed);
    if reset_now {
        c.reset.fetch_add(1, Ordering::Relaxed);
        reset(client);
        reset(server);
    }
}

#[derive(Clone, Copy)]
enum Direction {
    ToUpstream,
    ToClient,
}

impl Direction {
    fn delay(self, f: &ProxyFaults) -> Duration {
        Duration::from_millis(match self {
            Direction::ToUpstream => f.to_upstream_ms,
            Direction::ToClient => f.to_client_ms,
        })
    }
}

/// Copy `from` to `to`, each chunk delivered its direction's latency after
/// it arrived (in order); at `from`'s end, shut `to`'s write side.
async fn pump<R, W>(mut from: R, mut to: W, faults: watch::Receiver<ProxyFaults>, dir: Direction, bytes: &AtomicU64)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = Instant::now() + dir.delay(&faults.borrow());
                    // (a zero delay is due at once: see the writer)
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            // no added latency: no timer (tokio's rounds up to the next
            // millisecond, which cost 2.2 ms a round trip)
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

/// `lab-service db-proxy`: serve until SIGINT/SIGTERM.
pub async fn run(args: DbProxyArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let proxy = start(config, crate::shutdown::signal()).await?;
    let _ = proxy.task.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_bounded_and_named() {
        assert!(ProxyFaults::default().check().is_ok());
        let slow = ProxyFaults {
            to_client_ms: MAX_LATENCY_MS + 1,
            ..Default::default()
        };
        assert!(slow.check().unwrap_err().starts_with("toClientMs"));
        let parsed: ProxyFaults = serde_json::from_str(r#"{"toUpstreamMs": 200, "outage": true}"#).unwrap();
        assert_eq!(
            (parsed.to_upstream_ms, parsed.to_client_ms, parsed.outage),
            (200, 0, true)
        );
        assert!(
            serde_json::from_str::<ProxyFaults>(r#"{"latency": 1}"#).is_err(),
            "unknown fields refused"
        );
    }
}

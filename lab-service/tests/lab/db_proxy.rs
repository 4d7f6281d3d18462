//! The database fault proxy (`lab-service db-proxy`) on loopback: bytes pass
//! unchanged (to an echo server and to the real Postgres), latency is added
//! per direction within 10 %, an outage resets open connections and refuses
//! new ones (and is counted), and the proxy survives 1,000 connections
//! opened and dropped.

use lab_service::db_proxy::{self, DbProxyConfig, ProxyStats, RunningProxy};
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A TCP echo server on loopback (until the test ends).
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn proxy_to(upstream: String) -> RunningProxy {
    let config = DbProxyConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream,
        admin_listen: "127.0.0.1:0".parse().unwrap(),
    };
    db_proxy::start(config, CancellationToken::new()).await.unwrap()
}

async fn stats(proxy: &RunningProxy) -> ProxyStats {
    reqwest::get(format!("http://{}/stats", proxy.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn put_faults(proxy: &RunningProxy, body: serde_json::Value) -> reqwest::StatusCode {
    reqwest::Client::new()
        .put(format!("http://{}/faults", proxy.admin))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

/// One byte there and back through `s`, timed.
async fn round_trip(s: &mut TcpStream) -> Duration {
    let t = Instant::now();
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    t.elapsed()
}

#[tokio::test]
async fn bytes_pass_unchanged_both_ways() {
    let proxy = proxy_to(echo().await.to_string()).await;
    let mut data = vec![0u8; 1 << 20];
    rand::rngs::StdRng::seed_from_u64(7).fill(&mut data[..]);
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let recv = async { r.read_to_end(&mut back).await.unwrap() };
    tokio::join!(send, recv);
    assert!(back == data, "1 MiB came back changed ({} bytes)", back.len());
    let st = stats(&proxy).await;
    assert_eq!((st.bytes_to_upstream, st.bytes_to_client), (1 << 20, 1 << 20));
    assert_eq!(st.accepted, 1);
}

#[tokio::test]
async fn postgres_answers_through_it() {
    let url = crate::harness::admin_url();
    let mut through = reqwest::Url::parse(&url).expect("the test database URL parses");
    let upstream = format!(
        "{}:{}",
        through.host_str().expect("a host in the test database URL"),
        through.port().unwrap_or(5432)
    );
    let proxy = proxy_to(upstream).await;
    through.set_host(Some("127.0.0.1")).unwrap();
    through.set_port(Some(proxy.listen.port())).unwrap();
    let through = through.to_string();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&through)
        .await
        .unwrap_or_else(|e| panic!("connect through the proxy ({through}): {e}"));
    let (text,): (String,) = sqlx::query_as("SELECT repeat('relab', 20000)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(text, "relab".repeat(20_000));
    assert!(stats(&proxy).await.bytes_to_client >= 100_000);
}

#[tokio::test]
async fn latency_is_added_per_direction_within_ten_percent() {
    let proxy = proxy_to(echo().await.to_string()).await;
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    let base: Vec<Duration> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(round_trip(&mut s).await);
        }
        v
    };
    let base = base.iter().min().copied().unwrap();
    for (body, added) in [
        (serde_json::json!({"toUpstreamMs": 60}), 60),
        (serde_json::json!({"toClientMs": 40}), 40),
        (serde_json::json!({"toUpstreamMs": 50, "toClientMs": 50}), 100),
    ] {
        assert_eq!(put_faults(&proxy, body.clone()).await, 200);
        let mut times = Vec::new();
        for _ in 0..7 {
            times.push(round_trip(&mut s).await);
        }
        times.sort();
        let median = times[times.len() / 2].saturating_sub(base).as_secs_f64() * 1000.0;
        let want = added as f64;
        assert!(
            (want * 0.9..=want * 1.1).contains(&median),
            "{body}: {median:.1} ms added, {want} ms asked"
        );
    }
    let bad = put_faults(&proxy, serde_json::json!({"toClientMs": 600_001})).await;
    assert_eq!(bad, 422, "the bound holds");
}

#[tokio::test]
async fn an_outage_resets_open_connections_refuses_new_ones_and_counts_both() {
    let proxy = proxy_to(echo().await.to_string()).await;
    let mut open = TcpStream::connect(proxy.listen).await.unwrap();
    round_trip(&mut open).await;
    assert_eq!(put_faults(&proxy, serde_json::json!({"outage": true})).await, 200);
    // the open one is reset
    let mut b = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), open.read(&mut b))
        .await
        .expect("the reset arrives");
    match read {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("read {n} bytes from a connection the outage should have reset"),
    }
    // a new one gets nothing through
    let mut new = TcpStream::connect(proxy.listen).await.unwrap();
    let _ = new.write_all(b"x").await;
    let read = tokio::time::timeout(Duration::from_secs(5), new.read(&mut b))
        .await
        .unwrap();
    assert!(
        matches!(read, Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset) || matches!(read, Ok(0)),
        "{read:?}"
    );
    let st = stats(&proxy).await;
    assert_eq!((st.reset, st.refused), (1, 1), "{st:?}");
    // over: connections work again
    assert_eq!(put_faults(&proxy, serde_json::json!({"outage": false})).await, 200);
    let mut again = TcpStream::connect(proxy.listen).await.unwrap();
    round_trip(&mut again).await;
}

#[tokio::test]
async fn it_survives_a_thousand_connections_opened_and_dropped() {
    let proxy = proxy_to(echo().await.to_string()).await;
    for i in 0..1_000u32 {
        let mut s = TcpStream::connect(proxy.listen).await.unwrap();
        match i % 3 {
            0 => drop(s),
            1 => {
                let _ = s.write_all(b"half a message").await;
                drop(s)
            }
            _ => {
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                let _ = s.write_all(b"reset").await;
                drop(s)
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = stats(&proxy).await;
        if st.active == 0 && st.accepted == 1_000 {
            break;
        }
        assert!(Instant::now() < deadline, "connections left open: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    round_trip(&mut s).await;
}

#[tokio::test]
async fn an_unreachable_postgres_is_counted_and_the_client_reset() {
    // a port nothing listens on
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let proxy = proxy_to(closed.to_string()).await;
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    let mut b = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats(&proxy).await.upstream_failures != 1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! The sampler reads the lab pod by pod from a list the operator posts to
//! the load generator's progress server (`POST /metrics-targets`): the
//! endpoints are summed, a restarted process's counters are increases, a
//! process taken off the list keeps what it had counted.

use axum::routing::get;
use lab_service::run::cli::{serve_progress, LoadgenArgs};
use lab_service::run::sampler::Sampler;
use lab_service::run::RunProgress;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// A process serving `relab_payment_calls_total` at the value it is set to.
async fn process() -> (String, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let served = calls.clone();
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let n = served.load(Ordering::SeqCst);
            async move { format!("# TYPE relab_payment_calls_total counter\nrelab_payment_calls_total {n}\n") }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, calls)
}

#[tokio::test]
async fn posted_endpoints_are_summed_across_restarts_and_removals_and_echoed() {
    let (a, a_calls) = process().await;
    let (b, b_calls) = process().await;
    // a load generator told to take its endpoints from the operator
    #[derive(clap::Parser)]
    struct L {
        #[command(flatten)]
        args: LoadgenArgs,
    }
    let run = <L as clap::Parser>::try_parse_from([
        "l",
        "--database-url=postgres://postgres@127.0.0.1:1/unused",
        "--rate=1",
        "--duration-secs=1",
        "--metrics-url=http://127.0.0.1:9/metrics",
        "--metrics-pushed=true",
    ])
    .unwrap()
    .args
    .into_run()
    .unwrap();
    let targets = run.metrics.clone();
    assert!(targets.is_pushed());
    let (_progress, watcher) = watch::channel(RunProgress::default());
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    // the progress server on a port of its own: find one, then serve there
    let port = std::net::TcpListener::bind(listen)
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (server, _) = serve_progress(addr, watcher, &run).await.unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://postgres@127.0.0.1:1/unused")
        .unwrap();
    let sampler = Sampler::new(pool, http.clone(), targets.clone());

    // nothing posted: nothing read (not the Service's one pod)
    a_calls.store(5, Ordering::SeqCst);
    let (counters, errors) = sampler.scrape_all().await;
    assert_eq!((counters.payment_calls, errors.len()), (0.0, 0));

    // both posted, and echoed by GET /progress
    let posted = http
        .post(format!("{base}/metrics-targets"))
        .json(&json!({"metrics": [a, b]}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 204);
    let progress: RunProgress = http
        .get(format!("{base}/progress"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(progress.metrics_targets, Some(vec![a.clone(), b.clone()]));
    b_calls.store(7, Ordering::SeqCst);
    assert_eq!(sampler.scrape_all().await.0.payment_calls, 12.0);

    // b restarts (its counter starts again) and counts 3: 5 + 7 + 3
    b_calls.store(3, Ordering::SeqCst);
    assert_eq!(sampler.scrape_all().await.0.payment_calls, 15.0);

    // b is killed and taken off the list; a new pod c appears with 4
    let (c, c_calls) = process().await;
    c_calls.store(4, Ordering::SeqCst);
    a_calls.store(6, Ordering::SeqCst);
    http.post(format!("{base}/metrics-targets"))
        .json(&json!({"metrics": [a, c]}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    assert_eq!(
        sampler.scrape_all().await.0.payment_calls,
        6.0 + 10.0 + 4.0,
        "b keeps its 10"
    );

    // a listed pod that does not answer is an error, and the rest still counts
    http.post(format!("{base}/metrics-targets"))
        .json(&json!({"metrics": [a, c, "http://127.0.0.1:9/metrics"]}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let (counters, errors) = sampler.scrape_all().await;
    assert_eq!(counters.payment_calls, 20.0);
    assert_eq!(errors.len(), 1, "{errors:?}");

    // a bad list is refused with the reason, and changes nothing
    let refused = http
        .post(format!("{base}/metrics-targets"))
        .json(&json!({"metrics": ["not-a-url"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    assert!(refused.text().await.unwrap().contains("not-a-url"));
    assert_eq!(targets.current().len(), 3);
    server.abort();
}

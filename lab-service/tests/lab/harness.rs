//! One helper for every integration test: a fresh database per test, and the
//! lab (payment mock, order API, workers) started in-process on port 0.

use lab_service::audit::{self, AuditReport, LedgerCharge};
use lab_service::config::{ApiConfig, WorkerConfig};
use lab_service::lab::{Lab, LabPlan, MetricsLayout, RunningLab};
use lab_service::metrics::LabMetrics;
use lab_service::orders::Order;
use lab_service::payment_mock::FaultPlan;
use lab_service::resilience::{BackoffConfig, BreakerConfig, BreakerMode};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Server that tests create their databases on (`scripts/setup.sh` provides it).
pub fn admin_url() -> String {
    std::env::var("RELAB_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test, dropped afterwards.
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
    name: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let admin = admin_url();
        let name = format!("relab_t_{}", Uuid::new_v4().simple());
        let url = lab_service::db::create_database(&admin, &name)
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database on {admin} ({e}); run scripts/setup.sh"));
        let pool = lab_service::db::connect_and_migrate(&url, 12)
            .await
            .expect("migrate test database");
        Self { url, pool, name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // a fresh runtime on a plain thread: Drop cannot await
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let _ = lab_service::db::drop_database(&admin_url(), &name).await;
            });
        })
        .join();
    }
}

/// Worker settings for tests: fast backoff, short lease, quick polling.
pub fn fast_worker() -> WorkerConfig {
    WorkerConfig {
        concurrency: 4,
        payment_timeout: Duration::from_millis(500),
        retry_max_attempts: 3,
        backoff: BackoffConfig {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(40),
            multiplier: 2.0,
            jitter: 0.5,
        },
        breaker: BreakerConfig {
            mode: BreakerMode::Disabled,
            ..BreakerConfig::default()
        },
        lease: Duration::from_secs(5),
        poll_interval: Duration::from_millis(100),
        shutdown_deadline: Duration::from_secs(5),
        ..WorkerConfig::default()
    }
}

pub fn api_config() -> ApiConfig {
    ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ApiConfig::default()
    }
}

/// A fault plan from its JSON form (camelCase, as `PUT /faults` takes it).
pub fn plan(v: Value) -> FaultPlan {
    serde_json::from_value(v).expect("valid fault plan JSON")
}

pub struct LabOptions {
    pub api: ApiConfig,
    /// `None`: no in-process workers (a test brings its own).
    pub worker: Option<WorkerConfig>,
    pub faults: FaultPlan,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            api: api_config(),
            worker: Some(fast_worker()),
            faults: FaultPlan::default(),
        }
    }
}

pub struct TestLab {
    pub db: TestDb,
    pub api_url: String,
    pub mock_url: String,
    pub http: reqwest::Client,
    pub metrics: LabMetrics,
    lab: RunningLab,
}

impl TestLab {
    pub async fn start(opts: LabOptions) -> Self {
        let db = TestDb::new().await;
        let lab = Lab::start(LabPlan {
            pool: db.pool.clone(),
            replicas: 1,
            api: opts.api,
            worker: opts.worker,
            worker_replicas: None,
            pools: None,
            mock_listen: "127.0.0.1:0".parse().unwrap(),
            faults: opts.faults,
            // journaled, as every real lab's: the tests exercise the fsync path
            ledger_file: Some(lab_service::lab::default_ledger_file(&db.url)),
            metrics: MetricsLayout::Shared,
        })
        .await
        .expect("lab");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Self {
            api_url: lab.api_url().to_string(),
            mock_url: lab.payment_url.clone(),
            metrics: lab.metrics[0].clone(),
            db,
            http,
            lab,
        }
    }

    /// A lab with these workers, payment faults (`PUT /faults` JSON) and job-attempt budget.
    pub async fn with_faults(worker: WorkerConfig, faults: Value, max_job_attempts: i32) -> Self {
        let mut opts = LabOptions {
            worker: Some(worker),
            faults: plan(faults),
            ..LabOptions::default()
        };
        opts.api.max_job_attempts = max_job_attempts;
        Self::start(opts).await
    }

    /// Start (more) in-process workers against this lab's database and mock.
    pub async fn spawn_workers(&mut self, config: WorkerConfig) {
        let metrics = self.metrics.clone();
        self.lab.start_workers(config, &metrics).await.expect("workers");
    }

    pub async fn post_order(&self, key: &str, amount_cents: i64) -> reqwest::Response {
        self.http
            .post(format!("{}/orders", self.api_url))
            .header("idempotency-key", key)
            .json(&json!({"customerId": "c-1", "amountCents": amount_cents, "currency": "EUR"}))
            .send()
            .await
            .expect("POST /orders")
    }

    /// Create an order and return it (asserts 201).
    pub async fn create_order(&self, amount_cents: i64) -> Order {
        let resp = self.post_order(&Uuid::new_v4().to_string(), amount_cents).await;
        assert_eq!(
            resp.status(),
            201,
            "create order: {}",
            resp.text().await.unwrap_or_default()
        );
        resp.json().await.expect("order JSON")
    }

    pub async fn get_order(&self, id: Uuid) -> Order {
        self.http
            .get(format!("{}/orders/{id}", self.api_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .expect("order JSON")
    }

    /// Poll until the order reaches `status` (panics after `timeout`).
    pub async fn wait_for_status(&self, id: Uuid, status: &str, timeout: Duration) -> Order {
        let started = Instant::now();
        loop {
            let o = self.get_order(id).await;
            if o.status == status {
                return o;
            }
            assert!(
                started.elapsed() < timeout,
                "order {id} still {} after {timeout:?}, wanted {status}",
                o.status
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET {api}{path}`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.api_url))
            .send()
            .await
            .expect("GET")
    }

    /// `GET {api}{path}` as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.expect("JSON body")
    }

    /// `POST {api}{path}` without a body.
    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.api_url))
            .send()
            .await
            .expect("POST")
    }

    pub async fn set_faults(&self, faults: Value) {
        let resp = self
            .http
            .put(format!("{}/faults", self.mock_url))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "PUT /faults: {}",
            resp.text().await.unwrap_or_default()
        );
    }

    pub async fn ledger(&self) -> Vec<LedgerCharge> {
        audit::fetch_ledger(&self.http, &self.mock_url).await.expect("ledger")
    }

    pub async fn mock_stats(&self) -> Value {
        get_json_at(&self.http, &format!("{}/stats", self.mock_url)).await
    }

    pub async fn audit(&self, accepted: Option<&[Uuid]>) -> AuditReport {
        let ledger = self.ledger().await;
        audit::audit(&self.db.pool, &ledger, accepted).await.expect("audit")
    }

    /// Current value of a counter or gauge with these label values.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics.registry, name, labels)
    }

    pub async fn stop(self) {
        self.lab.shutdown().await.expect("servers stopped cleanly");
        let _ = std::fs::remove_file(lab_service::lab::default_ledger_file(&self.db.url));
    }
}

pub fn metric_value(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for fam in registry.gather().iter().filter(|f| f.name() == name) {
        for m in fam.get_metric() {
            let matches = labels
                .iter()
                .all(|(k, v)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v));
            if matches {
                total += match fam.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                    prometheus::proto::MetricType::GAUGE => m.get_gauge().get_value(),
                    _ => m.get_histogram().get_sample_count() as f64,
                };
            }
        }
    }
    total
}

/// Poll `cond` until true or panic after `timeout` with `what`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !cond().await {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Path of the built `lab-service` binary.
/// `GET url` as JSON (for servers other than a [`TestLab`]'s API).
pub async fn get_json_at(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON body")
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lab-service")
}

/// Serve `router` on a loopback port until the returned token is
/// cancelled (gracefully); its base URL (`http://127.0.0.1:<port>`).
pub async fn serve_until_cancelled(router: axum::Router) -> (String, tokio_util::sync::CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stopped.cancelled_owned())
            .await
    });
    (url, stop)
}

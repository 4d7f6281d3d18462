//! Typed configuration: defaults, then `RELAB_*` environment variables, then
//! flags (clap), then semantic validation that names the offending setting.
//!
//! The library types ([`ApiConfig`], [`WorkerConfig`]) are what tests and the
//! local runner build directly; the `*Args` types are their command-line form.

use crate::resilience::{BackoffConfig, BreakerConfig, BreakerMode};
use std::net::SocketAddr;
use std::time::Duration;

pub use crate::error::ConfigError;

fn problem(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// A fault plan checked as configuration: the first problem, its field under `faults:`.
pub fn check_fault_plan(plan: &crate::payment_mock::FaultPlan) -> Result<(), ConfigError> {
    plan.validate().map_err(|problems| {
        let e = problems
            .into_iter()
            .next()
            .expect("validate reports at least one problem");
        problem(&format!("faults: {}", e.path), e.message)
    })
}

/// The order API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Shed new orders (503 + Retry-After) while queued + running jobs exceed this.
    pub max_queue_depth: i64,
    pub shed_retry_after_secs: u64,
    pub max_body_bytes: usize,
    /// Stored on each new job: payment retry loops allowed before dead-lettering.
    pub max_job_attempts: i32,
    /// After SIGTERM, keep serving this long while `/readyz` says 503, so load
    /// balancers stop routing here before the listener closes.
    pub drain_delay: Duration,
    /// How long in-flight requests get after the drain delay.
    pub shutdown_timeout: Duration,
    /// A request body must have arrived whole within this (else 408 and the
    /// connection is closed): a stalled or trickling body cannot hold a
    /// connection and its task.
    pub body_read_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("static addr"),
            max_queue_depth: 10_000,
            shed_retry_after_secs: 1,
            max_body_bytes: 16 * 1024,
            max_job_attempts: 5,
            drain_delay: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
        }
    }
}

impl ApiConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_queue_depth < 1 {
            return Err(problem(
                "--max-queue-depth (RELAB_MAX_QUEUE_DEPTH)",
                "must be at least 1",
            ));
        }
        if self.max_job_attempts < 1 {
            return Err(problem(
                "--max-job-attempts (RELAB_MAX_JOB_ATTEMPTS)",
                "must be at least 1",
            ));
        }
        if self.body_read_timeout.is_zero() {
            return Err(problem(
                "--body-read-timeout-ms (RELAB_BODY_READ_TIMEOUT_MS)",
                "must be above 0",
            ));
        }
        if self.max_body_bytes < 256 {
            return Err(problem(
                "--max-body-bytes (RELAB_MAX_BODY_BYTES)",
                "must be at least 256",
            ));
        }
        Ok(())
    }
}

/// The payment workers of one process.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Identifies this process in leases (`lease_owner`).
    pub worker_id: String,
    /// Concurrent job loops.
    pub concurrency: usize,
    pub payment_url: String,
    /// Per-call deadline.
    pub payment_timeout: Duration,
    /// Calls per retry loop, the first included.
    pub retry_max_attempts: u32,
    pub backoff: BackoffConfig,
    pub breaker: BreakerConfig,
    pub bulkhead_max_concurrent: usize,
    pub bulkhead_max_wait: Duration,
    /// A claimed job is this worker's until the lease expires; renewed while it works.
    pub lease: Duration,
    /// Fallback polling when no NOTIFY arrives.
    pub poll_interval: Duration,
    /// After SIGTERM: how long in-flight jobs may take before their leases are released.
    pub shutdown_deadline: Duration,
    /// Send `Idempotency-Key: <order id>` on charges (turn off only to demonstrate double charges).
    pub send_idempotency_key: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: default_worker_id(),
            concurrency: 8,
            payment_url: "http://127.0.0.1:8081".to_string(),
            payment_timeout: Duration::from_millis(1_000),
            retry_max_attempts: 4,
            backoff: BackoffConfig::default(),
            breaker: BreakerConfig::default(),
            bulkhead_max_concurrent: 16,
            bulkhead_max_wait: Duration::from_millis(500),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            shutdown_deadline: Duration::from_secs(10),
            send_idempotency_key: true,
        }
    }
}

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

impl ApiConfig {
    /// The `RELAB_*` variables that `lab-service api` reads back into this
    /// configuration.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RELAB_API_LISTEN", self.listen.to_string()),
            ("RELAB_MAX_QUEUE_DEPTH", self.max_queue_depth.to_string()),
            ("RELAB_SHED_RETRY_AFTER_SECS", self.shed_retry_after_secs.to_string()),
            ("RELAB_MAX_BODY_BYTES", self.max_body_bytes.to_string()),
            ("RELAB_MAX_JOB_ATTEMPTS", self.max_job_attempts.to_string()),
            ("RELAB_API_DRAIN_DELAY_MS", ms(self.drain_delay)),
            ("RELAB_API_SHUTDOWN_TIMEOUT_MS", ms(self.shutdown_timeout)),
            ("RELAB_BODY_READ_TIMEOUT_MS", ms(self.body_read_timeout)),
        ]
    }
}

impl WorkerConfig {
    /// The `RELAB_*` variables that `lab-service worker` reads back into this
    /// configuration (all but the worker id, which is per process).
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let (mode, threshold, ratio, min_calls, window) = match self.breaker.mode {
            BreakerMode::Disabled => ("disabled", 5, 0.5, 20, Duration::from_secs(10)),
            BreakerMode::ConsecutiveFailures { threshold } => {
                ("consecutive-failures", threshold, 0.5, 20, Duration::from_secs(10))
            }
            BreakerMode::FailureRatio {
                ratio,
                min_calls,
                window,
            } => ("failure-ratio", 5, ratio, min_calls, window),
        };
        vec![
            ("RELAB_WORKER_CONCURRENCY", self.concurrency.to_string()),
            ("RELAB_PAYMENT_URL", self.payment_url.clone()),
            ("RELAB_PAYMENT_TIMEOUT_MS", ms(self.payment_timeout)),
            ("RELAB_RETRY_MAX_ATTEMPTS", self.retry_max_attempts.to_string()),
            ("RELAB_RETRY_INITIAL_BACKOFF_MS", ms(self.backoff.initial)),
            ("RELAB_RETRY_MAX_BACKOFF_MS", ms(self.backoff.max)),
            ("RELAB_RETRY_MULTIPLIER", self.backoff.multiplier.to_string()),
            ("RELAB_RETRY_JITTER", self.backoff.jitter.to_string()),
            ("RELAB_BREAKER_MODE", mode.to_string()),
            ("RELAB_BREAKER_FAILURE_THRESHOLD", threshold.to_string()),
            ("RELAB_BREAKER_FAILURE_RATIO", ratio.to_string()),
            ("RELAB_BREAKER_MINIMUM_CALLS", min_calls.to_string()),
            ("RELAB_BREAKER_WINDOW_MS", ms(window)),
            ("RELAB_BREAKER_OPEN_TIMEOUT_MS", ms(self.breaker.open_timeout)),
            (
                "RELAB_BREAKER_HALF_OPEN_PROBES",
                self.breaker.half_open_probes.to_string(),
            ),
            (
                "RELAB_BULKHEAD_MAX_CONCURRENT",
                self.bulkhead_max_concurrent.to_string(),
            ),
            ("RELAB_BULKHEAD_MAX_WAIT_MS", ms(self.bulkhead_max_wait)),
            ("RELAB_LEASE_MS", ms(self.lease)),
            ("RELAB_POLL_INTERVAL_MS", ms(self.poll_interval)),
            ("RELAB_WORKER_SHUTDOWN_DEADLINE_MS", ms(self.shutdown_deadline)),
            ("RELAB_SEND_IDEMPOTENCY_KEY", self.send_idempotency_key.to_string()),
        ]
    }
}

/// `hostname-pid-random`, unique per process.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

impl WorkerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.concurrency == 0 {
            return Err(problem(
                "--concurrency (RELAB_WORKER_CONCURRENCY)",
                "must be at least 1",
            ));
        }
        if !(self.payment_url.starts_with("http://") || self.payment_url.starts_with("https://")) {
            return Err(problem(
                "--payment-url (RELAB_PAYMENT_URL)",
                format!("must be an http:// or https:// URL, got {:?}", self.payment_url),
            ));
        }
        if self.payment_timeout.is_zero() {
            return Err(problem(
                "--payment-timeout-ms (RELAB_PAYMENT_TIMEOUT_MS)",
                "must be greater than zero",
            ));
        }
        if self.retry_max_attempts == 0 {
            return Err(problem(
                "--retry-max-attempts (RELAB_RETRY_MAX_ATTEMPTS)",
                "must be at least 1 (it counts the first call)",
            ));
        }
        if let Some((f, m)) = self.backoff.validate().into_iter().next() {
            let flag = match f {
                "initial" => "--retry-initial-backoff-ms (RELAB_RETRY_INITIAL_BACKOFF_MS)",
                "max" => "--retry-max-backoff-ms (RELAB_RETRY_MAX_BACKOFF_MS)",
                "multiplier" => "--retry-multiplier (RELAB_RETRY_MULTIPLIER)",
                _ => "--retry-jitter (RELAB_RETRY_JITTER)",
            };
            return Err(problem(flag, m));
        }
        if let Some((f, m)) = self.breaker.validate().into_iter().next() {
            let flag = match f {
                "failureThreshold" => "--breaker-failure-threshold (RELAB_BREAKER_FAILURE_THRESHOLD)",
                "failureRatio" => "--breaker-failure-ratio (RELAB_BREAKER_FAILURE_RATIO)",
                "minimumCalls" => "--breaker-minimum-calls (RELAB_BREAKER_MINIMUM_CALLS)",
                "window" => "--breaker-window-ms (RELAB_BREAKER_WINDOW_MS)",
                "openTimeout" => "--breaker-open-timeout-ms (RELAB_BREAKER_OPEN_TIMEOUT_MS)",
                _ => "--breaker-half-open-probes (RELAB_BREAKER_HALF_OPEN_PROBES)",
            };
            return Err(problem(flag, m));
        }
        if self.bulkhead_max_concurrent == 0 {
            return Err(problem(
                "--bulkhead-max-concurrent (RELAB_BULKHEAD_MAX_CONCURRENT)",
                "must be at least 1",
            ));
        }
        if self.lease < Duration::from_millis(200) {
            return Err(problem("--lease-ms (RELAB_LEASE_MS)", "must be at least 200 ms"));
        }
        if self.poll_interval.is_zero() {
            return Err(problem(
                "--poll-interval-ms (RELAB_POLL_INTERVAL_MS)",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// `--breaker-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BreakerModeArg {
    Disabled,
    ConsecutiveFailures,
    FailureRatio,
}

/// Command-line form of [`ApiConfig`].
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Address the order API listens on (port 0 picks a free port).
    #[arg(long = "listen", env = "RELAB_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Shed new orders with 503 + Retry-After past this many queued/running jobs.
    #[arg(long, env = "RELAB_MAX_QUEUE_DEPTH", default_value_t = 10_000)]
    pub max_queue_depth: i64,
    /// Retry-After (seconds) on shed requests.
    #[arg(long, env = "RELAB_SHED_RETRY_AFTER_SECS", default_value_t = 1)]
    pub shed_retry_after_secs: u64,
    /// Largest accepted request body.
    #[arg(long, env = "RELAB_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,
    /// Retry loops a job may spend before it is dead-lettered.
    #[arg(long, env = "RELAB_MAX_JOB_ATTEMPTS", default_value_t = 5)]
    pub max_job_attempts: i32,
    /// After SIGTERM: serve (not ready) this long before closing the listener.
    #[arg(long = "api-drain-delay-ms", env = "RELAB_API_DRAIN_DELAY_MS", default_value_t = 0)]
    pub drain_delay_ms: u64,
    /// Grace period for in-flight requests after SIGTERM.
    #[arg(
        long = "api-shutdown-timeout-ms",
        env = "RELAB_API_SHUTDOWN_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub shutdown_timeout_ms: u64,
    /// A request body must arrive whole within this; else 408, connection closed.
    #[arg(long, env = "RELAB_BODY_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_read_timeout_ms: u64,
}

impl ApiArgs {
    pub fn into_config(self) -> Result<ApiConfig, ConfigError> {
        let c = ApiConfig {
            listen: self.listen,
            max_queue_depth: self.max_queue_depth,
            shed_retry_after_secs: self.shed_retry_after_secs,
            max_body_bytes: self.max_body_bytes,
            max_job_attempts: self.max_job_attempts,
            drain_delay: Duration::from_millis(self.drain_delay_ms),
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
        };
        c.validate()?;
        Ok(c)
    }
}

/// Command-line form of [`WorkerConfig`].
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Lease owner name (default: hostname-pid-random).
    #[arg(long, env = "RELAB_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Concurrent job loops in this process.
    #[arg(long, env = "RELAB_WORKER_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Base URL of the payment service.
    #[arg(long, env = "RELAB_PAYMENT_URL", default_value = "http://127.0.0.1:8081")]
    pub payment_url: String,
    /// Per-call deadline for a charge.
    #[arg(long, env = "RELAB_PAYMENT_TIMEOUT_MS", default_value_t = 1_000)]
    pub payment_timeout_ms: u64,
    /// Calls per retry loop, the first included (4 = 1 call + 3 retries).
    #[arg(long, env = "RELAB_RETRY_MAX_ATTEMPTS", default_value_t = 4)]
    pub retry_max_attempts: u32,
    #[arg(long, env = "RELAB_RETRY_INITIAL_BACKOFF_MS", default_value_t = 50)]
    pub retry_initial_backoff_ms: u64,
    #[arg(long, env = "RELAB_RETRY_MAX_BACKOFF_MS", default_value_t = 2_000)]
    pub retry_max_backoff_ms: u64,
    #[arg(long, env = "RELAB_RETRY_MULTIPLIER", default_value_t = 2.0)]
    pub retry_multiplier: f64,
    /// Share of each backoff taken off at random (0 = none, 1 = full jitter).
    #[arg(long, env = "RELAB_RETRY_JITTER", default_value_t = 0.5)]
    pub retry_jitter: f64,
    #[arg(long, value_enum, env = "RELAB_BREAKER_MODE", default_value = "consecutive-failures")]
    pub breaker_mode: BreakerModeArg,
    #[arg(long, env = "RELAB_BREAKER_FAILURE_THRESHOLD", default_value_t = 5)]
    pub breaker_failure_threshold: u32,
    #[arg(long, env = "RELAB_BREAKER_FAILURE_RATIO", default_value_t = 0.5)]
    pub breaker_failure_ratio: f64,
    #[arg(long, env = "RELAB_BREAKER_MINIMUM_CALLS", default_value_t = 20)]
    pub breaker_minimum_calls: u32,
    #[arg(long, env = "RELAB_BREAKER_WINDOW_MS", default_value_t = 10_000)]
    pub breaker_window_ms: u64,
    #[arg(long, env = "RELAB_BREAKER_OPEN_TIMEOUT_MS", default_value_t = 2_000)]
    pub breaker_open_timeout_ms: u64,
    #[arg(long, env = "RELAB_BREAKER_HALF_OPEN_PROBES", default_value_t = 3)]
    pub breaker_half_open_probes: u32,
    #[arg(long, env = "RELAB_BULKHEAD_MAX_CONCURRENT", default_value_t = 16)]
    pub bulkhead_max_concurrent: usize,
    #[arg(long, env = "RELAB_BULKHEAD_MAX_WAIT_MS", default_value_t = 500)]
    pub bulkhead_max_wait_ms: u64,
    #[arg(long, env = "RELAB_LEASE_MS", default_value_t = 30_000)]
    pub lease_ms: u64,
    #[arg(long, env = "RELAB_POLL_INTERVAL_MS", default_value_t = 500)]
    pub poll_interval_ms: u64,
    #[arg(
        long = "worker-shutdown-deadline-ms",
        env = "RELAB_WORKER_SHUTDOWN_DEADLINE_MS",
        default_value_t = 10_000
    )]
    pub shutdown_deadline_ms: u64,
    /// Send Idempotency-Key on charges (false only to demonstrate double charges).
    #[arg(long, env = "RELAB_SEND_IDEMPOTENCY_KEY", default_value_t = true, action = clap::ArgAction::Set)]
    pub send_idempotency_key: bool,
}

impl WorkerArgs {
    pub fn into_config(self) -> Result<WorkerConfig, ConfigError> {
        let window = Duration::from_millis(self.breaker_window_ms);
        let mode = match self.breaker_mode {
            BreakerModeArg::Disabled => BreakerMode::Disabled,
            BreakerModeArg::ConsecutiveFailures => BreakerMode::ConsecutiveFailures {
                threshold: self.breaker_failure_threshold,
            },
            BreakerModeArg::FailureRatio => BreakerMode::FailureRatio {
                ratio: self.breaker_failure_ratio,
                min_calls: self.breaker_minimum_calls,
                window,
            },
        };
        let c = WorkerConfig {
            worker_id: self.worker_id.unwrap_or_else(default_worker_id),
            concurrency: self.concurrency,
            payment_url: self.payment_url.trim_end_matches('/').to_string(),
            payment_timeout: Duration::from_millis(self.payment_timeout_ms),
            retry_max_attempts: self.retry_max_attempts,
            backoff: BackoffConfig {
                initial: Duration::from_millis(self.retry_initial_backoff_ms),
                max: Duration::from_millis(self.retry_max_backoff_ms),
                multiplier: self.retry_multiplier,
                jitter: self.retry_jitter,
            },
            breaker: BreakerConfig {
                mode,
                open_timeout: Duration::from_millis(self.breaker_open_timeout_ms),
                half_open_probes: self.breaker_half_open_probes,
            },
            bulkhead_max_concurrent: self.bulkhead_max_concurrent,
            bulkhead_max_wait: Duration::from_millis(self.bulkhead_max_wait_ms),
            lease: Duration::from_millis(self.lease_ms),
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            shutdown_deadline: Duration::from_millis(self.shutdown_deadline_ms),
            send_idempotency_key: self.send_idempotency_key,
        };
        c.validate()?;
        Ok(c)
    }
}

/// The variable that holds the lab database's URL (a Secret's key may
/// provide it instead of the shared environment).
pub const DATABASE_URL_ENV: &str = "RELAB_DATABASE_URL";

/// Database connection settings.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct DatabaseArgs {
    /// postgres:// URL of the lab database (migrations run at start-up).
    #[arg(long, env = DATABASE_URL_ENV)]
    pub database_url: String,
    #[arg(long, env = "RELAB_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// Keep retrying the first connection this long (a pod may start before its database).
    #[arg(long, env = "RELAB_DATABASE_CONNECT_TIMEOUT_SECS", default_value_t = 0)]
    pub database_connect_timeout_secs: u64,
}

impl DatabaseArgs {
    /// The `RELAB_*` variables these settings are read back from, but the
    /// URL (which may come from a Secret: [`DATABASE_URL_ENV`]).
    pub fn to_env_without_url(&self) -> Vec<(&'static str, String)> {
        let mut env = Self::pool_env(self.database_max_connections);
        env.extend(self.to_env_without_url_and_pool());
        env
    }

    /// A pool of `max_connections` alone: the setting that differs between
    /// the processes of one lab (an API's pool and a worker's).
    pub fn pool_env(max_connections: u32) -> Vec<(&'static str, String)> {
        vec![("RELAB_DATABASE_MAX_CONNECTIONS", max_connections.to_string())]
    }

    /// What the processes of one lab share: neither the URL nor the pool's size.
    pub fn to_env_without_url_and_pool(&self) -> Vec<(&'static str, String)> {
        vec![(
            "RELAB_DATABASE_CONNECT_TIMEOUT_SECS",
            self.database_connect_timeout_secs.to_string(),
        )]
    }

    /// Every `RELAB_*` variable these settings are read back from.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![(DATABASE_URL_ENV, self.database_url.clone())];
        env.extend(self.to_env_without_url());
        env
    }

    /// Connect (retrying for `--database-connect-timeout-secs`) and run the migrations.
    pub async fn connect(&self) -> crate::error::Result<sqlx::PgPool> {
        crate::db::connect_and_migrate_within(
            &self.database_url,
            self.database_max_connections,
            Duration::from_secs(self.database_connect_timeout_secs),
        )
        .await
    }
}

/// `--flag=value` for each variable, found through clap's own env names, so
/// a renamed variable or flag breaks the round-trip tests that use it.
#[cfg(test)]
pub(crate) fn env_as_flags(cmd: &clap::Command, env: &[(&'static str, String)]) -> Vec<String> {
    env.iter()
        .map(|(key, value)| {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == *key))
                .unwrap_or_else(|| panic!("no flag of `{}` reads {key}", cmd.get_name()));
            format!("--{}={value}", arg.get_long().expect("long flag"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        w: WorkerArgs,
    }

    fn parse(args: &[&str]) -> Result<WorkerConfig, ConfigError> {
        let mut full = vec!["w"];
        full.extend_from_slice(args);
        W::try_parse_from(full).expect("parses").w.into_config()
    }

    #[test]
    fn defaults_are_valid() {
        assert!(parse(&[]).is_ok());
        assert!(ApiConfig::default().validate().is_ok());
    }

    #[test]
    fn semantic_errors_name_the_flag() {
        let e = parse(&["--retry-initial-backoff-ms", "500", "--retry-max-backoff-ms", "100"]).unwrap_err();
        assert!(e.field.contains("--retry-max-backoff-ms"), "{e}");
        assert!(e.field.contains("RELAB_RETRY_MAX_BACKOFF_MS"), "{e}");
        let e = parse(&["--retry-jitter", "1.5"]).unwrap_err();
        assert!(e.field.contains("--retry-jitter"), "{e}");
        let e = parse(&["--breaker-mode", "failure-ratio", "--breaker-failure-ratio", "0"]).unwrap_err();
        assert!(e.field.contains("--breaker-failure-ratio"), "{e}");
        let e = parse(&["--payment-url", "localhost:1"]).unwrap_err();
        assert!(e.field.contains("--payment-url"), "{e}");
        let e = parse(&["--retry-max-attempts", "0"]).unwrap_err();
        assert!(e.message.contains("first call"), "{e}");
    }

    #[test]
    fn worker_config_survives_the_trip_through_its_environment() {
        use clap::CommandFactory;
        let modes = [
            BreakerMode::Disabled,
            BreakerMode::ConsecutiveFailures { threshold: 9 },
            BreakerMode::FailureRatio {
                ratio: 0.35,
                min_calls: 11,
                window: Duration::from_millis(7_500),
            },
        ];
        for mode in modes {
            let original = WorkerConfig {
                worker_id: "w-1".into(),
                concurrency: 3,
                payment_url: "http://10.0.0.7:8081".into(),
                payment_timeout: Duration::from_millis(750),
                retry_max_attempts: 6,
                backoff: BackoffConfig {
                    initial: Duration::from_millis(20),
                    max: Duration::from_millis(900),
                    multiplier: 1.5,
                    jitter: 0.25,
                },
                breaker: BreakerConfig {
                    mode,
                    open_timeout: Duration::from_millis(1_234),
                    half_open_probes: 2,
                },
                bulkhead_max_concurrent: 5,
                bulkhead_max_wait: Duration::from_millis(40),
                lease: Duration::from_secs(12),
                poll_interval: Duration::from_millis(300),
                shutdown_deadline: Duration::from_secs(4),
                send_idempotency_key: false,
            };
            let mut args = vec!["w".to_string(), "--worker-id=w-1".to_string()];
            args.extend(env_as_flags(&W::command(), &original.to_env()));
            let back = W::try_parse_from(args).expect("parses").w.into_config().expect("valid");
            assert_eq!(format!("{back:?}"), format!("{original:?}"));
        }
    }

    #[test]
    fn api_config_survives_the_trip_through_its_environment() {
        use clap::CommandFactory;
        #[derive(Parser)]
        struct A {
            #[command(flatten)]
            a: ApiArgs,
        }
        let original = ApiConfig {
            max_queue_depth: 77,
            shed_retry_after_secs: 3,
            max_body_bytes: 4096,
            max_job_attempts: 2,
            drain_delay: Duration::from_millis(1_500),
            shutdown_timeout: Duration::from_secs(7),
            body_read_timeout: Duration::from_millis(2_500),
            ..ApiConfig::default()
        };
        let mut args = vec!["a".to_string()];
        args.extend(env_as_flags(&A::command(), &original.to_env()));
        let back = A::try_parse_from(args).expect("parses").a.into_config().expect("valid");
        assert_eq!(format!("{back:?}"), format!("{original:?}"));
    }

    #[test]
    fn unparsable_values_are_refused_by_clap_with_the_flag() {
        let err = W::try_parse_from(["w", "--concurrency", "many"])
            .err()
            .expect("refused");
        assert!(err.to_string().contains("--concurrency"), "{err}");
    }
}

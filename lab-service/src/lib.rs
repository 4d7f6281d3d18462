//! relab lab app: the realistic backend every reliability experiment runs on.
//!
//! An order API that writes orders and their payment jobs in one transaction,
//! a durable Postgres job queue, workers that call a payment service through
//! bulkhead -> retry -> circuit breaker -> timeout, and a fault-injecting
//! payment mock that keeps a ledger so an audit can prove that no order was
//! lost and none charged twice. Nothing here knows about Kubernetes.
//!
//! Where to look: `orders` (API + repository), `queue` (job state machine),
//! `worker` (outcome table), `resilience` (retry/breaker/bulkhead contract),
//! `payment_mock` (faults + ledger), `audit`, `app` (servers), `cli`.

pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod db;
pub mod db_proxy;
pub mod error;
pub mod http_error;
pub mod lab;
pub mod loadgen;
pub mod metrics;
pub mod orders;
pub mod payment_client;
pub mod payment_mock;
pub mod queue;
pub mod resilience;
pub mod run;
pub mod serve;
pub mod shutdown;
pub mod summary;
pub mod telemetry;
pub mod worker;

pub use error::{Error, Result};

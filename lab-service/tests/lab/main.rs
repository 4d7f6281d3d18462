//! Integration tests of the lab app against a real Postgres and the real
//! payment mock on loopback. One binary (one link) with a module per behaviour.

mod harness;

mod api;
mod batches;
mod breaker;
mod bulkhead;
mod contract;
mod db_proxy;
mod dead_letters;
mod loadgen;
mod metrics;
mod processes;
mod restart;
mod retry;
mod shedding;
mod targets;

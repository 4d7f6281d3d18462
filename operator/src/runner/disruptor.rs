//! How `relab run` carries out `spec.disruptions` on this machine (the run
//! engine keeps their clock and record: `lab_service::run::disrupt`).
//!
//! - `KillWorkers`: SIGKILL `fraction` of the worker processes (one per
//!   replica; the API is a separate process locally and survives), wait
//!   for them to die, start them again with the same settings.
//! - `KillOrderService`: SIGKILL every API and worker process, start them
//!   again, wait until each answers `/readyz`.
//! - `RestartDatabase`: `pg_ctl restart -m immediate -w` on the ephemeral
//!   server (same data directory, same port).
//! - `DatabaseLatency` / `DatabaseOutage`: not here; the run engine sets
//!   the database fault proxy's faults itself.

use super::postgres::PgRestarter;
use futures::future::BoxFuture;
use futures::FutureExt;
use lab_service::lab::OrderServiceProcesses;
use lab_service::run::disrupt::{Disruptor, Fired};
use relab_model::disruptions::{DisruptionAction, PlannedDisruption};
use std::sync::Arc;

/// The local runner's [`Disruptor`].
pub struct LocalDisruptor {
    /// The order service's child processes (None: it runs in-process and
    /// cannot be killed).
    pub processes: Option<Arc<OrderServiceProcesses>>,
    /// The ephemeral Postgres (None: `--database-url`, never restarted).
    pub postgres: Option<PgRestarter>,
}

impl Disruptor for LocalDisruptor {
    fn fire(&self, plan: &PlannedDisruption) -> Option<BoxFuture<'static, Fired>> {
        let name = plan.name.clone();
        match plan.action {
            DisruptionAction::KillWorkers => {
                let processes = self.processes.clone();
                let fraction_of = plan.clone();
                Some(
                    async move {
                        let processes = processes.ok_or_else(|| not_processes(&name))?;
                        let victims = fraction_of.victims(processes.worker_processes());
                        processes.kill_workers(victims).await.map_err(|e| e.to_string())
                    }
                    .boxed(),
                )
            }
            DisruptionAction::KillOrderService => {
                let processes = self.processes.clone();
                Some(
                    async move {
                        let processes = processes.ok_or_else(|| not_processes(&name))?;
                        processes.kill_all().await.map_err(|e| e.to_string())
                    }
                    .boxed(),
                )
            }
            DisruptionAction::RestartDatabase => {
                let postgres = self.postgres.clone();
                Some(
                    async move {
                        let postgres = postgres.ok_or_else(|| {
                            format!("{name}: RestartDatabase needs relab run's ephemeral Postgres (not --database-url)")
                        })?;
                        let pid = tokio::task::spawn_blocking(move || postgres.restart())
                            .await
                            .map_err(|e| format!("restarting Postgres: {e}"))?
                            .map_err(|e| e.to_string())?;
                        Ok(vec![format!("postgres (ephemeral, pid {pid})")])
                    }
                    .boxed(),
                )
            }
            // the run engine drives the database fault proxy itself
            DisruptionAction::DatabaseLatency | DisruptionAction::DatabaseOutage => None,
        }
    }
}

fn not_processes(name: &str) -> String {
    format!("{name}: the order service does not run as child processes here; nothing to kill")
}

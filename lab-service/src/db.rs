//! Connection pool and migrations (embedded from `lab-service/migrations`).

use crate::error::Result;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

/// The channel workers LISTEN on; every new or re-queued job NOTIFYs it.
pub const JOBS_CHANNEL: &str = "relab_jobs";

/// Connect and run pending migrations (safe from many processes at once:
/// sqlx takes an advisory lock).
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?.application_name("relab-lab-service");
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

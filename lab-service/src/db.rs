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
/// [`connect_and_migrate`], retrying while the server is not reachable yet
/// (a pod that starts before its database), for at most `patience`. Each
/// failed attempt is logged; the last error is returned.
pub async fn connect_and_migrate_within(url: &str, max_connections: u32, patience: Duration) -> Result<PgPool> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match connect_and_migrate(url, max_connections).await {
            Ok(pool) => return Ok(pool),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(attempt, error = %e, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt.min(4)))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

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

/// A pool of its own (of `max_connections`) on `pool`'s database, with
/// its connect options: each API and worker server of an in-process lab
/// gets one, as each process would (connections open on first use; the
/// database is migrated already).
pub fn pool_of(pool: &PgPool, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(pool.connect_options().as_ref().clone())
}

/// The URL of database `name` on the server `server_url` points at: its
/// database path is replaced, the rest (user, host, query) kept.
pub fn database_url(server_url: &str, name: &str) -> Result<String> {
    let after_scheme = server_url.find("://").map(|i| i + 3).unwrap_or(0);
    let (without_query, query) = match server_url.split_once('?') {
        Some((u, q)) => (u, Some(q)),
        None => (server_url, None),
    };
    let slash = without_query[after_scheme..]
        .find('/')
        .map(|i| i + after_scheme)
        .ok_or_else(|| crate::Error::Other(format!("the database URL must end in /<database>: {server_url}")))?;
    let base = &without_query[..slash];
    Ok(match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    })
}

/// Create database `name` on the server `server_url` points at; returns its URL.
pub async fn create_database(server_url: &str, name: &str) -> Result<String> {
    let url = database_url(server_url, name)?;
    let admin = PgPoolOptions::new().max_connections(1).connect(server_url).await?;
    let created = sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&admin)
        .await;
    admin.close().await;
    created?;
    Ok(url)
}

/// Drop database `name` (if it exists), closing its sessions.
pub async fn drop_database(server_url: &str, name: &str) -> Result<()> {
    let admin = PgPoolOptions::new().max_connections(1).connect(server_url).await?;
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&admin)
        .await;
    admin.close().await;
    dropped?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_url_replaces_only_the_database() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            database_url("postgres://u:p@h/db?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert!(database_url("postgres://postgres@127.0.0.1:5432", "x").is_err());
    }
}

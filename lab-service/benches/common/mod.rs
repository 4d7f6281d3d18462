//! Helpers shared by the benches (each bench includes this with `mod common;`).

use anyhow::Result;

/// `name` parsed from the environment, or `default` when unset.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

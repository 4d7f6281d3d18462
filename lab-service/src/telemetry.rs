//! Logging: `tracing` with an env filter (`RUST_LOG`, default `info`) and a
//! JSON option. Spans on requests and jobs carry `request_id` and `order_id`,
//! so every line of an order's life names it.

use tracing_subscriber::{fmt, EnvFilter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The variable every subcommand reads its log format from.
pub const LOG_FORMAT_ENV: &str = "RELAB_LOG_FORMAT";

impl LogFormat {
    /// `RELAB_LOG_FORMAT` for a process's environment.
    pub fn to_env(self) -> Vec<(&'static str, String)> {
        let value = match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        vec![(LOG_FORMAT_ENV, value.to_string())]
    }
}

/// Install the global subscriber once; later calls are no-ops (tests).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match format {
        LogFormat::Json => fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init(),
        LogFormat::Text => fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init(),
    };
    let _ = result;
}

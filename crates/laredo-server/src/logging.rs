//! Logs on stderr: JSON lines (the default, for collectors) or text (`--log-format
//! text`, for people).

use laredo_config::LogLevel;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the subscriber. `RUST_LOG`, when set, replaces the level (for debugging one
/// module); otherwise the configured level applies to laredo and the HTTP/2 stack is
/// kept at `warn`.
pub(crate) fn init(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Debug => "debug",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
        _ => "info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},h2=warn,hyper=warn,hyper_util=warn,tower=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

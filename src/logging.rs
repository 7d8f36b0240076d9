//! logging: owns tracing setup for both binaries.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Level from `level`, else `RUST_LOG`, else `info`; JSON lines if `json`.
pub fn init(level: Option<&str>, json: bool) {
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

//! Logging setup: human-readable or JSON lines on stderr, filtered by `RUST_LOG` or the
//! configured level; colours only when stderr is a terminal (a file or a pipe gets plain
//! text). Nothing in this crate logs a token, an API key or a secret.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(format: crate::config::LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // try_init: a second initialisation (tests) is not an error worth stopping for.
    let _ = if format == crate::config::LogFormat::Json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

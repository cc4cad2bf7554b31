//! Logging setup: human-readable or JSON lines on stderr, filtered by `RUST_LOG` or the
//! configured level; colours only when stderr is a terminal (a file or a pipe gets plain
//! text). Nothing in this crate logs a token, an API key or a secret.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The filter: `RUST_LOG` when set and valid, else `level`, else `info`. Both take
/// comma-separated `level` and `target=level` directives (`info`, `boundary_realtime=debug,tower=warn`).
pub fn filter(rust_log: Option<&str>, level: &str) -> Targets {
    rust_log
        .and_then(|v| v.parse().ok())
        .or_else(|| level.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
}

pub fn init(format: crate::config::LogFormat, level: &str) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(rust_log.as_deref(), level);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = if format == crate::config::LogFormat::Json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    // try_init: a second initialisation (tests) is not an error worth stopping for.
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::level_filters::LevelFilter;

    #[test]
    fn rust_log_wins_then_the_level_then_info() {
        let f = filter(Some("boundary_realtime=debug,warn"), "error");
        assert!(f.would_enable("boundary_realtime::hub", &tracing::Level::DEBUG));
        assert!(!f.would_enable("tower", &tracing::Level::INFO));
        let f = filter(None, "debug");
        assert_eq!(f.default_level(), Some(LevelFilter::DEBUG));
        let f = filter(Some("not a filter=="), "nonsense==");
        assert_eq!(f.default_level(), Some(LevelFilter::INFO));
    }
}

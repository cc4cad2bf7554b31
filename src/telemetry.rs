//! Logging setup: human-readable or JSON lines on stderr, filtered by `--log-level`, else
//! `RUST_LOG`, else the configured level, each checked strictly; colours only when stderr is a
//! terminal (a file or a pipe gets plain text). Nothing in this crate logs a token, an API key
//! or a secret.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::parse_log_filter;

/// The filter in force: `--log-level` when given, else `RUST_LOG` when set, else `[log]
/// level`. Whichever is used must parse; the error names it.
pub fn select(flag: Option<&str>, rust_log: Option<&str>, level: &str) -> Result<Targets, String> {
    let (source, spec) = match (flag, rust_log) {
        (Some(f), _) => ("--log-level", f),
        (None, Some(r)) => ("RUST_LOG", r),
        (None, None) => ("log.level", level),
    };
    parse_log_filter(spec).map_err(|e| format!("{source}: {spec:?}: {e}"))
}

/// Installs the subscriber: `format` lines on stderr, filtered by `filter`.
pub fn init(format: crate::config::LogFormat, filter: Targets) {
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
    fn the_flag_wins_then_rust_log_then_the_configured_level() {
        let f = select(Some("debug"), Some("error"), "warn").unwrap();
        assert_eq!(f.default_level(), Some(LevelFilter::DEBUG));
        let f = select(None, Some("boundary_realtime=debug,warn"), "error").unwrap();
        assert!(f.would_enable("boundary_realtime::hub", &tracing::Level::DEBUG));
        assert!(!f.would_enable("tower", &tracing::Level::INFO));
        let f = select(None, None, "INFO").unwrap();
        assert_eq!(f.default_level(), Some(LevelFilter::INFO));
    }

    #[test]
    fn a_filter_that_is_not_levels_is_refused_naming_its_source() {
        assert_eq!(
            select(Some("verbose"), None, "info").unwrap_err(),
            "--log-level: \"verbose\": \"verbose\" is not a level (off, error, warn, info, debug, trace) or target=level"
        );
        assert!(select(None, Some("tower=loud"), "info")
            .unwrap_err()
            .starts_with("RUST_LOG: "));
        assert!(select(None, None, "nonsense[[")
            .unwrap_err()
            .starts_with("log.level: "));
        assert!(parse_log_filter(" , ").is_err());
        assert!(parse_log_filter("=debug").is_err());
        assert!(parse_log_filter("info, boundary_realtime::hub=trace").is_ok());
    }
}

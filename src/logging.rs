//! Logging set-up: `tracing` with `RUST_LOG`-style filtering (default `info`), text or JSON
//! lines on stderr.
//!
//! Lines are handed to a writer thread (`tracing-appender`), so a review never waits for a
//! write to stderr. The queue is not lossy: when it is full, logging waits rather than dropping
//! audit lines. Keep the returned guard alive until exit: dropping it flushes what is queued.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Output format of the logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber and returns the guard of its writer thread. A second call
/// installs nothing.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat) -> WorkerGuard {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // rustls warns for every client that sends an IP address as SNI (Go clients do when the
    // webhook URL holds an IP): per-connection noise, kept out unless RUST_LOG names rustls.
    let names_rustls = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("rustls"));
    if !names_rustls {
        if let Ok(quiet) = "rustls::msgs::handshake=error".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(16_384)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    guard
}

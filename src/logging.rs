//! Logging set-up: `tracing` with `RUST_LOG`-style filtering (default `info`), text or JSON
//! lines on stderr.
//!
//! Lines are handed to a writer thread (`tracing-appender`), so a review never waits for a
//! write to stderr. The queue is not lossy: when it is full, logging waits rather than dropping
//! audit lines. Keep the returned guard alive until exit: dropping it flushes what is queued.
//!
//! Colour (ANSI) is used only when stderr is a terminal and `NO_COLOR` is unset or empty, for
//! every command. Lines rendered outside `tracing` (the audit record, see [`crate::audit`]) go
//! through the same writer with [`write_line`], so their order with other lines is kept.

use std::io::Write as _;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Output format of the logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// How the process renders its log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    pub format: LogFormat,
    pub ansi: bool,
}

struct Sink {
    writer: NonBlocking,
    style: Style,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Colour only on a terminal, and never with `NO_COLOR` set to a non-empty value.
pub fn use_color() -> bool {
    color_allowed(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

fn color_allowed(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber and returns the guard of its writer thread. A second call
/// installs nothing.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat) -> WorkerGuard {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Per-connection warnings of the TLS and HTTP/2 libraries, which any client can cause (an IP
    // address as SNI, which Go clients send when the URL holds one; HTTP/2 reset limits reached),
    // are kept out unless RUST_LOG names the library: the connection metrics count them.
    let rust_log = std::env::var("RUST_LOG").unwrap_or_default();
    for (library, directive) in [
        ("rustls", "rustls::msgs::handshake=error"),
        ("h2", "h2=error"),
    ] {
        if !rust_log.contains(library) {
            if let Ok(quiet) = directive.parse() {
                filter = filter.add_directive(quiet);
            }
        }
    }
    let ansi = use_color();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(16_384)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.clone())
        .with_ansi(ansi);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if installed.is_ok() {
        let _ = SINK.set(Sink {
            writer,
            style: Style { format, ansi },
        });
    }
    guard
}

/// Logging of the client commands (`token`, `verify`): plain text on stderr without targets,
/// `RUST_LOG` or `default_level`. A second call installs nothing.
pub fn init_client(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_color())
        .with_target(false)
        .try_init();
}

/// The style of the installed server logging; `None` before [`init`].
pub fn style() -> Option<Style> {
    SINK.get().map(|s| s.style)
}

/// Writes one rendered line (ending in a newline) to the log writer; nothing before [`init`].
pub fn write_line(line: &str) {
    if let Some(sink) = SINK.get() {
        let mut writer = sink.writer.clone();
        let _ = writer.write_all(line.as_bytes());
    }
}

/// The beginning of a text line as `tracing`'s text format writes it:
/// `2026-11-30T10:43:17.123456Z  INFO audit: `.
pub fn text_prefix(level: tracing::Level, target: &str, ansi: bool) -> String {
    let now = timestamp();
    if ansi {
        let colour = match level {
            tracing::Level::ERROR => "31",
            tracing::Level::WARN => "33",
            tracing::Level::INFO => "32",
            tracing::Level::DEBUG => "34",
            tracing::Level::TRACE => "35",
        };
        format!("\x1b[2m{now}\x1b[0m \x1b[{colour}m{level:>5}\x1b[0m \x1b[2m{target}\x1b[0m\x1b[2m:\x1b[0m ")
    } else {
        format!("{now} {level:>5} {target}: ")
    }
}

/// RFC 3339 UTC time with microseconds, as in `tracing`'s lines.
pub fn timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(color_allowed(true, None));
        assert!(color_allowed(true, Some(OsStr::new(""))));
        assert!(!color_allowed(true, Some(OsStr::new("1"))));
        assert!(!color_allowed(false, None));
    }

    #[test]
    fn text_prefix_matches_tracing_layout() {
        let p = text_prefix(tracing::Level::INFO, "audit", false);
        assert!(p.ends_with("Z  INFO audit: "), "{p:?}");
        assert_eq!(p.len(), "2026-11-30T10:43:17.123456Z  INFO audit: ".len());
        let d = text_prefix(tracing::Level::DEBUG, "audit", false);
        assert!(d.ends_with("Z DEBUG audit: "), "{d:?}");
        assert!(!p.contains('\x1b'));
        assert!(text_prefix(tracing::Level::INFO, "audit", true).contains('\x1b'));
    }
}

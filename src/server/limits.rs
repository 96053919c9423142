//! Every bound on a connection, in one place.
//!
//! A connection on the HTTPS port goes through these stages; each has a bound, a default, a
//! flag and a config key (under `server:`), listed in [`RANGES`] with its allowed range:
//!
//! | stage | bound | default |
//! |---|---|---|
//! | accepted | total open connections ([`MAX_CONNECTIONS`]); at the cap the oldest connection that has not sent a request, else the longest idle, else the slowest is shed for the new one | 4096 |
//! | TLS handshake | [`TLS_HANDSHAKE_TIMEOUT_MS`] | 10 s |
//! | first bytes, HTTP/2 preface, first request | the first request must have started within [`HEADER_TIMEOUT_MS`] of the handshake | 10 s |
//! | request headers | HTTP/1.1: complete within [`HEADER_TIMEOUT_MS`] of their first byte; both: at most [`MAX_HEADER_BYTES`] | 10 s, 16 KiB |
//! | request body | complete within [`BODY_TIMEOUT_MS`] of the request's start, at most 1 MiB; all bodies being read hold at most [`MAX_BODY_BUFFER_BYTES`] together (past that, the connection holding the most is shed) | 10 s, 64 MiB |
//! | handler | the review deadline (STS deadline + 1 s) from the request's start, body included; a review permit ([`MAX_CONCURRENT_REVIEWS`]) is taken only once the body is in | 9 s, 1024 |
//! | response write | handed to the connection within [`WRITE_TIMEOUT_MS`] of being ready (a reader that stops reading is dropped) | 10 s |
//! | idle | no request in flight for [`IDLE_TIMEOUT_MS`] (HTTP/2 PINGs do not count as activity) | 90 s |
//! | HTTP/2 | [`HTTP2_MAX_CONCURRENT_STREAMS`] per connection; keep-alive PING every [`HTTP2_KEEPALIVE_INTERVAL_MS`], closed when unanswered for [`HTTP2_KEEPALIVE_TIMEOUT_MS`] | 256, 30 s, 10 s |
//! | bytes that serve no request | [`CONTROL_BUDGET_BYTES`]: see below | 2 MiB |
//! | stop | in-flight reviews get [`SHUTDOWN_GRACE_SECONDS`]; idle connections close at once, connections reading a body or writing a response 1 s after the stop | 20 s |
//!
//! The health listener (plain HTTP/1.1) has its own, smaller set: [`HEALTH_MAX_CONNECTIONS`],
//! [`HEALTH_TIMEOUT_MS`] for the handshake-free first request, headers and writes,
//! [`HEALTH_IDLE_TIMEOUT_MS`] idle, 8 KiB of headers, no request body.
//!
//! The control budget is metered at the IO layer, under HTTP: every byte a connection reads
//! (after TLS) is taken from a bucket of [`CONTROL_BUDGET_BYTES`], refilled at 1/32 of that per
//! second, never above that size. A request gives its header bytes back when it starts (HTTP/1.1:
//! their size; HTTP/2: at most 512 bytes, since HPACK makes the decoded size unrelated to what was
//! read), its body bytes as the handler reads them, and 512 bytes for the frames around it once its answer is written; a request the
//! client abandons (an HTTP/2 reset before the answer is written) costs 4 KiB instead. What a
//! well-behaved client owes at any moment is thus at most the data in flight under its flow-control
//! window (1 MiB), which is why the budget is at least that. HTTP/2 SETTINGS,
//! PING, WINDOW_UPDATE, RST_STREAM and other frames that serve no request are thus paid from the
//! bucket; a connection that empties it gets GOAWAY and is closed. The frames themselves are not
//! parsed here: hyper and h2 bound what they can (pending-accept resets, locally reset streams,
//! header list size, CONTINUATION), this bounds the rest by volume.

use std::time::Duration;

/// A numeric setting: its flag, config key, allowed range and default.
#[derive(Clone, Copy, Debug)]
pub struct Range {
    pub flag: &'static str,
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
    pub default: u64,
}

impl Range {
    /// The flag's value if set, else the config file's, else the default; out of range is an
    /// error naming where the value came from.
    pub fn pick(&self, flag: Option<u64>, file: Option<u64>) -> Result<u64, RangeError> {
        let (value, from_flag) = match (flag, file) {
            (Some(v), _) => (v, true),
            (None, Some(v)) => (v, false),
            (None, None) => return Ok(self.default),
        };
        if value < self.min || value > self.max {
            return Err(RangeError {
                name: if from_flag {
                    format!("--{}", self.flag)
                } else {
                    format!("server.{} in the config file", self.key)
                },
                value,
                min: self.min,
                max: self.max,
                usage: from_flag,
            });
        }
        Ok(value)
    }
}

/// A numeric setting out of its range. `usage` is true when it came from a flag (exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} is {value}, out of range: it must be between {min} and {max}")]
pub struct RangeError {
    pub name: String,
    pub value: u64,
    pub min: u64,
    pub max: u64,
    pub usage: bool,
}

const fn range(flag: &'static str, key: &'static str, min: u64, max: u64, default: u64) -> Range {
    Range {
        flag,
        key,
        min,
        max,
        default,
    }
}

pub const MAX_CONNECTIONS: Range = range("max-connections", "maxConnections", 1, 65_536, 4096);
pub const MAX_CONCURRENT_REVIEWS: Range = range(
    "max-concurrent-reviews",
    "maxConcurrentReviews",
    1,
    65_536,
    1024,
);
pub const TLS_HANDSHAKE_TIMEOUT_MS: Range = range(
    "tls-handshake-timeout-ms",
    "tlsHandshakeTimeoutMs",
    100,
    60_000,
    10_000,
);
pub const HEADER_TIMEOUT_MS: Range =
    range("header-timeout-ms", "headerTimeoutMs", 100, 60_000, 10_000);
pub const BODY_TIMEOUT_MS: Range = range("body-timeout-ms", "bodyTimeoutMs", 100, 60_000, 10_000);
pub const WRITE_TIMEOUT_MS: Range =
    range("write-timeout-ms", "writeTimeoutMs", 100, 60_000, 10_000);
pub const IDLE_TIMEOUT_MS: Range =
    range("idle-timeout-ms", "idleTimeoutMs", 100, 3_600_000, 90_000);
pub const HTTP2_KEEPALIVE_INTERVAL_MS: Range = range(
    "http2-keepalive-interval-ms",
    "http2KeepaliveIntervalMs",
    100,
    3_600_000,
    30_000,
);
pub const HTTP2_KEEPALIVE_TIMEOUT_MS: Range = range(
    "http2-keepalive-timeout-ms",
    "http2KeepaliveTimeoutMs",
    100,
    600_000,
    10_000,
);
/// At least 32: kube-apiserver multiplexes up to 32 concurrent reviews on one connection.
pub const HTTP2_MAX_CONCURRENT_STREAMS: Range = range(
    "http2-max-concurrent-streams",
    "http2MaxConcurrentStreams",
    32,
    4096,
    256,
);
pub const MAX_HEADER_BYTES: Range = range(
    "max-header-bytes",
    "maxHeaderBytes",
    8192,
    1024 * 1024,
    16 * 1024,
);
pub const CONTROL_BUDGET_BYTES: Range = range(
    "control-budget-bytes",
    "controlBudgetBytes",
    1024 * 1024,
    1024 * 1024 * 1024,
    2 * 1024 * 1024,
);
/// Request body bytes buffered at once, all connections together.
pub const MAX_BODY_BUFFER_BYTES: Range = range(
    "max-body-buffer-bytes",
    "maxBodyBufferBytes",
    1024 * 1024,
    16 * 1024 * 1024 * 1024,
    64 * 1024 * 1024,
);
pub const SHUTDOWN_GRACE_SECONDS: Range =
    range("shutdown-grace-seconds", "shutdownGraceSeconds", 0, 300, 20);
pub const HEALTH_MAX_CONNECTIONS: Range = range(
    "health-max-connections",
    "healthMaxConnections",
    1,
    4096,
    64,
);
pub const HEALTH_TIMEOUT_MS: Range =
    range("health-timeout-ms", "healthTimeoutMs", 100, 60_000, 5_000);
pub const HEALTH_IDLE_TIMEOUT_MS: Range = range(
    "health-idle-timeout-ms",
    "healthIdleTimeoutMs",
    100,
    3_600_000,
    120_000,
);

/// Every connection bound, for the docs and the tests.
pub const RANGES: &[Range] = &[
    MAX_CONNECTIONS,
    MAX_CONCURRENT_REVIEWS,
    TLS_HANDSHAKE_TIMEOUT_MS,
    HEADER_TIMEOUT_MS,
    BODY_TIMEOUT_MS,
    WRITE_TIMEOUT_MS,
    IDLE_TIMEOUT_MS,
    HTTP2_KEEPALIVE_INTERVAL_MS,
    HTTP2_KEEPALIVE_TIMEOUT_MS,
    HTTP2_MAX_CONCURRENT_STREAMS,
    MAX_HEADER_BYTES,
    CONTROL_BUDGET_BYTES,
    MAX_BODY_BUFFER_BYTES,
    SHUTDOWN_GRACE_SECONDS,
    HEALTH_MAX_CONNECTIONS,
    HEALTH_TIMEOUT_MS,
    HEALTH_IDLE_TIMEOUT_MS,
];

/// Header bytes on the health listener (hyper's smallest read buffer).
pub const HEALTH_MAX_HEADER_BYTES: usize = 8192;
/// How long a connection being closed may take to send its GOAWAY (or finish a write) before it
/// is dropped; also how long a connection reading a body or writing a response keeps after a stop.
pub const CLOSE_GRACE: Duration = Duration::from_millis(1000);
/// Extra cost of a request abandoned before its answer was written.
pub const ABANDONED_REQUEST_COST: i64 = 4096;
/// Bytes given back per completed request for the frames around it.
pub const REQUEST_FRAME_ALLOWANCE: usize = 512;
/// Bytes given back at most for an HTTP/2 request's (compressed) head.
pub const H2_HEAD_ALLOWANCE: usize = 512;

/// The bounds of one listener.
#[derive(Clone, Debug)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub tls_handshake: Duration,
    pub header: Duration,
    pub body: Duration,
    pub write: Duration,
    pub idle: Duration,
    pub max_header_bytes: usize,
    pub http2_max_streams: u32,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    pub control_budget: i64,
    /// Request body bytes buffered at once on this listener, all connections together.
    pub body_buffer: usize,
}

impl ListenerLimits {
    /// How often a connection's bounds are checked.
    pub fn tick(&self) -> Duration {
        let shortest = self.header.min(self.body).min(self.write).min(self.idle);
        (shortest / 4).clamp(Duration::from_millis(25), Duration::from_secs(1))
    }
}

/// Every connection bound of the server, resolved.
#[derive(Clone, Debug)]
pub struct Limits {
    pub https: ListenerLimits,
    pub health: ListenerLimits,
    pub max_concurrent_reviews: usize,
    pub shutdown_grace: Duration,
}

/// The values given on the command line or in the config file, each optional.
#[derive(Clone, Debug, Default)]
pub struct Given {
    pub max_connections: Option<u64>,
    pub max_concurrent_reviews: Option<u64>,
    pub tls_handshake_timeout_ms: Option<u64>,
    pub header_timeout_ms: Option<u64>,
    pub body_timeout_ms: Option<u64>,
    pub write_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub http2_keepalive_interval_ms: Option<u64>,
    pub http2_keepalive_timeout_ms: Option<u64>,
    pub http2_max_concurrent_streams: Option<u64>,
    pub max_header_bytes: Option<u64>,
    pub control_budget_bytes: Option<u64>,
    pub max_body_buffer_bytes: Option<u64>,
    pub shutdown_grace_seconds: Option<u64>,
    pub health_max_connections: Option<u64>,
    pub health_timeout_ms: Option<u64>,
    pub health_idle_timeout_ms: Option<u64>,
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl Limits {
    /// Flags over the config file over defaults, each checked against its range.
    pub fn resolve(flags: &Given, file: &Given) -> Result<Self, RangeError> {
        let ms =
            |r: &Range, f: Option<u64>, c: Option<u64>| r.pick(f, c).map(Duration::from_millis);
        let header = ms(
            &HEADER_TIMEOUT_MS,
            flags.header_timeout_ms,
            file.header_timeout_ms,
        )?;
        let max_header_bytes =
            MAX_HEADER_BYTES.pick(flags.max_header_bytes, file.max_header_bytes)?;
        let control_budget =
            CONTROL_BUDGET_BYTES.pick(flags.control_budget_bytes, file.control_budget_bytes)?;
        let https = ListenerLimits {
            max_connections: to_usize(
                MAX_CONNECTIONS.pick(flags.max_connections, file.max_connections)?,
            ),
            tls_handshake: ms(
                &TLS_HANDSHAKE_TIMEOUT_MS,
                flags.tls_handshake_timeout_ms,
                file.tls_handshake_timeout_ms,
            )?,
            header,
            body: ms(
                &BODY_TIMEOUT_MS,
                flags.body_timeout_ms,
                file.body_timeout_ms,
            )?,
            write: ms(
                &WRITE_TIMEOUT_MS,
                flags.write_timeout_ms,
                file.write_timeout_ms,
            )?,
            idle: ms(
                &IDLE_TIMEOUT_MS,
                flags.idle_timeout_ms,
                file.idle_timeout_ms,
            )?,
            max_header_bytes: to_usize(max_header_bytes),
            http2_max_streams: u32::try_from(HTTP2_MAX_CONCURRENT_STREAMS.pick(
                flags.http2_max_concurrent_streams,
                file.http2_max_concurrent_streams,
            )?)
            .unwrap_or(u32::MAX),
            http2_keepalive_interval: ms(
                &HTTP2_KEEPALIVE_INTERVAL_MS,
                flags.http2_keepalive_interval_ms,
                file.http2_keepalive_interval_ms,
            )?,
            http2_keepalive_timeout: ms(
                &HTTP2_KEEPALIVE_TIMEOUT_MS,
                flags.http2_keepalive_timeout_ms,
                file.http2_keepalive_timeout_ms,
            )?,
            control_budget: i64::try_from(control_budget).unwrap_or(i64::MAX),
            body_buffer: to_usize(
                MAX_BODY_BUFFER_BYTES
                    .pick(flags.max_body_buffer_bytes, file.max_body_buffer_bytes)?,
            ),
        };
        let health_timeout = ms(
            &HEALTH_TIMEOUT_MS,
            flags.health_timeout_ms,
            file.health_timeout_ms,
        )?;
        let health = ListenerLimits {
            max_connections: to_usize(
                HEALTH_MAX_CONNECTIONS
                    .pick(flags.health_max_connections, file.health_max_connections)?,
            ),
            tls_handshake: health_timeout,
            header: health_timeout,
            body: health_timeout,
            write: health_timeout,
            idle: ms(
                &HEALTH_IDLE_TIMEOUT_MS,
                flags.health_idle_timeout_ms,
                file.health_idle_timeout_ms,
            )?,
            max_header_bytes: HEALTH_MAX_HEADER_BYTES,
            http2_max_streams: 0,
            http2_keepalive_interval: health_timeout,
            http2_keepalive_timeout: health_timeout,
            control_budget: https.control_budget,
            body_buffer: https.body_buffer,
        };
        Ok(Self {
            https,
            health,
            max_concurrent_reviews: to_usize(
                MAX_CONCURRENT_REVIEWS
                    .pick(flags.max_concurrent_reviews, file.max_concurrent_reviews)?,
            ),
            shutdown_grace: Duration::from_secs(
                SHUTDOWN_GRACE_SECONDS
                    .pick(flags.shutdown_grace_seconds, file.shutdown_grace_seconds)?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_in_range_and_distinct() {
        for r in RANGES {
            assert!(r.min <= r.default && r.default <= r.max, "{r:?}");
            assert_eq!(r.pick(None, None), Ok(r.default));
        }
        let flags: std::collections::HashSet<_> = RANGES.iter().map(|r| r.flag).collect();
        assert_eq!(flags.len(), RANGES.len());
    }

    #[test]
    fn flag_wins_and_out_of_range_is_named() {
        assert_eq!(MAX_CONNECTIONS.pick(Some(10), Some(20)), Ok(10));
        assert_eq!(MAX_CONNECTIONS.pick(None, Some(20)), Ok(20));
        let e = MAX_CONNECTIONS.pick(Some(u64::MAX), None).unwrap_err();
        assert!(e.usage);
        assert!(e.to_string().contains("--max-connections"), "{e}");
        let e = MAX_CONNECTIONS.pick(None, Some(0)).unwrap_err();
        assert!(!e.usage);
        assert!(e.to_string().contains("server.maxConnections"), "{e}");
        let e = HTTP2_MAX_CONCURRENT_STREAMS
            .pick(Some(8), None)
            .unwrap_err();
        assert!(e.to_string().contains("between 32 and 4096"), "{e}");
    }

    #[test]
    fn resolves_defaults() {
        let l = Limits::resolve(&Given::default(), &Given::default()).expect("defaults");
        assert_eq!(l.https.max_connections, 4096);
        assert_eq!(l.https.http2_max_streams, 256);
        assert_eq!(l.health.max_connections, 64);
        assert_eq!(l.max_concurrent_reviews, 1024);
        assert_eq!(l.shutdown_grace, Duration::from_secs(20));
        assert!(l.https.tick() <= Duration::from_secs(1));
    }
}

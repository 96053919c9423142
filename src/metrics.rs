//! Prometheus metrics (`/metrics`). The `ack_ram_authenticator_*` names and labels of the
//! public server are kept so that existing dashboards work; the rest are additions.
//!
//! The body is OpenMetrics text (ending in `# EOF`), served as [`CONTENT_TYPE`]; Prometheus
//! reads it. Besides the server's own metrics: `ack_ram_authenticator_build_info` and the
//! conventional `process_*` metrics (Linux; read from `/proc` at scrape time).

mod process;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Metric namespace, as in ack-ram-authenticator.
pub const NAMESPACE: &str = "ack_ram_authenticator";

/// The content type of [`Metrics::encode`]'s body.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `result` of `authenticate_latency_seconds`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AuthResult {
    success,
    malformed_request,
    invalid_token,
    sts_error,
    unknown_user,
    /// The identity's account is not in `server.allowedAccounts`.
    account_not_allowed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: AuthResult,
}

/// `ResponseCode` of `sts_responses_total` (the label name keeps the public server's casing).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case)]
pub struct ResponseCodeLabel {
    pub ResponseCode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// `listener` of the connection metrics.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Listener {
    https,
    health,
}

/// Why a connection was closed (`reason` of `connections_closed_total`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CloseReason {
    /// The client closed it, or it ended normally.
    client,
    /// The TLS handshake failed.
    tls_error,
    handshake_timeout,
    /// No request started in time after the handshake, or a request's headers came too slowly.
    header_timeout,
    idle,
    /// An HTTP/2 keep-alive PING went unanswered.
    keepalive_timeout,
    /// A request body, or a whole request, past its deadline.
    slow,
    /// A response not taken by the client within the write timeout.
    write_timeout,
    /// The bytes that serve no request exceeded the control budget.
    control_frames,
    /// Closed at the connection cap to make room for a new connection.
    shed,
    /// Refused at the connection cap (nothing could be shed).
    limit,
    /// Closed by the drain at a stop.
    shutdown,
}

impl CloseReason {
    pub const ALL: [CloseReason; 12] = [
        Self::client,
        Self::tls_error,
        Self::handshake_timeout,
        Self::header_timeout,
        Self::idle,
        Self::keepalive_timeout,
        Self::slow,
        Self::write_timeout,
        Self::control_frames,
        Self::shed,
        Self::limit,
        Self::shutdown,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: Listener,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabel {
    pub listener: Listener,
    pub reason: CloseReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

/// Labels of `build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub commit: String,
    pub rustc: String,
}

/// `file` of `file_errors_total`: which watched file was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabel {
    pub file: String,
}

/// The watched files, as `file` label values.
pub const WATCHED_FILES: [&str; 4] = ["certificate", "key", "config", "client_ca"];

/// Every metric the server exports, registered in one [`Registry`] passed around by `Arc`.
pub struct Metrics {
    pub registry: Registry,
    pub authenticate_latency: Family<ResultLabel, Histogram>,
    pub sts_responses: Family<ResponseCodeLabel, Counter>,
    pub sts_connection_failures: Counter,
    pub configmap_watch_failures: Counter,
    pub sts_call_duration: Family<OutcomeLabel, Histogram>,
    pub sts_throttles: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_entries: Gauge,
    pub reviews_in_flight: Gauge,
    pub mapping_entries: Family<SourceLabel, Gauge>,
    pub mapping_last_reload: Family<SourceLabel, Gauge<f64, AtomicU64>>,
    pub mapping_reload_errors: Family<SourceLabel, Counter>,
    pub certificate_expiry: Gauge<f64, AtomicU64>,
    pub file_errors: Family<FileLabel, Counter>,
    pub mappings_skipped: Family<SourceLabel, Gauge>,
    pub mapping_source_ready: Family<SourceLabel, Gauge>,
    pub sts_bad_responses: Family<ReasonLabel, Counter>,
    pub watch_failures: Family<SourceLabel, Counter>,
    pub connections_open: Family<ListenerLabel, Gauge>,
    pub connections_closed: Family<ClosedLabel, Counter>,
    pub build_info: Family<BuildLabels, Gauge>,
    /// Metrics without the namespace (`process_*`).
    pub unprefixed: Registry,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// `reason` values of `sts_bad_responses_total`, all exported from the start.
pub const STS_BAD_RESPONSE_REASONS: [&str; 3] = ["redirect", "too_large", "unparseable"];

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(NAMESPACE);
        let authenticate_latency = Family::<ResultLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "authenticate_latency_seconds",
            "Latency of TokenReviews, by result",
            authenticate_latency.clone(),
        );
        let sts_responses = Family::<ResponseCodeLabel, Counter>::default();
        registry.register(
            "sts_responses",
            "STS responses, by HTTP status code",
            sts_responses.clone(),
        );
        let sts_connection_failures = Counter::default();
        registry.register(
            "sts_connection_failures",
            "STS requests that failed to connect or time out",
            sts_connection_failures.clone(),
        );
        let configmap_watch_failures = Counter::default();
        registry.register(
            "configmap_watch_failures",
            "Failures of the alibabacloud-auth ConfigMap watch",
            configmap_watch_failures.clone(),
        );
        let sts_call_duration = Family::<OutcomeLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "sts_call_duration_seconds",
            "Duration of STS calls including retries, by outcome",
            sts_call_duration.clone(),
        );
        let sts_throttles = Counter::default();
        registry.register(
            "sts_throttles",
            "STS calls answered with a Throttling code",
            sts_throttles.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "identity_cache_hits",
            "Reviews answered from the identity cache",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "identity_cache_misses",
            "Reviews that needed STS",
            cache_misses.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "identity_cache_entries",
            "Identities in the cache",
            cache_entries.clone(),
        );
        let reviews_in_flight = Gauge::default();
        registry.register(
            "reviews_in_flight",
            "TokenReviews being answered",
            reviews_in_flight.clone(),
        );
        let mapping_entries = Family::<SourceLabel, Gauge>::default();
        registry.register(
            "mapping_entries",
            "Mappings loaded, by source",
            mapping_entries.clone(),
        );
        let mapping_last_reload = Family::<SourceLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "mapping_last_reload_timestamp_seconds",
            "Unix time of the last successful load, by source",
            mapping_last_reload.clone(),
        );
        let mapping_reload_errors = Family::<SourceLabel, Counter>::default();
        registry.register(
            "mapping_reload_errors",
            "Loads of a mapping source that were refused, by source",
            mapping_reload_errors.clone(),
        );
        let certificate_expiry = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "serving_certificate_expiry_timestamp_seconds",
            "Unix time at which the serving certificate expires",
            certificate_expiry.clone(),
        );
        let file_errors = Family::<FileLabel, Counter>::default();
        registry.register(
            "file_errors",
            "Changed files refused (certificate, key, config, client_ca), once per distinct content",
            file_errors.clone(),
        );
        for file in WATCHED_FILES {
            let _ = file_errors.get_or_create(&FileLabel { file: file.into() });
        }
        let mappings_skipped = Family::<SourceLabel, Gauge>::default();
        registry.register(
            "mappings_skipped",
            "Mappings skipped by the guard rails (reserved names), by source",
            mappings_skipped.clone(),
        );
        let mapping_source_ready = Family::<SourceLabel, Gauge>::default();
        registry.register(
            "mapping_source_ready",
            "Whether a mapping source has loaded (1) or is still waiting (0), by source",
            mapping_source_ready.clone(),
        );
        let sts_bad_responses = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "sts_bad_responses",
            "STS answers that were not used: a redirect (never followed), a body over the size \
             cap, an identity that cannot be read",
            sts_bad_responses.clone(),
        );
        for reason in STS_BAD_RESPONSE_REASONS {
            let _ = sts_bad_responses.get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            });
        }
        let watch_failures = Family::<SourceLabel, Counter>::default();
        registry.register(
            "watch_failures",
            "Failed lists and watches of a Kubernetes mapping source (a 410 Gone is not one)",
            watch_failures.clone(),
        );
        let connections_open = Family::<ListenerLabel, Gauge>::default();
        registry.register(
            "connections_open",
            "Open connections, by listener",
            connections_open.clone(),
        );
        let connections_closed = Family::<ClosedLabel, Counter>::default();
        registry.register(
            "connections_closed",
            "Closed connections, by listener and reason",
            connections_closed.clone(),
        );
        for listener in [Listener::https, Listener::health] {
            let _ = connections_open.get_or_create(&ListenerLabel { listener });
            for reason in CloseReason::ALL {
                let _ = connections_closed.get_or_create(&ClosedLabel { listener, reason });
            }
        }
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "Always 1; the labels say which build is running",
            build_info.clone(),
        );
        let build = crate::build_info::BUILD;
        build_info
            .get_or_create(&BuildLabels {
                version: build.version.into(),
                commit: build.git_commit.into(),
                rustc: build.rustc.into(),
            })
            .set(1);
        let mut unprefixed = Registry::default();
        unprefixed.register_collector(Box::new(process::ProcessCollector));
        Self {
            registry,
            authenticate_latency,
            sts_responses,
            sts_connection_failures,
            configmap_watch_failures,
            sts_call_duration,
            sts_throttles,
            cache_hits,
            cache_misses,
            cache_entries,
            reviews_in_flight,
            mapping_entries,
            mapping_last_reload,
            mapping_reload_errors,
            certificate_expiry,
            file_errors,
            mappings_skipped,
            mapping_source_ready,
            sts_bad_responses,
            watch_failures,
            connections_open,
            connections_closed,
            build_info,
            unprefixed,
        }
    }

    /// Counts an STS answer that was not used.
    pub fn sts_bad_response(&self, reason: &str) {
        self.sts_bad_responses
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The failure counter of a Kubernetes source (created at 0 when first asked for).
    pub fn watch_failures_of(&self, source: &str) -> Counter {
        self.watch_failures
            .get_or_create(&SourceLabel {
                source: source.to_string(),
            })
            .clone()
    }

    /// Counts a connection closed on `listener` for `reason`.
    pub fn connection_closed(&self, listener: Listener, reason: CloseReason) {
        self.connections_closed
            .get_or_create(&ClosedLabel { listener, reason })
            .inc();
    }

    pub fn observe_review(&self, result: AuthResult, elapsed: Duration) {
        self.authenticate_latency
            .get_or_create(&ResultLabel { result })
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_sts_call(&self, outcome: &str, elapsed: Duration) {
        self.sts_call_duration
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records a successful load of a mapping source.
    pub fn mapping_loaded(&self, source: &str, entries: usize) {
        let label = SourceLabel {
            source: source.to_string(),
        };
        self.mapping_entries
            .get_or_create(&label)
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        self.mapping_last_reload.get_or_create(&label).set(now);
    }

    /// Makes a source's reload-error series exist (at 0) before its first error.
    pub fn mapping_refused_init(&self, source: &str) {
        let _ = self.mapping_reload_errors.get_or_create(&SourceLabel {
            source: source.to_string(),
        });
    }

    /// Records a refused load of a mapping source.
    pub fn mapping_refused(&self, source: &str) {
        self.mapping_reload_errors
            .get_or_create(&SourceLabel {
                source: source.to_string(),
            })
            .inc();
    }

    /// Records a refused file (`file` is one of [`WATCHED_FILES`]).
    pub fn file_refused(&self, file: &str) {
        self.file_errors
            .get_or_create(&FileLabel { file: file.into() })
            .inc();
    }

    /// The OpenMetrics text exposition ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.unprefixed);
        let _ = encode_eof(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_openmetrics_exposition_with_build_and_process_metrics() {
        let text = Metrics::new().encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        let build = crate::build_info::BUILD;
        assert!(
            text.contains(&format!(
                "ack_ram_authenticator_build_info{{version=\"{}\",commit=\"{}\",rustc=\"{}\"}} 1\n",
                build.version, build.git_commit, build.rustc
            )),
            "{text}"
        );
        assert!(text.contains("# TYPE ack_ram_authenticator_build_info gauge\n"));
        if cfg!(target_os = "linux") {
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_virtual_memory_bytes ",
                "process_open_fds ",
                "process_max_fds ",
                "process_start_time_seconds ",
            ] {
                assert!(
                    text.lines().any(|l| l.starts_with(name)),
                    "{name} missing: {text}"
                );
            }
            assert!(!text.contains("ack_ram_authenticator_process_"), "{text}");
        }
    }

    #[test]
    fn keeps_public_names() {
        let m = Metrics::new();
        m.observe_review(AuthResult::success, Duration::from_millis(1));
        m.sts_responses
            .get_or_create(&ResponseCodeLabel {
                ResponseCode: "200".into(),
            })
            .inc();
        m.sts_connection_failures.inc();
        let text = m.encode();
        assert!(
            text.contains("ack_ram_authenticator_authenticate_latency_seconds_bucket{"),
            "{text}"
        );
        assert!(text.contains("result=\"success\""), "{text}");
        assert!(
            text.contains("ack_ram_authenticator_sts_responses_total{ResponseCode=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ack_ram_authenticator_sts_connection_failures_total 1"),
            "{text}"
        );
        assert!(
            text.contains("ack_ram_authenticator_configmap_watch_failures_total 0"),
            "{text}"
        );
        assert!(
            text.contains("ack_ram_authenticator_connections_open{listener=\"health\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "ack_ram_authenticator_connections_closed_total{listener=\"https\",reason=\"control_frames\"} 0"
            ),
            "{text}"
        );
    }
}

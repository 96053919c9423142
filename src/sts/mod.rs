//! The STS client: sends a signed `GetCallerIdentity` request (recovered from a token) to the
//! configured endpoint and reads the identity or the error. Also sends the client side's RPC
//! calls (`AssumeRole`).
//!
//! Every call has a per-attempt timeout and an overall deadline; connection errors and 5xx are
//! retried with jittered backoff inside the deadline, 4xx never; concurrent calls are capped.
//!
//! The request is built before anything is sent: one that cannot be built (a header that is
//! not valid HTTP) is refused at once, without a retry and without taking a call slot. It
//! carries the configured endpoint's `Host` and this client's own `Content-Type`, whatever the
//! token says. Answers are trusted no further than needed: redirects are not followed (a
//! redirect target would receive the signed request and its security token) and a body is
//! read up to [`MAX_RESPONSE_BYTES`] only.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

pub use crate::identity::CallerIdentity;
use crate::metrics::Metrics;
use crate::token::{SignedRequest, TokenError};

/// The `Content-Type` of every `POST` to STS (the body is empty).
pub const CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// The largest STS answer read; an identity is well under 1 KiB.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The global STS endpoint, used when neither an endpoint nor a region is configured.
pub const GLOBAL_ENDPOINT: &str = "https://sts.aliyuncs.com";

/// Chooses the STS endpoint: an explicit one, else the VPC endpoint of the region, else global.
pub fn endpoint_for(explicit: Option<&str>, region: Option<&str>) -> String {
    match (
        explicit.filter(|e| !e.is_empty()),
        region.filter(|r| !r.is_empty()),
    ) {
        (Some(e), _) => e.trim_end_matches('/').to_string(),
        (None, Some(r)) => format!("https://sts-vpc.{r}.aliyuncs.com"),
        (None, None) => GLOBAL_ENDPOINT.to_string(),
    }
}

/// The error body STS sends with a 4xx or 5xx.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    #[serde(default)]
    pub request_id: String,
    #[serde(default)]
    pub host_id: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub recommend: String,
}

/// Why STS did not confirm an identity.
///
/// STS's `Message` is deliberately not kept: for a signature mismatch it quotes the string to
/// sign, which for v1 tokens contains the security token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StsError {
    #[error("STS rejected the request: {code} (HTTP {status}, request {request_id})")]
    Rejected {
        status: u16,
        code: String,
        request_id: String,
    },
    #[error("STS is throttling: {code}")]
    Throttled { code: String },
    #[error("STS failed: HTTP {status} {code}")]
    ServerError { status: u16, code: String },
    #[error("STS unavailable: {0}")]
    Unavailable(String),
    #[error("STS did not answer within the deadline of {0:?}")]
    DeadlineExceeded(Duration),
    #[error("STS answered with an unreadable response: {0}")]
    BadResponse(String),
    #[error("the request to STS cannot be built: {0}")]
    Unsendable(String),
}

impl StsError {
    /// The STS error code, or a fixed label for transport failures (metrics, audit).
    pub fn code(&self) -> &str {
        match self {
            Self::Rejected { code, .. }
            | Self::Throttled { code }
            | Self::ServerError { code, .. } => code,
            Self::Unavailable(_) => "Unavailable",
            Self::DeadlineExceeded(_) => "DeadlineExceeded",
            Self::BadResponse(_) => "BadResponse",
            Self::Unsendable(_) => "Unsendable",
        }
    }

    /// Whether STS judged the token itself (so the same token will fail again): worth
    /// remembering briefly.
    pub fn is_verdict_on_token(&self) -> bool {
        matches!(self, Self::Rejected { status, .. } if (400..500).contains(status))
            || matches!(self, Self::Unsendable(_))
    }
}

/// How the client reaches STS.
#[derive(Clone, Debug)]
pub struct StsSettings {
    pub endpoint: String,
    /// PEM bundle of extra CAs to trust (besides the system's), e.g. for the emulator.
    pub ca_file: Option<std::path::PathBuf>,
    /// Timeout of one HTTP attempt.
    pub attempt_timeout: Duration,
    /// Overall deadline of one call, retries included.
    pub deadline: Duration,
    /// Retries after the first attempt (connection errors and 5xx only).
    pub max_retries: u32,
    /// Calls in flight at once; more wait for a slot (within their deadline).
    pub max_concurrent: usize,
}

impl StsSettings {
    pub fn new(endpoint: String) -> Self {
        Self {
            endpoint,
            ca_file: None,
            attempt_timeout: Duration::from_secs(3),
            deadline: Duration::from_secs(8),
            max_retries: 2,
            max_concurrent: 64,
        }
    }
}

/// A client for one STS endpoint. Cheap to clone.
#[derive(Clone)]
pub struct StsClient {
    http: reqwest::Client,
    settings: Arc<StsSettings>,
    /// The `Host` header sent to the endpoint, worked out once.
    host: Arc<str>,
    permits: Arc<Semaphore>,
    metrics: Option<Arc<Metrics>>,
}

/// Building the client failed (a bad CA file, a bad endpoint).
#[derive(Debug, thiserror::Error)]
pub enum StsSetupError {
    #[error("cannot read the STS CA file {path}: {source}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the STS CA file {0} holds no usable PEM certificate")]
    CaPem(String),
    #[error("STS endpoint {0:?} is not an http(s) URL")]
    Endpoint(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

impl StsClient {
    pub fn new(
        settings: StsSettings,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, StsSetupError> {
        if !(settings.endpoint.starts_with("https://") || settings.endpoint.starts_with("http://"))
        {
            return Err(StsSetupError::Endpoint(settings.endpoint.clone()));
        }
        let mut builder = reqwest::Client::builder()
            .tls_backend_rustls()
            .connect_timeout(settings.attempt_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(settings.max_concurrent)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ram-authenticator/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_file {
            builder = builder.tls_certs_merge(load_ca(path)?);
        }
        let http = builder
            .build()
            .map_err(|e| StsSetupError::Http(e.to_string()))?;
        Ok(Self {
            http,
            host: host_header(&settings.endpoint).into(),
            permits: Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
            settings: Arc::new(settings),
            metrics,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.settings.endpoint
    }

    pub fn settings(&self) -> &StsSettings {
        &self.settings
    }

    /// Refuses a token that signs `host` or `content-type` with other values than the ones this
    /// client sends (see [`crate::token::check_sent_headers`]).
    pub fn check_sent_headers(&self, req: &SignedRequest) -> Result<(), TokenError> {
        crate::token::check_sent_headers(
            req,
            &[("host", &self.host), ("content-type", CONTENT_TYPE)],
        )
    }

    /// Sends the signed request recovered from a token and reads the caller's identity.
    pub async fn get_caller_identity(
        &self,
        req: &SignedRequest,
    ) -> Result<CallerIdentity, StsError> {
        let body = self
            .call(req.method(), &req.query_string(), &req.headers())
            .await?;
        let identity = serde_json::from_slice::<CallerIdentity>(&body)
            .map_err(|e| StsError::BadResponse(format!("identity JSON: {e}")))
            .and_then(|identity| {
                if identity.arn.is_empty() || identity.account_id.is_empty() {
                    Err(StsError::BadResponse(
                        "identity without Arn or AccountId".into(),
                    ))
                } else {
                    Ok(identity)
                }
            });
        if identity.is_err() {
            self.bad_response("unparseable");
        }
        identity
    }

    /// Sends one request (with retries inside the deadline) and returns the body of a 200.
    pub async fn call(
        &self,
        method: &str,
        query: &str,
        headers: &[(String, String)],
    ) -> Result<Vec<u8>, StsError> {
        // Built once, before a slot is taken: what cannot be built is never retried.
        let prepared = self.prepare(method, query, headers)?;
        let started = Instant::now();
        let deadline = self.settings.deadline;
        let result = tokio::time::timeout(deadline, self.call_with_retries(&prepared))
            .await
            .unwrap_or(Err(StsError::DeadlineExceeded(deadline)));
        if let Some(m) = &self.metrics {
            let outcome = match &result {
                Ok(_) => "success",
                Err(StsError::Rejected { .. }) => "rejected",
                Err(StsError::Throttled { .. }) => "throttled",
                Err(StsError::ServerError { .. }) => "server_error",
                Err(StsError::Unavailable(_)) | Err(StsError::DeadlineExceeded(_)) => "unavailable",
                Err(StsError::BadResponse(_)) => "bad_response",
                Err(StsError::Unsendable(_)) => "unsendable",
            };
            m.observe_sts_call(outcome, started.elapsed());
            if matches!(result, Err(StsError::Throttled { .. })) {
                m.sts_throttles.inc();
            }
        }
        result
    }

    /// The request as it will be sent: the endpoint's URL with `query`, the given headers
    /// (except `host` and `content-type`, which are this client's), `Accept` and, for a `POST`,
    /// [`CONTENT_TYPE`].
    fn prepare(
        &self,
        method: &str,
        query: &str,
        headers: &[(String, String)],
    ) -> Result<Prepared, StsError> {
        use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE as CT};
        let url = if query.is_empty() {
            format!("{}/", self.settings.endpoint)
        } else {
            format!("{}/?{query}", self.settings.endpoint)
        };
        // The URL may carry a v1 token's signature: say what is wrong, never what it holds.
        let url = reqwest::Url::parse(&url)
            .map_err(|e| StsError::Unsendable(format!("the URL cannot be built: {e}")))?;
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| StsError::Unsendable("bad method".into()))?;
        let mut map = HeaderMap::new();
        map.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if method == reqwest::Method::POST {
            map.insert(CT, HeaderValue::from_static(CONTENT_TYPE));
        }
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                StsError::Unsendable(format!(
                    "header name {:?} is not an HTTP token",
                    crate::types::shorten(k, 64)
                ))
            })?;
            if name == reqwest::header::HOST || name == CT {
                continue;
            }
            let value = HeaderValue::from_str(v)
                .ok()
                .filter(|_| crate::token::is_sendable_value(v))
                .ok_or_else(|| {
                    StsError::Unsendable(format!("header {name} has a value that cannot be sent"))
                })?;
            map.insert(name, value);
        }
        Ok(Prepared {
            method,
            url,
            headers: map,
        })
    }

    fn bad_response(&self, reason: &'static str) {
        if let Some(m) = &self.metrics {
            m.sts_bad_response(reason);
        }
    }

    async fn call_with_retries(&self, prepared: &Prepared) -> Result<Vec<u8>, StsError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StsError::Unavailable("client closed".into()))?;
        let mut attempt = 0u32;
        loop {
            let result = self.attempt(prepared).await;
            let retryable = matches!(
                result,
                Err(StsError::Unavailable(_)) | Err(StsError::ServerError { .. })
            );
            if !retryable || attempt >= self.settings.max_retries {
                return result;
            }
            attempt += 1;
            let base = 50u64 << attempt.min(6);
            let jitter = rand::random_range(0..=base);
            tokio::time::sleep(Duration::from_millis(base + jitter)).await;
        }
    }

    async fn attempt(&self, prepared: &Prepared) -> Result<Vec<u8>, StsError> {
        let response = self
            .http
            .request(prepared.method.clone(), prepared.url.clone())
            .headers(prepared.headers.clone())
            .timeout(self.settings.attempt_timeout)
            .send()
            .await
            .map_err(|e| {
                if e.is_builder() {
                    return StsError::Unsendable(describe_reqwest_error(&e));
                }
                if let Some(m) = &self.metrics {
                    m.sts_connection_failures.inc();
                }
                StsError::Unavailable(describe_reqwest_error(&e))
            })?;
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            // Not followed: the target would receive the signed request.
            self.bad_response("redirect");
            return Err(StsError::BadResponse(format!(
                "HTTP {status} redirect, which is not followed"
            )));
        }
        let body = self.read_body(response).await?;
        if let Some(m) = &self.metrics {
            m.sts_responses
                .get_or_create(&crate::metrics::ResponseCodeLabel {
                    ResponseCode: status.to_string(),
                })
                .inc();
        }
        if status == 200 {
            return Ok(body.to_vec());
        }
        let err: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        let code = if err.code.is_empty() {
            format!("HTTP{status}")
        } else {
            err.code.chars().take(80).collect()
        };
        Err(if code.starts_with("Throttling") || status == 429 {
            StsError::Throttled { code }
        } else if status >= 500 {
            StsError::ServerError { status, code }
        } else {
            StsError::Rejected {
                status,
                code,
                request_id: err.request_id.chars().take(64).collect(),
            }
        })
    }

    /// Reads a body up to [`MAX_RESPONSE_BYTES`], chunk by chunk, and stops at the cap.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, StsError> {
        let too_large = || {
            self.bad_response("too_large");
            StsError::BadResponse(format!(
                "the answer is larger than {MAX_RESPONSE_BYTES} bytes"
            ))
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| StsError::Unavailable(describe_reqwest_error(&e)))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// A request ready to send (cloned for each attempt).
struct Prepared {
    method: reqwest::Method,
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
}

/// The `Host` header reqwest sends for `endpoint`.
fn host_header(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(url) => {
            let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
            match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        }
        Err(_) => String::new(),
    }
}

fn describe_reqwest_error(e: &reqwest::Error) -> String {
    // The URL may carry a v1 token's query (signature, security token): never print it.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

fn load_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, StsSetupError> {
    let pem = std::fs::read(path).map_err(|source| StsSetupError::CaFile {
        path: path.display().to_string(),
        source,
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|_| StsSetupError::CaPem(path.display().to_string()))?;
    if certs.is_empty() {
        return Err(StsSetupError::CaPem(path.display().to_string()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_choice() {
        assert_eq!(
            endpoint_for(Some("http://127.0.0.1:9/"), Some("cn-hangzhou")),
            "http://127.0.0.1:9"
        );
        assert_eq!(
            endpoint_for(None, Some("cn-hangzhou")),
            "https://sts-vpc.cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(endpoint_for(None, None), GLOBAL_ENDPOINT);
        assert_eq!(endpoint_for(Some(""), Some("")), GLOBAL_ENDPOINT);
    }

    #[test]
    fn host_header_is_the_endpoints() {
        assert_eq!(host_header("https://STS.aliyuncs.com"), "sts.aliyuncs.com");
        assert_eq!(
            host_header("https://sts.aliyuncs.com:443"),
            "sts.aliyuncs.com"
        );
        assert_eq!(host_header("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(host_header("https://[::1]:9443"), "[::1]:9443");
    }

    fn client() -> StsClient {
        StsClient::new(StsSettings::new("http://127.0.0.1:9".into()), None).expect("client")
    }

    #[test]
    fn prepares_our_host_and_content_type() {
        let headers = vec![
            ("host".to_string(), "evil.example".to_string()),
            ("content-type".to_string(), "text/evil".to_string()),
            ("x-acs-date".to_string(), "2026-01-01T00:00:00Z".to_string()),
        ];
        let p = client().prepare("POST", "a=b", &headers).expect("prepared");
        assert_eq!(p.url.as_str(), "http://127.0.0.1:9/?a=b");
        assert!(
            p.headers.get("host").is_none(),
            "reqwest sets Host from the URL"
        );
        assert_eq!(p.headers["content-type"], CONTENT_TYPE);
        assert_eq!(p.headers["accept"], "application/json");
        assert_eq!(p.headers["x-acs-date"], "2026-01-01T00:00:00Z");
        let p = client().prepare("GET", "", &[]).expect("prepared");
        assert!(p.headers.get("content-type").is_none());
    }

    #[test]
    fn unbuildable_requests_are_refused_before_sending() {
        for (k, v) in [
            ("x-acs-a b", "v"),
            ("x-acs-a", "line\nbreak"),
            ("x-acs-a", "del\u{7f}"),
            ("x-acs-a", "caf\u{e9}"),
        ] {
            let err = client()
                .prepare("POST", "", &[(k.to_string(), v.to_string())])
                .err()
                .expect("refused");
            assert!(matches!(err, StsError::Unsendable(_)), "{k:?} {v:?}: {err}");
            assert!(err.is_verdict_on_token());
            assert!(!err.to_string().contains("line"), "value not echoed: {err}");
        }
    }

    #[test]
    fn reads_sts_error_bodies() {
        let err: ErrorBody = serde_json::from_str(
            r#"{"RequestId":"r","Code":"SignatureDoesNotMatch","Message":"m"}"#,
        )
        .expect("error");
        assert_eq!(err.code, "SignatureDoesNotMatch");
    }
}

//! The thin HTTP layer: one listener (plain HTTP or HTTPS), STS requests at `/`, the ECS metadata
//! stand-in under `/latest/`, the credentials URI at `/credentials-uri`, the admin API under
//! `/_emulator/`, graceful shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::admin::{Decision, FaultSpec, Faults, Stats, SUCCESS_CODE};
use super::engine::{new_request_id, render, AssumedRole, Emulator, Request, RequestInfo};
use super::errors::StsErrorCode;
use super::standins::{
    Access, MetadataSpec, StandIns, TokenGrant, UriSpec, CREDENTIALS_URI_PATH, HANG_FOR, SUCCESS,
    TOKEN_HEADER, TOKEN_TTL_HEADER,
};

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to send its request headers, or to finish the TLS handshake.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a request needs.
#[derive(Debug)]
pub struct AppState {
    pub engine: Emulator,
    pub faults: Faults,
    pub stats: Stats,
    pub standins: StandIns,
}

/// Where the metadata service lists the instance's role and answers its credentials.
const SECURITY_CREDENTIALS: &str = "/latest/meta-data/ram/security-credentials";

/// The routes: admin under `/_emulator/`, the metadata stand-in under `/latest/`, the credentials
/// URI at `/credentials-uri`, everything else is an STS request.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/_emulator/faults", get(get_faults).post(set_faults))
        .route("/_emulator/stats", get(get_stats))
        .route("/_emulator/reset", post(reset))
        .route("/_emulator/health", get(|| async { "ok\n" }))
        .route(
            "/_emulator/metadata",
            get(get_metadata_mode).post(set_metadata_mode),
        )
        .route(
            "/_emulator/credentials-uri",
            get(get_uri_spec).post(set_uri_spec),
        )
        .route("/_emulator", any(admin_not_found))
        .route("/_emulator/", any(admin_not_found))
        .route("/_emulator/{*rest}", any(admin_not_found))
        .route("/latest/api/token", any(metadata_token))
        .route(SECURITY_CREDENTIALS, any(metadata_list))
        .route(&format!("{SECURITY_CREDENTIALS}/"), any(metadata_list))
        .route(
            &format!("{SECURITY_CREDENTIALS}/{{role}}"),
            any(metadata_credentials),
        )
        .route("/latest", any(metadata_other))
        .route("/latest/{*rest}", any(metadata_other))
        .route(CREDENTIALS_URI_PATH, any(credentials_uri))
        .fallback(sts)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn sts(
    State(st): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let header_list: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
        .collect();
    let req = Request {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &header_list,
        body: &body,
    };
    let (info, result, fault) = match st.faults.next() {
        Decision::Pass => {
            let o = st.engine.handle(&req);
            (o.info, o.result, "none")
        }
        Decision::Throttle => (
            RequestInfo::peek(&req),
            Err(StsErrorCode::Throttling),
            "throttle",
        ),
        Decision::Error => (
            RequestInfo::peek(&req),
            Err(StsErrorCode::InternalError),
            "error",
        ),
        Decision::Delay(delay) => {
            tokio::time::sleep(delay).await;
            let o = st.engine.handle(&req);
            (o.info, o.result, "slow")
        }
    };
    let request_id = new_request_id();
    let (status, json) = render(&result, &request_id);
    let code = match &result {
        Ok(_) => SUCCESS_CODE,
        Err(e) => e.code(),
    };
    st.stats.record(info.action_label(), code);
    tracing::info!(
        method = %method,
        action = %loggable(info.action.as_deref().unwrap_or("-")),
        access_key_id = %loggable(info.access_key_id.as_deref().unwrap_or("-")),
        format = info.scheme.as_str(),
        code,
        status,
        fault,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        request_id = %request_id,
        "sts request"
    );
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json,
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    response
}

/// Untrusted text for a log line: only `A-Z a-z 0-9 . _ @ -`, others become `?`, 64 at most.
fn loggable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-') {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn text(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain;charset=utf-8"),
    );
    response
}

/// The credentials JSON of the metadata service and the credentials URI.
fn credentials_json(creds: &AssumedRole, now: &str, last_updated: bool) -> serde_json::Value {
    let mut json = serde_json::json!({
        "Code": SUCCESS,
        "AccessKeyId": creds.access_key_id,
        "AccessKeySecret": creds.access_key_secret.expose(),
        "SecurityToken": creds.security_token.expose(),
        "Expiration": creds.expiration,
    });
    if last_updated {
        json["LastUpdated"] = serde_json::Value::from(now);
    }
    json
}

/// Holds a request the stand-in is told not to answer.
async fn hang(st: &AppState) -> Response {
    st.stats.record_metadata("hang");
    tokio::time::sleep(HANG_FOR).await;
    text(StatusCode::GATEWAY_TIMEOUT, "no answer\n".into())
}

/// Counts and logs a metadata answer.
fn metadata_answer(
    st: &AppState,
    what: &'static str,
    outcome: &'static str,
    status: StatusCode,
    body: String,
) -> Response {
    st.stats.record_metadata(outcome);
    tracing::info!(what, outcome, status = status.as_u16(), "metadata request");
    text(status, body)
}

async fn metadata_token(
    State(st): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if method != Method::PUT {
        return metadata_answer(
            &st,
            "token",
            "refused",
            StatusCode::METHOD_NOT_ALLOWED,
            "use PUT\n".into(),
        );
    }
    let ttl = headers.get(TOKEN_TTL_HEADER).and_then(|v| v.to_str().ok());
    match st.standins.grant_token(ttl, st.engine.now()) {
        TokenGrant::Token(token) => metadata_answer(&st, "token", "token", StatusCode::OK, token),
        TokenGrant::BadTtl(why) => {
            metadata_answer(&st, "token", "refused", StatusCode::BAD_REQUEST, why + "\n")
        }
        TokenGrant::NotSupported => metadata_answer(
            &st,
            "token",
            "refused",
            StatusCode::NOT_FOUND,
            "not found\n".into(),
        ),
        TokenGrant::Full => metadata_answer(
            &st,
            "token",
            "refused",
            StatusCode::SERVICE_UNAVAILABLE,
            "too many tokens\n".into(),
        ),
        TokenGrant::Hang => hang(&st).await,
    }
}

/// Checks method, mode and token of a metadata GET; `Err` is the answer to give instead.
async fn metadata_gate(
    st: &AppState,
    what: &'static str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<&'static str, Response> {
    let token = headers.get(TOKEN_HEADER).map(|v| v.to_str().unwrap_or(""));
    match st.standins.access(token, st.engine.now()) {
        Access::Hang => Err(hang(st).await),
        Access::BadToken => Err(metadata_answer(
            st,
            what,
            "refused",
            StatusCode::UNAUTHORIZED,
            "the metadata token is not valid or has expired\n".into(),
        )),
        Access::TokenRequired => Err(metadata_answer(
            st,
            what,
            "refused",
            StatusCode::FORBIDDEN,
            "a metadata token is required (hardened mode)\n".into(),
        )),
        Access::Allowed { .. } if *method != Method::GET => Err(metadata_answer(
            st,
            what,
            "refused",
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET\n".into(),
        )),
        Access::Allowed { hardened } => Ok(if hardened { "hardened" } else { "plain" }),
    }
}

async fn metadata_list(
    State(st): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let outcome = match metadata_gate(&st, "list", &method, &headers).await {
        Ok(o) => o,
        Err(answer) => return answer,
    };
    match st.engine.ecs_metadata() {
        Some(role) => metadata_answer(&st, "list", outcome, StatusCode::OK, role.role_name.clone()),
        None => metadata_answer(
            &st,
            "list",
            "refused",
            StatusCode::NOT_FOUND,
            "this instance has no RAM role\n".into(),
        ),
    }
}

async fn metadata_credentials(
    State(st): State<Arc<AppState>>,
    UrlPath(role): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let outcome = match metadata_gate(&st, "credentials", &method, &headers).await {
        Ok(o) => o,
        Err(answer) => return answer,
    };
    let Some(stand_in) = st.engine.ecs_metadata().filter(|r| r.role_name == role) else {
        return metadata_answer(
            &st,
            "credentials",
            "refused",
            StatusCode::NOT_FOUND,
            "no such role on this instance\n".into(),
        );
    };
    match st.engine.mint_stand_in(stand_in) {
        Ok(creds) => {
            st.stats.record_metadata(outcome);
            let now = crate::types::format_utc(st.engine.now());
            tracing::info!(
                what = "credentials",
                outcome,
                access_key_id = %creds.access_key_id,
                "metadata request"
            );
            Json(credentials_json(&creds, &now, true)).into_response()
        }
        Err(e) => metadata_answer(
            &st,
            "credentials",
            "refused",
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", e.code()),
        ),
    }
}

async fn metadata_other(State(st): State<Arc<AppState>>) -> Response {
    if st.standins.metadata().mode == super::standins::MetadataMode::Hang {
        return hang(&st).await;
    }
    metadata_answer(
        &st,
        "other",
        "refused",
        StatusCode::NOT_FOUND,
        "not found\n".into(),
    )
}

async fn credentials_uri(State(st): State<Arc<AppState>>, method: Method) -> Response {
    st.stats.record_credentials_uri();
    let refuse = |status: StatusCode, code: &str, message: &str| {
        (
            status,
            Json(serde_json::json!({"Code": code, "Message": message})),
        )
            .into_response()
    };
    if method != Method::GET {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "use GET",
        );
    }
    let Some(stand_in) = st.engine.credentials_uri() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the keys file has no credentialsUri",
        );
    };
    let spec = st.standins.uri();
    let status = StatusCode::from_u16(spec.status).unwrap_or(StatusCode::OK);
    if spec.code != SUCCESS {
        tracing::info!(code = %loggable(&spec.code), status = spec.status, "credentials-uri request");
        return refuse(
            status,
            &spec.code,
            "the emulator was told to answer this code",
        );
    }
    match st.engine.mint_stand_in(stand_in) {
        Ok(creds) => {
            tracing::info!(access_key_id = %creds.access_key_id, "credentials-uri request");
            let now = crate::types::format_utc(st.engine.now());
            (status, Json(credentials_json(&creds, &now, false))).into_response()
        }
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, e.code(), &e.to_string()),
    }
}

async fn get_metadata_mode(State(st): State<Arc<AppState>>) -> Json<MetadataSpec> {
    Json(st.standins.metadata())
}

async fn set_metadata_mode(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<MetadataSpec>(&body) {
        Ok(spec) => {
            st.standins.set_metadata(spec);
            tracing::info!(mode = ?spec.mode, "metadata mode set");
            Json(spec).into_response()
        }
        Err(e) => admin_error(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON {{\"mode\":\"any|hardened|plain|hang\"}}: {e}"),
        ),
    }
}

async fn get_uri_spec(State(st): State<Arc<AppState>>) -> Json<UriSpec> {
    Json(st.standins.uri())
}

async fn set_uri_spec(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let spec = serde_json::from_slice::<UriSpec>(&body)
        .map_err(|e| e.to_string())
        .and_then(UriSpec::check);
    match spec {
        Ok(spec) => {
            tracing::info!(code = %loggable(&spec.code), status = spec.status, "credentials-uri answer set");
            st.standins.set_uri(spec.clone());
            Json(spec).into_response()
        }
        Err(e) => admin_error(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON {{\"code\":\"Success|<code>\",\"status\":200}} (status optional, 200..599): {e}"),
        ),
    }
}

async fn get_faults(State(st): State<Arc<AppState>>) -> Json<FaultSpec> {
    Json(st.faults.get())
}

async fn set_faults(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultSpec>(&body) {
        Ok(spec) => {
            let spec = st.faults.set(spec);
            tracing::info!(mode = ?spec.mode, delay_ms = spec.delay_ms, count = ?spec.count, "fault set");
            Json(spec).into_response()
        }
        Err(e) => admin_error(
            StatusCode::BAD_REQUEST,
            format!(
                "the body must be JSON {{\"mode\":\"none|throttle|error|slow\",\"delayMs\":N,\"count\":N}} (delayMs and count optional): {e}"
            ),
        ),
    }
}

async fn get_stats(State(st): State<Arc<AppState>>) -> Response {
    Json(st.stats.snapshot()).into_response()
}

async fn reset(State(st): State<Arc<AppState>>) -> Response {
    st.stats.reset();
    st.faults.set(FaultSpec::default());
    st.standins.reset();
    tracing::info!("stats and faults reset");
    Json(st.stats.snapshot()).into_response()
}

async fn admin_not_found(uri: Uri) -> Response {
    admin_error(
        StatusCode::NOT_FOUND,
        format!(
            "no admin endpoint {}; there are GET|POST /_emulator/faults, GET /_emulator/stats, POST /_emulator/reset, GET /_emulator/health, GET|POST /_emulator/metadata, GET|POST /_emulator/credentials-uri",
            loggable(uri.path())
        ),
    )
}

fn admin_error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    #[error("{0} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(String),
    #[error("the certificate and key cannot be used: {0}")]
    Config(String),
}

/// Builds the TLS acceptor from PEM files (HTTP/2 and HTTP/1.1 offered by ALPN).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.display().to_string()));
    }
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| TlsError::NoKey(key.display().to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// SIGTERM and SIGINT, registered once at start.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next signal.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "ctrl-c"
        }
    }
}

/// Serves `app` on `listener` until the first signal, then drains in-flight requests for up to
/// [`DRAIN_TIMEOUT`] (a second signal stops at once).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    mut signals: Signals,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    loop {
        let (stream, peer) = tokio::select! {
            signal = signals.recv() => {
                tracing::info!(signal, "shutting down");
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let conn = builder.serve_connection(TokioIo::new(tls_stream), service);
                            watcher.watch(conn.into_owned()).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; stopping anyway");
        }
        signal = signals.recv() => tracing::warn!(signal, "second signal; stopping now"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loggable_text_is_tame() {
        assert_eq!(loggable("LTAI5t.x_y@z-1"), "LTAI5t.x_y@z-1");
        assert_eq!(loggable("a\nb c"), "a?b?c");
        assert_eq!(loggable(&"x".repeat(100)).len(), 64);
    }
}

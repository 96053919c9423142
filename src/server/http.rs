//! The HTTP layer: routes, the review handler (read the body, decode, authenticate, encode; the
//! audit record is [`crate::audit`]'s), the accept loops of the TLS and the plain health
//! listeners. The bounds on connections are in [`super::limits`], their bookkeeping in
//! [`super::conn`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::conn::{self, Metered, Registry, RequestHandle, Stage, Tracked};
use super::limits::ListenerLimits;
use super::{AppState, Shutdown};
use crate::audit;
use crate::authenticator::Denial;
use crate::metrics::{AuthResult, CloseReason};
use crate::review::{self, MAX_BODY};

fn tls_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/authenticate", post(authenticate))
        .merge(health_router())
        .with_state(state)
}

fn health_router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.ready() {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state
        .metrics
        .cache_entries
        .set(i64::try_from(state.auth.cached_entries()).unwrap_or(i64::MAX));
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

struct InFlight<'a>(&'a crate::metrics::Metrics);

impl<'a> InFlight<'a> {
    fn new(m: &'a crate::metrics::Metrics) -> Self {
        m.reviews_in_flight.inc();
        Self(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.reviews_in_flight.dec();
    }
}

/// Why a body was not read.
enum BodyError {
    TooLarge,
    Slow,
    Broken,
}

/// Body bytes counted against the listener's body buffer until dropped.
struct BodyHold<'a> {
    handle: Option<&'a RequestHandle>,
    bytes: usize,
}

impl Drop for BodyHold<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.handle {
            h.conn.release_body(self.bytes);
        }
    }
}

/// Reads a request body of at most [`MAX_BODY`] bytes within `timeout`, giving its bytes back
/// to the connection's control budget as they arrive and counting them against the listener's
/// body buffer for as long as the returned hold lives.
async fn read_body(
    body: Body,
    handle: Option<&RequestHandle>,
    timeout: Duration,
) -> Result<(Bytes, BodyHold<'_>), BodyError> {
    let collect = async {
        let mut hold = BodyHold { handle, bytes: 0 };
        let mut stream = body.into_data_stream();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| BodyError::Broken)?;
            if out.len() + chunk.len() > MAX_BODY {
                return Err(BodyError::TooLarge);
            }
            if let Some(h) = handle {
                h.conn.credit(chunk.len());
                h.conn.hold_body(chunk.len());
            }
            hold.bytes += chunk.len();
            out.extend_from_slice(&chunk);
        }
        Ok((Bytes::from(out), hold))
    };
    tokio::time::timeout(timeout, collect)
        .await
        .unwrap_or(Err(BodyError::Slow))
}

async fn authenticate(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started) + state.review_deadline;
    let handle = req.extensions().get::<RequestHandle>().cloned();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return body_refused(&state, started, BodyError::TooLarge);
    }
    let (body, _held) = match read_body(req.into_body(), handle.as_ref(), state.body_timeout).await
    {
        Ok(b) => b,
        Err(e) => {
            if let (Some(h), BodyError::Slow) = (&handle, &e) {
                h.conn.close(CloseReason::slow);
            }
            return body_refused(&state, started, e);
        }
    };
    if let Some(h) = &handle {
        h.conn.stage(h.id, Stage::Handler, None);
    }
    let _in_flight = InFlight::new(&state.metrics);
    let request = match review::decode(&body) {
        Ok(r) => r,
        Err(e) => {
            let record = audit::Record::malformed(&e, started.elapsed());
            state.metrics.observe_review(record.result, record.duration);
            state.audit.log(&record);
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    if let Some(refusal) = request.refusal() {
        let record = audit::Record::refused(refusal, request.api_version, started.elapsed());
        state.metrics.observe_review(record.result, record.duration);
        state.audit.log(&record);
        return Json(review::encode_deny(request.api_version, record.error())).into_response();
    }
    let work = async {
        let _permit = state.review_permits.acquire().await;
        state.auth.authenticate(request.token.expose()).await
    };
    let mut outcome = match tokio::time::timeout_at(deadline, work).await {
        Ok(o) => o,
        Err(_) => {
            let record = audit::Record::deadline(
                request.token.expose(),
                request.api_version,
                started.elapsed(),
            );
            state.metrics.observe_review(record.result, record.duration);
            state.audit.log(&record);
            return Json(review::encode_deny(request.api_version, record.error())).into_response();
        }
    };
    let mut audiences = None;
    if outcome.decision.is_ok() {
        match review::audiences(&request.audiences, &state.audiences) {
            Ok(auds) => audiences = auds,
            Err(_) => outcome.decision = Err(Denial::Audience),
        }
    }
    let record = audit::Record::review(&outcome, request.api_version, started.elapsed(), |a| {
        state.auth.is_scrubbed(a)
    });
    state.metrics.observe_review(record.result, record.duration);
    state.audit.log(&record);
    match &outcome.decision {
        Ok(user) => {
            Json(review::encode_allow(request.api_version, user, audiences)).into_response()
        }
        Err(_) => Json(review::encode_deny(request.api_version, record.error())).into_response(),
    }
}

fn body_refused(state: &AppState, started: Instant, e: BodyError) -> Response {
    state
        .metrics
        .observe_review(AuthResult::malformed_request, started.elapsed());
    let (status, msg) = match e {
        BodyError::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body is over 1 MiB: not a TokenReview\n",
        ),
        BodyError::Slow => (
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time\n",
        ),
        BodyError::Broken => (StatusCode::BAD_REQUEST, "request body could not be read\n"),
    };
    tracing::debug!(status = status.as_u16(), "request body refused");
    let mut response = (status, msg).into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// HTTP/1.1 and HTTP/2 connection builders for one listener's limits.
struct Builders {
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(l: &ListenerLimits) -> Self {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.timer(TokioTimer::new())
            .keep_alive(true)
            // The header bound is enforced by the connection checks (super::conn), from the
            // head's first byte rather than from the end of the previous answer.
            .header_read_timeout(None)
            .max_buf_size(l.max_header_bytes.max(8192))
            .max_headers(100);
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(l.http2_max_streams)
            .max_header_list_size(u32::try_from(l.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(l.http2_keepalive_interval)
            .keep_alive_timeout(l.http2_keepalive_timeout)
            .max_pending_accept_reset_streams(20)
            .max_local_error_reset_streams(256)
            .max_send_buf_size(64 * 1024);
        Self { h1, h2 }
    }
}

/// What serving a connection of one listener needs.
struct Serving {
    registry: Arc<Registry>,
    builders: Builders,
    app: Router,
    /// Body and handler together, from the request's start.
    request_deadline: Duration,
}

impl Serving {
    /// Serves HTTP on one accepted, handshaken connection until it ends or a bound closes it.
    async fn connection<IO>(
        &self,
        io: IO,
        h2: bool,
        conn: &Arc<conn::Conn>,
        stop: Option<Shutdown>,
    ) -> CloseReason
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        conn.ready(h2);
        let l = &self.registry.limits;
        let io = TokioIo::new(Metered::new(io, conn.clone()));
        let service = Tracked::new(
            self.app.clone(),
            conn.clone(),
            self.request_deadline,
            l.write,
        );
        if h2 {
            let c = self.builders.h2.serve_connection(io, service);
            conn::supervise(c, conn, l, stop).await
        } else {
            let c = self.builders.h1.serve_connection(io, service);
            conn::supervise(c, conn, l, stop).await
        }
    }
}

/// Accepts the next connection, or `None` at the first stop signal.
async fn accept(
    listener: &TcpListener,
    registry: &Registry,
    stop: &Shutdown,
) -> Option<tokio::net::TcpStream> {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.first_signal() => return None,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors (EMFILE, ENFILE): make one free by shedding, as at
                // the connection cap.
                if matches!(e.raw_os_error(), Some(23 | 24)) {
                    registry.shed_one();
                }
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if !registry.make_room() {
            tracing::debug!(
                limit = registry.limits.max_connections,
                "connection cap reached with nothing to shed; refusing a connection"
            );
            continue;
        }
        let _ = stream.set_nodelay(true);
        return Some(stream);
    }
}

/// Serves HTTPS until the first stop signal, then drains: idle connections close at once,
/// connections reading a body or writing an answer shortly after, in-flight reviews finish
/// (the caller bounds that wait).
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    registry: Arc<Registry>,
    shutdown: Shutdown,
) {
    let serving = Arc::new(Serving {
        request_deadline: state.review_deadline + registry.limits.body,
        builders: Builders::new(&registry.limits),
        app: tls_router(state),
        registry: registry.clone(),
    });
    let acceptor = TlsAcceptor::from(tls);
    while let Some(stream) = accept(&listener, &registry, &shutdown).await {
        let conn = registry.register();
        let (acceptor, serving, stop) = (acceptor.clone(), serving.clone(), shutdown.clone());
        tokio::spawn(async move {
            let registry = &serving.registry;
            let handshake = tokio::select! {
                r = tokio::time::timeout(registry.limits.tls_handshake, acceptor.accept(stream)) => r,
                _ = conn.killed() => {
                    registry.remove(&conn, conn.reason().unwrap_or(CloseReason::shed));
                    return;
                }
            };
            let reason = match handshake {
                Ok(Ok(tls)) => {
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    serving.connection(tls, h2, &conn, Some(stop)).await
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    CloseReason::tls_error
                }
                Err(_) => CloseReason::handshake_timeout,
            };
            registry.remove(&conn, reason);
        });
    }
    drop(listener);
    registry.wait_empty().await;
}

/// Serves the plain-HTTP health listener (HTTP/1.1, `/healthz`, `/readyz`, `/metrics`) until the
/// task is dropped; it keeps answering during a drain so that probes see `/readyz` fail.
pub async fn serve_health(listener: TcpListener, state: Arc<AppState>, registry: Arc<Registry>) {
    let serving = Arc::new(Serving {
        request_deadline: registry.limits.body,
        builders: Builders::new(&registry.limits),
        app: health_router().with_state(state),
        registry: registry.clone(),
    });
    let never = Shutdown::never();
    while let Some(stream) = accept(&listener, &registry, &never).await {
        let conn = registry.register();
        let serving = serving.clone();
        tokio::spawn(async move {
            let reason = serving.connection(stream, false, &conn, None).await;
            serving.registry.remove(&conn, reason);
        });
    }
}

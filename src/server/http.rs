//! The HTTP layer: routes, the review handler (decode, authenticate, encode; the audit record
//! is [`crate::audit`]'s), the TLS accept loop with connection limits and timeouts, and the
//! plain health listener.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::{AppState, Shutdown};
use crate::audit;
use crate::authenticator::Denial;
use crate::review::{self, MAX_BODY};

/// Limits on the HTTPS listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub max_concurrent_reviews: usize,
    pub header_read_timeout: Duration,
}

fn tls_router(state: Arc<AppState>, limits: Limits) -> Router {
    Router::new()
        .route(
            "/authenticate",
            post(authenticate)
                .layer::<_, std::convert::Infallible>(tower::limit::ConcurrencyLimitLayer::new(
                    limits.max_concurrent_reviews,
                ))
                .layer(DefaultBodyLimit::max(MAX_BODY)),
        )
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

async fn authenticate(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let started = Instant::now();
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
    let mut outcome = match tokio::time::timeout(
        state.review_deadline,
        state.auth.authenticate(request.token.expose()),
    )
    .await
    {
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

/// Serves HTTPS until the first stop signal, then waits for open connections to finish their
/// in-flight requests (the caller bounds that wait).
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    limits: Limits,
    shutdown: Shutdown,
) {
    let app = tls_router(state, limits);
    let acceptor = TlsAcceptor::from(tls);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(30));
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.first_signal() => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "connection limit reached; closing new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves the plain-HTTP health listener until the first stop signal.
pub async fn serve_health(listener: TcpListener, state: Arc<AppState>, shutdown: Shutdown) {
    let app = health_router().with_state(state.clone());
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.first_signal().await;
            // Keep answering /readyz (false) a moment so probes see the drain.
            tokio::time::sleep(Duration::from_millis(200)).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "health listener failed");
    }
    let _ = state.shutting_down.load(Ordering::Acquire);
}

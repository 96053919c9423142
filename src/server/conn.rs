//! Connection bookkeeping: what each open connection is doing, the checks that close it when a
//! bound of [`super::limits`] is passed, the byte meter under HTTP, and the choice of which
//! connection to shed at the cap.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tower::ServiceExt as _;

use super::limits::{
    ListenerLimits, ABANDONED_REQUEST_COST, CLOSE_GRACE, H2_HEAD_ALLOWANCE, REQUEST_FRAME_ALLOWANCE,
};
use crate::metrics::{CloseReason, Listener, ListenerLabel, Metrics};

/// Milliseconds since the first call in this process (monotonic).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a request is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Its body.
    Body,
    /// The handler (authentication).
    Handler,
    /// The client to take the answer.
    Write,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    stage: Stage,
    since: u64,
    deadline: u64,
}

/// One open connection.
pub struct Conn {
    pub id: u64,
    opened: u64,
    h2: AtomicBool,
    ready_at: AtomicU64,
    in_flight: AtomicU32,
    idle_since: AtomicU64,
    head_since: AtomicU64,
    served: AtomicU64,
    budget: AtomicI64,
    cap: i64,
    last_refill: AtomicU64,
    requests: Mutex<Vec<Slot>>,
    next_request: AtomicU64,
    reason: AtomicU8,
    kill: Notify,
    draining: AtomicBool,
    /// Body bytes its requests are holding.
    body_bytes: AtomicUsize,
    registry: Weak<Registry>,
}

fn reason_code(r: CloseReason) -> u8 {
    CloseReason::ALL
        .iter()
        .position(|x| *x == r)
        .and_then(|p| u8::try_from(p + 1).ok())
        .unwrap_or(1)
}

impl Conn {
    fn new(id: u64, budget: i64, registry: Weak<Registry>) -> Self {
        let now = now_ms();
        Self {
            id,
            opened: now,
            h2: AtomicBool::new(false),
            ready_at: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(now),
            head_since: AtomicU64::new(0),
            served: AtomicU64::new(0),
            budget: AtomicI64::new(budget),
            cap: budget,
            last_refill: AtomicU64::new(now),
            requests: Mutex::new(Vec::new()),
            next_request: AtomicU64::new(1),
            reason: AtomicU8::new(0),
            kill: Notify::new(),
            draining: AtomicBool::new(false),
            body_bytes: AtomicUsize::new(0),
            registry,
        }
    }

    /// Counts `n` more body bytes held in memory by a request of this connection; past the
    /// listener's body buffer, the connection holding the most is shed. Give them back with
    /// [`Self::release_body`].
    pub fn hold_body(&self, n: usize) {
        self.body_bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(registry) = self.registry.upgrade() {
            let used = registry.body_used.fetch_add(n, Ordering::Relaxed) + n;
            if used > registry.limits.body_buffer {
                registry.shed_largest_body();
            }
        }
    }

    /// Gives back body bytes counted by [`Self::hold_body`].
    pub fn release_body(&self, n: usize) {
        self.body_bytes.fetch_sub(n, Ordering::Relaxed);
        if let Some(registry) = self.registry.upgrade() {
            registry.body_used.fetch_sub(n, Ordering::Relaxed);
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The handshake is done; `h2` says whether HTTP/2 was negotiated.
    pub fn ready(&self, h2: bool) {
        let now = now_ms();
        self.h2.store(h2, Ordering::Relaxed);
        self.ready_at.store(now, Ordering::Relaxed);
        self.idle_since.store(now, Ordering::Relaxed);
    }

    /// Asks for the connection to be closed; the first reason given is kept.
    pub fn close(&self, reason: CloseReason) {
        let _ = self.reason.compare_exchange(
            0,
            reason_code(reason),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.kill.notify_one();
    }

    /// Resolves when the connection is asked to close.
    pub async fn killed(&self) {
        self.kill.notified().await
    }

    /// Why the connection is being closed, if it is.
    pub fn reason(&self) -> Option<CloseReason> {
        let code = self.reason.load(Ordering::Acquire);
        (code > 0)
            .then(|| CloseReason::ALL.get(usize::from(code) - 1).copied())
            .flatten()
    }

    fn on_read(&self, n: usize) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        if self.budget.fetch_sub(n, Ordering::Relaxed) - n < 0 {
            self.close(CloseReason::control_frames);
        }
        if !self.h2.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            self.head_since.store(now_ms().max(1), Ordering::Relaxed);
        }
    }

    /// Gives bytes back to the control budget (they served a request); never above its size.
    pub fn credit(&self, n: usize) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let cap = self.cap;
        let _ = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_add(n).min(cap.max(b)))
            });
    }

    fn refill(&self, limits: &ListenerLimits) {
        let now = now_ms();
        let last = self.last_refill.swap(now, Ordering::Relaxed);
        let elapsed = i64::try_from(now.saturating_sub(last)).unwrap_or(i64::MAX);
        let add = (limits.control_budget / 32).saturating_mul(elapsed) / 1000;
        let cap = self.cap;
        let _ = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_add(add).min(cap.max(b)))
            });
    }

    fn start_request(self: &Arc<Self>, deadline: Duration) -> RequestGuard {
        let now = now_ms();
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        let draining = self.draining.load(Ordering::Relaxed);
        let mut deadline = now.saturating_add(ms(deadline));
        if draining {
            deadline = deadline.min(now.saturating_add(ms(CLOSE_GRACE)));
        }
        self.slots().push(Slot {
            id,
            stage: Stage::Body,
            since: now,
            deadline,
        });
        RequestGuard {
            conn: self.clone(),
            id,
            done: false,
        }
    }

    /// Moves request `id` to `stage` with a new deadline `after` from now (never later than a
    /// drain allows).
    pub fn stage(&self, id: u64, stage: Stage, after: Option<Duration>) {
        let now = now_ms();
        let draining = self.draining.load(Ordering::Relaxed);
        if let Some(slot) = self.slots().iter_mut().find(|s| s.id == id) {
            slot.stage = stage;
            slot.since = now;
            if let Some(after) = after {
                slot.deadline = now.saturating_add(ms(after));
            }
            if draining && stage != Stage::Handler {
                slot.deadline = slot.deadline.min(now.saturating_add(ms(CLOSE_GRACE)));
            }
        }
    }

    fn end_request(&self, id: u64, completed: bool) {
        self.slots().retain(|s| s.id != id);
        if completed {
            self.served.fetch_add(1, Ordering::Relaxed);
            self.credit(REQUEST_FRAME_ALLOWANCE);
        } else {
            self.budget
                .fetch_sub(ABANDONED_REQUEST_COST, Ordering::Relaxed);
        }
        self.idle_since.store(now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The bound this connection has passed, if any.
    fn check(&self, limits: &ListenerLimits, now: u64) -> Option<CloseReason> {
        if self.budget.load(Ordering::Relaxed) < 0 {
            return Some(CloseReason::control_frames);
        }
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let ready = self.ready_at.load(Ordering::Relaxed);
            if self.served.load(Ordering::Relaxed) == 0
                && now.saturating_sub(ready) > ms(limits.header)
            {
                return Some(CloseReason::header_timeout);
            }
            let head = self.head_since.load(Ordering::Relaxed);
            if head != 0 && now.saturating_sub(head) > ms(limits.header) {
                return Some(CloseReason::header_timeout);
            }
            if now.saturating_sub(self.idle_since.load(Ordering::Relaxed)) > ms(limits.idle) {
                return Some(CloseReason::idle);
            }
        }
        self.slots().iter().find(|s| s.deadline < now).map(|s| {
            if s.stage == Stage::Write {
                CloseReason::write_timeout
            } else {
                CloseReason::slow
            }
        })
    }

    fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        let limit = now_ms().saturating_add(ms(CLOSE_GRACE));
        for slot in self.slots().iter_mut() {
            if slot.stage != Stage::Handler {
                slot.deadline = slot.deadline.min(limit);
            }
        }
    }

    /// How expendable the connection is at the cap: (class, age); lower class goes first, then
    /// the older. `None`: not a candidate.
    fn shed_rank(&self, now: u64) -> Option<(u8, u64)> {
        if self.reason().is_some() {
            return None;
        }
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            if self.served.load(Ordering::Relaxed) == 0 {
                return Some((0, now.saturating_sub(self.opened)));
            }
            return Some((
                1,
                now.saturating_sub(self.idle_since.load(Ordering::Relaxed)),
            ));
        }
        let slots = self.slots();
        let slowest = slots
            .iter()
            .filter(|s| s.stage != Stage::Handler)
            .map(|s| now.saturating_sub(s.since))
            .max()?;
        (slowest >= 1000).then_some((2, slowest))
    }
}

/// A request in flight; dropping it ends the request (abandoned unless [`Self::finish`]ed).
pub struct RequestGuard {
    conn: Arc<Conn>,
    id: u64,
    done: bool,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.conn.end_request(self.id, self.done);
    }
}

/// What the handler may know of its request's connection (a request extension).
#[derive(Clone)]
pub struct RequestHandle {
    pub conn: Arc<Conn>,
    pub id: u64,
}

/// The open connections of one listener.
pub struct Registry {
    pub listener: Listener,
    pub limits: ListenerLimits,
    metrics: Arc<Metrics>,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    empty: Notify,
    /// Body bytes held by all requests.
    body_used: AtomicUsize,
}

impl Registry {
    pub fn new(listener: Listener, limits: ListenerLimits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            listener,
            limits,
            metrics,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            empty: Notify::new(),
            body_used: AtomicUsize::new(0),
        })
    }

    /// Closes the connection whose requests hold the most body bytes.
    fn shed_largest_body(&self) {
        let victim = self
            .map()
            .values()
            .filter(|c| c.reason().is_none())
            .max_by_key(|c| c.body_bytes.load(Ordering::Relaxed))
            .cloned();
        if let Some(c) = victim {
            c.close(CloseReason::shed);
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open(&self) -> usize {
        self.map().len()
    }

    /// Makes room for a new connection: at the cap, asks the most expendable one to close.
    /// Returns false when nothing can be shed (the new connection is refused).
    pub fn make_room(&self) -> bool {
        if self.open() < self.limits.max_connections {
            return true;
        }
        if self.shed_one() {
            return true;
        }
        self.metrics
            .connection_closed(self.listener, CloseReason::limit);
        false
    }

    /// Asks the most expendable connection to close; false when none can go.
    pub fn shed_one(&self) -> bool {
        let now = now_ms();
        let map = self.map();
        let victim = map
            .values()
            .filter_map(|c| c.shed_rank(now).map(|(class, age)| (class, age, c)))
            .min_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        match victim {
            Some((_, _, c)) => {
                c.close(CloseReason::shed);
                true
            }
            None => false,
        }
    }

    pub fn register(self: &Arc<Self>) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(
            id,
            self.limits.control_budget,
            Arc::downgrade(self),
        ));
        self.map().insert(id, conn.clone());
        self.metrics
            .connections_open
            .get_or_create(&ListenerLabel {
                listener: self.listener,
            })
            .inc();
        conn
    }

    pub fn remove(&self, conn: &Conn, reason: CloseReason) {
        let now_empty = {
            let mut map = self.map();
            map.remove(&conn.id);
            map.is_empty()
        };
        self.metrics
            .connections_open
            .get_or_create(&ListenerLabel {
                listener: self.listener,
            })
            .dec();
        self.metrics.connection_closed(self.listener, reason);
        if now_empty {
            self.empty.notify_waiters();
        }
    }

    /// Resolves once no connection is open.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.empty.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The IO under HTTP, metered: every byte read is taken from the connection's control budget.
/// Once the connection is being closed for its budget, nothing more is read.
pub struct Metered<IO> {
    io: IO,
    conn: Arc<Conn>,
}

impl<IO> Metered<IO> {
    pub fn new(io: IO, conn: Arc<Conn>) -> Self {
        Self { io, conn }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Metered<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.conn.reason() == Some(CloseReason::control_frames) {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.conn.on_read(n);
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Metered<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A response body that ends its request when it is fully handed over (or dropped).
pub struct TrackedBody {
    inner: Body,
    guard: Option<RequestGuard>,
}

impl TrackedBody {
    fn settle(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.done = true;
        }
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        // The request ends when the body is dropped, not at its last frame: HTTP/2 keeps the
        // body until its last chunk fits the client's flow-control window.
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.settle();
        }
    }
}

/// The per-connection service: registers each request, hands it to the router, and tracks its
/// answer until written.
#[derive(Clone)]
pub struct Tracked {
    app: Router,
    conn: Arc<Conn>,
    request_deadline: Duration,
    write: Duration,
}

impl Tracked {
    pub fn new(app: Router, conn: Arc<Conn>, request_deadline: Duration, write: Duration) -> Self {
        Self {
            app,
            conn,
            request_deadline,
            write,
        }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = hyper::Response<TrackedBody>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let guard = self.conn.start_request(self.request_deadline);
        // The request's head was paid for when it was read: give it back. HTTP/2 heads are
        // HPACK-compressed, so their decoded size says little of what was read: a fixed
        // allowance, below the cost of abandoning the request.
        let head = req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
            + req.uri().path().len()
            + 16;
        let h2 = self.conn.h2.load(Ordering::Relaxed);
        self.conn.credit(if h2 {
            head.min(H2_HEAD_ALLOWANCE)
        } else {
            head
        });
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(RequestHandle {
            conn: self.conn.clone(),
            id: guard.id,
        });
        let app = self.app.clone();
        let write = self.write;
        Box::pin(async move {
            let response = match app.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            guard.conn.stage(guard.id, Stage::Write, Some(write));
            Ok(response.map(|inner| TrackedBody {
                inner,
                guard: Some(guard),
            }))
        })
    }
}

/// Drives one HTTP connection until it ends or a bound closes it; returns why it closed.
pub async fn supervise<C>(
    connection: C,
    conn: &Conn,
    limits: &ListenerLimits,
    stop: Option<super::Shutdown>,
) -> CloseReason
where
    C: hyper_util::server::graceful::GracefulConnection<Error = hyper::Error>,
{
    tokio::pin!(connection);
    let mut tick = tokio::time::interval(limits.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drop_at: Option<tokio::time::Instant> = None;
    let mut draining = false;
    let mut goaway_sent = false;
    loop {
        let dropping = async {
            match drop_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let stopping = async {
            match &stop {
                Some(s) if !draining => s.first_signal().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = &ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                    if e.is_timeout() && conn.reason().is_none() {
                        // hyper's own timer: the HTTP/2 keep-alive PING went unanswered.
                        return CloseReason::keepalive_timeout;
                    }
                }
                return conn.reason().unwrap_or(if draining { CloseReason::shutdown } else { CloseReason::client });
            }
            _ = conn.kill.notified() => {}
            _ = tick.tick() => {
                conn.refill(limits);
                if let Some(reason) = conn.check(limits, now_ms()) {
                    conn.close(reason);
                }
                // Draining and nothing left in flight: a client that does not acknowledge the
                // GOAWAY does not hold the stop.
                if draining && drop_at.is_none() && conn.in_flight.load(Ordering::Relaxed) == 0 {
                    drop_at = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
            }
            _ = stopping => {
                draining = true;
                conn.begin_drain();
                connection.as_mut().graceful_shutdown();
                goaway_sent = true;
                if conn.in_flight.load(Ordering::Relaxed) == 0 {
                    drop_at = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
            }
            _ = dropping => {
                return conn.reason().unwrap_or(CloseReason::shutdown);
            }
        }
        if let Some(reason) = conn.reason() {
            if reason == CloseReason::shed {
                return reason;
            }
            if !goaway_sent {
                connection.as_mut().graceful_shutdown();
                goaway_sent = true;
            }
            let grace = if reason == CloseReason::control_frames {
                CLOSE_GRACE / 4
            } else {
                CLOSE_GRACE
            };
            let at = tokio::time::Instant::now() + grace;
            drop_at = Some(drop_at.map_or(at, |d| d.min(at)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ListenerLimits {
        let ms = Duration::from_millis;
        ListenerLimits {
            max_connections: 2,
            tls_handshake: ms(1000),
            header: ms(1000),
            body: ms(1000),
            write: ms(1000),
            idle: ms(5000),
            max_header_bytes: 8192,
            http2_max_streams: 256,
            http2_keepalive_interval: ms(1000),
            http2_keepalive_timeout: ms(1000),
            control_budget: 100_000,
            body_buffer: 1000,
        }
    }

    fn ready_conn(id: u64, h2: bool) -> Arc<Conn> {
        let c = Arc::new(Conn::new(id, limits().control_budget, Weak::new()));
        c.ready(h2);
        c
    }

    #[test]
    fn reading_past_the_budget_closes_and_credits_never_overfill() {
        let c = ready_conn(1, true);
        c.credit(1_000_000);
        assert_eq!(
            c.budget.load(Ordering::Relaxed),
            100_000,
            "credit is capped"
        );
        c.on_read(60_000);
        assert_eq!(c.reason(), None);
        c.on_read(60_000);
        assert_eq!(c.reason(), Some(CloseReason::control_frames));
        assert_eq!(
            c.check(&limits(), now_ms()),
            Some(CloseReason::control_frames)
        );
    }

    #[test]
    fn abandoned_requests_cost_and_completed_ones_do_not() {
        let c = ready_conn(1, true);
        let before = c.budget.load(Ordering::Relaxed);
        drop(c.start_request(Duration::from_secs(1)));
        assert_eq!(
            c.budget.load(Ordering::Relaxed),
            before - ABANDONED_REQUEST_COST
        );
        let mut done = c.start_request(Duration::from_secs(1));
        done.done = true;
        drop(done);
        assert_eq!(
            c.budget.load(Ordering::Relaxed),
            before - ABANDONED_REQUEST_COST + i64::try_from(REQUEST_FRAME_ALLOWANCE).unwrap_or(0)
        );
        assert_eq!(c.served.load(Ordering::Relaxed), 1);
        assert_eq!(c.in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn each_stage_has_its_deadline() {
        let l = limits();
        let now = now_ms();
        // No request after the handshake.
        let c = ready_conn(1, true);
        assert_eq!(c.check(&l, now + 500), None);
        assert_eq!(c.check(&l, now + 1500), Some(CloseReason::header_timeout));
        // HTTP/1.1 head started but never finished.
        let c = ready_conn(2, false);
        c.served.store(1, Ordering::Relaxed);
        c.on_read(10);
        assert_eq!(c.check(&l, now + 1500), Some(CloseReason::header_timeout));
        // HTTP/2 bytes (PINGs) while idle do not count as activity.
        let c = ready_conn(3, true);
        c.served.store(1, Ordering::Relaxed);
        c.on_read(17);
        assert_eq!(c.check(&l, now + 4000), None);
        assert_eq!(c.check(&l, now + 6000), Some(CloseReason::idle));
        // A request past its deadline, then an answer not taken.
        let c = ready_conn(4, true);
        let g = c.start_request(Duration::from_millis(1000));
        assert_eq!(c.check(&l, now + 500), None);
        assert_eq!(c.check(&l, now + 1500), Some(CloseReason::slow));
        c.stage(g.id, Stage::Write, Some(Duration::from_millis(200)));
        assert_eq!(c.check(&l, now_ms() + 100), None);
        assert_eq!(
            c.check(&l, now_ms() + 400),
            Some(CloseReason::write_timeout)
        );
    }

    #[test]
    fn the_cap_sheds_the_most_expendable_connection() {
        let metrics = Arc::new(Metrics::new());
        let r = Registry::new(Listener::https, limits(), metrics);
        let busy = r.register();
        busy.ready(true);
        let mut g = busy.start_request(Duration::from_secs(10));
        busy.stage(g.id, Stage::Handler, None);
        let fresh = r.register();
        fresh.ready(true);
        assert!(r.make_room(), "a connection that never sent a request goes");
        assert_eq!(fresh.reason(), Some(CloseReason::shed));
        assert_eq!(busy.reason(), None);
        r.remove(&fresh, CloseReason::shed);
        let other = r.register();
        other.close(CloseReason::idle);
        // Only a review being authenticated and a connection already closing: refuse.
        assert!(!r.make_room());
        g.done = true;
    }

    #[test]
    fn past_the_body_buffer_the_largest_holder_is_shed() {
        let metrics = Arc::new(Metrics::new());
        let r = Registry::new(Listener::https, limits(), metrics);
        let (small, large) = (r.register(), r.register());
        small.hold_body(100);
        large.hold_body(800);
        assert_eq!(large.reason(), None);
        small.hold_body(200);
        assert_eq!(large.reason(), Some(CloseReason::shed));
        assert_eq!(small.reason(), None);
        large.release_body(800);
        small.release_body(300);
        assert_eq!(r.body_used.load(Ordering::Relaxed), 0);
    }
}

//! A fake Kubernetes API server on 127.0.0.1 (plain HTTP) for the mapping sources' tests.
//!
//! It speaks the list/watch protocol the way kube-apiserver does for the two collections the
//! sources read:
//! - `/apis/ramauthenticator.k8s.alibabacloud/v1alpha1/ramidentitymappings` (cluster-scoped),
//!   with `GET .../{name}` and `PATCH .../{name}/status` (merge patch);
//! - `/api/v1/namespaces/kube-system/configmaps`, honouring `fieldSelector=metadata.name=...`.
//!
//! A list answers every matching object and `metadata.resourceVersion` (the store's current
//! version; `limit` is ignored: one page). `?watch=true&resourceVersion=N` streams JSON lines
//! `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK","object":{...}}` for the changes after N, then
//! waits for new ones, sending bookmarks (when `allowWatchBookmarks=true`) every
//! `bookmark_interval`, and ends the response after `timeoutSeconds`. A watch from a version
//! older than the compacted history is answered, like the real server, with HTTP 200 and one
//! `{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired",...}}` line.
//! `sendInitialEvents` (streaming lists) is refused with 400: kube-rs' default watcher lists.
//!
//! Writes as a client makes them: `POST` on a collection (create), `PUT .../{name}` (replace,
//! with the resourceVersion check) and `DELETE .../{name}`, for both collections.
//!
//! Test controls: create/update/delete objects (each bumps the resource version and records a
//! watch event), [`FakeApiServer::expire_history`] (compact, and end open watches with the
//! 410 ERROR event), [`FakeApiServer::drop_connections`] (reset every open connection),
//! [`FakeApiServer::set_available`] (close the listening socket, so connections are refused,
//! and open it again on the same port), [`FakeApiServer::set_outage`] (every request answered
//! 503, as an API server whose backend is down: long enough, the clients' backoff grows),
//! [`FakeApiServer::answer_watches_with_gone`] (the next watch requests answered with an HTTP
//! 410), [`FakeApiServer::delete_mapping_unseen`] (a deletion no open watch reports, as one
//! made while a client was away), [`FakeApiServer::deny_status_writes`] (403 on status
//! patches), and the log of requests (with their times and `User-Agent`).
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub const GROUP: &str = "ramauthenticator.k8s.alibabacloud";
pub const MAPPINGS_PATH: &str =
    "/apis/ramauthenticator.k8s.alibabacloud/v1alpha1/ramidentitymappings";
pub const CONFIGMAPS_PATH: &str = "/api/v1/namespaces/kube-system/configmaps";

/// The two collections served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Mapping,
    ConfigMap,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Mapping => "ramauthenticator.k8s.alibabacloud/v1alpha1",
            Kind::ConfigMap => "v1",
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Kind::Mapping => "RAMIdentityMapping",
            Kind::ConfigMap => "ConfigMap",
        }
    }
}

#[derive(Clone, Debug)]
struct HistoryEvent {
    rv: u64,
    kind: Kind,
    kind_of_event: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<(Kind, String), Value>,
    history: Vec<HistoryEvent>,
    /// Watches from a version below this are answered 410.
    compacted_below: u64,
    deny_status: bool,
    requests: Vec<String>,
    /// When each request of `requests` arrived, and its `User-Agent` (empty when absent).
    request_meta: Vec<(Instant, String)>,
    /// Every request answered 503 while set.
    outage: bool,
    /// Watch requests still to answer with an HTTP 410.
    gone_watches: usize,
    next_uid: u64,
    /// Watches answered with the 410 ERROR event: (at start, in an open stream).
    expired: (usize, usize),
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every change (wakes open watches).
    changed: watch::Sender<u64>,
    /// Bumped to reset every open connection.
    kill: watch::Sender<u64>,
    /// Bumped to end open watches with a 410 ERROR event.
    expire: watch::Sender<u64>,
    bookmark_interval: Duration,
    /// Open connections.
    connections: std::sync::atomic::AtomicUsize,
    /// Open watch responses.
    watches: std::sync::atomic::AtomicUsize,
}

struct WatchGuard(Arc<Shared>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0
            .watches
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

struct ConnectionGuard(Arc<Shared>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, kind: Kind, name: &str, set: impl FnOnce(&mut Value)) -> u64 {
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        let key = (kind, name.to_string());
        let (mut obj, event) = match st.objects.get(&key) {
            Some(existing) => (existing.clone(), "MODIFIED"),
            None => {
                st.next_uid += 1;
                let mut metadata = json!({
                    "name": name,
                    "uid": format!("00000000-0000-0000-0000-{:012}", st.next_uid),
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                });
                if kind == Kind::ConfigMap {
                    metadata["namespace"] = json!("kube-system");
                }
                (
                    json!({"apiVersion": kind.api_version(), "kind": kind.kind(), "metadata": metadata}),
                    "ADDED",
                )
            }
        };
        set(&mut obj);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.objects.insert(key, obj.clone());
        st.history.push(HistoryEvent {
            rv,
            kind,
            kind_of_event: event,
            object: obj,
        });
        drop(st);
        self.changed.send_modify(|v| *v = rv);
        rv
    }

    /// Removes an object; returns the new version and the object as deleted.
    fn delete(&self, kind: Kind, name: &str) -> Option<(u64, Value)> {
        let mut st = self.lock();
        let mut obj = st.objects.remove(&(kind, name.to_string()))?;
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.history.push(HistoryEvent {
            rv,
            kind,
            kind_of_event: "DELETED",
            object: obj.clone(),
        });
        drop(st);
        self.changed.send_modify(|v| *v = rv);
        Some((rv, obj))
    }
}

/// The fake API server; stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(h) = self.accept.lock().unwrap_or_else(|p| p.into_inner()).take() {
            h.abort();
        }
        self.shared.kill.send_modify(|g| *g += 1);
    }
}

impl FakeApiServer {
    /// Starts on 127.0.0.1 with a free port; bookmarks every 100 ms.
    pub async fn start() -> Self {
        Self::start_with(Duration::from_millis(100)).await
    }

    pub async fn start_with(bookmark_interval: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 100,
                ..State::default()
            }),
            changed: watch::channel(0).0,
            kill: watch::channel(0).0,
            expire: watch::channel(0).0,
            bookmark_interval,
            connections: std::sync::atomic::AtomicUsize::new(0),
            watches: std::sync::atomic::AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Self {
            addr,
            shared,
            accept: Mutex::new(Some(accept)),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig pointing at this server into `dir`; returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("fake-apiserver.kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("url"));
        kube::Client::try_from(config).expect("client")
    }

    // ---- objects ----

    /// Creates or replaces a `RAMIdentityMapping` with this spec; returns the new version.
    pub fn put_mapping(&self, name: &str, arn: &str, username: &str, groups: &[&str]) -> u64 {
        self.put_mapping_spec(
            name,
            json!({"arn": arn, "username": username, "groups": groups}),
        )
    }

    /// Creates or replaces a `RAMIdentityMapping` with any spec (malformed ones too).
    pub fn put_mapping_spec(&self, name: &str, spec: Value) -> u64 {
        self.put(Kind::Mapping, name, |obj| {
            obj["spec"] = spec;
        })
    }

    pub fn delete_mapping(&self, name: &str) -> Option<u64> {
        self.delete(Kind::Mapping, name)
    }

    /// Deletes a mapping without a watch event (only a list shows it is gone), as if it was
    /// deleted while the client was disconnected and the history then compacted.
    pub fn delete_mapping_unseen(&self, name: &str) -> Option<u64> {
        let mut st = self.shared.lock();
        st.objects.remove(&(Kind::Mapping, name.to_string()))?;
        st.rv += 1;
        st.compacted_below = st.rv;
        st.history.clear();
        Some(st.rv)
    }

    /// The stored object.
    pub fn mapping(&self, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .objects
            .get(&(Kind::Mapping, name.to_string()))
            .cloned()
    }

    /// Creates or replaces a ConfigMap in kube-system with this data.
    pub fn put_configmap(&self, name: &str, data: &[(&str, &str)]) -> u64 {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        self.put(Kind::ConfigMap, name, |obj| {
            obj["data"] = Value::Object(data);
        })
    }

    pub fn delete_configmap(&self, name: &str) -> Option<u64> {
        self.delete(Kind::ConfigMap, name)
    }

    fn put(&self, kind: Kind, name: &str, set: impl FnOnce(&mut Value)) -> u64 {
        self.shared.put(kind, name, set)
    }

    fn delete(&self, kind: Kind, name: &str) -> Option<u64> {
        self.shared.delete(kind, name).map(|(rv, _)| rv)
    }

    /// The stored ConfigMap.
    pub fn configmap(&self, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .objects
            .get(&(Kind::ConfigMap, name.to_string()))
            .cloned()
    }

    // ---- faults ----

    /// Compacts the history (every watch from an older version gets 410) and ends the open
    /// watches with the 410 ERROR event, as kube-apiserver does when it cannot serve a watch.
    pub fn expire_history(&self) {
        {
            let mut st = self.shared.lock();
            st.compacted_below = st.rv;
            st.history.clear();
        }
        self.shared.expire.send_modify(|g| *g += 1);
    }

    /// Resets every open connection (the watches see the stream break).
    pub fn drop_connections(&self) {
        self.shared.kill.send_modify(|g| *g += 1);
    }

    /// `false`: closes the listening socket (new connections are refused) and resets the open
    /// ones. `true`: listens again on the same port.
    pub async fn set_available(&self, available: bool) {
        let mut accept = self.accept.lock().unwrap_or_else(|p| p.into_inner()).take();
        if available {
            if accept.is_none() {
                let listener = bind_again(self.addr).await;
                accept = Some(tokio::spawn(accept_loop(listener, self.shared.clone())));
            }
        } else if let Some(h) = accept.take() {
            h.abort();
            let _ = h.await;
            self.drop_connections();
            // Wait until every connection is really closed, so that nothing more reaches
            // the clients.
            let deadline = Instant::now() + Duration::from_secs(5);
            while self
                .shared
                .connections
                .load(std::sync::atomic::Ordering::SeqCst)
                > 0
            {
                assert!(Instant::now() < deadline, "connections did not close");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        *self.accept.lock().unwrap_or_else(|p| p.into_inner()) = accept;
    }

    /// `true`: every request is answered `503 ServiceUnavailable` and the open connections are
    /// reset. `false`: serves again.
    pub fn set_outage(&self, outage: bool) {
        self.shared.lock().outage = outage;
        if outage {
            self.drop_connections();
        }
    }

    /// Answers the next `n` watch requests with HTTP `410 Gone` (`Expired`), as kube-apiserver
    /// may for a watch from a version it no longer has.
    pub fn answer_watches_with_gone(&self, n: usize) {
        self.shared.lock().gone_watches = n;
    }

    /// Answers 403 to status patches while `deny` is true.
    pub fn deny_status_writes(&self, deny: bool) {
        self.shared.lock().deny_status = deny;
    }

    // ---- observation ----

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// When each request arrived (in the order of [`requests`](Self::requests)).
    pub fn request_times(&self) -> Vec<Instant> {
        self.shared
            .lock()
            .request_meta
            .iter()
            .map(|(t, _)| *t)
            .collect()
    }

    /// The `User-Agent` of each request (empty when it had none).
    pub fn user_agents(&self) -> Vec<String> {
        self.shared
            .lock()
            .request_meta
            .iter()
            .map(|(_, ua)| ua.clone())
            .collect()
    }

    /// Number of list (not watch) requests on a collection path.
    pub fn list_requests(&self, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r.starts_with(&format!("GET {path}"))
                    && r[4 + path.len()..].chars().next().is_none_or(|c| c == '?')
                    && !r.contains("watch=true")
                    && !r.contains("watch=1")
            })
            .count()
    }

    /// Watch responses being streamed now.
    pub fn open_watches(&self) -> usize {
        self.shared
            .watches
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Watches answered with the 410 ERROR event: (when the watch started from a compacted
    /// version, in an already open stream).
    pub fn expired_answers(&self) -> (usize, usize) {
        self.shared.lock().expired
    }

    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

async fn bind_again(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot listen on {addr} again: {e}"),
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let mut kill = shared.kill.subscribe();
        shared
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let guard = ConnectionGuard(shared.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let io = TokioIo::new(socket);
            let s = shared.clone();
            let service = hyper::service::service_fn(move |req| {
                let s = s.clone();
                async move { Ok::<_, Infallible>(handle(s, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            tokio::select! {
                _ = conn => {}
                _ = kill.changed() => {}
            }
        });
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    json_response(code, &body)
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn query_map(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                ram_authenticator::signing::percent_decode(&s.replace('+', " "))
                    .unwrap_or_else(|| s.to_string())
            };
            (dec(k), dec(v))
        })
        .collect()
}

/// `metadata.name=X` / `metadata.name==X` (or none). Anything else is refused.
fn name_selector(q: &BTreeMap<String, String>) -> Result<Option<String>, String> {
    let Some(sel) = q.get("fieldSelector").filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let value = sel
        .strip_prefix("metadata.name==")
        .or_else(|| sel.strip_prefix("metadata.name="))
        .ok_or_else(|| format!("field selector {sel:?} is not supported"))?;
    if value.contains(',') {
        return Err(format!("field selector {sel:?} is not supported"));
    }
    Ok(Some(value.to_string()))
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let user_agent = req
        .headers()
        .get(hyper::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let outage = {
        let mut st = shared.lock();
        st.requests.push(if query.is_empty() {
            format!("{method} {path}")
        } else {
            format!("{method} {path}?{query}")
        });
        st.request_meta.push((Instant::now(), user_agent));
        st.outage
    };
    if outage {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        );
    }
    let q = query_map(&query);

    let (kind, rest) = if let Some(rest) = path.strip_prefix(MAPPINGS_PATH) {
        (Kind::Mapping, rest.to_string())
    } else if let Some(rest) = path.strip_prefix(CONFIGMAPS_PATH) {
        (Kind::ConfigMap, rest.to_string())
    } else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        );
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, []) => {
            let selector = match name_selector(&q) {
                Ok(s) => s,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
            };
            let watching = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
            let gone = watching && {
                let mut st = shared.lock();
                let gone = st.gone_watches > 0;
                st.gone_watches = st.gone_watches.saturating_sub(1);
                gone
            };
            if gone {
                status(
                    StatusCode::GONE,
                    "Expired",
                    "too old resource version (answered with HTTP 410)",
                )
            } else if watching {
                watch(shared, kind, selector, &q)
            } else {
                list(&shared, kind, selector.as_deref())
            }
        }
        (Method::GET, [name]) => match shared.lock().objects.get(&(kind, name.to_string())) {
            Some(obj) => json_response(StatusCode::OK, obj),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{} {name:?} not found", kind.kind()),
            ),
        },
        (Method::PATCH, [name, "status"]) if kind == Kind::Mapping => {
            let body = match http_body_bytes(req).await {
                Ok(b) => b,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
            };
            patch_status(&shared, name, &body)
        }
        (Method::POST, []) | (Method::PUT, [_]) => {
            let name = segments.first().map(|n| n.to_string());
            match http_body_bytes(req).await {
                Ok(b) => write_object(&shared, kind, name, &b),
                Err(e) => status(StatusCode::BAD_REQUEST, "BadRequest", &e),
            }
        }
        (Method::DELETE, [name]) => match shared.delete(kind, name) {
            Some((_, obj)) => json_response(StatusCode::OK, &obj),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{} {name:?} not found", kind.kind()),
            ),
        },
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{method} {path} is not supported"),
        ),
    }
}

/// Create (`POST` on the collection, `name` = `None`: 409 when the name is taken) or replace
/// (`PUT`: 404 when absent, 409 when `metadata.resourceVersion` is not the stored one). The
/// body's `spec` (mappings) or `data` (ConfigMaps) is stored; the server sets the metadata.
fn write_object(
    shared: &Arc<Shared>,
    kind: Kind,
    name: Option<String>,
    body: &[u8],
) -> Response<Body> {
    let obj: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let Some(object_name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata.name is required",
        );
    };
    let stored = shared
        .lock()
        .objects
        .get(&(kind, object_name.clone()))
        .cloned();
    match (&name, &stored) {
        (None, Some(_)) => {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{} {object_name:?} already exists", kind.kind()),
            )
        }
        (Some(n), _) if *n != object_name => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the name in the URL differs from metadata.name",
            )
        }
        (Some(_), None) => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{} {object_name:?} not found", kind.kind()),
            )
        }
        (Some(_), Some(old)) => {
            let sent = &obj["metadata"]["resourceVersion"];
            if !sent.is_null() && *sent != old["metadata"]["resourceVersion"] {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again",
                );
            }
        }
        (None, None) => {}
    }
    let field = if kind == Kind::Mapping {
        "spec"
    } else {
        "data"
    };
    shared.put(kind, &object_name, |stored| {
        stored[field] = obj[field].clone();
    });
    let answer = shared
        .lock()
        .objects
        .get(&(kind, object_name))
        .cloned()
        .unwrap_or_default();
    let code = if name.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json_response(code, &answer)
}

async fn http_body_bytes(req: Request<Incoming>) -> Result<Bytes, String> {
    axum::body::to_bytes(Body::new(req.into_body()), 1 << 20)
        .await
        .map_err(|e| e.to_string())
}

fn patch_status(shared: &Arc<Shared>, name: &str, body: &[u8]) -> Response<Body> {
    let patch: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let mut st = shared.lock();
    if st.deny_status {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("ramidentitymappings.{GROUP} \"{name}\" is forbidden: User \"system:serviceaccount:kube-system:ram-authenticator\" cannot patch resource \"ramidentitymappings/status\""),
        );
    }
    let key = (Kind::Mapping, name.to_string());
    let Some(mut obj) = st.objects.get(&key).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("RAMIdentityMapping {name:?} not found"),
        );
    };
    if let Some(patch_status) = patch.get("status").and_then(Value::as_object) {
        if !obj.get("status").is_some_and(Value::is_object) {
            obj["status"] = json!({});
        }
        for (k, v) in patch_status {
            if v.is_null() {
                if let Some(m) = obj["status"].as_object_mut() {
                    m.remove(k);
                }
            } else {
                obj["status"][k] = v.clone();
            }
        }
    }
    st.rv += 1;
    let rv = st.rv;
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.objects.insert(key, obj.clone());
    st.history.push(HistoryEvent {
        rv,
        kind: Kind::Mapping,
        kind_of_event: "MODIFIED",
        object: obj.clone(),
    });
    drop(st);
    shared.changed.send_modify(|v| *v = rv);
    json_response(StatusCode::OK, &obj)
}

fn matches(kind: Kind, selector: Option<&str>, k: &(Kind, String)) -> bool {
    k.0 == kind && selector.is_none_or(|s| s == k.1)
}

fn list(shared: &Arc<Shared>, kind: Kind, selector: Option<&str>) -> Response<Body> {
    let st = shared.lock();
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|(k, _)| matches(kind, selector, k))
        .map(|(_, v)| v.clone())
        .collect();
    let body = json!({
        "apiVersion": kind.api_version(),
        "kind": format!("{}List", kind.kind()),
        "metadata": {"resourceVersion": st.rv.to_string()},
        "items": items,
    });
    json_response(StatusCode::OK, &body)
}

fn line(event: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": event, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn expired_line(from: u64, now: u64) -> Bytes {
    line(
        "ERROR",
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version: {from} ({now})"),
            "reason": "Expired", "code": 410,
        }),
    )
}

struct Cursor {
    shared: Arc<Shared>,
    kind: Kind,
    selector: Option<String>,
    sent_up_to: u64,
    pending: VecDeque<Bytes>,
    changed: watch::Receiver<u64>,
    expire: watch::Receiver<u64>,
    bookmarks: bool,
    next_bookmark: Instant,
    deadline: Instant,
    done: bool,
    _open: WatchGuard,
}

fn watch(
    shared: Arc<Shared>,
    kind: Kind,
    selector: Option<String>,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    if q.get("sendInitialEvents").is_some_and(|v| v == "true") {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "sendInitialEvents (streaming lists) is not supported by this server",
        );
    }
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let from = q.get("resourceVersion").cloned().unwrap_or_default();
    let mut pending = VecDeque::new();
    let (sent_up_to, done) = {
        let mut st = shared.lock();
        match from.as_str() {
            // "Start at most recent": synthetic ADDED for what exists, then changes.
            "" | "0" => {
                for (k, v) in &st.objects {
                    if matches(kind, selector.as_deref(), k) {
                        pending.push_back(line("ADDED", v));
                    }
                }
                (st.rv, false)
            }
            other => match other.parse::<u64>() {
                Ok(n) if n < st.compacted_below => {
                    pending.push_back(expired_line(n, st.rv));
                    st.expired.0 += 1;
                    (st.rv, true)
                }
                Ok(n) => (n, false),
                Err(_) => {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("invalid resourceVersion {other:?}"),
                    )
                }
            },
        }
    };
    let now = Instant::now();
    shared
        .watches
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let cursor = Cursor {
        _open: WatchGuard(shared.clone()),
        changed: shared.changed.subscribe(),
        expire: shared.expire.subscribe(),
        bookmarks: q.get("allowWatchBookmarks").is_some_and(|v| v == "true"),
        next_bookmark: now + shared.bookmark_interval,
        deadline: now + Duration::from_secs(timeout),
        shared,
        kind,
        selector,
        sent_up_to,
        pending,
        done,
    };
    let stream = futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(bytes) = c.pending.pop_front() {
                return Some((Ok::<_, Infallible>(bytes), c));
            }
            if c.done {
                return None;
            }
            {
                let st = c.shared.lock();
                for ev in st.history.iter().filter(|e| e.rv > c.sent_up_to) {
                    let name = ev.object["metadata"]["name"].as_str().unwrap_or_default();
                    if ev.kind == c.kind && c.selector.as_deref().is_none_or(|s| s == name) {
                        c.pending.push_back(line(ev.kind_of_event, &ev.object));
                    }
                }
                c.sent_up_to = c.sent_up_to.max(st.rv);
            }
            if !c.pending.is_empty() {
                continue;
            }
            tokio::select! {
                _ = c.changed.changed() => {}
                _ = c.expire.changed() => {
                    let now = {
                        let mut st = c.shared.lock();
                        st.expired.1 += 1;
                        st.rv
                    };
                    c.pending.push_back(expired_line(c.sent_up_to, now));
                    c.done = true;
                }
                _ = tokio::time::sleep_until(c.next_bookmark), if c.bookmarks => {
                    c.next_bookmark = Instant::now() + c.shared.bookmark_interval;
                    c.pending.push_back(line(
                        "BOOKMARK",
                        &json!({
                            "kind": c.kind.kind(),
                            "apiVersion": c.kind.api_version(),
                            "metadata": {"resourceVersion": c.sent_up_to.to_string()},
                        }),
                    ));
                }
                _ = tokio::time::sleep_until(c.deadline) => c.done = true,
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

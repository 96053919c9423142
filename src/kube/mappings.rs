//! The `CRD` source: every `RAMIdentityMapping` object in the cluster, one entry each.
//!
//! Objects are read loosely ([`crd::entry_from_object`]); one that cannot be used is logged with
//! its name and reason and skipped. Wildcards in `spec.arn` are anchored globs (`*`, `?`) with
//! the index's precedence: an exact ARN wins, then the most specific pattern, then the pattern
//! text, then the object name.
//!
//! Optionally the source writes `status.canonicalARN` from a separate task (never on the
//! request path); lookups do not depend on it, and a denied write is logged once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ::kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use ::kube::runtime::watcher::Event;
use ::kube::{Api, Client};
use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use super::crd::{self, RAMIdentityMapping};
use super::WatchOptions;
use crate::mapping::{Entry, Index, Source};
use crate::metrics::Metrics;

/// The source's name (`backendMode`).
pub const SOURCE: &str = "CRD";

/// A `status.canonicalARN` the source wants written: (object name, value).
pub type StatusWrite = (String, String);

#[derive(Default)]
struct State {
    /// Objects by name: their entry, or why they were skipped.
    objects: BTreeMap<String, Result<Entry, String>>,
    /// `Some` between `Init` and `InitDone`: the objects of the re-list so far.
    relist: Option<BTreeMap<String, Result<Entry, String>>>,
    /// Shadowed entries last reported (to log changes only).
    shadowed: Vec<String>,
}

/// Mappings from `RAMIdentityMapping` objects.
pub struct CrdSource {
    index: ArcSwap<Index>,
    ready: AtomicBool,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    status: Option<mpsc::Sender<StatusWrite>>,
}

impl CrdSource {
    /// A source fed by [`handle`](Self::handle) (no watch of its own). When `status` is given,
    /// objects whose `status.canonicalARN` is missing or stale are sent there.
    pub fn new(metrics: Arc<Metrics>, status: Option<mpsc::Sender<StatusWrite>>) -> Self {
        Self {
            index: ArcSwap::from_pointee(Index::default()),
            ready: AtomicBool::new(false),
            metrics,
            state: Mutex::new(State::default()),
            status,
        }
    }

    /// A source, its supervised watch of all `RAMIdentityMapping` objects and (if enabled) the
    /// status writer.
    pub fn spawn(client: Client, metrics: Arc<Metrics>, options: &WatchOptions) -> Arc<Self> {
        let resource = ApiResource::erase::<RAMIdentityMapping>(&());
        let status = if options.write_status {
            let (tx, rx) = mpsc::channel(1024);
            tokio::spawn(write_status(Api::all_with(client.clone(), &resource), rx));
            Some(tx)
        } else {
            None
        };
        let source = Arc::new(Self::new(metrics, status));
        let api: Api<DynamicObject> = Api::all_with(client, &resource);
        let config = options.watcher_config();
        let options = options.clone();
        let s = source.clone();
        let failures = source.metrics.watch_failures_of(SOURCE);
        super::supervise("CRD", options.restart_delay, move || {
            let s = s.clone();
            super::run_watch(
                api.clone(),
                config.clone(),
                options.backoff(),
                failures.clone(),
                move |event| s.handle(event),
                |err| {
                    if super::is_expired(err) {
                        tracing::info!(
                            source = SOURCE,
                            "RAMIdentityMapping watch history expired; listing again"
                        );
                    } else {
                        tracing::warn!(source = SOURCE, error = %err, "RAMIdentityMapping watch failed; retrying (the last mappings keep serving)");
                    }
                },
            )
        });
        source
    }

    /// Applies one watch event.
    pub fn handle(&self, event: Event<DynamicObject>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Init => state.relist = Some(BTreeMap::new()),
            Event::InitApply(obj) => {
                if let Some((name, parsed)) = self.parse(&obj) {
                    let relist = state.relist.get_or_insert_with(BTreeMap::new);
                    relist.insert(name, parsed);
                }
            }
            Event::InitDone => {
                let listed = state.relist.take().unwrap_or_default();
                state.objects = listed;
                self.rebuild(&mut state);
                self.ready.store(true, Ordering::Release);
                let skipped = state.objects.values().filter(|p| p.is_err()).count();
                tracing::info!(
                    source = SOURCE,
                    objects = state.objects.len(),
                    skipped,
                    "RAMIdentityMapping objects listed"
                );
            }
            Event::Apply(obj) => {
                if let Some((name, parsed)) = self.parse(&obj) {
                    if state.objects.get(&name) == Some(&parsed) {
                        // Only metadata or status changed (e.g. our own status write).
                        return;
                    }
                    if let Ok(e) = &parsed {
                        tracing::info!(source = SOURCE, object = %name, arn = %e.arn, username = %e.username.as_str(), "RAMIdentityMapping applied");
                    }
                    state.objects.insert(name, parsed);
                    self.rebuild(&mut state);
                }
            }
            Event::Delete(obj) => {
                if let Some(name) = obj.metadata.name.as_deref() {
                    if state.objects.remove(name).is_some() {
                        tracing::info!(source = SOURCE, object = %name, "RAMIdentityMapping deleted");
                        self.rebuild(&mut state);
                    }
                }
            }
        }
    }

    /// Reads one object; logs why it is skipped; asks for a status write when useful.
    fn parse(&self, obj: &DynamicObject) -> Option<(String, Result<Entry, String>)> {
        let Some(name) = obj.metadata.name.clone() else {
            tracing::warn!(
                source = SOURCE,
                "RAMIdentityMapping without metadata.name skipped"
            );
            return None;
        };
        let parsed = crd::entry_from_object(obj);
        match &parsed {
            Err(reason) => {
                tracing::warn!(source = SOURCE, object = %name, reason = %reason, "RAMIdentityMapping skipped");
            }
            Ok(entry) => self.want_status(obj, &name, &entry.arn),
        }
        Some((name, parsed))
    }

    fn want_status(&self, obj: &DynamicObject, name: &str, arn: &str) {
        let Some(tx) = &self.status else { return };
        let Some(wanted) = crd::canonical_arn_for_status(arn) else {
            return;
        };
        let current = obj
            .data
            .get("status")
            .and_then(|s| s.get("canonicalARN"))
            .and_then(|v| v.as_str());
        if current != Some(wanted.as_str()) {
            // Full queue or stopped writer: the status is informational, drop it.
            let _ = tx.try_send((name.to_string(), wanted));
        }
    }

    fn rebuild(&self, state: &mut State) {
        let entries: Vec<Entry> = state
            .objects
            .values()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let index = Index::build(entries, Vec::new());
        if index.shadowed() != state.shadowed.as_slice() {
            for s in index.shadowed() {
                tracing::warn!(source = SOURCE, entry = %s, "mapping ignored: another RAMIdentityMapping maps the same ARN");
            }
            state.shadowed = index.shadowed().to_vec();
        }
        self.metrics.mapping_loaded(SOURCE, index.len());
        self.index.store(Arc::new(index));
    }

    /// Objects currently skipped, with the reason (for diagnostics and tests).
    pub fn skipped(&self) -> Vec<(String, String)> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .objects
            .iter()
            .filter_map(|(n, p)| p.as_ref().err().map(|r| (n.clone(), r.clone())))
            .collect()
    }
}

impl Source for CrdSource {
    fn name(&self) -> &'static str {
        SOURCE
    }
    fn index(&self) -> Arc<Index> {
        self.index.load_full()
    }
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Writes `status.canonicalARN` (merge patch on the `status` subresource). A 403 (no RBAC for
/// `ramidentitymappings/status`) is logged once and stops the writes; other failures are
/// retried at the object's next change.
async fn write_status(api: Api<DynamicObject>, mut rx: mpsc::Receiver<StatusWrite>) {
    while let Some((name, canonical)) = rx.recv().await {
        let patch = serde_json::json!({ "status": { "canonicalARN": canonical } });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::debug!(source = SOURCE, object = %name, "status.canonicalARN written")
            }
            Err(::kube::Error::Api(e)) if e.code == 403 => {
                tracing::warn!(
                    source = SOURCE,
                    error = %e.message,
                    "not allowed to write RAMIdentityMapping status (grant patch on \
                     ramidentitymappings/status, or ignore: lookups do not use it); \
                     status writes stop"
                );
                return;
            }
            Err(e) => {
                tracing::debug!(source = SOURCE, object = %name, error = %e, "status.canonicalARN not written")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arn::canonicalize;

    fn obj(name: &str, rv: u32, arn: &str, username: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ramauthenticator.k8s.alibabacloud/v1alpha1",
            "kind": "RAMIdentityMapping",
            "metadata": {"name": name, "resourceVersion": rv.to_string()},
            "spec": {"arn": arn, "username": username, "groups": ["g"]},
        }))
        .expect("object")
    }

    fn user(s: &CrdSource, arn: &str) -> Option<String> {
        s.index()
            .lookup(&canonicalize(arn).expect("arn"))
            .map(|e| e.username.as_str().to_string())
    }

    fn list(s: &CrdSource, objects: Vec<DynamicObject>) {
        s.handle(Event::Init);
        for o in objects {
            s.handle(Event::InitApply(o));
        }
        s.handle(Event::InitDone);
    }

    #[test]
    fn apply_change_delete_and_relist() {
        let metrics = Arc::new(Metrics::new());
        let s = CrdSource::new(metrics.clone(), None);
        assert!(!s.ready());
        s.handle(Event::Init);
        s.handle(Event::InitApply(obj(
            "a",
            1,
            "acs:ram::1:user/alice",
            "alice",
        )));
        assert!(!s.ready());
        assert_eq!(
            user(&s, "acs:ram::1:user/alice"),
            None,
            "index swapped only at InitDone"
        );
        s.handle(Event::InitApply(obj(
            "b",
            2,
            "acs:ram::1:role/dev-*",
            "dev",
        )));
        s.handle(Event::InitDone);
        assert!(s.ready());
        assert_eq!(user(&s, "acs:ram::1:user/alice").as_deref(), Some("alice"));
        assert_eq!(
            user(&s, "acs:ram::1:assumed-role/Dev-x/s").as_deref(),
            Some("dev")
        );
        assert!(metrics
            .encode()
            .contains("mapping_entries{source=\"CRD\"} 2"));

        // Change.
        s.handle(Event::Apply(obj("a", 3, "acs:ram::1:user/alice", "alice2")));
        assert_eq!(user(&s, "acs:ram::1:user/alice").as_deref(), Some("alice2"));
        // Change of ARN: the old ARN no longer maps.
        s.handle(Event::Apply(obj("a", 4, "acs:ram::1:user/carol", "carol")));
        assert_eq!(user(&s, "acs:ram::1:user/alice"), None);
        assert_eq!(user(&s, "acs:ram::1:user/carol").as_deref(), Some("carol"));
        // An exact object beats the pattern.
        s.handle(Event::Apply(obj("c", 5, "acs:ram::1:role/dev-x", "exact")));
        assert_eq!(user(&s, "acs:ram::1:role/dev-x").as_deref(), Some("exact"));
        // Delete.
        s.handle(Event::Delete(obj("c", 6, "acs:ram::1:role/dev-x", "exact")));
        assert_eq!(user(&s, "acs:ram::1:role/dev-x").as_deref(), Some("dev"));

        // A re-list replaces everything: "b" vanished while disconnected.
        list(&s, vec![obj("a", 7, "acs:ram::1:user/carol", "carol")]);
        assert_eq!(user(&s, "acs:ram::1:role/dev-x"), None);
        assert_eq!(user(&s, "acs:ram::1:user/carol").as_deref(), Some("carol"));
        assert_eq!(s.index().len(), 1);
    }

    #[test]
    fn malformed_objects_are_skipped_not_fatal() {
        let s = CrdSource::new(Arc::new(Metrics::new()), None);
        let no_spec: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "nospec", "resourceVersion": "1"}
        }))
        .expect("object");
        list(
            &s,
            vec![
                obj("good", 1, "acs:ram::1:user/a", "a"),
                obj("bad-arn", 2, "arn:aws:iam::1:role/x", "x"),
                obj("bad-user", 3, "acs:ram::1:user/b", ""),
                obj("bad-template", 4, "acs:ram::1:user/c", "{{Unknown}}"),
                no_spec,
            ],
        );
        assert!(s.ready());
        assert_eq!(s.index().len(), 1);
        assert_eq!(user(&s, "acs:ram::1:user/a").as_deref(), Some("a"));
        let skipped: Vec<String> = s.skipped().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            skipped,
            vec!["bad-arn", "bad-template", "bad-user", "nospec"]
        );

        // A good object turned bad disappears; fixed, it comes back.
        s.handle(Event::Apply(obj("good", 5, "acs:ram::1:user/a", " ")));
        assert_eq!(user(&s, "acs:ram::1:user/a"), None);
        s.handle(Event::Apply(obj("good", 6, "acs:ram::1:user/a", "back")));
        assert_eq!(user(&s, "acs:ram::1:user/a").as_deref(), Some("back"));
    }

    #[test]
    fn same_arn_in_two_objects_is_deterministic() {
        let s = CrdSource::new(Arc::new(Metrics::new()), None);
        list(
            &s,
            vec![
                obj("zeta", 1, "acs:ram::1:user/a", "from-zeta"),
                obj("alpha", 2, "ACS:RAM::1:USER/A", "from-alpha"),
            ],
        );
        assert_eq!(user(&s, "acs:ram::1:user/a").as_deref(), Some("from-alpha"));
    }

    #[test]
    fn asks_for_status_only_when_stale() {
        let (tx, mut rx) = mpsc::channel(8);
        let s = CrdSource::new(Arc::new(Metrics::new()), Some(tx));
        let mut fresh = obj("fresh", 1, "acs:ram::1:assumed-role/Admin/x", "a");
        fresh.data["status"] = serde_json::json!({"canonicalARN": "acs:ram::1:role/admin"});
        list(
            &s,
            vec![
                fresh,
                obj("stale", 2, "acs:ram::1:role/Ops", "o"),
                obj("bad", 3, "nope", "o"),
            ],
        );
        assert_eq!(
            rx.try_recv().expect("one write"),
            ("stale".to_string(), "acs:ram::1:role/ops".to_string())
        );
        assert!(rx.try_recv().is_err(), "no write for fresh or bad objects");
    }
}

//! The `ACKConfigMap` source: ConfigMap `kube-system/alibabacloud-auth`, data keys `mapRoles`,
//! `mapUsers` (YAML lists of entries, keys in any casing) and `mapAccounts` (a YAML list of
//! account IDs, strings or numbers).
//!
//! A ConfigMap that does not parse as a whole is refused: the last good mappings stay, the
//! reason is logged and `configmap_watch_failures` counts it. A deleted (or absent) ConfigMap
//! means no mappings from this source.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ::kube::runtime::watcher::Event;
use ::kube::{Api, Client};
use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::ConfigMap;

use super::WatchOptions;
use crate::mapping::{
    entries_from_docs, lowercase_keys, Index, RoleMappingDoc, Source, UserMappingDoc,
};
use crate::metrics::Metrics;

/// Namespace of the ConfigMap.
pub const NAMESPACE: &str = "kube-system";
/// Name of the ConfigMap.
pub const NAME: &str = "alibabacloud-auth";
/// The source's name (`backendMode`).
pub const SOURCE: &str = "ACKConfigMap";

/// What a ConfigMap's data turned into.
#[derive(Debug)]
pub struct Parsed {
    pub index: Index,
    /// Data keys that are not mappings (ignored, reported).
    pub ignored_keys: Vec<String>,
}

/// Parses the ConfigMap's data as a whole: any bad key or entry refuses all of it.
pub fn parse_data(data: &BTreeMap<String, String>) -> Result<Parsed, String> {
    let mut roles_text: Option<(&str, &str)> = None;
    let mut users_text: Option<(&str, &str)> = None;
    let mut accounts_text: Option<(&str, &str)> = None;
    let mut ignored_keys = Vec::new();
    for (key, value) in data {
        let slot = match key.to_ascii_lowercase().as_str() {
            "maproles" => &mut roles_text,
            "mapusers" => &mut users_text,
            "mapaccounts" => &mut accounts_text,
            _ => {
                ignored_keys.push(key.clone());
                continue;
            }
        };
        if let Some((other, _)) = slot {
            return Err(format!(
                "data keys {other:?} and {key:?} both define the same list; keep one"
            ));
        }
        *slot = Some((key.as_str(), value.as_str()));
    }
    let roles: Vec<RoleMappingDoc> = match roles_text {
        Some((key, text)) => parse_list(key, text)?,
        None => Vec::new(),
    };
    let users: Vec<UserMappingDoc> = match users_text {
        Some((key, text)) => parse_list(key, text)?,
        None => Vec::new(),
    };
    let accounts = match accounts_text {
        Some((key, text)) => parse_accounts(key, text)?,
        None => Vec::new(),
    };
    let entries = entries_from_docs(NAME, &roles, &users)?;
    Ok(Parsed {
        index: Index::build(entries, accounts),
        ignored_keys,
    })
}

fn parse_list<T: serde::de::DeserializeOwned>(key: &str, text: &str) -> Result<Vec<T>, String> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| format!("data key {key:?} is not YAML: {e}"))?;
    if value.is_null() {
        return Ok(Vec::new());
    }
    if !value.is_sequence() {
        return Err(format!("data key {key:?} must be a YAML list of mappings"));
    }
    serde_yaml::from_value(lowercase_keys(value)).map_err(|e| {
        format!(
            "data key {key:?}: {e} (each entry needs rolearn/userarn and username, \
             optionally groups; keys in any casing)"
        )
    })
}

fn parse_accounts(key: &str, text: &str) -> Result<Vec<String>, String> {
    use serde_yaml::Value;
    let value: Value =
        serde_yaml::from_str(text).map_err(|e| format!("data key {key:?} is not YAML: {e}"))?;
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(items) => items,
        _ => {
            return Err(format!(
                "data key {key:?} must be a YAML list of account IDs"
            ))
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let id = match &item {
                Value::String(s) => s.trim().to_string(),
                Value::Number(n) if n.is_u64() => n.to_string(),
                _ => String::new(),
            };
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
                Err(format!(
                    "{key}[{i}]: expected an account ID (digits), found {}",
                    serde_yaml::to_string(&item).unwrap_or_default().trim_end()
                ))
            } else {
                Ok(id)
            }
        })
        .collect()
}

#[derive(Default)]
struct State {
    /// `Some` between `Init` and `InitDone`: the ConfigMap seen by the re-list, if any.
    relist: Option<Option<ConfigMap>>,
    /// The data last handled (good or refused), `Some(None)` once known absent.
    last_data: Option<Option<BTreeMap<String, String>>>,
}

/// Mappings from the `alibabacloud-auth` ConfigMap.
pub struct ConfigMapSource {
    index: ArcSwap<Index>,
    ready: AtomicBool,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
}

impl ConfigMapSource {
    /// A source fed by [`handle`](Self::handle) (no watch of its own).
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            index: ArcSwap::from_pointee(Index::default()),
            ready: AtomicBool::new(false),
            metrics,
            state: Mutex::new(State::default()),
        }
    }

    /// A source and its supervised watch of `kube-system/alibabacloud-auth`.
    pub fn spawn(client: Client, metrics: Arc<Metrics>, options: &WatchOptions) -> Arc<Self> {
        let failures = metrics.watch_failures_of(SOURCE);
        let source = Arc::new(Self::new(metrics));
        let api: Api<ConfigMap> = Api::namespaced(client, NAMESPACE);
        let config = options
            .watcher_config()
            .fields(&format!("metadata.name={NAME}"));
        let options = options.clone();
        let s = source.clone();
        super::supervise("ACKConfigMap", options.restart_delay, move || {
            let s = s.clone();
            let e = s.clone();
            super::run_watch(
                api.clone(),
                config.clone(),
                options.backoff(),
                failures.clone(),
                move |event| s.handle(event),
                move |err| e.watch_failed(err),
            )
        });
        source
    }

    /// Applies one watch event.
    pub fn handle(&self, event: Event<ConfigMap>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Init => state.relist = Some(None),
            Event::InitApply(cm) => {
                if is_ours(&cm) {
                    state.relist = Some(Some(cm));
                }
            }
            Event::InitDone => {
                let listed = state.relist.take().flatten();
                match listed {
                    Some(cm) => self.apply(&mut state, cm.data.unwrap_or_default()),
                    None => self.absent(&mut state, "not found"),
                }
                self.ready.store(true, Ordering::Release);
            }
            Event::Apply(cm) => {
                if is_ours(&cm) {
                    self.apply(&mut state, cm.data.unwrap_or_default());
                }
            }
            Event::Delete(cm) => {
                if is_ours(&cm) {
                    self.absent(&mut state, "deleted");
                }
            }
        }
    }

    fn apply(&self, state: &mut State, data: BTreeMap<String, String>) {
        if state.last_data.as_ref().and_then(|d| d.as_ref()) == Some(&data) {
            return;
        }
        match parse_data(&data) {
            Ok(parsed) => {
                for key in &parsed.ignored_keys {
                    tracing::warn!(source = SOURCE, key = %key, "ConfigMap {NAMESPACE}/{NAME}: data key ignored (known keys: mapRoles, mapUsers, mapAccounts)");
                }
                for s in parsed.index.shadowed() {
                    tracing::warn!(source = SOURCE, entry = %s, "mapping ignored: an earlier entry maps the same ARN");
                }
                let len = parsed.index.len();
                self.metrics.mapping_loaded(SOURCE, len);
                self.index.store(Arc::new(parsed.index));
                tracing::info!(
                    source = SOURCE,
                    entries = len,
                    "mappings loaded from ConfigMap {NAMESPACE}/{NAME}"
                );
            }
            Err(reason) => {
                self.metrics.configmap_watch_failures.inc();
                self.metrics.mapping_refused(SOURCE);
                tracing::error!(source = SOURCE, error = %reason, "ConfigMap {NAMESPACE}/{NAME} refused; keeping the previous mappings");
            }
        }
        state.last_data = Some(Some(data));
    }

    fn absent(&self, state: &mut State, why: &str) {
        if matches!(state.last_data, Some(None)) {
            return;
        }
        let had = state.last_data.is_some();
        self.index.store(Arc::new(Index::default()));
        self.metrics.mapping_loaded(SOURCE, 0);
        if had || why == "deleted" {
            tracing::warn!(
                source = SOURCE,
                "ConfigMap {NAMESPACE}/{NAME} {why}: no mappings from it"
            );
        } else {
            tracing::info!(
                source = SOURCE,
                "ConfigMap {NAMESPACE}/{NAME} {why}: no mappings from it"
            );
        }
        state.last_data = Some(None);
    }

    fn watch_failed(&self, err: &::kube::runtime::watcher::Error) {
        if super::is_expired(err) {
            tracing::info!(
                source = SOURCE,
                "ConfigMap watch history expired; listing again"
            );
            return;
        }
        self.metrics.configmap_watch_failures.inc();
        tracing::warn!(source = SOURCE, error = %err, "ConfigMap watch failed; retrying (the last mappings keep serving)");
    }
}

fn is_ours(cm: &ConfigMap) -> bool {
    cm.metadata.name.as_deref() == Some(NAME)
}

impl Source for ConfigMapSource {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arn::canonicalize;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cm(name: &str, rv: u32, data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(NAMESPACE.into()),
                resource_version: Some(rv.to_string()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn user(s: &ConfigMapSource, arn: &str) -> Option<String> {
        s.index()
            .lookup(&canonicalize(arn).expect("arn"))
            .map(|e| e.username.as_str().to_string())
    }

    const ROLES: &str =
        "- rolearn: acs:ram::1:role/admin\n  username: admin\n  groups: [system:masters]\n";

    #[test]
    fn parses_all_three_keys_in_any_casing() {
        let data: BTreeMap<String, String> = [
            ("mapRoles", "- RoleARN: acs:ram::1:role/A\n  UserName: a\n"),
            (
                "MAPUSERS",
                "- userArn: acs:ram::1:user/b\n  username: b\n  groups: []\n",
            ),
            ("mapAccounts", "- \"1111\"\n- 2222\n"),
            ("note", "free text"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let parsed = parse_data(&data).expect("parsed");
        assert_eq!(parsed.index.len(), 4);
        assert!(parsed.index.maps_account("1111"));
        assert!(parsed.index.maps_account("2222"));
        assert_eq!(parsed.ignored_keys, vec!["note"]);
        let e = parsed
            .index
            .lookup(&canonicalize("acs:ram::1:role/a").expect("arn"))
            .expect("entry");
        assert_eq!(e.origin, "alibabacloud-auth.mapRoles[0]");
    }

    #[test]
    fn refuses_bad_content_with_reasons() {
        let bad: &[(&str, &str, &str)] = &[
            (
                "mapRoles",
                "- roelarn: acs:ram::1:role/a\n  username: a\n",
                "roelarn",
            ),
            ("mapRoles", "- rolearn: acs:ram::1:role/a\n", "username"),
            ("mapRoles", "rolearn: x", "list"),
            ("mapRoles", "- [unclosed", "not YAML"),
            (
                "mapUsers",
                "- userarn: nope\n  username: a\n",
                "mapUsers[0]",
            ),
            (
                "mapUsers",
                "- userarn: acs:ram::1:user/a\n  username: '{{X}}'\n",
                "mapUsers[0]",
            ),
            ("mapAccounts", "- 12.5\n", "mapAccounts[0]"),
            ("mapAccounts", "- abc\n", "mapAccounts[0]"),
            ("mapAccounts", "1111", "list"),
        ];
        for (key, value, needle) in bad {
            let data = BTreeMap::from([(key.to_string(), value.to_string())]);
            let err = parse_data(&data).expect_err(value);
            assert!(err.contains(needle), "{value}: {err}");
        }
        let data = BTreeMap::from([
            ("mapRoles".to_string(), String::new()),
            ("maproles".to_string(), String::new()),
        ]);
        assert!(parse_data(&data).expect_err("dup").contains("both"));
        let empty = BTreeMap::from([("mapRoles".to_string(), String::new())]);
        assert!(parse_data(&empty).expect("empty").index.is_empty());
    }

    #[test]
    fn watch_events_drive_the_index() {
        let metrics = Arc::new(Metrics::new());
        let s = ConfigMapSource::new(metrics.clone());
        assert!(!s.ready());
        s.handle(Event::Init);
        s.handle(Event::InitApply(cm(NAME, 1, &[("mapRoles", ROLES)])));
        assert!(!s.ready(), "not ready before the list is complete");
        assert_eq!(user(&s, "acs:ram::1:role/admin"), None);
        s.handle(Event::InitDone);
        assert!(s.ready());
        assert_eq!(
            user(&s, "acs:ram::1:assumed-role/Admin/x").as_deref(),
            Some("admin")
        );

        // A good change applies.
        s.handle(Event::Apply(cm(
            NAME,
            2,
            &[(
                "mapRoles",
                &ROLES.replace("username: admin", "username: root"),
            )],
        )));
        assert_eq!(user(&s, "acs:ram::1:role/admin").as_deref(), Some("root"));

        // A bad edit keeps the last good mappings and is counted.
        s.handle(Event::Apply(cm(
            NAME,
            3,
            &[
                ("mapRoles", ROLES),
                ("mapUsers", "- userarn: acs:ram::1:user/x\n"),
            ],
        )));
        assert_eq!(user(&s, "acs:ram::1:role/admin").as_deref(), Some("root"));
        assert_eq!(metrics.configmap_watch_failures.get(), 1);
        assert!(metrics
            .encode()
            .contains("mapping_reload_errors_total{source=\"ACKConfigMap\"} 1"));
        // The same bad data seen again (e.g. after a re-list) is not counted twice.
        s.handle(Event::Init);
        s.handle(Event::InitApply(cm(
            NAME,
            3,
            &[
                ("mapRoles", ROLES),
                ("mapUsers", "- userarn: acs:ram::1:user/x\n"),
            ],
        )));
        s.handle(Event::InitDone);
        assert_eq!(metrics.configmap_watch_failures.get(), 1);

        // Other ConfigMaps are ignored.
        s.handle(Event::Apply(cm("other", 4, &[])));
        assert_eq!(user(&s, "acs:ram::1:role/admin").as_deref(), Some("root"));

        // Deleted: no mappings.
        s.handle(Event::Delete(cm(NAME, 5, &[])));
        assert_eq!(user(&s, "acs:ram::1:role/admin"), None);
        assert!(s.index().is_empty());
        assert!(metrics
            .encode()
            .contains("mapping_entries{source=\"ACKConfigMap\"} 0"));

        // Re-created.
        s.handle(Event::Apply(cm(NAME, 6, &[("mapAccounts", "- 1\n")])));
        assert!(s.index().maps_account("1"));

        // A re-list that no longer finds it empties the source.
        s.handle(Event::Init);
        s.handle(Event::InitDone);
        assert!(s.index().is_empty());
        assert!(s.ready());
    }

    #[test]
    fn a_bad_configmap_at_start_leaves_the_source_ready_and_empty() {
        let metrics = Arc::new(Metrics::new());
        let s = ConfigMapSource::new(metrics.clone());
        s.handle(Event::Init);
        s.handle(Event::InitApply(cm(NAME, 1, &[("mapRoles", "oops: [")])));
        s.handle(Event::InitDone);
        assert!(s.ready());
        assert!(s.index().is_empty());
        assert_eq!(metrics.configmap_watch_failures.get(), 1);
    }
}

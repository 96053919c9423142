//! The `ACKConfigMap` source: ConfigMap `kube-system/alibabacloud-auth`, data keys `mapRoles`,
//! `mapUsers` (YAML lists of entries, keys in any casing) and `mapAccounts` (a YAML list of
//! account IDs, strings or numbers).
//!
//! Each data key is parsed on its own: a broken key keeps its last good value while the good
//! keys of the same update apply; the reason is logged and `configmap_watch_failures` counts
//! it. A deleted (or absent) ConfigMap means no mappings from this source.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ::kube::runtime::watcher::Event;
use ::kube::{Api, Client};
use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::ConfigMap;

use super::WatchOptions;
use crate::mapping::{
    entries_from_docs, lowercase_keys, Entry, Index, RoleMappingDoc, Source, UserMappingDoc,
};
use crate::metrics::Metrics;

/// Namespace of the ConfigMap.
pub const NAMESPACE: &str = "kube-system";
/// Name of the ConfigMap.
pub const NAME: &str = "alibabacloud-auth";
/// The source's name (`backendMode`).
pub const SOURCE: &str = "ACKConfigMap";

/// The three lists of the ConfigMap, each kept as it last parsed well (`None`: never yet).
#[derive(Clone, Debug, Default)]
pub struct LastGood {
    roles: Option<Vec<Entry>>,
    users: Option<Vec<Entry>>,
    accounts: Option<Vec<String>>,
}

/// What a ConfigMap's data turned into.
#[derive(Debug)]
pub struct Parsed {
    pub index: Index,
    /// Data keys that are not mappings (ignored, reported).
    pub ignored_keys: Vec<String>,
    /// Lists that could not be used, with the reason: each keeps its last good value.
    pub errors: Vec<String>,
    /// The lists as they stand now, for the next update.
    pub last_good: LastGood,
}

/// Parses the ConfigMap's data one key at a time, as aws-iam-authenticator does: a good key
/// applies even when another key of the same update is broken (so a revocation in `mapUsers`
/// is not held back by a typo in `mapRoles`); a broken key keeps its last good value (none at
/// start) and is reported in [`Parsed::errors`]. A key that is absent means an empty list.
pub fn parse_data(data: &BTreeMap<String, String>, last_good: &LastGood) -> Parsed {
    let mut texts: [Option<(&str, &str)>; 3] = [None, None, None];
    let mut duplicated = [false; 3];
    let mut ignored_keys = Vec::new();
    let mut errors = Vec::new();
    for (key, value) in data {
        let slot = match key.to_ascii_lowercase().as_str() {
            "maproles" => 0,
            "mapusers" => 1,
            "mapaccounts" => 2,
            _ => {
                ignored_keys.push(key.clone());
                continue;
            }
        };
        if let Some((other, _)) = texts[slot] {
            errors.push(format!(
                "data keys {other:?} and {key:?} both define the same list; keep one"
            ));
            duplicated[slot] = true;
        }
        texts[slot] = Some((key.as_str(), value.as_str()));
    }
    // One list: absent → empty; broken or duplicated → the last good value.
    fn one<T: Clone>(
        text: Option<(&str, &str)>,
        duplicated: bool,
        last: &Option<Vec<T>>,
        parse: impl FnOnce(&str, &str) -> Result<Vec<T>, String>,
        errors: &mut Vec<String>,
    ) -> Option<Vec<T>> {
        if duplicated {
            return last.clone();
        }
        match text {
            None => Some(Vec::new()),
            Some((key, text)) => match parse(key, text) {
                Ok(items) => Some(items),
                Err(e) => {
                    errors.push(e);
                    last.clone()
                }
            },
        }
    }
    let roles = one(
        texts[0],
        duplicated[0],
        &last_good.roles,
        |key, text| {
            let docs: Vec<RoleMappingDoc> = parse_list(key, text)?;
            entries_from_docs(NAME, &docs, &[])
        },
        &mut errors,
    );
    let users = one(
        texts[1],
        duplicated[1],
        &last_good.users,
        |key, text| {
            let docs: Vec<UserMappingDoc> = parse_list(key, text)?;
            entries_from_docs(NAME, &[], &docs)
        },
        &mut errors,
    );
    let accounts = one(
        texts[2],
        duplicated[2],
        &last_good.accounts,
        parse_accounts,
        &mut errors,
    );
    let entries = roles
        .iter()
        .flatten()
        .chain(users.iter().flatten())
        .cloned()
        .collect();
    Parsed {
        index: Index::build(entries, accounts.clone().unwrap_or_default()),
        ignored_keys,
        errors,
        last_good: LastGood {
            roles,
            users,
            accounts,
        },
    }
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
    /// Each list as it last parsed well.
    last_good: LastGood,
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
        let parsed = parse_data(&data, &state.last_good);
        for key in &parsed.ignored_keys {
            tracing::warn!(source = SOURCE, key = %key, "ConfigMap {NAMESPACE}/{NAME}: data key ignored (known keys: mapRoles, mapUsers, mapAccounts)");
        }
        for reason in &parsed.errors {
            tracing::error!(source = SOURCE, error = %reason, "ConfigMap {NAMESPACE}/{NAME}: list refused; it keeps its last good value, the other lists apply");
        }
        if !parsed.errors.is_empty() {
            self.metrics.configmap_watch_failures.inc();
            self.metrics.mapping_refused(SOURCE);
        }
        for s in parsed.index.shadowed() {
            tracing::warn!(source = SOURCE, entry = %s, "mapping ignored: an earlier entry maps the same ARN");
        }
        let len = parsed.index.len();
        self.metrics.mapping_loaded(SOURCE, len);
        self.index.store(Arc::new(parsed.index));
        state.last_good = parsed.last_good;
        tracing::info!(
            source = SOURCE,
            entries = len,
            refused_lists = parsed.errors.len(),
            "mappings loaded from ConfigMap {NAMESPACE}/{NAME}"
        );
        state.last_data = Some(Some(data));
    }

    fn absent(&self, state: &mut State, why: &str) {
        if matches!(state.last_data, Some(None)) {
            return;
        }
        let had = state.last_data.is_some();
        self.index.store(Arc::new(Index::default()));
        state.last_good = LastGood::default();
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
        let parsed = parse_data(&data, &LastGood::default());
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
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
        let none = LastGood::default();
        for (key, value, needle) in bad {
            let data = BTreeMap::from([(key.to_string(), value.to_string())]);
            let parsed = parse_data(&data, &none);
            assert_eq!(parsed.errors.len(), 1, "{value}");
            assert!(
                parsed.errors[0].contains(needle),
                "{value}: {:?}",
                parsed.errors
            );
            assert!(parsed.index.is_empty(), "nothing good to keep yet");
        }
        let data = BTreeMap::from([
            ("mapRoles".to_string(), String::new()),
            ("maproles".to_string(), String::new()),
        ]);
        assert!(parse_data(&data, &none).errors[0].contains("both"));
        let empty = BTreeMap::from([("mapRoles".to_string(), String::new())]);
        let parsed = parse_data(&empty, &none);
        assert!(parsed.errors.is_empty() && parsed.index.is_empty());
    }

    #[test]
    fn a_broken_key_keeps_its_last_good_value_while_good_keys_apply() {
        let users = "- userarn: acs:ram::1:user/alice\n  username: alice\n- userarn: acs:ram::1:user/mallory\n  username: mallory\n";
        let first = BTreeMap::from([
            ("mapRoles".to_string(), ROLES.to_string()),
            ("mapUsers".to_string(), users.to_string()),
        ]);
        let good = parse_data(&first, &LastGood::default());
        assert!(good.errors.is_empty());
        assert_eq!(good.index.len(), 3);
        // One update: mallory revoked in mapUsers, and a typo in mapRoles.
        let second = BTreeMap::from([
            ("mapRoles".to_string(), "- roelarn: x\n".to_string()),
            (
                "mapUsers".to_string(),
                "- userarn: acs:ram::1:user/alice\n  username: alice\n".to_string(),
            ),
        ]);
        let parsed = parse_data(&second, &good.last_good);
        assert_eq!(parsed.errors.len(), 1);
        assert!(parsed.errors[0].contains("mapRoles"), "{:?}", parsed.errors);
        let find = |arn: &str| {
            parsed
                .index
                .lookup(&canonicalize(arn).expect("arn"))
                .map(|e| e.username.as_str().to_string())
        };
        assert_eq!(
            find("acs:ram::1:user/mallory"),
            None,
            "the revocation applies"
        );
        assert_eq!(find("acs:ram::1:user/alice").as_deref(), Some("alice"));
        assert_eq!(
            find("acs:ram::1:role/admin").as_deref(),
            Some("admin"),
            "the broken list keeps its last good value"
        );
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

        // A bad edit of one key keeps that key's last good mappings and is counted; the good
        // key of the same update applies.
        s.handle(Event::Apply(cm(
            NAME,
            3,
            &[
                ("mapRoles", ROLES),
                ("mapUsers", "- userarn: acs:ram::1:user/x\n"),
            ],
        )));
        assert_eq!(user(&s, "acs:ram::1:role/admin").as_deref(), Some("admin"));
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
        assert_eq!(user(&s, "acs:ram::1:role/admin").as_deref(), Some("admin"));

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

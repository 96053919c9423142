//! The `MountedFile` source: `mapRoles`, `mapUsers` and `mapAccounts` of the config file,
//! re-read when the file changes. A broken edit keeps the previous mappings and says why.
//!
//! Refused on reload, keeping the previous mappings: a file that cannot be read, is not UTF-8,
//! does not parse or validate, is empty, or has lost every mapping key (`mapRoles`, `mapUsers`,
//! `mapAccounts`) while mappings were loaded: what a truncated write looks like. Removing every
//! mapping on purpose is written explicitly (`mapUsers: []`). Each refused content is reported
//! once (one ERROR, `file_errors_total{file="config"}`, `mapping_reload_errors_total`), however
//! many polls see it. The watcher applies a change only once two polls in a row read the same
//! bytes, so a file caught half-written is not even tried.
//!
//! Only the mappings are applied live. A change to any other setting (cluster ID, audiences,
//! addresses, ports, state directory, backends, STS endpoint, cache sizes, scrubbed
//! accounts, …) is reported once as needing a restart and not applied.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::{entries_from_docs, lowercase_keys, Index, Source};
use crate::config::FileConfig;
use crate::files::ReportOnce;
use crate::metrics::Metrics;

/// The keys of the `server:` section that are applied live.
const LIVE_KEYS: [&str; 3] = ["maproles", "mapusers", "mapaccounts"];

/// Mappings from the config file.
pub struct FileSource {
    path: Option<PathBuf>,
    index: ArcSwap<Index>,
    loaded: AtomicBool,
    last_content: std::sync::Mutex<Option<Vec<u8>>>,
    metrics: Option<Arc<Metrics>>,
    report: ReportOnce,
    /// The settings other than mappings, as first loaded (lower-cased keys).
    startup_settings: std::sync::Mutex<Option<serde_yaml::Value>>,
    /// The last set of changed restart-only settings reported.
    restart_reported: std::sync::Mutex<Option<Vec<String>>>,
}

impl FileSource {
    /// A source over the config file at `path`, loaded once now (an error here is fatal to the
    /// caller: the server does not start on a broken file).
    pub fn load(path: &Path, metrics: Option<Arc<Metrics>>) -> Result<Self, String> {
        let source = Self {
            path: Some(path.to_path_buf()),
            index: ArcSwap::from_pointee(Index::default()),
            loaded: AtomicBool::new(false),
            last_content: std::sync::Mutex::new(None),
            metrics,
            report: ReportOnce::new("config", "previous mappings"),
            startup_settings: std::sync::Mutex::new(None),
            restart_reported: std::sync::Mutex::new(None),
        };
        source.reload()?;
        Ok(source)
    }

    /// A source from an already parsed config (no file, no reload).
    pub fn from_config(config: &FileConfig) -> Result<Self, String> {
        let source = Self {
            path: None,
            index: ArcSwap::from_pointee(Index::default()),
            loaded: AtomicBool::new(true),
            last_content: std::sync::Mutex::new(None),
            metrics: None,
            report: ReportOnce::new("config", "previous mappings"),
            startup_settings: std::sync::Mutex::new(None),
            restart_reported: std::sync::Mutex::new(None),
        };
        source.index.store(Arc::new(index_from_config(config)?));
        Ok(source)
    }

    /// Re-reads the file if its content changed. Returns whether new mappings were applied.
    /// On error the previous mappings stay; after start-up, a refused content is reported
    /// (logged and counted) once.
    pub fn reload(&self) -> Result<bool, String> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
        let result = bytes.clone().and_then(|b| self.try_reload(path, b));
        match &result {
            Ok(_) => self.report.accepted(path),
            Err(e) if self.ready() => {
                let identity = bytes.unwrap_or_else(|e| e.into_bytes());
                if self
                    .report
                    .refused(&identity, path, e, self.metrics.as_deref())
                {
                    if let Some(m) = &self.metrics {
                        m.mapping_refused(self.name());
                    }
                }
            }
            Err(_) => {}
        }
        result
    }

    /// The file's bytes now, for the watcher's "same bytes twice" check.
    fn peek(&self) -> Option<Vec<u8>> {
        self.path.as_deref().and_then(|p| std::fs::read(p).ok())
    }

    fn try_reload(&self, path: &Path, bytes: Vec<u8>) -> Result<bool, String> {
        let mut last = self.last_content.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_deref() == Some(bytes.as_slice()) {
            return Ok(false);
        }
        let text = String::from_utf8(bytes.clone())
            .map_err(|_| format!("{} is not UTF-8", path.display()))?;
        let value: Option<serde_yaml::Value> = serde_yaml::from_str(&text).ok();
        let first = !self.ready();
        if !first {
            if text.trim().is_empty() || value.as_ref().is_some_and(|v| v.is_null()) {
                return Err(format!(
                    "{} is empty (truncated, or caught while being written?)",
                    path.display()
                ));
            }
            if let Some(v) = &value {
                if !has_mapping_keys(v) && !self.index().is_empty() {
                    return Err(format!(
                        "{} has none of mapRoles, mapUsers, mapAccounts (truncated?); to remove \
                         every mapping on purpose, write `mapUsers: []`",
                        path.display()
                    ));
                }
            }
        }
        let config = FileConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let index = index_from_config(&config)?;
        let settings = value.map(|v| restart_settings(&v));
        if first {
            *self
                .startup_settings
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = settings;
        } else if let Some(now) = settings {
            self.check_restart_settings(path, &now);
        }
        for s in index.shadowed() {
            tracing::warn!(source = "MountedFile", entry = %s, "mapping ignored: an earlier entry maps the same ARN");
        }
        if let Some(m) = &self.metrics {
            m.mapping_loaded(self.name(), index.len());
        }
        self.index.store(Arc::new(index));
        self.loaded.store(true, Ordering::Release);
        *last = Some(bytes);
        Ok(true)
    }

    /// Reports, once per distinct set, settings that changed since start-up and need a restart.
    fn check_restart_settings(&self, path: &Path, now: &serde_yaml::Value) {
        let startup = self
            .startup_settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(startup) = startup else { return };
        let changed = changed_keys(&startup, now);
        let mut reported = self
            .restart_reported
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if reported.as_ref() == Some(&changed) {
            return;
        }
        if !changed.is_empty() {
            tracing::warn!(
                path = %path.display(),
                settings = %changed.join(", "),
                "config file settings changed that apply only at start-up: not applied; restart the server to use them (mappings are applied)"
            );
        } else if reported.as_ref().is_some_and(|r| !r.is_empty()) {
            tracing::info!(path = %path.display(), "config file settings are back to the ones in use");
        }
        *reported = Some(changed);
    }

    /// Polls the file every `interval` and applies a change once two polls in a row read the
    /// same bytes, until the task is dropped.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous: Option<Vec<u8>> = None;
        loop {
            ticker.tick().await;
            let this = self.clone();
            let seen = match tokio::task::spawn_blocking(move || this.peek()).await {
                Ok(seen) => seen,
                Err(e) => {
                    tracing::error!(error = %e, "config reload task failed");
                    continue;
                }
            };
            let settled = seen.is_some() && seen == previous;
            // An unreadable file is reported at once: there is nothing to wait for.
            previous = seen.clone();
            if !settled && seen.is_some() {
                continue;
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reload()).await {
                Ok(Ok(true)) => tracing::info!(
                    source = "MountedFile",
                    "mappings reloaded from the config file"
                ),
                // Refusals were reported by `reload`, once per content.
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "config reload task failed"),
            }
        }
    }
}

/// Whether the `server:` section names any mapping key (even with an empty list).
fn has_mapping_keys(value: &serde_yaml::Value) -> bool {
    let lower = lowercase_keys(value.clone());
    lower
        .get("server")
        .and_then(|s| s.as_mapping())
        .is_some_and(|m| {
            LIVE_KEYS
                .iter()
                .any(|k| m.contains_key(serde_yaml::Value::from(*k)))
        })
}

/// The file's settings other than the live mappings, keys lower-cased.
fn restart_settings(value: &serde_yaml::Value) -> serde_yaml::Value {
    let mut lower = lowercase_keys(value.clone());
    if let Some(server) = lower.get_mut("server").and_then(|s| s.as_mapping_mut()) {
        for k in LIVE_KEYS {
            server.remove(k);
        }
    }
    lower
}

/// Names (`clusterid`, `server.port`, …) of the settings that differ between two files.
fn changed_keys(before: &serde_yaml::Value, after: &serde_yaml::Value) -> Vec<String> {
    fn entries(v: &serde_yaml::Value) -> Vec<(String, serde_yaml::Value)> {
        let mut out = Vec::new();
        if let Some(m) = v.as_mapping() {
            for (k, v) in m {
                let name = k.as_str().unwrap_or("?").to_string();
                match (name.as_str(), v.as_mapping()) {
                    ("server", Some(server)) => {
                        for (k, v) in server {
                            out.push((format!("server.{}", k.as_str().unwrap_or("?")), v.clone()));
                        }
                    }
                    _ => out.push((name, v.clone())),
                }
            }
        }
        out
    }
    let (a, b) = (entries(before), entries(after));
    let mut names: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.iter().find(|(k2, _)| k2 == k).map(|(_, v2)| v2) != Some(v))
        .chain(b.iter().filter(|(k, _)| !a.iter().any(|(k2, _)| k2 == k)))
        .map(|(k, _)| k.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn index_from_config(config: &FileConfig) -> Result<Index, String> {
    let entries = entries_from_docs("server", &config.server.map_roles, &config.server.map_users)?;
    Ok(Index::build(entries, config.server.map_accounts.clone()))
}

impl Source for FileSource {
    fn name(&self) -> &'static str {
        "MountedFile"
    }
    fn index(&self) -> Arc<Index> {
        self.index.load_full()
    }
    fn ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arn::canonicalize;

    #[test]
    fn reload_applies_good_edits_and_keeps_old_on_bad() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        let write = |s: &str| std::fs::write(&path, s).expect("write");
        write("server:\n  mapUsers:\n    - userARN: acs:ram::1:user/a\n      username: first\n");
        let src = FileSource::load(&path, None).expect("load");
        let arn = canonicalize("acs:ram::1:user/a").expect("arn");
        let name = |s: &FileSource| {
            s.index()
                .lookup(&arn)
                .map(|e| e.username.as_str().to_string())
        };
        assert_eq!(name(&src).as_deref(), Some("first"));
        assert_eq!(src.reload(), Ok(false));

        write("server:\n  mapUsers:\n    - userARN: acs:ram::1:user/a\n      username: second\n");
        assert_eq!(src.reload(), Ok(true));
        assert_eq!(name(&src).as_deref(), Some("second"));

        write("server:\n  mapUsers:\n    - userARN: acs:ram::1:user/a\n      usernam: broken\n");
        let err = src.reload().expect_err("broken edit");
        assert!(err.contains("usernam"), "{err}");
        assert_eq!(name(&src).as_deref(), Some("second"));
    }

    fn errors(m: &Metrics, needle: &str) -> String {
        m.encode()
            .lines()
            .find_map(|l| l.strip_prefix(needle).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "missing".into())
    }

    #[test]
    fn empty_truncated_and_broken_edits_keep_mappings_and_count_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        let write = |s: &str| std::fs::write(&path, s).expect("write");
        let good = "clusterID: c1\nserver:\n  port: 1000\n  mapUsers:\n    - userARN: acs:ram::1:user/a\n      username: first\n";
        write(good);
        let m = Arc::new(Metrics::new());
        let src = FileSource::load(&path, Some(m.clone())).expect("load");
        let arn = canonicalize("acs:ram::1:user/a").expect("arn");
        let mapped = |s: &FileSource| s.index().lookup(&arn).is_some();
        let file_errors = "ack_ram_authenticator_file_errors_total{file=\"config\"}";
        let reload_errors =
            "ack_ram_authenticator_mapping_reload_errors_total{source=\"MountedFile\"}";
        assert_eq!(errors(&m, file_errors), "0");

        for (n, (bad, why)) in [
            ("", "is empty"),
            ("\n# only a comment\n", "is empty"),
            ("clusterID: c1\nserver:\n  port: 1000\n", "none of mapRoles"),
            (
                "clusterID: c1\nserver:\n  mapUsers: [oops\n",
                "not valid YAML",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            write(bad);
            for _ in 0..3 {
                let err = src.reload().expect_err("refused");
                assert!(err.contains(why), "{bad:?}: {err}");
                assert!(mapped(&src), "{bad:?} dropped the mappings");
            }
            assert_eq!(errors(&m, file_errors), (n + 1).to_string(), "{bad:?}");
            assert_eq!(errors(&m, reload_errors), (n + 1).to_string(), "{bad:?}");
        }
        // Removing every mapping on purpose is explicit.
        write("clusterID: c1\nserver:\n  port: 1000\n  mapUsers: []\n");
        assert_eq!(src.reload(), Ok(true));
        assert!(!mapped(&src));
    }

    #[test]
    fn restart_only_settings_are_named() {
        let before = restart_settings(
            &serde_yaml::from_str(
                "clusterID: a\nserver:\n  port: 1\n  mapUsers: []\n  audiences: [x]\n",
            )
            .expect("yaml"),
        );
        let after = restart_settings(
            &serde_yaml::from_str(
                "clusterId: b\nserver:\n  Port: 1\n  mapUsers: [{userARN: x}]\n  hostname: h\n",
            )
            .expect("yaml"),
        );
        assert_eq!(
            changed_keys(&before, &after),
            vec!["clusterid", "server.audiences", "server.hostname"]
        );
        assert!(changed_keys(&before, &before).is_empty());
    }
}

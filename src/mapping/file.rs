//! The `MountedFile` source: `mapRoles`, `mapUsers` and `mapAccounts` of the config file,
//! re-read when the file changes. A broken edit keeps the previous mappings and says why.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::{entries_from_docs, Index, Source};
use crate::config::FileConfig;
use crate::metrics::Metrics;

/// Mappings from the config file.
pub struct FileSource {
    path: Option<PathBuf>,
    index: ArcSwap<Index>,
    loaded: AtomicBool,
    last_content: std::sync::Mutex<Option<Vec<u8>>>,
    metrics: Option<Arc<Metrics>>,
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
        };
        source.index.store(Arc::new(index_from_config(config)?));
        Ok(source)
    }

    /// Re-reads the file if its content changed. Returns whether new mappings were applied.
    /// On error the previous mappings stay.
    pub fn reload(&self) -> Result<bool, String> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let result = self.try_reload(path);
        if let (Err(_), Some(m)) = (&result, &self.metrics) {
            m.mapping_refused(self.name());
        }
        result
    }

    fn try_reload(&self, path: &Path) -> Result<bool, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut last = self.last_content.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_deref() == Some(bytes.as_slice()) {
            return Ok(false);
        }
        let text = String::from_utf8(bytes.clone())
            .map_err(|_| format!("{} is not UTF-8", path.display()))?;
        let config = FileConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let index = index_from_config(&config)?;
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

    /// Polls the file every `interval` and applies changes, until the task is dropped.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reload()).await {
                Ok(Ok(true)) => tracing::info!(
                    source = "MountedFile",
                    "mappings reloaded from the config file"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::error!(source = "MountedFile", error = %e, "config file change refused; keeping the previous mappings")
                }
                Err(e) => tracing::error!(error = %e, "config reload task failed"),
            }
        }
    }
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
}

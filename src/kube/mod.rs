//! Mapping sources that follow the cluster: the `alibabacloud-auth` ConfigMap and the
//! `RAMIdentityMapping` custom resources, watched with kube-rs.
//!
//! Each source is one [`Source`] whose in-memory [`Index`](crate::mapping::Index) is swapped
//! whole by one task that applies the watch events ([`ConfigMapSource::handle`],
//! [`CrdSource::handle`]); lookups never touch the API server. A re-list (at start and after
//! the API server answers `410 Gone`) replaces the index, so objects deleted while the watch
//! was disconnected disappear. While the API server is unreachable the last mappings keep
//! serving and the watch retries with an exponential backoff. A watch task that ends or
//! panics is restarted by its supervisor, so the sources never go stale silently.

pub mod configmap;
pub mod crd;
pub mod mappings;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::runtime::utils::{Backoff, ResetTimerBackoff};
use ::kube::{Client, Config};

use crate::config::BackendMode;
use crate::mapping::Source;
use crate::metrics::Metrics;

pub use configmap::ConfigMapSource;
pub use mappings::CrdSource;

/// Why no Kubernetes client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the kubeconfig {path}: {source}")]
    ReadKubeconfig {
        path: PathBuf,
        source: ::kube::config::KubeconfigError,
    },
    #[error("the kubeconfig {path} cannot be used: {source}")]
    UseKubeconfig {
        path: PathBuf,
        source: ::kube::config::KubeconfigError,
    },
    #[error(
        "no Kubernetes configuration found (not running in a pod and no usable ~/.kube/config \
         or $KUBECONFIG); pass --kubeconfig: {0}"
    )]
    Infer(#[from] ::kube::config::InferConfigError),
    #[error("cannot build the Kubernetes client: {0}")]
    Build(#[from] ::kube::Error),
}

/// Tuning of the watches; the defaults suit production.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// First delay after a failed list or watch (doubles up to `backoff_max`).
    pub backoff_min: Duration,
    /// Longest delay between two attempts while the API server is unreachable.
    pub backoff_max: Duration,
    /// Write `status.canonicalARN` of `RAMIdentityMapping` objects (needs `patch` on
    /// `ramidentitymappings/status`; a denial is logged once and the writes stop).
    pub write_status: bool,
    /// Server-side timeout of one watch request, in seconds (kube-rs' default when `None`).
    pub watch_timeout_secs: Option<u32>,
    /// Delay before a watch task that ended or panicked is started again.
    pub restart_delay: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            backoff_min: Duration::from_millis(800),
            backoff_max: Duration::from_secs(30),
            write_status: true,
            watch_timeout_secs: None,
            restart_delay: Duration::from_secs(1),
        }
    }
}

impl WatchOptions {
    pub(crate) fn watcher_config(&self) -> ::kube::runtime::watcher::Config {
        let mut config = ::kube::runtime::watcher::Config::default();
        if let Some(t) = self.watch_timeout_secs {
            config = config.timeout(t);
        }
        config
    }

    /// The watch's backoff; like kube-rs' default, it also starts over after two minutes
    /// without failures (bookmarks alone do not count as successes).
    pub(crate) fn backoff(&self) -> ResetTimerBackoff<ExpBackoff> {
        ResetTimerBackoff::new(
            ExpBackoff::new(self.backoff_min, self.backoff_max),
            Duration::from_secs(120),
        )
    }
}

/// Exponential backoff (doubling from `min` to `max`), reset by any successful watch event.
#[derive(Clone, Debug)]
pub(crate) struct ExpBackoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl ExpBackoff {
    fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            next: min,
        }
    }
}

impl Iterator for ExpBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(now)
    }
}

impl Backoff for ExpBackoff {
    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Builds the Kubernetes client: from `kubeconfig` when given, else from `$KUBECONFIG` or
/// `~/.kube/config` when present, else the pod's in-cluster configuration.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| ClientError::ReadKubeconfig {
                path: path.to_path_buf(),
                source,
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| ClientError::UseKubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// Starts the Kubernetes-backed sources among `modes` (in that order) and returns them; the
/// watches run as background tasks. `kubeconfig` overrides in-cluster configuration.
/// `MountedFile` is not a Kubernetes source and is skipped.
pub async fn start_sources(
    modes: &[BackendMode],
    kubeconfig: Option<&Path>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Vec<(BackendMode, Arc<dyn Source>)>> {
    if !modes
        .iter()
        .any(|m| matches!(m, BackendMode::AckConfigMap | BackendMode::Crd))
    {
        return Ok(Vec::new());
    }
    let client = client(kubeconfig).await?;
    Ok(start_with_client(
        client,
        modes,
        metrics,
        WatchOptions::default(),
    ))
}

/// Like [`start_sources`] with a ready client and explicit options (tests use short backoffs).
/// Must be called inside a Tokio runtime.
pub fn start_with_client(
    client: Client,
    modes: &[BackendMode],
    metrics: Arc<Metrics>,
    options: WatchOptions,
) -> Vec<(BackendMode, Arc<dyn Source>)> {
    let mut out: Vec<(BackendMode, Arc<dyn Source>)> = Vec::new();
    for mode in modes {
        if out.iter().any(|(m, _)| m == mode) {
            continue;
        }
        match mode {
            BackendMode::AckConfigMap => {
                let source = ConfigMapSource::spawn(client.clone(), metrics.clone(), &options);
                out.push((*mode, source));
            }
            BackendMode::Crd => {
                let source = CrdSource::spawn(client.clone(), metrics.clone(), &options);
                out.push((*mode, source));
            }
            BackendMode::MountedFile => {}
        }
    }
    out
}

/// Runs `make()` as a task and starts it again (after `delay`) whenever it ends or panics.
/// Returns the supervisor's handle; aborting it stops the current run too.
pub(crate) fn supervise<F, Fut>(
    what: &'static str,
    delay: Duration,
    make: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let run = tokio::spawn(make());
            let abort = run.abort_handle();
            // Abort the run if the supervisor itself is aborted.
            let _guard = AbortOnDrop(abort);
            match run.await {
                Ok(()) => tracing::error!(watch = what, "watch task ended; starting it again"),
                Err(e) if e.is_panic() => {
                    tracing::error!(watch = what, "watch task panicked; starting it again")
                }
                Err(_) => return,
            }
            tokio::time::sleep(delay).await;
        }
    })
}

/// Follows one watch forever: events go to `on_event`, errors (after which the watcher
/// backs off and recovers by itself) to `on_error`.
pub(crate) async fn run_watch<K, E, R>(
    api: ::kube::Api<K>,
    config: ::kube::runtime::watcher::Config,
    backoff: impl Backoff,
    mut on_event: E,
    mut on_error: R,
) where
    K: ::kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    E: FnMut(::kube::runtime::watcher::Event<K>),
    R: FnMut(&::kube::runtime::watcher::Error),
{
    use ::kube::runtime::WatchStreamExt;
    use futures::StreamExt;
    let stream = ::kube::runtime::watcher(api, config).backoff(backoff);
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => on_event(event),
            Err(e) => on_error(&e),
        }
    }
}

/// Whether a watch error is the API server saying the watched history expired (`410 Gone`):
/// routine, the watcher re-lists.
pub(crate) fn is_expired(e: &::kube::runtime::watcher::Error) -> bool {
    matches!(e, ::kube::runtime::watcher::Error::WatchError(s) if s.code == 410)
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn backoff_doubles_to_max_and_resets() {
        let mut b = ExpBackoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<u128> = (0..4)
            .filter_map(|_| b.next())
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(got, vec![100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(100)));
    }

    #[tokio::test]
    async fn supervisor_restarts_ended_and_panicked_tasks() {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let handle = supervise("test", Duration::from_millis(5), move || {
            let r = r.clone();
            async move {
                let n = r.fetch_add(1, Ordering::SeqCst);
                if n == 1 {
                    panic!("boom");
                }
                if n >= 3 {
                    std::future::pending::<()>().await;
                }
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while runs.load(Ordering::SeqCst) < 4 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        handle.abort();
    }

    #[tokio::test]
    async fn no_kubernetes_mode_needs_no_client() {
        let sources = start_sources(
            &[BackendMode::MountedFile],
            Some(Path::new("/nonexistent/kubeconfig")),
            Arc::new(Metrics::new()),
        )
        .await
        .expect("no client needed");
        assert!(sources.is_empty());
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_is_named() {
        let Err(err) = client(Some(Path::new("/nonexistent/kubeconfig"))).await else {
            panic!("a missing kubeconfig must be refused");
        };
        assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");
    }
}

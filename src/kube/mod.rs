//! Mapping sources that follow the cluster: the `alibabacloud-auth` ConfigMap and the
//! `RAMIdentityMapping` custom resources, watched with kube-rs.
//!
//! Each source is one [`Source`] whose in-memory [`Index`](crate::mapping::Index) is swapped
//! whole by one task that applies the watch events ([`ConfigMapSource::handle`],
//! [`CrdSource::handle`]); lookups never touch the API server. A re-list (at start and after
//! the API server answers `410 Gone`) replaces the index, so objects deleted while the watch
//! was disconnected disappear. A `410` is the normal end of a watch, not a failure: the source
//! lists again at once. While the API server is unreachable (or failing) the last mappings keep
//! serving and the watch retries with a jittered exponential backoff, capped low enough that
//! every source catches up within seconds of the API server coming back, and reset once a list
//! succeeds. A watch task that ends or panics is restarted by its supervisor, so the sources
//! never go stale silently. The client names itself with a `User-Agent` of
//! `ram-authenticator/<version>`.

pub mod configmap;
pub mod crd;
pub mod mappings;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::runtime::utils::Backoff;
use ::kube::{Client, Config};
use prometheus_client::metrics::counter::Counter;

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
    /// First delay after a failed list or watch (doubles up to `backoff_max`; each delay is
    /// jittered down by up to half).
    pub backoff_min: Duration,
    /// Longest delay between two attempts while the API server is unreachable or failing: also
    /// the longest a source can lag once the API server is back.
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
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(4),
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

    /// The watch's backoff (see [`run_watch`] for when it applies and resets).
    pub(crate) fn backoff(&self) -> ExpBackoff {
        ExpBackoff::new(self.backoff_min, self.backoff_max)
    }
}

/// `User-Agent` of every request to the Kubernetes API.
pub const USER_AGENT: &str = concat!("ram-authenticator/", env!("CARGO_PKG_VERSION"));

/// Exponential backoff (doubling from `min` to `max`); [`run_watch`] resets it.
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
    Ok(Client::try_from(identify(config))?)
}

/// Adds the product's `User-Agent` to a client configuration.
pub fn identify(mut config: Config) -> Config {
    config.headers.push((
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_static(USER_AGENT),
    ));
    config
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
        if !matches!(mode, BackendMode::MountedFile) {
            // Exported at 0 from the start for each configured source.
            metrics.watch_failures_of(mode.as_str());
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

/// Follows one watch forever: events go to `on_event`, errors to `on_error`.
///
/// - A `410 Gone` (in the watch stream or as the answer to a watch or list request) is the
///   normal end of a watch: the watch starts over with a list at once, without waiting and
///   without counting a failure. A `410` within [`EXPIRY_SPACING`] of the previous one counts
///   as a failure and waits at least that long, so an API server that keeps answering 410
///   gets at most about one list a second.
/// - Any other error counts in `failures` and waits the next step of `backoff`.
/// - The backoff starts over once a list completes or a watch event (a change) arrives.
pub(crate) async fn run_watch<K, E, R>(
    api: ::kube::Api<K>,
    config: ::kube::runtime::watcher::Config,
    mut backoff: impl Backoff,
    failures: Counter,
    mut on_event: E,
    mut on_error: R,
) where
    K: ::kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    E: FnMut(::kube::runtime::watcher::Event<K>),
    R: FnMut(&::kube::runtime::watcher::Error),
{
    use futures::StreamExt;
    let start = || ::kube::runtime::watcher(api.clone(), config.clone()).boxed();
    let mut stream = start();
    let mut last_expiry: Option<tokio::time::Instant> = None;
    loop {
        match stream.next().await {
            Some(Ok(event)) => {
                use ::kube::runtime::watcher::Event;
                match event {
                    Event::InitDone | Event::Apply(_) | Event::Delete(_) => backoff.reset(),
                    // `Init` comes before the list is even asked for: no sign of success.
                    Event::Init | Event::InitApply(_) => {}
                }
                on_event(event);
            }
            Some(Err(e)) => {
                on_error(&e);
                let mut at_least = Duration::ZERO;
                if is_expired(&e) {
                    // The watcher keeps a version the server no longer serves in some of these
                    // cases (a 410 answer to the watch request): start from a fresh list.
                    stream = start();
                    let now = tokio::time::Instant::now();
                    let spaced = last_expiry
                        .is_none_or(|t| now.saturating_duration_since(t) >= EXPIRY_SPACING);
                    if spaced {
                        last_expiry = Some(now);
                        continue;
                    }
                    // The list in between reset the backoff: keep the pace down regardless. The
                    // list after the pause counts as the last one, so at most one a second.
                    last_expiry = Some(now + EXPIRY_SPACING);
                    at_least = EXPIRY_SPACING;
                }
                failures.inc();
                let delay = jitter(backoff.next().unwrap_or(Duration::from_secs(1)));
                tokio::time::sleep(delay.max(at_least)).await;
            }
            // The watcher never ends; should it, start over.
            None => stream = start(),
        }
    }
}

/// The shortest time between two `410`s that each start a list at once.
pub(crate) const EXPIRY_SPACING: Duration = Duration::from_secs(1);

/// Between half of `d` and `d`, so that many watchers do not retry in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.5..=1.0))
}

/// Whether a watch error is the API server saying the watched history expired (`410 Gone`):
/// routine, the source lists again.
pub(crate) fn is_expired(e: &::kube::runtime::watcher::Error) -> bool {
    use ::kube::runtime::watcher::Error;
    match e {
        Error::WatchError(s) => s.code == 410,
        Error::InitialListFailed(::kube::Error::Api(s))
        | Error::WatchStartFailed(::kube::Error::Api(s))
        | Error::WatchFailed(::kube::Error::Api(s)) => s.code == 410,
        _ => false,
    }
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

    #[test]
    fn a_410_in_any_form_is_an_expiry() {
        use ::kube::runtime::watcher::Error;
        let status = |code| ::kube::core::ErrorResponse {
            status: "Failure".into(),
            message: String::new(),
            reason: "Expired".into(),
            code,
        };
        assert!(is_expired(&Error::WatchError(status(410))));
        assert!(is_expired(&Error::WatchStartFailed(::kube::Error::Api(
            status(410)
        ))));
        assert!(is_expired(&Error::InitialListFailed(::kube::Error::Api(
            status(410)
        ))));
        assert!(!is_expired(&Error::WatchError(status(500))));
        assert!(!is_expired(&Error::WatchStartFailed(::kube::Error::Api(
            status(403)
        ))));
        assert!(!is_expired(&Error::NoResourceVersion));
    }

    #[test]
    fn jitter_stays_between_half_and_whole() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(4));
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_secs(4),
                "{d:?}"
            );
        }
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

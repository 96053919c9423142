//! The webhook server: HTTPS (`/authenticate`, `/healthz`, `/readyz`, `/metrics`) and a plain
//! HTTP health listener (`/healthz`, `/readyz`, `/metrics`).
//!
//! Start-up: resolve settings (flags over the config file over defaults), make or load the
//! serving pair, check the key's permissions, build the mapping chain (file sources never touch
//! the Kubernetes API), bind, write the webhook kubeconfig, serve. The first SIGTERM/SIGINT
//! stops accepting, turns `/readyz` false, lets in-flight reviews finish and exits 0; a second
//! signal exits at once.

mod conn;
mod http;
pub mod init;
pub mod limits;
mod report;
pub mod settings;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio::net::TcpListener;

use crate::authenticator::Authenticator;
use crate::config::{BackendMode, FileConfig};
use crate::logging::LogFormat;
use crate::mapping::file::FileSource;
use crate::mapping::{Chain, Source};
use crate::metrics::Metrics;
use crate::sts::StsClient;
use crate::types::SystemClock;

pub use settings::Settings;

/// Arguments of `server`. Each overrides the config file's key of the same meaning.
#[derive(Debug, Args, Default)]
pub struct ServerArgs {
    /// Config file (the root flag `-c/--config`).
    #[arg(skip)]
    pub config: Option<PathBuf>,
    /// The cluster ID tokens must be bound to (the root flag `-i/--cluster-id`).
    #[arg(skip)]
    pub cluster_id: Option<String>,
    /// HTTPS listen address [default: 127.0.0.1].
    #[arg(short = 'b', long, visible_alias = "bind", value_parser = ip_address)]
    pub address: Option<String>,
    /// HTTPS port; 0 picks a free one [default: 21362].
    #[arg(long)]
    pub port: Option<u16>,
    /// Host name kube-apiserver uses to reach the webhook [default: localhost].
    #[arg(long)]
    pub hostname: Option<String>,
    /// Directory holding cert.pem and key.pem (created if absent) [default: /var/ack-ram-authenticator].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Where to write the webhook kubeconfig [default: /etc/kubernetes/ack-ram-authenticator/kubeconfig.yaml].
    #[arg(long)]
    pub generate_kubeconfig: Option<PathBuf>,
    /// Do not write the webhook kubeconfig (`init` wrote it).
    #[arg(long)]
    pub kubeconfig_pregenerated: bool,
    /// Mapping sources in order, comma-separated: MountedFile, ACKConfigMap, CRD [default: MountedFile].
    #[arg(long, value_delimiter = ',', value_parser = backend_mode)]
    pub backend_mode: Vec<String>,
    /// Region: STS endpoint https://sts-vpc.<region>.aliyuncs.com.
    #[arg(long, env = "STS_REGION")]
    pub region: Option<String>,
    /// STS endpoint URL (wins over --region) [default: https://sts.aliyuncs.com].
    #[arg(long, env = "STS_ENDPOINT")]
    pub sts_endpoint: Option<String>,
    /// Extra CA bundle (PEM) trusted for the STS endpoint.
    #[arg(long)]
    pub sts_ca_file: Option<PathBuf>,
    /// Plain-HTTP health listener [default: 0.0.0.0:21363].
    #[arg(long)]
    pub health_address: Option<String>,
    /// Kubeconfig for the Kubernetes API (ACKConfigMap, CRD); in-cluster config if unset.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// An audience this authenticator serves (repeat for several).
    #[arg(long = "audience")]
    pub audiences: Vec<String>,
    /// Upper bound on how long a confirmed identity is cached, in seconds [default: 900].
    #[arg(long)]
    pub cache_ttl_seconds: Option<u64>,
    /// Identities cached at most [default: 100000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_max_entries: Option<u64>,
    /// Timeout of one STS attempt, in milliseconds [default: 3000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub sts_timeout_ms: Option<u64>,
    /// Deadline of a review's STS work, retries included, in milliseconds [default: 8000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=25_000))]
    pub sts_deadline_ms: Option<u64>,
    /// STS calls in flight at once [default: 64].
    #[arg(long)]
    pub sts_max_concurrent: Option<usize>,
    /// Open HTTPS connections at most; at the cap the most expendable one is shed (1-65536) [default: 4096].
    #[arg(long)]
    pub max_connections: Option<u64>,
    /// Reviews being authenticated at once, counted once their body is in; more wait (1-65536) [default: 1024].
    #[arg(long)]
    pub max_concurrent_reviews: Option<u64>,
    /// How long in-flight reviews may take to finish after the first stop signal, in seconds (0-300) [default: 20].
    #[arg(long)]
    pub shutdown_grace_seconds: Option<u64>,
    /// TLS handshake deadline, in ms (100-60000) [default: 10000].
    #[arg(long)]
    pub tls_handshake_timeout_ms: Option<u64>,
    /// Deadline of a connection's first request after the handshake, and of an HTTP/1.1 request's headers from their first byte, in ms (100-60000) [default: 10000].
    #[arg(long)]
    pub header_timeout_ms: Option<u64>,
    /// Deadline of a request body, from the request's start, in ms (100-60000) [default: 10000].
    #[arg(long)]
    pub body_timeout_ms: Option<u64>,
    /// Deadline for the client to take an answer, in ms (100-60000) [default: 10000].
    #[arg(long)]
    pub write_timeout_ms: Option<u64>,
    /// A connection with no request in flight for this long is closed (HTTP/2 PINGs do not count), in ms (100-3600000) [default: 90000].
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// HTTP/2 keep-alive PING interval, in ms (100-3600000) [default: 30000].
    #[arg(long)]
    pub http2_keepalive_interval_ms: Option<u64>,
    /// An HTTP/2 keep-alive PING unanswered for this long closes the connection, in ms (100-600000) [default: 10000].
    #[arg(long)]
    pub http2_keepalive_timeout_ms: Option<u64>,
    /// HTTP/2 concurrent streams per connection (32-4096) [default: 256].
    #[arg(long)]
    pub http2_max_concurrent_streams: Option<u64>,
    /// Request header bytes at most (HTTP/1.1 head, HTTP/2 header list) (8192-1048576) [default: 16384].
    #[arg(long)]
    pub max_header_bytes: Option<u64>,
    /// Bytes a connection may read that serve no request (HTTP/2 control frames, abandoned requests) before it is closed; refilled at 1/32 per second (1048576-1073741824) [default: 2097152].
    #[arg(long)]
    pub control_budget_bytes: Option<u64>,
    /// Request body bytes buffered at once, all connections together; past that, the connection holding the most is closed (1048576-17179869184) [default: 67108864].
    #[arg(long)]
    pub max_body_buffer_bytes: Option<u64>,
    /// Open connections on the health listener at most (1-4096) [default: 64].
    #[arg(long)]
    pub health_max_connections: Option<u64>,
    /// Health listener: deadline of a request and of its answer, in ms (100-60000) [default: 5000].
    #[arg(long)]
    pub health_timeout_ms: Option<u64>,
    /// Health listener: idle connections are closed after this (longer than a scrape interval), in ms (100-3600000) [default: 120000].
    #[arg(long)]
    pub health_idle_timeout_ms: Option<u64>,
    /// How often the config file and the serving certificate are checked for changes, in ms.
    #[arg(long, default_value_t = 2000)]
    pub reload_interval_ms: u64,
    /// Log format (the root flag `-l/--log-format`).
    #[arg(skip)]
    pub log_format: LogFormat,
    /// Mutual TLS: require every HTTPS client to present a certificate issued by a CA in this
    /// PEM file (reloaded when it changes) [default: <state-dir>/client-ca.pem if it exists].
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Accounts whose identities may log in (comma-separated or repeated); others are denied
    /// before mapping (config `server.allowedAccounts`) [default: every account].
    #[arg(long, value_delimiter = ',')]
    pub allowed_accounts: Vec<String>,
    /// Sources whose mappings may produce `system:` usernames or groups: `all`, or backend modes
    /// (config `server.allowReservedNames`) [default: none].
    #[arg(long, value_delimiter = ',')]
    pub allow_reserved_names: Vec<String>,
    /// Level of an allow's audit line (a deny's is always info) [default: info].
    #[arg(long, value_enum)]
    pub audit_allows: Option<crate::audit::AuditAllows>,
}

/// `--address`: an IP address (the listener binds it as given).
fn ip_address(s: &str) -> Result<String, String> {
    let ip = s.trim().trim_start_matches('[').trim_end_matches(']');
    ip.parse::<std::net::IpAddr>()
        .map(|_| ip.to_string())
        .map_err(|_| format!("{s:?} is not an IP address (such as 127.0.0.1 or ::1)"))
}

/// `--backend-mode`: one of the known sources (checked as the command line is read).
fn backend_mode(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Ok(String::new());
    }
    BackendMode::parse(s).map(|m| m.as_str().to_string())
}

/// Arguments of `check-config`: the server's own flags (and environment), so that the settings
/// resolve exactly as `server` would resolve them.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `check-config`: reads the file with the server's own rules, resolves the settings as
/// `server` does and prints them with the mappings.
pub fn check_config(args: &CheckConfigArgs) -> anyhow::Result<i32> {
    let Some(path) = &args.server.config else {
        return Err(crate::exit::usage(
            "check-config needs the config file: --config FILE",
        ));
    };
    let config = FileConfig::load(path)?;
    let settings = Settings::resolve(&args.server, Some(&config))?;
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "config file {} is valid", path.display());
    let _ = writeln!(out, "  clusterID: {}", settings.cluster_id);
    let _ = writeln!(
        out,
        "  listen: {}:{} (health {})",
        settings.address, settings.port, settings.health_address
    );
    let _ = writeln!(out, "  stateDir: {}", settings.state_dir.display());
    let _ = writeln!(
        out,
        "  backends: {}",
        settings
            .backends
            .iter()
            .map(|b| b.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "  STS endpoint: {}", settings.sts.endpoint);
    if config.default_role.is_some() {
        let _ = writeln!(
            out,
            "  defaultRole: read by `token` only; the server ignores it"
        );
    }
    for r in &config.server.map_roles {
        let _ = writeln!(
            out,
            "  role {} -> {} {:?}",
            r.role_arn, r.username, r.groups
        );
    }
    for u in &config.server.map_users {
        let _ = writeln!(
            out,
            "  user {} -> {} {:?}",
            u.user_arn, u.username, u.groups
        );
    }
    for a in &config.server.map_accounts {
        let _ = writeln!(out, "  account {a} -> its canonical ARNs");
    }
    let _ = writeln!(
        out,
        "  allowedAccounts: {}",
        if settings.allowed_accounts.is_empty() {
            "every account".to_string()
        } else {
            settings.allowed_accounts.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "  reserved (system:) names allowed for: {}",
        settings.allow_reserved
    );
    let entries = crate::mapping::entries_from_docs(
        "server",
        &config.server.map_roles,
        &config.server.map_users,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    for advice in crate::mapping::guard::advise(&entries, "MountedFile", &settings.allow_reserved) {
        let _ = writeln!(out, "  {advice}");
    }
    crate::output::emit(&out)?;
    Ok(0)
}

/// Shared state of the HTTP handlers.
pub struct AppState {
    pub auth: Authenticator,
    pub metrics: Arc<Metrics>,
    pub audiences: Vec<String>,
    pub review_deadline: Duration,
    pub shutting_down: AtomicBool,
    /// Reviews being authenticated at once (taken once the body is in).
    pub review_permits: tokio::sync::Semaphore,
    /// Deadline of a request body, from the request's start.
    pub body_timeout: Duration,
    pub audit: crate::audit::Audit,
}

impl AppState {
    fn ready(&self) -> Result<(), String> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        let waiting: Vec<&str> = self
            .auth
            .chain()
            .sources()
            .iter()
            .filter(|s| !s.ready())
            .map(|s| s.name())
            .collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "waiting for the first load of: {}",
                waiting.join(", ")
            ))
        }
    }
}

/// `server`.
pub async fn run(args: ServerArgs) -> anyhow::Result<i32> {
    let _log_writer = crate::logging::init(args.log_format);
    // Signal handlers first: a stop that comes during start-up is a stop, not a kill.
    let shutdown = install_shutdown();
    let build = crate::build_info::BUILD;
    tracing::info!(
        version = %build.version,
        commit = %build.git_commit,
        built = %build.build_date,
        rustc = %build.rustc,
        "ram-authenticator starting"
    );
    let config = match &args.config {
        Some(path) => Some(FileConfig::load(path)?),
        None => None,
    };
    let settings = match Settings::resolve(&args, config.as_ref()) {
        Ok(s) => s,
        Err(e)
            if e.downcast_ref::<limits::RangeError>()
                .is_some_and(|r| r.usage) =>
        {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
        Err(e) => return Err(e),
    };
    if let Err(e) = settings::RELOAD_INTERVAL_MS.pick(Some(args.reload_interval_ms), None) {
        eprintln!("error: {e}");
        return Ok(2);
    }
    let limits = settings.limits.clone();
    let metrics = Arc::new(Metrics::new());

    // TLS material first: fail before binding anything.
    let pair = init::ensure_cert(&settings.state_dir, &settings.hostname, &settings.address)?;
    if pair.created {
        tracing::info!(cert = %pair.cert_path.display(), key = %pair.key_path.display(), "generated a serving certificate and key");
    }
    let resolver = tls::ReloadingResolver::load(&pair.cert_path, &pair.key_path, &metrics)?;
    let client_ca = match &settings.client_ca_file {
        Some(path) => Some(tls::ReloadingClientCa::load(path)?),
        None => None,
    };
    let tls_config = Arc::new(tls::server_config(resolver.clone(), client_ca.clone())?);

    // Mapping sources, in the configured order.
    let mut background = tokio::task::JoinSet::new();
    let mut sources: Vec<Arc<dyn Source>> = Vec::new();
    let kube_modes: Vec<BackendMode> = settings
        .backends
        .iter()
        .copied()
        .filter(|b| *b != BackendMode::MountedFile)
        .collect();
    let mut kube_sources = if kube_modes.is_empty() {
        Vec::new()
    } else {
        crate::kube::start_sources(&kube_modes, settings.kubeconfig.as_deref(), metrics.clone())
            .await
            .context("cannot start the Kubernetes mapping sources")?
    };
    for mode in &settings.backends {
        match mode {
            BackendMode::MountedFile => {
                let source = match &args.config {
                    Some(path) => {
                        let s = Arc::new(
                            FileSource::load(path, Some(metrics.clone()))
                                .map_err(|e| anyhow::anyhow!(e))?,
                        );
                        background.spawn(
                            s.clone()
                                .watch(Duration::from_millis(args.reload_interval_ms.max(100))),
                        );
                        s
                    }
                    None => Arc::new(
                        FileSource::from_config(&FileConfig::default())
                            .map_err(|e| anyhow::anyhow!(e))?,
                    ),
                };
                metrics.mapping_loaded("MountedFile", source.index().len());
                sources.push(source);
            }
            other => {
                if let Some(pos) = kube_sources.iter().position(|(m, _)| m == other) {
                    sources.push(kube_sources.remove(pos).1);
                }
            }
        }
    }
    let chain = Chain::guarded(sources, settings.allow_reserved.clone());
    background.spawn(report::watch_sources(
        chain.clone(),
        metrics.clone(),
        Duration::from_millis(args.reload_interval_ms.clamp(100, 2000)),
    ));

    let sts = StsClient::new(settings.sts.clone(), Some(metrics.clone()))?;
    let auth = Authenticator::new(
        settings.cluster_id.clone(),
        Arc::new(SystemClock),
        sts,
        chain,
        settings.cache.clone(),
        metrics.clone(),
        settings.scrubbed_accounts.clone(),
    )
    .with_allowed_accounts(settings.allowed_accounts.clone());
    let state = Arc::new(AppState {
        auth,
        metrics: metrics.clone(),
        audiences: settings.audiences.clone(),
        review_deadline: settings.sts.deadline + Duration::from_secs(1),
        shutting_down: AtomicBool::new(false),
        review_permits: tokio::sync::Semaphore::new(limits.max_concurrent_reviews),
        body_timeout: limits.https.body,
        audit: crate::audit::Audit::new(settings.audit_allows),
    });

    // Bind.
    let tls_addr: SocketAddr = format!("{}:{}", bracket(&settings.address), settings.port)
        .parse()
        .with_context(|| {
            format!(
                "invalid listen address {}:{}",
                settings.address, settings.port
            )
        })?;
    let listener = TcpListener::bind(tls_addr)
        .await
        .with_context(|| format!("cannot listen on {tls_addr}"))?;
    let tls_local = listener.local_addr()?;
    let health_listener = TcpListener::bind(&settings.health_address)
        .await
        .with_context(|| format!("cannot listen on {}", settings.health_address))?;
    let health_local = health_listener.local_addr()?;

    if let Some(path) = &settings.generate_kubeconfig {
        let client = match &client_ca {
            Some(ca) => init::existing_client_cert(&settings.state_dir, ca.path())?,
            None => None,
        };
        if client_ca.is_some() && client.is_none() {
            tracing::warn!(path = %path.display(), "mutual TLS is on but the state directory has no client certificate for kube-apiserver from the client CA (init --client-cert makes one): the webhook kubeconfig has none, add one before kube-apiserver uses it");
        }
        init::write_kubeconfig(
            path,
            &settings.cluster_id,
            &settings.hostname,
            tls_local.port(),
            &pair.cert_pem,
            client.as_ref(),
        )?;
        tracing::info!(path = %path.display(), "wrote the webhook kubeconfig");
    }
    if let Some(ca) = &client_ca {
        tracing::info!(client_ca = %ca.path().display(), "mutual TLS: HTTPS clients must present a certificate from this CA");
        background.spawn(ca.clone().watch(
            metrics.clone(),
            Duration::from_millis(args.reload_interval_ms.max(100)),
        ));
    }
    background.spawn(resolver.clone().watch(
        metrics.clone(),
        Duration::from_millis(args.reload_interval_ms.max(100)),
    ));

    tracing::info!(
        cluster_id = %settings.cluster_id,
        https = %tls_local,
        health = %health_local,
        sts_endpoint = %settings.sts.endpoint,
        backends = %settings.backends.iter().map(|b| b.as_str()).collect::<Vec<_>>().join(","),
        "ram-authenticator serving"
    );
    // Start-up lines on stdout, for scripts and tests; a closed stdout is not fatal.
    let _ = crate::output::emit(&format!(
        "serving https://{tls_local}/authenticate\nhealth http://{health_local}\n"
    ));

    let https = conn::Registry::new(
        crate::metrics::Listener::https,
        limits.https.clone(),
        metrics.clone(),
    );
    let health_registry = conn::Registry::new(
        crate::metrics::Listener::health,
        limits.health.clone(),
        metrics.clone(),
    );
    let server = http::serve_tls(listener, tls_config, state.clone(), https, shutdown.clone());
    let health = http::serve_health(health_listener, state.clone(), health_registry);

    warn_if_few_file_descriptors(&limits);
    let grace = limits.shutdown_grace;
    let mut server = tokio::spawn(server);
    let health = tokio::spawn(health);
    tokio::select! {
        // A stop signal wins over the server task ending because of that same signal.
        biased;
        _ = shutdown.first_signal() => {}
        finished = background.join_next() => {
            tracing::error!(?finished, "a background task stopped; exiting rather than serving stale data");
            return Ok(1);
        }
        result = &mut server => {
            tracing::error!(?result, "the HTTPS server stopped unexpectedly");
            return Ok(1);
        }
    }
    state.shutting_down.store(true, Ordering::Release);
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "stop signal received: draining in-flight reviews"
    );
    tokio::select! {
        drained = tokio::time::timeout(grace, server) => {
            if drained.is_err() {
                tracing::warn!("in-flight reviews did not finish within the grace period");
            }
        }
        _ = shutdown.second_signal() => {
            tracing::warn!("second stop signal: exiting now");
            return Ok(130);
        }
    }
    health.abort();
    tracing::info!("stopped");
    Ok(0)
}

/// Warns once at start-up when the open-file limit cannot hold both connection caps: past it the
/// kernel refuses connections before they can be shed.
fn warn_if_few_file_descriptors(limits: &limits::Limits) {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<usize>().ok())
        });
    // Files, watches and the STS and Kubernetes clients need some too.
    let needed = limits.https.max_connections + limits.health.max_connections + 256;
    if let Some(soft) = soft.filter(|s| *s < needed) {
        tracing::warn!(
            open_file_limit = soft,
            needed,
            "the open-file limit is below --max-connections + --health-max-connections + 256; raise it (ulimit -n) or lower the caps"
        );
    }
}

fn bracket(address: &str) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]")
    } else {
        address.to_string()
    }
}

/// Stop signals: the first starts a graceful stop, the second ends the process at once.
#[derive(Clone)]
pub struct Shutdown {
    first: Arc<tokio::sync::watch::Sender<u8>>,
}

fn install_shutdown() -> Shutdown {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, _) = tokio::sync::watch::channel(0u8);
    let tx = Arc::new(tx);
    let sender = tx.clone();
    // Registered here, before the caller goes on: a signal from now on is seen.
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        let mut count = 0u8;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            count = count.saturating_add(1);
            sender.send_replace(count);
        }
    });
    Shutdown { first: tx }
}

impl Shutdown {
    /// A stop that never comes (for listeners that serve until dropped).
    pub fn never() -> Self {
        let (tx, _) = tokio::sync::watch::channel(0u8);
        Shutdown {
            first: Arc::new(tx),
        }
    }

    async fn wait_for(&self, n: u8) {
        let mut rx = self.first.subscribe();
        let _ = rx.wait_for(|v| *v >= n).await;
    }
    /// Resolves at the first stop signal.
    pub async fn first_signal(&self) {
        self.wait_for(1).await
    }
    /// Resolves at the second stop signal.
    pub async fn second_signal(&self) {
        self.wait_for(2).await
    }
}

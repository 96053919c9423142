//! Load generator for the webhook: TokenReviews over HTTPS keep-alive against a running
//! `ram-authenticator server` backed by a running `sts-emulator`; one HTTP/1.1 connection per
//! worker, or (phase `cache-h2`) the shape kube-apiserver uses: one HTTP/2 connection carrying
//! one stream per worker.
//!
//! `scripts/bench.sh` builds the release binaries, starts both processes and runs this with
//! their addresses and process IDs. Phases:
//! - `cache`: a small set of pre-minted tokens reviewed over and over (the identity cache path);
//! - `cache-h2`: the same over one HTTP/2 connection, the count being concurrent streams;
//! - `sts`: every review a token never seen before, all minted before timing starts (STS path);
//! - `rss`: reviews `--rss-identities` distinct tokens, then reads the server's memory.
//!
//! For each phase it reports reviews/s, p50/p99 latency, STS calls (emulator statistics before
//! and after), the CPU seconds of the server, the emulator and itself (`/proc/<pid>/stat`), and
//! the server's peak RSS (`VmHWM`). It prints numbers; it asserts nothing.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use clap::Parser;
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;
use ram_authenticator::token::v2;
use ram_authenticator::types::format_utc;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};

/// Drives TokenReviews at a running webhook and reports throughput, latency, CPU and memory.
#[derive(Debug, Parser)]
#[command(name = "review_load")]
struct Args {
    /// Review URL the server printed (`https://127.0.0.1:PORT/authenticate`).
    #[arg(long)]
    server: String,
    /// Webhook kubeconfig the server wrote (its CA is the only one trusted).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Plain-HTTP health address the server printed (for `/metrics`).
    #[arg(long)]
    health: String,
    /// Emulator base URL (for `/_emulator/stats`).
    #[arg(long)]
    emulator: String,
    /// Server process ID (CPU and memory are read from /proc).
    #[arg(long)]
    server_pid: u32,
    /// Emulator process ID.
    #[arg(long)]
    emulator_pid: u32,
    /// AccessKey the emulator knows and the server maps.
    #[arg(long)]
    access_key_id: String,
    /// Its secret.
    #[arg(long)]
    access_key_secret: String,
    /// Cluster ID the server is configured with.
    #[arg(long)]
    cluster: String,
    /// Phases to run, e.g. `cache:1,32,256` `cache-h2:32` `sts:1,32,256` `rss:64`.
    #[arg(long = "phase", required = true)]
    phases: Vec<String>,
    /// Seconds each cache or sts run lasts at most.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Distinct tokens of the cache phase.
    #[arg(long, default_value_t = 64)]
    cache_tokens: usize,
    /// Tokens minted for each sts run (the run also ends when they are used up).
    #[arg(long, default_value_t = 120_000)]
    sts_tokens: usize,
    /// Distinct identities the rss phase caches.
    #[arg(long, default_value_t = 100_000)]
    rss_identities: usize,
    /// Keys the rss phase signs with, round robin: 1 = `--access-key-id` only (many tokens of
    /// one identity); N > 1 = the generated keys `LTAI5tBenchKey<n>` with secrets
    /// `BenchKeySecret<n>`, n in 0..N, which the emulator's keys file must hold (N identities).
    #[arg(long, default_value_t = 1)]
    rss_keys: usize,
    /// Name of this server setup, shown in the tables.
    #[arg(long, default_value = "default")]
    label: String,
    /// Append the results as Markdown table rows to `runs.md` and `rss.md` in this directory
    /// (each file gets its table header when it is created).
    #[arg(long)]
    markdown_dir: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> std::process::ExitCode {
    // Run without phases (as a plain `cargo bench` runs every bench): say how to use it
    // instead of failing.
    if !std::env::args().any(|a| a.starts_with("--phase")) {
        eprintln!(
            "review_load: run it through scripts/bench.sh (it needs a running server and emulator)"
        );
        return std::process::ExitCode::SUCCESS;
    }
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("review_load: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("review_load: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Process accounting

/// CPU seconds (user + system) of a process.
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `kB` field of `/proc/<pid>/status`, in MiB.
fn status_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("{field} not in /proc/{pid}/status"))?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()?;
    Ok(kb / 1024.0)
}

#[derive(Clone, Copy, Debug)]
struct CpuSnapshot {
    server: f64,
    emulator: f64,
    this: f64,
}

impl CpuSnapshot {
    fn take(args: &Args) -> anyhow::Result<Self> {
        Ok(Self {
            server: cpu_seconds(&args.server_pid.to_string())?,
            emulator: cpu_seconds(&args.emulator_pid.to_string())?,
            this: cpu_seconds("self")?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Plain-HTTP admin calls (emulator statistics, server metrics)

struct Admin {
    client: reqwest::Client,
    emulator: String,
    health: String,
}

impl Admin {
    async fn sts_requests(&self) -> anyhow::Result<u64> {
        let v: serde_json::Value = self
            .client
            .get(format!("{}/_emulator/stats", self.emulator))
            .send()
            .await?
            .json()
            .await?;
        v["requests"]
            .as_u64()
            .context("emulator stats have no `requests`")
    }

    async fn cache_entries(&self) -> anyhow::Result<Option<f64>> {
        let text = self
            .client
            .get(format!("{}/metrics", self.health))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .find(|l| l.starts_with("ack_ram_authenticator_identity_cache_entries "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok()))
    }
}

// ---------------------------------------------------------------------------------------------
// HTTPS client: one keep-alive HTTP/1.1 connection per worker, or one HTTP/2 connection shared

/// How the workers reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// One HTTP/1.1 connection per worker.
    Http1,
    /// One HTTP/2 connection, one stream per worker.
    Http2,
}

struct Target {
    tls: tokio_rustls::TlsConnector,
    tls_h2: tokio_rustls::TlsConnector,
    url: String,
    addr: String,
    server_name: ServerName<'static>,
    host_header: String,
    path: String,
}

impl Target {
    fn new(url: &str, kubeconfig: &Path) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("https://")
            .context("--server must be an https:// URL")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&kubeconfig_ca(kubeconfig)?) {
            roots.add(cert.context("CA certificate in the kubeconfig")?)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut config_h2 = config.clone();
        config_h2.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            tls_h2: tokio_rustls::TlsConnector::from(Arc::new(config_h2)),
            url: url.to_string(),
            addr: authority.to_string(),
            server_name: ServerName::try_from(host.to_string())?,
            host_header: authority.to_string(),
            path: format!("/{path}"),
        })
    }

    async fn connect(&self) -> anyhow::Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self.tls.connect(self.server_name.clone(), tcp).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender: Sender::Http1(sender),
            host: self.host_header.clone(),
            path: self.path.clone(),
        })
    }

    /// One HTTP/2 connection; each returned `Conn` is a handle on it (a stream per review).
    async fn connect_h2(&self, handles: usize) -> anyhow::Result<Vec<Conn>> {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self.tls_h2.connect(self.server_name.clone(), tcp).await?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            bail!("the server did not agree to HTTP/2");
        }
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(tls),
        )
        .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((0..handles)
            .map(|_| Conn {
                sender: Sender::Http2(sender.clone()),
                host: self.host_header.clone(),
                // HTTP/2 requests carry the scheme and authority.
                path: self.url.clone(),
            })
            .collect())
    }

    async fn connect_shape(&self, shape: Shape, workers: usize) -> anyhow::Result<Vec<Conn>> {
        match shape {
            Shape::Http2 => self.connect_h2(workers).await,
            Shape::Http1 => {
                let mut conns = Vec::with_capacity(workers);
                for _ in 0..workers {
                    conns.push(self.connect().await?);
                }
                Ok(conns)
            }
        }
    }
}

fn kubeconfig_ca(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let v: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let data = v["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .context("kubeconfig has no certificate-authority-data")?;
    Ok(base64::engine::general_purpose::STANDARD.decode(data)?)
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<String>),
    Http2(hyper::client::conn::http2::SendRequest<String>),
}

struct Conn {
    sender: Sender,
    host: String,
    path: String,
}

impl Conn {
    /// Sends one review; true when the answer allowed it.
    async fn review(&mut self, body: &str) -> anyhow::Result<bool> {
        let mut req = hyper::Request::post(self.path.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if matches!(self.sender, Sender::Http1(_)) {
            req = req.header(hyper::header::HOST, self.host.as_str());
        }
        let req = req.body(body.to_string())?;
        let resp = match &mut self.sender {
            Sender::Http1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::Http2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let ok_status = resp.status() == hyper::StatusCode::OK;
        let mut body = resp.into_body();
        let mut buf = Vec::with_capacity(1024);
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            if let Ok(data) = frame?.into_data() {
                buf.extend_from_slice(&data);
            }
        }
        Ok(ok_status && contains(&buf, b"\"authenticated\":true"))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Tokens

fn review_body(token: &str) -> String {
    serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    })
    .to_string()
}

/// AccessKey IDs and secrets of the generated keys (`--rss-keys`) are these plus a number.
const GENERATED_KEY_PREFIX: &str = "LTAI5tBenchKey";
const GENERATED_SECRET_PREFIX: &str = "BenchKeySecret";

/// `count` distinct TokenReview bodies, each with a token signed now; `tag` keeps them distinct
/// from other batches (a signed query parameter, so each has its own signature).
/// With `keys` > 1, token `i` is signed with the generated key `i % keys`
/// (`LTAI5tBenchKey<n>` / `BenchKeySecret<n>`, see `--rss-keys`) instead of `--access-key-id`.
fn mint_bodies(args: &Args, tag: &str, count: usize, keys: usize) -> Vec<String> {
    let date = format_utc(chrono::Utc::now());
    (0..count)
        .map(|i| {
            let extra = [("BenchSeq".to_string(), format!("{tag}-{i}"))];
            let (akid, secret) = if keys > 1 {
                let n = i % keys;
                (
                    format!("{GENERATED_KEY_PREFIX}{n}"),
                    format!("{GENERATED_SECRET_PREFIX}{n}"),
                )
            } else {
                (args.access_key_id.clone(), args.access_key_secret.clone())
            };
            review_body(&v2::mint(&v2::MintV2 {
                access_key_id: &akid,
                access_key_secret: &secret,
                security_token: None,
                cluster_id: &args.cluster,
                date: &date,
                extra_query: &extra,
                user_agent: "review-load",
            }))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Runs

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pick {
    /// Worker `w` cycles through all bodies starting at `w`.
    Cycle,
    /// Every body once, shared by all workers, until they run out.
    Once,
}

#[derive(Default)]
struct WorkerResult {
    latencies_us: Vec<u32>,
    allowed: u64,
    failed: u64,
}

struct RunResult {
    phase: String,
    connections: usize,
    reviews: u64,
    failed: u64,
    wall: f64,
    p50_ms: f64,
    p99_ms: f64,
    sts_calls: u64,
    cpu: CpuSnapshot,
    hwm_mib: f64,
}

async fn run_load(
    target: &Arc<Target>,
    bodies: Arc<Vec<String>>,
    (shape, connections): (Shape, usize),
    pick: Pick,
    limit: Duration,
) -> anyhow::Result<(Vec<WorkerResult>, f64)> {
    let conns = target
        .connect_shape(shape, connections)
        .await
        .context("connecting to the server")?;
    let next = Arc::new(AtomicUsize::new(0));
    let start_gate = Arc::new(tokio::sync::Barrier::new(connections + 1));
    let mut handles = Vec::with_capacity(connections);
    for (w, mut conn) in conns.into_iter().enumerate() {
        let bodies = bodies.clone();
        let next = next.clone();
        let gate = start_gate.clone();
        handles.push(tokio::spawn(async move {
            let mut out = WorkerResult {
                latencies_us: Vec::with_capacity(1 << 14),
                ..WorkerResult::default()
            };
            gate.wait().await;
            let deadline = Instant::now() + limit;
            let mut i = w;
            while Instant::now() < deadline {
                let idx = match pick {
                    Pick::Cycle => {
                        i = (i + 1) % bodies.len();
                        i
                    }
                    Pick::Once => next.fetch_add(1, Ordering::Relaxed),
                };
                let Some(body) = bodies.get(idx) else { break };
                let t = Instant::now();
                match conn.review(body).await {
                    Ok(true) => out.allowed += 1,
                    Ok(false) => out.failed += 1,
                    Err(_) => {
                        out.failed += 1;
                        break;
                    }
                }
                out.latencies_us
                    .push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            out
        }));
    }
    start_gate.wait().await;
    let started = Instant::now();
    let mut results = Vec::with_capacity(connections);
    for h in handles {
        results.push(h.await?);
    }
    Ok((results, started.elapsed().as_secs_f64()))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

async fn measured_run(
    args: &Args,
    admin: &Admin,
    target: &Arc<Target>,
    phase: &str,
    bodies: Arc<Vec<String>>,
    (shape, connections): (Shape, usize),
    pick: Pick,
) -> anyhow::Result<RunResult> {
    let sts_before = admin.sts_requests().await?;
    let cpu_before = CpuSnapshot::take(args)?;
    let limit = Duration::from_secs_f64(args.seconds);
    let (results, wall) = run_load(target, bodies, (shape, connections), pick, limit).await?;
    let cpu_after = CpuSnapshot::take(args)?;
    let sts_after = admin.sts_requests().await?;
    let mut lat: Vec<u32> = results
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    lat.sort_unstable();
    Ok(RunResult {
        phase: phase.to_string(),
        connections,
        reviews: results.iter().map(|r| r.allowed).sum(),
        failed: results.iter().map(|r| r.failed).sum(),
        wall,
        p50_ms: percentile(&lat, 50.0),
        p99_ms: percentile(&lat, 99.0),
        sts_calls: sts_after.saturating_sub(sts_before),
        cpu: CpuSnapshot {
            server: cpu_after.server - cpu_before.server,
            emulator: cpu_after.emulator - cpu_before.emulator,
            this: cpu_after.this - cpu_before.this,
        },
        hwm_mib: status_mib(args.server_pid, "VmHWM:")?,
    })
}

fn parse_phase(spec: &str) -> anyhow::Result<(String, Vec<usize>)> {
    let (name, levels) = spec.split_once(':').unwrap_or((spec, "32"));
    if !matches!(name, "cache" | "cache-h2" | "sts" | "rss") {
        bail!("unknown phase {name:?}: use cache, cache-h2, sts or rss");
    }
    let levels = levels
        .split(',')
        .map(|n| n.trim().parse::<usize>().map(|n| n.max(1)))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("phase {spec:?}: connection counts must be numbers"))?;
    Ok((name.to_string(), levels))
}

/// Appends table rows to `path`, writing `header` first when the file is new or empty.
fn append_rows(path: &Path, header: &str, rows: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    if f.metadata()?.len() == 0 {
        f.write_all(header.as_bytes())?;
    }
    f.write_all(rows.as_bytes())?;
    Ok(())
}

const RUN_HEADER: &str = "| setup | path | conns | reviews | failed | reviews/s | p50 ms | p99 ms | STS calls | server CPU µs/review | server CPU | emulator CPU | load gen CPU | server VmHWM MiB |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

fn run_row(label: &str, r: &RunResult) -> String {
    let per_review_us = if r.reviews + r.failed > 0 {
        r.cpu.server * 1e6 / (r.reviews + r.failed) as f64
    } else {
        f64::NAN
    };
    // CPU as a share of one core over the run (200% = both cores of a 2-core machine).
    let share = |s: f64| format!("{:.0}%", 100.0 * s / r.wall);
    let conns = if r.phase.ends_with("-h2") {
        format!("1 ({} streams)", r.connections)
    } else {
        r.connections.to_string()
    };
    format!(
        "| {label} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.1} | {} | {} | {} | {:.1} |\n",
        r.phase,
        conns,
        r.reviews,
        r.failed,
        r.reviews as f64 / r.wall,
        r.p50_ms,
        r.p99_ms,
        r.sts_calls,
        per_review_us,
        share(r.cpu.server),
        share(r.cpu.emulator),
        share(r.cpu.this),
        r.hwm_mib,
    )
}

const RSS_HEADER: &str = "| setup | tokens reviewed | failed | STS calls | seconds | cache entries | VmRSS fresh MiB | VmRSS after 10% MiB | VmRSS after all MiB | VmHWM MiB | bytes per identity (last 90%) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

/// Caches `--rss-identities` distinct identities (each review a new token, so each an STS call
/// and a cache entry) and reads the server's memory: fresh, after the first 10% (connections,
/// buffers and allocator warmed up), and after all. The marginal cost per identity is taken
/// over the last 90%.
async fn rss_phase(
    args: &Args,
    admin: &Admin,
    target: &Arc<Target>,
    connections: usize,
) -> anyhow::Result<String> {
    let settle = Duration::from_secs(1);
    let rss_fresh = status_mib(args.server_pid, "VmRSS:")?;
    let mut bodies = mint_bodies(args, "rss", args.rss_identities, args.rss_keys);
    let rest = Arc::new(bodies.split_off(bodies.len() / 10));
    let warm = Arc::new(bodies);
    let sts_before = admin.sts_requests().await?;
    let started = Instant::now();
    let limit = Duration::from_secs(600);
    let (mut results, _) =
        run_load(target, warm, (Shape::Http1, connections), Pick::Once, limit).await?;
    // Let the cache apply its pending writes before counting.
    tokio::time::sleep(settle).await;
    let entries_mid = admin.cache_entries().await?.unwrap_or(f64::NAN);
    let rss_mid = status_mib(args.server_pid, "VmRSS:")?;
    let (more, _) = run_load(target, rest, (Shape::Http1, connections), Pick::Once, limit).await?;
    results.extend(more);
    let took = started.elapsed().as_secs_f64() - settle.as_secs_f64();
    tokio::time::sleep(settle).await;
    let sts_calls = admin.sts_requests().await?.saturating_sub(sts_before);
    let entries = admin.cache_entries().await?.unwrap_or(f64::NAN);
    let rss_after = status_mib(args.server_pid, "VmRSS:")?;
    let hwm = status_mib(args.server_pid, "VmHWM:")?;
    let per_identity = (rss_after - rss_mid) * 1024.0 * 1024.0 / (entries - entries_mid);
    Ok(format!(
        "| {} | {} | {} | {} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |\n",
        args.label,
        results.iter().map(|r| r.allowed).sum::<u64>(),
        results.iter().map(|r| r.failed).sum::<u64>(),
        sts_calls,
        took,
        entries,
        rss_fresh,
        rss_mid,
        rss_after,
        hwm,
        per_identity,
    ))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let target = Arc::new(Target::new(&args.server, &args.kubeconfig)?);
    let admin = Admin {
        client: reqwest::Client::builder().no_proxy().build()?,
        emulator: args.emulator.trim_end_matches('/').to_string(),
        health: args.health.trim_end_matches('/').to_string(),
    };
    let mut runs = String::new();
    let mut rss = String::new();
    for spec in &args.phases {
        let (phase, levels) = parse_phase(spec)?;
        match phase.as_str() {
            "cache" | "cache-h2" => {
                let shape = if phase == "cache" {
                    Shape::Http1
                } else {
                    Shape::Http2
                };
                let bodies = Arc::new(mint_bodies(&args, "cache", args.cache_tokens, 1));
                // Warm the cache: each token once.
                run_load(
                    &target,
                    bodies.clone(),
                    (Shape::Http1, 1),
                    Pick::Once,
                    Duration::from_secs(60),
                )
                .await?;
                for &c in &levels {
                    let r = measured_run(
                        &args,
                        &admin,
                        &target,
                        &phase,
                        bodies.clone(),
                        (shape, c),
                        Pick::Cycle,
                    )
                    .await?;
                    eprint!("{}", run_row(&args.label, &r));
                    runs.push_str(&run_row(&args.label, &r));
                }
            }
            "sts" => {
                for &c in &levels {
                    let bodies =
                        Arc::new(mint_bodies(&args, &format!("sts{c}"), args.sts_tokens, 1));
                    let r = measured_run(
                        &args,
                        &admin,
                        &target,
                        "sts",
                        bodies,
                        (Shape::Http1, c),
                        Pick::Once,
                    )
                    .await?;
                    eprint!("{}", run_row(&args.label, &r));
                    runs.push_str(&run_row(&args.label, &r));
                }
            }
            _ => {
                let c = levels.first().copied().unwrap_or(64);
                let row = rss_phase(&args, &admin, &target, c).await?;
                eprint!("{row}");
                rss.push_str(&row);
            }
        }
    }
    for (rows, header, file) in [(&runs, RUN_HEADER, "runs.md"), (&rss, RSS_HEADER, "rss.md")] {
        if rows.is_empty() {
            continue;
        }
        println!("{header}{rows}");
        if let Some(dir) = &args.markdown_dir {
            append_rows(&dir.join(file), header, rows)?;
        }
    }
    Ok(())
}

//! The STS emulator: a stand-in for Alibaba Cloud STS (`GetCallerIdentity`, `AssumeRole`,
//! `AssumeRoleWithOIDC`) for tests, the quickstart and benchmarks. It really verifies signatures
//! (v1 RPC `HMAC-SHA1` and v2 `ACS3-HMAC-SHA256`) against the AccessKeys of a keys file, and
//! RS256 OIDC tokens against the keys of its OIDC providers, and answers with the real STS
//! shapes and error codes. On the same listener it also stands in for the ECS metadata service
//! (`/latest/`) and a credentials URI (`/credentials-uri`), see [`standins`].
//!
//! `AssumeRoleWithOIDC` is an RPC call that is not signed: `Action=AssumeRoleWithOIDC`,
//! `Version=2015-04-01`, `RoleArn`, `OIDCProviderArn`, `OIDCToken`, `RoleSessionName`,
//! optional `DurationSeconds` (900..43200, default 3600) and `Policy`, in the query or a form
//! body (GET or POST at `/`; `x-acs-action: AssumeRoleWithOIDC` works too, any signature is
//! ignored). It answers `{"RequestId","Credentials":{AccessKeyId,AccessKeySecret,
//! SecurityToken,Expiration},"AssumedRoleUser":{Arn,AssumedRoleId},"OIDCTokenInfo":{Subject,
//! Issuer,ClientIds,ExpirationTime,IssuanceTime}}`; see [`oidc`] for the checks and their codes.
//!
//! - [`keys`]: the keys file (identities, roles, OIDC providers, stand-ins).
//! - [`engine`]: verification and answers, plain functions over plain types.
//! - [`admin`]: injected faults and statistics (the `/_emulator/` API).
//! - [`http`]: the listener (HTTP or HTTPS) and routes.

pub mod admin;
pub mod engine;
pub mod errors;
pub mod http;
pub mod keys;
pub mod nonce;
pub mod oidc;
pub mod standins;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::Parser;

use crate::types::{parse_utc, Clock, OffsetClock, SystemClock};
use admin::{FaultMode, FaultSpec, Faults, Stats};

pub use engine::{Emulator, Outcome, Reply, Request, RequestInfo, Scheme};
pub use errors::StsErrorCode;
pub use keys::{KeyStore, KeysError};

/// Exit code for a bad keys file or bad TLS files.
pub const EXIT_CONFIG: i32 = 2;
/// Exit code when the listener cannot be opened.
pub const EXIT_LISTEN: i32 = 1;

/// An Alibaba Cloud STS emulator (GetCallerIdentity, AssumeRole) that verifies signatures
/// against the AccessKeys of a keys file.
///
/// Prints `listening on http://ADDR` (or `https://`) on stdout once ready; logs go to stderr.
/// The same listener serves the ECS metadata stand-in under /latest/ and a credentials URI at
/// /credentials-uri. Admin API: POST /_emulator/faults, GET /_emulator/stats,
/// POST /_emulator/reset, GET|POST /_emulator/metadata, GET|POST /_emulator/credentials-uri.
#[derive(Debug, Parser)]
#[command(name = "sts-emulator", version, about, long_about)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port (the line on stdout says which).
    #[arg(long, env = "STS_EMULATOR_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// YAML file of AccessKeys, their identities, and the roles AssumeRole may assume
    /// (documented in examples/emulator-keys.yaml).
    #[arg(
        long,
        env = "STS_EMULATOR_KEYS",
        default_value = "examples/emulator-keys.yaml"
    )]
    pub keys: PathBuf,

    /// PEM certificate chain: serve HTTPS instead of plain HTTP (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Start the clock at this RFC 3339 instant (e.g. 2026-11-23T09:36:00Z); it then advances in
    /// real time. Lets requests signed at a fixed date verify. Default: the system clock.
    #[arg(long, value_parser = parse_now)]
    pub now: Option<DateTime<Utc>>,

    /// Fault injected into STS requests from the start (change it with POST /_emulator/faults).
    #[arg(long, value_enum, default_value_t = FaultMode::None)]
    pub fault: FaultMode,

    /// Delay of the `slow` fault, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,

    /// How the ECS metadata stand-in answers from the start (change it with
    /// POST /_emulator/metadata): any (token or not), hardened (token required), plain (no
    /// token service), hang (never answers).
    #[arg(long, value_enum, default_value_t = standins::MetadataMode::Any)]
    pub metadata_mode: standins::MetadataMode,

    /// The `Code` the credentials URI answers from the start; anything but `Success` answers
    /// no credentials (change it with POST /_emulator/credentials-uri).
    #[arg(long, default_value = standins::SUCCESS)]
    pub credentials_uri_code: String,

    /// Log format on stderr (the filter is taken from RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn parse_now(value: &str) -> Result<DateTime<Utc>, String> {
    parse_utc(value)
        .ok_or_else(|| format!("{value:?} is not an RFC 3339 date such as 2026-11-23T09:36:00Z"))
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Runs the emulator until SIGTERM or SIGINT; returns the process exit code.
pub async fn run(args: Args) -> i32 {
    init_tracing(args.log_format);
    let store = match KeyStore::load(&args.keys) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("sts-emulator: {e}");
            return EXIT_CONFIG;
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match http::tls_acceptor(cert, key) {
            Ok(acceptor) => Some(acceptor),
            Err(e) => {
                eprintln!("sts-emulator: TLS: {e}");
                return EXIT_CONFIG;
            }
        },
        _ => None,
    };
    let uri_spec = match (standins::UriSpec {
        code: args.credentials_uri_code.clone(),
        status: 200,
    })
    .check()
    {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("sts-emulator: --credentials-uri-code: {e}");
            return EXIT_CONFIG;
        }
    };
    let (keys, roles) = (store.keys.len(), store.roles.len());
    let oidc_providers = store.oidc_providers.len();
    let clock: Arc<dyn Clock> = match args.now {
        Some(start) => Arc::new(OffsetClock::starting_at(start)),
        None => Arc::new(SystemClock),
    };
    let state = Arc::new(http::AppState {
        engine: Emulator::new(store, clock),
        faults: Faults::new(FaultSpec {
            mode: args.fault,
            delay_ms: args.delay_ms,
            count: None,
        }),
        stats: Stats::default(),
        standins: standins::StandIns::new(args.metadata_mode, uri_spec),
    });
    let signals = match http::Signals::register() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sts-emulator: cannot register signal handlers: {e}");
            return EXIT_LISTEN;
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sts-emulator: cannot listen on {}: {e}", args.listen);
            return EXIT_LISTEN;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sts-emulator: cannot read the listening address: {e}");
            return EXIT_LISTEN;
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "listening on {scheme}://{addr}")
            .and_then(|()| out.flush())
            .is_err()
        {
            // Nobody reads stdout: keep serving, the address is in the log too.
        }
    }
    tracing::info!(
        %addr,
        tls = tls.is_some(),
        keys,
        roles,
        oidc_providers,
        fault = ?args.fault,
        metadata_mode = ?args.metadata_mode,
        now = ?args.now.map(crate::types::format_utc),
        "sts emulator ready"
    );
    http::serve(listener, http::router(state), tls, signals).await;
    0
}

//! The client side: the `token` exec credential plugin, `verify` and `kubeconfig`.
//!
//! - [`credentials`]: the credential chain (environment, OIDC, profiles, files, ECS instance
//!   role, credentials URI): finding is pure over an injected environment; fetching may call out.
//! - [`assume_role`]: STS `AssumeRole` with the base credentials.
//! - [`cache`]: the on-disk cache of temporary credentials.
//! - [`exec_credential`]: minting the token and the `ExecCredential` kubectl reads.
//! - [`token_file`]: the token written to a file, and kept fresh (`--write-token-file`).
//! - [`verify`]: the webhook's checks on one token, from the command line.
//! - [`kubeconfig`]: a kubeconfig that runs this binary as the plugin.

pub mod assume_role;
pub mod cache;
pub mod credentials;
pub mod exec_credential;
pub mod kubeconfig;
pub mod token_file;
pub mod verify;

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::exit::usage;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};

use self::credentials::{env_true, env_var, Env, Paths};
use self::exec_credential::{ApiVersionArg, ExecCredential, MintInput, Minted, TokenFormatArg};
use crate::sts::{StsClient, StsSettings};
use crate::types::{Clock, FixedClock, SystemClock};

/// How the client commands reach STS.
#[derive(Debug, Clone, Args)]
pub struct StsArgs {
    /// STS endpoint URL (e.g. https://sts.cn-hangzhou.aliyuncs.com). Default: from --region
    /// (`token`: then ALIBABA_CLOUD_STS_REGION), else the global https://sts.aliyuncs.com.
    #[arg(long, value_name = "URL")]
    pub sts_endpoint: Option<String>,
    /// Region whose public STS endpoint to use (https://sts.<region>.aliyuncs.com).
    #[arg(long, env = "STS_REGION", value_name = "REGION")]
    pub region: Option<String>,
    /// Extra CA certificates (PEM) to trust for the STS endpoint.
    #[arg(long, value_name = "FILE")]
    pub sts_ca_file: Option<PathBuf>,
}

impl StsArgs {
    /// The endpoint: `--sts-endpoint`, else the region's public endpoint, else global. A
    /// kubectl user is outside the VPC, so the region maps to `sts.<region>`, not `sts-vpc`.
    pub fn endpoint(&self) -> String {
        let explicit = self
            .sts_endpoint
            .as_deref()
            .filter(|e| !e.trim().is_empty());
        match (
            explicit,
            self.region.as_deref().filter(|r| !r.trim().is_empty()),
        ) {
            (None, Some(region)) => format!("https://sts.{}.aliyuncs.com", region.trim()),
            (explicit, _) => crate::sts::endpoint_for(explicit.map(str::trim), None),
        }
    }

    /// [`Self::endpoint`], with Alibaba's SDK variables as the last choice before the global
    /// endpoint: `ALIBABA_CLOUD_STS_REGION` (`sts-vpc.<region>` when
    /// `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED=true`, as inside a cluster).
    pub fn endpoint_in(&self, env: &Env) -> String {
        let flagged = self
            .sts_endpoint
            .as_deref()
            .is_some_and(|e| !e.trim().is_empty())
            || self.region.as_deref().is_some_and(|r| !r.trim().is_empty());
        match env_var(env, STS_REGION_ENV).map(str::trim) {
            Some(region) if !flagged => {
                if env_true(env, VPC_ENDPOINT_ENV) {
                    format!("https://sts-vpc.{region}.aliyuncs.com")
                } else {
                    format!("https://sts.{region}.aliyuncs.com")
                }
            }
            _ => self.endpoint(),
        }
    }

    /// The client's STS settings for `endpoint`.
    fn settings(&self, endpoint: String) -> StsSettings {
        let mut settings = StsSettings::new(endpoint);
        settings.ca_file = self.sts_ca_file.clone();
        settings.attempt_timeout = Duration::from_secs(5);
        settings.deadline = Duration::from_secs(15);
        settings.max_concurrent = 4;
        settings
    }

    fn client(&self) -> anyhow::Result<StsClient> {
        Ok(StsClient::new(self.settings(self.endpoint()), None)?)
    }
}

/// The region of the STS endpoint, as Alibaba's SDKs read it.
pub const STS_REGION_ENV: &str = "ALIBABA_CLOUD_STS_REGION";
/// `true`: use the region's VPC endpoint (`sts-vpc.<region>.aliyuncs.com`).
pub const VPC_ENDPOINT_ENV: &str = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED";

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f < 1.0 => Ok(f),
        _ => Err(format!(
            "{s:?} is not a fraction between 0 and 1 (exclusive)"
        )),
    }
}

/// Arguments of `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The cluster ID the token is bound to (the root flag `-i/--cluster-id`, or clusterID of
    /// `--config`).
    #[arg(skip)]
    pub cluster_id: String,
    /// Token format: v2 (ACS3-HMAC-SHA256, the default) or v1 (legacy HMAC-SHA1 URL).
    #[arg(long, value_enum, default_value_t = TokenFormatArg::V2)]
    pub format: TokenFormatArg,
    /// ExecCredential apiVersion to answer in. Default: the one kubectl asks for in
    /// KUBERNETES_EXEC_INFO, else v1beta1.
    #[arg(long, value_enum)]
    pub api_version: Option<ApiVersionArg>,
    /// Print only the token, not the ExecCredential JSON.
    #[arg(long)]
    pub token_only: bool,
    /// Credentials profile (aliyun CLI config.json, then ~/.alibabacloud/credentials). Default:
    /// ALIBABA_CLOUD_PROFILE, else the CLI's current profile.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Assume this RAM role first and sign with its temporary credentials. Default:
    /// ALIBABA_CLOUD_ROLE_ARN, else DEFAULT_ROLE, else defaultRole of --config.
    #[arg(
        short = 'r',
        long,
        visible_alias = "role",
        env = "ALIBABA_CLOUD_ROLE_ARN",
        value_name = "ARN"
    )]
    pub role_arn: Option<String>,
    /// Role session name. Default: the profile's, else ram-authenticator-<$USER>.
    #[arg(long, env = "ALIBABA_CLOUD_ROLE_SESSION_NAME", value_name = "NAME")]
    pub session_name: Option<String>,
    /// Lifetime asked for the role's temporary credentials (900 to 43200).
    #[arg(long, default_value_t = assume_role::DEFAULT_DURATION_SECONDS, value_name = "SECONDS")]
    pub duration_seconds: u32,
    /// Do not read or write the cache of temporary credentials.
    #[arg(long)]
    pub no_cache: bool,
    /// Accepted for ack-ram-authenticator's command lines: role credentials are cached unless
    /// --no-cache is given.
    #[arg(long, hide = true, conflicts_with = "no_cache")]
    pub cache: bool,
    #[command(flatten)]
    pub sts: StsArgs,
    /// Base URL of the ECS metadata service (for proxies and tests). Default:
    /// http://100.100.100.200.
    #[arg(long, env = "RAM_AUTHENTICATOR_METADATA_ENDPOINT", value_name = "URL")]
    pub metadata_endpoint: Option<String>,
    /// Write the bare token to this file (atomically, mode 0600) instead of printing it; a
    /// kubeconfig with `tokenFile:` reads it.
    #[arg(long, value_name = "PATH")]
    pub write_token_file: Option<PathBuf>,
    /// With --write-token-file: keep running and rewrite the file before the token expires;
    /// stop on SIGTERM or SIGINT.
    #[arg(long, requires = "write_token_file")]
    pub refresh: bool,
    /// With --refresh: rewrite the file after this fraction of the token's life (0 < F < 1).
    #[arg(long, default_value_t = token_file::DEFAULT_FRACTION, value_parser = parse_fraction, value_name = "F")]
    pub refresh_fraction: f64,
}

/// `verify -o`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

fn parse_now(s: &str) -> Result<DateTime<Utc>, String> {
    crate::types::parse_utc(s).ok_or_else(|| format!("{s:?} is not an RFC 3339 date"))
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The token to check (`-` reads it from standard input). Also accepts `Bearer <token>` and
    /// the ExecCredential JSON that `token` prints.
    #[arg(short = 't', long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Read the token from this file (`-` for standard input).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The cluster ID the token must be bound to (the root flag `-i/--cluster-id`). Default:
    /// clusterID of --config.
    #[arg(skip)]
    pub cluster_id: Option<String>,
    /// Config file (the root flag `-c/--config`, the server's): map the identity with its
    /// mappings and show the user.
    #[arg(skip)]
    pub config: Option<PathBuf>,
    /// Check the signing date against this time (RFC 3339) instead of the system clock.
    #[arg(long, value_parser = parse_now, value_name = "RFC3339")]
    pub now: Option<DateTime<Utc>>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub sts: StsArgs,
}

/// Arguments of `kubeconfig`.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// The cluster ID (the root flag `-i/--cluster-id`, or clusterID of `--config`).
    #[arg(skip)]
    pub cluster_id: String,
    /// The API server URL (https://host:port).
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// PEM file of the CA that signed the API server's certificate.
    #[arg(long, value_name = "FILE")]
    pub ca_file: PathBuf,
    /// Name of the cluster, user and context. Default: the cluster ID.
    #[arg(long)]
    pub name: Option<String>,
    /// Role to assume in the plugin (`token --role-arn`).
    #[arg(long, visible_alias = "role", value_name = "ARN")]
    pub role_arn: Option<String>,
    /// Role session name for the plugin (`token --session-name`).
    #[arg(long, value_name = "NAME")]
    pub session_name: Option<String>,
    /// Credentials profile for the plugin (`token --profile`).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Token format for the plugin (`token --format`).
    #[arg(long, value_enum, default_value_t = TokenFormatArg::V2)]
    pub format: TokenFormatArg,
    /// STS endpoint for the plugin (`token --sts-endpoint`).
    #[arg(long, value_name = "URL")]
    pub sts_endpoint: Option<String>,
    /// STS region for the plugin (`token --region`).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Extra STS CA file for the plugin (`token --sts-ca-file`).
    #[arg(long, value_name = "FILE")]
    pub sts_ca_file: Option<PathBuf>,
    /// The plugin command. Default: `ram-authenticator`, found on kubectl's PATH.
    #[arg(long, value_name = "PATH")]
    pub command: Option<String>,
    /// Pin the plugin command to the absolute path of this binary instead.
    #[arg(long, conflicts_with = "command")]
    pub absolute_path: bool,
    /// A user that reads its bearer token from this file (`tokenFile:`, no plugin), for
    /// workloads whose token file is kept fresh by `token`.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["role_arn", "session_name", "profile", "sts_endpoint", "region", "sts_ca_file", "command", "absolute_path"])]
    pub token_file: Option<PathBuf>,
    /// Merge the cluster, user and context into this kubeconfig (default: the first file of
    /// $KUBECONFIG, else ~/.kube/config) and make the context current, instead of printing.
    /// Other entries are left as they are; the old file is kept as FILE.<time>.bak.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub write: Option<Option<PathBuf>>,
}

/// Logs to standard error (kubectl shows a plugin's stderr). `RUST_LOG` sets the level.
fn init_logging() {
    crate::logging::init_client("warn");
}

/// `token`: prints an ExecCredential (or the bare token), or writes the token to a file.
pub async fn token(args: TokenArgs) -> anyhow::Result<i32> {
    token_with_env(args, credentials::process_env()).await
}

/// `token` over a given environment (`credential-plugin get-token` adjusts it).
pub async fn token_with_env(args: TokenArgs, env: Env) -> anyhow::Result<i32> {
    init_logging();
    if let Some(path) = &args.write_token_file {
        return if args.refresh {
            token_file::refresh(&args, &env, path).await
        } else {
            let issued = issue(&args, &env, &SystemClock).await?;
            token_file::write(path, &issued.minted.token)?;
            Ok(0)
        };
    }
    let out = run_token(&args, &env, &SystemClock).await?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")?;
    Ok(0)
}

/// A token, and the end of its life: the earlier of the webhook's acceptance window and the
/// expiry of the temporary credentials that signed it.
pub struct Issued {
    pub minted: Minted,
    pub signed_at: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

/// Finds credentials (assuming a role if asked) and mints a token with them.
pub async fn issue(args: &TokenArgs, env: &Env, clock: &dyn Clock) -> anyhow::Result<Issued> {
    let cluster_id = args.cluster_id.trim();
    anyhow::ensure!(!cluster_id.is_empty(), "--cluster-id is empty");
    let paths = Paths::from_env(env);
    let mut ctx = credentials::Context::new(env, &paths, args.profile.as_deref());
    ctx.session_name = args.session_name.as_deref();
    ctx.duration_seconds = args.duration_seconds;
    let endpoint = args.sts.endpoint_in(env);
    let fetcher = credentials::Fetcher {
        env,
        clock,
        cache: if args.no_cache {
            None
        } else {
            cache::Cache::from_env(env)
        },
        sts: args.sts.settings(endpoint.clone()),
        metadata_endpoint: credentials::ecs::endpoint(args.metadata_endpoint.as_deref(), env),
    };
    let resolved = credentials::resolve(&ctx, &fetcher).await?;
    tracing::debug!(source = %resolved.found.source, access_key_id = %resolved.credentials.access_key_id, "credentials found");
    // ALIBABA_CLOUD_ROLE_ARN names the OIDC role too: that one is assumed already.
    let role_arn = args
        .role_arn
        .as_deref()
        .filter(|r| Some(r.trim()) != resolved.found.assumed_role());
    let role = assume_role::choose_role(
        role_arn,
        args.session_name.as_deref(),
        args.duration_seconds,
        env,
        resolved.found.role.as_ref(),
    )?;
    let (credentials, expiration) = match &role {
        None => (resolved.credentials, resolved.expiration),
        Some(role) => {
            let temp = fetcher.assume_role(&resolved, role).await?;
            (temp.credentials, Some(temp.expiration))
        }
    };
    let now = clock.now();
    let minted = exec_credential::mint(&MintInput {
        credentials: &credentials,
        cluster_id,
        format: args.format,
        now,
        user_agent: exec_credential::USER_AGENT,
        sts_host: exec_credential::endpoint_host(&endpoint),
        nonce: &exec_credential::random_nonce(),
        extra_query: &[],
    });
    tracing::debug!(access_key_id = %credentials.access_key_id, token = %crate::types::short_hash(&minted.token), "token minted");
    let signed_at = minted.expiration - exec_credential::TOKEN_LIFETIME;
    let window_end = signed_at + crate::token::MAX_SKEW;
    let valid_until = expiration.map_or(window_end, |e| e.min(window_end));
    Ok(Issued {
        minted,
        signed_at,
        valid_until,
    })
}

/// The `token` command over an injected environment and clock; returns what to print.
pub async fn run_token(args: &TokenArgs, env: &Env, clock: &dyn Clock) -> anyhow::Result<String> {
    let api_version = exec_credential::choose_api_version(
        args.api_version,
        env_var(env, "KUBERNETES_EXEC_INFO"),
    )?;
    let issued = issue(args, env, clock).await?;
    if args.token_only {
        return Ok(format!("{}\n", issued.minted.token));
    }
    // kubectl asks again before the token or its credentials expire.
    let expiration = issued.minted.expiration.min(issued.valid_until);
    let ec = ExecCredential::new(api_version, issued.minted.token, expiration);
    Ok(format!("{}\n", serde_json::to_string(&ec)?))
}

fn read_token_input(args: &VerifyArgs) -> anyhow::Result<String> {
    let read_stdin = || {
        let mut s = String::new();
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut s)
            .map(|_| s)
            .context("cannot read the token from standard input")
    };
    let raw = match (&args.token, &args.token_file) {
        (Some(_), Some(_)) => return Err(usage("give either --token or --token-file, not both")),
        (None, None) => {
            return Err(usage(
                "give the token with --token TOKEN, --token-file FILE or --token -",
            ))
        }
        (Some(t), None) if t == "-" => read_stdin()?,
        (Some(t), None) => t.clone(),
        (None, Some(f)) if f.as_os_str() == "-" => read_stdin()?,
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the token file {}", f.display()))?,
    };
    verify::extract_token(&raw).map_err(anyhow::Error::msg)
}

/// `verify`: exit 0 when the token is valid (and mapped, with `--config`), 1 when rejected or
/// when an input cannot be read, 2 on usage errors.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<i32> {
    init_logging();
    let token = read_token_input(&args)?;
    let config = match &args.config {
        None => None,
        Some(path) => Some(crate::config::FileConfig::load(path)?),
    };
    let cluster_id = args
        .cluster_id
        .clone()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| config.as_ref().and_then(|c| c.cluster_id.clone()))
        .filter(|c| !c.trim().is_empty());
    let Some(cluster_id) = cluster_id else {
        return Err(usage(
            "give the cluster ID with --cluster-id (or clusterID in --config)",
        ));
    };
    let chain = match &config {
        None => None,
        Some(c) => {
            let source = crate::mapping::file::FileSource::from_config(c)
                .map_err(|e| anyhow::anyhow!("config file: {e}"))?;
            Some(crate::mapping::Chain::new(vec![Arc::new(source)]))
        }
    };
    let sts = args.sts.client()?;
    let clock: Box<dyn Clock> = match args.now {
        Some(now) => Box::new(FixedClock(now)),
        None => Box::new(SystemClock),
    };
    let report = verify::check(&token, cluster_id.trim(), clock.now(), &sts, chain.as_ref()).await;
    let text = match args.output {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => verify::render_text(&report),
    };
    crate::output::emit(&text)?;
    Ok(if report.valid { 0 } else { 1 })
}

/// The `token` arguments a kubeconfig's exec block passes.
pub fn plugin_args(args: &KubeconfigArgs) -> Vec<String> {
    let mut out = vec![
        "token".to_string(),
        "--cluster-id".to_string(),
        args.cluster_id.clone(),
    ];
    let mut opt = |flag: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.push(flag.to_string());
            out.push(v);
        }
    };
    opt("--profile", args.profile.clone());
    opt("--role-arn", args.role_arn.clone());
    opt("--session-name", args.session_name.clone());
    if args.format != TokenFormatArg::V2 {
        opt("--format", Some(args.format.as_str().to_string()));
    }
    opt("--sts-endpoint", args.sts_endpoint.clone());
    opt("--region", args.region.clone());
    opt(
        "--sts-ca-file",
        args.sts_ca_file
            .as_ref()
            .map(|p| absolute(p).display().to_string()),
    );
    out
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `kubeconfig`: prints the kubeconfig, or merges it into a file with `--write`.
pub fn kubeconfig(args: &KubeconfigArgs) -> anyhow::Result<i32> {
    if args.cluster_id.trim().is_empty() {
        return Err(usage("--cluster-id is empty"));
    }
    if !args.server.starts_with("https://") {
        return Err(usage(format!(
            "--server {:?} is not an https:// URL",
            args.server
        )));
    }
    if let Some(role) = &args.role_arn {
        assume_role::validate_role_arn(role).map_err(|e| usage(format!("--role-arn: {e}")))?;
    }
    if let Some(s) = &args.session_name {
        assume_role::validate_session_name(s).map_err(|e| usage(format!("--session-name: {e}")))?;
    }
    let name = args.name.as_deref().unwrap_or(&args.cluster_id);
    if name.trim().is_empty() {
        return Err(usage("--name is empty"));
    }
    let ca_pem = kubeconfig::read_ca(&args.ca_file)?;
    let command = match (&args.command, args.absolute_path) {
        (Some(c), _) => c.clone(),
        (None, true) => std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .context("cannot find the path of this binary for --absolute-path")?
            .display()
            .to_string(),
        (None, false) => "ram-authenticator".to_string(),
    };
    let plugin_args = plugin_args(args);
    let token_file = args
        .token_file
        .as_ref()
        .map(|p| absolute(p).display().to_string());
    let input = kubeconfig::Input {
        name,
        server: &args.server,
        ca_pem: &ca_pem,
        user: match &token_file {
            Some(path) => kubeconfig::UserKind::TokenFile(path),
            None => kubeconfig::UserKind::Exec {
                command: &command,
                args: &plugin_args,
                api_version: exec_credential::V1BETA1,
            },
        },
    };
    let Some(write) = &args.write else {
        crate::output::emit(&kubeconfig::render(&input)?)?;
        return Ok(0);
    };
    let path = match write {
        Some(p) => p.clone(),
        None => default_kubeconfig_path()?,
    };
    let outcome = kubeconfig::write_merged(&path, &input)?;
    crate::output::emit(&outcome.describe(&path, name))?;
    Ok(0)
}

/// The kubeconfig kubectl reads by default: the first file of `$KUBECONFIG`, else
/// `~/.kube/config`.
fn default_kubeconfig_path() -> anyhow::Result<PathBuf> {
    if let Some(list) = std::env::var_os("KUBECONFIG") {
        if let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty()) {
            return Ok(first);
        }
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| usage("HOME is not set: name the file with --write FILE"))?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;
    use clap::Parser as _;

    use crate::client::credentials::tests::env;

    fn token_args(extra: &[&str]) -> TokenArgs {
        let mut argv = vec!["ram-authenticator", "token", "--cluster-id", "c1"];
        argv.extend_from_slice(extra);
        let cli = crate::cli::Cli::try_parse_from(argv).expect("parse");
        match cli.command {
            crate::cli::Command::Token(mut a) => {
                a.cluster_id = cli.globals.cluster_id.expect("cluster ID");
                *a
            }
            _ => panic!("not token"),
        }
    }

    #[test]
    fn endpoint_choice() {
        let sts = |e: Option<&str>, r: Option<&str>| StsArgs {
            sts_endpoint: e.map(str::to_string),
            region: r.map(str::to_string),
            sts_ca_file: None,
        };
        assert_eq!(sts(None, None).endpoint(), "https://sts.aliyuncs.com");
        assert_eq!(
            sts(None, Some("cn-beijing")).endpoint(),
            "https://sts.cn-beijing.aliyuncs.com"
        );
        assert_eq!(
            sts(Some("http://127.0.0.1:1/"), Some("cn-beijing")).endpoint(),
            "http://127.0.0.1:1"
        );
    }

    #[test]
    fn endpoint_from_the_sdk_variables() {
        let sts = |e: Option<&str>, r: Option<&str>| StsArgs {
            sts_endpoint: e.map(str::to_string),
            region: r.map(str::to_string),
            sts_ca_file: None,
        };
        let region = env(&[(STS_REGION_ENV, "cn-shanghai")]);
        let vpc = env(&[(STS_REGION_ENV, "cn-shanghai"), (VPC_ENDPOINT_ENV, "true")]);
        assert_eq!(
            sts(None, None).endpoint_in(&region),
            "https://sts.cn-shanghai.aliyuncs.com"
        );
        assert_eq!(
            sts(None, None).endpoint_in(&vpc),
            "https://sts-vpc.cn-shanghai.aliyuncs.com"
        );
        assert_eq!(
            sts(None, None).endpoint_in(&env(&[])),
            "https://sts.aliyuncs.com"
        );
        // The flags win.
        assert_eq!(
            sts(Some("http://127.0.0.1:1"), None).endpoint_in(&vpc),
            "http://127.0.0.1:1"
        );
        assert_eq!(
            sts(None, Some("cn-beijing")).endpoint_in(&vpc),
            "https://sts.cn-beijing.aliyuncs.com"
        );
    }

    #[tokio::test]
    async fn token_from_env_with_pinned_clock() {
        let args = token_args(&["--no-cache"]);
        let e = env(&[
            ("HOME", "/nonexistent"),
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI5tTestAccessKeyId"),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "TestAccessKeySecret"),
            (
                "KUBERNETES_EXEC_INFO",
                r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential"}"#,
            ),
        ]);
        let now = crate::types::parse_utc("2026-11-23T09:35:42Z").expect("date");
        let out = run_token(&args, &e, &FixedClock(now)).await.expect("token");
        let ec: ExecCredential = serde_json::from_str(&out).expect("json");
        assert_eq!(ec.api_version, exec_credential::V1);
        assert_eq!(ec.status.expiration_timestamp, "2026-11-23T09:45:42Z");
        let req = crate::token::parse_and_check(&ec.status.token, "c1", now).expect("valid");
        assert_eq!(req.access_key_id.0, "LTAI5tTestAccessKeyId");

        let args = token_args(&["--token-only", "--format", "v1", "--api-version", "v1beta1"]);
        let out = run_token(&args, &e, &FixedClock(now)).await.expect("token");
        assert!(out.starts_with("k8s-ack-v1.") && out.ends_with('\n'));
        let req = crate::token::parse(out.trim()).expect("v1");
        assert_eq!(req.cluster_id, "c1");
    }

    #[tokio::test]
    async fn token_errors_are_clear() {
        let now = crate::types::parse_utc("2026-11-23T09:35:42Z").expect("date");
        let e = env(&[
            ("HOME", "/nonexistent"),
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "x"),
        ]);
        let err = run_token(&token_args(&[]), &e, &FixedClock(now))
            .await
            .expect_err("incomplete")
            .to_string();
        assert!(
            err.contains("ALIBABA_CLOUD_ACCESS_KEY_SECRET is not"),
            "{err}"
        );
        let e = env(&[
            ("HOME", "/nonexistent"),
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "x"),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "y"),
        ]);
        let err = run_token(
            &token_args(&["--role-arn", "acs:ram::1:user/u"]),
            &e,
            &FixedClock(now),
        )
        .await
        .expect_err("role")
        .to_string();
        assert!(err.contains("does not name a role"), "{err}");
    }

    #[test]
    fn plugin_args_pass_options_through() {
        let cli = crate::cli::Cli::try_parse_from([
            "ram-authenticator",
            "kubeconfig",
            "--cluster-id",
            "c1",
            "--server",
            "https://x",
            "--ca-file",
            "/ca.pem",
            "--role-arn",
            "acs:ram::1:role/r",
            "--profile",
            "p",
            "--format",
            "v1",
        ])
        .expect("parse");
        let args = match cli.command {
            crate::cli::Command::Kubeconfig(mut a) => {
                a.cluster_id = cli.globals.cluster_id.expect("cluster ID");
                a
            }
            _ => panic!("not kubeconfig"),
        };
        assert_eq!(
            plugin_args(&args),
            vec![
                "token",
                "--cluster-id",
                "c1",
                "--profile",
                "p",
                "--role-arn",
                "acs:ram::1:role/r",
                "--format",
                "v1"
            ]
        );
    }
}

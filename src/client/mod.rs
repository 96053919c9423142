//! The client side: the `token` exec credential plugin, `verify` and `kubeconfig`.
//!
//! - [`credentials`]: the credential chain (environment, profiles, files), pure over an
//!   injected environment.
//! - [`assume_role`]: STS `AssumeRole` with the base credentials.
//! - [`cache`]: the on-disk cache of the role's temporary credentials.
//! - [`exec_credential`]: minting the token and the `ExecCredential` kubectl reads.
//! - [`verify`]: the webhook's checks on one token, from the command line.
//! - [`kubeconfig`]: a kubeconfig that runs this binary as the plugin.

pub mod assume_role;
pub mod cache;
pub mod credentials;
pub mod exec_credential;
pub mod kubeconfig;
pub mod verify;

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};

use self::assume_role::{RoleRequest, TempCredentials};
use self::credentials::{env_var, Credentials, Env, Found, Paths};
use self::exec_credential::{ApiVersionArg, ExecCredential, MintInput, TokenFormatArg};
use crate::sts::{StsClient, StsSettings};
use crate::types::{Clock, FixedClock, SystemClock};

/// How the client commands reach STS.
#[derive(Debug, Clone, Args)]
pub struct StsArgs {
    /// STS endpoint URL (e.g. https://sts.cn-hangzhou.aliyuncs.com). Default: from --region, else
    /// the global https://sts.aliyuncs.com.
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

    fn client(&self) -> anyhow::Result<StsClient> {
        let mut settings = StsSettings::new(self.endpoint());
        settings.ca_file = self.sts_ca_file.clone();
        settings.attempt_timeout = Duration::from_secs(5);
        settings.deadline = Duration::from_secs(15);
        settings.max_concurrent = 4;
        Ok(StsClient::new(settings, None)?)
    }
}

/// Arguments of `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The cluster ID the token is bound to.
    #[arg(short = 'i', long, env = "ACK_CLUSTER_ID")]
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
    /// Assume this RAM role first and sign with its temporary credentials.
    #[arg(long, env = "ALIBABA_CLOUD_ROLE_ARN", value_name = "ARN")]
    pub role_arn: Option<String>,
    /// Role session name. Default: the profile's, else ram-authenticator-<$USER>.
    #[arg(long, env = "ALIBABA_CLOUD_ROLE_SESSION_NAME", value_name = "NAME")]
    pub session_name: Option<String>,
    /// Lifetime asked for the role's temporary credentials (900 to 43200).
    #[arg(long, default_value_t = assume_role::DEFAULT_DURATION_SECONDS, value_name = "SECONDS")]
    pub duration_seconds: u32,
    /// Do not read or write the cache of role credentials.
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub sts: StsArgs,
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
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Read the token from this file (`-` for standard input).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The cluster ID the token must be bound to. Default: clusterID of --config.
    #[arg(short = 'i', long, env = "ACK_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Config file (the server's): map the identity with its mappings and show the user.
    #[arg(short = 'c', long, value_name = "FILE")]
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
    /// The cluster ID.
    #[arg(short = 'i', long, env = "ACK_CLUSTER_ID")]
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
    #[arg(long, value_name = "ARN")]
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
    /// The plugin command. Default: the absolute path of this binary.
    #[arg(long, value_name = "PATH")]
    pub command: Option<String>,
}

/// Logs to standard error (kubectl shows a plugin's stderr). `RUST_LOG` sets the level.
fn init_logging() {
    crate::logging::init_client("warn");
}

/// `token`: prints an ExecCredential (or the bare token).
pub async fn token(args: TokenArgs) -> anyhow::Result<i32> {
    init_logging();
    let env = credentials::process_env();
    let out = run_token(&args, &env, &SystemClock).await?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")?;
    Ok(0)
}

/// The `token` command over an injected environment and clock; returns what to print.
pub async fn run_token(args: &TokenArgs, env: &Env, clock: &dyn Clock) -> anyhow::Result<String> {
    let cluster_id = args.cluster_id.trim();
    anyhow::ensure!(!cluster_id.is_empty(), "--cluster-id is empty");
    let api_version = exec_credential::choose_api_version(
        args.api_version,
        env_var(env, "KUBERNETES_EXEC_INFO"),
    )?;
    let found = credentials::resolve(env, args.profile.as_deref(), &Paths::from_env(env))?;
    tracing::debug!(source = %found.source, access_key_id = %found.credentials.access_key_id, "credentials found");
    let role = assume_role::choose_role(
        args.role_arn.as_deref(),
        args.session_name.as_deref(),
        args.duration_seconds,
        env,
        found.role.as_ref(),
    )?;
    let endpoint = args.sts.endpoint();
    let credentials = match &role {
        None => found.credentials,
        Some(role) => {
            role_credentials(args, env, clock, &found, role, &endpoint)
                .await?
                .credentials
        }
    };
    let minted = exec_credential::mint(&MintInput {
        credentials: &credentials,
        cluster_id,
        format: args.format,
        now: clock.now(),
        user_agent: exec_credential::USER_AGENT,
        sts_host: exec_credential::endpoint_host(&endpoint),
        nonce: &exec_credential::random_nonce(),
        extra_query: &[],
    });
    tracing::debug!(access_key_id = %credentials.access_key_id, token = %crate::types::short_hash(&minted.token), "token minted");
    if args.token_only {
        return Ok(format!("{}\n", minted.token));
    }
    let ec = ExecCredential::new(api_version, minted.token, minted.expiration);
    Ok(format!("{}\n", serde_json::to_string(&ec)?))
}

/// The role's temporary credentials: from the cache when fresh, else from STS (then cached).
async fn role_credentials(
    args: &TokenArgs,
    env: &Env,
    clock: &dyn Clock,
    found: &Found,
    role: &RoleRequest,
    endpoint: &str,
) -> anyhow::Result<TempCredentials> {
    let base: &Credentials = &found.credentials;
    let cache = if args.no_cache {
        None
    } else {
        cache::Cache::from_env(env)
    };
    let key = cache::key(&cache::KeyParts {
        base_access_key_id: &base.access_key_id.0,
        profile: found.profile.as_deref(),
        role_arn: &role.role_arn,
        session_name: &role.session_name,
        endpoint,
    });
    if let Some(cache) = &cache {
        if let Some(hit) = cache.load(&key, &role.role_arn, clock.now()) {
            return Ok(hit);
        }
    }
    let client = args.sts.client()?;
    tracing::debug!(role_arn = %role.role_arn, session = %role.session_name, endpoint, "assuming role");
    let temp = assume_role::assume_role(
        &client,
        base,
        role,
        clock.now(),
        &exec_credential::random_nonce(),
    )
    .await?;
    if let Some(cache) = &cache {
        if let Err(e) = cache.store(&key, &role.role_arn, &temp) {
            tracing::warn!(dir = %cache.dir().display(), error = %e, "cannot write the credentials cache; continuing without it");
        }
    }
    Ok(temp)
}

/// A usage error of `verify`: message on stderr, exit code 2.
fn usage(message: impl std::fmt::Display) -> anyhow::Result<i32> {
    eprintln!("error: {message}");
    Ok(2)
}

fn read_token_input(args: &VerifyArgs) -> Result<String, String> {
    let read_stdin = || {
        let mut s = String::new();
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut s)
            .map(|_| s)
            .map_err(|e| format!("cannot read the token from standard input: {e}"))
    };
    let raw = match (&args.token, &args.token_file) {
        (Some(_), Some(_)) => return Err("give either --token or --token-file, not both".into()),
        (None, None) => {
            return Err("give the token with --token TOKEN, --token-file FILE or --token -".into())
        }
        (Some(t), None) if t == "-" => read_stdin()?,
        (Some(t), None) => t.clone(),
        (None, Some(f)) if f.as_os_str() == "-" => read_stdin()?,
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read the token file {}: {e}", f.display()))?,
    };
    verify::extract_token(&raw)
}

/// `verify`: exit 0 when the token is valid (and mapped, with `--config`), 1 when rejected, 2
/// on usage errors.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<i32> {
    init_logging();
    let token = match read_token_input(&args) {
        Ok(t) => t,
        Err(e) => return usage(e),
    };
    let config = match &args.config {
        None => None,
        Some(path) => match crate::config::FileConfig::load(path) {
            Ok(c) => Some(c),
            Err(e) => return usage(e),
        },
    };
    let cluster_id = args
        .cluster_id
        .clone()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| config.as_ref().and_then(|c| c.cluster_id.clone()));
    let Some(cluster_id) = cluster_id else {
        return usage("give the cluster ID with --cluster-id (or clusterID in --config)");
    };
    let chain = match &config {
        None => None,
        Some(c) => match crate::mapping::file::FileSource::from_config(c) {
            Ok(source) => Some(crate::mapping::Chain::new(vec![Arc::new(source)])),
            Err(e) => return usage(format!("config file: {e}")),
        },
    };
    let sts = match args.sts.client() {
        Ok(s) => s,
        Err(e) => return usage(format!("{e:#}")),
    };
    let clock: Box<dyn Clock> = match args.now {
        Some(now) => Box::new(FixedClock(now)),
        None => Box::new(SystemClock),
    };
    let report = verify::check(&token, cluster_id.trim(), clock.now(), &sts, chain.as_ref()).await;
    let text = match args.output {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => verify::render_text(&report),
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")?;
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

/// `kubeconfig`: prints the kubeconfig.
pub fn kubeconfig(args: &KubeconfigArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(!args.cluster_id.trim().is_empty(), "--cluster-id is empty");
    anyhow::ensure!(
        args.server.starts_with("https://"),
        "--server {:?} is not an https:// URL",
        args.server
    );
    if let Some(role) = &args.role_arn {
        assume_role::validate_role_arn(role)?;
    }
    if let Some(s) = &args.session_name {
        assume_role::validate_session_name(s)?;
    }
    let ca_pem = kubeconfig::read_ca(&args.ca_file)?;
    let command = match &args.command {
        Some(c) => c.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.canonicalize().ok())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "ram-authenticator".to_string()),
    };
    let name = args.name.as_deref().unwrap_or(&args.cluster_id);
    let yaml = kubeconfig::render(&kubeconfig::Input {
        name,
        server: &args.server,
        ca_pem: &ca_pem,
        command: &command,
        args: &plugin_args(args),
        exec_api_version: exec_credential::V1BETA1,
    })?;
    crate::output::emit(&yaml)?;
    Ok(0)
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
        match crate::cli::Cli::try_parse_from(argv)
            .expect("parse")
            .command
        {
            crate::cli::Command::Token(a) => *a,
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
        let args = match crate::cli::Cli::try_parse_from([
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
        .expect("parse")
        .command
        {
            crate::cli::Command::Kubeconfig(a) => a,
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

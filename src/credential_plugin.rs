//! Compatibility with command lines written for the other tools: `ack-ram-tool
//! credential-plugin get-token` (kubeconfigs made for ack-ram-tool, with only `command:`
//! changed) and ack-ram-authenticator's `--feature-gates`.
//!
//! `credential-plugin` takes its arguments raw and parses them itself, because ack-ram-tool's
//! `-c` means `--cluster-id` there while it means `--config` everywhere else here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::client::credentials::{self, CONFIG_FILE_ENV, CREDENTIALS_FILE_ENV, PROFILE_ENV};
use crate::exit::usage;

/// The arguments after `credential-plugin`, parsed by [`run`].
#[derive(Debug, Args)]
pub struct RawArgs {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 0..,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

/// ack-ram-tool's `credential-plugin` (only `get-token` signs tokens for this webhook).
#[derive(Debug, Parser)]
#[command(
    name = "ram-authenticator credential-plugin",
    bin_name = "ram-authenticator credential-plugin",
    no_binary_name = true
)]
struct PluginCli {
    #[command(flatten)]
    tool: ToolFlags,
    #[command(subcommand)]
    command: PluginCommand,
}

/// ack-ram-tool's global flags.
#[derive(Debug, Args)]
struct ToolFlags {
    /// Region of ack-ram-tool's OpenAPI calls: accepted and not used (tokens are signed for the
    /// global STS endpoint, as ack-ram-tool's get-token does).
    #[arg(long, global = true, value_name = "REGION")]
    region_id: Option<String>,
    /// Accepted (nothing here prompts).
    #[arg(short = 'y', long, global = true)]
    assume_yes: bool,
    /// Credentials file: the aliyun CLI's config.json (a name ending in .json), else an
    /// ~/.alibabacloud/credentials INI file.
    #[arg(long, global = true, value_name = "FILE")]
    profile_file: Option<PathBuf>,
    /// Profile of the aliyun CLI's config.json (or of the INI file) to use.
    #[arg(long, global = true, value_name = "NAME")]
    profile_name: Option<String>,
    /// Do not read credentials from environment variables.
    #[arg(long, global = true)]
    ignore_env_credentials: bool,
    /// Do not read the aliyun CLI's config.json.
    #[arg(long, global = true)]
    ignore_aliyun_cli_credentials: bool,
    /// info, debug, warn or error: error and warn keep the plugin quiet (the default), info and
    /// debug show what it does on stderr.
    #[arg(long, global = true, value_name = "LEVEL", value_parser = ["info", "debug", "warn", "error"])]
    log_level: Option<String>,
    /// Same as --log-level debug.
    #[arg(short = 'v', long, global = true)]
    verbose: bool,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::enum_variant_names)] // ack-ram-tool's command names
enum PluginCommand {
    /// Print an ExecCredential with a token (`ram-authenticator token`).
    GetToken(GetToken),
    /// Not supported: ACK-issued client certificates come from ACK's OpenAPI.
    #[command(name = "get-credential")]
    GetCredential(Ignored),
    /// Not supported: ACK-issued kubeconfigs come from ACK's OpenAPI.
    #[command(name = "get-kubeconfig")]
    GetKubeconfig(Ignored),
}

#[derive(Debug, Args)]
struct GetToken {
    /// The cluster ID the token is bound to.
    #[arg(short = 'c', long, value_name = "ID")]
    cluster_id: String,
    /// ExecCredential apiVersion: v1 or v1beta1.
    #[arg(long, value_name = "VERSION", value_parser = ["v1", "v1beta1"])]
    api_version: Option<String>,
    /// Assume this RAM role and sign with its temporary credentials.
    #[arg(long, value_name = "ARN")]
    role_arn: Option<String>,
    /// Role session name.
    #[arg(long, value_name = "NAME")]
    role_session_name: Option<String>,
    /// STS endpoint for assuming --role-arn (`token --sts-endpoint`; not an ack-ram-tool flag).
    #[arg(long, value_name = "URL")]
    sts_endpoint: Option<String>,
}

#[derive(Debug, Args)]
struct Ignored {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    rest: Vec<String>,
}

/// `credential-plugin ...`: parses ack-ram-tool's command line and runs `token` with it.
pub async fn run(raw: &[String]) -> anyhow::Result<i32> {
    let cli = match PluginCli::try_parse_from(raw) {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code();
            let _ = e.print();
            return Ok(code);
        }
    };
    let get = match cli.command {
        PluginCommand::GetToken(get) => get,
        PluginCommand::GetCredential(_) | PluginCommand::GetKubeconfig(_) => {
            return Err(usage(
                "credential-plugin get-credential and get-kubeconfig fetch ACK-issued client \
                 certificates through ACK's OpenAPI, which this tool does not do; use \
                 `ram-authenticator token -i CLUSTER_ID` (or `credential-plugin get-token \
                 --cluster-id CLUSTER_ID`) as the kubeconfig's exec plugin",
            ))
        }
    };
    if get.cluster_id.trim().is_empty() {
        return Err(usage("--cluster-id is empty"));
    }
    let mut argv: Vec<String> = vec!["ram-authenticator".into(), "token".into()];
    let mut push = |flag: &str, value: Option<&String>| {
        if let Some(v) = value {
            argv.push(flag.to_string());
            argv.push(v.clone());
        }
    };
    push("--api-version", get.api_version.as_ref());
    push("--role-arn", get.role_arn.as_ref());
    push("--session-name", get.role_session_name.as_ref());
    push("--profile", cli.tool.profile_name.as_ref());
    push("--sts-endpoint", get.sts_endpoint.as_ref());
    let parsed = crate::cli::Cli::try_parse_from(&argv).map_err(|e| usage(e.to_string()))?;
    let crate::cli::Command::Token(mut args) = parsed.command else {
        return Err(anyhow::anyhow!("internal error: not a token command"));
    };
    args.cluster_id = get.cluster_id.trim().to_string();

    let mut env = credentials::process_env();
    if cli.tool.ignore_env_credentials {
        env.retain(|k, _| {
            !(k.ends_with("ACCESS_KEY_ID")
                || k.ends_with("ACCESS_KEY_SECRET")
                || k.ends_with("SECURITY_TOKEN")
                || k.starts_with("ALICLOUD_"))
        });
    }
    if let Some(file) = &cli.tool.profile_file {
        let var = if file.extension().is_some_and(|e| e == "json") {
            CONFIG_FILE_ENV
        } else {
            CREDENTIALS_FILE_ENV
        };
        env.insert(var.to_string(), file.display().to_string());
    }
    if cli.tool.ignore_aliyun_cli_credentials {
        // A path that cannot exist: the chain skips a missing config.json.
        env.insert(
            CONFIG_FILE_ENV.to_string(),
            "/nonexistent/ram-authenticator/ignored/config.json".to_string(),
        );
    }
    if cli.tool.profile_name.is_some() {
        env.remove(PROFILE_ENV);
    }
    let level = match (cli.tool.verbose, cli.tool.log_level.as_deref()) {
        (true, _) | (_, Some("debug")) => Some("debug"),
        (_, Some("info")) => Some("info"),
        _ => None,
    };
    if let (Some(level), None) = (level, env.get("RUST_LOG")) {
        // The plugin's logger reads RUST_LOG from the process; nothing else runs yet.
        tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(level))
                .with_writer(std::io::stderr)
                .with_target(false)
                .finish(),
        )
        .ok();
    }
    crate::client::token_with_env(*args, env).await
}

/// ack-ram-authenticator's feature gates, each answered with what to use here. Unknown gates
/// and malformed lists are usage errors.
pub fn warn_feature_gates(gates: Option<&str>) -> anyhow::Result<()> {
    let Some(gates) = gates else {
        return Ok(());
    };
    for gate in gates.split(',').map(str::trim).filter(|g| !g.is_empty()) {
        let (name, value) = gate.split_once('=').unwrap_or((gate, "true"));
        let on: bool = value.trim().parse().map_err(|_| {
            usage(format!(
                "--feature-gates: {gate:?}: the value must be true or false"
            ))
        })?;
        let advice = match name.trim() {
            "RAMIdentityMappingCRD" => {
                "RAMIdentityMapping objects are read when --backend-mode (config \
                 server.backendMode) lists CRD"
            }
            "ConfiguredInitDirectories" => {
                "init and server always write to --state-dir and --generate-kubeconfig"
            }
            "SSORoleMatch" => {
                "map CloudSSO roles with a pattern, e.g. \
                 acs:ram::<account>:role/aliyunreservedsso_<name>_*"
            }
            other => {
                return Err(usage(format!(
                    "--feature-gates: unknown gate {other:?} (ack-ram-authenticator's gates: \
                     RAMIdentityMappingCRD, ConfiguredInitDirectories, SSORoleMatch)"
                )))
            }
        };
        if on {
            eprintln!("note: --feature-gates {name} is not needed here: {advice}");
        }
    }
    Ok(())
}

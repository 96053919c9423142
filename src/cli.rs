//! The command line: one subcommand per tool. `main.rs` parses it and calls [`run`].
//!
//! ack-ram-authenticator's root flags (`-c/--config`, `-i/--cluster-id`, `-l/--log-format`,
//! `--feature-gates`) are [`Globals`]: accepted before or after the subcommand. [`run`] hands
//! them to the command that uses them.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand};

use crate::config::FileConfig;
use crate::exit::usage;
use crate::logging::LogFormat;

/// Kubernetes token authentication with Alibaba Cloud RAM identities.
#[derive(Debug, Parser)]
#[command(name = "ram-authenticator", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts, before or after its name.
#[derive(Debug, Clone, Default, Args)]
pub struct Globals {
    /// Config file (YAML). The server reads all of it; `token`, `verify`, `init` and
    /// `kubeconfig` read clusterID (and `token` defaultRole) from it.
    #[arg(short = 'c', long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The cluster ID tokens are bound to (config `clusterID`).
    #[arg(
        short = 'i',
        long,
        global = true,
        env = "ACK_CLUSTER_ID",
        value_name = "ID"
    )]
    pub cluster_id: Option<String>,
    /// Log format of `server`.
    #[arg(short = 'l', long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// ack-ram-authenticator's feature gates (`Name=true,...`): accepted, and each gate is
    /// answered with what to use instead (see docs/migration.md).
    #[arg(long, global = true, value_name = "GATES")]
    pub feature_gates: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook server that answers kube-apiserver's TokenReviews.
    Server(Box<crate::server::ServerArgs>),
    /// Generate the serving certificate, key and the webhook kubeconfig for kube-apiserver.
    Init(crate::server::init::InitArgs),
    /// Check a config file without serving: resolves the settings as `server` does (same
    /// flags and environment) and prints them with the mappings.
    CheckConfig(Box<crate::server::CheckConfigArgs>),
    /// Print an ExecCredential with a token (the kubectl exec credential plugin).
    Token(Box<crate::client::TokenArgs>),
    /// Decode and check a token: local checks, then STS; prints the identity or the reason.
    Verify(Box<crate::client::VerifyArgs>),
    /// Print (or merge into a file) a kubeconfig whose user runs this binary as the plugin.
    Kubeconfig(Box<crate::client::KubeconfigArgs>),
    /// Add a mapping: a RAMIdentityMapping object, or an entry of the alibabacloud-auth ConfigMap.
    #[command(subcommand)]
    Add(crate::mapping_admin::AddCommand),
    /// Remove the mapping of an ARN.
    #[command(subcommand)]
    Remove(crate::mapping_admin::RemoveCommand),
    /// List the mappings stored in the cluster.
    List(crate::mapping_admin::ListArgs),
    /// Print the RAMIdentityMapping CustomResourceDefinition (YAML).
    Crd,
    /// Print the version, git commit, build date and compiler.
    Version(crate::build_info::VersionArgs),
    /// ack-ram-tool's `credential-plugin get-token`, for kubeconfigs written for ack-ram-tool.
    #[command(disable_help_flag = true)]
    CredentialPlugin(crate::credential_plugin::RawArgs),
}

/// Runs the command line; returns the process exit code. `matches` are the matches `cli` was
/// built from (they tell a flag given from a default).
pub async fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<i32> {
    let mut g = cli.globals;
    // An empty ACK_CLUSTER_ID counts as unset; an empty --cluster-id is a mistake.
    if let Some(id) = g.cluster_id.take() {
        let id = id.trim().to_string();
        if !id.is_empty() {
            g.cluster_id = Some(id);
        } else if cluster_id_source(matches) != Some(ValueSource::EnvVariable) {
            return Err(usage("--cluster-id: the cluster ID is empty"));
        }
    }
    crate::credential_plugin::warn_feature_gates(g.feature_gates.as_deref())?;
    match cli.command {
        Command::Server(mut args) => {
            fill_server(&mut args, &g);
            if args.config.is_none() && args.cluster_id.is_none() {
                return Err(usage(
                    "no cluster ID: pass --cluster-id (-i), set ACK_CLUSTER_ID, or give a config \
                     file (--config) with clusterID",
                ));
            }
            crate::server::run(*args).await
        }
        Command::CheckConfig(mut args) => {
            fill_server(&mut args.server, &g);
            crate::server::check_config(&args)
        }
        Command::Init(mut args) => {
            let config = load_config(&g)?;
            if let Some(c) = &config {
                init_from_config(&mut args, c, matches.subcommand_matches("init"));
            }
            args.cluster_id = required_cluster_id(&g, config.as_ref())?;
            crate::server::init::run(&args)
        }
        Command::Token(mut args) => {
            let config = load_config(&g)?;
            args.cluster_id = required_cluster_id(&g, config.as_ref())?;
            if args.role_arn.is_none() {
                args.role_arn = std::env::var("DEFAULT_ROLE")
                    .ok()
                    .filter(|r| !r.trim().is_empty())
                    .or_else(|| config.and_then(|c| c.default_role))
                    .filter(|r| !r.trim().is_empty());
            }
            crate::client::token(*args).await
        }
        Command::Verify(mut args) => {
            args.cluster_id = g.cluster_id;
            args.config = g.config;
            crate::client::verify(*args).await
        }
        Command::Kubeconfig(mut args) => {
            let config = load_config(&g)?;
            args.cluster_id = required_cluster_id(&g, config.as_ref())?;
            crate::client::kubeconfig(&args)
        }
        Command::Add(cmd) => crate::mapping_admin::add(cmd).await,
        Command::Remove(cmd) => crate::mapping_admin::remove(cmd).await,
        Command::List(args) => crate::mapping_admin::list(&args).await,
        Command::Crd => {
            crate::output::emit(&crate::kube::crd::crd_yaml()?)?;
            Ok(0)
        }
        Command::Version(args) => crate::build_info::version(&args),
        Command::CredentialPlugin(raw) => crate::credential_plugin::run(&raw.args).await,
    }
}

/// `init -c FILE`: the host name, address and port of the `server` section, where no flag gave
/// them. As with ack-ram-authenticator, the files are written to `--state-dir` (default: here),
/// to be copied to the configured places.
fn init_from_config(
    args: &mut crate::server::init::InitArgs,
    c: &FileConfig,
    matches: Option<&ArgMatches>,
) {
    let unset =
        |id: &str| matches.and_then(|m| m.value_source(id)) != Some(ValueSource::CommandLine);
    let s = &c.server;
    if let (true, Some(v)) = (unset("hostname"), &s.hostname) {
        args.hostname = v.clone();
    }
    if let (true, Some(v)) = (unset("address"), &s.address) {
        args.address = v.clone();
    }
    if let (true, Some(v)) = (unset("port"), s.port) {
        args.port = v;
    }
}

/// Where the (global) cluster ID came from: the root or the subcommand's matches.
fn cluster_id_source(matches: &ArgMatches) -> Option<ValueSource> {
    let mut m = matches;
    let mut source = m.value_source("cluster_id");
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
        if let Some(s) = m.value_source("cluster_id") {
            source = Some(s);
        }
    }
    source
}

/// Hands the root flags to `server` (and `check-config`, which resolves like it).
fn fill_server(args: &mut crate::server::ServerArgs, g: &Globals) {
    args.config = g.config.clone();
    args.cluster_id = g.cluster_id.clone();
    args.log_format = g.log_format.unwrap_or_default();
}

/// The config file of `--config`, if given.
fn load_config(g: &Globals) -> anyhow::Result<Option<FileConfig>> {
    match &g.config {
        None => Ok(None),
        Some(path) => Ok(Some(FileConfig::load(path)?)),
    }
}

/// `--cluster-id`, else the config file's `clusterID`; a usage error when neither is set.
fn required_cluster_id(g: &Globals, config: Option<&FileConfig>) -> anyhow::Result<String> {
    g.cluster_id
        .clone()
        .or_else(|| config.and_then(|c| c.cluster_id.clone()))
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            usage(
                "no cluster ID: pass --cluster-id (-i), set ACK_CLUSTER_ID, or set clusterID in \
                 the --config file",
            )
        })
}

//! The command line: one subcommand per tool. `main.rs` only calls [`run`].

use clap::{Parser, Subcommand};

/// Kubernetes token authentication with Alibaba Cloud RAM identities.
#[derive(Debug, Parser)]
#[command(name = "ram-authenticator", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook server that answers kube-apiserver's TokenReviews.
    Server(Box<crate::server::ServerArgs>),
    /// Generate the serving certificate, key and the webhook kubeconfig for kube-apiserver.
    Init(crate::server::init::InitArgs),
    /// Check a config file without serving: prints the mappings it defines.
    CheckConfig(crate::server::CheckConfigArgs),
    /// Print an ExecCredential with a token (the kubectl exec credential plugin).
    Token(Box<crate::client::TokenArgs>),
    /// Decode and check a token: local checks, then STS; prints the identity or the reason.
    Verify(Box<crate::client::VerifyArgs>),
    /// Print a kubeconfig whose user runs this binary as the exec credential plugin.
    Kubeconfig(crate::client::KubeconfigArgs),
    /// Print the RAMIdentityMapping CustomResourceDefinition (YAML).
    Crd,
    /// Print the version, git commit, build date and compiler.
    Version(crate::build_info::VersionArgs),
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Server(args) => crate::server::run(*args).await,
        Command::Init(args) => crate::server::init::run(&args),
        Command::CheckConfig(args) => crate::server::check_config(&args),
        Command::Token(args) => crate::client::token(*args).await,
        Command::Verify(args) => crate::client::verify(*args).await,
        Command::Kubeconfig(args) => crate::client::kubeconfig(&args),
        Command::Crd => {
            crate::output::emit(&crate::kube::crd::crd_yaml()?)?;
            Ok(0)
        }
        Command::Version(args) => crate::build_info::version(&args),
    }
}

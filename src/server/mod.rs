//! The webhook server.

pub mod init;

use clap::Args;

/// Arguments of `server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Config file (YAML, ack-ram-authenticator keys).
    #[arg(short = 'c', long)]
    pub config: Option<std::path::PathBuf>,
}

/// Arguments of `check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Config file to check.
    #[arg(short = 'c', long)]
    pub config: std::path::PathBuf,
}

pub async fn run(_args: ServerArgs) -> anyhow::Result<i32> {
    anyhow::bail!("server: not built yet")
}

pub fn check_config(_args: &CheckConfigArgs) -> anyhow::Result<i32> {
    anyhow::bail!("check-config: not built yet")
}

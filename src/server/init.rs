//! `init`: the serving certificate, key and webhook kubeconfig.

use clap::Args;

/// Arguments of `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The cluster ID.
    #[arg(short = 'i', long)]
    pub cluster_id: String,
}

pub fn run(_args: &InitArgs) -> anyhow::Result<i32> {
    anyhow::bail!("init: not built yet")
}

//! The client side: the `token` exec credential plugin, `verify` and `kubeconfig`.

use clap::Args;

/// Arguments of `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The cluster ID the token is bound to.
    #[arg(short = 'i', long, env = "ACK_CLUSTER_ID")]
    pub cluster_id: String,
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The token to check.
    #[arg(long)]
    pub token: String,
}

/// Arguments of `kubeconfig`.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// The cluster ID.
    #[arg(short = 'i', long)]
    pub cluster_id: String,
}

pub async fn token(_args: TokenArgs) -> anyhow::Result<i32> {
    anyhow::bail!("token: not built yet")
}

pub async fn verify(_args: VerifyArgs) -> anyhow::Result<i32> {
    anyhow::bail!("verify: not built yet")
}

pub fn kubeconfig(_args: &KubeconfigArgs) -> anyhow::Result<i32> {
    anyhow::bail!("kubeconfig: not built yet")
}

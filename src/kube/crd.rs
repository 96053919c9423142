//! The `RAMIdentityMapping` custom resource.

/// The CRD as YAML.
pub fn crd_yaml() -> anyhow::Result<String> {
    anyhow::bail!("crd: not built yet")
}

//! The server's effective settings: command-line flags over the config file over defaults.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use super::ServerArgs;
use crate::authenticator::CacheSettings;
use crate::config::{BackendMode, FileConfig};
use crate::sts::{endpoint_for, StsSettings};

/// Default HTTPS port (as ack-ram-authenticator).
pub const DEFAULT_PORT: u16 = 21362;
/// Default state directory (as ack-ram-authenticator).
pub const DEFAULT_STATE_DIR: &str = "/var/ack-ram-authenticator";
/// Default webhook kubeconfig path (as ack-ram-authenticator).
pub const DEFAULT_KUBECONFIG_OUT: &str = "/etc/kubernetes/ack-ram-authenticator/kubeconfig.yaml";
/// Default plain-HTTP health listener.
pub const DEFAULT_HEALTH_ADDRESS: &str = "0.0.0.0:21363";

/// Everything the server needs to start, resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub cluster_id: String,
    pub address: String,
    pub port: u16,
    pub hostname: String,
    pub state_dir: PathBuf,
    /// `None` when the kubeconfig is pre-generated.
    pub generate_kubeconfig: Option<PathBuf>,
    pub backends: Vec<BackendMode>,
    pub sts: StsSettings,
    pub health_address: String,
    pub kubeconfig: Option<PathBuf>,
    pub audiences: Vec<String>,
    pub cache: CacheSettings,
    pub scrubbed_accounts: Vec<String>,
    /// Mutual TLS: the client CA file (flag, config, or `client-ca.pem` in the state directory).
    pub client_ca_file: Option<PathBuf>,
    /// Accounts allowed to log in; empty means every account.
    pub allowed_accounts: Vec<String>,
    pub allow_reserved: crate::mapping::guard::AllowReserved,
    pub audit_allows: crate::audit::AuditAllows,
}

impl Settings {
    pub fn resolve(args: &ServerArgs, file: Option<&FileConfig>) -> anyhow::Result<Self> {
        let default = FileConfig::default();
        let file = file.unwrap_or(&default);
        let s = &file.server;
        let cluster_id = args
            .cluster_id
            .clone()
            .or_else(|| file.cluster_id.clone())
            .filter(|c| !c.trim().is_empty());
        let Some(cluster_id) = cluster_id else {
            bail!("no cluster ID: pass --cluster-id or set clusterID in the config file");
        };
        let backends = if !args.backend_mode.is_empty() {
            BackendMode::parse_list(&args.backend_mode)
                .map_err(|e| anyhow::anyhow!("--backend-mode: {e}"))?
        } else if let Some(modes) = &s.backend_mode {
            BackendMode::parse_list(modes)
                .map_err(|e| anyhow::anyhow!("server.backendMode: {e}"))?
        } else {
            vec![BackendMode::MountedFile]
        };
        let endpoint = endpoint_for(
            args.sts_endpoint.as_deref().or(s.sts_endpoint.as_deref()),
            args.region.as_deref().or(s.region.as_deref()),
        );
        let mut sts = StsSettings::new(endpoint);
        sts.ca_file = args.sts_ca_file.clone().or_else(|| s.sts_ca_file.clone());
        if let Some(ms) = args.sts_timeout_ms.or(s.sts_timeout_ms) {
            if ms == 0 {
                bail!("STS timeout must be more than 0 ms");
            }
            sts.attempt_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = args.sts_deadline_ms.or(s.sts_deadline_ms) {
            if ms == 0 || ms > 25_000 {
                bail!("STS deadline must be between 1 and 25000 ms (kube-apiserver gives up after 30 s)");
            }
            sts.deadline = Duration::from_millis(ms);
        }
        if let Some(n) = args.sts_max_concurrent.or(s.sts_max_concurrent) {
            sts.max_concurrent = n.max(1);
        }
        let mut cache = CacheSettings::default();
        if let Some(ttl) = args.cache_ttl_seconds.or(s.cache_ttl_seconds) {
            cache.ttl = Duration::from_secs(ttl);
        }
        if let Some(n) = args.cache_max_entries.or(s.cache_max_entries) {
            cache.max_entries = n.max(1);
        }
        let pregenerated =
            args.kubeconfig_pregenerated || s.kubeconfig_pregenerated.unwrap_or(false);
        let generate_kubeconfig = if pregenerated {
            None
        } else {
            Some(
                args.generate_kubeconfig
                    .clone()
                    .or_else(|| s.generate_kubeconfig.clone())
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_KUBECONFIG_OUT)),
            )
        };
        let audiences = if !args.audiences.is_empty() {
            args.audiences.clone()
        } else {
            s.audiences.clone().unwrap_or_default()
        };
        let state_dir = args
            .state_dir
            .clone()
            .or_else(|| s.state_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let client_ca_file = args
            .client_ca_file
            .clone()
            .or_else(|| s.client_ca_file.clone())
            .or_else(|| {
                let p = state_dir.join(super::init::CLIENT_CA_FILE);
                p.exists().then_some(p)
            });
        let allowed_accounts = if args.allowed_accounts.is_empty() {
            s.allowed_accounts.clone()
        } else {
            args.allowed_accounts
                .iter()
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect()
        };
        if let Some(bad) = allowed_accounts
            .iter()
            .find(|a| !a.chars().all(|c| c.is_ascii_digit()))
        {
            bail!("--allowed-accounts: {bad:?} is not an account ID (digits)");
        }
        let allow_reserved = if args.allow_reserved_names.is_empty() {
            crate::mapping::guard::AllowReserved::parse(&s.allow_reserved_names)
                .map_err(|e| anyhow::anyhow!("server.allowReservedNames: {e}"))?
        } else {
            crate::mapping::guard::AllowReserved::parse(&args.allow_reserved_names)
                .map_err(|e| anyhow::anyhow!("--allow-reserved-names: {e}"))?
        };
        Ok(Self {
            cluster_id,
            address: args
                .address
                .clone()
                .or_else(|| s.address.clone())
                .unwrap_or_else(|| "127.0.0.1".into()),
            port: args.port.or(s.port).unwrap_or(DEFAULT_PORT),
            hostname: args
                .hostname
                .clone()
                .or_else(|| s.hostname.clone())
                .unwrap_or_else(|| "localhost".into()),
            state_dir,
            generate_kubeconfig,
            backends,
            sts,
            health_address: args
                .health_address
                .clone()
                .or_else(|| s.health_address.clone())
                .unwrap_or_else(|| DEFAULT_HEALTH_ADDRESS.into()),
            kubeconfig: args.kubeconfig.clone().or_else(|| s.kubeconfig.clone()),
            audiences,
            cache,
            scrubbed_accounts: s.scrubbed_accounts.clone(),
            client_ca_file,
            allowed_accounts,
            allow_reserved,
            audit_allows: args.audit_allows.or(s.audit_allows).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_defaults_apply() {
        let file = FileConfig::parse("clusterID: from-file\nserver:\n  port: 1000\n  region: cn-beijing\n  backendMode: CRD\n")
            .expect("config");
        let s = Settings::resolve(&ServerArgs::default(), Some(&file)).expect("settings");
        assert_eq!(s.cluster_id, "from-file");
        assert_eq!(s.port, 1000);
        assert_eq!(s.sts.endpoint, "https://sts-vpc.cn-beijing.aliyuncs.com");
        assert_eq!(s.backends, vec![BackendMode::Crd]);
        assert_eq!(s.address, "127.0.0.1");
        assert_eq!(s.state_dir, PathBuf::from(DEFAULT_STATE_DIR));

        let args = ServerArgs {
            cluster_id: Some("from-flag".into()),
            port: Some(2000),
            sts_endpoint: Some("http://127.0.0.1:1".into()),
            kubeconfig_pregenerated: true,
            ..ServerArgs::default()
        };
        let s = Settings::resolve(&args, Some(&file)).expect("settings");
        assert_eq!(s.cluster_id, "from-flag");
        assert_eq!(s.port, 2000);
        assert_eq!(s.sts.endpoint, "http://127.0.0.1:1");
        assert!(s.generate_kubeconfig.is_none());
    }

    #[test]
    fn client_ca_from_flag_config_or_state_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = ServerArgs {
            cluster_id: Some("c".into()),
            state_dir: Some(dir.path().to_path_buf()),
            ..ServerArgs::default()
        };
        assert_eq!(
            Settings::resolve(&args, None).expect("s").client_ca_file,
            None
        );
        let in_state = dir.path().join(super::super::init::CLIENT_CA_FILE);
        std::fs::write(&in_state, "x").expect("write");
        assert_eq!(
            Settings::resolve(&args, None).expect("s").client_ca_file,
            Some(in_state)
        );
        let file = FileConfig::parse("server:\n  clientCAFile: /from/config.pem\n").expect("cfg");
        assert_eq!(
            Settings::resolve(&args, Some(&file))
                .expect("s")
                .client_ca_file,
            Some(PathBuf::from("/from/config.pem"))
        );
        let flag = ServerArgs {
            client_ca_file: Some("/from/flag.pem".into()),
            ..args
        };
        assert_eq!(
            Settings::resolve(&flag, Some(&file))
                .expect("s")
                .client_ca_file,
            Some(PathBuf::from("/from/flag.pem"))
        );
    }

    #[test]
    fn cluster_id_is_required() {
        let err = Settings::resolve(&ServerArgs::default(), None).expect_err("no cluster");
        assert!(err.to_string().contains("--cluster-id"));
    }
}

//! The server's effective settings: command-line flags over the config file over defaults.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use super::limits::{Given, Limits, Range};
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
    pub limits: Limits,
}

/// Ranges of the other numeric settings (the connection bounds are in [`limits::RANGES`]).
pub const STS_TIMEOUT_MS: Range = Range {
    flag: "sts-timeout-ms",
    key: "stsTimeoutMs",
    min: 1,
    max: 25_000,
    default: 3000,
};
pub const STS_DEADLINE_MS: Range = Range {
    flag: "sts-deadline-ms",
    key: "stsDeadlineMs",
    min: 1,
    max: 25_000,
    default: 8000,
};
pub const STS_MAX_CONCURRENT: Range = Range {
    flag: "sts-max-concurrent",
    key: "stsMaxConcurrent",
    min: 1,
    max: 65_536,
    default: 64,
};
pub const CACHE_TTL_SECONDS: Range = Range {
    flag: "cache-ttl-seconds",
    key: "cacheTTLSeconds",
    min: 0,
    max: 86_400,
    default: 900,
};
pub const CACHE_MAX_ENTRIES: Range = Range {
    flag: "cache-max-entries",
    key: "cacheMaxEntries",
    min: 1,
    max: 100_000_000,
    default: 100_000,
};
pub const RELOAD_INTERVAL_MS: Range = Range {
    flag: "reload-interval-ms",
    key: "",
    min: 100,
    max: 3_600_000,
    default: 2000,
};

fn usize_u64(v: Option<usize>) -> Option<u64> {
    v.map(|n| u64::try_from(n).unwrap_or(u64::MAX))
}

fn given_flags(a: &ServerArgs) -> Given {
    Given {
        max_connections: a.max_connections,
        max_concurrent_reviews: a.max_concurrent_reviews,
        tls_handshake_timeout_ms: a.tls_handshake_timeout_ms,
        header_timeout_ms: a.header_timeout_ms,
        body_timeout_ms: a.body_timeout_ms,
        write_timeout_ms: a.write_timeout_ms,
        idle_timeout_ms: a.idle_timeout_ms,
        http2_keepalive_interval_ms: a.http2_keepalive_interval_ms,
        http2_keepalive_timeout_ms: a.http2_keepalive_timeout_ms,
        http2_max_concurrent_streams: a.http2_max_concurrent_streams,
        max_header_bytes: a.max_header_bytes,
        control_budget_bytes: a.control_budget_bytes,
        max_body_buffer_bytes: a.max_body_buffer_bytes,
        shutdown_grace_seconds: a.shutdown_grace_seconds,
        health_max_connections: a.health_max_connections,
        health_timeout_ms: a.health_timeout_ms,
        health_idle_timeout_ms: a.health_idle_timeout_ms,
    }
}

fn given_file(s: &crate::config::ServerSection) -> Given {
    Given {
        max_connections: s.max_connections,
        max_concurrent_reviews: s.max_concurrent_reviews,
        tls_handshake_timeout_ms: s.tls_handshake_timeout_ms,
        header_timeout_ms: s.header_timeout_ms,
        body_timeout_ms: s.body_timeout_ms,
        write_timeout_ms: s.write_timeout_ms,
        idle_timeout_ms: s.idle_timeout_ms,
        http2_keepalive_interval_ms: s.http2_keepalive_interval_ms,
        http2_keepalive_timeout_ms: s.http2_keepalive_timeout_ms,
        http2_max_concurrent_streams: s.http2_max_concurrent_streams,
        max_header_bytes: s.max_header_bytes,
        control_budget_bytes: s.control_budget_bytes,
        max_body_buffer_bytes: s.max_body_buffer_bytes,
        shutdown_grace_seconds: s.shutdown_grace_seconds,
        health_max_connections: s.health_max_connections,
        health_timeout_ms: s.health_timeout_ms,
        health_idle_timeout_ms: s.health_idle_timeout_ms,
    }
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
        if args.sts_timeout_ms.or(s.sts_timeout_ms).is_some() {
            let ms = STS_TIMEOUT_MS.pick(args.sts_timeout_ms, s.sts_timeout_ms)?;
            sts.attempt_timeout = Duration::from_millis(ms);
        }
        if args.sts_deadline_ms.or(s.sts_deadline_ms).is_some() {
            // kube-apiserver gives up on a webhook after 30 s.
            let ms = STS_DEADLINE_MS.pick(args.sts_deadline_ms, s.sts_deadline_ms)?;
            sts.deadline = Duration::from_millis(ms);
        }
        let (flag_sts, file_sts) = (
            usize_u64(args.sts_max_concurrent),
            usize_u64(s.sts_max_concurrent),
        );
        if flag_sts.or(file_sts).is_some() {
            let n = STS_MAX_CONCURRENT.pick(flag_sts, file_sts)?;
            sts.max_concurrent = usize::try_from(n).unwrap_or(usize::MAX);
        }
        let mut cache = CacheSettings::default();
        if args.cache_ttl_seconds.or(s.cache_ttl_seconds).is_some() {
            let ttl = CACHE_TTL_SECONDS.pick(args.cache_ttl_seconds, s.cache_ttl_seconds)?;
            cache.ttl = Duration::from_secs(ttl);
        }
        if args.cache_max_entries.or(s.cache_max_entries).is_some() {
            cache.max_entries =
                CACHE_MAX_ENTRIES.pick(args.cache_max_entries, s.cache_max_entries)?;
        }
        let limits = Limits::resolve(&given_flags(args), &given_file(s))?;
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
            limits,
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
    fn numbers_out_of_range_are_refused_with_their_name() {
        let args = ServerArgs {
            cluster_id: Some("c".into()),
            max_connections: Some(u64::MAX),
            ..ServerArgs::default()
        };
        let e = Settings::resolve(&args, None).expect_err("out of range");
        let range = e
            .downcast_ref::<crate::server::limits::RangeError>()
            .expect("a range error");
        assert!(range.usage);
        assert!(e.to_string().contains("--max-connections"), "{e}");
        let args = ServerArgs {
            cluster_id: Some("c".into()),
            sts_max_concurrent: Some(usize::MAX),
            ..ServerArgs::default()
        };
        let e = Settings::resolve(&args, None).expect_err("out of range");
        assert!(e.to_string().contains("--sts-max-concurrent"), "{e}");
        let file = FileConfig::parse("clusterID: c\nserver:\n  maxConcurrentReviews: 0\n")
            .expect("config");
        let args = ServerArgs {
            ..ServerArgs::default()
        };
        let e = Settings::resolve(&args, Some(&file)).expect_err("out of range");
        assert!(e.to_string().contains("server.maxConcurrentReviews"), "{e}");
    }

    #[test]
    fn cluster_id_is_required() {
        let err = Settings::resolve(&ServerArgs::default(), None).expect_err("no cluster");
        assert!(err.to_string().contains("--cluster-id"));
    }
}

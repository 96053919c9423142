//! The configuration file, compatible with ack-ram-authenticator's keys (any key casing:
//! `roleARN`, `rolearn` and `RoleArn` are the same key). Unknown keys are refused with their
//! name, so that a typo does not silently drop a mapping.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::mapping::{lowercase_keys, RoleMappingDoc, UserMappingDoc};

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The cluster ID tokens must be bound to (`clusterID`).
    #[serde(rename = "clusterid", default)]
    pub cluster_id: Option<String>,
    /// The role `token` assumes when none is given (`defaultRole`, as ack-ram-authenticator:
    /// client and server share one file). The server ignores it.
    #[serde(rename = "defaultrole", default)]
    pub default_role: Option<String>,
    #[serde(default)]
    pub server: ServerSection,
}

/// The `server:` section. Every field is optional; command-line flags override it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// HTTPS port (default 21362).
    pub port: Option<u16>,
    /// HTTPS listen address (default 127.0.0.1).
    pub address: Option<String>,
    /// Host name in the generated kubeconfig and certificate (default localhost).
    pub hostname: Option<String>,
    /// Where cert.pem and key.pem live.
    #[serde(rename = "statedir")]
    pub state_dir: Option<PathBuf>,
    /// Region: STS endpoint `https://sts-vpc.<region>.aliyuncs.com`.
    pub region: Option<String>,
    /// Explicit STS endpoint URL (wins over `region`).
    #[serde(rename = "stsendpoint")]
    pub sts_endpoint: Option<String>,
    /// Extra CA bundle (PEM) to trust for the STS endpoint.
    #[serde(rename = "stscafile")]
    pub sts_ca_file: Option<PathBuf>,
    /// Mapping sources in order: `MountedFile`, `ACKConfigMap`, `CRD`.
    #[serde(rename = "backendmode", default, deserialize_with = "string_or_list")]
    pub backend_mode: Option<Vec<String>>,
    /// Kubeconfig for the Kubernetes API (ConfigMap and CRD sources); in-cluster if unset.
    pub kubeconfig: Option<PathBuf>,
    /// Where to write the webhook kubeconfig for kube-apiserver.
    #[serde(rename = "generatekubeconfig")]
    pub generate_kubeconfig: Option<PathBuf>,
    /// Do not write the webhook kubeconfig (it was written by `init`).
    #[serde(rename = "kubeconfigpregenerated")]
    pub kubeconfig_pregenerated: Option<bool>,
    /// Plain-HTTP health listener (default 0.0.0.0:21363).
    #[serde(rename = "healthaddress")]
    pub health_address: Option<String>,
    /// Audiences this authenticator accepts; empty means "the API server" only.
    #[serde(default)]
    pub audiences: Option<Vec<String>>,
    /// How long a confirmed identity is remembered, in seconds (capped by the token's own life).
    #[serde(rename = "cachettlseconds")]
    pub cache_ttl_seconds: Option<u64>,
    /// How many identities the cache holds at most.
    #[serde(rename = "cachemaxentries")]
    pub cache_max_entries: Option<u64>,
    /// Timeout of one STS attempt, in milliseconds.
    #[serde(rename = "ststimeoutms")]
    pub sts_timeout_ms: Option<u64>,
    /// Deadline of one review's STS work (retries included), in milliseconds.
    #[serde(rename = "stsdeadlinems")]
    pub sts_deadline_ms: Option<u64>,
    /// STS calls in flight at once.
    #[serde(rename = "stsmaxconcurrent")]
    pub sts_max_concurrent: Option<usize>,
    /// Open HTTPS connections at most.
    #[serde(rename = "maxconnections")]
    pub max_connections: Option<u64>,
    /// Reviews being authenticated at once.
    #[serde(rename = "maxconcurrentreviews")]
    pub max_concurrent_reviews: Option<u64>,
    /// TLS handshake deadline, in milliseconds.
    #[serde(rename = "tlshandshaketimeoutms")]
    pub tls_handshake_timeout_ms: Option<u64>,
    /// Deadline of the first request and of request headers, in milliseconds.
    #[serde(rename = "headertimeoutms")]
    pub header_timeout_ms: Option<u64>,
    /// Deadline of a request body from the request's start, in milliseconds.
    #[serde(rename = "bodytimeoutms")]
    pub body_timeout_ms: Option<u64>,
    /// Deadline for the client to take an answer, in milliseconds.
    #[serde(rename = "writetimeoutms")]
    pub write_timeout_ms: Option<u64>,
    /// Idle connections are closed after this, in milliseconds.
    #[serde(rename = "idletimeoutms")]
    pub idle_timeout_ms: Option<u64>,
    /// HTTP/2 keep-alive PING interval, in milliseconds.
    #[serde(rename = "http2keepaliveintervalms")]
    pub http2_keepalive_interval_ms: Option<u64>,
    /// HTTP/2 keep-alive PING answer deadline, in milliseconds.
    #[serde(rename = "http2keepalivetimeoutms")]
    pub http2_keepalive_timeout_ms: Option<u64>,
    /// HTTP/2 streams per connection at most.
    #[serde(rename = "http2maxconcurrentstreams")]
    pub http2_max_concurrent_streams: Option<u64>,
    /// Request header bytes at most.
    #[serde(rename = "maxheaderbytes")]
    pub max_header_bytes: Option<u64>,
    /// Bytes a connection may read that serve no request (see the README's Security section).
    #[serde(rename = "controlbudgetbytes")]
    pub control_budget_bytes: Option<u64>,
    /// Request body bytes buffered at once, all connections together.
    #[serde(rename = "maxbodybufferbytes")]
    pub max_body_buffer_bytes: Option<u64>,
    /// How long in-flight reviews may take after a stop signal, in seconds.
    #[serde(rename = "shutdowngraceseconds")]
    pub shutdown_grace_seconds: Option<u64>,
    /// Open health-listener connections at most.
    #[serde(rename = "healthmaxconnections")]
    pub health_max_connections: Option<u64>,
    /// Health listener: request and write deadline, in milliseconds.
    #[serde(rename = "healthtimeoutms")]
    pub health_timeout_ms: Option<u64>,
    /// Health listener: idle connections are closed after this, in milliseconds.
    #[serde(rename = "healthidletimeoutms")]
    pub health_idle_timeout_ms: Option<u64>,
    #[serde(rename = "maproles", default)]
    pub map_roles: Vec<RoleMappingDoc>,
    #[serde(rename = "mapusers", default)]
    pub map_users: Vec<UserMappingDoc>,
    /// Accounts whose every identity maps to its canonical ARN.
    #[serde(rename = "mapaccounts", default, deserialize_with = "strings")]
    pub map_accounts: Vec<String>,
    /// Accounts whose ARNs and UIDs are kept out of the logs.
    #[serde(rename = "scrubbedaccounts", default, deserialize_with = "strings")]
    pub scrubbed_accounts: Vec<String>,
    /// Mutual TLS: CA (PEM) that HTTPS clients' certificates must chain to.
    #[serde(rename = "clientcafile")]
    pub client_ca_file: Option<PathBuf>,
    /// Accounts whose identities may log in at all; empty means every account. Identities of
    /// other accounts are denied before any mapping is looked at.
    #[serde(rename = "allowedaccounts", default, deserialize_with = "strings")]
    pub allowed_accounts: Vec<String>,
    /// Sources whose mappings may produce reserved (`system:`) names: `true` for every source,
    /// or a list of backend modes. Default: none.
    #[serde(
        rename = "allowreservednames",
        default,
        deserialize_with = "bool_or_strings"
    )]
    pub allow_reserved_names: Vec<String>,
    /// Level of an allow's audit line: `info` (default), `debug` or `off`.
    #[serde(rename = "auditallows")]
    pub audit_allows: Option<crate::audit::AuditAllows>,
}

/// The file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: String, message: String },
}

impl FileConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses config text; the error names the key and the problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
        if value.is_null() {
            return Ok(Self::default());
        }
        let config: Self =
            serde_path_to_error::deserialize(lowercase_keys(value)).map_err(|e| {
                let path = e.path().to_string();
                if path.is_empty() || path == "." {
                    e.inner().to_string()
                } else {
                    format!("{path}: {}", e.inner())
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        crate::mapping::entries_from_docs(
            "server",
            &self.server.map_roles,
            &self.server.map_users,
        )?;
        for mode in self.server.backend_mode.iter().flatten() {
            crate::config::BackendMode::parse(mode)
                .map_err(|e| format!("server.backendMode: {e}"))?;
        }
        crate::mapping::guard::AllowReserved::parse(&self.server.allow_reserved_names)
            .map_err(|e| format!("server.allowReservedNames: {e}"))?;
        for account in &self.server.allowed_accounts {
            if account.is_empty() || !account.chars().all(|c| c.is_ascii_digit()) {
                return Err(format!(
                    "server.allowedAccounts: {account:?} is not an account ID (digits)"
                ));
            }
        }
        if let Some(0) = self.server.cache_max_entries {
            return Err("server.cacheMaxEntries: must be at least 1".into());
        }
        Ok(())
    }
}

/// A mapping source named in `backendMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendMode {
    MountedFile,
    AckConfigMap,
    Crd,
}

impl BackendMode {
    /// Parses a mode name (case-insensitive; `ConfigMap` is accepted for `ACKConfigMap`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mountedfile" | "file" => Ok(Self::MountedFile),
            "ackconfigmap" | "configmap" => Ok(Self::AckConfigMap),
            "crd" => Ok(Self::Crd),
            _ => Err(format!(
                "unknown backend mode {s:?} (known: MountedFile, ACKConfigMap, CRD)"
            )),
        }
    }

    /// Parses a comma-separated list, keeping order and dropping repeats.
    pub fn parse_list<S: AsRef<str>>(items: &[S]) -> Result<Vec<Self>, String> {
        let mut out = Vec::new();
        for item in items
            .iter()
            .flat_map(|s| s.as_ref().split(','))
            .filter(|s| !s.trim().is_empty())
        {
            let mode = Self::parse(item)?;
            if !out.contains(&mode) {
                out.push(mode);
            }
        }
        if out.is_empty() {
            return Err("no backend mode given".into());
        }
        Ok(out)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MountedFile => "MountedFile",
            Self::AckConfigMap => "ACKConfigMap",
            Self::Crd => "CRD",
        }
    }
}

/// Accepts a YAML list of strings or numbers (account IDs are often written unquoted).
fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items: Vec<serde_yaml::Value> = Vec::deserialize(d)?;
    items
        .into_iter()
        .map(|v| match v {
            serde_yaml::Value::String(s) => Ok(s),
            serde_yaml::Value::Number(n) => Ok(n.to_string()),
            other => Err(serde::de::Error::custom(format!(
                "expected a string, found {other:?}"
            ))),
        })
        .collect()
}

/// Accepts `true`/`false`, one string (`MountedFile,CRD`) or a list of strings.
fn bool_or_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Flag(bool),
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Form>::deserialize(d)? {
        None | Some(Form::Flag(false)) => Vec::new(),
        Some(Form::Flag(true)) => vec!["true".into()],
        Some(Form::One(s)) => vec![s],
        Some(Form::Many(v)) => v,
    })
}

/// Accepts `backendMode: CRD`, `backendMode: MountedFile,CRD` or a list.
fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => None,
        Some(OneOrMany::One(s)) => Some(s.split(',').map(|s| s.trim().to_string()).collect()),
        Some(OneOrMany::Many(v)) => Some(v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ack_style_config_in_any_casing() {
        let c = FileConfig::parse(
            r#"
clusterID: c1
server:
  port: 21362
  stateDir: /var/x
  backendMode: [MountedFile, CRD]
  mapRoles:
    - roleARN: acs:ram::1:role/a
      username: a
      groups: [g]
    - rolearn: acs:ram::1:role/b
      username: b
  mapUsers:
    - UserArn: acs:ram::1:user/c
      username: c
  mapAccounts: [1234567890123456, "22"]
"#,
        )
        .expect("config");
        assert_eq!(c.cluster_id.as_deref(), Some("c1"));
        assert_eq!(c.server.map_roles.len(), 2);
        assert_eq!(c.server.map_users[0].user_arn, "acs:ram::1:user/c");
        assert_eq!(c.server.map_accounts, vec!["1234567890123456", "22"]);
        assert_eq!(
            c.server.backend_mode,
            Some(vec!["MountedFile".to_string(), "CRD".to_string()])
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = FileConfig::parse("server:\n  mapRolez: []\n").expect_err("unknown key");
        assert!(e.contains("maprolez"), "{e}");
        let e = FileConfig::parse(
            "server:\n  mapRoles:\n    - rolearn: acs:ram::1:role/a\n      username: '{{Bad}}'\n",
        )
        .expect_err("bad template");
        assert!(e.contains("server.mapRoles[0]") && e.contains("Bad"), "{e}");
        let e = FileConfig::parse("server:\n  backendMode: Nope\n").expect_err("bad mode");
        assert!(e.contains("backendMode"), "{e}");
        let e = FileConfig::parse("server:\n  port: many\n").expect_err("bad port");
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn backend_mode_lists() {
        assert_eq!(
            BackendMode::parse_list(&["MountedFile,crd", "CRD"]).expect("modes"),
            vec![BackendMode::MountedFile, BackendMode::Crd]
        );
        assert!(BackendMode::parse_list::<&str>(&[]).is_err());
    }
}

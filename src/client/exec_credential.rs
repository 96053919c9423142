//! Minting the token and wrapping it in the `ExecCredential` kubectl reads.

use chrono::{DateTime, TimeDelta, Timelike as _, Utc};
use serde::{Deserialize, Serialize};

use super::credentials::Credentials;
use crate::token::{v1, v2};
use crate::types::format_utc;

/// `ExecCredential` of `client.authentication.k8s.io/v1beta1` (the default).
pub const V1BETA1: &str = "client.authentication.k8s.io/v1beta1";
/// `ExecCredential` of `client.authentication.k8s.io/v1`.
pub const V1: &str = "client.authentication.k8s.io/v1";
/// How long after signing the credential is reported to expire (as `ack-ram-tool` does; STS
/// accepts the signature for 15 minutes).
pub const TOKEN_LIFETIME: TimeDelta = TimeDelta::minutes(10);
/// The user agent written into tokens.
pub const USER_AGENT: &str = concat!("ram-authenticator/", env!("CARGO_PKG_VERSION"));

/// `--api-version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiVersionArg {
    V1,
    V1beta1,
}

impl ApiVersionArg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => V1,
            Self::V1beta1 => V1BETA1,
        }
    }
}

/// `--format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenFormatArg {
    /// Legacy `k8s-ack-v1.` (a pre-signed HMAC-SHA1 URL; single use at STS).
    V1,
    /// `k8s-ack-v2.` (ACS3-HMAC-SHA256), what `ack-ram-tool` emits.
    #[default]
    V2,
}

impl TokenFormatArg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// kubectl asked for an ExecCredential version this plugin does not speak.
#[derive(Debug, thiserror::Error)]
#[error(
    "kubectl asked (KUBERNETES_EXEC_INFO) for ExecCredential apiVersion {0:?}; this plugin \
     answers {V1BETA1} and {V1}: set one of them as the exec apiVersion in the kubeconfig"
)]
pub struct UnsupportedApiVersion(pub String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecInfo {
    #[serde(default)]
    api_version: String,
}

/// The apiVersion to answer in: `--api-version` wins, else the one in `KUBERNETES_EXEC_INFO`,
/// else v1beta1. Unreadable exec info is ignored (logged at debug).
pub fn choose_api_version(
    flag: Option<ApiVersionArg>,
    exec_info: Option<&str>,
) -> Result<&'static str, UnsupportedApiVersion> {
    if let Some(flag) = flag {
        return Ok(flag.as_str());
    }
    let Some(info) = exec_info.filter(|i| !i.trim().is_empty()) else {
        return Ok(V1BETA1);
    };
    match serde_json::from_str::<ExecInfo>(info) {
        Ok(info) => match info.api_version.as_str() {
            V1 => Ok(V1),
            V1BETA1 | "" => Ok(V1BETA1),
            other => Err(UnsupportedApiVersion(other.chars().take(100).collect())),
        },
        Err(e) => {
            tracing::debug!(error = %e, "KUBERNETES_EXEC_INFO is not JSON; answering in v1beta1");
            Ok(V1BETA1)
        }
    }
}

/// The ExecCredential kubectl reads, field order as kubectl's own plugins write it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExecCredential {
    pub kind: String,
    pub api_version: String,
    pub spec: ExecSpec,
    pub status: ExecStatus,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecSpec {
    pub interactive: bool,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExecStatus {
    pub expiration_timestamp: String,
    pub token: String,
}

impl ExecCredential {
    pub fn new(api_version: &str, token: String, expiration: DateTime<Utc>) -> Self {
        Self {
            kind: "ExecCredential".into(),
            api_version: api_version.into(),
            spec: ExecSpec { interactive: false },
            status: ExecStatus {
                expiration_timestamp: format_utc(expiration),
                token,
            },
        }
    }
}

/// Everything that goes into a token.
pub struct MintInput<'a> {
    pub credentials: &'a Credentials,
    pub cluster_id: &'a str,
    pub format: TokenFormatArg,
    /// The signing time (cut to whole seconds).
    pub now: DateTime<Utc>,
    pub user_agent: &'a str,
    /// v1 only: the host written into the URL.
    pub sts_host: &'a str,
    /// v1 only: the `SignatureNonce`.
    pub nonce: &'a str,
    /// v2 only: extra signed query parameters.
    pub extra_query: &'a [(String, String)],
}

/// A token and when kubectl should consider it expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    pub token: String,
    pub expiration: DateTime<Utc>,
}

/// Signs a GetCallerIdentity request and packs it as a token.
pub fn mint(input: &MintInput<'_>) -> Minted {
    let signed_at = input.now.with_nanosecond(0).unwrap_or(input.now);
    let date = format_utc(signed_at);
    let c = input.credentials;
    let security_token = c.security_token.as_ref().map(|t| t.expose());
    let token = match input.format {
        TokenFormatArg::V2 => v2::mint(&v2::MintV2 {
            access_key_id: &c.access_key_id.0,
            access_key_secret: c.access_key_secret.expose(),
            security_token,
            cluster_id: input.cluster_id,
            date: &date,
            extra_query: input.extra_query,
            user_agent: input.user_agent,
        }),
        TokenFormatArg::V1 => v1::mint(&v1::MintV1 {
            access_key_id: &c.access_key_id.0,
            access_key_secret: c.access_key_secret.expose(),
            security_token,
            cluster_id: input.cluster_id,
            timestamp: &date,
            nonce: input.nonce,
            host: input.sts_host,
        }),
    };
    Minted {
        token,
        expiration: signed_at + TOKEN_LIFETIME,
    }
}

/// A random UUID-shaped nonce (version 4 layout).
pub fn random_nonce() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        (b[8] & 0x3) | 0x8,
        &h[17..20],
        &h[20..32]
    )
}

/// The host part of an endpoint URL (`https://host:port/path` → `host:port`).
pub fn endpoint_host(endpoint: &str) -> &str {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or(endpoint);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use base64::Engine as _;

    use super::*;
    use crate::types::{parse_utc, AccessKeyId, Secret};

    #[test]
    fn api_version_choice() {
        assert_eq!(choose_api_version(None, None).expect("default"), V1BETA1);
        assert_eq!(choose_api_version(None, Some("")).expect("empty"), V1BETA1);
        let info_v1 = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#;
        let info_b1 = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{}}"#;
        assert_eq!(choose_api_version(None, Some(info_v1)).expect("v1"), V1);
        assert_eq!(
            choose_api_version(None, Some(info_b1)).expect("b1"),
            V1BETA1
        );
        // The flag wins over kubectl's exec info.
        assert_eq!(
            choose_api_version(Some(ApiVersionArg::V1beta1), Some(info_v1)).expect("flag"),
            V1BETA1
        );
        assert_eq!(
            choose_api_version(Some(ApiVersionArg::V1), None).expect("flag"),
            V1
        );
        // Unreadable exec info falls back; an unknown version is refused with advice.
        assert_eq!(
            choose_api_version(None, Some("{not json")).expect("junk"),
            V1BETA1
        );
        let e = choose_api_version(
            None,
            Some(r#"{"apiVersion":"client.authentication.k8s.io/v1alpha1"}"#),
        )
        .expect_err("alpha")
        .to_string();
        assert!(
            e.contains("v1alpha1") && e.contains("set one of them"),
            "{e}"
        );
        assert!(choose_api_version(Some(ApiVersionArg::V1), Some(r#"{"apiVersion":"x"}"#)).is_ok());
    }

    #[derive(serde::Deserialize)]
    struct VectorFile {
        vectors: Vec<Vector>,
    }
    #[derive(serde::Deserialize)]
    struct Vector {
        id: String,
        inputs: Inputs,
        exec_credential: serde_json::Value,
        decoded: serde_json::Value,
    }
    #[derive(serde::Deserialize)]
    struct Inputs {
        access_key_id: String,
        access_key_secret: String,
        security_token: Option<String>,
        cluster_id: String,
        x_acs_date: String,
        exec_credential_api_version: String,
    }

    fn decode(token: &str) -> serde_json::Value {
        let payload = token.strip_prefix("k8s-ack-v2.").expect("prefix");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(payload)
            .expect("base64");
        serde_json::from_slice(&bytes).expect("json")
    }

    /// With the vectors' inputs and the clock pinned, the ExecCredential matches the one
    /// ack-ram-tool wrote: byte for byte with its user agent, and with ours apart from it.
    #[test]
    fn reproduces_the_v2_vectors() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/acs3-v2-tokens.json"
        ))
        .expect("vectors");
        let file: VectorFile = serde_json::from_str(&text).expect("parse");
        assert_eq!(file.vectors.len(), 2);
        for v in file.vectors {
            let creds = Credentials {
                access_key_id: AccessKeyId(v.inputs.access_key_id.clone()),
                access_key_secret: Secret::new(&v.inputs.access_key_secret),
                security_token: v.inputs.security_token.as_deref().map(Secret::new),
            };
            let extra: Vec<(String, String)> = v.decoded["query"]
                .as_object()
                .expect("query")
                .iter()
                .filter(|(k, _)| k.as_str() != "ACKClusterId")
                .map(|(k, val)| (k.clone(), val.as_str().expect("str").to_string()))
                .collect();
            let now = parse_utc(&v.inputs.x_acs_date).expect("date")
                + chrono::TimeDelta::milliseconds(730);
            let exec_info = format!(
                r#"{{"kind":"ExecCredential","apiVersion":"{}","spec":{{"interactive":false}}}}"#,
                v.inputs.exec_credential_api_version
            );
            let api_version = choose_api_version(None, Some(&exec_info)).expect("version");
            let vector_ua = v.decoded["headers"]["user-agent"]
                .as_str()
                .expect("ua")
                .to_string();

            // Their user agent: the whole ExecCredential is equal.
            let minted = mint(&MintInput {
                credentials: &creds,
                cluster_id: &v.inputs.cluster_id,
                format: TokenFormatArg::V2,
                now,
                user_agent: &vector_ua,
                sts_host: "",
                nonce: "",
                extra_query: &extra,
            });
            let ours = serde_json::to_value(ExecCredential::new(
                api_version,
                minted.token.clone(),
                minted.expiration,
            ))
            .expect("json");
            assert_eq!(ours, v.exec_credential, "vector {}", v.id);

            // Our user agent: equal apart from it.
            let minted = mint(&MintInput {
                credentials: &creds,
                cluster_id: &v.inputs.cluster_id,
                format: TokenFormatArg::V2,
                now,
                user_agent: USER_AGENT,
                sts_host: "",
                nonce: "",
                extra_query: &extra,
            });
            let mut got = decode(&minted.token);
            assert_eq!(got["headers"]["user-agent"], USER_AGENT);
            let mut want = v.decoded.clone();
            for j in [&mut got, &mut want] {
                j["headers"]
                    .as_object_mut()
                    .expect("headers")
                    .remove("user-agent");
            }
            assert_eq!(got, want, "vector {}", v.id);
            assert_eq!(
                format_utc(minted.expiration),
                v.exec_credential["status"]["expirationTimestamp"]
                    .as_str()
                    .expect("exp")
            );
        }
    }

    #[test]
    fn v1_tokens_parse_back() {
        let creds = Credentials {
            access_key_id: AccessKeyId("AK".into()),
            access_key_secret: Secret::new("secret"),
            security_token: Some(Secret::new("st")),
        };
        let now = parse_utc("2026-11-23T09:35:42Z").expect("date");
        let nonce = random_nonce();
        let minted = mint(&MintInput {
            credentials: &creds,
            cluster_id: "c1",
            format: TokenFormatArg::V1,
            now,
            user_agent: USER_AGENT,
            sts_host: "sts.cn-hangzhou.aliyuncs.com",
            nonce: &nonce,
            extra_query: &[],
        });
        let req = crate::token::parse_and_check(&minted.token, "c1", now).expect("parse");
        assert_eq!(req.format, crate::token::TokenFormat::V1);
        assert!(req.has_security_token);
        assert_eq!(req.access_key_id.0, "AK");
        let crate::token::Wire::V1 { params } = &req.wire else {
            panic!("v1 wire");
        };
        assert!(crate::signing::rpc::verify("GET", params, "secret"));
        assert!(params
            .iter()
            .any(|(k, v)| k == "SignatureNonce" && *v == nonce));
        assert_eq!(format_utc(minted.expiration), "2026-11-23T09:45:42Z");
    }

    #[test]
    fn nonces_are_uuid_shaped_and_unique() {
        let a = random_nonce();
        let b = random_nonce();
        assert_ne!(a, b);
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, vec![8, 4, 4, 4, 12]);
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn hosts_of_endpoints() {
        assert_eq!(
            endpoint_host("https://sts.aliyuncs.com"),
            "sts.aliyuncs.com"
        );
        assert_eq!(endpoint_host("http://127.0.0.1:8080/x"), "127.0.0.1:8080");
        assert_eq!(endpoint_host("sts.example"), "sts.example");
    }
}

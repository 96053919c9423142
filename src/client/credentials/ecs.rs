//! The ECS instance RAM role, from the instance metadata service.
//!
//! Hardened mode first: `PUT /latest/api/token` with `X-aliyun-ecs-metadata-token-ttl-seconds`
//! gives a token sent back as `X-aliyun-ecs-metadata-token`. When that fails (an older service),
//! plain mode, unless `ALIBABA_CLOUD_IMDSV1_DISABLED=true`. The role name comes from
//! `ALIBABA_CLOUD_ECS_METADATA` (or the profile's `ram_role_name`), else from
//! `GET /latest/meta-data/ram/security-credentials/`. Every request has short timeouts, so a
//! machine that is not an ECS instance finds out within about two seconds.

use std::time::Duration;

use super::{
    describe, env_true, env_var, http_client, parse_code_credentials, read_capped, Context,
    CredentialError, Env, Found, Lookup, Provider, Source,
};
use crate::client::assume_role::TempCredentials;

/// The metadata service of every ECS instance.
pub const DEFAULT_ENDPOINT: &str = "http://100.100.100.200";
/// Overrides the metadata service's base URL (tests, proxies).
pub const ENDPOINT_ENV: &str = "RAM_AUTHENTICATOR_METADATA_ENDPOINT";
/// Names the instance's role (skips discovery) and asks for this source.
pub const ROLE_ENV: &str = "ALIBABA_CLOUD_ECS_METADATA";
/// `true` turns this source off.
pub const DISABLED_ENV: &str = "ALIBABA_CLOUD_ECS_METADATA_DISABLED";
/// `true` forbids plain (token-less) mode.
pub const IMDSV1_DISABLED_ENV: &str = "ALIBABA_CLOUD_IMDSV1_DISABLED";
/// The lifetime asked for a hardened-mode token (the SDKs' default).
const TOKEN_TTL_SECONDS: &str = "21600";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const CREDENTIALS_PATH: &str = "/latest/meta-data/ram/security-credentials/";

/// The instance's role; `None` means discover it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcsRole {
    pub role_name: Option<String>,
}

/// The metadata service, when nothing earlier in the chain had credentials.
pub struct EcsMetadata;

impl Source for EcsMetadata {
    fn locate(&self, ctx: &Context<'_>) -> Result<Lookup, CredentialError> {
        if env_true(ctx.env, DISABLED_ENV) {
            return Ok(Lookup::NotHere(format!(
                "ECS instance RAM role ({DISABLED_ENV}=true)"
            )));
        }
        let role_name = env_var(ctx.env, ROLE_ENV).map(|r| r.trim().to_string());
        Ok(Lookup::Found(Box::new(Found {
            // Without a role name nothing asked for ECS: a failure means "not on ECS".
            probe: role_name.is_none(),
            source: match &role_name {
                Some(r) => format!("ECS instance RAM role {r} ({ROLE_ENV})"),
                None => "ECS instance RAM role".into(),
            },
            provider: Provider::Ecs(EcsRole { role_name }),
            role: None,
            profile: None,
        })))
    }
}

/// The metadata base URL: `--metadata-endpoint`, else [`ENDPOINT_ENV`], else the ECS one.
pub fn endpoint(flag: Option<&str>, env: &Env) -> String {
    flag.map(str::trim)
        .filter(|f| !f.is_empty())
        .or_else(|| env_var(env, ENDPOINT_ENV))
        .unwrap_or(DEFAULT_ENDPOINT)
        .trim_end_matches('/')
        .to_string()
}

impl EcsRole {
    /// What identifies the credentials in the cache.
    pub fn cache_id(&self, base: &str) -> String {
        format!("{base}\n{}", self.role_name.as_deref().unwrap_or(""))
    }

    /// Asks the metadata service at `base` for the role's credentials.
    pub async fn fetch(&self, env: &Env, base: &str) -> Result<TempCredentials, CredentialError> {
        let failed = |detail: String| CredentialError::Failed {
            what: format!("ECS metadata service {base}"),
            detail,
        };
        let http = http_client(CONNECT_TIMEOUT, REQUEST_TIMEOUT).map_err(failed)?;
        let token = match hardened_token(&http, base).await {
            Ok(t) => Some(t),
            Err(e) if e.timed_out => {
                return Err(failed(format!("no answer within {REQUEST_TIMEOUT:?}")))
            }
            Err(e) if env_true(env, IMDSV1_DISABLED_ENV) => {
                return Err(failed(format!(
                    "hardened mode failed ({}) and {IMDSV1_DISABLED_ENV}=true forbids plain mode",
                    e.detail
                )))
            }
            Err(e) => {
                tracing::debug!(error = %e.detail, "metadata token refused; using plain mode");
                None
            }
        };
        let get = |path: String| {
            let mut req = http.get(format!("{base}{path}"));
            if let Some(t) = &token {
                req = req.header("X-aliyun-ecs-metadata-token", t.as_str());
            }
            async move {
                let resp = req.send().await.map_err(|e| describe(&e))?;
                let status = resp.status();
                let body = read_capped(resp).await?;
                if !status.is_success() {
                    return Err(format!("{path} answered HTTP {}", status.as_u16()));
                }
                Ok(body)
            }
        };
        let role = match &self.role_name {
            Some(r) => r.clone(),
            None => {
                let list = get(CREDENTIALS_PATH.to_string()).await.map_err(failed)?;
                let text = String::from_utf8_lossy(&list);
                text.lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| failed("the instance has no RAM role attached".into()))?
            }
        };
        if role.is_empty()
            || !role
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(failed(format!(
                "{:?} is not a RAM role name",
                role.chars().take(64).collect::<String>()
            )));
        }
        let body = get(format!("{CREDENTIALS_PATH}{role}"))
            .await
            .map_err(failed)?;
        parse_code_credentials(&body)
            .map_err(|e| failed(format!("credentials of role {role}: {e}")))
    }
}

struct TokenError {
    timed_out: bool,
    detail: String,
}

async fn hardened_token(http: &reqwest::Client, base: &str) -> Result<String, TokenError> {
    let resp = http
        .put(format!("{base}/latest/api/token"))
        .header("X-aliyun-ecs-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)
        .send()
        .await
        .map_err(|e| TokenError {
            timed_out: e.is_timeout(),
            detail: describe(&e),
        })?;
    let status = resp.status();
    let body = read_capped(resp).await.map_err(|detail| TokenError {
        timed_out: false,
        detail,
    })?;
    if !status.is_success() {
        return Err(TokenError {
            timed_out: false,
            detail: format!("HTTP {}", status.as_u16()),
        });
    }
    let token = String::from_utf8_lossy(&body).trim().to_string();
    if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(TokenError {
            timed_out: false,
            detail: "an unusable token".into(),
        });
    }
    Ok(token)
}

//! The OIDC role (RRSA): a Kubernetes service-account token (or any OIDC token) in a file,
//! traded with STS `AssumeRoleWithOIDC` for a role's temporary credentials.
//!
//! Configured by `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`, `ALIBABA_CLOUD_OIDC_TOKEN_FILE` and
//! `ALIBABA_CLOUD_ROLE_ARN` (all three), with `ALIBABA_CLOUD_ROLE_SESSION_NAME` optional; or by an
//! aliyun CLI profile of mode `OIDC`. The call is not signed with an AccessKey: the OIDC token is
//! the proof. The token is read from its file on every call (the kubelet rotates it) and is never
//! cached; the credentials it buys are.

use std::io::Read as _;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::{env_var, Context, CredentialError, Env, Found, Lookup, Provider, Source};
use crate::client::assume_role::{self, AssumeRoleError, TempCredentials};
use crate::sts::{StsClient, StsError};
use crate::types::format_utc;

pub const PROVIDER_ARN_ENV: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
pub const TOKEN_FILE_ENV: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";
/// The largest OIDC token file read.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// A role to assume with an OIDC token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcRole {
    pub provider_arn: String,
    pub token_file: PathBuf,
    pub role_arn: String,
    /// Default: `ram-authenticator-<$USER>`.
    pub session_name: Option<String>,
    pub duration_seconds: u32,
}

/// The OIDC role from the environment.
pub struct OidcEnv;

impl Source for OidcEnv {
    fn locate(&self, ctx: &Context<'_>) -> Result<Lookup, CredentialError> {
        let vars = [PROVIDER_ARN_ENV, TOKEN_FILE_ENV, assume_role::ROLE_ARN_ENV];
        let values: Vec<Option<&str>> = vars.iter().map(|v| env_var(ctx.env, v)).collect();
        // ALIBABA_CLOUD_ROLE_ARN alone is the role to assume with other keys, not OIDC.
        if values[0].is_none() && values[1].is_none() {
            return Ok(Lookup::NotHere(format!(
                "OIDC role ({PROVIDER_ARN_ENV} / {TOKEN_FILE_ENV}: not set)"
            )));
        }
        let (set, missing): (Vec<_>, Vec<_>) =
            vars.iter().zip(&values).partition(|(_, v)| v.is_some());
        if !missing.is_empty() {
            let names = |list: Vec<(&&str, &Option<&str>)>| {
                list.into_iter()
                    .map(|(n, _)| n.to_string())
                    .collect::<Vec<_>>()
                    .join(" and ")
            };
            return Err(CredentialError::VariablesIncomplete {
                what: "OIDC role",
                set: names(set),
                missing: names(missing),
            });
        }
        let [Some(provider_arn), Some(token_file), Some(role_arn)] = values[..] else {
            return Err(CredentialError::Failed {
                what: "OIDC role".into(),
                detail: "incomplete".into(),
            });
        };
        Ok(Lookup::Found(Box::new(Found {
            provider: Provider::Oidc(OidcRole {
                provider_arn: provider_arn.trim().to_string(),
                token_file: PathBuf::from(token_file),
                role_arn: role_arn.trim().to_string(),
                session_name: ctx.session_name.map(str::to_string),
                duration_seconds: ctx.duration_seconds,
            }),
            role: None,
            source: format!("OIDC role {} (token file {token_file})", role_arn.trim()),
            profile: None,
            probe: false,
        })))
    }
}

impl OidcRole {
    /// What identifies the credentials in the cache (never the token itself).
    pub fn cache_id(&self, endpoint: &str) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}\n{endpoint}",
            self.provider_arn,
            self.role_arn,
            self.session_name.as_deref().unwrap_or(""),
            self.duration_seconds,
            self.token_file.display()
        )
    }

    fn failed(&self, detail: String) -> CredentialError {
        CredentialError::Failed {
            what: format!("OIDC role {}", self.role_arn),
            detail,
        }
    }

    /// Reads the token file now (it rotates): at most 64 KiB, trimmed, not empty.
    fn read_token(&self) -> Result<String, CredentialError> {
        let path = self.token_file.display();
        let file = std::fs::File::open(&self.token_file)
            .map_err(|e| self.failed(format!("cannot read the OIDC token file {path}: {e}")))?;
        let mut text = String::new();
        file.take(MAX_TOKEN_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| self.failed(format!("cannot read the OIDC token file {path}: {e}")))?;
        if text.len() as u64 > MAX_TOKEN_BYTES {
            return Err(self.failed(format!(
                "the OIDC token file {path} is larger than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let token = text.trim();
        if token.is_empty() {
            return Err(self.failed(format!("the OIDC token file {path} is empty")));
        }
        Ok(token.to_string())
    }

    /// The request's parameters (RPC style, unsigned).
    pub fn params(&self, token: &str, session: &str, now: DateTime<Utc>) -> Vec<(String, String)> {
        vec![
            ("Action".into(), "AssumeRoleWithOIDC".into()),
            ("Version".into(), crate::token::STS_VERSION.into()),
            ("Format".into(), "JSON".into()),
            ("Timestamp".into(), format_utc(now)),
            ("RoleArn".into(), self.role_arn.clone()),
            ("OIDCProviderArn".into(), self.provider_arn.clone()),
            ("OIDCToken".into(), token.to_string()),
            ("RoleSessionName".into(), session.to_string()),
            ("DurationSeconds".into(), self.duration_seconds.to_string()),
        ]
    }

    /// Calls `AssumeRoleWithOIDC` with the token in the file now.
    pub async fn fetch(
        &self,
        client: &StsClient,
        env: &Env,
        now: DateTime<Utc>,
    ) -> Result<TempCredentials, CredentialError> {
        assume_role::validate_role_arn(&self.role_arn)?;
        let session = match &self.session_name {
            Some(s) => {
                assume_role::validate_session_name(s)?;
                s.clone()
            }
            None => assume_role::default_session_name(env),
        };
        if !assume_role::DURATION_RANGE.contains(&self.duration_seconds) {
            return Err(AssumeRoleError::InvalidDuration(self.duration_seconds).into());
        }
        let token = self.read_token()?;
        let params = self.params(&token, &session, now);
        let query = crate::signing::sorted_encoded_query(
            params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        tracing::debug!(role_arn = %self.role_arn, session, endpoint = client.endpoint(), "assuming role with OIDC");
        match client.call("POST", &query, &[]).await {
            Ok(body) => Ok(assume_role::parse_response(&body)?),
            Err(StsError::Rejected { code, .. }) => Err(AssumeRoleError::Refused {
                action: "AssumeRoleWithOIDC",
                role_arn: self.role_arn.clone(),
                hint: hint(&code),
                code,
            }
            .into()),
            Err(source) => Err(AssumeRoleError::Sts {
                action: "AssumeRoleWithOIDC",
                role_arn: self.role_arn.clone(),
                source,
            }
            .into()),
        }
    }
}

fn hint(code: &str) -> &'static str {
    match code {
        c if c.contains("Expired") => {
            " (the OIDC token has expired: the kubelet rotates projected tokens; check the \
             token file is the mounted one)"
        }
        c if c.contains("OIDCToken") || c.contains("Signature") => {
            " (STS does not accept the OIDC token: check its issuer, audience and the provider's \
             keys)"
        }
        c if c.contains("OIDCProvider") || c.contains("IdentityProvider") => {
            " (check ALIBABA_CLOUD_OIDC_PROVIDER_ARN)"
        }
        "EntityNotExist.Role" => " (no such role: check the role ARN)",
        c if c.starts_with("NoPermission") || c.contains("Condition") => {
            " (the role's trust policy does not admit this OIDC subject)"
        }
        _ => "",
    }
}

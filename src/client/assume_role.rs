//! STS `AssumeRole` (RPC style, signature 1.0): trades the base credentials for a role's
//! temporary credentials, which then sign the token.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::credentials::{env_var, Credentials, Env, ProfileRole};
use crate::arn::{Arn, Resource};
use crate::signing::rpc;
use crate::sts::{StsClient, StsError};
use crate::types::{format_utc, parse_utc, AccessKeyId, Secret};

/// Default lifetime asked for the temporary credentials.
pub const DEFAULT_DURATION_SECONDS: u32 = 3600;
/// The range STS accepts for `DurationSeconds`.
pub const DURATION_RANGE: std::ops::RangeInclusive<u32> = 900..=43200;
/// Environment variable naming the role to assume (as in Alibaba's SDKs).
pub const ROLE_ARN_ENV: &str = "ALIBABA_CLOUD_ROLE_ARN";
/// Environment variable naming the role session (as in Alibaba's SDKs).
pub const SESSION_NAME_ENV: &str = "ALIBABA_CLOUD_ROLE_SESSION_NAME";

/// A role to assume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleRequest {
    pub role_arn: String,
    pub session_name: String,
    pub duration_seconds: u32,
}

/// Temporary credentials STS issued for a role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TempCredentials {
    pub credentials: Credentials,
    pub expiration: DateTime<Utc>,
    /// `acs:ram::<acct>:assumed-role/<role>/<session>`.
    pub assumed_role_arn: String,
}

/// Why a role could not be assumed.
#[derive(Debug, thiserror::Error)]
pub enum AssumeRoleError {
    #[error(
        "role ARN {arn:?} is not valid: {reason} (want acs:ram::<account-id>:role/<role-name>)"
    )]
    InvalidRoleArn { arn: String, reason: String },
    #[error(
        "role session name {0:?} is not valid: use 2 to 64 characters among A-Z a-z 0-9 . _ @ -"
    )]
    InvalidSessionName(String),
    #[error("--duration-seconds {0} is out of range: STS accepts 900 to 43200")]
    InvalidDuration(u32),
    #[error("STS refused {action} of {role_arn}: {code}{hint}")]
    Refused {
        action: &'static str,
        role_arn: String,
        code: String,
        hint: &'static str,
    },
    #[error("{action} of {role_arn} failed: {source}")]
    Sts {
        action: &'static str,
        role_arn: String,
        #[source]
        source: StsError,
    },
    #[error("STS answered with an unreadable response: {0}")]
    BadResponse(String),
}

/// Chooses the role to assume: `--role-arn` (or `ALIBABA_CLOUD_ROLE_ARN`, read by the caller),
/// else the profile's role. The session name: `--session-name` (or
/// `ALIBABA_CLOUD_ROLE_SESSION_NAME`), else the profile's, else derived from `$USER`.
pub fn choose_role(
    role_arn: Option<&str>,
    session_name: Option<&str>,
    duration_seconds: u32,
    env: &Env,
    profile_role: Option<&ProfileRole>,
) -> Result<Option<RoleRequest>, AssumeRoleError> {
    let flag = role_arn.map(str::trim).filter(|r| !r.is_empty());
    let (arn, profile_session) = match (flag, profile_role) {
        (Some(arn), _) => (arn.to_string(), None),
        (None, Some(p)) => (p.role_arn.clone(), p.session_name.clone()),
        (None, None) => return Ok(None),
    };
    validate_role_arn(&arn)?;
    let session_name = match session_name
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or(profile_session)
    {
        Some(s) => {
            validate_session_name(&s)?;
            s
        }
        None => default_session_name(env),
    };
    if !DURATION_RANGE.contains(&duration_seconds) {
        return Err(AssumeRoleError::InvalidDuration(duration_seconds));
    }
    Ok(Some(RoleRequest {
        role_arn: arn,
        session_name,
        duration_seconds,
    }))
}

/// Checks that `arn` names a RAM role.
pub fn validate_role_arn(arn: &str) -> Result<(), AssumeRoleError> {
    let invalid = |reason: String| AssumeRoleError::InvalidRoleArn {
        arn: arn.chars().take(200).collect(),
        reason,
    };
    match Arn::parse(arn) {
        Ok(parsed) => match parsed.resource {
            Resource::Role(_) => Ok(()),
            _ => Err(invalid("it does not name a role".into())),
        },
        Err(e) => Err(invalid(e.to_string())),
    }
}

fn session_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-')
}

/// Checks a session name given by the user or a profile.
pub fn validate_session_name(name: &str) -> Result<(), AssumeRoleError> {
    let len = name.chars().count();
    if (2..=64).contains(&len) && name.chars().all(session_char_ok) {
        Ok(())
    } else {
        Err(AssumeRoleError::InvalidSessionName(
            name.chars().take(80).collect(),
        ))
    }
}

/// Makes any text a valid session name: disallowed characters become `-`, cut to 64
/// characters, padded to 2.
pub fn sanitize_session_name(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .map(|c| if session_char_ok(c) { c } else { '-' })
        .take(64)
        .collect();
    while out.chars().count() < 2 {
        out.push('-');
    }
    out
}

/// `ram-authenticator-<$USER or "user">`, sanitized.
pub fn default_session_name(env: &Env) -> String {
    let user = env_var(env, "USER")
        .or_else(|| env_var(env, "USERNAME"))
        .unwrap_or("user");
    sanitize_session_name(&format!("ram-authenticator-{user}"))
}

/// The signed query of an `AssumeRole` call.
pub fn query(base: &Credentials, role: &RoleRequest, timestamp: &str, nonce: &str) -> String {
    let mut params: Vec<(String, String)> = vec![
        ("Action".into(), "AssumeRole".into()),
        ("Version".into(), crate::token::STS_VERSION.into()),
        ("Format".into(), "JSON".into()),
        ("RoleArn".into(), role.role_arn.clone()),
        ("RoleSessionName".into(), role.session_name.clone()),
        ("DurationSeconds".into(), role.duration_seconds.to_string()),
        ("AccessKeyId".into(), base.access_key_id.0.clone()),
        ("SignatureMethod".into(), rpc::SIGNATURE_METHOD.into()),
        ("SignatureVersion".into(), rpc::SIGNATURE_VERSION.into()),
        ("SignatureNonce".into(), nonce.into()),
        ("Timestamp".into(), timestamp.into()),
    ];
    if let Some(token) = &base.security_token {
        params.push(("SecurityToken".into(), token.expose().to_string()));
    }
    rpc::signed_query("GET", base.access_key_secret.expose(), &params)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Response {
    assumed_role_user: Option<AssumedRoleUser>,
    credentials: Option<ResponseCredentials>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumedRoleUser {
    #[serde(default)]
    arn: String,
}

/// Temporary credentials as STS, the ECS metadata service and credentials URIs write them.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ResponseCredentials {
    #[serde(default)]
    access_key_id: String,
    #[serde(default)]
    access_key_secret: Secret,
    #[serde(default)]
    security_token: Secret,
    #[serde(default)]
    expiration: String,
}

/// Reads STS's answer to `AssumeRole`.
pub fn parse_response(body: &[u8]) -> Result<TempCredentials, AssumeRoleError> {
    let bad = |m: &str| AssumeRoleError::BadResponse(m.to_string());
    let response: Response = serde_json::from_slice(body).map_err(|e| {
        AssumeRoleError::BadResponse(format!(
            "not JSON of the expected shape (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let c = response.credentials.ok_or_else(|| bad("no Credentials"))?;
    c.into_temp(
        response
            .assumed_role_user
            .map(|u| u.arn)
            .unwrap_or_default(),
    )
    .map_err(bad)
}

impl ResponseCredentials {
    /// The credentials, when complete and with a readable expiration.
    pub(crate) fn into_temp(
        self,
        assumed_role_arn: String,
    ) -> Result<TempCredentials, &'static str> {
        if self.access_key_id.trim().is_empty() || self.access_key_secret.is_empty() {
            return Err("Credentials without AccessKeyId or AccessKeySecret");
        }
        if self.security_token.is_empty() {
            return Err("Credentials without SecurityToken");
        }
        let expiration =
            parse_utc(&self.expiration).ok_or("Credentials.Expiration is not a date")?;
        Ok(TempCredentials {
            credentials: Credentials {
                access_key_id: AccessKeyId(self.access_key_id.trim().to_string()),
                access_key_secret: self.access_key_secret,
                security_token: Some(self.security_token),
            },
            expiration,
            assumed_role_arn,
        })
    }
}

fn hint(code: &str) -> &'static str {
    match code {
        c if c.starts_with("NoPermission") => {
            " (the base credentials may not assume this role: check the role's trust policy \
             and that the RAM user has the AliyunSTSAssumeRoleAccess policy)"
        }
        "EntityNotExist.Role" => " (no such role: check the role ARN)",
        "InvalidAccessKeyId.NotFound" => " (the base AccessKey ID is unknown)",
        "InvalidAccessKeyId.Inactive" => " (the base AccessKey is disabled)",
        "SignatureDoesNotMatch" => " (the base AccessKey secret is wrong)",
        c if c.starts_with("InvalidSecurityToken") => {
            " (the base credentials' security token is expired or invalid)"
        }
        "InvalidTimeStamp.Expired" => " (this machine's clock is off by more than 15 minutes)",
        _ => "",
    }
}

/// Calls `AssumeRole` through `client` (its timeouts and retries) with the base credentials.
pub async fn assume_role(
    client: &StsClient,
    base: &Credentials,
    role: &RoleRequest,
    now: DateTime<Utc>,
    nonce: &str,
) -> Result<TempCredentials, AssumeRoleError> {
    let q = query(base, role, &format_utc(now), nonce);
    match client.call("GET", &q, &[]).await {
        Ok(body) => parse_response(&body),
        Err(StsError::Rejected { code, .. }) => Err(AssumeRoleError::Refused {
            action: "AssumeRole",
            role_arn: role.role_arn.clone(),
            hint: hint(&code),
            code,
        }),
        Err(source) => Err(AssumeRoleError::Sts {
            action: "AssumeRole",
            role_arn: role.role_arn.clone(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;
    use crate::token::v1::parse_query;

    use crate::client::credentials::tests::env;

    #[test]
    fn session_names_are_sanitized() {
        assert_eq!(
            default_session_name(&env(&[("USER", "alice")])),
            "ram-authenticator-alice"
        );
        assert_eq!(
            default_session_name(&env(&[("USER", "Jöhn Doe/x")])),
            "ram-authenticator-J-hn-Doe-x"
        );
        assert_eq!(default_session_name(&env(&[])), "ram-authenticator-user");
        assert_eq!(
            default_session_name(&env(&[("USERNAME", "bob@corp")])),
            "ram-authenticator-bob@corp"
        );
        let long = default_session_name(&env(&[("USER", &"x".repeat(100))]));
        assert_eq!(long.len(), 64);
        assert_eq!(sanitize_session_name(""), "--");
        assert_eq!(sanitize_session_name("a"), "a-");
        assert!(validate_session_name("ok.name_1@x-y").is_ok());
        assert!(validate_session_name("a").is_err());
        assert!(validate_session_name("has space").is_err());
        assert!(validate_session_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn role_choice_and_validation() {
        let e = env(&[("USER", "alice")]);
        let profile = ProfileRole {
            role_arn: "acs:ram::1:role/from-profile".into(),
            session_name: Some("prof-session".into()),
        };
        assert_eq!(choose_role(None, None, 3600, &e, None).expect("none"), None);
        let r = choose_role(Some("acs:ram::1:role/flag"), None, 3600, &e, Some(&profile))
            .expect("flag")
            .expect("some");
        assert_eq!(r.role_arn, "acs:ram::1:role/flag");
        assert_eq!(r.session_name, "ram-authenticator-alice");
        let r = choose_role(None, None, 900, &e, Some(&profile))
            .expect("profile")
            .expect("some");
        assert_eq!(r.role_arn, "acs:ram::1:role/from-profile");
        assert_eq!(r.session_name, "prof-session");
        assert_eq!(r.duration_seconds, 900);
        let r = choose_role(None, Some("mine"), 3600, &e, Some(&profile))
            .expect("session flag")
            .expect("some");
        assert_eq!(r.session_name, "mine");

        let err = |arn: &str| {
            choose_role(Some(arn), None, 3600, &e, None)
                .expect_err("bad")
                .to_string()
        };
        assert!(err("arn:aws:iam::1:role/x").contains("does not start with acs:ram::"));
        assert!(err("acs:ram::1:user/alice").contains("does not name a role"));
        assert!(
            choose_role(Some("acs:ram::1:role/r"), Some("bad name"), 3600, &e, None)
                .expect_err("session")
                .to_string()
                .contains("2 to 64 characters")
        );
        assert!(matches!(
            choose_role(Some("acs:ram::1:role/r"), None, 60, &e, None),
            Err(AssumeRoleError::InvalidDuration(60))
        ));
    }

    #[test]
    fn query_is_signed_rpc() {
        let base = Credentials {
            access_key_id: AccessKeyId("AK".into()),
            access_key_secret: Secret::new("secret"),
            security_token: Some(Secret::new("tok+/=")),
        };
        let role = RoleRequest {
            role_arn: "acs:ram::1:role/r".into(),
            session_name: "s".into(),
            duration_seconds: 3600,
        };
        let q = query(&base, &role, "2026-01-01T00:00:00Z", "nonce-1");
        let params = parse_query(&q).expect("query");
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .expect(k)
        };
        assert_eq!(get("Action"), "AssumeRole");
        assert_eq!(get("Version"), "2015-04-01");
        assert_eq!(get("Format"), "JSON");
        assert_eq!(get("RoleArn"), "acs:ram::1:role/r");
        assert_eq!(get("RoleSessionName"), "s");
        assert_eq!(get("DurationSeconds"), "3600");
        assert_eq!(get("SecurityToken"), "tok+/=");
        assert_eq!(get("Timestamp"), "2026-01-01T00:00:00Z");
        assert!(rpc::verify("GET", &params, "secret"));
        assert!(!rpc::verify("GET", &params, "other"));
    }

    #[test]
    fn reads_the_response() {
        let t = parse_response(
            br#"{"RequestId":"r","AssumedRoleUser":{"Arn":"acs:ram::1:assumed-role/r/s","AssumedRoleId":"3:s"},
                "Credentials":{"AccessKeyId":"STS.x","AccessKeySecret":"sec","SecurityToken":"tok","Expiration":"2026-01-01T01:00:00Z"}}"#,
        )
        .expect("response");
        assert_eq!(t.credentials.access_key_id.0, "STS.x");
        assert_eq!(t.assumed_role_arn, "acs:ram::1:assumed-role/r/s");
        assert_eq!(format_utc(t.expiration), "2026-01-01T01:00:00Z");
        for bad in [
            &b"nope"[..],
            br#"{"RequestId":"r"}"#,
            br#"{"Credentials":{"AccessKeyId":"a","AccessKeySecret":"b","Expiration":"2026-01-01T01:00:00Z"}}"#,
            br#"{"Credentials":{"AccessKeyId":"a","AccessKeySecret":"b","SecurityToken":"t","Expiration":"soon"}}"#,
        ] {
            assert!(matches!(
                parse_response(bad),
                Err(AssumeRoleError::BadResponse(_))
            ));
        }
    }

    #[test]
    fn refusals_show_code_and_hint_only() {
        let e = AssumeRoleError::Refused {
            action: "AssumeRole",
            role_arn: "acs:ram::1:role/r".into(),
            code: "NoPermission".into(),
            hint: hint("NoPermission"),
        };
        let s = e.to_string();
        assert!(s.starts_with("STS refused AssumeRole of acs:ram::1:role/r: NoPermission (the base credentials may not"), "{s}");
        assert_eq!(hint("Something.Else"), "");
    }
}

//! `verify`: the webhook's checks on one token, from the command line. Local checks, one
//! `GetCallerIdentity` at STS, then (with a config file) the mapping to a Kubernetes user.
//! Never prints the token, its signature or its security token.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::mapping::{Chain, Identity, User};
use crate::sts::{CallerIdentity, StsClient, StsError};
use crate::token::{SignedRequest, TokenError};
use crate::types::format_utc;

/// Where a token failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Parsing and local checks (format, cluster, date).
    Local,
    /// STS did not confirm the signature.
    Sts,
    /// No mapping to a Kubernetes user.
    Mapping,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Sts => "sts",
            Self::Mapping => "mapping",
        }
    }
}

/// Why the token was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub stage: Stage,
    /// A fixed label: a [`TokenError::reason`], an STS code, or `not_mapped`.
    pub reason: String,
    pub message: String,
}

/// The identity STS confirmed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityOut {
    pub arn: String,
    pub account_id: String,
    pub identity_type: Option<String>,
    pub user_id: Option<String>,
    pub role_id: Option<String>,
    pub principal_id: Option<String>,
}

impl From<&CallerIdentity> for IdentityOut {
    fn from(ci: &CallerIdentity) -> Self {
        Self {
            arn: ci.arn.clone(),
            account_id: ci.account_id.clone(),
            identity_type: ci.identity_type.clone(),
            user_id: ci.user_id.clone(),
            role_id: ci.role_id.clone(),
            principal_id: ci.principal_id.clone(),
        }
    }
}

/// The Kubernetes user the identity maps to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserOut {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
    pub mapped_by: String,
}

impl From<User> for UserOut {
    fn from(u: User) -> Self {
        Self {
            username: u.username,
            uid: u.uid,
            groups: u.groups,
            extra: u.extra,
            mapped_by: u.mapped_by,
        }
    }
}

/// The outcome of `verify`, as printed with `-o json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub valid: bool,
    pub format: Option<&'static str>,
    pub access_key_id: Option<String>,
    pub signed_at: Option<String>,
    /// Latest time STS still accepts the signing date.
    pub valid_until: Option<String>,
    pub cluster_id: Option<String>,
    pub temporary_credentials: Option<bool>,
    pub identity: Option<IdentityOut>,
    pub user: Option<UserOut>,
    pub error: Option<Failure>,
}

impl Report {
    fn new() -> Self {
        Self {
            valid: false,
            format: None,
            access_key_id: None,
            signed_at: None,
            valid_until: None,
            cluster_id: None,
            temporary_credentials: None,
            identity: None,
            user: None,
            error: None,
        }
    }

    fn describe(&mut self, req: &SignedRequest) {
        self.format = Some(req.format.as_str());
        self.access_key_id = Some(req.access_key_id.0.clone());
        self.signed_at = Some(format_utc(req.signed_at));
        self.valid_until = Some(format_utc(req.valid_until()));
        self.cluster_id = Some(req.cluster_id.clone());
        self.temporary_credentials = Some(req.has_security_token);
    }

    fn fail(mut self, stage: Stage, reason: impl Into<String>, message: impl Into<String>) -> Self {
        self.error = Some(Failure {
            stage,
            reason: reason.into(),
            message: message.into(),
        });
        self
    }
}

fn local_failure(report: Report, e: &TokenError) -> Report {
    report.fail(Stage::Local, e.reason(), e.to_string())
}

fn sts_failure(report: Report, e: &StsError) -> Report {
    let reason = match e {
        StsError::Unavailable(_) | StsError::DeadlineExceeded(_) => "unavailable".to_string(),
        other => other.code().to_string(),
    };
    report.fail(Stage::Sts, reason, e.to_string())
}

/// Runs every check on `token` for `cluster_id` at `now`; maps with `chain` when given.
pub async fn check(
    token: &str,
    cluster_id: &str,
    now: DateTime<Utc>,
    sts: &StsClient,
    chain: Option<&Chain>,
) -> Report {
    let mut report = Report::new();
    let req = match crate::token::parse(token) {
        Ok(r) => r,
        Err(e) => return local_failure(report, &e),
    };
    report.describe(&req);
    if let Err(e) = crate::token::check(&req, cluster_id, now) {
        return local_failure(report, &e);
    }
    if let Err(e) = sts.check_sent_headers(&req) {
        return local_failure(report, &e);
    }
    let ci = match sts.get_caller_identity(&req).await {
        Ok(ci) => ci,
        Err(e) => return sts_failure(report, &e),
    };
    report.identity = Some(IdentityOut::from(&ci));
    if let Some(chain) = chain {
        let identity = match Identity::from_sts(&ci, &req.access_key_id.0) {
            Ok(i) => i,
            Err(e) => return report.fail(Stage::Mapping, "bad_arn", e.to_string()),
        };
        match chain.map(&identity) {
            Ok(user) => report.user = Some(user.into()),
            Err(e) => return report.fail(Stage::Mapping, "not_mapped", e.to_string()),
        }
    }
    report.valid = true;
    report
}

/// The human-readable form.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "{label:<15} {value}");
    };
    if let (Some(format), Some(akid)) = (report.format, &report.access_key_id) {
        line("token format:", format);
        line("AccessKey ID:", akid);
        if let Some(t) = report.temporary_credentials {
            line(
                "credentials:",
                if t {
                    "temporary (STS security token)"
                } else {
                    "long-term AccessKey"
                },
            );
        }
        if let (Some(at), Some(until)) = (&report.signed_at, &report.valid_until) {
            line(
                "signed at:",
                &format!("{at} (STS accepts it until {until})"),
            );
        }
        if let Some(c) = &report.cluster_id {
            line("cluster ID:", c);
        }
    }
    if let Some(id) = &report.identity {
        line("identity:", &id.arn);
        line("account:", &id.account_id);
        if let Some(t) = &id.identity_type {
            line("identity type:", t);
        }
        if let Some(p) = &id.principal_id {
            line("principal ID:", p);
        }
    }
    if let Some(u) = &report.user {
        line("username:", &u.username);
        line("uid:", &u.uid);
        line(
            "groups:",
            &if u.groups.is_empty() {
                "(none)".to_string()
            } else {
                u.groups.join(", ")
            },
        );
        for (k, v) in &u.extra {
            line(&format!("extra {k}:"), &v.join(", "));
        }
        line("mapped by:", &u.mapped_by);
    }
    match &report.error {
        None => line("result:", "valid"),
        Some(f) => line(
            "result:",
            &format!(
                "rejected at the {} stage ({}): {}",
                f.stage.as_str(),
                f.reason,
                f.message
            ),
        ),
    }
    out
}

/// Reads the token from what the user gave: a bare token, `Bearer <token>`, or the
/// ExecCredential JSON that `token` prints.
pub fn extract_token(input: &str) -> Result<String, String> {
    let text = input.trim();
    if text.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|_| "the input looks like JSON but is not valid JSON".to_string())?;
        return value["status"]["token"]
            .as_str()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| "the JSON input has no status.token (not an ExecCredential)".into());
    }
    let text = text.strip_prefix("Bearer ").unwrap_or(text).trim();
    if text.is_empty() {
        return Err("the token is empty".into());
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    #[test]
    fn token_input_shapes() {
        assert_eq!(
            extract_token("  k8s-ack-v2.abc\n").expect("bare"),
            "k8s-ack-v2.abc"
        );
        assert_eq!(
            extract_token("Bearer k8s-ack-v2.abc").expect("bearer"),
            "k8s-ack-v2.abc"
        );
        assert_eq!(
            extract_token(r#"{"kind":"ExecCredential","status":{"token":"k8s-ack-v2.x"}}"#)
                .expect("exec credential"),
            "k8s-ack-v2.x"
        );
        assert!(extract_token("").is_err());
        assert!(extract_token("{bad").is_err());
        assert!(extract_token(r#"{"status":{}}"#).is_err());
    }

    fn sts() -> StsClient {
        let _ = rustls::crypto::ring::default_provider().install_default();
        StsClient::new(
            crate::sts::StsSettings::new("http://127.0.0.1:9".into()),
            None,
        )
        .expect("client")
    }

    #[tokio::test]
    async fn local_failures_do_not_reach_sts() {
        let now = crate::types::parse_utc("2026-11-23T09:36:00Z").expect("date");
        let r = check("garbage", "c1", now, &sts(), None).await;
        assert!(!r.valid);
        let f = r.error.as_ref().expect("error");
        assert_eq!((f.stage, f.reason.as_str()), (Stage::Local, "wrong_prefix"));
        assert!(r.format.is_none());

        let creds = super::super::credentials::Credentials {
            access_key_id: crate::types::AccessKeyId("AK".into()),
            access_key_secret: crate::types::Secret::new("s"),
            security_token: None,
        };
        let minted =
            super::super::exec_credential::mint(&super::super::exec_credential::MintInput {
                credentials: &creds,
                cluster_id: "c1",
                format: super::super::exec_credential::TokenFormatArg::V2,
                now,
                user_agent: "t",
                sts_host: "",
                nonce: "",
                extra_query: &[],
            });
        let r = check(&minted.token, "other", now, &sts(), None).await;
        let f = r.error.as_ref().expect("error");
        assert_eq!(
            (f.stage, f.reason.as_str()),
            (Stage::Local, "cluster_mismatch")
        );
        assert_eq!(r.access_key_id.as_deref(), Some("AK"));
        let later = now + chrono::TimeDelta::minutes(16);
        let r = check(&minted.token, "c1", later, &sts(), None).await;
        assert_eq!(r.error.as_ref().expect("error").reason, "expired");
        // Nothing listens on port 9: STS is unavailable, reported as such.
        let r = check(&minted.token, "c1", now, &sts(), None).await;
        let f = r.error.as_ref().expect("error");
        assert_eq!((f.stage, f.reason.as_str()), (Stage::Sts, "unavailable"));
        let text = render_text(&r);
        assert!(
            text.contains("rejected at the sts stage (unavailable)"),
            "{text}"
        );
        assert!(!text.contains(&minted.token));
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["valid"], false);
        assert_eq!(json["user"], serde_json::Value::Null);
        assert_eq!(json["error"]["stage"], "sts");
        assert_eq!(json["format"], "v2");
    }
}

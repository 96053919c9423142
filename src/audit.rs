//! The audit record of a review: one value built from what the review produced, scrubbed here,
//! and rendered here as one text or JSON line.
//!
//! A deny (and a malformed request) is logged at INFO; an allow at the level the operator picks
//! ([`AuditAllows`]). `RUST_LOG` still filters the `audit` target as any other. The record holds
//! the AccessKeyId and a short hash of the token, never the token.
//!
//! Text lines are short (`key=value`, values quoted only when they need it); JSON lines are
//! typed: `groups` is an array, `cache_hit` a boolean, `duration_us` an integer.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::authenticator::{Denial, Outcome};
use crate::logging::{self, LogFormat};
use crate::metrics::AuthResult;
use crate::review::{ApiVersion, ReviewError};

/// What replaces a scrubbed account's ARN, UID and account-bearing user name.
pub const SCRUBBED: &str = "[scrubbed]";

/// `status.error` of a review that ran past its deadline.
pub const DEADLINE_ERROR: &str = "STS unavailable (review deadline exceeded); try again shortly";

/// `status.error` of a scrubbed account's unmapped identity (the usual text names the ARN).
const SCRUBBED_NOT_MAPPED: &str = "the identity is not mapped to any Kubernetes user";

/// At which level allows are logged (`--audit-allows`, config `server.auditAllows`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditAllows {
    #[default]
    Info,
    Debug,
    Off,
}

/// The decision of a review.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// The body was not a TokenReview.
    Malformed,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Malformed => "malformed",
        }
    }
}

/// One review's audit record, already scrubbed.
#[derive(Clone, Debug)]
pub struct Record<'a> {
    pub decision: Decision,
    /// Short fixed reason (`mapped`, `not_mapped`, `sts:…`, …).
    pub reason: Cow<'a, str>,
    /// The metric result of the review.
    pub result: AuthResult,
    /// What the answer's `status.error` says (denies only).
    pub error: Option<Cow<'a, str>>,
    pub username: Option<Cow<'a, str>>,
    pub uid: Option<Cow<'a, str>>,
    pub groups: Option<&'a [String]>,
    pub arn: Option<Cow<'a, str>>,
    pub access_key_id: Option<&'a str>,
    pub token_hash: Option<Cow<'a, str>>,
    pub mapped_by: Option<&'a str>,
    /// Token format (`v1`, `v2`).
    pub format: Option<&'static str>,
    pub cache_hit: Option<bool>,
    pub duration: Duration,
    pub api_version: Option<ApiVersion>,
}

impl<'a> Record<'a> {
    fn empty(decision: Decision, reason: &'a str, result: AuthResult, duration: Duration) -> Self {
        Self {
            decision,
            reason: Cow::Borrowed(reason),
            result,
            error: None,
            username: None,
            uid: None,
            groups: None,
            arn: None,
            access_key_id: None,
            token_hash: None,
            mapped_by: None,
            format: None,
            cache_hit: None,
            duration,
            api_version: None,
        }
    }

    /// A body that is not a TokenReview.
    pub fn malformed(error: &ReviewError, duration: Duration) -> Self {
        let mut r = Self::empty(
            Decision::Malformed,
            "malformed_request",
            AuthResult::malformed_request,
            duration,
        );
        r.error = Some(Cow::Owned(error.to_string()));
        r
    }

    /// A review whose STS work ran past the deadline.
    pub fn deadline(token: &str, api_version: ApiVersion, duration: Duration) -> Self {
        let mut r = Self::empty(Decision::Deny, "deadline", AuthResult::sts_error, duration);
        r.error = Some(Cow::Borrowed(DEADLINE_ERROR));
        r.token_hash = Some(Cow::Owned(crate::types::short_hash(token)));
        r.api_version = Some(api_version);
        r
    }

    /// A TokenReview whose token is refused before any check (missing, or too long).
    pub fn refused(error: String, api_version: ApiVersion, duration: Duration) -> Self {
        let mut r = Self::empty(
            Decision::Deny,
            "invalid_token",
            AuthResult::invalid_token,
            duration,
        );
        r.error = Some(Cow::Owned(error));
        r.api_version = Some(api_version);
        r
    }

    /// A review the authenticator answered; `is_scrubbed` says whether an account's details
    /// stay out of the logs (`scrubbedAccounts`).
    pub fn review(
        outcome: &'a Outcome,
        api_version: ApiVersion,
        duration: Duration,
        is_scrubbed: impl Fn(&str) -> bool,
    ) -> Self {
        let account = outcome.account_id.as_deref();
        let scrubbed = account.is_some_and(&is_scrubbed);
        let shown = |s: &'a str| -> Cow<'a, str> {
            if scrubbed {
                Cow::Borrowed(SCRUBBED)
            } else {
                Cow::Borrowed(s)
            }
        };
        let mut r = match &outcome.decision {
            Ok(user) => {
                let mut r = Self::empty(Decision::Allow, "mapped", AuthResult::success, duration);
                r.username = Some(
                    if scrubbed && account.is_some_and(|a| user.username.contains(a)) {
                        Cow::Borrowed(SCRUBBED)
                    } else {
                        Cow::Borrowed(user.username.as_str())
                    },
                );
                r.uid = Some(shown(&user.uid));
                r.groups = Some(&user.groups);
                r.mapped_by = Some(&user.mapped_by);
                r
            }
            Err(denial) => {
                let mut r = Self::empty(Decision::Deny, "", denial.result(), duration);
                r.reason = Cow::Owned(denial.reason());
                r.error = Some(match denial {
                    Denial::NotMapped(_) if scrubbed => Cow::Borrowed(SCRUBBED_NOT_MAPPED),
                    other => Cow::Owned(other.status_error()),
                });
                r
            }
        };
        r.arn = outcome.arn.as_deref().map(shown);
        r.access_key_id = outcome.access_key_id.as_deref();
        r.token_hash = Some(Cow::Borrowed(&outcome.token_hash));
        r.format = outcome.format;
        r.cache_hit = Some(outcome.cache_hit);
        r.api_version = Some(api_version);
        r
    }

    /// The answer's `status.error` (empty for an allow).
    pub fn error(&self) -> &str {
        self.error.as_deref().unwrap_or("")
    }

    fn duration_us(&self) -> u64 {
        u64::try_from(self.duration.as_micros()).unwrap_or(u64::MAX)
    }

    /// The text line: `<time>  INFO audit: allow user=… groups=a,b arn=… access_key_id=…`.
    /// Short keys (`by` for `mapped_by`, `cached` for `cache_hit`); an allow leaves out what
    /// it implies (reason) and the TokenReview version, which the JSON line keeps.
    pub fn text(&self, level: tracing::Level, ansi: bool) -> String {
        use std::fmt::Write as _;
        let mut line = logging::text_prefix(level, "audit", ansi);
        line.push_str(self.decision.as_str());
        let mut field = |key: &str, value: &str| {
            let _ = write!(line, " {key}={}", TextValue(value));
        };
        if self.decision != Decision::Allow {
            field("reason", &self.reason);
        }
        if let Some(v) = &self.error {
            field("error", v);
        }
        if let Some(v) = &self.username {
            field("user", v);
        }
        if let Some(groups) = self.groups.filter(|g| !g.is_empty()) {
            let joined = if groups.iter().any(|g| g.contains(',')) {
                serde_json::to_string(groups).unwrap_or_default()
            } else {
                groups.join(",")
            };
            field("groups", &joined);
        }
        if let Some(v) = &self.arn {
            field("arn", v);
        }
        if let Some(v) = self.access_key_id {
            field("access_key_id", v);
        }
        if let Some(v) = &self.token_hash {
            field("token_hash", v);
        }
        if let Some(v) = self.mapped_by {
            field("by", v);
        }
        if let Some(v) = self.format {
            field("format", v);
        }
        if let Some(v) = self.cache_hit {
            field("cached", if v { "true" } else { "false" });
        }
        field("duration_us", &self.duration_us().to_string());
        if let Some(v) = self
            .api_version
            .filter(|_| self.decision != Decision::Allow)
        {
            field(
                "api",
                v.as_str().trim_start_matches("authentication.k8s.io/"),
            );
        }
        line.push('\n');
        line
    }

    /// The JSON line, with typed fields.
    pub fn json(&self, level: tracing::Level) -> String {
        let line = JsonLine {
            timestamp: logging::timestamp(),
            level: level.as_str(),
            target: "audit",
            message: "review",
            decision: self.decision.as_str(),
            reason: &self.reason,
            error: self.error.as_deref(),
            username: self.username.as_deref(),
            uid: self.uid.as_deref(),
            groups: self.groups,
            arn: self.arn.as_deref(),
            access_key_id: self.access_key_id,
            token_hash: self.token_hash.as_deref(),
            mapped_by: self.mapped_by,
            format: self.format,
            cache_hit: self.cache_hit,
            duration_us: self.duration_us(),
            api_version: self.api_version.map(ApiVersion::as_str),
        };
        let mut out = serde_json::to_string(&line).unwrap_or_default();
        out.push('\n');
        out
    }
}

#[derive(Serialize)]
struct JsonLine<'r> {
    timestamp: String,
    level: &'static str,
    target: &'static str,
    message: &'static str,
    decision: &'static str,
    reason: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<&'r [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arn: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_key_id: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_hash: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mapped_by: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_hit: Option<bool>,
    duration_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_version: Option<&'static str>,
}

/// A text value: bare when it is one plain word, quoted and escaped otherwise (so that no value
/// can break the line or fake a field).
struct TextValue<'v>(&'v str);

impl std::fmt::Display for TextValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plain = !self.0.is_empty()
            && !self
                .0
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '"' | '=' | '\\'));
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// The audit log: renders records in the process's log format and writes them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Audit {
    allows: AuditAllows,
}

impl Audit {
    pub fn new(allows: AuditAllows) -> Self {
        Self { allows }
    }

    /// The level a record is logged at; `None` when it is not logged.
    pub fn level(&self, decision: Decision) -> Option<tracing::Level> {
        match (decision, self.allows) {
            (Decision::Allow, AuditAllows::Off) => None,
            (Decision::Allow, AuditAllows::Debug) => Some(tracing::Level::DEBUG),
            _ => Some(tracing::Level::INFO),
        }
    }

    /// Logs a record, if its level is enabled for the `audit` target.
    pub fn log(&self, record: &Record<'_>) {
        let Some(level) = self.level(record.decision) else {
            return;
        };
        let enabled = if level == tracing::Level::INFO {
            tracing::enabled!(target: "audit", tracing::Level::INFO)
        } else {
            tracing::enabled!(target: "audit", tracing::Level::DEBUG)
        };
        if !enabled {
            return;
        }
        let Some(style) = logging::style() else {
            return;
        };
        let line = match style.format {
            LogFormat::Text => record.text(level, style.ansi),
            LogFormat::Json => record.json(level),
        };
        logging::write_line(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::User;

    fn typical(decision: Result<User, Denial>) -> Outcome {
        Outcome {
            decision,
            token_hash: "0123456789ab".into(),
            access_key_id: Some("STS.NUgYrLnoC37mZZCNnAbez2ZQB".into()),
            format: Some("v2"),
            arn: Some("acs:ram::1234567890123456:assumed-role/KubernetesAdmin/alice".into()),
            account_id: Some("1234567890123456".into()),
            cache_hit: true,
        }
    }

    fn alice() -> User {
        User {
            username: "alice".into(),
            uid: "ack-ram-authenticator:1234567890123456:300800000000000001".into(),
            groups: vec!["developers".into(), "viewers".into()],
            extra: Default::default(),
            mapped_by: "MountedFile:mapRoles[0]".into(),
        }
    }

    fn unscrubbed(outcome: &Outcome, duration: Duration) -> Record<'_> {
        Record::review(outcome, ApiVersion::V1, duration, |_| false)
    }

    #[test]
    fn text_allow_is_short_and_complete() {
        let outcome = typical(Ok(alice()));
        let r = unscrubbed(&outcome, Duration::from_micros(383));
        let line = r.text(tracing::Level::INFO, false);
        assert!(line.len() <= 300, "{} bytes: {line}", line.len());
        for part in [
            " INFO audit: allow ",
            " user=alice ",
            " groups=developers,viewers ",
            " access_key_id=STS.NUgYrLnoC37mZZCNnAbez2ZQB ",
            " token_hash=0123456789ab ",
            " by=MountedFile:mapRoles[0] ",
            " cached=true ",
            " duration_us=383\n",
        ] {
            assert!(line.contains(part), "{part:?} missing: {line}");
        }
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn json_fields_are_typed() {
        let outcome = typical(Ok(alice()));
        let r = unscrubbed(&outcome, Duration::from_micros(1500));
        let v: serde_json::Value =
            serde_json::from_str(&r.json(tracing::Level::DEBUG)).expect("json");
        assert_eq!(v["level"], "DEBUG");
        assert_eq!(v["target"], "audit");
        assert_eq!(v["decision"], "allow");
        assert_eq!(v["groups"], serde_json::json!(["developers", "viewers"]));
        assert_eq!(v["duration_us"], 1500);
        assert_eq!(v["cache_hit"], true);
        assert_eq!(v["api_version"], "authentication.k8s.io/v1");
        assert!(v.get("error").is_none());
    }

    #[test]
    fn scrubbed_accounts_stay_out() {
        let mut user = alice();
        user.username = "u-1234567890123456".into();
        let outcome = typical(Ok(user));
        let r = Record::review(&outcome, ApiVersion::V1, Duration::ZERO, |a| {
            a == "1234567890123456"
        });
        for line in [
            r.text(tracing::Level::INFO, false),
            r.json(tracing::Level::INFO),
        ] {
            assert!(!line.contains("1234567890123456"), "{line}");
            assert!(line.contains("STS.NUgYrLnoC37mZZCNnAbez2ZQB"), "{line}");
        }
        let denied = typical(Err(Denial::NotMapped(
            crate::mapping::MappingError::NotMapped("acs:ram::1234567890123456:role/x".into()),
        )));
        let r = Record::review(&denied, ApiVersion::V1, Duration::ZERO, |_| true);
        assert_eq!(r.error(), SCRUBBED_NOT_MAPPED);
        assert_eq!(r.reason, "not_mapped");
        assert!(!r
            .text(tracing::Level::INFO, false)
            .contains("1234567890123456"));
    }

    #[test]
    fn text_values_cannot_break_the_line() {
        let mut user = alice();
        user.username = "eve\n2026-01-01T00:00:00Z  INFO audit: allow user=root".into();
        user.groups = vec!["a b".into(), "c,d".into()];
        let outcome = typical(Ok(user));
        let line = unscrubbed(&outcome, Duration::ZERO).text(tracing::Level::INFO, false);
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(line.contains(r#"user="eve\n2026"#), "{line}");
        assert!(line.contains(r#"groups="[\"a b\",\"c,d\"]""#), "{line}");
    }

    #[test]
    fn levels_follow_the_allow_setting() {
        let off = Audit::new(AuditAllows::Off);
        assert_eq!(off.level(Decision::Allow), None);
        assert_eq!(off.level(Decision::Deny), Some(tracing::Level::INFO));
        let debug = Audit::new(AuditAllows::Debug);
        assert_eq!(debug.level(Decision::Allow), Some(tracing::Level::DEBUG));
        assert_eq!(debug.level(Decision::Malformed), Some(tracing::Level::INFO));
        assert_eq!(
            Audit::default().level(Decision::Allow),
            Some(tracing::Level::INFO)
        );
    }

    #[test]
    fn malformed_and_deadline_records() {
        let r = Record::malformed(&ReviewError::NotJson, Duration::from_micros(7));
        let v: serde_json::Value =
            serde_json::from_str(&r.json(tracing::Level::INFO)).expect("json");
        assert_eq!(v["decision"], "malformed");
        assert_eq!(v["error"], "request body is not JSON");
        assert_eq!(v["duration_us"], 7);
        let r = Record::deadline("secret-token", ApiVersion::V1, Duration::from_secs(9));
        let text = r.text(tracing::Level::INFO, false);
        assert!(!text.contains("secret-token"), "{text}");
        assert!(
            text.contains(&crate::types::short_hash("secret-token")),
            "{text}"
        );
        assert!(text.contains("reason=deadline"), "{text}");
        assert_eq!(r.error(), DEADLINE_ERROR);
    }
}

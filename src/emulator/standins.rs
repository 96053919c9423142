//! Stand-ins for the other places a workload gets temporary credentials from, served on the
//! emulator's listener next to STS:
//!
//! - the ECS metadata service (`http://100.100.100.200` on ECS) under `/latest/`:
//!   - `PUT /latest/api/token` with `X-aliyun-ecs-metadata-token-ttl-seconds: 1..21600` answers
//!     a token (text); missing or bad TTL: 400.
//!   - `GET /latest/meta-data/ram/security-credentials/` answers the role name (text).
//!   - `GET /latest/meta-data/ram/security-credentials/<role>` answers
//!     `{"Code":"Success","AccessKeyId","AccessKeySecret","SecurityToken","Expiration","LastUpdated"}`
//!     with fresh temporary credentials of the `ecsMetadata` role (session name = instance ID)
//!     that STS then verifies; an unknown role name: 404.
//!   - A GET may carry `X-aliyun-ecs-metadata-token`: a token it did not issue, or an expired
//!     one, gets 401. Without it, what happens depends on the [`MetadataMode`].
//!   - Without `ecsMetadata` in the keys file every `/latest/` path answers 404.
//! - a credentials URI at `GET /credentials-uri`: answers
//!   `{"Code":"Success","AccessKeyId","AccessKeySecret","SecurityToken","Expiration"}` for the
//!   `credentialsUri` role, or, when told to fail ([`UriSpec`]), `{"Code":<code>,"Message"}` with
//!   the given HTTP status; without `credentialsUri` in the keys file: 404.
//!
//! Controls (admin API, also flags at start):
//! - `GET|POST /_emulator/metadata` `{"mode":"any|hardened|plain|hang"}` (`--metadata-mode`).
//! - `GET|POST /_emulator/credentials-uri` `{"code":"Success","status":200}`
//!   (`--credentials-uri-code`; `status` optional, default 200).
//! - `POST /_emulator/reset` puts both back to `any` and `Success`.
//!
//! `GET /_emulator/stats` counts these requests in `byMetadata` (`token`, `hardened`, `plain`,
//! `refused`) and `credentialsUri`, apart from the STS counts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// The header asking for a metadata token, with its life in seconds.
pub const TOKEN_TTL_HEADER: &str = "x-aliyun-ecs-metadata-token-ttl-seconds";
/// The header carrying a metadata token.
pub const TOKEN_HEADER: &str = "x-aliyun-ecs-metadata-token";
/// The longest token life the metadata service grants (six hours).
pub const MAX_TOKEN_TTL: i64 = 21_600;
/// How many live metadata tokens are held at most.
pub const MAX_TOKENS: usize = 10_000;
/// How long `hang` holds a request before giving up on it.
pub const HANG_FOR: Duration = Duration::from_secs(600);
/// The path of the credentials URI.
pub const CREDENTIALS_URI_PATH: &str = "/credentials-uri";
/// The `Code` of a successful answer.
pub const SUCCESS: &str = "Success";

/// How the metadata stand-in behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MetadataMode {
    /// Hardened (token) and plain (token-less) requests both answered, as ECS does by default.
    #[default]
    Any,
    /// Hardened mode enforced: a GET without a token gets 403.
    Hardened,
    /// An older metadata service: `PUT /latest/api/token` gets 404, plain GETs are answered.
    Plain,
    /// Accepts connections but never answers (for timeout tests).
    Hang,
}

/// The body of `POST /_emulator/metadata`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataSpec {
    pub mode: MetadataMode,
}

/// The body of `POST /_emulator/credentials-uri`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UriSpec {
    /// `Success`, or the `Code` to answer instead of credentials.
    pub code: String,
    /// The HTTP status of the answer (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
}

fn default_status() -> u16 {
    200
}

impl Default for UriSpec {
    fn default() -> Self {
        Self {
            code: SUCCESS.to_string(),
            status: 200,
        }
    }
}

impl UriSpec {
    /// Checks a spec from the admin API or a flag.
    pub fn check(self) -> Result<Self, String> {
        if self.code.is_empty() || self.code.len() > 64 {
            return Err("code must be 1 to 64 characters".into());
        }
        if !(200..=599).contains(&self.status) {
            return Err(format!("status {} is not within 200..599", self.status));
        }
        Ok(self)
    }
}

/// The state of both stand-ins.
#[derive(Debug, Default)]
pub struct StandIns {
    metadata: Mutex<MetadataSpec>,
    uri: Mutex<UriSpec>,
    tokens: Mutex<HashMap<String, DateTime<Utc>>>,
}

/// What a metadata GET may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Answer; `hardened` says whether a valid token came with it.
    Allowed { hardened: bool },
    /// 401: a token that was not issued here or has expired.
    BadToken,
    /// 403: hardened mode is enforced and no token came.
    TokenRequired,
    /// Never answer.
    Hang,
}

/// What a token PUT gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenGrant {
    Token(String),
    /// 400 with this message.
    BadTtl(String),
    /// 404: this metadata service has no hardened mode.
    NotSupported,
    /// 503: too many live tokens.
    Full,
    Hang,
}

impl StandIns {
    pub fn new(metadata: MetadataMode, uri: UriSpec) -> Self {
        Self {
            metadata: Mutex::new(MetadataSpec { mode: metadata }),
            uri: Mutex::new(uri),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub fn metadata(&self) -> MetadataSpec {
        *lock(&self.metadata)
    }

    pub fn set_metadata(&self, spec: MetadataSpec) {
        *lock(&self.metadata) = spec;
    }

    pub fn uri(&self) -> UriSpec {
        lock(&self.uri).clone()
    }

    pub fn set_uri(&self, spec: UriSpec) {
        *lock(&self.uri) = spec;
    }

    /// Back to `any` and `Success`; issued tokens are forgotten.
    pub fn reset(&self) {
        self.set_metadata(MetadataSpec::default());
        self.set_uri(UriSpec::default());
        lock(&self.tokens).clear();
    }

    /// `PUT /latest/api/token` with the TTL header's value.
    pub fn grant_token(&self, ttl: Option<&str>, now: DateTime<Utc>) -> TokenGrant {
        match self.metadata().mode {
            MetadataMode::Hang => return TokenGrant::Hang,
            MetadataMode::Plain => return TokenGrant::NotSupported,
            MetadataMode::Any | MetadataMode::Hardened => {}
        }
        let Some(raw) = ttl else {
            return TokenGrant::BadTtl(format!("the header {TOKEN_TTL_HEADER} is required"));
        };
        let Some(ttl) = raw
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|t| (1..=MAX_TOKEN_TTL).contains(t))
        else {
            return TokenGrant::BadTtl(format!(
                "{TOKEN_TTL_HEADER} must be a whole number of seconds from 1 to {MAX_TOKEN_TTL}"
            ));
        };
        let mut tokens = lock(&self.tokens);
        if tokens.len() >= MAX_TOKENS {
            tokens.retain(|_, until| *until > now);
        }
        if tokens.len() >= MAX_TOKENS {
            return TokenGrant::Full;
        }
        let token: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(40)
            .map(char::from)
            .collect();
        tokens.insert(token.clone(), now + TimeDelta::seconds(ttl));
        TokenGrant::Token(token)
    }

    /// May a metadata GET carrying `token` (or none) be answered?
    pub fn access(&self, token: Option<&str>, now: DateTime<Utc>) -> Access {
        let mode = self.metadata().mode;
        if mode == MetadataMode::Hang {
            return Access::Hang;
        }
        match token {
            Some(t) => {
                let valid = lock(&self.tokens).get(t).is_some_and(|until| *until > now);
                if valid {
                    Access::Allowed { hardened: true }
                } else {
                    Access::BadToken
                }
            }
            None if mode == MetadataMode::Hardened => Access::TokenRequired,
            None => Access::Allowed { hardened: false },
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        crate::types::parse_utc("2026-11-23T09:36:00Z").expect("date")
    }

    #[test]
    fn tokens_are_issued_checked_and_expire() {
        let s = StandIns::default();
        let TokenGrant::Token(t) = s.grant_token(Some("60"), now()) else {
            panic!("token")
        };
        assert_eq!(
            s.access(Some(&t), now()),
            Access::Allowed { hardened: true }
        );
        assert_eq!(
            s.access(Some(&t), now() + TimeDelta::seconds(60)),
            Access::BadToken
        );
        assert_eq!(s.access(Some("forged"), now()), Access::BadToken);
        assert_eq!(s.access(None, now()), Access::Allowed { hardened: false });
        for bad in [None, Some("0"), Some("21601"), Some("x")] {
            assert!(matches!(s.grant_token(bad, now()), TokenGrant::BadTtl(_)));
        }
    }

    #[test]
    fn live_tokens_are_bounded() {
        let s = StandIns::default();
        for _ in 0..MAX_TOKENS {
            assert!(matches!(
                s.grant_token(Some("60"), now()),
                TokenGrant::Token(_)
            ));
        }
        assert_eq!(s.grant_token(Some("60"), now()), TokenGrant::Full);
        // Once they have expired, they make room.
        let later = now() + TimeDelta::seconds(61);
        assert!(matches!(
            s.grant_token(Some("60"), later),
            TokenGrant::Token(_)
        ));
    }

    #[test]
    fn modes_change_the_answers() {
        let s = StandIns::default();
        s.set_metadata(MetadataSpec {
            mode: MetadataMode::Hardened,
        });
        assert_eq!(s.access(None, now()), Access::TokenRequired);
        s.set_metadata(MetadataSpec {
            mode: MetadataMode::Plain,
        });
        assert_eq!(s.grant_token(Some("60"), now()), TokenGrant::NotSupported);
        assert_eq!(s.access(None, now()), Access::Allowed { hardened: false });
        s.set_metadata(MetadataSpec {
            mode: MetadataMode::Hang,
        });
        assert_eq!(s.grant_token(Some("60"), now()), TokenGrant::Hang);
        assert_eq!(s.access(None, now()), Access::Hang);
        s.reset();
        assert_eq!(s.metadata().mode, MetadataMode::Any);
    }

    #[test]
    fn uri_spec_checks() {
        let spec: UriSpec = serde_json::from_str(r#"{"code":"Failure"}"#).expect("json");
        assert_eq!(spec.status, 200);
        assert!(spec.check().is_ok());
        let bad = UriSpec {
            code: String::new(),
            status: 200,
        };
        assert!(bad.check().is_err());
        let bad = UriSpec {
            code: "x".into(),
            status: 99,
        };
        assert!(bad.check().is_err());
        assert!(serde_json::from_str::<UriSpec>(r#"{"code":"x","extra":1}"#).is_err());
    }
}

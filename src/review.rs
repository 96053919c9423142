//! TokenReview in and out, for `authentication.k8s.io/v1` and `v1beta1`.
//!
//! The answer always has the request's apiVersion and kind `TokenReview`. A deny always carries
//! a non-empty `status.error` saying why.

use serde::{Deserialize, Serialize};

use crate::mapping::User;
use crate::types::Secret;

/// Largest TokenReview body read, in bytes: kube-apiserver accepts bearer tokens this long, so a
/// TokenReview this large is still answered (a token over [`MAX_TOKEN_LEN`] with a deny).
pub const MAX_BODY: usize = 1024 * 1024;

use crate::token::MAX_TOKEN_LEN;

/// The TokenReview apiVersion of a request, echoed in the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V1Beta1,
}

impl ApiVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "authentication.k8s.io/v1",
            Self::V1Beta1 => "authentication.k8s.io/v1beta1",
        }
    }
}

/// A decoded TokenReview request.
#[derive(Debug)]
pub struct ReviewRequest {
    pub api_version: ApiVersion,
    pub token: Secret,
    pub audiences: Vec<String>,
}

/// The body is not a TokenReview: a 400 with this text. (A TokenReview with a missing, empty
/// or over-long token is answered, with a deny: see [`ReviewRequest::refusal`].)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not JSON")]
    NotJson,
    #[error("not a TokenReview (kind {0:?})")]
    WrongKind(String),
    #[error("unsupported apiVersion {0:?} (want authentication.k8s.io/v1 or v1beta1)")]
    WrongApiVersion(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Incoming {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    spec: IncomingSpec,
}

#[derive(Deserialize, Default)]
struct IncomingSpec {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    audiences: Option<Vec<String>>,
}

/// Decodes a TokenReview body.
pub fn decode(body: &[u8]) -> Result<ReviewRequest, ReviewError> {
    let incoming: Incoming = serde_json::from_slice(body).map_err(|_| ReviewError::NotJson)?;
    if incoming.kind != "TokenReview" {
        return Err(ReviewError::WrongKind(
            incoming.kind.chars().take(64).collect(),
        ));
    }
    let api_version = match incoming.api_version.as_str() {
        "authentication.k8s.io/v1" => ApiVersion::V1,
        // kube-apiserver's default; an empty apiVersion is read as the default too.
        "authentication.k8s.io/v1beta1" | "" => ApiVersion::V1Beta1,
        other => {
            return Err(ReviewError::WrongApiVersion(
                other.chars().take(64).collect(),
            ))
        }
    };
    let token = incoming.spec.token.unwrap_or_default();
    Ok(ReviewRequest {
        api_version,
        token: Secret::new(token),
        audiences: incoming.spec.audiences.unwrap_or_default(),
    })
}

impl ReviewRequest {
    /// Why the token is refused before any other check (no token, or longer than any token this
    /// authenticator issues), if it is.
    pub fn refusal(&self) -> Option<String> {
        let len = self.token.expose().len();
        if len == 0 {
            Some("the TokenReview carries no token".to_string())
        } else if len > MAX_TOKEN_LEN {
            Some(format!(
                "token is {len} bytes long, more than the {MAX_TOKEN_LEN} allowed"
            ))
        } else {
            None
        }
    }
}

/// None of the requested audiences is one this authenticator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the token is not valid for the requested audiences")]
pub struct AudienceMismatch;

/// Audience handling: `Ok(None)` = no `status.audiences`; `Ok(Some(list))` = the intersection.
pub fn audiences(
    requested: &[String],
    configured: &[String],
) -> Result<Option<Vec<String>>, AudienceMismatch> {
    if requested.is_empty() || configured.is_empty() {
        // No audiences asked for means "the API server"; an authenticator configured with no
        // audiences does not claim any (kube-apiserver then applies its own).
        return Ok(None);
    }
    let both: Vec<String> = requested
        .iter()
        .filter(|a| configured.contains(a))
        .cloned()
        .collect();
    if both.is_empty() {
        Err(AudienceMismatch)
    } else {
        Ok(Some(both))
    }
}

/// A TokenReview answer, serialised as kube-apiserver expects it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: Empty,
    status: Status<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    creation_timestamp: Option<()>,
}

#[derive(Debug, Serialize)]
struct Empty {}

#[derive(Debug, Serialize)]
struct Status<'a> {
    authenticated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserInfo<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audiences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct UserInfo<'a> {
    username: &'a str,
    uid: &'a str,
    groups: &'a [String],
    extra: &'a std::collections::BTreeMap<String, Vec<String>>,
}

fn answer(api_version: ApiVersion, status: Status<'_>) -> Answer<'_> {
    Answer {
        api_version: api_version.as_str(),
        kind: "TokenReview",
        metadata: Metadata {
            creation_timestamp: None,
        },
        spec: Empty {},
        status,
    }
}

/// An allow answer.
pub fn encode_allow(
    api_version: ApiVersion,
    user: &User,
    audiences: Option<Vec<String>>,
) -> Answer<'_> {
    answer(
        api_version,
        Status {
            authenticated: true,
            user: Some(UserInfo {
                username: &user.username,
                uid: &user.uid,
                groups: &user.groups,
                extra: &user.extra,
            }),
            audiences,
            error: None,
        },
    )
}

/// A deny answer with its reason in `status.error` (never empty).
pub fn encode_deny(api_version: ApiVersion, error: &str) -> Answer<'_> {
    let error = if error.is_empty() {
        "authentication failed"
    } else {
        error
    };
    answer(
        api_version,
        Status {
            authenticated: false,
            user: None,
            audiences: None,
            error: Some(error),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_versions() {
        let r = decode(br#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"t","audiences":["a"]}}"#)
            .expect("v1");
        assert_eq!(r.api_version, ApiVersion::V1);
        assert_eq!(r.token.expose(), "t");
        assert_eq!(r.audiences, vec!["a"]);
        let r = decode(br#"{"apiVersion":"authentication.k8s.io/v1beta1","kind":"TokenReview","spec":{"token":"t"}}"#)
            .expect("v1beta1");
        assert_eq!(r.api_version, ApiVersion::V1Beta1);
    }

    #[test]
    fn refuses_non_reviews() {
        assert_eq!(decode(b"nope").unwrap_err(), ReviewError::NotJson);
        assert!(matches!(
            decode(br#"{"kind":"Pod","spec":{"token":"t"}}"#),
            Err(ReviewError::WrongKind(_))
        ));
        assert!(matches!(
            decode(br#"{"apiVersion":"v9","kind":"TokenReview","spec":{"token":"t"}}"#),
            Err(ReviewError::WrongApiVersion(_))
        ));
    }

    #[test]
    fn empty_or_long_tokens_are_refused_as_tokens() {
        let r =
            decode(br#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{}}"#)
                .expect("a TokenReview");
        assert!(r.refusal().expect("refused").contains("no token"));
        let r = decode(br#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":""}}"#)
            .expect("a TokenReview");
        assert!(r.refusal().is_some());
        let long = format!(
            r#"{{"kind":"TokenReview","spec":{{"token":"{}"}}}}"#,
            "a".repeat(MAX_BODY / 2)
        );
        let r = decode(long.as_bytes()).expect("a TokenReview");
        assert!(r.refusal().expect("refused").contains("bytes long"));
        let r = decode(br#"{"kind":"TokenReview","spec":{"token":"t"}}"#).expect("review");
        assert_eq!(r.refusal(), None);
    }

    #[test]
    fn audience_intersection() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(audiences(&[], &s(&["a"])), Ok(None));
        assert_eq!(audiences(&s(&["a"]), &[]), Ok(None));
        assert_eq!(
            audiences(&s(&["a", "b"]), &s(&["b", "c"])),
            Ok(Some(s(&["b"])))
        );
        assert_eq!(audiences(&s(&["a"]), &s(&["c"])), Err(AudienceMismatch));
    }

    #[test]
    fn deny_always_has_an_error() {
        let v = serde_json::to_value(encode_deny(ApiVersion::V1, "")).expect("json");
        assert_eq!(v["status"]["error"], "authentication failed");
        assert_eq!(v["kind"], "TokenReview");
        assert_eq!(v["apiVersion"], "authentication.k8s.io/v1");
    }
}

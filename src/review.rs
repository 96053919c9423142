//! TokenReview in and out, for `authentication.k8s.io/v1` and `v1beta1`.
//!
//! The answer always has the request's apiVersion and kind `TokenReview`. A deny always carries
//! a non-empty `status.error` saying why.

use serde::{Deserialize, Serialize};

use crate::mapping::User;
use crate::types::Secret;

/// Largest TokenReview body accepted, in bytes (a token is at most 4 KiB).
pub const MAX_BODY: usize = 64 * 1024;

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

/// The body is not a TokenReview we can answer: a 400 with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not JSON")]
    NotJson,
    #[error("not a TokenReview (kind {0:?})")]
    WrongKind(String),
    #[error("unsupported apiVersion {0:?} (want authentication.k8s.io/v1 or v1beta1)")]
    WrongApiVersion(String),
    #[error("TokenReview has no spec.token")]
    NoToken,
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
    let token = incoming
        .spec
        .token
        .filter(|t| !t.is_empty())
        .ok_or(ReviewError::NoToken)?;
    Ok(ReviewRequest {
        api_version,
        token: Secret::new(token),
        audiences: incoming.spec.audiences.unwrap_or_default(),
    })
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
        assert_eq!(
            decode(br#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{}}"#)
                .unwrap_err(),
            ReviewError::NoToken
        );
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

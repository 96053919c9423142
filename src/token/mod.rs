//! The two token wire formats and their local checks. Pure code: no I/O, no clock of its own.
//!
//! - `k8s-ack-v2.` + base64(JSON): an `ACS3-HMAC-SHA256` signed `POST /` ([`v2`]).
//! - `k8s-ack-v1.` + base64(URL): a pre-signed RPC v1 `GET` URL ([`v1`]).
//!
//! [`parse`] reads a token into a [`SignedRequest`] and rejects anything structurally wrong;
//! [`check`] applies the cluster binding and the date window. Neither calls STS.

pub mod v1;
pub mod v2;

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};

use crate::signing::percent_encode;
use crate::types::{format_utc, AccessKeyId};

/// Prefix of the current token format.
pub const V2_PREFIX: &str = "k8s-ack-v2.";
/// Prefix of the legacy token format.
pub const V1_PREFIX: &str = "k8s-ack-v1.";
/// The longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;
/// The only STS action a token may carry.
pub const ACTION: &str = "GetCallerIdentity";
/// The STS API version a token must name.
pub const STS_VERSION: &str = "2015-04-01";
/// How far a signing date may be from now, either way (STS allows the same).
pub const MAX_SKEW: TimeDelta = TimeDelta::minutes(15);

/// Which wire format a token used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenFormat {
    V1,
    V2,
}

impl TokenFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// A signed `GetCallerIdentity` request recovered from a token, ready to forward to STS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRequest {
    pub format: TokenFormat,
    pub access_key_id: AccessKeyId,
    pub signed_at: DateTime<Utc>,
    /// The cluster ID the signature binds the token to.
    pub cluster_id: String,
    /// Whether the request carries an STS security token (temporary credentials).
    pub has_security_token: bool,
    pub wire: Wire,
}

/// What is sent to STS. Secrets inside (signature, security token) are never logged: the
/// `Debug` of [`SignedRequest`] is only used in tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wire {
    /// `POST /?<query>` with `Authorization` and the signed headers, empty body.
    V2 {
        query: BTreeMap<String, String>,
        /// Signed headers, lower-case names, `Authorization` excluded.
        headers: BTreeMap<String, String>,
        authorization: String,
    },
    /// `GET /?<params>`; the parameters in their original order, `Signature` included.
    V1 { params: Vec<(String, String)> },
}

impl SignedRequest {
    /// The HTTP method STS must receive.
    pub fn method(&self) -> &'static str {
        match self.wire {
            Wire::V2 { .. } => "POST",
            Wire::V1 { .. } => "GET",
        }
    }

    /// The query string to send, percent-encoded (every parameter is covered by the signature,
    /// so all of them are forwarded).
    pub fn query_string(&self) -> String {
        let encode =
            |(k, v): (&String, &String)| format!("{}={}", percent_encode(k), percent_encode(v));
        match &self.wire {
            Wire::V2 { query, .. } => query.iter().map(encode).collect::<Vec<_>>().join("&"),
            Wire::V1 { params } => params
                .iter()
                .map(|(k, v)| encode((k, v)))
                .collect::<Vec<_>>()
                .join("&"),
        }
    }

    /// The headers to send besides `Accept`: `Authorization` and the signed headers (v2); none (v1).
    pub fn headers(&self) -> Vec<(String, String)> {
        match &self.wire {
            Wire::V2 {
                headers,
                authorization,
                ..
            } => std::iter::once(("authorization".to_string(), authorization.clone()))
                .chain(headers.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect(),
            Wire::V1 { .. } => Vec::new(),
        }
    }

    /// Latest instant at which STS still accepts the signing date.
    pub fn valid_until(&self) -> DateTime<Utc> {
        self.signed_at + MAX_SKEW
    }
}

/// Why a token was rejected without asking STS. Each variant is one reason, in words an
/// operator can act on; none of them echoes a signature or a security token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token does not start with {V2_PREFIX} or {V1_PREFIX}")]
    WrongPrefix,
    #[error("token is {0} bytes long, more than the {MAX_TOKEN_LEN} allowed")]
    TooLong(usize),
    #[error("token payload is not valid base64")]
    BadBase64,
    #[error("token payload is not valid JSON ({0})")]
    BadJson(String),
    #[error("token payload is not a valid STS URL ({0})")]
    BadUrl(&'static str),
    #[error("token has a duplicate {kind} {name:?} (names are compared without case)")]
    Duplicate { kind: &'static str, name: String },
    #[error("token carries no cluster ID ({0})")]
    MissingClusterId(&'static str),
    #[error("token is for cluster {got:?}, not this cluster {expected:?}")]
    ClusterMismatch { expected: String, got: String },
    #[error("token names action {0:?}; only GetCallerIdentity is accepted")]
    WrongAction(String),
    #[error("token names STS API version {0:?}; only 2015-04-01 is accepted")]
    WrongVersion(String),
    #[error("token method {0:?} is not POST")]
    WrongMethod(String),
    #[error("token lacks {0}")]
    Missing(&'static str),
    #[error("token signing date {0:?} is not a valid UTC date")]
    BadDate(String),
    #[error("token expired: signed at {signed_at}, more than 15 minutes ago")]
    Expired { signed_at: String },
    #[error("token signing date {signed_at} is more than 15 minutes in the future")]
    FromFuture { signed_at: String },
    #[error("token Authorization header is malformed: {0}")]
    BadAuthorization(#[from] crate::signing::acs3::AuthorizationError),
    #[error(
        "token signature algorithm {0:?} is not supported (want ACS3-HMAC-SHA256 or HMAC-SHA1)"
    )]
    UnsupportedAlgorithm(String),
    #[error("token signature version {0:?} is not supported (want 1.0)")]
    UnsupportedSignatureVersion(String),
    #[error("token signs header {0:?}; only x-acs-*, host and content-type may be signed")]
    DisallowedSignedHeader(String),
    #[error("token signs header {0:?} but does not carry it")]
    SignedHeaderAbsent(String),
    #[error("token carries header {0:?} without signing it")]
    UnsignedHeader(String),
    #[error("token's x-acs-content-sha256 is not the hash of an empty body")]
    BodyHash,
    #[error("token has a parameter or header with an empty name")]
    EmptyName,
    #[error(
        "token carries header {0:?}, which cannot be sent in an HTTP request (a name must be \
         an HTTP token, a value visible ASCII, space or tab)"
    )]
    UnsendableHeader(String),
    #[error(
        "token signs {name}: {signed:?}, but the request to STS carries {name}: {sent:?} (it \
         goes to the configured endpoint only), so STS could not match the signature"
    )]
    SignedHeaderMismatch {
        name: &'static str,
        signed: String,
        sent: String,
    },
}

impl TokenError {
    /// A short, fixed label for metrics and audit logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::WrongPrefix => "wrong_prefix",
            Self::TooLong(_) => "too_long",
            Self::BadBase64 => "bad_base64",
            Self::BadJson(_) => "bad_json",
            Self::BadUrl(_) => "bad_url",
            Self::Duplicate { .. } => "duplicate_key",
            Self::MissingClusterId(_) => "missing_cluster_id",
            Self::ClusterMismatch { .. } => "cluster_mismatch",
            Self::WrongAction(_) => "wrong_action",
            Self::WrongVersion(_) => "wrong_version",
            Self::WrongMethod(_) => "wrong_method",
            Self::Missing(_) => "missing_field",
            Self::BadDate(_) => "bad_date",
            Self::Expired { .. } => "expired",
            Self::FromFuture { .. } => "from_future",
            Self::BadAuthorization(_) => "bad_authorization",
            Self::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Self::UnsupportedSignatureVersion(_) => "unsupported_signature_version",
            Self::DisallowedSignedHeader(_) => "disallowed_signed_header",
            Self::SignedHeaderAbsent(_) => "signed_header_absent",
            Self::UnsignedHeader(_) => "unsigned_header",
            Self::BodyHash => "body_hash",
            Self::EmptyName => "empty_name",
            Self::UnsendableHeader(_) => "unsendable_header",
            Self::SignedHeaderMismatch { .. } => "signed_header_mismatch",
        }
    }
}

/// Reads a token of either format. Structural checks only; see [`check`] for the rest.
pub fn parse(token: &str) -> Result<SignedRequest, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong(token.len()));
    }
    if let Some(payload) = token.strip_prefix(V2_PREFIX) {
        v2::parse(&decode_base64(payload)?)
    } else if let Some(payload) = token.strip_prefix(V1_PREFIX) {
        v1::parse(&decode_base64(payload)?)
    } else {
        Err(TokenError::WrongPrefix)
    }
}

/// Checks the cluster binding and the signing date against `now` (±15 minutes).
pub fn check(req: &SignedRequest, cluster_id: &str, now: DateTime<Utc>) -> Result<(), TokenError> {
    if req.cluster_id != cluster_id {
        return Err(TokenError::ClusterMismatch {
            expected: cluster_id.to_string(),
            got: shorten(&req.cluster_id),
        });
    }
    if req.signed_at + MAX_SKEW < now {
        return Err(TokenError::Expired {
            signed_at: format_utc(req.signed_at),
        });
    }
    if req.signed_at - MAX_SKEW > now {
        return Err(TokenError::FromFuture {
            signed_at: format_utc(req.signed_at),
        });
    }
    Ok(())
}

/// Checks the headers this server sets itself on the request to STS (`host`, `content-type`):
/// a token that signs one of them with another value is refused here, since STS would only
/// answer `SignatureDoesNotMatch`. `sent` holds lower-case names and the values sent.
pub fn check_sent_headers(
    req: &SignedRequest,
    sent: &[(&'static str, &str)],
) -> Result<(), TokenError> {
    let Wire::V2 { headers, .. } = &req.wire else {
        return Ok(());
    };
    for (name, value) in sent {
        if let Some(signed) = headers.get(*name) {
            if !signed.trim().eq_ignore_ascii_case(value.trim()) {
                return Err(TokenError::SignedHeaderMismatch {
                    name,
                    signed: shorten(signed),
                    sent: value.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Whether `name` is an HTTP field name (RFC 9110 `token`).
pub fn is_http_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` can be sent as an HTTP field value: visible ASCII, space and tab only.
pub fn is_sendable_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Refuses a header that could not be put on the wire as it is.
fn check_sendable(name: &str, value: &str) -> Result<(), TokenError> {
    if is_http_token(name) && is_sendable_value(value) {
        Ok(())
    } else {
        Err(TokenError::UnsendableHeader(shorten(name)))
    }
}

/// Parses and checks a token in one call.
pub fn parse_and_check(
    token: &str,
    cluster_id: &str,
    now: DateTime<Utc>,
) -> Result<SignedRequest, TokenError> {
    let req = parse(token)?;
    check(&req, cluster_id, now)?;
    Ok(req)
}

fn decode_base64(payload: &str) -> Result<Vec<u8>, TokenError> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT
        .decode(payload.trim())
        .map_err(|_| TokenError::BadBase64)
}

/// Rejects names that repeat when compared without case, and empty names.
fn reject_duplicates<'a>(
    kind: &'static str,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), TokenError> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if name.is_empty() {
            return Err(TokenError::EmptyName);
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(TokenError::Duplicate {
                kind,
                name: shorten(name),
            });
        }
    }
    Ok(())
}

/// Untrusted text, cut to a length fit for an error message.
fn shorten(s: &str) -> String {
    crate::types::shorten(s, 64)
}

fn parse_date(value: &str) -> Result<DateTime<Utc>, TokenError> {
    // Alibaba's signers write `YYYY-MM-DDThh:mm:ssZ`; accept exactly that shape. A year of at
    // most four digits also keeps `signed_at ± MAX_SKEW` from overflowing the date type.
    if value.len() != 20 || value.as_bytes()[4] != b'-' {
        return Err(TokenError::BadDate(shorten(value)));
    }
    chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%SZ")
        .map(|d| d.and_utc())
        .map_err(|_| TokenError::BadDate(shorten(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_prefix_length_and_base64() {
        assert_eq!(parse("Bearer abc"), Err(TokenError::WrongPrefix));
        assert_eq!(parse("k8s-ack-v3.abc"), Err(TokenError::WrongPrefix));
        let long = format!("{V2_PREFIX}{}", "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(parse(&long), Err(TokenError::TooLong(long.len())));
        assert_eq!(parse("k8s-ack-v2.!!!"), Err(TokenError::BadBase64));
    }

    #[test]
    fn sendable_names_and_values() {
        for ok in ["x-acs-date", "content-type", "X_Custom~1!"] {
            assert!(is_http_token(ok), "{ok}");
        }
        for bad in [
            "",
            "x-acs bad",
            "x-acs-a:b",
            "x-acs-\u{e9}",
            "x-acs-(",
            "x-acs-\t",
        ] {
            assert!(!is_http_token(bad), "{bad:?}");
        }
        for ok in ["", "a b\tc", "~!@#$%^&*()"] {
            assert!(is_sendable_value(ok), "{ok:?}");
        }
        for bad in ["a\nb", "a\rb", "a\u{7f}", "a\u{0}", "caf\u{e9}", "\u{1}"] {
            assert!(!is_sendable_value(bad), "{bad:?}");
        }
    }

    /// A v2 token whose JSON is edited by `edit` (the signature is not checked locally).
    fn edited_v2(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let token = v2::mint(&v2::MintV2 {
            access_key_id: "AK",
            access_key_secret: "secret",
            security_token: None,
            cluster_id: "c1",
            date: "2026-01-01T00:00:00Z",
            extra_query: &[],
            user_agent: "t",
        });
        let payload = decode_base64(&token[V2_PREFIX.len()..]).expect("base64");
        let mut json: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        edit(&mut json);
        format!(
            "{V2_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(json.to_string())
        )
    }

    fn signing(name: &str, value: &str) -> String {
        edited_v2(|j| {
            let auth = j["headers"]["Authorization"].as_str().expect("auth");
            let auth = auth.replace("SignedHeaders=", &format!("SignedHeaders={name};"));
            j["headers"]["Authorization"] = auth.into();
            j["headers"][name] = value.into();
        })
    }

    #[test]
    fn headers_that_cannot_be_sent_are_refused() {
        for (name, value) in [
            ("x-acs-note", "a\nb"),
            ("x-acs-note", "a\u{7f}"),
            ("x-acs-note", "caf\u{e9}"),
            ("x-acs-bad name", "v"),
            ("x-acs-bad:name", "v"),
        ] {
            let err = parse(&signing(name, value)).expect_err(name);
            assert_eq!(err, TokenError::UnsendableHeader(name.into()), "{name:?}");
            assert_eq!(err.reason(), "unsendable_header");
        }
        // An unsigned header is dropped, not sent: it may hold anything.
        let token = edited_v2(|j| j["headers"]["user-agent"] = "a\nb".into());
        assert!(parse(&token).is_ok());
        // Space and tab inside a value are fine.
        assert!(parse(&signing("x-acs-note", "a b\tc")).is_ok());
    }

    #[test]
    fn signed_host_and_content_type_must_be_what_is_sent() {
        let sent = [
            ("host", "sts.example:8443"),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        let req = parse(&signing("host", "STS.example:8443")).expect("parses");
        assert_eq!(check_sent_headers(&req, &sent), Ok(()));
        let req = parse(&signing("host", "sts.aliyuncs.com")).expect("parses");
        let err = check_sent_headers(&req, &sent).expect_err("another host");
        assert_eq!(err.reason(), "signed_header_mismatch");
        assert!(err.to_string().contains("sts.example:8443"), "{err}");
        let req = parse(&signing("content-type", "application/json")).expect("parses");
        assert!(check_sent_headers(&req, &sent).is_err());
        // Not signing them is the usual case.
        let req = parse(&edited_v2(|_| {})).expect("parses");
        assert_eq!(check_sent_headers(&req, &sent), Ok(()));
    }

    #[test]
    fn long_untrusted_text_is_shortened() {
        let s = shorten(&"x".repeat(500));
        assert_eq!(s.chars().count(), 65);
    }
}

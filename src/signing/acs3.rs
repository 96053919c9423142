//! Alibaba Cloud OpenAPI V3 signatures (`ACS3-HMAC-SHA256`).
//!
//! ```text
//! CanonicalRequest = METHOD\nPATH\nCanonicalQuery\nCanonicalHeaders\nSignedHeaders\nhex(sha256(body))
//! StringToSign     = "ACS3-HMAC-SHA256\n" + hex(sha256(CanonicalRequest))
//! Signature        = hex(HMAC-SHA256(AccessKeySecret, StringToSign))
//! ```

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::sha256_hex;

/// The algorithm name at the start of the `Authorization` header.
pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// Whether a header of this (lower-case) name is one that V3 signs.
pub fn is_signable_header(lower_name: &str) -> bool {
    lower_name.starts_with("x-acs-") || lower_name == "host" || lower_name == "content-type"
}

/// `key=value` pairs, keys sorted bytewise, both percent-encoded, joined by `&`.
pub fn canonical_query(query: &BTreeMap<String, String>) -> String {
    super::sorted_encoded_query(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// The canonical request and the `SignedHeaders` list for the given signed headers.
/// `headers` maps lower-case header names to values; all of them are signed.
pub fn canonical_request(
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    headers: &BTreeMap<String, String>,
    body_sha256: &str,
) -> (String, String) {
    let mut canonical_headers = String::new();
    for (name, value) in headers {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(value.trim());
        canonical_headers.push('\n');
    }
    let signed_headers = headers.keys().cloned().collect::<Vec<_>>().join(";");
    let request = format!(
        "{method}\n{path}\n{}\n{canonical_headers}\n{signed_headers}\n{body_sha256}",
        canonical_query(query)
    );
    (request, signed_headers)
}

/// `ACS3-HMAC-SHA256\n` + hex(sha256(canonical request)).
pub fn string_to_sign(canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{}", sha256_hex(canonical_request.as_bytes()))
}

/// Lower-case hex HMAC-SHA256 of the string to sign, keyed with the AccessKey secret.
pub fn signature(secret: &str, string_to_sign: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A parsed `Authorization` header:
/// `ACS3-HMAC-SHA256 Credential=<AKID>,SignedHeaders=a;b,Signature=<hex>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Authorization {
    pub algorithm: String,
    pub access_key_id: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("algorithm", &self.algorithm)
            .field("access_key_id", &self.access_key_id)
            .field("signed_headers", &self.signed_headers)
            .field("signature", &"***")
            .finish()
    }
}

/// Why an `Authorization` header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationError {
    #[error("the Authorization header has no algorithm")]
    NoAlgorithm,
    #[error("the Authorization header lacks {0}")]
    Missing(&'static str),
    #[error("the Authorization header has an unknown or repeated part {0:?}")]
    UnknownPart(String),
}

impl Authorization {
    /// Parses the header value. The algorithm is returned as written; callers check it.
    pub fn parse(value: &str) -> Result<Self, AuthorizationError> {
        let value = value.trim();
        let (algorithm, rest) = value
            .split_once(' ')
            .ok_or(AuthorizationError::NoAlgorithm)?;
        if algorithm.is_empty() {
            return Err(AuthorizationError::NoAlgorithm);
        }
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let part = part.trim();
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| AuthorizationError::UnknownPart(truncate(part)))?;
            let slot = match k {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed,
                "Signature" => &mut signature,
                _ => return Err(AuthorizationError::UnknownPart(truncate(k))),
            };
            if slot.replace(v.to_string()).is_some() {
                return Err(AuthorizationError::UnknownPart(k.to_string()));
            }
        }
        let access_key_id = credential
            .filter(|c| !c.is_empty())
            .ok_or(AuthorizationError::Missing("Credential"))?;
        let signed = signed
            .filter(|s| !s.is_empty())
            .ok_or(AuthorizationError::Missing("SignedHeaders"))?;
        let signature = signature
            .filter(|s| !s.is_empty())
            .ok_or(AuthorizationError::Missing("Signature"))?;
        Ok(Self {
            algorithm: algorithm.to_string(),
            access_key_id,
            signed_headers: signed.split(';').map(str::to_string).collect(),
            signature,
        })
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        format!(
            "{} Credential={},SignedHeaders={},Signature={}",
            self.algorithm,
            self.access_key_id,
            self.signed_headers.join(";"),
            self.signature
        )
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Signs a request: returns the `Authorization` header for the given signed headers.
pub fn sign(
    access_key_id: &str,
    secret: &str,
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    headers: &BTreeMap<String, String>,
    body_sha256: &str,
) -> Authorization {
    let (request, signed_headers) = canonical_request(method, path, query, headers, body_sha256);
    let signature = signature(secret, &string_to_sign(&request));
    Authorization {
        algorithm: ALGORITHM.to_string(),
        access_key_id: access_key_id.to_string(),
        signed_headers: signed_headers.split(';').map(str::to_string).collect(),
        signature,
    }
}

/// Checks a V3 signature: recomputes it over the headers `auth` names (taken from `headers`,
/// lower-case names) and compares in constant time. A signed header that is absent fails.
pub fn verify(
    auth: &Authorization,
    secret: &str,
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    headers: &BTreeMap<String, String>,
    body_sha256: &str,
) -> bool {
    let mut signed = BTreeMap::new();
    for name in &auth.signed_headers {
        match headers.get(name) {
            Some(v) => {
                signed.insert(name.clone(), v.clone());
            }
            None => return false,
        }
    }
    let expected = sign(
        &auth.access_key_id,
        secret,
        method,
        path,
        query,
        &signed,
        body_sha256,
    );
    super::constant_time_eq(expected.signature.as_bytes(), auth.signature.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_authorization() {
        let a = Authorization::parse(
            "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=x-acs-date;host,Signature=ab12",
        )
        .expect("parses");
        assert_eq!(a.algorithm, ALGORITHM);
        assert_eq!(a.access_key_id, "AK");
        assert_eq!(a.signed_headers, vec!["x-acs-date", "host"]);
        assert_eq!(a.signature, "ab12");
        assert_eq!(
            a.to_header(),
            "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=x-acs-date;host,Signature=ab12"
        );
        assert!(!format!("{a:?}").contains("ab12"));
    }

    #[test]
    fn rejects_bad_authorization() {
        assert_eq!(
            Authorization::parse("ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=a"),
            Err(AuthorizationError::Missing("Signature"))
        );
        assert!(matches!(
            Authorization::parse(
                "ACS3-HMAC-SHA256 Credential=AK,Credential=B,SignedHeaders=a,Signature=x"
            ),
            Err(AuthorizationError::UnknownPart(_))
        ));
        assert_eq!(
            Authorization::parse("nospace"),
            Err(AuthorizationError::NoAlgorithm)
        );
    }
}

//! `k8s-ack-v2.` tokens: base64 of compact JSON describing an `ACS3-HMAC-SHA256` signed
//! `POST /` GetCallerIdentity request, as written by `ack-ram-tool credential-plugin get-token`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::{
    parse_date, reject_duplicates, shorten, SignedRequest, TokenError, TokenFormat, Wire, ACTION,
    STS_VERSION,
};
use crate::signing::acs3::{self, Authorization};
use crate::signing::EMPTY_BODY_SHA256;
use crate::types::AccessKeyId;

/// The query key that binds a v2 token to a cluster (exact case, signed).
pub const CLUSTER_QUERY_KEY: &str = "ACKClusterId";

/// The JSON inside a v2 token. Field order and key sorting match `ack-ram-tool`, so that
/// serialising this reproduces its tokens byte for byte.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default)]
    pub query: Pairs,
    #[serde(default)]
    pub headers: Pairs,
}

/// A JSON object of string values that keeps every key, duplicates included, so that they can
/// be refused rather than silently collapsed. Serialises with keys sorted bytewise.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pairs(pub Vec<(String, String)>);

impl Serialize for Pairs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let sorted: BTreeMap<&str, &str> = self
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        sorted.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairsVisitor;
        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    if out.len() >= 64 {
                        return Err(de::Error::custom("more than 64 entries"));
                    }
                    out.push((k, v));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(PairsVisitor)
    }
}

/// Reads the decoded JSON payload of a v2 token.
pub fn parse(payload: &[u8]) -> Result<SignedRequest, TokenError> {
    let json: TokenJson = serde_json::from_slice(payload).map_err(|e| {
        // serde's messages can quote the input; say only what kind of fault and where.
        TokenError::BadJson(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    if let Some(method) = &json.method {
        if method != "POST" {
            return Err(TokenError::WrongMethod(shorten(method)));
        }
    }

    reject_duplicates(
        "query parameter",
        json.query.0.iter().map(|(k, _)| k.as_str()),
    )?;
    reject_duplicates("header", json.headers.0.iter().map(|(k, _)| k.as_str()))?;
    let query: BTreeMap<String, String> = json.query.0.into_iter().collect();
    let mut headers: BTreeMap<String, String> = json
        .headers
        .0
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();

    let authorization = headers
        .remove("authorization")
        .ok_or(TokenError::Missing("the Authorization header"))?;
    let auth = Authorization::parse(&authorization)?;
    if auth.algorithm != acs3::ALGORITHM {
        return Err(TokenError::UnsupportedAlgorithm(shorten(&auth.algorithm)));
    }
    reject_duplicates(
        "signed header",
        auth.signed_headers.iter().map(String::as_str),
    )?;
    for name in &auth.signed_headers {
        if name.to_ascii_lowercase() != *name || !acs3::is_signable_header(name) {
            return Err(TokenError::DisallowedSignedHeader(shorten(name)));
        }
        if !headers.contains_key(name) {
            return Err(TokenError::SignedHeaderAbsent(shorten(name)));
        }
    }
    // Every x-acs-* header must be signed; other unsigned headers (user-agent) are dropped.
    if let Some(unsigned) = headers
        .keys()
        .find(|k| k.starts_with("x-acs-") && !auth.signed_headers.contains(k))
    {
        return Err(TokenError::UnsignedHeader(shorten(unsigned)));
    }
    headers.retain(|k, _| auth.signed_headers.contains(k));
    // What cannot be put on the wire is refused here, not discovered when the request to STS
    // is built.
    for (name, value) in &headers {
        super::check_sendable(name, value)?;
    }
    super::check_sendable("authorization", &authorization)?;

    match headers.get("x-acs-action") {
        None => return Err(TokenError::Missing("the x-acs-action header")),
        Some(action) if action != ACTION => return Err(TokenError::WrongAction(shorten(action))),
        Some(_) => {}
    }
    match headers.get("x-acs-version") {
        None => return Err(TokenError::Missing("the x-acs-version header")),
        Some(v) if v != STS_VERSION => return Err(TokenError::WrongVersion(shorten(v))),
        Some(_) => {}
    }
    if let Some(hash) = headers.get("x-acs-content-sha256") {
        if hash != EMPTY_BODY_SHA256 {
            return Err(TokenError::BodyHash);
        }
    }
    let signed_at = parse_date(
        headers
            .get("x-acs-date")
            .ok_or(TokenError::Missing("the x-acs-date header"))?,
    )?;
    let cluster_id = query
        .get(CLUSTER_QUERY_KEY)
        .filter(|c| !c.is_empty())
        .ok_or(TokenError::MissingClusterId("query key ACKClusterId"))?
        .clone();

    Ok(SignedRequest {
        format: TokenFormat::V2,
        access_key_id: AccessKeyId(auth.access_key_id),
        signed_at,
        cluster_id,
        has_security_token: headers.contains_key("x-acs-security-token"),
        wire: Wire::V2 {
            query,
            headers,
            authorization,
        },
    })
}

/// Inputs for minting a v2 token.
pub struct MintV2<'a> {
    pub access_key_id: &'a str,
    pub access_key_secret: &'a str,
    pub security_token: Option<&'a str>,
    pub cluster_id: &'a str,
    /// `YYYY-MM-DDThh:mm:ssZ`.
    pub date: &'a str,
    /// Extra query parameters, signed with the rest.
    pub extra_query: &'a [(String, String)],
    pub user_agent: &'a str,
}

/// Signs a GetCallerIdentity request and packs it as a `k8s-ack-v2.` token, in the same shape
/// as `ack-ram-tool`.
pub fn mint(input: &MintV2<'_>) -> String {
    use base64::Engine as _;
    let mut query: BTreeMap<String, String> = input.extra_query.iter().cloned().collect();
    query.insert(CLUSTER_QUERY_KEY.to_string(), input.cluster_id.to_string());
    let mut signed: BTreeMap<String, String> = BTreeMap::new();
    signed.insert("x-acs-action".into(), ACTION.into());
    signed.insert("x-acs-content-sha256".into(), EMPTY_BODY_SHA256.into());
    signed.insert("x-acs-date".into(), input.date.into());
    signed.insert("x-acs-version".into(), STS_VERSION.into());
    if let Some(st) = input.security_token {
        signed.insert("x-acs-security-token".into(), st.into());
    }
    let auth = acs3::sign(
        input.access_key_id,
        input.access_key_secret,
        "POST",
        "/",
        &query,
        &signed,
        EMPTY_BODY_SHA256,
    );
    let mut headers: Vec<(String, String)> = signed.into_iter().collect();
    headers.push(("Authorization".into(), auth.to_header()));
    headers.push(("user-agent".into(), input.user_agent.into()));
    let json = TokenJson {
        cluster_id: Some(input.cluster_id.to_string()),
        method: Some("POST".into()),
        path: Some("/".into()),
        query: Pairs(query.into_iter().collect()),
        headers: Pairs(headers),
    };
    // Serialising plain strings into a Vec cannot fail.
    let bytes = serde_json::to_vec(&json).unwrap_or_default();
    format!(
        "{}{}",
        super::V2_PREFIX,
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

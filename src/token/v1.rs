//! `k8s-ack-v1.` tokens: base64 of a pre-signed RPC v1 (`HMAC-SHA1`) GetCallerIdentity URL,
//! `https://sts.aliyuncs.com/?Action=GetCallerIdentity&...&ClusterId=<id>&Signature=...`.

use super::{
    parse_date, reject_duplicates, shorten, SignedRequest, TokenError, TokenFormat, Wire, ACTION,
    STS_VERSION,
};
use crate::signing::{percent_decode, rpc};
use crate::types::AccessKeyId;

/// The query key that binds a v1 token to a cluster (signed).
pub const CLUSTER_PARAM: &str = "ClusterId";

/// Reads the decoded URL of a v1 token. The URL's host is ignored: the request is only ever
/// sent to the configured STS endpoint.
pub fn parse(payload: &[u8]) -> Result<SignedRequest, TokenError> {
    let url = std::str::from_utf8(payload).map_err(|_| TokenError::BadUrl("not UTF-8"))?;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or(TokenError::BadUrl("not an https:// URL"))?;
    if rest.contains('#') {
        return Err(TokenError::BadUrl("has a fragment"));
    }
    let (authority_and_path, query) = rest
        .split_once('?')
        .ok_or(TokenError::BadUrl("has no query"))?;
    let path = authority_and_path
        .find('/')
        .map_or("", |i| &authority_and_path[i..]);
    if !(path.is_empty() || path == "/") {
        return Err(TokenError::BadUrl("path is not /"));
    }
    let params = parse_query(query)?;
    from_params(params)
}

/// Splits and decodes a query string into its parameters, in order.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, TokenError> {
    let mut params = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = percent_decode(k).ok_or(TokenError::BadUrl("bad percent-encoding"))?;
        let v = percent_decode(v).ok_or(TokenError::BadUrl("bad percent-encoding"))?;
        if params.len() >= 64 {
            return Err(TokenError::BadUrl("more than 64 parameters"));
        }
        params.push((k, v));
    }
    Ok(params)
}

/// Checks decoded RPC parameters and builds the request.
pub fn from_params(params: Vec<(String, String)>) -> Result<SignedRequest, TokenError> {
    reject_duplicates("query parameter", params.iter().map(|(k, _)| k.as_str()))?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let require = |name: &'static str| {
        get(name)
            .filter(|v| !v.is_empty())
            .ok_or(TokenError::Missing(name))
    };

    let action = require("Action")?;
    if action != ACTION {
        return Err(TokenError::WrongAction(shorten(action)));
    }
    let version = require("Version")?;
    if version != STS_VERSION {
        return Err(TokenError::WrongVersion(shorten(version)));
    }
    require("Signature")?;
    let method = require("SignatureMethod")?;
    if method != rpc::SIGNATURE_METHOD {
        return Err(TokenError::UnsupportedAlgorithm(shorten(method)));
    }
    let sig_version = require("SignatureVersion")?;
    if sig_version != rpc::SIGNATURE_VERSION {
        return Err(TokenError::UnsupportedSignatureVersion(shorten(
            sig_version,
        )));
    }
    require("SignatureNonce")?;
    let access_key_id = require("AccessKeyId")?.to_string();
    let signed_at = parse_date(require("Timestamp")?)?;
    let cluster_id = get(CLUSTER_PARAM)
        .filter(|c| !c.is_empty())
        .ok_or(TokenError::MissingClusterId("query parameter ClusterId"))?
        .to_string();
    let has_security_token = get("SecurityToken").is_some_and(|v| !v.is_empty());
    Ok(SignedRequest {
        format: TokenFormat::V1,
        access_key_id: AccessKeyId(access_key_id),
        signed_at,
        cluster_id,
        has_security_token,
        wire: Wire::V1 { params },
    })
}

/// Inputs for minting a v1 token.
pub struct MintV1<'a> {
    pub access_key_id: &'a str,
    pub access_key_secret: &'a str,
    pub security_token: Option<&'a str>,
    pub cluster_id: &'a str,
    /// `YYYY-MM-DDThh:mm:ssZ`.
    pub timestamp: &'a str,
    pub nonce: &'a str,
    /// The host written into the URL (informational: verifiers send to their own endpoint).
    pub host: &'a str,
}

/// Signs a GetCallerIdentity URL and packs it as a `k8s-ack-v1.` token, with the parameters in
/// the order ack-ram-authenticator's own client writes them.
pub fn mint(input: &MintV1<'_>) -> String {
    use base64::Engine as _;
    let mut params: Vec<(String, String)> = vec![
        ("Action".into(), ACTION.into()),
        ("Format".into(), "JSON".into()),
        ("Version".into(), STS_VERSION.into()),
        ("Timestamp".into(), input.timestamp.into()),
        ("SignatureNonce".into(), input.nonce.into()),
    ];
    if let Some(st) = input.security_token {
        params.push(("SecurityToken".into(), st.into()));
    }
    params.push((CLUSTER_PARAM.into(), input.cluster_id.into()));
    params.push(("SignatureMethod".into(), rpc::SIGNATURE_METHOD.into()));
    params.push(("SignatureVersion".into(), rpc::SIGNATURE_VERSION.into()));
    params.push(("AccessKeyId".into(), input.access_key_id.into()));
    let query = rpc::signed_query("GET", input.access_key_secret, &params);
    let url = format!("https://{}/?{query}", input.host);
    format!(
        "{}{}",
        super::V1_PREFIX,
        base64::engine::general_purpose::STANDARD.encode(url)
    )
}

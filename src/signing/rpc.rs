//! Alibaba Cloud RPC signature version 1.0 with `HMAC-SHA1`.
//!
//! ```text
//! Canonical    = sorted rfc3986(k)=rfc3986(v) pairs joined by &
//! StringToSign = METHOD + "&%2F&" + rfc3986(Canonical)
//! Signature    = base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))
//! ```

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::percent_encode;

/// The only `SignatureMethod` accepted.
pub const SIGNATURE_METHOD: &str = "HMAC-SHA1";
/// The only `SignatureVersion` accepted.
pub const SIGNATURE_VERSION: &str = "1.0";

/// Sorted, percent-encoded `key=value` pairs joined by `&` (the `Signature` parameter excluded).
pub fn canonicalized_query<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    super::sorted_encoded_query(params.into_iter().filter(|(k, _)| *k != "Signature"))
}

/// `METHOD&%2F&rfc3986(canonicalized query)`.
pub fn string_to_sign(method: &str, canonicalized_query: &str) -> String {
    format!(
        "{}&%2F&{}",
        method.to_ascii_uppercase(),
        percent_encode(canonicalized_query)
    )
}

/// base64(HMAC-SHA1(secret + "&", string to sign)).
pub fn signature(secret: &str, string_to_sign: &str) -> String {
    let key = format!("{secret}&");
    let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Signs `params` and returns the full query string: the parameters in the order given,
/// percent-encoded, followed by `Signature`.
pub fn signed_query(method: &str, secret: &str, params: &[(String, String)]) -> String {
    let canonical = canonicalized_query(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let sig = signature(secret, &string_to_sign(method, &canonical));
    let mut out: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    out.push(format!("Signature={}", percent_encode(&sig)));
    out.join("&")
}

/// Checks the `Signature` parameter of an RPC request against `secret`, for `method`.
pub fn verify(method: &str, params: &[(String, String)], secret: &str) -> bool {
    let Some((_, given)) = params.iter().find(|(k, _)| k == "Signature") else {
        return false;
    };
    let canonical = canonicalized_query(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let expected = signature(secret, &string_to_sign(method, &canonical));
    super::constant_time_eq(expected.as_bytes(), given.as_bytes())
}

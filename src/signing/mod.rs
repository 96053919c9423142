//! Alibaba Cloud request signatures, shared by the `token` client, the server's local checks,
//! the STS emulator and the tests.
//!
//! Two schemes are implemented:
//! - [`acs3`]: OpenAPI V3, `ACS3-HMAC-SHA256` (the `k8s-ack-v2.` token).
//! - [`rpc`]: RPC signature 1.0, `HMAC-SHA1` (the legacy `k8s-ack-v1.` token, and `AssumeRole`).
//!
//! The percent-encoding both schemes share lives here, once.

pub mod acs3;
pub mod rpc;

use sha2::{Digest, Sha256};

/// Percent-encodes `input` the way Alibaba's signers do (RFC 3986 unreserved set):
/// `A-Z a-z 0-9 - _ . ~` stay, every other byte becomes `%XX` with upper-case hex.
/// A space is `%20` (never `+`) and `*` is `%2A`.
pub fn percent_encode(input: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(input.len() + input.len() / 2);
    for &b in input.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// Percent-encodes each `key=value` pair, sorts the pairs bytewise and joins them with `&`:
/// the canonical query of both signature schemes.
pub fn sorted_encoded_query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Decodes a query-string component: `%XX` escapes and, as form decoders do, `+` as a space.
/// Returns `None` for a malformed escape or a result that is not UTF-8.
pub fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex_val(*bytes.get(i + 1)?)?;
                let lo = hex_val(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Lower-case hex SHA-256 of the empty body (`x-acs-content-sha256` of a request without a body).
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_reserved_and_unicode() {
        assert_eq!(
            percent_encode("a b+c*d~e/f?g&h=i%j"),
            "a%20b%2Bc%2Ad~e%2Ff%3Fg%26h%3Di%25j"
        );
        assert_eq!(percent_encode("ü"), "%C3%BC");
        assert_eq!(percent_encode("AZaz09-_.~"), "AZaz09-_.~");
    }

    #[test]
    fn decodes_form_and_escapes() {
        assert_eq!(percent_decode("a+b%2Bc%3a").as_deref(), Some("a b+c:"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%FF"), None);
    }

    #[test]
    fn empty_hash_constant_matches() {
        assert_eq!(sha256_hex(b""), EMPTY_BODY_SHA256);
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

//! The checks of `AssumeRoleWithOIDC` on its JWT, in order, with the code each failure gets
//! (all HTTP 401, as STS answers them):
//!
//! 1. Shape: three base64url parts, JSON header and claims, `alg` `RS256`, no `crit`, at most
//!    [`MAX_TOKEN_LEN`] bytes: `AuthenticationFail.OIDCToken.Invalid`.
//! 2. Signature: RS256 with one of the provider's `jwks` (the one named by `kid` when the header
//!    has one): `AuthenticationFail.OIDCToken.InvalidSignature`.
//! 3. `exp` (required) in the past: `AuthenticationFail.OIDCToken.Expired`.
//! 4. `nbf` or `iat` more than [`LEEWAY`] in the future, or no `sub`:
//!    `AuthenticationFail.OIDCToken.Invalid`.
//! 5. `iss` not the provider's `issuerUrl`: `AuthenticationFail.OIDCToken.IssuerNotMatch`.
//! 6. `aud` (a string or a list) holding none of the provider's `clientIds`:
//!    `AuthenticationFail.OIDCToken.AudienceNotMatch`.
//!
//! Then the role: an unknown `RoleArn` is `EntityNotExist.Role` (404); an unknown
//! `OIDCProviderArn`, a role that does not trust the provider, or a `sub` matching none of the
//! role's `oidcSubjects` is `AuthenticationFail.NoPermission` (401).

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use super::errors::StsErrorCode;
use super::keys::OidcProvider;

/// The longest OIDC token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// How far in the future `nbf` and `iat` may be (clock skew between issuer and STS).
pub const LEEWAY: TimeDelta = TimeDelta::seconds(60);

/// What a verified token says (`OIDCTokenInfo` of the answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub subject: String,
    pub issuer: String,
    /// The token's audiences.
    pub client_ids: Vec<String>,
    pub expiration: DateTime<Utc>,
    pub issued_at: Option<DateTime<Utc>>,
}

fn invalid(why: &str) -> StsErrorCode {
    StsErrorCode::OidcTokenInvalid(why.to_string())
}

fn decode_json(part: &str, what: &str) -> Result<Value, StsErrorCode> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| invalid(&format!("the JWT {what} is not base64url")))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|_| invalid(&format!("the JWT {what} is not JSON")))?;
    if !value.is_object() {
        return Err(invalid(&format!("the JWT {what} is not a JSON object")));
    }
    Ok(value)
}

fn time_claim(claims: &Value, name: &str) -> Result<Option<DateTime<Utc>>, StsErrorCode> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite())
            .and_then(|f| DateTime::from_timestamp(f.floor() as i64, 0))
            .map(Some)
            .ok_or_else(|| invalid(&format!("the claim {name} is not a NumericDate"))),
    }
}

/// Verifies `token` against `provider` at `now`.
pub fn verify(
    token: &str,
    provider: &OidcProvider,
    now: DateTime<Utc>,
) -> Result<TokenInfo, StsErrorCode> {
    if token.is_empty() {
        return Err(invalid("the OIDCToken is empty"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid(&format!(
            "the OIDCToken is longer than {MAX_TOKEN_LEN} bytes"
        )));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, claims_b64, signature_b64] = parts[..] else {
        return Err(invalid("a JWT has three parts separated by '.'"));
    };
    let header = decode_json(header_b64, "header")?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg != "RS256" {
        return Err(invalid(&format!(
            "the algorithm {:?} of the JWT header is not supported (RS256 is)",
            super::errors::shorten(alg)
        )));
    }
    if header.get("crit").is_some() {
        return Err(invalid("the JWT header has critical extensions"));
    }
    let claims = decode_json(claims_b64, "claims")?;
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| invalid("the JWT signature is not base64url"))?;

    let kid = header.get("kid").and_then(Value::as_str);
    let signed = &token.as_bytes()[..header_b64.len() + 1 + claims_b64.len()];
    let verified = provider
        .keys
        .iter()
        .filter(|k| match (kid, &k.kid) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        })
        .any(|k| {
            ring::signature::RsaPublicKeyComponents { n: &k.n, e: &k.e }
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    signed,
                    &signature,
                )
                .is_ok()
        });
    if !verified {
        return Err(StsErrorCode::OidcTokenSignature);
    }

    let expiration =
        time_claim(&claims, "exp")?.ok_or_else(|| invalid("the claim exp is missing"))?;
    if expiration <= now {
        return Err(StsErrorCode::OidcTokenExpired);
    }
    if time_claim(&claims, "nbf")?.is_some_and(|nbf| nbf > now + LEEWAY) {
        return Err(invalid("the token is not valid yet (nbf)"));
    }
    let issued_at = time_claim(&claims, "iat")?;
    if issued_at.is_some_and(|iat| iat > now + LEEWAY) {
        return Err(invalid("the token was issued in the future (iat)"));
    }
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("the claim sub is missing"))?
        .to_string();
    let issuer = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    if issuer != provider.issuer_url {
        return Err(StsErrorCode::OidcIssuerNotMatch);
    }
    let audiences: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    if !audiences.iter().any(|a| provider.client_ids.contains(a)) {
        return Err(StsErrorCode::OidcAudienceNotMatch);
    }
    Ok(TokenInfo {
        subject,
        issuer: issuer.to_string(),
        client_ids: audiences,
        expiration,
        issued_at,
    })
}

/// Whether `text` matches the glob `pattern`: `*` any run of characters, `?` exactly one,
/// everything else itself (case-sensitive).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Signs `header` and `claims` as an RS256 JWT with an RSA key in PKCS#8 PEM: what an OIDC
/// issuer does, for tests that need tokens [`verify`] accepts (or, with another key, refuses).
pub fn sign_rs256(pkcs8_pem: &[u8], header: &Value, claims: &Value) -> Result<String, String> {
    use rustls_pki_types::pem::PemObject as _;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pkcs8_pem)
        .map_err(|e| format!("not a PKCS#8 PEM key: {e}"))?;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
        .map_err(|e| format!("not an RSA key: {e}"))?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut sig = vec![0u8; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut sig,
    )
    .map_err(|_| "signing failed".to_string())?;
    Ok(format!("{signed}.{}", b64(&sig)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::keys::KeyStore;
    use serde_json::json;

    const ISSUER: &str = "https://oidc.emulator.invalid/ack-rrsa-emulator";

    fn provider() -> OidcProvider {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/emulator-keys.yaml");
        let store = KeyStore::load(&path).expect("example keys");
        store
            .oidc_provider("acs:ram::1234567890123456:oidc-provider/ack-rrsa-emulator")
            .expect("provider")
            .clone()
    }

    fn now() -> DateTime<Utc> {
        crate::types::parse_utc("2026-11-23T09:36:00Z").expect("date")
    }

    /// Signs with the test-only fixture key.
    fn sign(header: &Value, claims: &Value) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/oidc-test-key.pem");
        sign_rs256(&std::fs::read(path).expect("fixture"), header, claims).expect("sign")
    }

    fn claims(exp_in: i64, extra: Value) -> Value {
        let mut c = json!({"iss": ISSUER, "aud": "sts.aliyuncs.com", "sub": "s", "exp": now().timestamp() + exp_in});
        if let Value::Object(map) = extra {
            for (k, v) in map {
                c[k] = v;
            }
        }
        c
    }

    fn code(r: Result<TokenInfo, StsErrorCode>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn verifies_and_checks_each_claim() {
        let p = provider();
        let h = json!({"alg": "RS256", "kid": "emulator-test-key"});
        let ok = sign(
            &h,
            &claims(
                60,
                json!({"aud": ["x", "sts.aliyuncs.com"], "iat": now().timestamp()}),
            ),
        );
        let info = verify(&ok, &p, now()).expect("valid");
        assert_eq!(info.subject, "s");
        assert_eq!(info.client_ids, vec!["x", "sts.aliyuncs.com"]);
        assert_eq!(info.issued_at, Some(now()));
        // No kid: every key is tried.
        assert_eq!(
            code(verify(
                &sign(&json!({"alg": "RS256"}), &claims(60, json!({}))),
                &p,
                now()
            )),
            "ok"
        );
        let cases = [
            (
                sign(&h, &claims(0, json!({}))),
                "AuthenticationFail.OIDCToken.Expired",
            ),
            (
                sign(
                    &json!({"alg": "RS256", "kid": "other"}),
                    &claims(60, json!({})),
                ),
                "AuthenticationFail.OIDCToken.InvalidSignature",
            ),
            (
                sign(&h, &claims(60, json!({"nbf": now().timestamp() + 61}))),
                "AuthenticationFail.OIDCToken.Invalid",
            ),
            (
                sign(&h, &claims(60, json!({"iat": now().timestamp() + 61}))),
                "AuthenticationFail.OIDCToken.Invalid",
            ),
            (
                sign(&h, &claims(60, json!({"exp": "soon"}))),
                "AuthenticationFail.OIDCToken.Invalid",
            ),
            (
                sign(&h, &claims(60, json!({"sub": ""}))),
                "AuthenticationFail.OIDCToken.Invalid",
            ),
            (
                sign(
                    &json!({"alg": "RS256", "crit": ["x"]}),
                    &claims(60, json!({})),
                ),
                "AuthenticationFail.OIDCToken.Invalid",
            ),
            (
                sign(&h, &claims(60, json!({"iss": null}))),
                "AuthenticationFail.OIDCToken.IssuerNotMatch",
            ),
            (
                sign(&h, &claims(60, json!({"aud": []}))),
                "AuthenticationFail.OIDCToken.AudienceNotMatch",
            ),
            ("a.b".to_string(), "AuthenticationFail.OIDCToken.Invalid"),
            (
                "a.b.c.d".to_string(),
                "AuthenticationFail.OIDCToken.Invalid",
            ),
        ];
        for (token, want) in cases {
            assert_eq!(code(verify(&token, &p, now())), want, "{token}");
        }
        // nbf and iat within the leeway are fine.
        let near = sign(
            &h,
            &claims(
                600,
                json!({"nbf": now().timestamp() + 60, "iat": now().timestamp() + 60}),
            ),
        );
        assert_eq!(code(verify(&near, &p, now())), "ok");
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "system:serviceaccount:apps:*",
            "system:serviceaccount:apps:web"
        ));
        assert!(!glob_match(
            "system:serviceaccount:apps:*",
            "system:serviceaccount:other:web"
        ));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "Exact"));
        // Bounded work on a hostile pattern.
        let long = "a".repeat(2000);
        assert!(!glob_match(&format!("{}b", "*a".repeat(50)), &long));
    }
}

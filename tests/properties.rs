//! Property tests: no input makes a parser panic, and signing round-trips.
//!
//! Every property runs the proptest default number of cases (256; `PROPTEST_CASES` overrides).

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use ram_authenticator::arn::Arn;
use ram_authenticator::mapping::glob::Glob;
use ram_authenticator::review;
use ram_authenticator::signing::acs3::{self, Authorization};
use ram_authenticator::signing::{percent_decode, percent_encode, rpc, EMPTY_BODY_SHA256};
use ram_authenticator::token::{self, v1, v2, SignedRequest, TokenFormat, Wire};
use ram_authenticator::types::format_utc;
use serde_json::{json, Map, Value};

const CLUSTER: &str = "c1234567890abcdef";
const DATE: &str = "2026-11-23T09:35:42Z";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn date(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test date")
        .with_timezone(&Utc)
}

/// Any instant from 1970 to 2100, whole seconds.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_102_444_800).prop_map(|s| DateTime::from_timestamp(s, 0).expect("in range"))
}

/// Runs everything a server does with a token and checks what must hold for any input.
fn exercise(token_text: &str, now: DateTime<Utc>) {
    match token::parse(token_text) {
        Ok(req) => {
            check_request(token_text, &req);
            let _ = token::check(&req, CLUSTER, now);
            let _ = token::check(&req, &req.cluster_id, req.signed_at);
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(!e.reason().is_empty());
        }
    }
    match token::parse_and_check(token_text, CLUSTER, now) {
        Ok(req) => {
            assert_eq!(req.cluster_id, CLUSTER);
            assert!((req.signed_at - now).abs() <= token::MAX_SKEW);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fn check_request(token_text: &str, req: &SignedRequest) {
    assert!(!req.cluster_id.is_empty());
    assert!(!req.access_key_id.0.is_empty());
    let want = if token_text.starts_with(token::V2_PREFIX) {
        TokenFormat::V2
    } else {
        TokenFormat::V1
    };
    assert_eq!(req.format, want);
    let _ = req.query_string();
    let _ = req.headers();
    let _ = req.method();
    let _ = req.valid_until();
}

// ---------------------------------------------------------------------------------------------
// Token strategies

const HEADER_NAMES: &[&str] = &[
    "Authorization",
    "authorization",
    "AUTHORIZATION",
    "x-acs-action",
    "X-Acs-Action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-content-sha256",
    "x-acs-security-token",
    "x-acs-signature-nonce",
    "host",
    "content-type",
    "user-agent",
    "",
];

const QUERY_NAMES: &[&str] = &[
    "ACKClusterId",
    "ackclusterid",
    "ACKCLUSTERID",
    "Action",
    "Version",
    "",
];

fn pick(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(names).prop_map(str::to_string),
        1 => ".{0,12}",
    ]
}

/// A signed-header list, sometimes valid, sometimes not.
fn signed_headers() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-version".to_string()),
        vec(pick(HEADER_NAMES), 0..6).prop_map(|v| v.join(";")),
        ".{0,24}",
    ]
}

fn authorization_value() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            3 => Just("ACS3-HMAC-SHA256".to_string()),
            1 => "[A-Za-z0-9-]{0,20}",
        ],
        prop_oneof![3 => "[A-Za-z0-9.]{1,24}", 1 => ".{0,8}"],
        signed_headers(),
        prop_oneof![3 => "[0-9a-f]{64}", 1 => ".{0,8}"],
        0u8..6,
    )
        .prop_map(|(alg, ak, sh, sig, shape)| match shape {
            0 => format!("{alg} Credential={ak},SignedHeaders={sh},Signature={sig}"),
            1 => format!("{alg} Credential={ak},SignedHeaders={sh}"),
            2 => {
                format!("{alg} Credential={ak},Credential={ak},SignedHeaders={sh},Signature={sig}")
            }
            3 => format!("{alg}Credential={ak}"),
            4 => format!("  {alg}   Signature={sig} , Credential={ak},SignedHeaders={sh}  "),
            _ => format!("{alg} Credential={ak},Unknown=1,SignedHeaders={sh},Signature={sig}"),
        })
}

/// Dates at and beyond the edges of what a date type can hold.
fn extreme_date() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("+262143-12-31T23:59:59Z".to_string()),
        Just("-262144-01-01T00:00:00Z".to_string()),
        Just("262143-12-31T23:50:00Z".to_string()),
        Just("0000-01-01T00:00:00Z".to_string()),
        Just("9999-12-31T23:59:59Z".to_string()),
        "[+-]?[0-9]{1,7}-(0[1-9]|1[0-2])-[0-2][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GetCallerIdentity".to_string()),
        Just("2015-04-01".to_string()),
        Just(DATE.to_string()),
        Just(EMPTY_BODY_SHA256.to_string()),
        Just("1999-99-99T99:99:99Z".to_string()),
        extreme_date(),
        authorization_value(),
        ".{0,40}",
    ]
}

/// A JSON value that is usually a string but sometimes another type.
fn json_value(strings: BoxedStrategy<String>) -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => strings.prop_map(Value::String),
        1 => Just(Value::Null),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => vec(".{0,4}", 0..3).prop_map(|v| json!(v)),
        1 => Just(json!({"nested": {"a": 1}})),
    ]
}

fn json_object(
    names: BoxedStrategy<String>,
    values: BoxedStrategy<String>,
) -> impl Strategy<Value = Value> {
    vec((names, json_value(values)), 0..10).prop_map(|pairs| {
        let mut m = Map::new();
        for (k, v) in pairs {
            m.insert(k, v);
        }
        Value::Object(m)
    })
}

/// JSON that looks like a v2 token but is wrong in random ways.
fn structured_v2_json() -> impl Strategy<Value = String> {
    (
        json_object(pick(QUERY_NAMES).boxed(), ".{0,24}".boxed()),
        json_object(pick(HEADER_NAMES).boxed(), header_value().boxed()),
        proptest::option::of(json_value(
            prop_oneof![Just("POST".to_string()), ".{0,6}"].boxed(),
        )),
        proptest::option::of(json_value(".{0,8}".boxed())),
        any::<bool>(),
    )
        .prop_map(|(query, headers, method, path, duplicate_keys)| {
            let mut top = Map::new();
            top.insert("query".into(), query);
            top.insert("headers".into(), headers);
            if let Some(m) = method {
                top.insert("method".into(), m);
            }
            if let Some(p) = path {
                top.insert("path".into(), p);
            }
            if duplicate_keys {
                // Duplicate keys (which serde_json's Map would collapse) via raw text.
                let body = Value::Object(top).to_string();
                format!(
                    "{},\"headers\":{{\"x-acs-date\":\"{DATE}\",\"X-ACS-DATE\":\"{DATE}\"}}}}",
                    &body[..body.len() - 1]
                )
            } else {
                Value::Object(top).to_string()
            }
        })
}

/// A valid v2 token's JSON with one random edit.
fn mutated_v2_json() -> impl Strategy<Value = String> {
    let base: Value = {
        let t = v2::mint(&v2::MintV2 {
            access_key_id: "LTAI5tAlice",
            access_key_secret: "AliceSecret",
            security_token: Some("SecurityToken"),
            cluster_id: CLUSTER,
            date: DATE,
            extra_query: &[],
            user_agent: "properties",
        });
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&t[token::V2_PREFIX.len()..])
            .expect("b64");
        serde_json::from_slice(&payload).expect("json")
    };
    (
        prop_oneof![Just("query"), Just("headers"), Just("method"), Just("")],
        pick(HEADER_NAMES),
        json_value(header_value().boxed()),
        0u8..3,
    )
        .prop_map(move |(section, key, value, op)| {
            let mut v = base.clone();
            let target = if section.is_empty() {
                &mut v
            } else {
                &mut v[section]
            };
            if let Some(obj) = target.as_object_mut() {
                match op {
                    0 => {
                        obj.remove(&key);
                        // Also remove a key that exists, so every section loses something.
                        if let Some(first) = obj.keys().next().cloned() {
                            obj.remove(&first);
                        }
                    }
                    1 => {
                        obj.insert(key, value);
                    }
                    _ => {
                        if let Some(k) = obj.keys().nth(key.len() % obj.len().max(1)).cloned() {
                            obj.insert(k, value);
                        }
                    }
                }
            } else {
                *target = value;
            }
            v.to_string()
        })
}

const V1_PARAM_NAMES: &[&str] = &[
    "Action",
    "Version",
    "Format",
    "AccessKeyId",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
    "ClusterId",
    "SecurityToken",
    "Signature",
    "action",
    "",
];

fn v1_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GetCallerIdentity".to_string()),
        Just("2015-04-01".to_string()),
        Just("HMAC-SHA1".to_string()),
        Just("1.0".to_string()),
        Just(DATE.to_string()),
        extreme_date(),
        Just(CLUSTER.to_string()),
        "[A-Za-z0-9]{1,12}",
        ".{0,16}",
    ]
}

/// A URL like a v1 token's, with random parameters, encodings and shapes.
fn v1_url() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            4 => Just("https://sts.aliyuncs.com/?".to_string()),
            1 => Just("http://h?".to_string()),
            1 => Just("https://h/x?".to_string()),
            1 => Just("https://h/#?".to_string()),
            1 => Just("ftp://h/?".to_string()),
            1 => ".{0,12}",
        ],
        vec((pick(V1_PARAM_NAMES), v1_value(), 0u8..4), 0..14),
        prop_oneof![Just(String::new()), Just("&".to_string()), "[%&=+]{0,4}"],
    )
        .prop_map(|(head, params, tail)| {
            let query: Vec<String> = params
                .into_iter()
                .map(|(k, v, enc)| match enc {
                    0 | 1 => format!("{}={}", percent_encode(&k), percent_encode(&v)),
                    2 => format!("{k}={v}"),
                    _ => percent_encode(&k),
                })
                .collect();
            format!("{head}{}{tail}", query.join("&"))
        })
}

// ---------------------------------------------------------------------------------------------
// Tokens: no input panics

proptest! {
    #[test]
    fn parse_survives_any_string(s in ".{0,300}", now in instant()) {
        exercise(&s, now);
        exercise(&format!("{}{s}", token::V2_PREFIX), now);
        exercise(&format!("{}{s}", token::V1_PREFIX), now);
    }

    #[test]
    fn parse_survives_base64_of_any_bytes(bytes in vec(any::<u8>(), 0..1200), now in instant()) {
        let packed = b64(&bytes);
        exercise(&format!("{}{packed}", token::V2_PREFIX), now);
        exercise(&format!("{}{packed}", token::V1_PREFIX), now);
        // Padding dropped and whitespace around it: the decoder is lenient about both.
        exercise(&format!("{} {} ", token::V2_PREFIX, packed.trim_end_matches('=')), now);
    }

    #[test]
    fn parse_survives_structured_wrong_v2(json in structured_v2_json(), now in instant()) {
        exercise(&format!("{}{}", token::V2_PREFIX, b64(json.as_bytes())), now);
    }

    #[test]
    fn parse_survives_mutated_valid_v2(json in mutated_v2_json()) {
        let t = format!("{}{}", token::V2_PREFIX, b64(json.as_bytes()));
        exercise(&t, date(DATE));
        if let Ok(req) = token::parse(&t) {
            // Whatever survived parsing still names the only action STS may be asked.
            if let Wire::V2 { headers, .. } = &req.wire {
                prop_assert_eq!(headers.get("x-acs-action").map(String::as_str), Some(token::ACTION));
                prop_assert_eq!(headers.get("x-acs-version").map(String::as_str), Some(token::STS_VERSION));
            }
        }
    }

    #[test]
    fn parse_survives_url_shaped_v1(url in v1_url(), now in instant()) {
        let t = format!("{}{}", token::V1_PREFIX, b64(url.as_bytes()));
        exercise(&t, now);
        exercise(&t, date(DATE));
        let _ = v1::parse_query(&url);
    }
}

// ---------------------------------------------------------------------------------------------
// TokenReview decoding

fn json_tree() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>().prop_map(|f| json!(f)),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just("TokenReview".to_string()),
            Just("authentication.k8s.io/v1".to_string()),
            Just("authentication.k8s.io/v1beta1".to_string()),
            ".{0,20}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(
                (
                    prop_oneof![
                        Just("apiVersion".to_string()),
                        Just("kind".to_string()),
                        Just("spec".to_string()),
                        Just("token".to_string()),
                        Just("audiences".to_string()),
                        ".{0,8}",
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn review_decode_survives_any_bytes(bytes in vec(any::<u8>(), 0..2000)) {
        if let Err(e) = review::decode(&bytes) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn review_decode_survives_json_shapes(
        spec in json_tree(),
        kind in json_tree(),
        api in json_tree(),
        top in json_tree(),
    ) {
        let body = json!({"apiVersion": api, "kind": kind, "spec": spec});
        let _ = review::decode(body.to_string().as_bytes());
        let _ = review::decode(top.to_string().as_bytes());
        let mut nested = top.clone();
        if let Some(obj) = nested.as_object_mut() {
            obj.insert("kind".into(), json!("TokenReview"));
            obj.insert("apiVersion".into(), json!("authentication.k8s.io/v1"));
        }
        let _ = review::decode(nested.to_string().as_bytes());
    }

    #[test]
    fn review_decode_accepts_any_token_string(
        tok in ".{1,200}",
        auds in vec(".{0,10}", 0..4),
        v1 in any::<bool>(),
    ) {
        let api = if v1 { "authentication.k8s.io/v1" } else { "authentication.k8s.io/v1beta1" };
        let body = json!({"apiVersion": api, "kind": "TokenReview", "spec": {"token": tok, "audiences": auds}});
        let r = review::decode(body.to_string().as_bytes()).expect("a well-formed review decodes");
        prop_assert_eq!(r.token.expose(), tok.as_str());
        prop_assert_eq!(r.audiences, auds);
        prop_assert_eq!(r.api_version.as_str(), api);
    }
}

// ---------------------------------------------------------------------------------------------
// ARNs and globs

proptest! {
    #[test]
    fn arn_parse_survives_anything(
        s in ".{0,80}",
        acct in ".{0,12}",
        kind in prop_oneof![Just("user"), Just("ROLE"), Just("assumed-role"), Just("root"), Just("x")],
        rest in ".{0,24}",
    ) {
        for raw in [s.clone(), format!("acs:ram::{acct}:{kind}/{rest}"), format!("ACS:RAM::{acct}:{kind}{rest}")] {
            if let Ok(arn) = Arn::parse(&raw) {
                let c = arn.canonical();
                prop_assert_eq!(c.key(), c.as_str().to_lowercase());
                let _ = arn.session_name();
                prop_assert_eq!(arn.as_str(), raw.as_str());
            }
            let _ = ram_authenticator::arn::canonicalize(&raw);
        }
    }

    #[test]
    fn glob_survives_anything(pattern in "[*?a-c.]{0,16}|.{0,16}", text in "[a-c.]{0,24}|.{0,24}") {
        let _ = Glob::new(&pattern).matches_lower(&text);
        let _ = Glob::new(&pattern).literal_len();
    }

    #[test]
    fn star_matches_everything(text in ".{0,64}", stars in 1usize..4) {
        prop_assert!(Glob::new(&"*".repeat(stars)).matches_lower(&text));
    }

    #[test]
    fn question_marks_match_exactly_that_many_chars(text in ".{0,12}", n in 0usize..12) {
        let g = Glob::new(&"?".repeat(n));
        prop_assert_eq!(g.matches_lower(&text), text.chars().count() == n);
    }

    #[test]
    fn literal_pattern_matches_only_itself(pattern in "[^*?]{0,24}", other in "[^*?]{0,24}") {
        let g = Glob::new(&pattern);
        prop_assert!(g.matches_lower(&pattern.to_lowercase()));
        prop_assert!(g.matches_lower(&pattern.to_uppercase().to_lowercase()) ==
            (pattern.to_uppercase().to_lowercase() == pattern.to_lowercase()));
        prop_assert_eq!(
            g.matches_lower(&other.to_lowercase()),
            other.to_lowercase() == pattern.to_lowercase()
        );
        // Any one extra character breaks the match: patterns are anchored.
        let longer = format!("{}x", pattern.to_lowercase());
        prop_assert!(!g.matches_lower(&longer));
    }

    #[test]
    fn prefix_star_matches_its_prefix(prefix in "[^*?]{0,16}", tail in ".{0,16}") {
        let g = Glob::new(&format!("{prefix}*"));
        let text = format!("{}{}", prefix.to_lowercase(), tail);
        prop_assert!(g.matches_lower(&text));
    }
}

// ---------------------------------------------------------------------------------------------
// Signing round trips

/// The same string with one character replaced by a different one (never whitespace), or `x`
/// when empty.
fn change_one_char(s: &str, at: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return "x".to_string();
    }
    let i = at % chars.len();
    chars
        .iter()
        .enumerate()
        .map(|(j, &c)| {
            if j != i {
                c
            } else if c == 'a' {
                'b'
            } else {
                'a'
            }
        })
        .collect()
}

fn header_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map(
        prop_oneof![
            Just("x-acs-action".to_string()),
            Just("x-acs-date".to_string()),
            Just("x-acs-security-token".to_string()),
            Just("host".to_string()),
            Just("content-type".to_string()),
            "x-acs-[a-z0-9-]{1,12}",
        ],
        ".{0,40}",
        1..6,
    )
}

proptest! {
    #[test]
    fn acs3_sign_then_verify(
        query in btree_map(".{0,16}", ".{0,32}", 0..6),
        headers in header_map(),
        secret in ".{0,48}",
        akid in "[A-Za-z0-9.]{1,24}",
        at in any::<usize>(),
        pick_query in any::<bool>(),
    ) {
        let auth = acs3::sign(&akid, &secret, "POST", "/", &query, &headers, EMPTY_BODY_SHA256);
        prop_assert!(acs3::verify(&auth, &secret, "POST", "/", &query, &headers, EMPTY_BODY_SHA256));
        // The header form survives a parse.
        let reparsed = Authorization::parse(&auth.to_header()).expect("own header parses");
        prop_assert_eq!(&reparsed, &auth);
        prop_assert!(acs3::verify(&reparsed, &secret, "POST", "/", &query, &headers, EMPTY_BODY_SHA256));

        // Another secret fails.
        let other = change_one_char(&secret, at);
        prop_assert!(!acs3::verify(&auth, &other, "POST", "/", &query, &headers, EMPTY_BODY_SHA256));

        // Another header value fails.
        let mut h2 = headers.clone();
        let name = h2.keys().nth(at % h2.len()).cloned().expect("non-empty");
        let v = h2[&name].clone();
        h2.insert(name, change_one_char(&v, at / 7));
        prop_assert!(!acs3::verify(&auth, &secret, "POST", "/", &query, &h2, EMPTY_BODY_SHA256));

        // Another query value (or an extra parameter) fails.
        let mut q2 = query.clone();
        if pick_query && !q2.is_empty() {
            let k = q2.keys().nth(at % q2.len()).cloned().expect("non-empty");
            let v = q2[&k].clone();
            q2.insert(k, change_one_char(&v, at / 3));
        } else {
            q2.insert(format!("{}extra", q2.keys().last().cloned().unwrap_or_default()), String::new());
        }
        prop_assert!(!acs3::verify(&auth, &secret, "POST", "/", &q2, &headers, EMPTY_BODY_SHA256));

        // Another method or body fails; a signed header missing fails.
        prop_assert!(!acs3::verify(&auth, &secret, "GET", "/", &query, &headers, EMPTY_BODY_SHA256));
        prop_assert!(!acs3::verify(&auth, &secret, "POST", "/", &query, &headers, &"0".repeat(64)));
        let mut h3 = headers.clone();
        let first = h3.keys().next().cloned().expect("non-empty");
        h3.remove(&first);
        prop_assert!(!acs3::verify(&auth, &secret, "POST", "/", &query, &h3, EMPTY_BODY_SHA256));
    }
}

/// RPC parameter names and values, leaning on the characters encoders get wrong.
fn rpc_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ +*~%&=/:?A-Za-z0-9]{0,16}",
        ".{0,16}",
        Just("a b+c*d~e%20f".to_string()),
        Just("ü日本 %2B".to_string()),
    ]
}

proptest! {
    #[test]
    fn rpc_signed_query_then_parse_and_verify(
        params in vec((rpc_text(), rpc_text()), 0..10),
        secret in ".{0,40}",
        at in any::<usize>(),
        get in any::<bool>(),
    ) {
        let params: Vec<(String, String)> =
            params.into_iter().filter(|(k, _)| k != "Signature").collect();
        let method = if get { "GET" } else { "POST" };
        let query = rpc::signed_query(method, &secret, &params);
        let parsed = v1::parse_query(&query).expect("own query parses");
        // The parameters come back in order and unchanged, Signature last.
        prop_assert_eq!(&parsed[..params.len()], &params[..]);
        prop_assert_eq!(parsed.len(), params.len() + 1);
        prop_assert_eq!(parsed[params.len()].0.as_str(), "Signature");
        prop_assert!(rpc::verify(method, &parsed, &secret));

        // A different secret, method or value fails.
        prop_assert!(!rpc::verify(method, &parsed, &change_one_char(&secret, at)));
        let other_method = if get { "POST" } else { "GET" };
        prop_assert!(!rpc::verify(other_method, &parsed, &secret));
        if !params.is_empty() {
            let mut p2 = parsed.clone();
            let i = at % params.len();
            p2[i].1 = change_one_char(&p2[i].1, at / 5);
            prop_assert!(!rpc::verify(method, &p2, &secret));
        }
        // A tampered signature fails.
        let mut p3 = parsed.clone();
        let last = p3.len() - 1;
        p3[last].1 = change_one_char(&p3[last].1, at);
        prop_assert!(!rpc::verify(method, &p3, &secret));
    }

    #[test]
    fn percent_encode_then_decode_is_identity(s in ".{0,200}") {
        let encoded = percent_encode(&s);
        prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
        prop_assert_eq!(percent_decode(&encoded), Some(s));
    }

    #[test]
    fn percent_decode_survives_anything(s in "[%+0-9a-fA-FgG]{0,40}|.{0,40}") {
        if let Some(d) = percent_decode(&s) {
            // Decoding never grows the text.
            prop_assert!(d.len() <= s.len());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Minting round trips

/// Extra query parameters with names distinct without case, none of them the cluster key.
fn extra_query() -> impl Strategy<Value = Vec<(String, String)>> {
    vec(("[A-Za-z][A-Za-z0-9 ._~*+-]{0,10}", ".{0,16}"), 0..4).prop_map(|v| {
        let mut seen = std::collections::HashSet::new();
        seen.insert(v2::CLUSTER_QUERY_KEY.to_ascii_lowercase());
        v.into_iter()
            .filter(|(k, _)| seen.insert(k.to_ascii_lowercase()))
            .collect()
    })
}

proptest! {
    #[test]
    fn v2_mint_then_parse_and_check(
        akid in "[A-Za-z0-9.]{1,32}",
        secret in ".{0,40}",
        // A header value: visible ASCII, space and tab (anything else is refused, see below).
        security_token in proptest::option::of("[ -~\t]{1,80}"),
        cluster in ".{1,40}",
        at in instant(),
        extra in extra_query(),
        agent in ".{0,30}",
        skew in -900i64..=900,
    ) {
        let signed = format_utc(at);
        let token_text = v2::mint(&v2::MintV2 {
            access_key_id: &akid,
            access_key_secret: &secret,
            security_token: security_token.as_deref(),
            cluster_id: &cluster,
            date: &signed,
            extra_query: &extra,
            user_agent: &agent,
        });
        prop_assert!(token_text.starts_with(token::V2_PREFIX));
        let req = token::parse_and_check(&token_text, &cluster, at).expect("a minted token checks");
        prop_assert_eq!(&req.access_key_id.0, &akid);
        prop_assert_eq!(&req.cluster_id, &cluster);
        prop_assert_eq!(req.signed_at, at);
        prop_assert_eq!(req.format, TokenFormat::V2);
        prop_assert_eq!(req.has_security_token, security_token.is_some());
        // Within ±15 minutes still checks; just beyond does not.
        prop_assert!(token::check(&req, &cluster, at + TimeDelta::seconds(skew)).is_ok());
        prop_assert!(token::check(&req, &cluster, at + TimeDelta::seconds(901)).is_err());
        prop_assert!(token::check(&req, &cluster, at - TimeDelta::seconds(901)).is_err());
        // Another cluster is refused.
        let other_cluster = format!("{cluster}x");
        prop_assert!(token::check(&req, &other_cluster, at).is_err());

        // What the server forwards verifies under the secret, as STS would check it.
        let Wire::V2 { query, headers, authorization } = &req.wire else {
            panic!("a v2 token yields a v2 request");
        };
        let auth = Authorization::parse(authorization).expect("authorization");
        prop_assert!(acs3::verify(&auth, &secret, "POST", "/", query, headers, EMPTY_BODY_SHA256));
        for (k, v) in &extra {
            prop_assert_eq!(query.get(k), Some(v));
        }
    }

    #[test]
    fn v2_headers_that_cannot_be_sent_are_refused(
        before in "[ -~]{0,20}",
        bad in prop_oneof![
            proptest::char::range('\u{0}', '\u{8}'),
            proptest::char::range('\u{a}', '\u{1f}'),
            Just('\u{7f}'),
            proptest::char::range('\u{80}', '\u{10ffff}'),
        ],
        after in "[ -~]{0,20}",
    ) {
        let value = format!("{before}{bad}{after}");
        let token_text = v2::mint(&v2::MintV2 {
            access_key_id: "LTAI5tAlice",
            access_key_secret: "secret",
            security_token: Some(&value),
            cluster_id: "c1",
            date: "2026-01-01T00:00:00Z",
            extra_query: &[],
            user_agent: "t",
        });
        prop_assert_eq!(
            token::parse(&token_text).map(|_| ()),
            Err(token::TokenError::UnsendableHeader("x-acs-security-token".into()))
        );
    }

    #[test]
    fn v1_mint_then_parse_and_check(
        akid in "[A-Za-z0-9.]{1,32}",
        secret in ".{0,40}",
        security_token in proptest::option::of(".{1,60}"),
        cluster in ".{1,40}",
        at in instant(),
        nonce in "[0-9a-f]{1,32}",
    ) {
        let signed = format_utc(at);
        let token_text = v1::mint(&v1::MintV1 {
            access_key_id: &akid,
            access_key_secret: &secret,
            security_token: security_token.as_deref(),
            cluster_id: &cluster,
            timestamp: &signed,
            nonce: &nonce,
            host: "sts.aliyuncs.com",
        });
        let req = token::parse_and_check(&token_text, &cluster, at).expect("a minted token checks");
        prop_assert_eq!(&req.access_key_id.0, &akid);
        prop_assert_eq!(&req.cluster_id, &cluster);
        prop_assert_eq!(req.format, TokenFormat::V1);
        let Wire::V1 { params } = &req.wire else {
            panic!("a v1 token yields a v1 request");
        };
        prop_assert!(rpc::verify("GET", params, &secret));
    }
}

/// Dates at the edge of the date type once made `check` overflow `signed_at + 15 minutes`.
#[test]
fn extreme_signing_dates_are_refused_not_panicked_on() {
    for d in [
        "+262142-12-31T23:59:59Z",
        "262142-12-31T23:59:59Z",
        "+262142-12-31T3:9:9Z",
        "-262143-01-01T00:00:00Z",
        "+262143-01-01T00:00:00Z",
    ] {
        let t = v2::mint(&v2::MintV2 {
            access_key_id: "AK",
            access_key_secret: "s",
            security_token: None,
            cluster_id: CLUSTER,
            date: d,
            extra_query: &[],
            user_agent: "",
        });
        assert!(
            matches!(token::parse(&t), Err(token::TokenError::BadDate(_))),
            "{d}"
        );
        exercise(&t, date(DATE));
        let t = v1::mint(&v1::MintV1 {
            access_key_id: "AK",
            access_key_secret: "s",
            security_token: None,
            cluster_id: CLUSTER,
            timestamp: d,
            nonce: "n",
            host: "h",
        });
        assert!(
            matches!(token::parse(&t), Err(token::TokenError::BadDate(_))),
            "{d}"
        );
    }
    // The widest dates still accepted work at both ends.
    for d in ["9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z"] {
        let t = v2::mint(&v2::MintV2 {
            access_key_id: "AK",
            access_key_secret: "s",
            security_token: None,
            cluster_id: CLUSTER,
            date: d,
            extra_query: &[],
            user_agent: "",
        });
        let req = token::parse(&t).expect(d);
        assert!(token::check(&req, CLUSTER, req.signed_at).is_ok());
        exercise(&t, date(DATE));
    }
}

/// A `*` in the text once matched a `*` in the pattern literally, ending the wildcard early.
#[test]
fn star_in_text_does_not_end_a_wildcard() {
    assert!(Glob::new("*").matches_lower("*\u{b}"));
    assert!(Glob::new("a*").matches_lower("a*b"));
    assert!(Glob::new("*b").matches_lower("*ab"));
    assert!(!Glob::new("*b").matches_lower("*a"));
}

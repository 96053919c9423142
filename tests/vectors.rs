//! The signing and token code against vectors produced by real Alibaba clients
//! (`ack-ram-tool` and Alibaba's published SDKs), byte for byte.

use std::collections::BTreeMap;

use base64::Engine as _;
use ram_authenticator::signing::{acs3, rpc, EMPTY_BODY_SHA256};
use ram_authenticator::token::{self, v1, v2, TokenError, Wire};
use ram_authenticator::types::parse_utc;
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("vector file")).expect("json")
}

fn s(v: &Value) -> &str {
    v.as_str().expect("string")
}

#[test]
fn acs3_v2_tokens_reproduce_byte_for_byte() {
    let file = load("acs3-v2-tokens.json");
    let vectors = file["vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 2);
    for v in vectors {
        let id = s(&v["id"]);
        let inputs = &v["inputs"];
        let decoded = &v["decoded"];
        let headers = decoded["headers"].as_object().expect("headers");

        // Parse the real token.
        let req = token::parse(s(&v["token"])).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(req.access_key_id.0, s(&inputs["access_key_id"]), "{id}");
        assert_eq!(req.cluster_id, s(&inputs["cluster_id"]), "{id}");
        assert_eq!(
            req.signed_at,
            parse_utc(s(&inputs["x_acs_date"])).expect("date"),
            "{id}"
        );
        assert_eq!(
            req.has_security_token,
            !inputs["security_token"].is_null(),
            "{id}"
        );
        let Wire::V2 {
            query,
            headers: signed,
            authorization,
        } = &req.wire
        else {
            panic!("{id}: not v2")
        };
        assert_eq!(authorization, s(&headers["Authorization"]));
        assert!(
            !signed.contains_key("user-agent"),
            "{id}: unsigned user-agent is not forwarded"
        );
        // Every query parameter is kept, including ones we do not know (foo=bar).
        let want_query: BTreeMap<String, String> = decoded["query"]
            .as_object()
            .expect("query")
            .iter()
            .map(|(k, v)| (k.clone(), s(v).to_string()))
            .collect();
        assert_eq!(query, &want_query, "{id}");

        // Canonical request, string to sign and signature.
        let auth = acs3::Authorization::parse(authorization).expect("authorization");
        let (canonical, signed_names) =
            acs3::canonical_request("POST", "/", query, signed, EMPTY_BODY_SHA256);
        assert_eq!(canonical, s(&v["canonical_request"]), "{id}");
        assert_eq!(signed_names, auth.signed_headers.join(";"), "{id}");
        let sts = acs3::string_to_sign(&canonical);
        assert_eq!(sts, s(&v["string_to_sign"]), "{id}");
        let secret = s(&inputs["access_key_secret"]);
        assert_eq!(acs3::signature(secret, &sts), s(&v["signature"]), "{id}");
        assert!(acs3::verify(
            &auth,
            secret,
            "POST",
            "/",
            query,
            signed,
            EMPTY_BODY_SHA256
        ));
        assert!(!acs3::verify(
            &auth,
            "wrong",
            "POST",
            "/",
            query,
            signed,
            EMPTY_BODY_SHA256
        ));

        // Minting with the same inputs gives the same token, byte for byte.
        let extra: Vec<(String, String)> = want_query
            .iter()
            .filter(|(k, _)| k.as_str() != "ACKClusterId")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let minted = v2::mint(&v2::MintV2 {
            access_key_id: s(&inputs["access_key_id"]),
            access_key_secret: secret,
            security_token: inputs["security_token"].as_str(),
            cluster_id: s(&inputs["cluster_id"]),
            date: s(&inputs["x_acs_date"]),
            extra_query: &extra,
            user_agent: s(&headers["user-agent"]),
        });
        assert_eq!(minted, s(&v["token"]), "{id}");
        assert_eq!(minted, s(&v["exec_credential"]["status"]["token"]), "{id}");
    }
}

#[test]
fn v2_vectors_pass_local_checks_only_near_their_date() {
    let file = load("acs3-v2-tokens.json");
    for v in file["vectors"].as_array().expect("vectors") {
        let tok = s(&v["token"]);
        let cluster = s(&v["inputs"]["cluster_id"]);
        let date = parse_utc(s(&v["inputs"]["x_acs_date"])).expect("date");
        token::parse_and_check(tok, cluster, date + chrono::TimeDelta::minutes(14)).expect("fresh");
        assert!(matches!(
            token::parse_and_check(tok, cluster, date + chrono::TimeDelta::minutes(16)),
            Err(TokenError::Expired { .. })
        ));
        assert!(matches!(
            token::parse_and_check(tok, cluster, date - chrono::TimeDelta::minutes(16)),
            Err(TokenError::FromFuture { .. })
        ));
        assert!(matches!(
            token::parse_and_check(tok, "c-other", date),
            Err(TokenError::ClusterMismatch { .. })
        ));
    }
}

#[test]
fn rpc_v1_signatures_reproduce_byte_for_byte() {
    let file = load("rpc-v1-signing.json");
    let vectors = file["vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 5);
    for v in vectors {
        let id = s(&v["id"]);
        let inputs = &v["inputs"];
        let expected = &v["expected"];
        let url = s(&expected["url"]);
        let query = url.split_once('?').expect("query").1;
        let params = v1::parse_query(query).expect("query parses");
        let want_order: Vec<(String, String)> = expected["params_in_url_order"]
            .as_object()
            .expect("params")
            .iter()
            .map(|(k, v)| (k.clone(), s(v).to_string()))
            .collect();
        let without_sig: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "Signature")
            .cloned()
            .collect();
        let mut a = without_sig.clone();
        let mut b = want_order.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{id}: decoded parameters");

        let canonical =
            rpc::canonicalized_query(without_sig.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(canonical, s(&expected["canonicalized_query"]), "{id}");
        let method = s(&inputs["method"]);
        let sts = rpc::string_to_sign(method, &canonical);
        assert_eq!(sts, s(&expected["string_to_sign"]), "{id}");
        let secret = s(&inputs["access_key_secret"]);
        assert_eq!(format!("{secret}&"), s(&expected["hmac_key"]), "{id}");
        let sig = rpc::signature(secret, &sts);
        assert_eq!(sig, s(&expected["signature"]), "{id}");
        for (sdk, other) in expected
            .get("cross_check_signatures")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            assert_eq!(&sig, s(other), "{id}: {sdk}");
        }
        assert!(rpc::verify(method, &params, secret), "{id}");
        assert!(!rpc::verify(method, &params, "not-the-secret"), "{id}");
    }
}

#[test]
fn ack_v1_token_vector_reproduces_and_parses() {
    let file = load("rpc-v1-signing.json");
    let v = file["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .find(|v| !v["expected"]["ack_v1_token"].is_null())
        .expect("a vector with an ack v1 token");
    let inputs = &v["inputs"];
    let tok = s(&v["expected"]["ack_v1_token"]);
    let cluster = s(&inputs["extra_params"]["ClusterId"]);

    let payload = base64::engine::general_purpose::STANDARD
        .decode(tok.trim_start_matches("k8s-ack-v1."))
        .expect("base64");
    assert_eq!(
        String::from_utf8(payload).expect("utf8"),
        s(&v["expected"]["url"])
    );

    let minted = v1::mint(&v1::MintV1 {
        access_key_id: s(&inputs["access_key_id"]),
        access_key_secret: s(&inputs["access_key_secret"]),
        security_token: None,
        cluster_id: cluster,
        timestamp: s(&inputs["timestamp"]),
        nonce: s(&inputs["nonce"]),
        host: s(&inputs["endpoint"]),
    });
    assert_eq!(minted, tok);

    let req = token::parse_and_check(
        tok,
        cluster,
        parse_utc("2024-05-01T12:05:00Z").expect("date"),
    )
    .expect("v1 token passes local checks");
    assert_eq!(req.access_key_id.0, s(&inputs["access_key_id"]));
    assert_eq!(req.method(), "GET");
    // What is forwarded still verifies against the secret.
    let Wire::V1 { params } = &req.wire else {
        panic!("not v1")
    };
    assert!(rpc::verify("GET", params, s(&inputs["access_key_secret"])));
    let forwarded = v1::parse_query(&req.query_string()).expect("forwarded query");
    assert_eq!(&forwarded, params);
}

//! Feeds arbitrary input to the token parser and the local checks.
//!
//! The first byte picks how the rest is presented: as the token text itself, or as the payload
//! of a `k8s-ack-v2.` or `k8s-ack-v1.` token (base64-packed here, so that the fuzzer mutates the
//! JSON or the URL directly instead of their base64).
#![no_main]

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use libfuzzer_sys::fuzz_target;
use ram_authenticator::token;

const CLUSTER: &str = "c1234567890abcdef";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = match mode % 3 {
        0 => match std::str::from_utf8(rest) {
            Ok(s) => s.to_string(),
            Err(_) => return,
        },
        1 => format!(
            "{}{}",
            token::V2_PREFIX,
            base64::engine::general_purpose::STANDARD.encode(rest)
        ),
        _ => format!(
            "{}{}",
            token::V1_PREFIX,
            base64::engine::general_purpose::STANDARD.encode(rest)
        ),
    };
    let fixed_now = DateTime::<Utc>::from_timestamp(1_795_340_142, 0).unwrap_or_default();
    match token::parse(&text) {
        Ok(req) => {
            assert!(!req.cluster_id.is_empty());
            assert!(!req.access_key_id.0.is_empty());
            let _ = token::check(&req, CLUSTER, fixed_now);
            let _ = token::check(&req, &req.cluster_id, req.signed_at);
            let _ = token::check(
                &req,
                &req.cluster_id,
                req.signed_at + TimeDelta::minutes(16),
            );
            let _ = req.query_string();
            let _ = req.headers();
            let _ = req.valid_until();
        }
        Err(e) => {
            let _ = e.to_string();
            let _ = e.reason();
        }
    }
    let _ = token::parse_and_check(&text, CLUSTER, fixed_now);
});

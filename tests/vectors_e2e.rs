//! Tokens made by the real `ack-ram-tool` (the v2 vectors) verify against the STS emulator and
//! map correctly, with the clock pinned to their signing date: the whole request path in
//! process (local checks, cache, STS client, mapping), STS as a real process.

mod common;

use std::sync::Arc;

use chrono::TimeDelta;
use ram_authenticator::authenticator::{Authenticator, CacheSettings, Denial};
use ram_authenticator::config::FileConfig;
use ram_authenticator::mapping::file::FileSource;
use ram_authenticator::mapping::Chain;
use ram_authenticator::metrics::Metrics;
use ram_authenticator::sts::{StsClient, StsSettings};
use ram_authenticator::types::{parse_utc, FixedClock};
use serde_json::Value;

const VECTOR_KEYS: &str = r#"
keys:
  - accessKeyId: LTAI5tTestAccessKeyId
    accessKeySecret: TestAccessKeySecret
    identity: {type: RAMUser, accountId: "1234567890123456", userName: vector-user, userId: "2101"}
  - accessKeyId: STS.TestAccessKeyId
    accessKeySecret: TestAccessKeySecret
    securityToken: "CAIS+test/token=="
    identity: {type: AssumedRoleUser, accountId: "1234567890123456", roleName: VectorRole, roleId: "3101", sessionName: vector@example.com}
"#;

const VECTOR_CONFIG: &str = r#"
clusterID: c1234567890abcdef
server:
  mapUsers:
    - userARN: acs:ram::1234567890123456:user/vector-user
      username: vector-user
      groups: [vector-users]
  mapRoles:
    - roleARN: acs:ram::1234567890123456:role/VectorRole
      username: "role:{{SessionName}}"
      groups: ["{{AccountID}}-admins"]
"#;

#[tokio::test]
async fn ack_ram_tool_tokens_verify_and_map_with_the_clock_pinned() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys.yaml");
    std::fs::write(&keys, VECTOR_KEYS).expect("keys");
    let now = "2026-11-23T09:36:00Z";
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sts-emulator"));
    cmd.args(["--listen", "127.0.0.1:0", "--now", now, "--keys"])
        .arg(&keys);
    let emu = common::Emulator::start_command(dir.path(), cmd);

    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/tests/vectors/acs3-v2-tokens.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("vectors"),
    )
    .expect("json");
    let config = FileConfig::parse(VECTOR_CONFIG).expect("config");
    let chain = Chain::new(vec![Arc::new(
        FileSource::from_config(&config).expect("source"),
    )]);
    let metrics = Arc::new(Metrics::new());
    let sts =
        StsClient::new(StsSettings::new(emu.url.clone()), Some(metrics.clone())).expect("sts");
    let pinned = parse_utc(now).expect("now");
    let auth = Authenticator::new(
        "c1234567890abcdef".into(),
        Arc::new(FixedClock(pinned)),
        sts.clone(),
        chain.clone(),
        CacheSettings::default(),
        metrics.clone(),
        Vec::new(),
    );

    let expected = [
        (
            "vector-user",
            vec!["vector-users"],
            "acs:ram::1234567890123456:user/vector-user",
        ),
        (
            "role:vector-example.com",
            vec!["1234567890123456-admins"],
            "acs:ram::1234567890123456:role/VectorRole",
        ),
    ];
    for (v, (username, groups, canonical)) in vectors["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .zip(expected)
    {
        let token = v["token"].as_str().expect("token");
        let outcome = auth.authenticate(token).await;
        let user = outcome
            .decision
            .unwrap_or_else(|e| panic!("{}: {e}", v["id"]));
        assert_eq!(user.username, username);
        assert_eq!(user.groups, groups);
        assert_eq!(user.extra["canonicalArn"], vec![canonical.to_string()]);
        assert_eq!(
            user.extra["accessKeyId"],
            vec![v["inputs"]["access_key_id"]
                .as_str()
                .expect("akid")
                .to_string()]
        );
    }
    assert_eq!(emu.requests(), 2);

    // The same tokens, 20 minutes later: refused locally, STS not asked.
    let late = Authenticator::new(
        "c1234567890abcdef".into(),
        Arc::new(FixedClock(pinned + TimeDelta::minutes(20))),
        sts,
        chain,
        CacheSettings::default(),
        metrics,
        Vec::new(),
    );
    for v in vectors["vectors"].as_array().expect("vectors") {
        let outcome = late.authenticate(v["token"].as_str().expect("token")).await;
        assert!(
            matches!(outcome.decision, Err(Denial::Token(_))),
            "{:?}",
            outcome.decision
        );
    }
    assert_eq!(emu.requests(), 2);
}

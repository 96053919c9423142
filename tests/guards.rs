//! Guard rails on what mappings may grant, through the real server and STS emulator:
//! `allowedAccounts` denies other accounts before mapping, mappings to reserved (`system:`)
//! names are skipped and reported, and `allowReservedNames` lifts that explicitly.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// Maps alice normally, dave (account 3333…) to a node identity, erin (4444…) into the
/// `system:nodes` group, and the whole account 2222… (carol) through mapAccounts.
const GUARDED_CONFIG: &str = r#"
clusterID: c1234567890abcdef
server:
  mapUsers:
    - userARN: acs:ram::1234567890123456:user/alice
      username: alice
      groups: [developers, "system:masters"]
    - userARN: acs:ram::3333333333333333:user/dave
      username: "system:node:dave"
    - userARN: acs:ram::4444444444444444:user/erin
      username: erin
      groups: [ops, "system:nodes"]
  mapAccounts: ["2222222222222222"]
"#;

fn allowed(v: &Value) -> &str {
    assert_eq!(v["status"]["authenticated"], true, "{v}");
    v["status"]["user"]["username"].as_str().unwrap_or_default()
}

fn denied(v: &Value) -> String {
    assert_eq!(v["status"]["authenticated"], false, "{v}");
    v["status"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn metrics(server: &Server) -> String {
    reqwest::get(format!("{}/metrics", server.health))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test]
async fn accounts_outside_allowed_accounts_are_denied_before_mapping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = Emulator::start(dir.path(), &[]);
    let server = Server::start(
        dir.path(),
        &emu.url,
        &["--allowed-accounts", "1234567890123456,4444444444444444"],
    );
    let client = server.client();
    let v1 = "authentication.k8s.io/v1";
    let alice = v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER);
    assert_eq!(allowed(&server.review(&client, v1, &alice).await), "alice");
    // carol's account is in mapAccounts, but not allowed: the allow list wins.
    let carol = v2_token("LTAI5tCarol", "CarolSecret", None, CLUSTER);
    let err = denied(&server.review(&client, v1, &carol).await);
    assert!(err.contains("may not log in"), "{err}");
    assert!(
        !err.contains("2222222222222222"),
        "no account number in status.error: {err}"
    );
    let text = metrics(&server).await;
    assert!(
        text.contains("authenticate_latency_seconds_count{result=\"account_not_allowed\"} 1"),
        "{text}"
    );
    assert!(
        eventually(Duration::from_secs(5), || server
            .proc
            .stderr()
            .contains("account_not_allowed"))
        .await,
        "the audit line names the reason: {}",
        server.proc.stderr()
    );
}

#[tokio::test]
async fn reserved_names_are_skipped_and_reported_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = Emulator::start(dir.path(), &[]);
    let server = Server::start_with_config(dir.path(), &emu.url, GUARDED_CONFIG, &[]);
    let client = server.client();
    let v1 = "authentication.k8s.io/v1";

    // system:masters stays allowed by default.
    let alice = v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER);
    let v = server.review(&client, v1, &alice).await;
    assert_eq!(allowed(&v), "alice");
    assert_eq!(v["status"]["user"]["groups"][1], "system:masters", "{v}");

    // A node username and a system:nodes group: skipped, so these identities are not mapped.
    let dave = v2_token("LTAI5tDave", "DaveSecret", None, CLUSTER);
    assert!(denied(&server.review(&client, v1, &dave).await).contains("not mapped"));
    let erin = v2_token("LTAI5tErin", "ErinSecret", None, CLUSTER);
    assert!(denied(&server.review(&client, v1, &erin).await).contains("not mapped"));

    // Reported: a metric, a log line per skipped mapping.
    let mut text = String::new();
    for _ in 0..50 {
        text = metrics(&server).await;
        if text.contains("mappings_skipped{source=\"MountedFile\"} 2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        text.contains("mappings_skipped{source=\"MountedFile\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("mapping_source_ready{source=\"MountedFile\"} 1"),
        "{text}"
    );
    let stderr = server.proc.stderr();
    assert!(
        stderr.contains("mapping skipped") && stderr.contains("system:node:dave"),
        "{stderr}"
    );
    assert!(stderr.contains("system:nodes"), "{stderr}");

    // check-config says the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ram-authenticator"))
        .args(["check-config", "--config"])
        .arg(&server.config)
        .output()
        .expect("check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.matches("SKIPPED").count(), 2, "{stdout}");
    assert!(stdout.contains("server.mapUsers[1]"), "{stdout}");
    assert!(stdout.contains("server.mapUsers[2]"), "{stdout}");
}

#[tokio::test]
async fn allow_reserved_names_lifts_the_rule_for_the_named_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = Emulator::start(dir.path(), &[]);
    let server = Server::start_with_config(
        dir.path(),
        &emu.url,
        GUARDED_CONFIG,
        &["--allow-reserved-names", "MountedFile"],
    );
    let client = server.client();
    let v1 = "authentication.k8s.io/v1";
    let dave = v2_token("LTAI5tDave", "DaveSecret", None, CLUSTER);
    assert_eq!(
        allowed(&server.review(&client, v1, &dave).await),
        "system:node:dave"
    );
    let erin = v2_token("LTAI5tErin", "ErinSecret", None, CLUSTER);
    let v = server.review(&client, v1, &erin).await;
    assert_eq!(allowed(&v), "erin");
    assert_eq!(v["status"]["user"]["groups"][1], "system:nodes", "{v}");
    let text = metrics(&server).await;
    assert!(
        !text.contains("mappings_skipped{source=\"MountedFile\"} 2"),
        "{text}"
    );

    // Another source named: MountedFile is still guarded. A bad name is refused at start-up.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ram-authenticator"))
        .args([
            "server",
            "--cluster-id",
            "c1",
            "--allow-reserved-names",
            "Nope",
        ])
        .output()
        .expect("server");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-reserved-names"), "{stderr}");
}

#[test]
fn check_config_warns_about_session_chosen_usernames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "clusterID: c1\nserver:\n  mapRoles:\n    - roleARN: acs:ram::1:role/dev\n      username: \"dev:{{SessionName}}\"\n    - roleARN: acs:ram::1:role/admin\n      username: admin\n",
    )
    .expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ram-authenticator"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.matches("warning:").count(), 1, "{stdout}");
    assert!(
        stdout.contains("server.mapRoles[0]") && stdout.contains("chooses"),
        "{stdout}"
    );
}

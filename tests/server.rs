//! Black-box tests of the webhook: the real `ram-authenticator server` and `sts-emulator`
//! binaries on loopback, spoken to over HTTPS with a client that trusts only the CA from the
//! webhook kubeconfig the server wrote.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn setup() -> (tempfile::TempDir, Emulator, Server) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = Emulator::start(dir.path(), &[]);
    let server = Server::start(dir.path(), &emu.url, &[]);
    (dir, emu, server)
}

fn denied_with(v: &Value, needle: &str) {
    assert_eq!(v["kind"], "TokenReview", "{v}");
    assert_eq!(v["status"]["authenticated"], false, "{v}");
    let err = v["status"]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains(needle),
        "error {err:?} should mention {needle:?}"
    );
}

#[tokio::test]
async fn allows_v2_and_v1_tokens_with_both_review_versions() {
    let (_dir, emu, server) = setup();
    let client = server.client();

    let v = server
        .review(
            &client,
            "authentication.k8s.io/v1",
            &v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER),
        )
        .await;
    assert_eq!(v["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(v["kind"], "TokenReview");
    assert_eq!(v["status"]["authenticated"], true, "{v}");
    let user = &v["status"]["user"];
    assert_eq!(user["username"], "alice");
    assert_eq!(user["uid"], "ack-ram-authenticator:1234567890123456:2001");
    assert_eq!(user["groups"], json!(["developers"]));
    assert_eq!(
        user["extra"]["arn"],
        json!(["acs:ram::1234567890123456:user/alice"])
    );
    assert_eq!(
        user["extra"]["canonicalArn"],
        json!(["acs:ram::1234567890123456:user/alice"])
    );
    assert_eq!(user["extra"]["sessionName"], json!([""]));
    assert_eq!(user["extra"]["accessKeyId"], json!(["LTAI5tAlice"]));
    assert_eq!(user["extra"]["principalId"], json!(["2001"]));

    let v = server
        .review(
            &client,
            "authentication.k8s.io/v1beta1",
            &v1_token("LTAI5tAlice", "AliceSecret", None, CLUSTER),
        )
        .await;
    assert_eq!(v["apiVersion"], "authentication.k8s.io/v1beta1");
    assert_eq!(v["status"]["authenticated"], true, "{v}");
    assert_eq!(v["status"]["user"]["username"], "alice");
    assert_eq!(emu.requests(), 2);
}

#[tokio::test]
async fn assumed_role_templates_and_security_tokens() {
    let (_dir, _emu, server) = setup();
    let client = server.client();
    for token in [
        v2_token("STS.Bob", "BobSecret", Some("BobSecurityToken"), CLUSTER),
        v1_token("STS.Bob", "BobSecret", Some("BobSecurityToken"), CLUSTER),
    ] {
        let v = server
            .review(&client, "authentication.k8s.io/v1", &token)
            .await;
        assert_eq!(v["status"]["authenticated"], true, "{v}");
        let user = &v["status"]["user"];
        assert_eq!(user["username"], "admin:1234567890123456:bob-example.com");
        assert_eq!(user["groups"], json!(["admins", "session:bob@example.com"]));
        assert_eq!(user["uid"], "ack-ram-authenticator:1234567890123456:3001");
        assert_eq!(
            user["extra"]["arn"],
            json!(["acs:ram::1234567890123456:assumed-role/KubeAdmin/bob@example.com"])
        );
        assert_eq!(
            user["extra"]["canonicalArn"],
            json!(["acs:ram::1234567890123456:role/KubeAdmin"])
        );
        assert_eq!(user["extra"]["sessionName"], json!(["bob@example.com"]));
    }
    // A wrong security token is STS's to refuse.
    let v = server
        .review(
            &client,
            "authentication.k8s.io/v1",
            &v2_token("STS.Bob", "BobSecret", Some("Other"), CLUSTER),
        )
        .await;
    denied_with(&v, "InvalidSecurityToken");
}

#[tokio::test]
async fn map_accounts_unmapped_and_sts_errors() {
    let (_dir, _emu, server) = setup();
    let client = server.client();
    let v = server
        .review(
            &client,
            "authentication.k8s.io/v1",
            &v2_token("LTAI5tCarol", "CarolSecret", None, CLUSTER),
        )
        .await;
    assert_eq!(v["status"]["authenticated"], true, "{v}");
    assert_eq!(
        v["status"]["user"]["username"],
        "acs:ram::2222222222222222:user/carol"
    );
    assert_eq!(v["status"]["user"]["groups"], json!([]));

    let v = server
        .review(
            &client,
            "authentication.k8s.io/v1",
            &v2_token("LTAI5tDave", "DaveSecret", None, CLUSTER),
        )
        .await;
    denied_with(&v, "not mapped");

    let v = server
        .review(
            &client,
            "authentication.k8s.io/v1",
            &v2_token("LTAI5tAlice", "WrongSecret", None, CLUSTER),
        )
        .await;
    denied_with(&v, "SignatureDoesNotMatch");
    let v = server
        .review(
            &client,
            "authentication.k8s.io/v1",
            &v2_token("LTAI5tNobody", "x", None, CLUSTER),
        )
        .await;
    denied_with(&v, "InvalidAccessKeyId.NotFound");
}

#[tokio::test]
async fn local_rejections_never_reach_sts() {
    let (_dir, emu, server) = setup();
    let client = server.client();
    let good = v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER);
    let old = ram_authenticator::token::v2::mint(&ram_authenticator::token::v2::MintV2 {
        access_key_id: "LTAI5tAlice",
        access_key_secret: "AliceSecret",
        security_token: None,
        cluster_id: CLUSTER,
        date: &ram_authenticator::types::format_utc(
            chrono::Utc::now() - chrono::TimeDelta::minutes(16),
        ),
        extra_query: &[],
        user_agent: "t",
    });
    let future = ram_authenticator::token::v2::mint(&ram_authenticator::token::v2::MintV2 {
        access_key_id: "LTAI5tAlice",
        access_key_secret: "AliceSecret",
        security_token: None,
        cluster_id: CLUSTER,
        date: &ram_authenticator::types::format_utc(
            chrono::Utc::now() + chrono::TimeDelta::minutes(16),
        ),
        extra_query: &[],
        user_agent: "t",
    });
    let v1_good = v1_token("LTAI5tAlice", "AliceSecret", None, CLUSTER);
    let v1_url = {
        use base64::Engine as _;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v1_good.trim_start_matches("k8s-ack-v1."))
                .expect("b64"),
        )
        .expect("utf8")
    };
    let v1_edit = |from: &str, to: &str| pack("k8s-ack-v1.", v1_url.replace(from, to).as_bytes());
    let header = |name: &str| -> String {
        let name = name.to_string();
        edit_v2(&good, move |v| {
            v["headers"].as_object_mut().expect("headers").remove(&name);
        })
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong prefix",
            format!("Bearer{}", &good[10..]),
            "does not start with",
        ),
        ("bad base64", "k8s-ack-v2.!!!notbase64".into(), "base64"),
        ("bad json", pack("k8s-ack-v2.", b"{not json"), "JSON"),
        (
            "too long",
            format!("k8s-ack-v2.{}", "A".repeat(5000)),
            "4096",
        ),
        (
            "other cluster",
            v2_token("LTAI5tAlice", "AliceSecret", None, "c-other"),
            "not this cluster",
        ),
        (
            "no cluster",
            edit_v2(&good, |v| {
                v["query"] = json!({});
            }),
            "cluster ID",
        ),
        (
            "wrong action",
            edit_v2(&good, |v| {
                v["headers"]["x-acs-action"] = json!("AssumeRole");
            }),
            "GetCallerIdentity",
        ),
        ("expired", old, "expired"),
        ("future", future, "future"),
        ("no authorization", header("Authorization"), "Authorization"),
        ("no date", header("x-acs-date"), "x-acs-date"),
        (
            "bad algorithm",
            edit_v2(&good, |v| {
                let a = v["headers"]["Authorization"]
                    .as_str()
                    .expect("auth")
                    .replace("ACS3-HMAC-SHA256", "ACS3-HMAC-SM3");
                v["headers"]["Authorization"] = json!(a);
            }),
            "algorithm",
        ),
        (
            "disallowed signed header",
            edit_v2(&good, |v| {
                let a = v["headers"]["Authorization"]
                    .as_str()
                    .expect("auth")
                    .replace("SignedHeaders=", "SignedHeaders=user-agent;");
                v["headers"]["Authorization"] = json!(a);
            }),
            "user-agent",
        ),
        (
            "duplicate query key by case",
            edit_v2(&good, |v| {
                v["query"]["ackclusterid"] = json!(CLUSTER);
            }),
            "duplicate",
        ),
        (
            "duplicate header by case",
            edit_v2(&good, |v| {
                v["headers"]["X-Acs-Date"] = json!("2020-01-01T00:00:00Z");
            }),
            "duplicate",
        ),
        (
            "v1 no signature",
            v1_edit("&Signature=", "&Nothing="),
            "Signature",
        ),
        (
            "v1 wrong method",
            v1_edit("SignatureMethod=HMAC-SHA1", "SignatureMethod=HMAC-SHA256"),
            "algorithm",
        ),
        (
            "v1 other cluster",
            v1_edit(&format!("ClusterId={CLUSTER}"), "ClusterId=c-other"),
            "not this cluster",
        ),
        (
            "v1 duplicate by case",
            v1_edit("&Format=JSON", "&Format=JSON&format=XML"),
            "duplicate",
        ),
        (
            "v1 wrong action",
            v1_edit("Action=GetCallerIdentity", "Action=AssumeRole"),
            "GetCallerIdentity",
        ),
    ];
    for (name, token, needle) in &cases {
        let v = server
            .review(&client, "authentication.k8s.io/v1", token)
            .await;
        assert_eq!(v["status"]["authenticated"], false, "{name}: {v}");
        let err = v["status"]["error"].as_str().unwrap_or_default();
        assert!(
            err.contains(needle),
            "{name}: error {err:?} should mention {needle:?}"
        );
    }
    assert_eq!(emu.requests(), 0, "no local rejection may reach STS");
    // And the untouched token does.
    let v = server
        .review(&client, "authentication.k8s.io/v1", &good)
        .await;
    assert_eq!(v["status"]["authenticated"], true, "{v}");
    assert_eq!(emu.requests(), 1);
}

#[tokio::test]
async fn extra_query_parameters_are_forwarded_signed() {
    let (_dir, _emu, server) = setup();
    let client = server.client();
    let token = ram_authenticator::token::v2::mint(&ram_authenticator::token::v2::MintV2 {
        access_key_id: "LTAI5tAlice",
        access_key_secret: "AliceSecret",
        security_token: None,
        cluster_id: CLUSTER,
        date: &now_str(),
        extra_query: &[("foo".into(), "bar baz/*".into())],
        user_agent: "t",
    });
    let v = server
        .review(&client, "authentication.k8s.io/v1", &token)
        .await;
    assert_eq!(v["status"]["authenticated"], true, "{v}");
}

#[tokio::test]
async fn bad_requests_get_4xx() {
    let (_dir, _emu, server) = setup();
    let client = server.client();
    let r = client
        .post(&server.url)
        .body("not json")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let r = client
        .post(&server.url)
        .json(&json!({"apiVersion": "v1", "kind": "Pod"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    assert!(r.text().await.expect("text").contains("not a TokenReview"));
    let r = client.get(&server.url).send().await.expect("send");
    assert_eq!(r.status(), 405);
    let r = client
        .post(&server.url)
        .body(vec![b'x'; 2 * 1024 * 1024])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn audiences_are_intersected() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = Emulator::start(dir.path(), &[]);
    let server = Server::start(
        dir.path(),
        &emu.url,
        &[
            "--audience",
            "https://kubernetes.default.svc",
            "--audience",
            "other",
        ],
    );
    let client = server.client();
    let token = v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER);
    let review = |auds: Value| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token, "audiences": auds}});
    let v: Value = client
        .post(&server.url)
        .json(&review(json!(["https://kubernetes.default.svc", "x"])))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["status"]["authenticated"], true, "{v}");
    assert_eq!(
        v["status"]["audiences"],
        json!(["https://kubernetes.default.svc"])
    );
    let v: Value = client
        .post(&server.url)
        .json(&review(json!(["x"])))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    denied_with(&v, "audiences");
}

#[tokio::test]
async fn health_ready_and_metrics_on_both_listeners() {
    let (_dir, _emu, server) = setup();
    let client = server.client();
    let base = server.url.trim_end_matches("/authenticate").to_string();
    for url in [
        format!("{base}/healthz"),
        format!("{}/healthz", server.health),
    ] {
        let r = client.get(&url).send().await.expect("healthz");
        assert_eq!(r.status(), 200, "{url}");
    }
    for url in [
        format!("{base}/readyz"),
        format!("{}/readyz", server.health),
    ] {
        let r = client.get(&url).send().await.expect("readyz");
        assert_eq!(r.status(), 200, "{url}");
    }
    server
        .review(
            &client,
            "authentication.k8s.io/v1",
            &v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER),
        )
        .await;
    let text = client
        .get(format!("{}/metrics", server.health))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(
            "ack_ram_authenticator_authenticate_latency_seconds_count{result=\"success\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("ack_ram_authenticator_sts_responses_total{ResponseCode=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("ack_ram_authenticator_serving_certificate_expiry_timestamp_seconds"),
        "{text}"
    );
    assert!(
        text.contains("ack_ram_authenticator_mapping_entries{source=\"MountedFile\"} 4"),
        "{text}"
    );
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let (_dir, _emu, server) = setup();
    let client = server.client();
    let token = v2_token("STS.Bob", "BobSecret", Some("BobSecurityToken"), CLUSTER);
    server
        .review(&client, "authentication.k8s.io/v1", &token)
        .await;
    let bad = v2_token("STS.Bob", "WrongSecret", Some("BobSecurityToken"), CLUSTER);
    server
        .review(&client, "authentication.k8s.io/v1", &bad)
        .await;
    // Scrubbed accounts: no ARN or UID of theirs in the logs.
    let v = server
        .review(
            &client,
            "authentication.k8s.io/v1",
            &v2_token("LTAI5tErin", "ErinSecret", None, CLUSTER),
        )
        .await;
    assert_eq!(v["status"]["authenticated"], true, "{v}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.proc.stderr();
    assert!(
        logs.contains("STS.Bob"),
        "the AccessKeyId is logged: {logs}"
    );
    assert!(logs.contains("token_hash"), "{logs}");
    for secret in [
        "BobSecurityToken",
        "BobSecret",
        &token[11..60],
        &bad[11..60],
        "4444444444444444",
    ] {
        assert!(!logs.contains(secret), "logs leak {secret:?}");
    }
    use base64::Engine as _;
    let decoded: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(&token[11..])
            .expect("b64"),
    )
    .expect("json");
    let auth = decoded["headers"]["Authorization"].as_str().expect("auth");
    let signature = auth.rsplit("Signature=").next().expect("sig");
    assert!(!logs.contains(signature), "logs leak the signature");
}

#[tokio::test]
async fn init_kubeconfig_works_for_a_client_trusting_only_its_ca() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let kubeconfig = dir.path().join("init.kubeconfig");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ram-authenticator"))
        .args(["init", "--cluster-id", CLUSTER, "--port", &port.to_string()])
        .arg("--state-dir")
        .arg(&state)
        .arg("--generate-kubeconfig")
        .arg(&kubeconfig)
        .output()
        .expect("init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode =
        |p: std::path::PathBuf| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(state.join("key.pem")), 0o600);
    assert_eq!(mode(state.join("cert.pem")), 0o644);
    let (_, url) = read_kubeconfig(&kubeconfig);
    assert_eq!(url, format!("https://localhost:{port}/authenticate"));

    let emu = Emulator::start(dir.path(), &[]);
    let server = Server::start(
        dir.path(),
        &emu.url,
        &["--kubeconfig-pregenerated", "--port", &port.to_string()],
    );
    assert_eq!(server.url, format!("https://127.0.0.1:{port}/authenticate"));
    assert!(
        !server.kubeconfig.exists(),
        "a pre-generated kubeconfig is not rewritten"
    );
    let (ca, url) = read_kubeconfig(&kubeconfig);
    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).expect("ca"))
        .no_proxy()
        .build()
        .expect("client");
    let token = v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER);
    let v = post_review(&client, &url, "authentication.k8s.io/v1", &token).await;
    assert_eq!(v["status"]["user"]["username"], "alice", "{v}");
}

#[tokio::test]
async fn check_config_reports_errors_with_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, CONFIG_YAML).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ram-authenticator"))
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("acs:ram::1234567890123456:role/KubeAdmin")
    );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "server:\n  mapRoles:\n    - roleARN: acs:ram::1:role/a\n      username: a\n      grups: [x]\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ram-authenticator"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("grups") && err.contains("server.maproles[0]"),
        "{err}"
    );
}

#[tokio::test]
async fn config_file_edits_apply_without_restart() {
    let (_dir, _emu, server) = setup();
    let client = server.client();
    let token = v2_token("LTAI5tDave", "DaveSecret", None, CLUSTER);
    let v = server
        .review(&client, "authentication.k8s.io/v1", &token)
        .await;
    denied_with(&v, "not mapped");
    let edited = CONFIG_YAML.replace(
        "  mapUsers:\n",
        "  mapUsers:\n    - userARN: acs:ram::3333333333333333:user/dave\n      username: dave\n",
    );
    std::fs::write(&server.config, &edited).expect("edit");
    let started = Instant::now();
    let mut mapped = false;
    while started.elapsed() < Duration::from_secs(5) {
        let v = server
            .review(&client, "authentication.k8s.io/v1", &token)
            .await;
        if v["status"]["authenticated"] == true {
            assert_eq!(v["status"]["user"]["username"], "dave");
            mapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(mapped, "the edit was not applied within 5 s");
    // A broken edit keeps the previous mappings.
    std::fs::write(&server.config, "server:\n  mapUsers: [oops\n").expect("edit");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let v = server
        .review(&client, "authentication.k8s.io/v1", &token)
        .await;
    assert_eq!(v["status"]["user"]["username"], "dave", "{v}");
    assert!(server
        .proc
        .stderr()
        .contains("keeping the previous mappings"));
}

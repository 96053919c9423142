//! Real `kubectl` drives the exec credential plugin end to end:
//!
//! kubectl ──exec──► `ram-authenticator token` ──► bearer token
//! kubectl ──HTTPS──► stand-in kube-apiserver (this file) ──TokenReview──► `ram-authenticator server`
//!                                                                  ──GetCallerIdentity──► `sts-emulator`
//!
//! The stand-in answers `kubectl auth whoami` (SelfSubjectReview) and a raw GET with the user the
//! webhook authenticated, or 401 when it did not. kubectl must be installed
//! (`scripts/install-test-deps.sh`); `KUBECTL` may name it.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;

use serde_json::Value;
use support::kubectl_stack::*;

fn assert_user_is_alice(info: &Value) {
    assert_eq!(info["username"], "alice", "{info:#}");
    assert_eq!(info["uid"], "ack-ram-authenticator:1234567890123456:2001");
    let groups: Vec<&str> = info["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g.as_str().expect("group"))
        .collect();
    assert!(groups.contains(&"developers"), "{groups:?}");
    assert!(groups.contains(&"ram:authenticated"), "{groups:?}");
    assert_eq!(
        info["extra"]["arn"][0],
        "acs:ram::1234567890123456:user/alice"
    );
}

#[test]
fn kubectl_authenticates_through_the_exec_plugin() {
    let stack = Stack::start();
    let kc = stack.kubeconfig("good", CLUSTER, &[]);

    // A raw GET: any kubectl version runs the plugin and sends its token.
    let out = stack.kubectl(&kc, &["get", "--raw", "/api/v1/namespaces/default/pods"]);
    assert!(
        out.status.success(),
        "kubectl get --raw failed: {}\nrequests: {:?}",
        text(&out.stderr),
        stack.api.seen()
    );
    let pods: Value = serde_json::from_slice(&out.stdout).expect("PodList");
    let pod = &pods["items"][0]["metadata"];
    assert_eq!(pod["name"], "alice");
    let user: Value =
        serde_json::from_str(pod["annotations"]["userinfo"].as_str().expect("userinfo"))
            .expect("user JSON");
    assert_user_is_alice(&user);

    // `kubectl auth whoami` (kubectl 1.28 and later) shows the mapped user and groups.
    if !supports_auth_whoami() {
        eprintln!(
            "note: this kubectl has no `auth whoami`; the user was checked through the raw GET"
        );
        return;
    }
    let out = stack.kubectl(&kc, &["auth", "whoami", "-o", "json"]);
    assert!(
        out.status.success(),
        "kubectl auth whoami failed: {}\nrequests: {:?}",
        text(&out.stderr),
        stack.api.seen()
    );
    let review: Value = serde_json::from_slice(&out.stdout).expect("SelfSubjectReview");
    assert_eq!(review["kind"], "SelfSubjectReview");
    assert_user_is_alice(&review["status"]["userInfo"]);
    let seen = stack.api.seen();
    assert!(
        seen.iter()
            .any(|r| r == "POST /apis/authentication.k8s.io/v1/selfsubjectreviews"),
        "{seen:?}"
    );

    // The table form names the user too.
    let out = stack.kubectl(&kc, &["auth", "whoami"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("alice") && table.contains("developers"),
        "{table}"
    );
}

#[test]
fn kubectl_with_a_role_from_the_kubeconfig() {
    let stack = Stack::start();
    let kc = stack.kubeconfig(
        "admin",
        CLUSTER,
        &[
            "--role-arn",
            ADMIN_ROLE,
            "--session-name",
            "ops-1",
            "--sts-endpoint",
            &stack.emulator_url,
        ],
    );
    let out = stack.kubectl(&kc, &["get", "--raw", "/api/v1/namespaces/default/pods"]);
    assert!(
        out.status.success(),
        "{}\nrequests: {:?}",
        text(&out.stderr),
        stack.api.seen()
    );
    let pods: Value = serde_json::from_slice(&out.stdout).expect("PodList");
    assert_eq!(pods["items"][0]["metadata"]["name"], "admin:ops-1");
}

#[test]
fn kubectl_with_a_token_for_another_cluster_is_refused() {
    let stack = Stack::start();
    let kc = stack.kubeconfig("other", "some-other-cluster", &[]);
    let out = stack.kubectl(&kc, &["get", "--raw", "/api/v1/namespaces/default/pods"]);
    assert!(
        !out.status.success(),
        "kubectl succeeded with a foreign token"
    );
    let err = text(&out.stderr);
    assert!(err.contains("Unauthorized"), "{err}");
    // The request did reach the stand-in (so the refusal came from the webhook).
    assert!(
        stack
            .api
            .seen()
            .iter()
            .any(|r| r == "GET /api/v1/namespaces/default/pods"),
        "{:?}",
        stack.api.seen()
    );
}

#[test]
fn kubectl_with_a_token_file_kept_fresh_by_the_refresher() {
    let stack = Stack::start();
    let token_file = stack.path().join("token");
    // Alice's keys sign a 15-minute token, rewritten at 0.5% of its life (every 4.5 s).
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("HOME", stack.path())
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", ALICE_ID)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ALICE_SECRET)
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .args(["token", "--cluster-id", CLUSTER, "--write-token-file"])
        .arg(&token_file)
        .args(["--refresh", "--refresh-fraction", "0.005"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stack.path().join("refresher.stderr")).expect("stderr"));
    let mut refresher = Proc {
        child: cmd.spawn().expect("spawn refresher"),
        stderr: stack.path().join("refresher.stderr"),
    };
    let read = || std::fs::read_to_string(&token_file).ok();
    let started = std::time::Instant::now();
    while read().is_none() {
        assert!(started.elapsed() < Duration::from_secs(10), "no token file");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A kubeconfig whose user is only `tokenFile:` (no exec plugin).
    let kc = stack.path().join("token-file.kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    tokenFile: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
            stack.api.addr.port(),
            base64::engine::general_purpose::STANDARD.encode(&stack.api.ca_pem),
            token_file.display()
        ),
    )
    .expect("kubeconfig");
    let whoami = || {
        let out = stack.kubectl(&kc, &["get", "--raw", "/api/v1/namespaces/default/pods"]);
        assert!(
            out.status.success(),
            "{}\nrequests: {:?}",
            text(&out.stderr),
            stack.api.seen()
        );
        let pods: Value = serde_json::from_slice(&out.stdout).expect("PodList");
        pods["items"][0]["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string()
    };
    let first = read().expect("token");
    assert_eq!(whoami(), "alice");
    // Across a rotation.
    let started = std::time::Instant::now();
    while read().as_deref() == Some(first.as_str()) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not rotated: {}",
            std::fs::read_to_string(&refresher.stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(whoami(), "alice");

    let _ = Command::new("kill")
        .args(["-TERM", &refresher.child.id().to_string()])
        .status();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = refresher.child.try_wait().expect("wait") {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

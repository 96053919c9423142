//! The webhook under load and faults: single flight, the identity cache, STS deadlines,
//! throttling and failures, graceful stop, certificate reload.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn start(extra: &[&str]) -> (tempfile::TempDir, Emulator, Server) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = Emulator::start(dir.path(), &[]);
    let server = Server::start(dir.path(), &emu.url, extra);
    (dir, emu, server)
}

#[tokio::test]
async fn one_sts_call_for_fifty_concurrent_reviews_and_none_for_repeats() {
    let (_dir, emu, server) = start(&[]);
    let client = server.client();
    // Slow STS down so that all fifty reviews are in flight together.
    emu.fault("slow", 300);
    let token = v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = client.clone();
        let url = server.url.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            post_review(&client, &url, "authentication.k8s.io/v1", &token).await
        }));
    }
    for t in tasks {
        let v = t.await.expect("task");
        assert_eq!(v["status"]["user"]["username"], "alice", "{v}");
    }
    assert_eq!(
        emu.requests(),
        1,
        "fifty concurrent reviews of one new token make one STS call"
    );
    emu.fault("none", 0);
    for _ in 0..20 {
        let v = server
            .review(&client, "authentication.k8s.io/v1", &token)
            .await;
        assert_eq!(v["status"]["authenticated"], true);
    }
    assert_eq!(emu.requests(), 1, "repeats are answered from the cache");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("ack_ram_authenticator_identity_cache_hits_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn v1_tokens_work_more_than_once_thanks_to_the_cache() {
    let (_dir, emu, server) = start(&[]);
    let client = server.client();
    let token = v1_token("LTAI5tAlice", "AliceSecret", None, CLUSTER);
    for _ in 0..3 {
        let v = server
            .review(&client, "authentication.k8s.io/v1", &token)
            .await;
        assert_eq!(v["status"]["authenticated"], true, "{v}");
    }
    assert_eq!(emu.requests(), 1);
}

#[tokio::test]
async fn answers_within_the_deadline_when_sts_misbehaves_and_recovers() {
    let (_dir, emu, server) = start(&["--sts-timeout-ms", "300", "--sts-deadline-ms", "1000"]);
    let client = server.client();

    emu.fault("slow", 5000);
    let started = Instant::now();
    let v = server
        .review(
            &client,
            "authentication.k8s.io/v1",
            &v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(v["status"]["authenticated"], false, "{v}");
    assert!(
        v["status"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("STS unavailable"),
        "{v}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}"
    );

    emu.fault("throttle", 0);
    let v = server
        .review(
            &client,
            "authentication.k8s.io/v1",
            &v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER),
        )
        .await;
    assert!(
        v["status"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("throttling"),
        "{v}"
    );

    emu.fault("error", 0);
    let before = emu.requests();
    let started = Instant::now();
    let v = server
        .review(
            &client,
            "authentication.k8s.io/v1",
            &v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER),
        )
        .await;
    assert!(
        v["status"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("STS unavailable"),
        "{v}"
    );
    assert!(started.elapsed() < Duration::from_millis(2500));
    let attempts = emu.requests() - before;
    assert!(
        (2..=3).contains(&attempts),
        "5xx is retried a bounded number of times: {attempts}"
    );

    emu.fault("none", 0);
    let v = server
        .review(
            &client,
            "authentication.k8s.io/v1",
            &v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER),
        )
        .await;
    assert_eq!(v["status"]["authenticated"], true, "service restored: {v}");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("ack_ram_authenticator_sts_throttles_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn first_signal_drains_in_flight_reviews_then_exits_zero() {
    let (_dir, emu, mut server) = start(&[]);
    let client = server.client();
    emu.fault("slow", 1000);
    let url = server.url.clone();
    let token = v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER);
    let in_flight = tokio::spawn(async move {
        post_review(&client, &url, "authentication.k8s.io/v1", &token).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.proc.signal("TERM");
    let v = in_flight.await.expect("task");
    assert_eq!(
        v["status"]["user"]["username"], "alice",
        "the in-flight review completed: {v}"
    );
    let started = Instant::now();
    let status = loop {
        if let Some(s) = server.proc.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "server did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "{}", server.proc.stderr());
    // New connections are refused after the stop.
    let fresh = server.client();
    assert!(fresh
        .get(format!(
            "{}/healthz",
            server.url.trim_end_matches("/authenticate")
        ))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn certificate_reload_is_picked_up_by_new_connections() {
    let (dir, _emu, server) = start(&[]);
    let old_client = server.client();
    let health = format!("{}/healthz", server.url.trim_end_matches("/authenticate"));
    assert_eq!(
        old_client.get(&health).send().await.expect("old").status(),
        200
    );

    // Rotate: a new pair written in place.
    let (cert, key) =
        ram_authenticator::server::init::generate("localhost", "127.0.0.1").expect("generate");
    let new_ca = dir.path().join("new-ca.pem");
    std::fs::write(&new_ca, &cert).expect("ca");
    ram_authenticator::server::init::write_file(
        &server.state_dir.join("key.pem"),
        key.as_bytes(),
        0o600,
    )
    .expect("key");
    ram_authenticator::server::init::write_file(
        &server.state_dir.join("cert.pem"),
        cert.as_bytes(),
        0o644,
    )
    .expect("cert");
    let new_client = || {
        reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(cert.as_bytes()).expect("ca"))
            .no_proxy()
            .build()
            .expect("client")
    };
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(r) = new_client().get(&health).send().await {
            ok = r.status() == 200;
            if ok {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a new connection sees the new certificate");

    // Bad new files: the current pair stays.
    std::fs::write(server.state_dir.join("cert.pem"), "garbage").expect("garbage");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        new_client()
            .get(&health)
            .send()
            .await
            .expect("still serving")
            .status(),
        200
    );
    assert!(server.proc.stderr().contains("keeping the current one"));
}

#[tokio::test]
async fn second_signal_exits_at_once() {
    let (_dir, emu, mut server) = start(&["--shutdown-grace-seconds", "30"]);
    let client = server.client();
    emu.fault("slow", 5000);
    let url = server.url.clone();
    let token = v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER);
    let _in_flight = tokio::spawn(async move {
        let body = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
        let _ = client.post(&url).json(&body).send().await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.proc.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.proc.child.try_wait().expect("wait").is_none(),
        "still draining after the first signal"
    );
    let started = Instant::now();
    server.proc.signal("INT");
    let status = loop {
        if let Some(s) = server.proc.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the second signal did not end the process"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(130));
}

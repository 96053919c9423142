//! The request to STS and what is trusted of the answer, through the real server: tokens that
//! cannot be sent are refused locally (no STS call, no retry, no effect on other reviews); the
//! request carries the configured endpoint's Host and our Content-Type; redirects are not
//! followed and answers are read up to a cap. Tiny HTTP listeners on 127.0.0.1 stand in for a
//! misbehaving STS and record what they received.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ram_authenticator::signing::{acs3, EMPTY_BODY_SHA256};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn start_with(sts_url: Option<&str>) -> (tempfile::TempDir, Option<Emulator>, Server) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = match sts_url {
        None => Some(Emulator::start(dir.path(), &[])),
        Some(_) => None,
    };
    let url = sts_url
        .map(str::to_string)
        .or_else(|| emu.as_ref().map(|e| e.url.clone()))
        .expect("an STS");
    let server = Server::start(dir.path(), &url, &["--sts-timeout-ms", "1500"]);
    (dir, emu, server)
}

/// A v2 token signed now by Alice's key, signing `extra` headers besides the usual four, and
/// carrying `unsigned` headers too.
fn alice_v2(extra: &[(&str, &str)], unsigned: &[(&str, &str)]) -> String {
    let mut query = BTreeMap::new();
    query.insert("ACKClusterId".to_string(), CLUSTER.to_string());
    let mut signed: BTreeMap<String, String> = [
        ("x-acs-action", "GetCallerIdentity"),
        ("x-acs-content-sha256", EMPTY_BODY_SHA256),
        ("x-acs-date", &now_str()),
        ("x-acs-version", "2015-04-01"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let auth = acs3::sign(
        "LTAI5tAlice",
        "AliceSecret",
        "POST",
        "/",
        &query,
        &signed,
        EMPTY_BODY_SHA256,
    );
    signed.insert("Authorization".into(), auth.to_header());
    for (k, v) in unsigned {
        signed.insert(k.to_string(), v.to_string());
    }
    let body = json!({"clusterId": CLUSTER, "method": "POST", "path": "/", "query": query, "headers": signed});
    pack("k8s-ack-v2.", body.to_string().as_bytes())
}

/// A token that claims to sign header `name` with `value` (the signature itself does not
/// matter: it must never get as far as STS).
fn unsendable(name: &str, value: &str) -> String {
    edit_v2(
        &v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER),
        |v| {
            let auth = v["headers"]["Authorization"]
                .as_str()
                .expect("auth")
                .replace("SignedHeaders=", &format!("SignedHeaders={name};"));
            v["headers"]["Authorization"] = json!(auth);
            v["headers"][name] = json!(value);
        },
    )
}

fn denied_for(v: &Value, needle: &str) {
    assert_eq!(v["status"]["authenticated"], false, "{v}");
    let error = v["status"]["error"].as_str().unwrap_or_default();
    assert!(error.contains(needle), "{needle:?} not in {v}");
    assert!(!error.contains("unavailable"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsendable_tokens_are_refused_locally_and_do_not_delay_others() {
    let (_dir, emu, server) = start_with(None);
    let emu = emu.expect("emulator");
    let client = server.client();
    let bad = [
        unsendable("x-acs-note", "line\nbreak"),
        unsendable("x-acs-note", "del\u{7f}"),
        unsendable("x-acs-note", "cr\rhere"),
        unsendable("x-acs-bad name", "v"),
    ];
    for token in &bad {
        let v = server
            .review(&client, "authentication.k8s.io/v1", token)
            .await;
        denied_for(&v, "cannot be sent in an HTTP request");
    }
    assert_eq!(emu.requests(), 0, "nothing reached STS");

    // 700 of them at once, with a legitimate review in the middle.
    let started = Instant::now();
    let mut flood = Vec::new();
    for i in 0..700 {
        let (client, url, token) = (client.clone(), server.url.clone(), bad[i % 4].clone());
        flood.push(tokio::spawn(async move {
            post_review(&client, &url, "authentication.k8s.io/v1", &token).await
        }));
    }
    // Its own connection, so that it does not queue behind the flood's streams.
    let own = server.client();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let legit_started = Instant::now();
    let v = server
        .review(
            &own,
            "authentication.k8s.io/v1",
            &v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER),
        )
        .await;
    let legit = legit_started.elapsed();
    assert_eq!(v["status"]["user"]["username"], "alice", "{v}");
    for t in flood {
        let v = t.await.expect("task");
        denied_for(&v, "cannot be sent");
    }
    eprintln!(
        "legitimate review: {legit:?}; 700 unsendable tokens: {:?}",
        started.elapsed()
    );
    assert!(
        legit < Duration::from_secs(2),
        "the legitimate review took {legit:?}"
    );
    assert_eq!(emu.requests(), 1, "only the legitimate token reached STS");
    let m = server.metrics().await;
    assert_eq!(
        sample(&m, "ack_ram_authenticator_sts_connection_failures_total"),
        0.0,
        "{m}"
    );
    assert!(!m.contains("outcome=\"unavailable\""), "{m}");
    let logs = server.proc.stderr();
    assert!(logs.contains("unsendable_header"), "{logs}");
    assert!(!logs.contains("line\nbreak") && !logs.contains("STS unavailable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signing_another_host_is_refused_locally() {
    let (_dir, emu, server) = start_with(None);
    let emu = emu.expect("emulator");
    let client = server.client();
    let endpoint_host = emu.url.trim_start_matches("http://").to_string();

    // Signs the host and Content-Type the server sends: STS (which checks the signature over
    // the headers it received) confirms it.
    let token = alice_v2(
        &[
            ("host", &endpoint_host),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        &[],
    );
    let v = server
        .review(&client, "authentication.k8s.io/v1", &token)
        .await;
    assert_eq!(v["status"]["user"]["username"], "alice", "{v}");
    assert_eq!(emu.requests(), 1);

    // Signs another host, or another Content-Type: refused here, STS is not asked.
    for (name, value) in [
        ("host", "sts.aliyuncs.com"),
        ("host", "evil.example:443"),
        ("content-type", "application/json"),
    ] {
        let mut extra = vec![(name, value)];
        if name == "content-type" {
            extra.push(("host", &endpoint_host));
        }
        let token = alice_v2(&extra, &[]);
        let v = server
            .review(&client, "authentication.k8s.io/v1", &token)
            .await;
        denied_for(&v, &format!("token signs {name}: {value:?}"));
    }
    assert_eq!(emu.requests(), 1, "refused tokens never reach STS");
    assert!(server.proc.stderr().contains("signed_header_mismatch"));
}

/// What a stand-in STS does with each request.
#[derive(Clone)]
enum Answer {
    /// Writes these bytes and closes.
    Fixed(Vec<u8>),
    /// `200` with a chunked body that never ends; counts the bytes written until the client
    /// goes away.
    Endless(Arc<Mutex<usize>>),
}

/// A stand-in STS on 127.0.0.1: records each request head and answers as told.
struct FakeSts {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn fake_sts(answer: Answer) -> FakeSts {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let h = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (answer, heads) = (answer.clone(), h.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                heads
                    .lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&buf).into_owned());
                match answer {
                    Answer::Fixed(bytes) => {
                        let _ = socket.write_all(&bytes).await;
                    }
                    Answer::Endless(written) => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                    transfer-encoding: chunked\r\n\r\n";
                        if socket.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let piece = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
                        // Stop by ourselves after 64 MiB, so a client without a cap fails the
                        // test rather than hangs it.
                        for _ in 0..4096 {
                            if socket.write_all(piece.as_bytes()).await.is_err() {
                                return;
                            }
                            *written.lock().expect("lock") += 0x4000;
                        }
                    }
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    FakeSts { url, heads }
}

fn response(status: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const IDENTITY: &str = r#"{"RequestId":"r","AccountId":"1234567890123456","UserId":"2001","Arn":"acs:ram::1234567890123456:user/alice","IdentityType":"RAMUser","PrincipalId":"2001"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_carries_our_host_and_content_type() {
    let sts = fake_sts(Answer::Fixed(response("200 OK", "", IDENTITY))).await;
    let (_dir, _, server) = start_with(Some(&sts.url));
    let client = server.client();
    // Unsigned Host and Content-Type in the token are dropped; the token's own values never
    // reach STS.
    let token = alice_v2(
        &[],
        &[("Host", "evil.example"), ("Content-Type", "text/evil")],
    );
    let v = server
        .review(&client, "authentication.k8s.io/v1", &token)
        .await;
    assert_eq!(v["status"]["user"]["username"], "alice", "{v}");
    let heads = sts.heads.lock().expect("lock").clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = heads[0].to_ascii_lowercase();
    let lines: Vec<&str> = head.lines().collect();
    assert!(lines[0].starts_with("post /?ackclusterid="), "{head}");
    let host = sts.url.trim_start_matches("http://");
    let hosts: Vec<&&str> = lines.iter().filter(|l| l.starts_with("host:")).collect();
    assert_eq!(hosts, vec![&format!("host: {host}").as_str()], "{head}");
    let types: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("content-type:"))
        .collect();
    assert_eq!(
        types,
        vec![&"content-type: application/x-www-form-urlencoded"],
        "{head}"
    );
    assert!(!head.contains("evil"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let target = fake_sts(Answer::Fixed(response("200 OK", "", IDENTITY))).await;
    let sts = fake_sts(Answer::Fixed(response(
        "307 Temporary Redirect",
        &format!("location: {}/\r\n", target.url),
        "",
    )))
    .await;
    let (_dir, _, server) = start_with(Some(&sts.url));
    let client = server.client();
    let token = v2_token("STS.Bob", "BobSecret", Some("BobSecurityToken"), CLUSTER);
    let v = server
        .review(&client, "authentication.k8s.io/v1", &token)
        .await;
    assert_eq!(v["status"]["authenticated"], false, "{v}");
    assert!(
        v["status"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("redirect")),
        "{v}"
    );
    assert_eq!(
        sts.heads.lock().expect("lock").len(),
        1,
        "asked once, no retry"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        target.heads.lock().expect("lock").is_empty(),
        "the redirect target received the signed request"
    );
    let m = server.metrics().await;
    assert_eq!(
        sample(
            &m,
            "ack_ram_authenticator_sts_bad_responses_total{reason=\"redirect\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_unreadable_answers_are_refused() {
    // A body that never ends: read up to the cap, then dropped.
    let written = Arc::new(Mutex::new(0usize));
    let endless = fake_sts(Answer::Endless(written.clone())).await;
    let (_dir, _, server) = start_with(Some(&endless.url));
    let m = server.metrics().await;
    for reason in ["redirect", "too_large", "unparseable"] {
        assert!(
            m.contains(&format!(
                "ack_ram_authenticator_sts_bad_responses_total{{reason=\"{reason}\"}} 0"
            )),
            "{m}"
        );
    }
    let client = server.client();
    let started = Instant::now();
    let v = server
        .review(
            &client,
            "authentication.k8s.io/v1",
            &v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER),
        )
        .await;
    assert_eq!(v["status"]["authenticated"], false, "{v}");
    assert!(
        v["status"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("larger than 65536 bytes")),
        "{v}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = *written.lock().expect("lock");
    assert!(
        sent < 8 << 20,
        "the client kept reading: {sent} bytes written"
    );
    let m = server.metrics().await;
    assert_eq!(
        sample(
            &m,
            "ack_ram_authenticator_sts_bad_responses_total{reason=\"too_large\"}"
        ),
        1.0,
        "{m}"
    );
    drop(server);

    // A declared length over the cap is refused before reading; a 200 that is not an
    // identity is counted as unparseable.
    for (body_len, body, reason) in [
        (1 << 30, "", "too_large"),
        (0, "<html>login portal</html>", "unparseable"),
    ] {
        let answer = if body_len > 0 {
            format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\n\r\n{{").into_bytes()
        } else {
            response("200 OK", "", body)
        };
        let sts = fake_sts(Answer::Fixed(answer)).await;
        let (_dir, _, server) = start_with(Some(&sts.url));
        let client = server.client();
        let v = server
            .review(
                &client,
                "authentication.k8s.io/v1",
                &v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER),
            )
            .await;
        assert_eq!(v["status"]["authenticated"], false, "{v}");
        let m = server.metrics().await;
        assert_eq!(
            sample(
                &m,
                &format!("ack_ram_authenticator_sts_bad_responses_total{{reason=\"{reason}\"}}")
            ),
            1.0,
            "{reason}: {m}"
        );
    }
}

//! Black-box tests of the `sts-emulator` binary: each test starts the real binary on
//! 127.0.0.1:0 and sends it real requests, signed the way real clients sign them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use ram_authenticator::signing::{acs3, percent_encode, rpc, EMPTY_BODY_SHA256};
use ram_authenticator::sts::{CallerIdentity, StsClient, StsError, StsSettings};
use ram_authenticator::token::{self, v1, v2, SignedRequest};
use ram_authenticator::types::{format_utc, parse_utc};
use serde_json::Value;

const ACCOUNT: &str = "1234567890123456";
const ALICE: (&str, &str) = ("LTAI5tQuickstartAlice", "QuickstartAliceSecret0000000000");
const BOB: (&str, &str) = ("STS.QuickstartBob", "QuickstartBobSecret000000000000");
const BOB_TOKEN: &str = "CAIS+QuickstartBob/SecurityToken==";
const DAVE: (&str, &str) = ("LTAI5tDisabledDave", "DisabledDaveSecret0000000000000");
const ERIN: (&str, &str) = ("STS.ExpiredErin", "ExpiredErinSecret00000000000000");
const ERIN_TOKEN: &str = "CAIS+ExpiredErin/SecurityToken==";
const ROOT: (&str, &str) = ("LTAI5tQuickstartRoot", "QuickstartRootSecret00000000000");
const CAROL: (&str, &str) = ("LTAI5tOtherAccountCarol", "OtherAccountCarolSecret00000000");
const KUBE_ADMIN: &str = "acs:ram::1234567890123456:role/KubeAdmin";

fn example_keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/emulator-keys.yaml")
}

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A running emulator; killed when dropped.
struct Emulator {
    child: Child,
    url: String,
    stderr: Arc<Mutex<String>>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Emulator {
    fn start(extra: &[&str]) -> Self {
        let keys = example_keys();
        let mut args = vec!["--keys", keys.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        Self::start_raw(&args).unwrap_or_else(|(status, err)| {
            panic!("the emulator did not start ({status:?}): {err}")
        })
    }

    /// Starts the binary with exactly `args`; on failure returns its exit status and stderr.
    fn start_raw(args: &[&str]) -> Result<Self, (Option<ExitStatus>, String)> {
        init();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sts-emulator"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sts-emulator");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let sink = stderr_text.clone();
        let drain = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let mut emulator = Self {
            child,
            url: String::new(),
            stderr: stderr_text,
            drain: Some(drain),
        };
        match line.trim().strip_prefix("listening on ") {
            Some(url) if !url.is_empty() => {
                emulator.url = url.to_string();
                Ok(emulator)
            }
            _ => {
                let status = emulator.wait_exit(Duration::from_secs(10));
                Err((status, emulator.stderr_text()))
            }
        }
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                if let Some(drain) = self.drain.take() {
                    let _ = drain.join();
                }
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// Sends SIGTERM and waits for the process to end.
    fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        self.wait_exit(Duration::from_secs(15))
            .expect("the emulator stops after SIGTERM")
    }

    fn client(&self) -> StsClient {
        client_for(&self.url, None)
    }

    fn admin(&self, path: &str) -> String {
        format!("{}/_emulator/{path}", self.url)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client_for(url: &str, ca_file: Option<PathBuf>) -> StsClient {
    let mut settings = StsSettings::new(url.to_string());
    settings.max_retries = 0;
    settings.ca_file = ca_file;
    StsClient::new(settings, None).expect("client")
}

fn http() -> reqwest::Client {
    init();
    reqwest::Client::builder()
        .tls_backend_rustls()
        .no_proxy()
        .build()
        .expect("http client")
}

fn now() -> String {
    format_utc(Utc::now())
}

fn v2_token(key: (&str, &str), security_token: Option<&str>, date: &str) -> SignedRequest {
    let tok = v2::mint(&v2::MintV2 {
        access_key_id: key.0,
        access_key_secret: key.1,
        security_token,
        cluster_id: "c-test",
        date,
        extra_query: &[],
        user_agent: "emulator-test",
    });
    token::parse(&tok).expect("minted v2 token parses")
}

fn v1_token(key: (&str, &str), security_token: Option<&str>, nonce: &str) -> SignedRequest {
    let tok = v1::mint(&v1::MintV1 {
        access_key_id: key.0,
        access_key_secret: key.1,
        security_token,
        cluster_id: "c-test",
        timestamp: &now(),
        nonce,
        host: "sts.aliyuncs.com",
    });
    token::parse(&tok).expect("minted v1 token parses")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", rand::random::<u64>())
}

/// A raw answer.
struct Answer {
    status: u16,
    json: Value,
    text: String,
}

impl Answer {
    fn code(&self) -> &str {
        self.json["Code"].as_str().unwrap_or("")
    }
}

async fn read(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, json, text }
}

/// Sends an `ACS3-HMAC-SHA256` signed request (`POST /?query`, empty body).
async fn send_v2(
    url: &str,
    key: (&str, &str),
    security_token: Option<&str>,
    date: &str,
    action: &str,
    query: &[(&str, &str)],
) -> (Answer, String) {
    let query: BTreeMap<String, String> = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut signed = BTreeMap::new();
    signed.insert("x-acs-action".to_string(), action.to_string());
    signed.insert("x-acs-version".to_string(), "2015-04-01".to_string());
    signed.insert("x-acs-date".to_string(), date.to_string());
    signed.insert(
        "x-acs-content-sha256".to_string(),
        EMPTY_BODY_SHA256.to_string(),
    );
    if let Some(t) = security_token {
        signed.insert("x-acs-security-token".to_string(), t.to_string());
    }
    let auth = acs3::sign(
        key.0,
        key.1,
        "POST",
        "/",
        &query,
        &signed,
        EMPTY_BODY_SHA256,
    );
    let qs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    let mut request = http()
        .post(format!("{url}/?{}", qs.join("&")))
        .header("authorization", auth.to_header())
        .header("accept", "application/json");
    for (k, v) in &signed {
        request = request.header(k.as_str(), v.as_str());
    }
    let answer = read(request.send().await.expect("send")).await;
    (answer, auth.signature)
}

/// RPC parameters for `action`, signed with `key`'s ID at `timestamp`.
fn rpc_params(
    action: &str,
    key_id: &str,
    timestamp: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = vec![
        ("Action".into(), action.into()),
        ("Version".into(), "2015-04-01".into()),
        ("Format".into(), "JSON".into()),
        ("AccessKeyId".into(), key_id.into()),
        ("SignatureMethod".into(), "HMAC-SHA1".into()),
        ("SignatureVersion".into(), "1.0".into()),
        ("SignatureNonce".into(), unique("nonce")),
        ("Timestamp".into(), timestamp.into()),
    ];
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    params
}

/// Sends an RPC (v1) signed request: GET with the query, or POST with a form body.
async fn send_v1(url: &str, method: &str, secret: &str, params: &[(String, String)]) -> Answer {
    let query = rpc::signed_query(method, secret, params);
    let request = if method == "GET" {
        http().get(format!("{url}/?{query}"))
    } else {
        http()
            .post(format!("{url}/"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(query)
    };
    read(request.send().await.expect("send")).await
}

async fn rejected(client: &StsClient, req: &SignedRequest) -> (u16, String) {
    match client.get_caller_identity(req).await {
        Err(StsError::Rejected { status, code, .. }) => (status, code),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn assert_error_shape(answer: &Answer, secrets: &[&str]) {
    for field in ["RequestId", "HostId", "Code", "Message", "Recommend"] {
        assert!(
            answer.json[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field} missing in {}",
            answer.text
        );
    }
    for secret in secrets {
        assert!(
            !answer.text.contains(secret),
            "the answer leaks {secret:?}: {}",
            answer.text
        );
    }
}

#[tokio::test]
async fn minted_v2_and_v1_tokens_return_the_configured_identities() {
    let emu = Emulator::start(&[]);
    let client = emu.client();

    let alice = client
        .get_caller_identity(&v2_token(ALICE, None, &now()))
        .await
        .expect("alice v2");
    assert_eq!(
        alice,
        CallerIdentity {
            request_id: alice.request_id.clone(),
            account_id: ACCOUNT.into(),
            user_id: Some("2001".into()),
            role_id: None,
            arn: format!("acs:ram::{ACCOUNT}:user/alice"),
            identity_type: Some("RAMUser".into()),
            principal_id: Some("2001".into()),
        }
    );
    assert!(alice.request_id.is_some_and(|r| r.len() == 36));

    let bob_expected = CallerIdentity {
        request_id: None,
        account_id: ACCOUNT.into(),
        user_id: None,
        role_id: Some("3001".into()),
        arn: format!("acs:ram::{ACCOUNT}:assumed-role/KubeAdmin/bob@example.com"),
        identity_type: Some("AssumedRoleUser".into()),
        principal_id: Some("3001:bob@example.com".into()),
    };
    let bob = client
        .get_caller_identity(&v2_token(BOB, Some(BOB_TOKEN), &now()))
        .await
        .expect("bob v2");
    assert_eq!(
        CallerIdentity {
            request_id: None,
            ..bob
        },
        bob_expected
    );

    // v1: a GET with the pre-signed query.
    let req = v1_token(BOB, Some(BOB_TOKEN), &unique("n"));
    let bob = client.get_caller_identity(&req).await.expect("bob v1");
    assert_eq!(
        CallerIdentity {
            request_id: None,
            ..bob
        },
        bob_expected
    );
    // STS refuses the same v1 request twice: its nonce was used.
    assert_eq!(
        rejected(&client, &req).await,
        (400, "SignatureNonceUsed".to_string())
    );
    // A fresh nonce works again.
    let alice_v1 = client
        .get_caller_identity(&v1_token(ALICE, None, &unique("n")))
        .await
        .expect("alice v1");
    assert_eq!(alice_v1.arn, format!("acs:ram::{ACCOUNT}:user/alice"));
}

#[tokio::test]
async fn real_ack_ram_tool_vectors_verify_with_a_pinned_clock() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/acs3-v2-tokens.json");
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json");
    let vectors = file["vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 2);
    let want = |id: &str| match id {
        "ramuser-access-key" => (
            format!("acs:ram::{ACCOUNT}:user/test-user"),
            "RAMUser",
            "2002",
        ),
        "sts-security-token-extra-query" => (
            format!("acs:ram::{ACCOUNT}:assumed-role/KubeViewer/test-session"),
            "AssumedRoleUser",
            "3002:test-session",
        ),
        other => panic!("unknown vector {other}"),
    };

    let emu = Emulator::start(&["--now", "2026-11-23T09:36:00Z"]);
    let client = emu.client();
    for v in vectors {
        let id = v["id"].as_str().expect("id");
        let req = token::parse(v["token"].as_str().expect("token")).expect("parses");
        let identity = client
            .get_caller_identity(&req)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let (arn, kind, principal) = want(id);
        assert_eq!(identity.arn, arn, "{id}");
        assert_eq!(identity.identity_type.as_deref(), Some(kind), "{id}");
        assert_eq!(identity.principal_id.as_deref(), Some(principal), "{id}");
        assert_eq!(identity.account_id, ACCOUNT, "{id}");
    }

    // The same tokens 25 minutes later: their date is too old.
    let late = Emulator::start(&["--now", "2026-11-23T10:01:00Z"]);
    let client = late.client();
    for v in vectors {
        let req = token::parse(v["token"].as_str().expect("token")).expect("parses");
        assert_eq!(
            rejected(&client, &req).await,
            (400, "InvalidTimeStamp.Expired".to_string())
        );
    }
}

#[tokio::test]
async fn every_refusal_has_the_sts_code_status_and_body() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let minutes = |m: i64| format_utc(Utc::now() + TimeDelta::minutes(m));

    let cases: Vec<(&str, SignedRequest, u16, &str)> = vec![
        (
            "unknown key",
            v2_token(("LTAI5tNobody", "x"), None, &now()),
            404,
            "InvalidAccessKeyId.NotFound",
        ),
        (
            "disabled key",
            v2_token(DAVE, None, &now()),
            400,
            "InvalidAccessKeyId.Inactive",
        ),
        (
            "wrong secret",
            v2_token((ALICE.0, "not-the-secret"), None, &now()),
            400,
            "SignatureDoesNotMatch",
        ),
        (
            "signed 20 minutes ago",
            v2_token(ALICE, None, &minutes(-20)),
            400,
            "InvalidTimeStamp.Expired",
        ),
        (
            "signed 20 minutes ahead",
            v2_token(ALICE, None, &minutes(20)),
            400,
            "InvalidTimeStamp.Expired",
        ),
        (
            "temporary key without its token",
            v2_token(BOB, None, &now()),
            400,
            "MissingSecurityToken",
        ),
        (
            "another token",
            v2_token(BOB, Some("CAIS+someone/else=="), &now()),
            400,
            "InvalidSecurityToken.MismatchWithAccessKey",
        ),
        (
            "a token for a permanent key",
            v2_token(ALICE, Some("CAIS+stray=="), &now()),
            400,
            "InvalidSecurityToken.Malformed",
        ),
        (
            "expired temporary credentials",
            v2_token(ERIN, Some(ERIN_TOKEN), &now()),
            400,
            "InvalidSecurityToken.Expired",
        ),
        (
            "v1 expired temporary credentials",
            v1_token(ERIN, Some(ERIN_TOKEN), &unique("n")),
            400,
            "InvalidSecurityToken.Expired",
        ),
        (
            "v1 wrong secret",
            v1_token((ALICE.0, "nope"), None, &unique("n")),
            400,
            "SignatureDoesNotMatch",
        ),
    ];
    for (what, req, status, code) in cases {
        assert_eq!(
            rejected(&client, &req).await,
            (status, code.to_string()),
            "{what}"
        );
    }

    // The same, raw: the body has every field and quotes no token or signature.
    let (answer, signature) = send_v2(
        &emu.url,
        (BOB.0, "wrong"),
        Some(BOB_TOKEN),
        &now(),
        "GetCallerIdentity",
        &[],
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "SignatureDoesNotMatch")
    );
    assert_error_shape(&answer, &[BOB_TOKEN, &signature, BOB.1]);
    let (answer, signature) = send_v2(
        &emu.url,
        BOB,
        Some("CAIS+someone/else=="),
        &now(),
        "GetCallerIdentity",
        &[],
    )
    .await;
    assert_eq!(answer.code(), "InvalidSecurityToken.MismatchWithAccessKey");
    assert_error_shape(&answer, &[BOB_TOKEN, "CAIS+someone/else==", &signature]);

    // A date that is not a date.
    let (answer, _) = send_v2(
        &emu.url,
        ALICE,
        None,
        "23/11/2026 09:36",
        "GetCallerIdentity",
        &[],
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "InvalidTimeStamp.Format")
    );
    let params = rpc_params("GetCallerIdentity", ALICE.0, "yesterday", &[]);
    let answer = send_v1(&emu.url, "GET", ALICE.1, &params).await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "InvalidTimeStamp.Format")
    );

    // Unknown actions, both schemes.
    let (answer, _) = send_v2(&emu.url, ALICE, None, &now(), "GetSessionToken", &[]).await;
    assert_eq!(
        (answer.status, answer.code()),
        (404, "InvalidAction.NotFound")
    );
    let params = rpc_params("DeleteEverything", ALICE.0, &now(), &[]);
    let answer = send_v1(&emu.url, "GET", ALICE.1, &params).await;
    assert_eq!(
        (answer.status, answer.code()),
        (404, "InvalidAction.NotFound")
    );
    assert_error_shape(&answer, &[ALICE.1]);

    // Missing parameters.
    let mut params = rpc_params("GetCallerIdentity", ALICE.0, &now(), &[]);
    params.retain(|(k, _)| k != "Timestamp");
    let answer = send_v1(&emu.url, "GET", ALICE.1, &params).await;
    assert_eq!((answer.status, answer.code()), (400, "MissingParameter"));
    assert!(answer.json["Message"]
        .as_str()
        .is_some_and(|m| m.contains("Timestamp")));
    let params = rpc_params("AssumeRole", ALICE.0, &now(), &[("RoleSessionName", "s1")]);
    let answer = send_v1(&emu.url, "GET", ALICE.1, &params).await;
    assert_eq!((answer.status, answer.code()), (400, "MissingParameter"));
    assert!(answer.json["Message"]
        .as_str()
        .is_some_and(|m| m.contains("RoleArn")));
    let answer = read(
        http()
            .get(format!("{}/?Action=GetCallerIdentity", emu.url))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((answer.status, answer.code()), (400, "MissingParameter"));
}

#[tokio::test]
async fn assume_role_mints_credentials_that_get_caller_identity_accepts() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let session = "kube@example.com";

    // v1 GET, default duration (an hour).
    let params = rpc_params(
        "AssumeRole",
        ALICE.0,
        &now(),
        &[("RoleArn", KUBE_ADMIN), ("RoleSessionName", session)],
    );
    let answer = send_v1(&emu.url, "GET", ALICE.1, &params).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let arn = format!("acs:ram::{ACCOUNT}:assumed-role/KubeAdmin/{session}");
    assert_eq!(answer.json["AssumedRoleUser"]["Arn"], arn.as_str());
    assert_eq!(
        answer.json["AssumedRoleUser"]["AssumedRoleId"],
        format!("3001:{session}").as_str()
    );
    assert!(answer.json["RequestId"].as_str().is_some());
    let creds = &answer.json["Credentials"];
    let key_id = creds["AccessKeyId"]
        .as_str()
        .expect("AccessKeyId")
        .to_string();
    let secret = creds["AccessKeySecret"]
        .as_str()
        .expect("AccessKeySecret")
        .to_string();
    let security_token = creds["SecurityToken"]
        .as_str()
        .expect("SecurityToken")
        .to_string();
    let expiration = creds["Expiration"].as_str().expect("Expiration");
    assert!(key_id.starts_with("STS."), "{key_id}");
    assert!(
        expiration.ends_with('Z') && expiration.len() == 20,
        "{expiration}"
    );
    let lasts = parse_utc(expiration).expect("date") - Utc::now();
    assert!(
        (TimeDelta::minutes(58)..=TimeDelta::minutes(61)).contains(&lasts),
        "{lasts}"
    );

    // The temporary credentials work, with their token, for both token formats.
    let identity = client
        .get_caller_identity(&v2_token((&key_id, &secret), Some(&security_token), &now()))
        .await
        .expect("temporary credentials v2");
    assert_eq!(identity.arn, arn);
    assert_eq!(identity.identity_type.as_deref(), Some("AssumedRoleUser"));
    assert_eq!(identity.role_id.as_deref(), Some("3001"));
    assert_eq!(identity.user_id, None);
    assert_eq!(
        identity.principal_id.as_deref(),
        Some(format!("3001:{session}").as_str())
    );
    let identity = client
        .get_caller_identity(&v1_token(
            (&key_id, &secret),
            Some(&security_token),
            &unique("n"),
        ))
        .await
        .expect("temporary credentials v1");
    assert_eq!(identity.arn, arn);
    assert_eq!(
        rejected(&client, &v2_token((&key_id, &secret), None, &now())).await,
        (400, "MissingSecurityToken".to_string())
    );

    // v1 POST with a form body, a shorter duration and a lower-cased ARN.
    let params = rpc_params(
        "AssumeRole",
        ALICE.0,
        &now(),
        &[
            ("RoleArn", &KUBE_ADMIN.to_lowercase()),
            ("RoleSessionName", "short"),
            ("DurationSeconds", "900"),
        ],
    );
    let answer = send_v1(&emu.url, "POST", ALICE.1, &params).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let lasts = parse_utc(
        answer.json["Credentials"]["Expiration"]
            .as_str()
            .expect("exp"),
    )
    .expect("date")
        - Utc::now();
    assert!(
        (TimeDelta::minutes(14)..=TimeDelta::minutes(16)).contains(&lasts),
        "{lasts}"
    );

    // ACS3 (v2) signature, parameters in the query.
    let (answer, _) = send_v2(
        &emu.url,
        ALICE,
        None,
        &now(),
        "AssumeRole",
        &[("RoleArn", KUBE_ADMIN), ("RoleSessionName", "v2-session")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.json["AssumedRoleUser"]["Arn"],
        format!("acs:ram::{ACCOUNT}:assumed-role/KubeAdmin/v2-session").as_str()
    );

    // Refusals.
    let assume = |key: (&'static str, &'static str), role: &str| {
        let params = rpc_params(
            "AssumeRole",
            key.0,
            &now(),
            &[("RoleArn", role), ("RoleSessionName", "s1")],
        );
        let url = emu.url.clone();
        async move { send_v1(&url, "GET", key.1, &params).await }
    };
    let answer = assume(ALICE, "acs:ram::1234567890123456:role/NoSuchRole").await;
    assert_eq!((answer.status, answer.code()), (404, "EntityNotExist.Role"));
    let answer = assume(CAROL, KUBE_ADMIN).await;
    assert_eq!((answer.status, answer.code()), (403, "NoPermission"));
    let answer = assume(ROOT, KUBE_ADMIN).await;
    assert_eq!((answer.status, answer.code()), (403, "NoPermission"));
    let auditor = "acs:ram::1234567890123456:role/CrossAccountAuditor";
    let answer = assume(ALICE, auditor).await;
    assert_eq!((answer.status, answer.code()), (403, "NoPermission"));
    let answer = assume(CAROL, auditor).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let params = rpc_params(
        "AssumeRole",
        ALICE.0,
        &now(),
        &[
            ("RoleArn", KUBE_ADMIN),
            ("RoleSessionName", "s1"),
            ("DurationSeconds", "50000"),
        ],
    );
    let answer = send_v1(&emu.url, "GET", ALICE.1, &params).await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "InvalidParameter.DurationSeconds")
    );
}

async fn set_fault(emu: &Emulator, body: Value) -> Answer {
    read(
        http()
            .post(emu.admin("faults"))
            .json(&body)
            .send()
            .await
            .expect("admin"),
    )
    .await
}

#[tokio::test]
async fn injected_faults_and_their_count() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let ok = || v2_token(ALICE, None, &now());

    let a = set_fault(&emu, serde_json::json!({"mode": "throttle"})).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["mode"], "throttle");
    for _ in 0..3 {
        let (answer, _) = send_v2(&emu.url, ALICE, None, &now(), "GetCallerIdentity", &[]).await;
        assert_eq!((answer.status, answer.code()), (400, "Throttling.User"));
        assert_error_shape(&answer, &[]);
    }
    assert!(matches!(
        client.get_caller_identity(&ok()).await,
        Err(StsError::Throttled { code }) if code == "Throttling.User"
    ));

    set_fault(&emu, serde_json::json!({"mode": "error"})).await;
    let (answer, _) = send_v2(&emu.url, ALICE, None, &now(), "GetCallerIdentity", &[]).await;
    assert_eq!((answer.status, answer.code()), (500, "InternalError"));
    assert!(matches!(
        client.get_caller_identity(&ok()).await,
        Err(StsError::ServerError { status: 500, .. })
    ));

    set_fault(&emu, serde_json::json!({"mode": "slow", "delayMs": 400})).await;
    let started = Instant::now();
    client
        .get_caller_identity(&ok())
        .await
        .expect("slow but fine");
    assert!(started.elapsed() >= Duration::from_millis(400));

    // count: the next two requests are throttled, then back to normal.
    let a = set_fault(&emu, serde_json::json!({"mode": "throttle", "count": 2})).await;
    assert_eq!(a.json["count"], 2);
    for _ in 0..2 {
        assert!(matches!(
            client.get_caller_identity(&ok()).await,
            Err(StsError::Throttled { .. })
        ));
    }
    client
        .get_caller_identity(&ok())
        .await
        .expect("fault used up");
    let state = read(http().get(emu.admin("faults")).send().await.expect("get")).await;
    assert_eq!(state.json["mode"], "none");

    // A bad fault body is refused and changes nothing.
    let a = set_fault(&emu, serde_json::json!({"mode": "explode"})).await;
    assert_eq!(a.status, 400);
    assert!(a.json["error"].as_str().is_some_and(|e| e.contains("mode")));
    client.get_caller_identity(&ok()).await.expect("still fine");

    // The initial fault from the command line.
    let slow_start = Emulator::start(&["--fault", "error"]);
    let (answer, _) = send_v2(
        &slow_start.url,
        ALICE,
        None,
        &now(),
        "GetCallerIdentity",
        &[],
    )
    .await;
    assert_eq!((answer.status, answer.code()), (500, "InternalError"));
    let slow = Emulator::start(&["--fault", "slow", "--delay-ms", "300"]);
    let started = Instant::now();
    slow.client()
        .get_caller_identity(&ok())
        .await
        .expect("slow start");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn stats_count_sts_requests_only_and_reset_clears() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let stats = || async {
        read(http().get(emu.admin("stats")).send().await.expect("stats"))
            .await
            .json
    };

    client
        .get_caller_identity(&v2_token(ALICE, None, &now()))
        .await
        .expect("ok");
    client
        .get_caller_identity(&v1_token(ALICE, None, &unique("n")))
        .await
        .expect("ok");
    rejected(&client, &v2_token((ALICE.0, "bad"), None, &now())).await;
    let params = rpc_params(
        "AssumeRole",
        ALICE.0,
        &now(),
        &[("RoleArn", KUBE_ADMIN), ("RoleSessionName", "s1")],
    );
    assert_eq!(send_v1(&emu.url, "GET", ALICE.1, &params).await.status, 200);
    // Admin calls, known or not, are not STS requests.
    let a = read(
        http()
            .get(emu.admin("nothing"))
            .send()
            .await
            .expect("admin"),
    )
    .await;
    assert_eq!(a.status, 404);
    let _ = stats().await;

    let s = stats().await;
    assert_eq!(s["requests"], 4, "{s}");
    assert_eq!(s["byAction"]["GetCallerIdentity"], 3, "{s}");
    assert_eq!(s["byAction"]["AssumeRole"], 1, "{s}");
    assert_eq!(s["byCode"]["Success"], 3, "{s}");
    assert_eq!(s["byCode"]["SignatureDoesNotMatch"], 1, "{s}");

    // Faulted requests count too; reset zeroes the counts and clears the fault.
    set_fault(&emu, serde_json::json!({"mode": "throttle"})).await;
    rejected_throttled(&client).await;
    let s = stats().await;
    assert_eq!(s["requests"], 5, "{s}");
    assert_eq!(s["byCode"]["Throttling.User"], 1, "{s}");
    let a = read(http().post(emu.admin("reset")).send().await.expect("reset")).await;
    assert_eq!(a.status, 200);
    let s = stats().await;
    assert_eq!(s["requests"], 0, "{s}");
    assert_eq!(s["byAction"], serde_json::json!({}), "{s}");
    assert_eq!(s["byCode"], serde_json::json!({}), "{s}");
    client
        .get_caller_identity(&v2_token(ALICE, None, &now()))
        .await
        .expect("fault cleared by reset");
    assert_eq!(stats().await["requests"], 1);
}

async fn rejected_throttled(client: &StsClient) {
    assert!(matches!(
        client
            .get_caller_identity(&v2_token(ALICE, None, &now()))
            .await,
        Err(StsError::Throttled { .. })
    ));
}

#[tokio::test]
async fn https_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");

    let emu = Emulator::start(&[
        "--tls-cert",
        cert.to_str().expect("path"),
        "--tls-key",
        key.to_str().expect("path"),
    ]);
    assert!(emu.url.starts_with("https://127.0.0.1:"), "{}", emu.url);
    let client = client_for(&emu.url, Some(cert.clone()));
    let identity = client
        .get_caller_identity(&v2_token(ALICE, None, &now()))
        .await
        .expect("over TLS");
    assert_eq!(identity.arn, format!("acs:ram::{ACCOUNT}:user/alice"));
    let identity = client
        .get_caller_identity(&v1_token(BOB, Some(BOB_TOKEN), &unique("n")))
        .await
        .expect("v1 over TLS");
    assert_eq!(identity.role_id.as_deref(), Some("3001"));

    // Without trusting the certificate the connection fails.
    let untrusting = client_for(&emu.url, None);
    assert!(matches!(
        untrusting
            .get_caller_identity(&v2_token(ALICE, None, &now()))
            .await,
        Err(StsError::Unavailable(_))
    ));

    // Unusable TLS files: exit 2 with the reason.
    let (status, err) = Emulator::start_raw(&[
        "--keys",
        example_keys().to_str().expect("path"),
        "--tls-cert",
        key.to_str().expect("path"),
        "--tls-key",
        key.to_str().expect("path"),
    ])
    .err()
    .expect("refused");
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{err}");
    assert!(err.contains("no PEM certificate"), "{err}");
}

#[tokio::test]
async fn bad_keys_files_exit_2_naming_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("keys:\n  - accessKeyId: A\n", "keys[0]"),
        (
            "keys:\n  - {accessKeyId: A, accessKeySecret: s, identity: {type: RAMUser, accountId: \"1\", userName: u}}\n",
            "userId",
        ),
        (
            "keys:\n  - {accessKeyId: A, accessKeySecret: s, identity: {type: Account, accountId: \"1\"}}\n  - {accessKeyId: A, accessKeySecret: t, identity: {type: Account, accountId: \"1\"}}\n",
            "listed more than once",
        ),
        (
            "keys:\n  - {accessKeyId: A, accessKeySecret: s, identity: {type: Account, accountId: \"1\"}}\nroles:\n  - {arn: \"acs:ram::1:role/R\", roleId: \"9\", trustedAccessKeyIds: [B]}\n",
            "roles[0].trustedAccessKeyIds",
        ),
        (
            "keys:\n  - {accessKeyId: A, accessKeySecret: s, identity: {type: Account, accountId: \"1\"}}\noidcProviders:\n  - {arn: \"acs:ram::1:oidc-provider/p\", issuerUrl: \"https://i\", clientIds: [a], jwks: [{n: AQAB, e: AQAB}]}\n",
            "oidcProviders[0].jwks[0].n is a 17-bit modulus",
        ),
        (
            "keys:\n  - {accessKeyId: A, accessKeySecret: s, identity: {type: Account, accountId: \"1\"}}\necsMetadata: {roleArn: \"acs:ram::1:role/R\", instanceId: i-1}\n",
            "ecsMetadata.roleArn",
        ),
        ("keys: [}", "keys file"),
        ("", "no keys"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("keys-{i}.yaml"));
        std::fs::write(&path, text).expect("write");
        let (status, err) = Emulator::start_raw(&["--keys", path.to_str().expect("path")])
            .err()
            .expect("refused");
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{text}: {err}");
        assert!(err.contains(want), "{text}: want {want:?} in {err}");
        assert!(
            err.contains(&format!("keys-{i}.yaml")),
            "names the file: {err}"
        );
    }
    let keys = example_keys();
    let (status, err) = Emulator::start_raw(&[
        "--keys",
        keys.to_str().expect("path"),
        "--credentials-uri-code",
        "",
    ])
    .err()
    .expect("refused");
    assert_eq!(status.and_then(|s| s.code()), Some(2));
    assert!(err.contains("--credentials-uri-code"), "{err}");
    let (status, err) = Emulator::start_raw(&["--keys", "/nonexistent/keys.yaml"])
        .err()
        .expect("refused");
    assert_eq!(status.and_then(|s| s.code()), Some(2));
    assert!(
        err.contains("cannot read the keys file /nonexistent/keys.yaml"),
        "{err}"
    );
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_logs_name_keys_but_no_secrets() {
    let mut emu = Emulator::start(&["--log-format", "json"]);
    let client = emu.client();
    let v2 = v2_token(BOB, Some(BOB_TOKEN), &now());
    client.get_caller_identity(&v2).await.expect("v2");
    let v1 = v1_token(BOB, Some(BOB_TOKEN), &unique("n"));
    client.get_caller_identity(&v1).await.expect("v1");
    rejected(&client, &v2_token((ALICE.0, "bad"), None, &now())).await;

    let status = emu.terminate();
    assert!(status.success(), "{status:?}");
    let log = emu.stderr_text();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "sts request")
        .collect();
    assert_eq!(lines.len(), 3, "{log}");
    for line in &lines {
        for field in [
            "method",
            "action",
            "access_key_id",
            "format",
            "code",
            "duration_ms",
        ] {
            assert!(!line[field].is_null(), "{field} missing in {line}");
        }
    }
    assert_eq!(lines[0]["access_key_id"], BOB.0);
    assert_eq!(lines[0]["format"], "v2");
    assert_eq!(lines[1]["format"], "v1");
    assert_eq!(lines[1]["method"], "GET");
    assert_eq!(lines[2]["code"], "SignatureDoesNotMatch");
    assert!(log.contains("shutting down"), "{log}");

    let mut secrets = vec![
        BOB_TOKEN.to_string(),
        BOB.1.to_string(),
        ALICE.1.to_string(),
    ];
    if let ram_authenticator::token::Wire::V2 { authorization, .. } = &v2.wire {
        let auth = acs3::Authorization::parse(authorization).expect("auth");
        secrets.push(auth.signature);
    }
    if let ram_authenticator::token::Wire::V1 { params } = &v1.wire {
        let sig = params
            .iter()
            .find(|(k, _)| k == "Signature")
            .expect("signature");
        secrets.push(sig.1.clone());
        secrets.push(percent_encode(&sig.1));
    }
    secrets.push(percent_encode(BOB_TOKEN));
    for secret in secrets {
        assert!(!log.contains(&secret), "the log leaks {secret:?}:\n{log}");
    }
}

// ---- AssumeRoleWithOIDC, the ECS metadata and credentials-URI stand-ins ----------------------

#[path = "common/mod.rs"]
mod common;

use common::{
    mint_oidc_jwt, oidc_other_key_path, sign_jwt, valid_oidc_jwt, ECS_INSTANCE_ID, ECS_ROLE_NAME,
    OIDC_CLIENT_ID, OIDC_ISSUER, OIDC_KEY_ID, OIDC_PROVIDER_ARN, OIDC_ROLE_ARN, OIDC_SUBJECT,
    URI_ROLE_NAME, URI_SESSION,
};

/// `AssumeRoleWithOIDC` parameters for `token` (unsigned), plus `extra`.
fn oidc_params(token: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = vec![
        ("Action".into(), "AssumeRoleWithOIDC".into()),
        ("Version".into(), "2015-04-01".into()),
        ("Format".into(), "JSON".into()),
        ("RoleArn".into(), OIDC_ROLE_ARN.into()),
        ("OIDCProviderArn".into(), OIDC_PROVIDER_ARN.into()),
        ("OIDCToken".into(), token.into()),
        ("RoleSessionName".into(), "web-pod".into()),
    ];
    for (k, v) in extra {
        match params.iter_mut().find(|(name, _)| name == k) {
            Some(p) => p.1 = v.to_string(),
            None => params.push((k.to_string(), v.to_string())),
        }
    }
    params.retain(|(_, v)| !v.is_empty());
    params
}

/// Sends an unsigned RPC call as a POST form body.
async fn send_unsigned(url: &str, params: &[(String, String)]) -> Answer {
    let body: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    let request = http()
        .post(format!("{url}/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"));
    read(request.send().await.expect("send")).await
}

/// The (AccessKeyId, AccessKeySecret, SecurityToken) of a credentials JSON object.
fn creds_of(json: &Value) -> (String, String, String) {
    let get = |name: &str| {
        json[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} missing in {json}"))
            .to_string()
    };
    (
        get("AccessKeyId"),
        get("AccessKeySecret"),
        get("SecurityToken"),
    )
}

/// Signs a v2 token with the credentials and asks the emulator who that is.
async fn identity_of(emu: &Emulator, creds: &(String, String, String)) -> CallerIdentity {
    emu.client()
        .get_caller_identity(&v2_token((&creds.0, &creds.1), Some(&creds.2), &now()))
        .await
        .expect("the minted credentials verify")
}

#[tokio::test]
async fn assume_role_with_oidc_mints_credentials_that_verify_as_the_role() {
    let emu = Emulator::start(&[]);
    let jwt = valid_oidc_jwt();
    let answer = send_unsigned(&emu.url, &oidc_params(&jwt, &[("DurationSeconds", "900")])).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let arn = format!("acs:ram::{ACCOUNT}:assumed-role/KubeWorkload/web-pod");
    assert_eq!(answer.json["AssumedRoleUser"]["Arn"], arn.as_str());
    assert_eq!(
        answer.json["AssumedRoleUser"]["AssumedRoleId"],
        "3004:web-pod"
    );
    assert!(answer.json["RequestId"].as_str().is_some());
    let info = &answer.json["OIDCTokenInfo"];
    assert_eq!(info["Subject"], OIDC_SUBJECT);
    assert_eq!(info["Issuer"], OIDC_ISSUER);
    assert_eq!(info["ClientIds"], OIDC_CLIENT_ID);
    assert!(info["ExpirationTime"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let expiration = answer.json["Credentials"]["Expiration"]
        .as_str()
        .expect("Expiration");
    let lasts = parse_utc(expiration).expect("date") - Utc::now();
    assert!(
        (TimeDelta::minutes(14)..=TimeDelta::minutes(16)).contains(&lasts),
        "{lasts}"
    );
    let creds = creds_of(&answer.json["Credentials"]);
    assert!(creds.0.starts_with("STS."), "{}", creds.0);
    let identity = identity_of(&emu, &creds).await;
    assert_eq!(identity.arn, arn);
    assert_eq!(identity.identity_type.as_deref(), Some("AssumedRoleUser"));
    assert_eq!(identity.principal_id.as_deref(), Some("3004:web-pod"));

    // The same call as a GET query, and in the V3 style (x-acs-action), a policy attached.
    let params = oidc_params(&jwt, &[("RoleSessionName", "via-get")]);
    let qs: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    let answer = read(
        http()
            .get(format!("{}/?{}", emu.url, qs.join("&")))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let params: Vec<(String, String)> = oidc_params(
        &jwt,
        &[
            ("RoleSessionName", "via-v3"),
            ("Policy", r#"{"Version":"1","Statement":[]}"#),
        ],
    )
    .into_iter()
    .filter(|(k, _)| k != "Action" && k != "Version")
    .collect();
    let qs: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    let answer = read(
        http()
            .post(format!("{}/?{}", emu.url, qs.join("&")))
            .header("x-acs-action", "AssumeRoleWithOIDC")
            .header("x-acs-version", "2015-04-01")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let identity = identity_of(&emu, &creds_of(&answer.json["Credentials"])).await;
    assert_eq!(
        identity.arn,
        format!("acs:ram::{ACCOUNT}:assumed-role/KubeWorkload/via-v3")
    );

    let stats: Value = http()
        .get(emu.admin("stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["byAction"]["AssumeRoleWithOIDC"], 3, "{stats}");
}

#[tokio::test]
async fn assume_role_with_oidc_refuses_bad_tokens_and_untrusted_subjects() {
    let emu = Emulator::start(&[]);
    let now_s = Utc::now().timestamp();
    let header = serde_json::json!({"alg": "RS256", "kid": OIDC_KEY_ID});
    let claims = |extra: Value| {
        let mut c = serde_json::json!({
            "iss": OIDC_ISSUER, "aud": OIDC_CLIENT_ID, "sub": OIDC_SUBJECT, "exp": now_s + 3600,
        });
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    let other_key = sign_jwt(
        &oidc_other_key_path(),
        &header,
        &claims(serde_json::json!({})),
    );
    let good = valid_oidc_jwt();
    let mut parts = good.split('.');
    let h = parts.next().expect("header").to_string();
    let c = parts.next().expect("claims").to_string();
    let hs256 = format!("{}.{c}.AAAA", base64_url(br#"{"alg":"HS256","typ":"JWT"}"#));
    let alg_none = format!("{}.{c}.", base64_url(br#"{"alg":"none"}"#));
    // A valid signature on other claims, pasted onto these claims.
    let tampered = {
        let other = mint_oidc_jwt(
            OIDC_ISSUER,
            OIDC_CLIENT_ID,
            "system:serviceaccount:kube-system:x",
            now_s + 3600,
        );
        let sig = other.rsplit('.').next().expect("sig").to_string();
        format!("{h}.{c}.{sig}")
    };
    /// (token, parameters changed, status, code)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            mint_oidc_jwt(OIDC_ISSUER, OIDC_CLIENT_ID, OIDC_SUBJECT, now_s - 10),
            vec![],
            401,
            "AuthenticationFail.OIDCToken.Expired",
        ),
        (
            other_key,
            vec![],
            401,
            "AuthenticationFail.OIDCToken.InvalidSignature",
        ),
        (
            tampered,
            vec![],
            401,
            "AuthenticationFail.OIDCToken.InvalidSignature",
        ),
        (
            mint_oidc_jwt(
                "https://evil.example",
                OIDC_CLIENT_ID,
                OIDC_SUBJECT,
                now_s + 3600,
            ),
            vec![],
            401,
            "AuthenticationFail.OIDCToken.IssuerNotMatch",
        ),
        (
            mint_oidc_jwt(OIDC_ISSUER, "someone-else", OIDC_SUBJECT, now_s + 3600),
            vec![],
            401,
            "AuthenticationFail.OIDCToken.AudienceNotMatch",
        ),
        (
            mint_oidc_jwt(
                OIDC_ISSUER,
                OIDC_CLIENT_ID,
                "system:serviceaccount:other:web",
                now_s + 3600,
            ),
            vec![],
            401,
            "AuthenticationFail.NoPermission",
        ),
        (
            sign_jwt(
                &common::oidc_key_path(),
                &header,
                &claims(serde_json::json!({"nbf": now_s + 600})),
            ),
            vec![],
            401,
            "AuthenticationFail.OIDCToken.Invalid",
        ),
        (
            sign_jwt(
                &common::oidc_key_path(),
                &header,
                &claims(serde_json::json!({"exp": null})),
            ),
            vec![],
            401,
            "AuthenticationFail.OIDCToken.Invalid",
        ),
        (hs256, vec![], 401, "AuthenticationFail.OIDCToken.Invalid"),
        (
            alg_none,
            vec![],
            401,
            "AuthenticationFail.OIDCToken.Invalid",
        ),
        (
            "not-a-jwt".into(),
            vec![],
            401,
            "AuthenticationFail.OIDCToken.Invalid",
        ),
        (
            "a".repeat(17 * 1024),
            vec![],
            401,
            "AuthenticationFail.OIDCToken.Invalid",
        ),
        (
            String::new(),
            vec![],
            401,
            "AuthenticationFail.OIDCToken.Invalid",
        ),
        (
            good.clone(),
            vec![(
                "OIDCProviderArn",
                "acs:ram::1234567890123456:oidc-provider/nope",
            )],
            401,
            "AuthenticationFail.NoPermission",
        ),
        // KubeAdmin does not trust the provider.
        (
            good.clone(),
            vec![("RoleArn", KUBE_ADMIN)],
            401,
            "AuthenticationFail.NoPermission",
        ),
        (
            good.clone(),
            vec![("RoleArn", "acs:ram::1234567890123456:role/Nope")],
            404,
            "EntityNotExist.Role",
        ),
        (good.clone(), vec![("RoleArn", "")], 400, "MissingParameter"),
        (
            good.clone(),
            vec![("RoleSessionName", "")],
            400,
            "MissingParameter",
        ),
        (
            good.clone(),
            vec![("RoleSessionName", "a b")],
            400,
            "InvalidParameter.RoleSessionName",
        ),
        (
            good.clone(),
            vec![("DurationSeconds", "899")],
            400,
            "InvalidParameter.DurationSeconds",
        ),
        (
            good.clone(),
            vec![("Policy", "not json")],
            400,
            "InvalidParameter.PolicyGrammar",
        ),
        (
            good.clone(),
            vec![("Version", "2020-01-01")],
            400,
            "InvalidVersion",
        ),
    ];
    // A policy of more than 2048 characters.
    let long_policy = format!(
        r#"{{"Version":"1","Statement":[],"Pad":"{}"}}"#,
        "x".repeat(2048)
    );
    let mut cases = cases;
    cases.push((
        good.clone(),
        vec![("Policy", &long_policy)],
        400,
        "InvalidParameter.PolicyGrammar",
    ));
    let started = Instant::now();
    for (jwt, extra, status, code) in &cases {
        let answer = send_unsigned(&emu.url, &oidc_params(jwt, extra)).await;
        assert_eq!(
            (answer.status, answer.code()),
            (*status, *code),
            "{extra:?}: {}",
            answer.text
        );
        assert_error_shape(&answer, &[]);
        if jwt.len() > 20 {
            // Neither the token nor its signature is echoed.
            let sig = jwt.rsplit('.').next().unwrap_or("");
            assert!(!answer.text.contains(jwt.as_str()), "{}", answer.text);
            assert!(
                sig.len() < 8 || !answer.text.contains(sig),
                "{}",
                answer.text
            );
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // The token is never logged either.
    assert!(!emu.stderr_text().contains(&good), "the log holds a token");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A metadata request: `PUT /latest/api/token` or a GET of a metadata path, with an optional
/// token; returns (status, body).
async fn metadata(url: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = http().request(method.parse().expect("method"), format!("{url}{path}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let resp = request.send().await.expect("metadata request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

const TOKEN_PATH: &str = "/latest/api/token";
const CREDS_PATH: &str = "/latest/meta-data/ram/security-credentials/";
const TTL: &str = "X-aliyun-ecs-metadata-token-ttl-seconds";
const TOKEN: &str = "X-aliyun-ecs-metadata-token";

async fn set_metadata_mode(emu: &Emulator, mode: &str) {
    let resp = http()
        .post(emu.admin("metadata"))
        .body(format!(r#"{{"mode":"{mode}"}}"#))
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), 200);
}

/// Fetches the role's credentials from the metadata service and checks they verify as the
/// instance's role session.
async fn check_metadata_credentials(emu: &Emulator, headers: &[(&str, &str)]) {
    let (status, list) = metadata(&emu.url, "GET", CREDS_PATH, headers).await;
    assert_eq!((status, list.as_str()), (200, ECS_ROLE_NAME));
    let (status, body) = metadata(
        &emu.url,
        "GET",
        &format!("{CREDS_PATH}{ECS_ROLE_NAME}"),
        headers,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["Code"], "Success");
    for field in ["Expiration", "LastUpdated"] {
        let date = json[field].as_str().expect(field);
        assert!(parse_utc(date).is_some() && date.ends_with('Z'), "{date}");
    }
    let identity = identity_of(emu, &creds_of(&json)).await;
    assert_eq!(
        identity.arn,
        format!("acs:ram::{ACCOUNT}:assumed-role/{ECS_ROLE_NAME}/{ECS_INSTANCE_ID}")
    );
}

#[tokio::test]
async fn metadata_stand_in_hardened_and_plain_modes() {
    let emu = Emulator::start(&[]);
    // Default mode: hardened and plain requests are both answered.
    let (status, token) = metadata(&emu.url, "PUT", TOKEN_PATH, &[(TTL, "60")]).await;
    assert_eq!(status, 200);
    assert!(token.len() >= 20, "{token}");
    check_metadata_credentials(&emu, &[(TOKEN, &token)]).await;
    check_metadata_credentials(&emu, &[]).await;
    // A token it did not issue, a bad TTL, a GET of the token path, an unknown role.
    assert_eq!(
        metadata(&emu.url, "GET", CREDS_PATH, &[(TOKEN, "forged")])
            .await
            .0,
        401
    );
    for ttl in ["0", "21601", "x"] {
        assert_eq!(
            metadata(&emu.url, "PUT", TOKEN_PATH, &[(TTL, ttl)]).await.0,
            400
        );
    }
    assert_eq!(metadata(&emu.url, "PUT", TOKEN_PATH, &[]).await.0, 400);
    assert_eq!(
        metadata(&emu.url, "GET", TOKEN_PATH, &[(TTL, "60")])
            .await
            .0,
        405
    );
    assert_eq!(
        metadata(&emu.url, "GET", &format!("{CREDS_PATH}Other"), &[])
            .await
            .0,
        404
    );
    assert_eq!(
        metadata(&emu.url, "GET", "/latest/meta-data/instance-id", &[])
            .await
            .0,
        404
    );

    // Hardened mode enforced: plain GETs get 403, tokens still work.
    set_metadata_mode(&emu, "hardened").await;
    let (status, _) = metadata(&emu.url, "GET", CREDS_PATH, &[]).await;
    assert_eq!(status, 403);
    let (status, _) = metadata(
        &emu.url,
        "GET",
        &format!("{CREDS_PATH}{ECS_ROLE_NAME}"),
        &[],
    )
    .await;
    assert_eq!(status, 403);
    check_metadata_credentials(&emu, &[(TOKEN, &token)]).await;

    // A service without hardened mode: the token PUT is not found, plain GETs work.
    set_metadata_mode(&emu, "plain").await;
    assert_eq!(
        metadata(&emu.url, "PUT", TOKEN_PATH, &[(TTL, "60")])
            .await
            .0,
        404
    );
    check_metadata_credentials(&emu, &[]).await;

    let stats: Value = http()
        .get(emu.admin("stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["byMetadata"]["token"], 1, "{stats}");
    assert_eq!(stats["byMetadata"]["hardened"], 4, "{stats}");
    assert_eq!(stats["byMetadata"]["plain"], 4, "{stats}");
    // The metadata requests are not STS requests.
    assert_eq!(stats["byAction"].get("other"), None, "{stats}");

    // Bad admin bodies are refused; reset returns to `any`.
    let resp = http()
        .post(emu.admin("metadata"))
        .body(r#"{"mode":"sometimes"}"#)
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), 400);
    http().post(emu.admin("reset")).send().await.expect("reset");
    let mode: Value = http()
        .get(emu.admin("metadata"))
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    assert_eq!(mode["mode"], "any");
}

#[tokio::test]
async fn metadata_stand_in_hardened_from_the_start_and_hang_mode() {
    let emu = Emulator::start(&["--metadata-mode", "hardened"]);
    assert_eq!(metadata(&emu.url, "GET", CREDS_PATH, &[]).await.0, 403);
    let (status, token) = metadata(&emu.url, "PUT", TOKEN_PATH, &[(TTL, "60")]).await;
    assert_eq!(status, 200);
    check_metadata_credentials(&emu, &[(TOKEN, &token)]).await;

    // `hang`: the connection is accepted but nothing is answered.
    set_metadata_mode(&emu, "hang").await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    let started = Instant::now();
    for (method, path) in [("PUT", TOKEN_PATH), ("GET", CREDS_PATH)] {
        let err = client
            .request(
                method.parse().expect("method"),
                format!("{}{path}", emu.url),
            )
            .header(TTL, "60")
            .send()
            .await
            .expect_err("no answer");
        assert!(err.is_timeout(), "{err}");
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // STS itself still answers.
    let identity = emu
        .client()
        .get_caller_identity(&v2_token(ALICE, None, &now()))
        .await
        .expect("STS answers");
    assert!(identity.arn.ends_with("user/alice"));
}

async fn credentials_uri(emu: &Emulator) -> (u16, Value) {
    let resp = http()
        .get(format!("{}/credentials-uri", emu.url))
        .send()
        .await
        .expect("credentials uri");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

async fn set_uri_answer(emu: &Emulator, body: &str) -> u16 {
    http()
        .post(emu.admin("credentials-uri"))
        .body(body.to_string())
        .send()
        .await
        .expect("admin")
        .status()
        .as_u16()
}

#[tokio::test]
async fn credentials_uri_answers_credentials_or_the_code_it_is_told() {
    let emu = Emulator::start(&[]);
    let (status, json) = credentials_uri(&emu).await;
    assert_eq!(status, 200);
    assert_eq!(json["Code"], "Success");
    let expiration = json["Expiration"].as_str().expect("Expiration");
    assert_eq!(expiration.len(), 20, "YYYY-MM-DDThh:mm:ssZ: {expiration}");
    assert!(parse_utc(expiration).is_some_and(|e| e > Utc::now()));
    let identity = identity_of(&emu, &creds_of(&json)).await;
    assert_eq!(
        identity.arn,
        format!("acs:ram::{ACCOUNT}:assumed-role/{URI_ROLE_NAME}/{URI_SESSION}")
    );

    assert_eq!(set_uri_answer(&emu, r#"{"code":"Failure"}"#).await, 200);
    let (status, json) = credentials_uri(&emu).await;
    assert_eq!((status, json["Code"].as_str()), (200, Some("Failure")));
    assert!(json.get("AccessKeyId").is_none(), "{json}");
    assert_eq!(
        set_uri_answer(&emu, r#"{"code":"InternalError","status":500}"#).await,
        200
    );
    let (status, json) = credentials_uri(&emu).await;
    assert_eq!(
        (status, json["Code"].as_str()),
        (500, Some("InternalError"))
    );
    for bad in [
        r#"{"code":""}"#,
        r#"{"code":"X","status":99}"#,
        r#"{"cod":"X"}"#,
        "nope",
    ] {
        assert_eq!(set_uri_answer(&emu, bad).await, 400, "{bad}");
    }
    http().post(emu.admin("reset")).send().await.expect("reset");
    assert_eq!(credentials_uri(&emu).await.1["Code"], "Success");
    let stats: Value = http()
        .get(emu.admin("stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(
        stats["credentialsUri"], 1,
        "counted since the reset: {stats}"
    );

    // Told at start.
    let emu = Emulator::start(&["--credentials-uri-code", "Failure"]);
    assert_eq!(credentials_uri(&emu).await.1["Code"], "Failure");
}

#[tokio::test]
async fn stand_ins_without_their_keys_file_entries_answer_404() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.yaml");
    std::fs::write(
        &path,
        "keys:\n  - {accessKeyId: A, accessKeySecret: s, identity: {type: Account, accountId: \"1\"}}\n",
    )
    .expect("write");
    let emu = Emulator::start_raw(&["--keys", path.to_str().expect("path")])
        .unwrap_or_else(|(_, e)| panic!("{e}"));
    assert_eq!(metadata(&emu.url, "GET", CREDS_PATH, &[]).await.0, 404);
    assert_eq!(
        metadata(
            &emu.url,
            "GET",
            &format!("{CREDS_PATH}{ECS_ROLE_NAME}"),
            &[]
        )
        .await
        .0,
        404
    );
    let (status, json) = credentials_uri(&emu).await;
    assert_eq!((status, json["Code"].as_str()), (404, Some("NotFound")));
    assert!(json.get("AccessKeyId").is_none());
    let answer = send_unsigned(&emu.url, &oidc_params(&valid_oidc_jwt(), &[])).await;
    assert_eq!((answer.status, answer.code()), (404, "EntityNotExist.Role"));
}

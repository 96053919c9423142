//! Helpers for black-box tests: start the real binaries on loopback, mint tokens, send reviews.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ram_authenticator::token::{v1, v2};
use ram_authenticator::types::format_utc;
use serde_json::{json, Value};

pub const CLUSTER: &str = "c1234567890abcdef";
pub const ACCOUNT: &str = "1234567890123456";

/// Keys the test emulator knows.
pub const KEYS_YAML: &str = r#"
keys:
  - accessKeyId: LTAI5tAlice
    accessKeySecret: AliceSecret
    identity: {type: RAMUser, accountId: "1234567890123456", userName: alice, userId: "2001"}
  - accessKeyId: STS.Bob
    accessKeySecret: BobSecret
    securityToken: BobSecurityToken
    identity: {type: AssumedRoleUser, accountId: "1234567890123456", roleName: KubeAdmin, roleId: "3001", sessionName: bob@example.com}
  - accessKeyId: LTAI5tCarol
    accessKeySecret: CarolSecret
    identity: {type: RAMUser, accountId: "2222222222222222", userName: carol, userId: "4001"}
  - accessKeyId: LTAI5tDave
    accessKeySecret: DaveSecret
    identity: {type: RAMUser, accountId: "3333333333333333", userName: dave, userId: "5001"}
  - accessKeyId: LTAI5tErin
    accessKeySecret: ErinSecret
    identity: {type: RAMUser, accountId: "4444444444444444", userName: erin, userId: "6001"}
roles:
  - arn: acs:ram::1234567890123456:role/KubeAdmin
    roleId: "3001"
    trustedOidcProviderArns: [acs:ram::1234567890123456:oidc-provider/ack-rrsa-emulator]
  - arn: acs:ram::1234567890123456:role/KubeWorkload
    roleId: "3004"
    trustedOidcProviderArns: [acs:ram::1234567890123456:oidc-provider/ack-rrsa-emulator]
    oidcSubjects: ["system:serviceaccount:apps:*"]
  - arn: acs:ram::1234567890123456:role/KubeEcsNode
    roleId: "3005"
  - arn: acs:ram::1234567890123456:role/KubeUriWorkload
    roleId: "3006"
oidcProviders:
  - arn: acs:ram::1234567890123456:oidc-provider/ack-rrsa-emulator
    issuerUrl: https://oidc.emulator.invalid/ack-rrsa-emulator
    clientIds: [sts.aliyuncs.com]
    jwks:
      - kid: emulator-test-key
        n: pwOVuuI4V5beL9t_QrF8CsmpKmhp2dSbR-iEyBGESlKfxk4RPWALosDxA3zUu1na8hx3uNHSBGN1M8lhbA6wp3jKbMDcMbJxl7Rz38SDgJqhuYgCjnCpdTkAeog5I8Ut48gbttVSkxM7b8F-kC2sE2sm1fj1EGJjRxTHkJhuvs4FY0rwlOPq3ZbXZixFj4g2rZ-tnGo7AJ_HTZnWnN31zLFMTGiyhydHab_YWnsFTXG1cTklKYMKIs1t_r3N2wCekzxq8SU-twfp1xPzYqgpQLeUV0j3ti9Tk7T1Xl5sOQsEfQUlooId_a333Mor_z1EizOd22N6DptUe1yu24IxqQ
        e: AQAB
ecsMetadata:
  roleArn: acs:ram::1234567890123456:role/KubeEcsNode
  instanceId: i-emulator0000000001
credentialsUri:
  roleArn: acs:ram::1234567890123456:role/KubeUriWorkload
"#;

/// Server config mapping the identities above.
pub const CONFIG_YAML: &str = r#"
clusterID: c1234567890abcdef
server:
  mapUsers:
    - userARN: acs:ram::1234567890123456:user/alice
      username: alice
      groups: [developers]
    - userarn: acs:ram::4444444444444444:user/erin
      username: erin-4444444444444444
  mapRoles:
    - roleARN: acs:ram::1234567890123456:role/KubeAdmin
      username: "admin:{{AccountID}}:{{SessionName}}"
      groups: ["admins", "session:{{SessionNameRaw}}"]
  mapAccounts: ["2222222222222222"]
  scrubbedAccounts: ["4444444444444444"]
"#;

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub stderr_path: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
    /// Sends a signal (by number) to the process.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }
}

fn spawn_reading(mut cmd: Command, dir: &Path, name: &str, wanted: &[&str]) -> (Proc, Vec<String>) {
    let stderr_path = dir.join(format!("{name}.stderr"));
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let expected = wanted.len();
    let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut found = Vec::new();
        let mut line = String::new();
        while found.len() < wanted.len() {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if let Some(rest) = line.trim().strip_prefix(wanted[found.len()].as_str()) {
                found.push(rest.trim().to_string());
            }
        }
        let _ = tx.send(found);
        // Keep draining so the child never blocks on a full pipe.
        let mut sink = String::new();
        while reader.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    let found = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    let proc = Proc { child, stderr_path };
    assert_eq!(
        found.len(),
        expected,
        "{name} did not start: {}",
        proc.stderr()
    );
    (proc, found)
}

/// A running STS emulator.
pub struct Emulator {
    pub proc: Proc,
    pub url: String,
}

impl Emulator {
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        let keys = dir.join("emulator-keys.yaml");
        std::fs::write(&keys, KEYS_YAML).expect("keys");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sts-emulator"));
        cmd.args(["--listen", "127.0.0.1:0", "--keys"])
            .arg(&keys)
            .args(extra);
        Self::start_command(dir, cmd)
    }

    /// Starts an emulator from a prepared command.
    pub fn start_command(dir: &Path, cmd: Command) -> Self {
        let (proc, found) = spawn_reading(cmd, dir, "emulator", &["listening on"]);
        Self {
            proc,
            url: found[0].clone(),
        }
    }

    pub fn stats(&self) -> Value {
        blocking_json("GET", &format!("{}/_emulator/stats", self.url), None)
    }

    pub fn requests(&self) -> u64 {
        self.stats()["requests"].as_u64().expect("requests")
    }

    pub fn fault(&self, mode: &str, delay_ms: u64) {
        blocking_json(
            "POST",
            &format!("{}/_emulator/faults", self.url),
            Some(json!({"mode": mode, "delayMs": delay_ms})),
        );
    }
}

fn blocking_json(method: &str, url: &str, body: Option<Value>) -> Value {
    // Runs on its own thread so that it can be called from async tests too.
    let (method, url) = (method.to_string(), url.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let client = reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client");
            let mut req = client.request(method.parse().expect("method"), &url);
            if let Some(b) = body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let resp = req.send().await.expect("emulator admin");
            let text = resp.text().await.expect("body");
            serde_json::from_str(&text).unwrap_or(Value::Null)
        })
    })
    .join()
    .expect("admin thread")
}

/// A running webhook server.
pub struct Server {
    pub proc: Proc,
    pub url: String,
    pub health: String,
    pub kubeconfig: PathBuf,
    pub state_dir: PathBuf,
    pub config: PathBuf,
}

impl Server {
    pub fn start(dir: &Path, sts_url: &str, extra: &[&str]) -> Self {
        Self::start_with_config(dir, sts_url, CONFIG_YAML, extra)
    }

    pub fn start_with_config(dir: &Path, sts_url: &str, config_text: &str, extra: &[&str]) -> Self {
        let config = dir.join("config.yaml");
        if !config.exists() {
            std::fs::write(&config, config_text).expect("config");
        }
        let state_dir = dir.join("state");
        let kubeconfig = dir.join("webhook.kubeconfig");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ram-authenticator"));
        cmd.arg("server")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--generate-kubeconfig")
            .arg(&kubeconfig)
            .args(["--health-address", "127.0.0.1:0", "--sts-endpoint", sts_url])
            .args(["--reload-interval-ms", "200"])
            .args(extra)
            .env("RUST_LOG", "info");
        if !extra.contains(&"--port") {
            cmd.args(["--port", "0"]);
        }
        let (proc, found) = spawn_reading(cmd, dir, "server", &["serving", "health"]);
        Self {
            proc,
            url: found[0].clone(),
            health: found[1].clone(),
            kubeconfig,
            state_dir,
            config,
        }
    }

    /// A client that trusts only the CA in the webhook kubeconfig the server wrote.
    pub fn client(&self) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (ca, _) = read_kubeconfig(&self.kubeconfig);
        let certs = reqwest::Certificate::from_pem_bundle(&ca).expect("ca");
        reqwest::Client::builder()
            .tls_certs_only(certs)
            .no_proxy()
            .build()
            .expect("client")
    }

    pub async fn review(&self, client: &reqwest::Client, api_version: &str, token: &str) -> Value {
        post_review(client, &self.url, api_version, token).await
    }

    /// The text of `/metrics` on the health listener.
    pub async fn metrics(&self) -> String {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(format!("{}/metrics", self.health))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

/// The value of one sample in a metrics text (`series` is the name with its labels, as
/// printed), 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Posts a TokenReview for `token` to `url` and returns the answer, which must be an HTTP 200.
pub async fn post_review(
    client: &reqwest::Client,
    url: &str,
    api_version: &str,
    token: &str,
) -> Value {
    let body = json!({"apiVersion": api_version, "kind": "TokenReview", "spec": {"token": token}});
    let resp = client.post(url).json(&body).send().await.expect("review");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

/// (CA PEM, server URL) from a webhook kubeconfig.
pub fn read_kubeconfig(path: &Path) -> (Vec<u8>, String) {
    let v: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("kubeconfig")).expect("yaml");
    let cluster = &v["clusters"][0]["cluster"];
    let ca = base64::engine::general_purpose::STANDARD
        .decode(
            cluster["certificate-authority-data"]
                .as_str()
                .expect("ca data"),
        )
        .expect("base64");
    (ca, cluster["server"].as_str().expect("server").to_string())
}

pub fn now_str() -> String {
    format_utc(chrono::Utc::now())
}

/// A v2 token signed now.
pub fn v2_token(akid: &str, secret: &str, security_token: Option<&str>, cluster: &str) -> String {
    v2::mint(&v2::MintV2 {
        access_key_id: akid,
        access_key_secret: secret,
        security_token,
        cluster_id: cluster,
        date: &now_str(),
        extra_query: &[],
        user_agent: "tests",
    })
}

/// A v1 token signed now, with a fresh nonce.
pub fn v1_token(akid: &str, secret: &str, security_token: Option<&str>, cluster: &str) -> String {
    let nonce = format!("{:032x}", rand::random::<u128>());
    v1::mint(&v1::MintV1 {
        access_key_id: akid,
        access_key_secret: secret,
        security_token,
        cluster_id: cluster,
        timestamp: &now_str(),
        nonce: &nonce,
        host: "sts.aliyuncs.com",
    })
}

/// Decodes a v2 token's JSON, lets `edit` change it, and re-encodes it.
pub fn edit_v2(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let payload = base64::engine::general_purpose::STANDARD
        .decode(token.trim_start_matches("k8s-ack-v2."))
        .expect("b64");
    let mut v: Value = serde_json::from_slice(&payload).expect("json");
    edit(&mut v);
    format!(
        "k8s-ack-v2.{}",
        base64::engine::general_purpose::STANDARD.encode(v.to_string())
    )
}

/// Packs arbitrary bytes as a v2 or v1 token.
pub fn pack(prefix: &str, payload: &[u8]) -> String {
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::STANDARD.encode(payload)
    )
}

/// Waits until `f` returns true or the timeout passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// Starts the STS emulator and a server whose Kubernetes sources read the API server named by
/// `kubeconfig` (blocking: call it through `spawn_blocking` from async tests).
pub fn start_with_kubeconfig(dir: &Path, kubeconfig: &Path, extra: &[&str]) -> (Emulator, Server) {
    let emu = Emulator::start(dir, &[]);
    let kc = kubeconfig.to_str().expect("utf-8 path");
    let mut args = vec!["--kubeconfig", kc];
    args.extend_from_slice(extra);
    let server = Server::start(dir, &emu.url, &args);
    (emu, server)
}

// ---- Workload identities: OIDC (RRSA), ECS metadata and credentials URI stand-ins ----------
// The same provider, roles and stand-ins are in KEYS_YAML above and in examples/emulator-keys.yaml.

/// The OIDC provider both keys files define.
pub const OIDC_PROVIDER_ARN: &str = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-emulator";
/// Its issuer (`iss`).
pub const OIDC_ISSUER: &str = "https://oidc.emulator.invalid/ack-rrsa-emulator";
/// Its client ID (`aud`).
pub const OIDC_CLIENT_ID: &str = "sts.aliyuncs.com";
/// The `kid` of its key.
pub const OIDC_KEY_ID: &str = "emulator-test-key";
/// A role it may assume for service accounts of the namespace `apps` only (`oidcSubjects`).
pub const OIDC_ROLE_ARN: &str = "acs:ram::1234567890123456:role/KubeWorkload";
/// A subject KubeWorkload accepts.
pub const OIDC_SUBJECT: &str = "system:serviceaccount:apps:web";
/// The role of the ECS metadata stand-in, and its instance ID (the session name).
pub const ECS_ROLE_NAME: &str = "KubeEcsNode";
pub const ECS_INSTANCE_ID: &str = "i-emulator0000000001";
/// The role of the credentials URI (`<emulator url>/credentials-uri`), session `credentials-uri`.
pub const URI_ROLE_NAME: &str = "KubeUriWorkload";
pub const URI_SESSION: &str = "credentials-uri";

/// The test-only RSA key whose public half the provider lists.
pub fn oidc_key_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oidc-test-key.pem")
}

/// Another test-only RSA key the provider does not know (for wrong-signature tests).
pub fn oidc_other_key_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oidc-other-key.pem")
}

/// Signs `header` and `claims` (JSON objects) as an RS256 JWT with the PKCS#8 PEM key at `key`.
pub fn sign_jwt(key: &Path, header: &Value, claims: &Value) -> String {
    let pem = std::fs::read(key).expect("read the test key");
    ram_authenticator::emulator::oidc::sign_rs256(&pem, header, claims).expect("sign")
}

/// An OIDC token for the emulator's provider, signed with the test key: `iss`, `aud`, `sub`,
/// `exp` (Unix seconds) as given, `iat` now.
pub fn mint_oidc_jwt(iss: &str, aud: &str, sub: &str, exp: i64) -> String {
    sign_jwt(
        &oidc_key_path(),
        &json!({"alg": "RS256", "typ": "JWT", "kid": OIDC_KEY_ID}),
        &json!({"iss": iss, "aud": aud, "sub": sub, "exp": exp, "iat": chrono::Utc::now().timestamp()}),
    )
}

/// A valid token for KubeWorkload: the provider's issuer and audience, [`OIDC_SUBJECT`], one hour.
pub fn valid_oidc_jwt() -> String {
    mint_oidc_jwt(
        OIDC_ISSUER,
        OIDC_CLIENT_ID,
        OIDC_SUBJECT,
        chrono::Utc::now().timestamp() + 3600,
    )
}

impl Emulator {
    /// Base URL of the ECS metadata stand-in (for `--metadata-endpoint`).
    pub fn metadata_url(&self) -> String {
        self.url.clone()
    }

    /// The credentials URI (for `ALIBABA_CLOUD_CREDENTIALS_URI`).
    pub fn credentials_uri(&self) -> String {
        format!("{}/credentials-uri", self.url)
    }

    /// Sets the metadata stand-in's mode: `any`, `hardened`, `plain` or `hang`.
    pub fn metadata_mode(&self, mode: &str) {
        blocking_json(
            "POST",
            &format!("{}/_emulator/metadata", self.url),
            Some(json!({ "mode": mode })),
        );
    }

    /// Makes the credentials URI answer `code` (`Success` for credentials) with HTTP `status`.
    pub fn credentials_uri_code(&self, code: &str, status: u16) {
        blocking_json(
            "POST",
            &format!("{}/_emulator/credentials-uri", self.url),
            Some(json!({ "code": code, "status": status })),
        );
    }
}

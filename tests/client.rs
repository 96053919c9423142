//! Black-box tests of the client commands (`token`, `verify`, `kubeconfig`) against the real
//! `sts-emulator` binary on loopback.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ram-authenticator");
const EMULATOR: &str = env!("CARGO_BIN_EXE_sts-emulator");
const CLUSTER: &str = "c1234567890abcdef";
const ACCOUNT: &str = "1234567890123456";
const ALICE_ID: &str = "LTAI5tQuickstartAlice";
const ALICE_SECRET: &str = "QuickstartAliceSecret0000000000";
const BOB_ID: &str = "STS.QuickstartBob";
const BOB_SECRET: &str = "QuickstartBobSecret000000000000";
const BOB_TOKEN: &str = "CAIS+QuickstartBob/SecurityToken==";
const ADMIN_ROLE: &str = "acs:ram::1234567890123456:role/KubeAdmin";
const VIEWER_ROLE: &str = "acs:ram::1234567890123456:role/KubeViewer";

fn keys_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/emulator-keys.yaml")
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `sts-emulator`.
struct Emulator {
    _proc: Proc,
    url: String,
}

impl Emulator {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(EMULATOR)
            .args(["--listen", "127.0.0.1:0", "--keys"])
            .arg(keys_file())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sts-emulator");
        let stdout = child.stdout.take().expect("stdout");
        let proc = Proc(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut sent = false;
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if !sent {
                    if let Some(url) = line.trim().strip_prefix("listening on ") {
                        let _ = tx.send(url.to_string());
                        sent = true;
                    }
                }
                line.clear();
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("sts-emulator did not print its address");
        Self { _proc: proc, url }
    }

    fn stats(&self) -> Value {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let url = format!("{}/_emulator/stats", self.url);
        rt.block_on(async {
            let client = reqwest::Client::builder()
                .tls_danger_accept_invalid_certs(true)
                .no_proxy()
                .build()
                .expect("client");
            client
                .get(url)
                .send()
                .await
                .expect("stats")
                .json::<Value>()
                .await
                .expect("stats json")
        })
    }

    fn count(&self, action: &str) -> u64 {
        self.stats()["byAction"][action].as_u64().unwrap_or(0)
    }
}

/// A temporary HOME with no credentials in it, and a clean environment for the binary.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        path
    }

    fn cache_dir(&self) -> PathBuf {
        self.path().join(".kube/cache/ram-authenticator")
    }

    /// The binary with an empty environment but HOME (and USER) and `env`. The ECS metadata
    /// service is off (tests touch loopback only).
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("HOME", self.path())
            .env("USER", "tester")
            .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
            .args(args)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env)
            .output()
            .expect("run ram-authenticator")
    }

    /// Runs `token` and returns its ExecCredential.
    fn exec_credential(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let mut all = vec!["token", "--cluster-id", CLUSTER];
        all.extend_from_slice(args);
        let out = self.run(&all, env);
        assert!(out.status.success(), "token failed: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("ExecCredential JSON")
    }

    fn token(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        self.exec_credential(args, env)["status"]["token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// Runs `verify -o json` and returns (exit code, report).
    fn verify(&self, token: &str, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["verify", "--token", token, "-o", "json"];
        all.extend_from_slice(args);
        let out = self.run(&all, &[]);
        let stdout = text(&out.stdout);
        assert!(
            !stdout.contains(token),
            "verify printed the token: {stdout}"
        );
        let report = serde_json::from_str(&stdout).unwrap_or_else(|_| {
            panic!(
                "verify output is not JSON: {stdout} / {}",
                text(&out.stderr)
            )
        });
        (out.status.code().expect("exit code"), report)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn alice_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", ALICE_ID),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ALICE_SECRET),
    ]
}

fn decode_v2(token: &str) -> Value {
    let payload = token.strip_prefix("k8s-ack-v2.").expect("v2 prefix");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("token JSON")
}

fn assert_valid(home: &Home, emu: &Emulator, token: &str, arn: &str) -> Value {
    let (code, report) = home.verify(
        token,
        &["--cluster-id", CLUSTER, "--sts-endpoint", &emu.url],
    );
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["valid"], true, "{report:#}");
    assert_eq!(report["identity"]["arn"], arn, "{report:#}");
    report
}

#[test]
fn token_from_env_is_accepted_by_sts() {
    let emu = Emulator::start(&[]);
    let home = Home::new();
    let before = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    let ec = home.exec_credential(&[], &alice_env());
    assert_eq!(ec["kind"], "ExecCredential");
    assert_eq!(ec["apiVersion"], "client.authentication.k8s.io/v1beta1");
    assert_eq!(ec["spec"]["interactive"], false);
    let token = ec["status"]["token"].as_str().expect("token");
    let decoded = decode_v2(token);
    assert_eq!(
        decoded["headers"]["user-agent"],
        concat!("ram-authenticator/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(decoded["query"]["ACKClusterId"], CLUSTER);
    let signed = ram_authenticator::types::parse_utc(
        decoded["headers"]["x-acs-date"].as_str().expect("date"),
    )
    .expect("date");
    assert!(signed >= before - chrono::TimeDelta::seconds(1));
    let exp = ec["status"]["expirationTimestamp"].as_str().expect("exp");
    assert_eq!(
        exp,
        ram_authenticator::types::format_utc(signed + chrono::TimeDelta::minutes(10))
    );
    let report = assert_valid(&home, &emu, token, "acs:ram::1234567890123456:user/alice");
    assert_eq!(report["format"], "v2");
    assert_eq!(report["accessKeyId"], ALICE_ID);
    assert_eq!(report["identity"]["identityType"], "RAMUser");
    assert_eq!(report["user"], Value::Null);

    // kubectl's KUBERNETES_EXEC_INFO picks the apiVersion; --api-version wins over it.
    let mut env = alice_env();
    env.push((
        "KUBERNETES_EXEC_INFO",
        r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#,
    ));
    let ec = home.exec_credential(&[], &env);
    assert_eq!(ec["apiVersion"], "client.authentication.k8s.io/v1");
    let ec = home.exec_credential(&["--api-version", "v1beta1"], &env);
    assert_eq!(ec["apiVersion"], "client.authentication.k8s.io/v1beta1");

    // --token-only prints the bare token; a legacy v1 token verifies too.
    let out = home.run(
        &[
            "token",
            "-i",
            CLUSTER,
            "--token-only",
            "--format",
            "v1",
            "--sts-endpoint",
            &emu.url,
        ],
        &alice_env(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v1 = text(&out.stdout).trim().to_string();
    assert!(v1.starts_with("k8s-ack-v1."), "{v1}");
    let report = assert_valid(&home, &emu, &v1, "acs:ram::1234567890123456:user/alice");
    assert_eq!(report["format"], "v1");

    // The ExecCredential itself can be piped into verify.
    let token_out = home.run(&["token", "-i", CLUSTER], &alice_env());
    let mut child = home
        .command(
            &[
                "verify",
                "--token",
                "-",
                "-i",
                CLUSTER,
                "--sts-endpoint",
                &emu.url,
            ],
            &[],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn verify");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&token_out.stdout)
        .expect("write");
    let out = child.wait_with_output().expect("verify");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("acs:ram::1234567890123456:user/alice"),
        "{shown}"
    );
    assert!(shown.contains("result:         valid"), "{shown}");
}

#[test]
fn vector_tokens_verify_with_a_pinned_clock() {
    let emu = Emulator::start(&["--now", "2026-11-23T09:36:00Z"]);
    let home = Home::new();
    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/acs3-v2-tokens.json"),
        )
        .expect("vectors"),
    )
    .expect("json");
    let expected = [
        ("acs:ram::1234567890123456:user/test-user", "RAMUser", false),
        (
            "acs:ram::1234567890123456:assumed-role/KubeViewer/test-session",
            "AssumedRoleUser",
            true,
        ),
    ];
    let list = vectors["vectors"].as_array().expect("vectors");
    assert_eq!(list.len(), expected.len());
    for (v, (arn, kind, temporary)) in list.iter().zip(expected) {
        let token = v["token"].as_str().expect("token");
        let (code, report) = home.verify(
            token,
            &[
                "--now",
                "2026-11-23T09:36:00Z",
                "--cluster-id",
                CLUSTER,
                "--sts-endpoint",
                &emu.url,
            ],
        );
        assert_eq!(code, 0, "{report:#}");
        assert_eq!(report["identity"]["arn"], arn);
        assert_eq!(report["identity"]["identityType"], kind);
        assert_eq!(report["temporaryCredentials"], temporary);
        assert_eq!(report["signedAt"], v["inputs"]["x_acs_date"]);

        // The text form names the identity too.
        let out = home.run(
            &[
                "verify",
                "--token",
                token,
                "--now",
                "2026-11-23T09:36:00Z",
                "-i",
                CLUSTER,
                "--sts-endpoint",
                &emu.url,
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stdout).contains(arn));
    }
    // Without the pinned clock the same tokens are long expired.
    let token = list[0]["token"].as_str().expect("token");
    let (code, report) = home.verify(token, &["-i", CLUSTER, "--sts-endpoint", &emu.url]);
    assert_eq!(code, 1);
    assert_eq!(report["error"]["reason"], "expired");
}

#[test]
fn every_credential_source_yields_an_accepted_token() {
    let emu = Emulator::start(&[]);
    let alice = "acs:ram::1234567890123456:user/alice";
    let bob = "acs:ram::1234567890123456:assumed-role/KubeAdmin/bob@example.com";

    // Environment, older aliases, with and without a security token.
    let home = Home::new();
    let t = home.token(
        &[],
        &[
            ("ALICLOUD_ACCESS_KEY", ALICE_ID),
            ("ALICLOUD_SECRET_KEY", ALICE_SECRET),
        ],
    );
    assert_valid(&home, &emu, &t, alice);
    let t = home.token(
        &[],
        &[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", BOB_ID),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", BOB_SECRET),
            ("ALIBABA_CLOUD_SECURITY_TOKEN", BOB_TOKEN),
        ],
    );
    assert_valid(&home, &emu, &t, bob);
    let t = home.token(
        &[],
        &[
            ("ALICLOUD_ACCESS_KEY", BOB_ID),
            ("ALICLOUD_SECRET_KEY", BOB_SECRET),
            ("ALICLOUD_ACCESS_KEY_STS_TOKEN", BOB_TOKEN),
        ],
    );
    assert_valid(&home, &emu, &t, bob);

    // The aliyun CLI's config.json: current profile, --profile, ALIBABA_CLOUD_PROFILE.
    let home = Home::new();
    home.write(
        ".aliyun/config.json",
        &format!(
            r#"{{"current":"ak","profiles":[
              {{"name":"ak","mode":"AK","access_key_id":"{ALICE_ID}","access_key_secret":"{ALICE_SECRET}","region_id":"cn-hangzhou"}},
              {{"name":"sts","mode":"StsToken","access_key_id":"{BOB_ID}","access_key_secret":"{BOB_SECRET}","sts_token":"{BOB_TOKEN}"}}]}}"#
        ),
    );
    let t = home.token(&[], &[]);
    assert_valid(&home, &emu, &t, alice);
    let t = home.token(&["--profile", "sts"], &[]);
    assert_valid(&home, &emu, &t, bob);
    let t = home.token(&[], &[("ALIBABA_CLOUD_PROFILE", "sts")]);
    assert_valid(&home, &emu, &t, bob);

    // The credentials INI file, at its default path and moved by ALIBABA_CLOUD_CREDENTIALS_FILE.
    let home = Home::new();
    home.write(
        ".alibabacloud/credentials",
        &format!(
            "[default]\ntype = access_key\naccess_key_id = {ALICE_ID}\naccess_key_secret = {ALICE_SECRET}\n\n\
             [bob]\ntype = sts\naccess_key_id = {BOB_ID}\naccess_key_secret = {BOB_SECRET}\nsecurity_token = {BOB_TOKEN}\n"
        ),
    );
    let t = home.token(&[], &[]);
    assert_valid(&home, &emu, &t, alice);
    let t = home.token(&["--profile", "bob"], &[]);
    assert_valid(&home, &emu, &t, bob);
    let moved = home.path().join("elsewhere.ini");
    std::fs::rename(home.path().join(".alibabacloud/credentials"), &moved).expect("move");
    let t = home.token(
        &[],
        &[(
            "ALIBABA_CLOUD_CREDENTIALS_FILE",
            moved.to_str().expect("utf8"),
        )],
    );
    assert_valid(&home, &emu, &t, alice);

    // The aliyun CLI config moved by ALIBABA_CLOUD_CONFIG_FILE.
    let cfg = home.write(
        "cli.json",
        &format!(
            r#"{{"current":"default","profiles":[{{"name":"default","mode":"StsToken","access_key_id":"{BOB_ID}","access_key_secret":"{BOB_SECRET}","sts_token":"{BOB_TOKEN}"}}]}}"#
        ),
    );
    let t = home.token(
        &[],
        &[("ALIBABA_CLOUD_CONFIG_FILE", cfg.to_str().expect("utf8"))],
    );
    assert_valid(&home, &emu, &t, bob);

    // The legacy ~/.acs/credentials.
    let home = Home::new();
    home.write(
        ".acs/credentials",
        &format!(r#"{{"AcsAccessKeyId":"{BOB_ID}","AcsAccessKeySecret":"{BOB_SECRET}","AcsAccessSecurityToken":"{BOB_TOKEN}"}}"#),
    );
    let t = home.token(&[], &[]);
    assert_valid(&home, &emu, &t, bob);
}

#[test]
fn credential_errors_are_clear() {
    let home = Home::new();
    let fail = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["token", "-i", CLUSTER];
        all.extend_from_slice(args);
        let out = home.run(&all, env);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        text(&out.stderr)
    };
    let e = fail(&[], &[]);
    assert!(e.contains("no Alibaba Cloud credentials found"), "{e}");
    for place in [
        ".aliyun/config.json",
        ".alibabacloud/credentials",
        ".acs/credentials",
    ] {
        assert!(e.contains(place), "{e}");
    }
    let e = fail(&[], &[("ALIBABA_CLOUD_ACCESS_KEY_ID", ALICE_ID)]);
    assert!(
        e.contains("ALIBABA_CLOUD_ACCESS_KEY_ID is set but ALIBABA_CLOUD_ACCESS_KEY_SECRET is not"),
        "{e}"
    );
    home.write(
        ".aliyun/config.json",
        r#"{"current":"sso","profiles":[{"name":"sso","mode":"CloudSSO"}]}"#,
    );
    let e = fail(&[], &[]);
    assert!(
        e.contains("mode CloudSSO") && e.contains("not supported"),
        "{e}"
    );
    let e = fail(&["--profile", "missing"], &[]);
    assert!(e.contains("profile \"missing\" was not found"), "{e}");
    home.write(".aliyun/config.json", "{ this is not json");
    let e = fail(&[], &[]);
    assert!(e.contains("malformed"), "{e}");
}

#[test]
fn assumed_roles_are_cached_on_disk() {
    let emu = Emulator::start(&[]);
    let home = Home::new();
    let session = "acs:ram::1234567890123456:assumed-role/KubeAdmin/ram-authenticator-tester";

    // --role-arn: one AssumeRole, then served from the cache.
    let args = ["--role-arn", ADMIN_ROLE, "--sts-endpoint", &emu.url];
    let t1 = home.token(&args, &alice_env());
    assert_eq!(emu.count("AssumeRole"), 1);
    let r = assert_valid(&home, &emu, &t1, session);
    assert_eq!(r["temporaryCredentials"], true);
    let t2 = home.token(&args, &alice_env());
    assert_eq!(
        emu.count("AssumeRole"),
        1,
        "second run should use the cache"
    );
    assert_eq!(
        decode_v2(&t1)["headers"]["Authorization"]
            .as_str()
            .map(|a| a.split(',').next().map(str::to_string)),
        decode_v2(&t2)["headers"]["Authorization"]
            .as_str()
            .map(|a| a.split(',').next().map(str::to_string)),
        "both tokens use the same temporary AccessKey"
    );
    assert_valid(&home, &emu, &t2, session);

    // The cache is private.
    let dir = home.cache_dir();
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(mode(&files[0]), 0o600);

    // ALIBABA_CLOUD_ROLE_ARN and a session name: another cache entry.
    let mut env = alice_env();
    env.push(("ALIBABA_CLOUD_ROLE_ARN", VIEWER_ROLE));
    let t = home.token(
        &["--session-name", "viewer-1", "--sts-endpoint", &emu.url],
        &env,
    );
    assert_eq!(emu.count("AssumeRole"), 2);
    assert_valid(
        &home,
        &emu,
        &t,
        "acs:ram::1234567890123456:assumed-role/KubeViewer/viewer-1",
    );

    // A RamRoleArn profile of the aliyun CLI.
    home.write(
        ".aliyun/config.json",
        &format!(
            r#"{{"current":"admin","profiles":[{{"name":"admin","mode":"RamRoleArn","access_key_id":"{ALICE_ID}","access_key_secret":"{ALICE_SECRET}","ram_role_arn":"{ADMIN_ROLE}","ram_session_name":"from-profile"}}]}}"#
        ),
    );
    let profile_session = "acs:ram::1234567890123456:assumed-role/KubeAdmin/from-profile";
    let t = home.token(&["--sts-endpoint", &emu.url], &[]);
    assert_eq!(emu.count("AssumeRole"), 3);
    assert_valid(&home, &emu, &t, profile_session);
    let t = home.token(&["--sts-endpoint", &emu.url], &[]);
    assert_eq!(
        emu.count("AssumeRole"),
        3,
        "second profile run should use the cache"
    );
    assert_valid(&home, &emu, &t, profile_session);

    // --no-cache always asks STS.
    let t = home.token(&["--sts-endpoint", &emu.url, "--no-cache"], &[]);
    assert_eq!(emu.count("AssumeRole"), 4);
    assert_valid(&home, &emu, &t, profile_session);

    // A corrupt cache entry is ignored and rewritten, never fatal.
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        std::fs::write(f, "{ corrupt").expect("corrupt");
    }
    let t = home.token(&["--sts-endpoint", &emu.url], &[]);
    assert_eq!(emu.count("AssumeRole"), 5);
    assert_valid(&home, &emu, &t, profile_session);
    let rewritten = files
        .iter()
        .filter(|f| serde_json::from_slice::<Value>(&std::fs::read(f).expect("read")).is_ok())
        .count();
    assert_eq!(rewritten, 1, "the entry used was rewritten");
    home.token(&["--sts-endpoint", &emu.url], &[]);
    assert_eq!(emu.count("AssumeRole"), 5, "the rewritten entry is used");

    // The cache directory can be moved (and an unwritable one is not fatal).
    let moved = home.path().join("moved-cache");
    let mut env = alice_env();
    let moved_s = moved.to_str().expect("utf8").to_string();
    env.push(("RAM_AUTHENTICATOR_CACHE_DIR", &moved_s));
    home.token(
        &["--role-arn", ADMIN_ROLE, "--sts-endpoint", &emu.url],
        &env,
    );
    assert_eq!(std::fs::read_dir(&moved).expect("moved cache").count(), 1);
    let blocked = home.write("a-file", "x");
    let mut env = alice_env();
    let blocked_s = blocked.join("sub").to_str().expect("utf8").to_string();
    env.push(("RAM_AUTHENTICATOR_CACHE_DIR", &blocked_s));
    let t = home.token(
        &["--role-arn", ADMIN_ROLE, "--sts-endpoint", &emu.url],
        &env,
    );
    assert_valid(&home, &emu, &t, session);
}

/// A cache entry another user (or a careless mode) could have planted must never choose whom
/// `token` signs in as, and a FIFO in its place must not hang it.
#[test]
fn untrusted_cache_entries_are_ignored_and_replaced() {
    use std::os::unix::fs::MetadataExt as _;
    let emu = Emulator::start(&[]);
    let home = Home::new();
    let args = ["--role-arn", ADMIN_ROLE, "--sts-endpoint", &emu.url];
    let own = "acs:ram::1234567890123456:assumed-role/KubeAdmin/ram-authenticator-tester";
    let bob = "acs:ram::1234567890123456:assumed-role/KubeAdmin/bob@example.com";
    let dir = home.cache_dir();
    let entry = dir.join(format!(
        "{}.json",
        ram_authenticator::client::cache::key(&ram_authenticator::client::cache::KeyParts {
            base_access_key_id: ALICE_ID,
            profile: None,
            role_arn: ADMIN_ROLE,
            session_name: "ram-authenticator-tester",
            endpoint: &emu.url,
        })
    ));
    let planted = serde_json::json!({
        "version": 1, "roleArn": ADMIN_ROLE, "assumedRoleArn": bob,
        "accessKeyId": BOB_ID, "accessKeySecret": BOB_SECRET, "securityToken": BOB_TOKEN,
        "expiration": ram_authenticator::types::format_utc(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
    })
    .to_string();
    let plant = |mode: u32| {
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let _ = std::fs::remove_file(&entry);
        std::fs::write(&entry, &planted).expect("plant");
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    // Runs `token` (within 5 s) and returns whom it signed in as, and its stderr.
    let sign_in = || {
        let mut child = home
            .command(&["token", "-i", CLUSTER, "--token-only"], &alice_env())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let started = std::time::Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                panic!("token hung");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let token = text(&out.stdout).trim().to_string();
        let (code, report) = home.verify(
            &token,
            &["--cluster-id", CLUSTER, "--sts-endpoint", &emu.url],
        );
        assert_eq!(code, 0, "{report:#}");
        (
            report["identity"]["arn"].as_str().expect("arn").to_string(),
            text(&out.stderr),
        )
    };

    // A private entry of ours is used as it is (so the planted credentials would work).
    plant(0o600);
    assert_eq!(sign_in().0, bob);

    // Readable by others, or owned by another user: ignored with a warning, and replaced.
    for (what, mode, owner) in [
        ("mode 0666", 0o666, None),
        ("another owner", 0o600, Some(4242)),
    ] {
        plant(mode);
        if let Some(uid) = owner {
            std::os::unix::fs::chown(&entry, Some(uid), Some(uid)).expect("chown");
        }
        let (arn, stderr) = sign_in();
        assert_eq!(arn, own, "{what}");
        assert!(
            stderr.contains("ignoring the cached credentials"),
            "{what}: {stderr}"
        );
        let meta = std::fs::metadata(&entry).expect("replaced");
        assert_eq!(
            meta.uid(),
            ram_authenticator::client::cache::current_uid(),
            "{what}"
        );
        assert_eq!(meta.mode() & 0o777, 0o600, "{what}");
        assert_ne!(std::fs::read_to_string(&entry).expect("read"), planted);
    }

    // A private entry in a directory anyone can write to.
    plant(0o600);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (arn, stderr) = sign_in();
    assert_eq!(arn, own);
    assert!(stderr.contains("others can write to it"), "{stderr}");
    assert_eq!(std::fs::metadata(&dir).expect("dir").mode() & 0o777, 0o700);

    // A symlink to a private file elsewhere, and a FIFO: never followed, never blocking.
    let elsewhere = home.write("elsewhere.json", &planted);
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::remove_file(&entry).expect("rm");
    std::os::unix::fs::symlink(&elsewhere, &entry).expect("symlink");
    let (arn, stderr) = sign_in();
    assert_eq!(arn, own);
    assert!(stderr.contains("symlink"), "{stderr}");
    std::fs::remove_file(&entry).expect("rm");
    let status = Command::new("mkfifo")
        .arg("-m")
        .arg("600")
        .arg(&entry)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let (arn, stderr) = sign_in();
    assert_eq!(arn, own);
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(
        std::fs::metadata(&entry).expect("meta").is_file(),
        "the FIFO is replaced"
    );
}

#[test]
fn role_errors_show_the_sts_code() {
    let emu = Emulator::start(&[]);
    let home = Home::new();
    let run = |role: &str| {
        let out = home.run(
            &[
                "token",
                "-i",
                CLUSTER,
                "--role-arn",
                role,
                "--sts-endpoint",
                &emu.url,
            ],
            &alice_env(),
        );
        assert_eq!(out.status.code(), Some(1));
        text(&out.stderr)
    };
    let e = run("acs:ram::1234567890123456:role/DoesNotExist");
    assert!(e.contains("EntityNotExist.Role"), "{e}");
    let e = run("acs:ram::1234567890123456:role/CrossAccountAuditor");
    assert!(e.contains("NoPermission"), "{e}");
    let out = home.run(
        &[
            "token",
            "-i",
            CLUSTER,
            "--role-arn",
            ADMIN_ROLE,
            "--sts-endpoint",
            &emu.url,
        ],
        &[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", ALICE_ID),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "wrong-secret"),
        ],
    );
    let e = text(&out.stderr);
    assert!(
        e.contains("SignatureDoesNotMatch") && !e.contains("wrong-secret"),
        "{e}"
    );
    // Nothing failed was cached.
    assert!(
        !home.cache_dir().exists()
            || std::fs::read_dir(home.cache_dir()).expect("dir").count() == 0
    );
}

#[test]
fn sts_over_https_with_an_extra_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let cert_path = dir.path().join("sts.pem");
    let key_path = dir.path().join("sts-key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("key");
    let emu = Emulator::start(&[
        "--tls-cert",
        cert_path.to_str().expect("utf8"),
        "--tls-key",
        key_path.to_str().expect("utf8"),
    ]);
    assert!(emu.url.starts_with("https://"), "{}", emu.url);
    let home = Home::new();
    let ca = cert_path.to_str().expect("utf8");
    // Without the CA, AssumeRole cannot reach STS; with it, it works.
    let out = home.run(
        &[
            "token",
            "-i",
            CLUSTER,
            "--role-arn",
            ADMIN_ROLE,
            "--sts-endpoint",
            &emu.url,
        ],
        &alice_env(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("AssumeRole of"),
        "{}",
        text(&out.stderr)
    );
    let t = home.token(
        &[
            "--role-arn",
            ADMIN_ROLE,
            "--sts-endpoint",
            &emu.url,
            "--sts-ca-file",
            ca,
        ],
        &alice_env(),
    );
    let (code, report) = home.verify(
        &t,
        &[
            "-i",
            CLUSTER,
            "--sts-endpoint",
            &emu.url,
            "--sts-ca-file",
            ca,
        ],
    );
    assert_eq!(code, 0, "{report:#}");
    let (code, report) = home.verify(&t, &["-i", CLUSTER, "--sts-endpoint", &emu.url]);
    assert_eq!(code, 1);
    assert_eq!(report["error"]["reason"], "unavailable", "{report:#}");
}

#[test]
fn verify_rejections_and_exit_codes() {
    let emu = Emulator::start(&[]);
    let home = Home::new();
    let token = home.token(&[], &alice_env());
    let sts = ["--sts-endpoint", emu.url.as_str()];

    // Expired, judged with --now.
    let later =
        ram_authenticator::types::format_utc(chrono::Utc::now() + chrono::TimeDelta::minutes(20));
    let (code, r) = home.verify(&token, &["-i", CLUSTER, "--now", &later, sts[0], sts[1]]);
    assert_eq!(code, 1);
    assert_eq!(r["valid"], false);
    assert_eq!(r["error"]["stage"], "local");
    assert_eq!(r["error"]["reason"], "expired");
    assert_eq!(r["identity"], Value::Null);

    // Minted for another cluster.
    let (code, r) = home.verify(&token, &["-i", "another-cluster", sts[0], sts[1]]);
    assert_eq!(code, 1);
    assert_eq!(r["error"]["reason"], "cluster_mismatch");

    // Signed with a wrong secret: STS refuses it.
    let bad = home.token(
        &[],
        &[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", ALICE_ID),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "not-alices-secret"),
        ],
    );
    let (code, r) = home.verify(&bad, &["-i", CLUSTER, sts[0], sts[1]]);
    assert_eq!(code, 1);
    assert_eq!(r["error"]["stage"], "sts");
    assert_eq!(r["error"]["reason"], "SignatureDoesNotMatch");
    assert_eq!(r["accessKeyId"], ALICE_ID);
    let out = home.run(
        &["verify", "--token", &bad, "-i", CLUSTER, sts[0], sts[1]],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("rejected at the sts stage (SignatureDoesNotMatch)"));

    // Garbage.
    let (code, r) = home.verify("k8s-ack-v2.!!!", &["-i", CLUSTER, sts[0], sts[1]]);
    assert_eq!(code, 1);
    assert_eq!(r["error"]["reason"], "bad_base64");

    // With --config: mapped, and not mapped.
    let config = home.write(
        "config.yaml",
        &format!(
            "clusterID: {CLUSTER}\nserver:\n  mapUsers:\n    - userARN: acs:ram::{ACCOUNT}:user/alice\n      username: alice\n      groups: [developers, viewers]\n"
        ),
    );
    let config = config.to_str().expect("utf8");
    let (code, r) = home.verify(&token, &["--config", config, sts[0], sts[1]]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["user"]["username"], "alice");
    assert_eq!(
        r["user"]["groups"],
        serde_json::json!(["developers", "viewers"])
    );
    assert_eq!(
        r["user"]["uid"],
        format!("ack-ram-authenticator:{ACCOUNT}:2001")
    );
    assert_eq!(
        r["user"]["extra"]["arn"][0],
        "acs:ram::1234567890123456:user/alice"
    );
    let out = home.run(
        &[
            "verify", "--token", &token, "--config", config, sts[0], sts[1],
        ],
        &[],
    );
    let shown = text(&out.stdout);
    assert!(
        shown.contains("username:       alice") && shown.contains("developers, viewers"),
        "{shown}"
    );

    let bob = home.token(
        &[],
        &[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", BOB_ID),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", BOB_SECRET),
            ("ALIBABA_CLOUD_SECURITY_TOKEN", BOB_TOKEN),
        ],
    );
    let (code, r) = home.verify(&bob, &["--config", config, sts[0], sts[1]]);
    assert_eq!(code, 1);
    assert_eq!(r["error"]["stage"], "mapping");
    assert_eq!(r["error"]["reason"], "not_mapped");
    assert_eq!(r["identity"]["identityType"], "AssumedRoleUser");
    assert!(!serde_json::to_string(&r).expect("json").contains(BOB_TOKEN));

    // Usage errors exit 2.
    let usage = |args: &[&str]| {
        let out = home.run(args, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stderr)
    };
    let e = usage(&["verify", "-i", CLUSTER]);
    assert!(e.contains("--token"), "{e}");
    let e = usage(&[
        "verify",
        "--token",
        &token,
        "--token-file",
        "/x",
        "-i",
        CLUSTER,
    ]);
    assert!(e.contains("not both"), "{e}");
    let e = usage(&["verify", "--token", &token]);
    assert!(e.contains("cluster ID"), "{e}");
    usage(&[
        "verify",
        "--token",
        &token,
        "-i",
        CLUSTER,
        "--now",
        "yesterday",
    ]);
    // A file that cannot be read is a failure (exit 1), not a usage error; each cause once.
    let failure = |args: &[&str]| {
        let out = home.run(args, &[]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let e = text(&out.stderr);
        assert_eq!(e.matches("os error 2").count(), 1, "{e}");
        e
    };
    let e = failure(&["verify", "--token-file", "/does/not/exist", "-i", CLUSTER]);
    assert!(e.contains("cannot read the token file"), "{e}");
    let e = failure(&[
        "verify",
        "--token",
        &token,
        "--config",
        "/does/not/exist.yaml",
    ]);
    assert!(e.contains("/does/not/exist.yaml"), "{e}");

    // --token-file works.
    let f = home.write("token.txt", &format!("{token}\n"));
    let out = home.run(
        &[
            "verify",
            "--token-file",
            f.to_str().expect("utf8"),
            "-i",
            CLUSTER,
            sts[0],
            sts[1],
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn kubeconfig_runs_this_binary() {
    let home = Home::new();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let ca = home.write("ca.pem", &cert.cert.pem());
    let out = home.run(
        &[
            "kubeconfig",
            "--cluster-id",
            CLUSTER,
            "--server",
            "https://127.0.0.1:6443",
            "--ca-file",
            ca.to_str().expect("utf8"),
            "--role-arn",
            ADMIN_ROLE,
            "--name",
            "prod",
            "--absolute-path",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).expect("YAML");
    assert_eq!(doc["kind"], "Config");
    assert_eq!(doc["current-context"], "prod");
    let cluster = &doc["clusters"][0];
    assert_eq!(cluster["name"], "prod");
    assert_eq!(cluster["cluster"]["server"], "https://127.0.0.1:6443");
    let ca_data = base64::engine::general_purpose::STANDARD
        .decode(
            cluster["cluster"]["certificate-authority-data"]
                .as_str()
                .expect("ca data"),
        )
        .expect("base64");
    assert_eq!(text(&ca_data).trim(), cert.cert.pem().trim());
    let exec = &doc["users"][0]["user"]["exec"];
    assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1beta1");
    let command = exec["command"].as_str().expect("command");
    assert!(Path::new(command).is_absolute(), "{command}");
    assert_eq!(
        std::fs::canonicalize(command).expect("command exists"),
        std::fs::canonicalize(BIN).expect("bin")
    );
    let args: Vec<&str> = exec["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg"))
        .collect();
    assert_eq!(
        args,
        ["token", "--cluster-id", CLUSTER, "--role-arn", ADMIN_ROLE]
    );
    assert_eq!(exec["interactiveMode"], "Never");
    assert_eq!(exec["provideClusterInfo"], false);
    assert_eq!(doc["contexts"][0]["context"]["user"], "prod");

    // Bad CA files are refused with a clear message.
    let bad = home.write("bad.pem", "not a certificate");
    for (path, want) in [
        (bad.to_str().expect("utf8"), "holds no certificate"),
        ("/does/not/exist.pem", "cannot read the CA file"),
    ] {
        let out = home.run(
            &[
                "kubeconfig",
                "-i",
                CLUSTER,
                "--server",
                "https://127.0.0.1:6443",
                "--ca-file",
                path,
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        assert!(text(&out.stderr).contains(want), "{}", text(&out.stderr));
    }
}

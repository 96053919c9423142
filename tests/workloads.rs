//! Workload credentials end to end: the real `token` command gets credentials from each source
//! of the chain (OIDC/RRSA from the environment and a CLI profile, the ECS metadata service in
//! hardened and plain mode, a credentials URI, `ChainableRamRoleArn`, `External`) from the real
//! `sts-emulator`, and the real webhook authenticates the token and maps the role's identity.
//! Misconfigurations fail fast with one clear line; the token-file refresher rotates, rides out
//! an STS outage and stops cleanly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Emulator, Server, CLUSTER};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ram-authenticator");

/// The webhook's mappings: one username shape per role, so the test sees which role signed.
const CONFIG: &str = r#"
clusterID: c1234567890abcdef
server:
  mapUsers:
    - userARN: acs:ram::1234567890123456:user/alice
      username: alice
  mapRoles:
    - roleARN: acs:ram::1234567890123456:role/KubeWorkload
      username: "workload:{{SessionName}}"
    - roleARN: acs:ram::1234567890123456:role/KubeEcsNode
      username: "ecs:{{SessionName}}"
    - roleARN: acs:ram::1234567890123456:role/KubeUriWorkload
      username: "uri:{{SessionName}}"
    - roleARN: acs:ram::1234567890123456:role/KubeAdmin
      username: "admin:{{SessionName}}"
"#;

/// Emulator, webhook, and a HOME for the client.
struct Stack {
    dir: tempfile::TempDir,
    emu: Emulator,
    server: Server,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Stack {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let emu = Emulator::start(dir.path(), &[]);
        let server = Server::start_with_config(dir.path(), &emu.url, CONFIG, &[]);
        let client = server.client();
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            dir,
            emu,
            server,
            client,
            rt,
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.home().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        path
    }

    /// `ram-authenticator ARGS` with a clean environment: HOME, USER, PATH, the ECS metadata
    /// service off (a test turns it on by setting the variable empty), and `env`.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("HOME", self.home())
            .env("USER", "tester")
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
            .args(args)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// `token --token-only` against the emulator; returns the output and how long it took.
    fn run_token(&self, args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
        let mut all = vec![
            "token",
            "--cluster-id",
            CLUSTER,
            "--token-only",
            "--sts-endpoint",
            &self.emu.url,
        ];
        all.extend_from_slice(args);
        let started = Instant::now();
        let out = self.command(&all, env).output().expect("run token");
        (out, started.elapsed())
    }

    fn token(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let (out, _) = self.run_token(args, env);
        assert!(
            out.status.success(),
            "token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    }

    /// Whom the webhook says the token belongs to (None when it is refused).
    fn username(&self, token: &str) -> Option<String> {
        let review = self.rt.block_on(self.server.review(
            &self.client,
            "authentication.k8s.io/v1",
            token,
        ));
        if review["status"]["authenticated"] != true {
            return None;
        }
        review["status"]["user"]["username"]
            .as_str()
            .map(str::to_string)
    }

    /// Runs `token` expecting a failure: exit 1 within 5 s and exactly one line on stderr.
    fn fails(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let (out, took) = self.run_token(args, env);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(out.stdout.is_empty());
        assert!(took < Duration::from_secs(5), "took {took:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one clear line: {stderr}");
        lines[0].to_string()
    }

    fn count(&self, action: &str) -> u64 {
        self.emu.stats()["byAction"][action].as_u64().unwrap_or(0)
    }

    fn metadata_count(&self, kind: &str) -> u64 {
        self.emu.stats()["byMetadata"][kind].as_u64().unwrap_or(0)
    }
}

fn oidc_env(token_file: &Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
            common::OIDC_PROVIDER_ARN.to_string(),
        ),
        (
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("ALIBABA_CLOUD_ROLE_ARN", common::OIDC_ROLE_ARN.to_string()),
    ]
}

fn borrow<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn oidc_from_the_environment_and_a_profile() {
    let stack = Stack::start();
    let jwt = stack.write("oidc-token", &common::valid_oidc_jwt());
    let env = oidc_env(&jwt);
    let mut named = borrow(&env);
    named.push(("ALIBABA_CLOUD_ROLE_SESSION_NAME", "web-1"));

    let t = stack.token(&[], &named);
    assert_eq!(stack.username(&t).as_deref(), Some("workload:web-1"));
    assert_eq!(stack.count("AssumeRoleWithOIDC"), 1);
    // The credentials are cached (the token file is not needed while they are fresh).
    let t = stack.token(&[], &named);
    assert_eq!(stack.username(&t).as_deref(), Some("workload:web-1"));
    assert_eq!(
        stack.count("AssumeRoleWithOIDC"),
        1,
        "served from the cache"
    );
    // ALIBABA_CLOUD_ROLE_ARN is the OIDC role, not a second AssumeRole; the default session.
    let t = stack.token(&[], &borrow(&env));
    assert_eq!(
        stack.username(&t).as_deref(),
        Some("workload:ram-authenticator-tester")
    );
    assert_eq!(stack.count("AssumeRoleWithOIDC"), 2);
    assert_eq!(stack.count("AssumeRole"), 0);

    // The token file is read on every call: an expired token in it fails at once.
    let expired = common::mint_oidc_jwt(
        common::OIDC_ISSUER,
        common::OIDC_CLIENT_ID,
        common::OIDC_SUBJECT,
        chrono::Utc::now().timestamp() - 60,
    );
    std::fs::write(&jwt, &expired).expect("rotate");
    let e = stack.fails(&["--no-cache"], &named);
    assert!(
        e.contains("AssumeRoleWithOIDC") && e.contains("Expired"),
        "{e}"
    );
    assert!(!e.contains(&expired), "the JWT is never shown: {e}");
    std::fs::write(&jwt, common::valid_oidc_jwt()).expect("rotate back");

    // The aliyun CLI's OIDC mode.
    stack.write(
        ".aliyun/config.json",
        &format!(
            r#"{{"current":"rrsa","profiles":[{{"name":"rrsa","mode":"OIDC","oidc_provider_arn":"{}","oidc_token_file":"{}","ram_role_arn":"{}","ram_session_name":"from-profile"}}]}}"#,
            common::OIDC_PROVIDER_ARN,
            jwt.display(),
            common::OIDC_ROLE_ARN
        ),
    );
    let before = stack.count("AssumeRoleWithOIDC");
    let t = stack.token(&[], &[]);
    assert_eq!(stack.username(&t).as_deref(), Some("workload:from-profile"));
    assert_eq!(stack.count("AssumeRoleWithOIDC"), before + 1);
}

#[test]
fn ecs_instance_role_in_hardened_and_plain_mode() {
    let stack = Stack::start();
    let endpoint = stack.emu.metadata_url();
    let on = [("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "")];
    let ecs_user = format!("ecs:{}", common::ECS_INSTANCE_ID);

    // Hardened mode enforced: the token is asked for first, the role discovered.
    stack.emu.metadata_mode("hardened");
    let t = stack.token(&["--metadata-endpoint", &endpoint], &on);
    assert_eq!(stack.username(&t).as_deref(), Some(ecs_user.as_str()));
    assert_eq!(stack.metadata_count("token"), 1);
    assert!(
        stack.metadata_count("hardened") >= 2,
        "{}",
        stack.emu.stats()
    );
    assert_eq!(stack.metadata_count("plain"), 0);
    // Cached: no second visit.
    stack.token(&["--metadata-endpoint", &endpoint], &on);
    assert_eq!(stack.metadata_count("token"), 1);

    // An older service without tokens: plain mode, the endpoint from the environment.
    stack.emu.metadata_mode("plain");
    let mut env = on.to_vec();
    env.push(("RAM_AUTHENTICATOR_METADATA_ENDPOINT", &endpoint));
    let t = stack.token(&["--no-cache"], &env);
    assert_eq!(stack.username(&t).as_deref(), Some(ecs_user.as_str()));
    assert!(stack.metadata_count("plain") >= 2, "{}", stack.emu.stats());
    // ... unless plain mode is forbidden.
    env.push(("ALIBABA_CLOUD_IMDSV1_DISABLED", "true"));
    let e = stack.fails(&["--no-cache"], &env);
    assert!(
        e.contains("hardened mode failed") && e.contains("ALIBABA_CLOUD_IMDSV1_DISABLED"),
        "{e}"
    );

    // The CLI's EcsRamRole mode, with the role named.
    stack.emu.metadata_mode("any");
    stack.write(
        ".aliyun/config.json",
        &format!(
            r#"{{"current":"ecs","profiles":[{{"name":"ecs","mode":"EcsRamRole","ram_role_name":"{}"}}]}}"#,
            common::ECS_ROLE_NAME
        ),
    );
    let t = stack.token(&["--no-cache", "--metadata-endpoint", &endpoint], &[]);
    assert_eq!(stack.username(&t).as_deref(), Some(ecs_user.as_str()));
}

#[test]
fn credentials_uri_chainable_role_and_external_command() {
    let stack = Stack::start();
    let uri = stack.emu.credentials_uri();
    let uri_user = format!("uri:{}", common::URI_SESSION);

    let t = stack.token(&[], &[("ALIBABA_CLOUD_CREDENTIALS_URI", &uri)]);
    assert_eq!(stack.username(&t).as_deref(), Some(uri_user.as_str()));
    stack.write(
        ".aliyun/config.json",
        &format!(
            r#"{{"current":"uri","profiles":[
              {{"name":"uri","mode":"CredentialsURI","credentials_uri":"{uri}"}},
              {{"name":"base","mode":"AK","access_key_id":"LTAI5tAlice","access_key_secret":"AliceSecret"}},
              {{"name":"chain","mode":"ChainableRamRoleArn","source_profile":"base","ram_role_arn":"acs:ram::1234567890123456:role/KubeAdmin","ram_session_name":"chained"}},
              {{"name":"chain-uri","mode":"ChainableRamRoleArn","source_profile":"uri","ram_role_arn":"acs:ram::1234567890123456:role/KubeAdmin","ram_session_name":"from-uri"}},
              {{"name":"admin","mode":"RamRoleArn","access_key_id":"LTAI5tAlice","access_key_secret":"AliceSecret","ram_role_arn":"acs:ram::1234567890123456:role/KubeAdmin","ram_session_name":"first"}},
              {{"name":"chain-role","mode":"ChainableRamRoleArn","source_profile":"admin","ram_role_arn":"acs:ram::1234567890123456:role/KubeUriWorkload","ram_session_name":"second"}},
              {{"name":"ext","mode":"External","process_command":"{script} ak"}},
              {{"name":"ext-sts","mode":"External","process_command":"{script} sts"}}]}}"#,
            script = stack.home().join("creds.sh").display()
        ),
    );
    let t = stack.token(&["--no-cache"], &[]);
    assert_eq!(stack.username(&t).as_deref(), Some(uri_user.as_str()));

    // ChainableRamRoleArn: the source profile's keys assume the role.
    let before = stack.count("AssumeRole");
    let t = stack.token(&["--profile", "chain"], &[]);
    assert_eq!(stack.username(&t).as_deref(), Some("admin:chained"));
    assert_eq!(stack.count("AssumeRole"), before + 1);
    // ... also from temporary credentials of another source.
    let t = stack.token(&["--profile", "chain-uri"], &[]);
    assert_eq!(stack.username(&t).as_deref(), Some("admin:from-uri"));

    // ... and from a source profile that assumes a role itself: two AssumeRoles.
    let before = stack.count("AssumeRole");
    let t = stack.token(&["--profile", "chain-role"], &[]);
    assert_eq!(stack.username(&t).as_deref(), Some("uri:second"));
    assert_eq!(stack.count("AssumeRole"), before + 2);

    // External: a command printing the aliyun CLI's credentials JSON.
    let script = stack.write(
        "creds.sh",
        "#!/bin/sh\nif [ \"$1\" = ak ]; then\n  echo '{\"mode\":\"AK\",\"access_key_id\":\"LTAI5tAlice\",\"access_key_secret\":\"AliceSecret\"}'\nelse\n  echo '{\"mode\":\"StsToken\",\"access_key_id\":\"STS.Bob\",\"access_key_secret\":\"BobSecret\",\"sts_token\":\"BobSecurityToken\"}'\nfi\n",
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let t = stack.token(&["--profile", "ext"], &[]);
    assert_eq!(stack.username(&t).as_deref(), Some("alice"));
    let t = stack.token(&["--profile", "ext-sts"], &[]);
    assert_eq!(stack.username(&t).as_deref(), Some("admin:bob-example.com"));
}

#[test]
fn misconfigurations_fail_fast_with_one_clear_line() {
    let stack = Stack::start();
    let jwt = stack.write("oidc-token", &common::valid_oidc_jwt());
    let env = oidc_env(&jwt);

    // Each of the three OIDC variables missing is named.
    for skip in 0..3 {
        let some: Vec<(&str, &str)> = borrow(&env)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, kv)| kv)
            .collect();
        let e = stack.fails(&[], &some);
        assert!(
            e.contains("OIDC role") && e.contains(&format!("{} not", env[skip].0)),
            "{e}"
        );
    }
    // A JWT signed with a key the provider does not have.
    let forged = common::sign_jwt(
        &common::oidc_other_key_path(),
        &serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": common::OIDC_KEY_ID}),
        &serde_json::json!({"iss": common::OIDC_ISSUER, "aud": common::OIDC_CLIENT_ID,
            "sub": common::OIDC_SUBJECT, "exp": chrono::Utc::now().timestamp() + 600}),
    );
    std::fs::write(&jwt, &forged).expect("forged");
    let e = stack.fails(&[], &borrow(&env));
    assert!(e.contains("InvalidSignature"), "{e}");
    // A missing token file.
    std::fs::remove_file(&jwt).expect("rm");
    let e = stack.fails(&[], &borrow(&env));
    assert!(e.contains("cannot read the OIDC token file"), "{e}");

    // A metadata service that accepts connections and never answers: asked for by role name,
    // and as the chain's last guess.
    stack.emu.metadata_mode("hang");
    let endpoint = stack.emu.metadata_url();
    let e = stack.fails(
        &["--metadata-endpoint", &endpoint],
        &[
            ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", ""),
            ("ALIBABA_CLOUD_ECS_METADATA", common::ECS_ROLE_NAME),
        ],
    );
    assert!(
        e.contains("ECS metadata service") && e.contains("no answer"),
        "{e}"
    );
    let e = stack.fails(
        &["--metadata-endpoint", &endpoint],
        &[("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "")],
    );
    assert!(
        e.contains("no Alibaba Cloud credentials found") && e.contains("no answer"),
        "{e}"
    );

    // A credentials URI answering another Code.
    stack.emu.credentials_uri_code("InternalError", 200);
    let e = stack.fails(
        &[],
        &[(
            "ALIBABA_CLOUD_CREDENTIALS_URI",
            &stack.emu.credentials_uri(),
        )],
    );
    assert!(
        e.contains("credentials URI") && e.contains("Code \"InternalError\""),
        "{e}"
    );
}

/// Decodes the `x-acs-date` a v2 token was signed at.
fn signed_at(token: &str) -> String {
    use base64::Engine as _;
    let json = base64::engine::general_purpose::STANDARD
        .decode(token.trim().trim_start_matches("k8s-ack-v2."))
        .expect("base64");
    let v: Value = serde_json::from_slice(&json).expect("json");
    v["headers"]["x-acs-date"]
        .as_str()
        .expect("date")
        .to_string()
}

fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn the_refresher_rotates_rides_out_an_sts_outage_and_stops_cleanly() {
    let stack = Stack::start();
    let jwt = stack.write("oidc-token", &common::valid_oidc_jwt());
    let out_dir = stack.dir.path().join("tokens");
    std::fs::create_dir(&out_dir).expect("dir");
    let file = out_dir.join("token");
    let stderr_path = stack.dir.path().join("refresher.stderr");
    let env = oidc_env(&jwt);
    // A 15-minute token rewritten at 0.5% of its life: every 4.5 s. --no-cache: every rotation
    // asks STS, so an outage shows.
    let mut child = stack
        .command(
            &[
                "token",
                "--cluster-id",
                CLUSTER,
                "--sts-endpoint",
                &stack.emu.url,
                "--no-cache",
                "--write-token-file",
                file.to_str().expect("utf8"),
                "--refresh",
                "--refresh-fraction",
                "0.005",
            ],
            &borrow(&env),
        )
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr"))
        .spawn()
        .expect("spawn refresher");
    let read = || std::fs::read_to_string(&file).ok();
    assert!(
        wait_for(Duration::from_secs(10), || read().is_some()),
        "no token file"
    );
    let first = read().expect("token");
    assert_eq!(
        std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        stack.username(&first).as_deref(),
        Some("workload:ram-authenticator-tester")
    );

    // Readers hammer the file the whole time: each read is a complete token.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..6)
        .map(|_| {
            let (stop, reads, file) = (stop.clone(), reads.clone(), file.clone());
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match std::fs::read_to_string(&file) {
                        Ok(t) if ram_authenticator::token::parse(&t).is_ok() => {}
                        Ok(t) => bad.push(format!("{} bytes", t.len())),
                        Err(e) => bad.push(e.to_string()),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                }
                bad
            })
        })
        .collect();

    // Rotated well before the token's 15 minutes run out.
    let started = Instant::now();
    assert!(
        wait_for(Duration::from_secs(9), || read().as_deref() != Some(&first)),
        "not rotated"
    );
    let rotated_after = started.elapsed();
    let second = read().expect("token");
    assert!(signed_at(&second) > signed_at(&first));
    assert_eq!(
        stack.username(&second).as_deref(),
        Some("workload:ram-authenticator-tester")
    );

    // STS fails (500 on every call): the file keeps the last good token, the refresher retries.
    stack.emu.fault("error", 0);
    let failing = wait_for(Duration::from_secs(12), || {
        std::fs::read_to_string(&stderr_path)
            .unwrap_or_default()
            .contains("cannot renew the token")
    });
    assert!(
        failing,
        "{}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    assert_eq!(
        read().as_deref(),
        Some(second.as_str()),
        "last good token kept"
    );
    assert!(child.try_wait().expect("wait").is_none(), "still running");

    // STS is back: a new token soon.
    stack.emu.fault("none", 0);
    assert!(
        wait_for(Duration::from_secs(10), || read().as_deref()
            != Some(&second)),
        "not rotated after the outage: {}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    let third = read().expect("token");
    assert_eq!(
        stack.username(&third).as_deref(),
        Some("workload:ram-authenticator-tester")
    );

    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let bad = r.join().expect("reader");
        assert!(bad.is_empty(), "readers saw incomplete files: {bad:?}");
    }
    assert!(reads.load(Ordering::Relaxed) > 500, "{reads:?}");
    assert!(rotated_after < Duration::from_secs(7), "{rotated_after:?}");

    // SIGTERM: exit 0, promptly, with the file in place.
    let signalled = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(signalled.elapsed() < Duration::from_secs(5), "did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(ram_authenticator::token::parse(&read().expect("token")).is_ok());
    let names: Vec<_> = std::fs::read_dir(&out_dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("token")],
        "no temp files left"
    );
}

#[test]
fn token_file_once_and_flag_errors() {
    let stack = Stack::start();
    let file = stack.dir.path().join("once.token");
    let out = stack
        .command(
            &[
                "token",
                "-i",
                CLUSTER,
                "--write-token-file",
                file.to_str().expect("utf8"),
            ],
            &[
                ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI5tAlice"),
                ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "AliceSecret"),
            ],
        )
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "the token goes to the file only");
    let token = std::fs::read_to_string(&file).expect("file");
    assert!(token.starts_with("k8s-ack-v2.") && !token.ends_with('\n'));
    assert_eq!(stack.username(&token).as_deref(), Some("alice"));

    for (args, want) in [
        (vec!["--refresh"], "--write-token-file"),
        (
            vec!["--write-token-file", "/tmp/x", "--refresh-fraction", "1.5"],
            "between 0 and 1",
        ),
        (
            vec!["--write-token-file", "/tmp/x", "--refresh-fraction", "0"],
            "between 0 and 1",
        ),
    ] {
        let mut all = vec!["token", "-i", CLUSTER];
        all.extend(args);
        let out = stack.command(&all, &[]).output().expect("run");
        assert_eq!(out.status.code(), Some(2));
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains(want), "{e}");
    }
}

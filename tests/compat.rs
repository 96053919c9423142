//! One test per row of docs/migration.md: command lines, environment variables and config keys
//! written for ack-ram-authenticator and ack-ram-tool, run against the real binary (and, for the
//! kubeconfigs, through real kubectl). Also: each error rendered once with its exit code, and
//! `kubeconfig --write` leaving other entries byte-identical.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::kubectl_stack::{
    text, Proc, Stack, ADMIN_ROLE, ALICE_ID, ALICE_SECRET, BIN, CLUSTER, EMULATOR,
};

/// A private HOME, Alice's keys, and the binary.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path().join("home"))
            .env("USER", "compat")
            // Never the real metadata service when a case has no credentials.
            .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", ALICE_ID)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ALICE_SECRET)
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().expect("run")
    }

    /// A PEM file with a fresh self-signed certificate.
    fn ca_file(&self) -> PathBuf {
        let cert = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        self.write("ca.pem", &cert.cert.pem())
    }

    /// Runs and asserts the exit code; returns (stdout, stderr).
    fn expect(&self, code: i32, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
        let out = self.run(args, env);
        let (o, e) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}\nstdout: {o}\nstderr: {e}"
        );
        (o, e)
    }

    /// The token of an ExecCredential printed by a successful command.
    fn token_of(&self, args: &[&str], env: &[(&str, &str)]) -> (String, Value) {
        let (o, _) = self.expect(0, args, env);
        let ec: Value = serde_json::from_str(&o).expect("ExecCredential JSON");
        assert_eq!(ec["kind"], "ExecCredential");
        (
            ec["status"]["token"].as_str().expect("token").to_string(),
            ec,
        )
    }
}

/// The STS emulator with the example keys (Alice may assume KubeAdmin).
fn emulator(dir: &Path) -> (Proc, String) {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/emulator-keys.yaml");
    let mut cmd = Command::new(EMULATOR);
    cmd.args(["--listen", "127.0.0.1:0", "--keys"]).arg(keys);
    let (p, found) = Proc::spawn(cmd, dir, "emulator", &["listening on"]);
    (p, found[0].clone())
}

/// The cluster ID and signer of a token, as `verify` (against the emulator) reports them.
fn verified(env: &Env, token: &str, cluster: &str, sts: &str) -> Value {
    let (o, _) = env.expect(
        0,
        &[
            "verify",
            "-t",
            token,
            "-i",
            cluster,
            "--sts-endpoint",
            sts,
            "-o",
            "json",
        ],
        &[],
    );
    serde_json::from_str(&o).expect("report")
}

/// The ARN of whoever signed a token, as `verify` reports it.
fn arn_of(env: &Env, token: &str, cluster: &str, sts: &str) -> String {
    verified(env, token, cluster, sts)["identity"]["arn"]
        .as_str()
        .expect("arn")
        .to_string()
}

const ASSUMED: &str = "acs:ram::1234567890123456:assumed-role/KubeAdmin/";
const ALICE_ARN: &str = "acs:ram::1234567890123456:user/alice";

#[test]
fn root_flags_are_accepted_before_and_after_the_subcommand() {
    let env = Env::new();
    let (_emu, sts) = emulator(env.path());
    for args in [
        vec!["-i", "c1", "token"],
        vec!["token", "-i", "c1"],
        vec!["--cluster-id", "c1", "token"],
        vec!["token", "--cluster-id=c1"],
    ] {
        let (token, _) = env.token_of(&args, &[]);
        let r = verified(&env, &token, "c1", &sts);
        assert_eq!(r["clusterId"], "c1", "{args:?}: {r}");
        assert_eq!(r["identity"]["arn"], ALICE_ARN);
    }
    // ACK_CLUSTER_ID, and clusterID of -c FILE (before or after).
    let (token, _) = env.token_of(&["token"], &[("ACK_CLUSTER_ID", "c-env")]);
    assert_eq!(verified(&env, &token, "c-env", &sts)["clusterId"], "c-env");
    let cfg = env.write("config.yaml", "clusterID: c-file\n");
    let cfg = cfg.to_str().unwrap();
    for args in [vec!["-c", cfg, "token"], vec!["token", "-c", cfg]] {
        let (token, _) = env.token_of(&args, &[]);
        assert_eq!(
            verified(&env, &token, "c-file", &sts)["clusterId"],
            "c-file"
        );
    }
    // -l before and after.
    for args in [
        vec!["-l", "json", "-c", cfg, "check-config"],
        vec!["check-config", "-l", "json", "--config", cfg],
    ] {
        let (o, _) = env.expect(0, &args, &[]);
        assert!(o.contains("clusterID: c-file"), "{o}");
    }
    env.expect(2, &["-l", "xml", "token", "-i", "c1"], &[]);
}

#[test]
fn token_role_flags_env_and_config_key() {
    let env = Env::new();
    let (_emu, sts) = emulator(env.path());
    let sts_flags = ["--sts-endpoint", sts.as_str()];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut a = vec!["token", "-i", "c1"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&sts_flags);
        a
    };
    // token -i CLUSTER -r ROLE (ack-ram-authenticator's README), --role, --role-arn.
    for flags in [
        ["-r", ADMIN_ROLE],
        ["--role", ADMIN_ROLE],
        ["--role-arn", ADMIN_ROLE],
    ] {
        let (token, _) = env.token_of(&with(&flags), &[]);
        let arn = arn_of(&env, &token, "c1", &sts);
        assert!(arn.starts_with(ASSUMED), "{flags:?}: {arn}");
    }
    // --cache (ack-ram-authenticator's) is accepted: caching is the default.
    let (token, _) = env.token_of(&with(&["-r", ADMIN_ROLE, "--cache"]), &[]);
    let arn = arn_of(&env, &token, "c1", &sts);
    assert!(arn.starts_with(ASSUMED), "{arn}");
    // DEFAULT_ROLE.
    let (token, _) = env.token_of(&with(&[]), &[("DEFAULT_ROLE", ADMIN_ROLE)]);
    let arn = arn_of(&env, &token, "c1", &sts);
    assert!(arn.starts_with(ASSUMED), "{arn}");
    // defaultRole in the file the server also reads (client and server share one file).
    let cfg = env.write(
        "shared.yaml",
        &format!(
            "clusterID: c-shared\ndefaultRole: {ADMIN_ROLE}\nserver:\n  mapUsers:\n    - userARN: {ALICE_ARN}\n      username: alice\n"
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let mut args = vec!["token", "-c", cfg];
    args.extend_from_slice(&sts_flags);
    let (token, _) = env.token_of(&args, &[]);
    let r = verified(&env, &token, "c-shared", &sts);
    assert!(
        r["identity"]["arn"].as_str().unwrap().starts_with(ASSUMED),
        "{r}"
    );
    // The flag wins over the file; the server accepts the file and ignores defaultRole.
    let (o, _) = env.expect(0, &["check-config", "-c", cfg], &[]);
    assert!(o.contains("defaultRole: read by `token` only"), "{o}");
    let (token, _) = env.token_of(
        &[
            "token",
            "-c",
            cfg,
            "-r",
            "acs:ram::1234567890123456:role/KubeViewer",
            "--sts-endpoint",
            &sts,
        ],
        &[],
    );
    let arn = arn_of(&env, &token, "c-shared", &sts);
    assert!(arn.contains("assumed-role/KubeViewer/"), "{arn}");
}

#[test]
fn verify_t_and_server_b_and_init_c() {
    let env = Env::new();
    let (_emu, sts) = emulator(env.path());
    let (token, _) = env.token_of(&["token", "-i", "c1"], &[]);
    // verify -t TOKEN (and -o json).
    let (o, _) = env.expect(
        0,
        &["verify", "-t", &token, "-i", "c1", "--sts-endpoint", &sts],
        &[],
    );
    assert!(o.contains(ALICE_ARN), "{o}");

    // init -i ID.
    let plain = env.path().join("plain");
    env.expect(
        0,
        &[
            "init",
            "-i",
            "c-plain",
            "--state-dir",
            plain.to_str().unwrap(),
        ],
        &[],
    );
    let written = std::fs::read_to_string(plain.join("ram-authenticator.kubeconfig")).unwrap();
    assert!(written.contains("cluster c-plain"), "{written}");
    // init -c FILE: clusterID, hostname, address and port from the file; the files go to
    // --state-dir (the file's stateDir is where they are to be copied, as with ack).
    let state = env.path().join("state");
    let kc = env.path().join("out/webhook.kubeconfig");
    let elsewhere = env.path().join("not-here");
    let cfg = env.write(
        "init.yaml",
        &format!(
            "clusterID: c-init\nserver:\n  stateDir: {}\n  hostname: webhook.local\n  port: 21999\n",
            elsewhere.display()
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let init = |extra: &[&str]| {
        let mut a = vec!["init", "-c", cfg, "--state-dir", state.to_str().unwrap()];
        a.extend_from_slice(&["--generate-kubeconfig", kc.to_str().unwrap()]);
        a.extend_from_slice(extra);
        env.expect(0, &a, &[]);
        std::fs::read_to_string(&kc).expect("webhook kubeconfig")
    };
    let written = init(&[]);
    assert!(state.join("cert.pem").exists() && state.join("key.pem").exists());
    assert!(!elsewhere.exists());
    assert!(written.contains("cluster c-init"), "{written}");
    assert!(
        written.contains("https://webhook.local:21999/authenticate"),
        "{written}"
    );
    // A flag wins over the file.
    assert!(init(&["--port", "21888"]).contains(":21888/"));

    // server -b / --bind, with the root flags after the subcommand.
    for flag in ["-b", "--bind", "--address"] {
        let mut cmd = env.command(
            &[
                "server",
                "-c",
                cfg,
                "-i",
                "c-init",
                "-l",
                "json",
                flag,
                "127.0.0.1",
                "--port",
                "0",
                "--health-address",
                "127.0.0.1:0",
                "--sts-endpoint",
                &sts,
            ],
            &[("RUST_LOG", "info")],
        );
        cmd.arg("--state-dir")
            .arg(&state)
            .arg("--generate-kubeconfig")
            .arg(&kc);
        let (server, found) = Proc::spawn(cmd, env.path(), "server", &["serving"]);
        assert!(
            found[0].starts_with("https://127.0.0.1:"),
            "{flag}: {}",
            found[0]
        );
        let stderr = env.path().join("server.stderr");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(&stderr)
            .unwrap_or_default()
            .is_empty()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(server);
        let log = std::fs::read_to_string(&stderr).unwrap_or_default();
        let first = log.lines().next().unwrap_or_default();
        assert!(
            serde_json::from_str::<Value>(first).is_ok(),
            "-l json: {first}"
        );
    }
}

#[test]
fn feature_gates_are_answered() {
    let env = Env::new();
    let (_, e) = env.expect(
        0,
        &[
            "--feature-gates",
            "RAMIdentityMappingCRD=true",
            "token",
            "-i",
            "c1",
        ],
        &[],
    );
    assert!(e.contains("--backend-mode") && e.contains("CRD"), "{e}");
    let (_, e) = env.expect(
        2,
        &["token", "-i", "c1", "--feature-gates", "Nope=true"],
        &[],
    );
    assert!(e.contains("unknown gate"), "{e}");
}

#[test]
fn ack_ram_tool_credential_plugin_get_token() {
    let env = Env::new();
    let (_emu, sts) = emulator(env.path());
    for args in [
        vec![
            "credential-plugin",
            "get-token",
            "--cluster-id",
            "c1",
            "--api-version",
            "v1beta1",
            "--log-level",
            "error",
        ],
        vec![
            "credential-plugin",
            "get-token",
            "-c",
            "c1",
            "--api-version",
            "v1beta1",
        ],
        vec![
            "credential-plugin",
            "--log-level",
            "error",
            "get-token",
            "--cluster-id=c1",
            "-y",
        ],
    ] {
        let (token, ec) = env.token_of(&args, &[]);
        assert_eq!(
            ec["apiVersion"], "client.authentication.k8s.io/v1beta1",
            "{args:?}"
        );
        assert!(token.starts_with("k8s-ack-v2."), "{token}");
        assert_eq!(arn_of(&env, &token, "c1", &sts), ALICE_ARN);
    }
    let (_, ec) = env.token_of(
        &[
            "credential-plugin",
            "get-token",
            "--cluster-id",
            "c1",
            "--api-version",
            "v1",
        ],
        &[],
    );
    assert_eq!(ec["apiVersion"], "client.authentication.k8s.io/v1");
    // --role-arn, and --ignore-env-credentials really ignores the environment.
    let (token, _) = env.token_of(
        &[
            "credential-plugin",
            "get-token",
            "--cluster-id",
            "c1",
            "--role-arn",
            ADMIN_ROLE,
            "--sts-endpoint",
            &sts,
        ],
        &[],
    );
    let arn = arn_of(&env, &token, "c1", &sts);
    assert!(arn.starts_with(ASSUMED), "{arn}");
    let (_, e) = env.expect(
        1,
        &[
            "credential-plugin",
            "--ignore-env-credentials",
            "get-token",
            "--cluster-id",
            "c1",
        ],
        &[],
    );
    assert!(e.contains("no Alibaba Cloud credentials"), "{e}");
    // --profile-file (INI), --profile-name, and the aliyun CLI's config.json ignored on request.
    let ini = env.write(
        "creds.ini",
        &format!("[default]\ntype = access_key\naccess_key_id = nobody\naccess_key_secret = x\n[ops]\ntype = access_key\naccess_key_id = {ALICE_ID}\naccess_key_secret = {ALICE_SECRET}\n"),
    );
    let (token, _) = env.token_of(
        &[
            "credential-plugin",
            "--ignore-env-credentials",
            "--profile-file",
            ini.to_str().unwrap(),
            "--profile-name",
            "ops",
            "get-token",
            "--cluster-id",
            "c1",
        ],
        &[],
    );
    assert_eq!(arn_of(&env, &token, "c1", &sts), ALICE_ARN);
    let aliyun = env.path().join("home/.aliyun");
    std::fs::create_dir_all(&aliyun).unwrap();
    std::fs::write(
        aliyun.join("config.json"),
        format!(r#"{{"current":"default","profiles":[{{"name":"default","mode":"AK","access_key_id":"{ALICE_ID}","access_key_secret":"{ALICE_SECRET}"}}]}}"#),
    )
    .unwrap();
    let (token, _) = env.token_of(
        &[
            "credential-plugin",
            "--ignore-env-credentials",
            "get-token",
            "--cluster-id",
            "c1",
        ],
        &[],
    );
    assert_eq!(arn_of(&env, &token, "c1", &sts), ALICE_ARN);
    let (_, e) = env.expect(
        1,
        &[
            "credential-plugin",
            "--ignore-env-credentials",
            "--ignore-aliyun-cli-credentials",
            "get-token",
            "--cluster-id",
            "c1",
        ],
        &[],
    );
    assert!(e.contains("no Alibaba Cloud credentials"), "{e}");
    // --log-level debug and -v show what the plugin does; error keeps it quiet.
    for (flag, loud) in [
        ("--log-level=debug", true),
        ("-v", true),
        ("--log-level=error", false),
    ] {
        let (_, e) = env.expect(
            0,
            &["credential-plugin", flag, "get-token", "--cluster-id", "c1"],
            &[],
        );
        assert_eq!(e.contains("credentials found"), loud, "{flag}: {e}");
    }
    // The rest of ack-ram-tool is refused with what to use instead.
    let (_, e) = env.expect(
        2,
        &["credential-plugin", "get-credential", "--cluster-id", "c1"],
        &[],
    );
    assert!(e.contains("ram-authenticator token"), "{e}");
    env.expect(2, &["credential-plugin", "get-token"], &[]);
    env.expect(
        2,
        &["credential-plugin", "get-token", "--cluster-id", ""],
        &[],
    );
    env.expect(
        2,
        &[
            "credential-plugin",
            "get-token",
            "--cluster-id",
            "c1",
            "--api-version",
            "v2",
        ],
        &[],
    );
}

#[test]
fn empty_cluster_ids_are_refused_everywhere() {
    let env = Env::new();
    let ca = env.ca_file();
    let ca = ca.to_str().unwrap();
    for args in [
        vec!["init", "-i", ""],
        vec!["init", "-i", "  ", "--state-dir", "s"],
        vec!["token", "-i", ""],
        vec!["token", "--cluster-id="],
        vec!["server", "-i", ""],
        vec!["verify", "-t", "x", "-i", ""],
        vec![
            "kubeconfig",
            "-i",
            "",
            "--server",
            "https://x",
            "--ca-file",
            ca,
        ],
        vec!["check-config", "-i", "", "-c", "x.yaml"],
    ] {
        let (_, e) = env.expect(2, &args, &[]);
        assert!(e.contains("cluster ID is empty"), "{args:?}: {e}");
    }
    // No cluster ID at all, or an empty one in the file.
    let empty = env.write("empty.yaml", "clusterID: \"\"\n");
    for args in [
        vec!["token"],
        vec!["init"],
        vec!["server"],
        vec!["token", "-c", empty.to_str().unwrap()],
        vec!["init", "-c", empty.to_str().unwrap()],
    ] {
        let (_, e) = env.expect(2, &args, &[("ACK_CLUSTER_ID", "")]);
        assert!(e.contains("no cluster ID"), "{args:?}: {e}");
    }
    assert!(!env.path().join("s").exists());
}

/// No segment of an error line appears twice.
fn assert_each_cause_once(e: &str) {
    let line = e.lines().find(|l| l.starts_with("error: ")).unwrap_or(e);
    let parts: Vec<&str> = line
        .split(": ")
        .map(str::trim)
        .filter(|p| p.len() > 12)
        .collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(!parts[i + 1..].contains(p), "{p:?} repeated in {line}");
    }
}

#[test]
fn errors_once_with_the_right_exit_code() {
    let env = Env::new();
    // Failures: 1.
    let (_, e) = env.expect(1, &["server", "-c", "/nope/missing.yaml"], &[]);
    assert!(
        e.contains("cannot read config file /nope/missing.yaml"),
        "{e}"
    );
    assert_eq!(e.matches("os error 2").count(), 1, "{e}");
    let (_, e) = env.expect(1, &["check-config", "-c", "/nope/missing.yaml"], &[]);
    assert_eq!(e.matches("os error 2").count(), 1, "{e}");
    // CRD backend with no Kubernetes configuration at all.
    let st = env.path().join("st");
    let (_, e) = env.expect(
        1,
        &[
            "server",
            "-i",
            "c1",
            "--backend-mode",
            "CRD",
            "--port",
            "0",
            "--health-address",
            "127.0.0.1:0",
            "--state-dir",
            st.to_str().unwrap(),
            "--kubeconfig-pregenerated",
        ],
        &[("KUBECONFIG", "")],
    );
    assert!(e.contains("Kubernetes"), "{e}");
    assert_each_cause_once(&e);
    // AssumeRole with STS down.
    let (_, e) = env.expect(
        1,
        &[
            "token",
            "-i",
            "c1",
            "-r",
            ADMIN_ROLE,
            "--sts-endpoint",
            "http://127.0.0.1:1",
            "--no-cache",
        ],
        &[],
    );
    assert_each_cause_once(&e);
    // Usage errors: 2.
    let (_, e) = env.expect(2, &["check-config"], &[]);
    assert!(e.contains("--config"), "{e}");
    env.expect(2, &["token", "-i", "c1", "--no-such-flag"], &[]);
    env.expect(2, &["nonsense"], &[]);
    // A flag value the server would refuse is refused as the command line is read.
    for (flag, value, want) in [
        ("--backend-mode", "MountedFile,Nope", "unknown backend mode"),
        ("--address", "localhost", "not an IP address"),
        ("--sts-deadline-ms", "30000", "30000"),
        ("--sts-timeout-ms", "0", "0"),
        ("--cache-max-entries", "0", "0"),
    ] {
        for cmd in ["server", "check-config"] {
            let (_, e) = env.expect(2, &[cmd, "-i", "c1", flag, value], &[]);
            assert!(
                e.contains(want) && e.contains(flag),
                "{cmd} {flag} {value}: {e}"
            );
        }
    }
    let ca = env.ca_file();
    let ca = ca.to_str().unwrap();
    for extra in [
        vec!["--server", "http://insecure:6443"],
        vec!["--server", "https://x", "--role-arn", "acs:ram::1:user/u"],
        vec!["--server", "https://x", "--name", ""],
    ] {
        let mut a = vec!["kubeconfig", "-i", "c1", "--ca-file", ca];
        a.extend_from_slice(&extra);
        env.expect(2, &a, &[]);
    }
    env.expect(2, &["add", "role", "--rolearn", ADMIN_ROLE], &[]);
    env.expect(2, &["remove", "user", "--userarn", "not-an-arn"], &[]);
    env.expect(2, &["credential-plugin", "get-nothing"], &[]);
    // check-config resolves like server: environment and flags included, and its advice works.
    let cfg = env.write("nocluster.yaml", "server:\n  port: 1234\n");
    let cfg = cfg.to_str().unwrap();
    let (_, e) = env.expect(1, &["check-config", "-c", cfg], &[("ACK_CLUSTER_ID", "")]);
    assert!(e.contains("--cluster-id"), "{e}");
    let (o, _) = env.expect(0, &["check-config", "-c", cfg, "--cluster-id", "c9"], &[]);
    assert!(o.contains("clusterID: c9"), "{o}");
    let (o, _) = env.expect(
        0,
        &["check-config", "-c", cfg],
        &[("ACK_CLUSTER_ID", "c-env"), ("STS_REGION", "cn-beijing")],
    );
    assert!(
        o.contains("clusterID: c-env") && o.contains("https://sts-vpc.cn-beijing.aliyuncs.com"),
        "{o}"
    );
    let (o, _) = env.expect(
        0,
        &["check-config", "-c", cfg, "-i", "c1"],
        &[("STS_ENDPOINT", "http://127.0.0.1:9")],
    );
    assert!(o.contains("STS endpoint: http://127.0.0.1:9"), "{o}");
    assert!(o.contains(":1234"), "{o}");
    // server --help prints each default once.
    let (o, _) = env.expect(0, &["server", "--help"], &[]);
    assert!(
        !o.contains("[default: 4096] [default: 4096]") && o.contains("[default: 4096]"),
        "{o}"
    );
    assert!(o.contains("-b, --address") && o.contains("--bind"), "{o}");
}

/// Writes the API server's CA and returns the `kubeconfig` flags for the stand-in.
fn kubeconfig_flags(stack: &Stack) -> Vec<String> {
    let ca = stack.path().join("apiserver-ca.pem");
    std::fs::write(&ca, &stack.api.ca_pem).expect("ca");
    vec![
        "--server".into(),
        format!("https://127.0.0.1:{}", stack.api.addr.port()),
        "--ca-file".into(),
        ca.display().to_string(),
    ]
}

/// A directory holding `ram-authenticator`, to put first on kubectl's PATH.
fn bin_dir() -> PathBuf {
    Path::new(BIN).parent().expect("bin dir").to_path_buf()
}

fn kubeconfig_with_user(stack: &Stack, user_yaml: &str) -> PathBuf {
    let ca = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        &stack.api.ca_pem,
    );
    let text = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority-data: {ca}\n  name: kubernetes\n\
         contexts:\n- context:\n    cluster: kubernetes\n    user: ack\n  name: ack\ncurrent-context: ack\nkind: Config\npreferences: {{}}\n\
         users:\n- name: ack\n  user:\n{user_yaml}",
        stack.api.addr.port()
    );
    let p = stack
        .path()
        .join(format!("readme-{}.kubeconfig", rand_suffix()));
    std::fs::write(&p, text).expect("kubeconfig");
    p
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn pods_user(out: &Output, stack: &Stack) -> String {
    assert!(
        out.status.success(),
        "kubectl failed: {}\nrequests: {:?}",
        text(&out.stderr),
        stack.api.seen()
    );
    let pods: Value = serde_json::from_slice(&out.stdout).expect("PodList");
    pods["items"][0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string()
}

#[test]
fn the_two_readme_kubeconfigs_work_through_kubectl_with_only_command_changed() {
    let stack = Stack::start();
    let get = ["get", "--raw", "/api/v1/namespaces/default/pods"];
    let exec = "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: ram-authenticator\n";
    let cases = [
        // ack-ram-authenticator's README: `command: ack-ram-authenticator`, token -i CLUSTER.
        (
            format!("      args:\n        - \"token\"\n        - \"-i\"\n        - \"{CLUSTER}\"\n"),
            "alice",
        ),
        // ack-ram-tool's kubeconfig: credential-plugin get-token.
        (
            format!(
                "      args:\n      - credential-plugin\n      - get-token\n      - --cluster-id\n      - {CLUSTER}\n      - --api-version\n      - v1beta1\n      - --log-level\n      - error\n      env: null\n      interactiveMode: Never\n      provideClusterInfo: false\n"
            ),
            "alice",
        ),
        // ack-ram-authenticator's README with -r ROLE_ARN.
        (
            format!(
                "      args: [token, -i, {CLUSTER}, -r, \"{ADMIN_ROLE}\", --sts-endpoint, \"{}\"]\n",
                stack.emulator_url
            ),
            "admin:",
        ),
    ];
    for (args, user) in cases {
        let kc = kubeconfig_with_user(&stack, &format!("{exec}{args}"));
        let out = stack.kubectl_with_path(&kc, &get, Some(&bin_dir()));
        let got = pods_user(&out, &stack);
        assert!(got.starts_with(user), "{args}: {got}");
    }
}

#[test]
fn kubeconfig_write_merges_and_kubectl_logs_in() {
    let stack = Stack::start();
    let home = stack.path().join("home");
    let kube = home.join(".kube");
    std::fs::create_dir_all(&kube).unwrap();
    let existing = "\
# kept as it is
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: T1RIRVI=
    server: https://other.example:6443
  name: other
contexts:
- context:
    cluster: other
    user: other
  name: other
current-context: other
kind: Config
preferences: {}
users:
- name: other
  user:
    token: not-a-real-token
";
    let path = kube.join("config");
    std::fs::write(&path, existing).unwrap();
    let mut args: Vec<String> = vec![
        "kubeconfig".into(),
        "-i".into(),
        CLUSTER.into(),
        "--name".into(),
        "ram".into(),
    ];
    args.extend(kubeconfig_flags(&stack));
    args.push("--write".into());
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = |extra: &[(&str, &str)]| {
        let out = Command::new(BIN)
            .env_clear()
            .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
            .env("HOME", &home)
            .envs(extra.iter().copied())
            .args(&args_ref)
            .output()
            .expect("kubeconfig --write");
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let said = run(&[]);
    assert!(said.contains("merged") && said.contains(".bak"), "{said}");
    let merged = std::fs::read_to_string(&path).unwrap();
    // Every other entry (and the comment) byte for byte, in order.
    for block in [
        "# kept as it is\napiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: T1RIRVI=\n    server: https://other.example:6443\n  name: other\n",
        "contexts:\n- context:\n    cluster: other\n    user: other\n  name: other\n",
        "kind: Config\npreferences: {}\nusers:\n- name: other\n  user:\n    token: not-a-real-token\n",
    ] {
        assert!(merged.contains(block), "lost\n{block}\nin\n{merged}");
    }
    assert!(merged.contains("current-context: ram\n"), "{merged}");
    // The backup is the old file.
    let backups: Vec<PathBuf> = std::fs::read_dir(&kube)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".bak"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(std::fs::read_to_string(&backups[0]).unwrap(), existing);
    // Idempotent: nothing changes, no new backup.
    let said = run(&[]);
    assert!(said.contains("nothing to do"), "{said}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), merged);
    // kubectl logs in with the result (the plugin found on PATH).
    let out = stack.kubectl_with_path(
        &path,
        &["get", "--raw", "/api/v1/namespaces/default/pods"],
        Some(&bin_dir()),
    );
    assert_eq!(pods_user(&out, &stack), "alice");
    // A kubeconfig that is a symlink: the file it names is updated, the link stays.
    let real = stack.path().join("real-kubeconfig");
    std::fs::write(&real, existing).unwrap();
    let link = stack.path().join("link-kubeconfig");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let linked = format!("{}", link.display());
    run(&[("KUBECONFIG", linked.as_str())]);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(&real)
        .unwrap()
        .contains("current-context: ram\n"));
    // $KUBECONFIG's first file is the default target; a new file is created with mode 0600.
    let fresh = stack.path().join("fresh/kubeconfig");
    let list = format!("{}:{}", fresh.display(), path.display());
    run(&[("KUBECONFIG", list.as_str())]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&fresh).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let v: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&fresh).unwrap()).unwrap();
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), merged);
}

#[test]
fn kubeconfig_keys_command_hint_passthrough_and_token_file() {
    let env = Env::new();
    let ca = env.ca_file();
    let ca = ca.to_str().unwrap();
    let base = [
        "kubeconfig",
        "-i",
        "c1",
        "--server",
        "https://127.0.0.1:6443",
        "--ca-file",
        ca,
    ];
    let doc = |extra: &[&str]| -> serde_yaml::Value {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        let (o, _) = env.expect(0, &a, &[]);
        assert!(!o.contains("api-version"), "{o}");
        serde_yaml::from_str(&o).expect("yaml")
    };
    let v = doc(&[]);
    assert_eq!(v["apiVersion"], "v1");
    let exec = &v["users"][0]["user"]["exec"];
    assert_eq!(exec["command"], "ram-authenticator");
    assert!(exec["installHint"]
        .as_str()
        .unwrap()
        .contains("cargo install --locked"));
    let v = doc(&["--absolute-path"]);
    let cmd = v["users"][0]["user"]["exec"]["command"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        std::fs::canonicalize(cmd).unwrap(),
        std::fs::canonicalize(BIN).unwrap()
    );
    // Role, profile, region and format pass through to the plugin.
    let v = doc(&[
        "--role",
        ADMIN_ROLE,
        "--profile",
        "p1",
        "--region",
        "cn-beijing",
        "--format",
        "v1",
    ]);
    let args: Vec<&str> = v["users"][0]["user"]["exec"]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "token",
            "--cluster-id",
            "c1",
            "--profile",
            "p1",
            "--role-arn",
            ADMIN_ROLE,
            "--format",
            "v1",
            "--region",
            "cn-beijing"
        ]
    );
    // A tokenFile user, no plugin.
    let v = doc(&["--token-file", "/var/run/secrets/ram/token"]);
    assert_eq!(
        v["users"][0]["user"]["tokenFile"],
        "/var/run/secrets/ram/token"
    );
    assert!(v["users"][0]["user"].get("exec").is_none());
    let mut a = base.to_vec();
    a.extend_from_slice(&["--token-file", "/t", "--role-arn", ADMIN_ROLE]);
    env.expect(2, &a, &[]);
    let mut a = base.to_vec();
    a.extend_from_slice(&["--command", "x", "--absolute-path"]);
    env.expect(2, &a, &[]);
}

// ---- add / remove / list against the fake API server ----

use support::fake_apiserver::FakeApiServer;

/// Runs the binary off the async runtime (the fake API server lives on it).
async fn run_async(args: Vec<String>, stdin: Option<&'static str>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = Command::new(BIN)
            .env_clear()
            .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
            .env("HOME", "/nonexistent")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            let _ = input.write_all(text.as_bytes());
        }
        drop(input);
        let out = child.wait_with_output().expect("wait");
        (
            out.status.code().unwrap_or(-1),
            text(&out.stdout),
            text(&out.stderr),
        )
    })
    .await
    .expect("join")
}

fn argv(kubeconfig: &Path, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    v.push("--kubeconfig".into());
    v.push(kubeconfig.display().to_string());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_remove_list_ramidentitymappings() {
    support::init();
    let api = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.write_kubeconfig(dir.path());
    let role = "acs:ram::1234567890123456:role/KubeAdmin";
    let add = |extra: &[&str]| {
        let mut a = vec![
            "add",
            "role",
            "--rolearn",
            role,
            "--username",
            "admin:{{SessionName}}",
            "--groups",
            "ops,viewers",
        ];
        a.extend_from_slice(extra);
        argv(&kc, &a)
    };
    // --dry-run prints the object and writes nothing.
    let (code, out, err) = run_async(add(&["--dry-run"]), None).await;
    assert_eq!(code, 0, "{err}");
    let obj: serde_yaml::Value = serde_yaml::from_str(&out).expect("yaml");
    assert_eq!(obj["kind"], "RAMIdentityMapping");
    assert_eq!(obj["spec"]["arn"], role);
    assert_eq!(obj["spec"]["groups"][1], "viewers");
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(name, "role-1234567890123456-role-kubeadmin");
    assert!(api.mapping(&name).is_none());
    // Created, then idempotent.
    let (code, out, err) = run_async(add(&[]), None).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created"), "{out}");
    let stored = api.mapping(&name).expect("created");
    assert_eq!(stored["spec"]["username"], "admin:{{SessionName}}");
    let rv = api.resource_version();
    let (code, out, _) = run_async(add(&[]), None).await;
    assert_eq!(code, 0);
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(api.resource_version(), rv, "an unchanged add wrote");
    // Found by the canonical ARN whatever the case or the form: updated in place.
    let (code, out, err) = run_async(
        argv(
            &kc,
            &[
                "add",
                "role",
                "--rolearn",
                "acs:ram::1234567890123456:role/kubeadmin",
                "--username",
                "root-admin",
            ],
        ),
        None,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("updated"), "{out}");
    assert_eq!(
        api.mapping(&name).unwrap()["spec"]["username"],
        "root-admin"
    );
    // Validated like the server: a bad template, the wrong kind of ARN.
    let (code, _, err) = run_async(
        argv(
            &kc,
            &[
                "add",
                "user",
                "--userarn",
                "acs:ram::1:user/bob",
                "--username",
                "{{Nope}}",
            ],
        ),
        None,
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("refused by the server"), "{err}");
    let (code, _, err) = run_async(
        argv(&kc, &["add", "user", "--userarn", role, "--username", "x"]),
        None,
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("add role"), "{err}");
    // --prompt asks; anything but yes cancels.
    let user = "acs:ram::1234567890123456:user/alice";
    let (code, _, err) = run_async(
        argv(
            &kc,
            &[
                "add",
                "user",
                "--userarn",
                user,
                "--username",
                "alice",
                "--prompt",
            ],
        ),
        Some("n\n"),
    )
    .await;
    assert_eq!(code, 0);
    assert!(err.contains("cancelled"), "{err}");
    assert!(api.mapping("user-1234567890123456-user-alice").is_none());
    let (code, _, err) = run_async(
        argv(
            &kc,
            &[
                "add",
                "user",
                "--userarn",
                user,
                "--username",
                "alice",
                "--prompt=true",
            ],
        ),
        Some("y\n"),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(api.mapping("user-1234567890123456-user-alice").is_some());
    // list.
    let (code, out, _) = run_async(argv(&kc, &["list"]), None).await;
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!(
            "{} -> root-admin [] (RAMIdentityMapping/{name})",
            role.to_lowercase()
        )),
        "{out}"
    );
    assert!(out.contains(user), "{out}");
    // remove, then again (nothing to do).
    let (code, out, _) = run_async(argv(&kc, &["remove", "role", "--rolearn", role]), None).await;
    assert_eq!(code, 0);
    assert!(out.contains("deleted"), "{out}");
    assert!(api.mapping(&name).is_none());
    let (code, out, _) = run_async(argv(&kc, &["remove", "role", "--rolearn", role]), None).await;
    assert_eq!(code, 0);
    assert!(out.contains("nothing to do"), "{out}");
    // --kubeconfig-context picks a context; --master-url overrides the server.
    let two = dir.path().join("two-contexts.kubeconfig");
    std::fs::write(
        &two,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster:\n    server: http://127.0.0.1:1\n\
             - name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: dead\n  context:\n    cluster: dead\n    user: u\n\
             - name: fake\n  context:\n    cluster: fake\n    user: u\ncurrent-context: dead\nusers:\n- name: u\n  user: {{}}\n",
            api.url()
        ),
    )
    .unwrap();
    let (code, _, _) = run_async(argv(&two, &["list"]), None).await;
    assert_eq!(code, 1, "the current context's server is down");
    let (code, out, err) =
        run_async(argv(&two, &["list", "--kubeconfig-context", "fake"]), None).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(user), "{out}");
    let (code, out, err) = run_async(argv(&two, &["list", "--master-url", &api.url()]), None).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(user), "{out}");
    // No cluster: a failure, rendered once.
    let (code, _, err) = run_async(
        vec!["list".into(), "--kubeconfig".into(), "/nope/kc".into()],
        None,
    )
    .await;
    assert_eq!(code, 1);
    assert_each_cause_once(&err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_in_the_ack_configmap() {
    support::init();
    let api = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.write_kubeconfig(dir.path());
    let cm = ["--backend", "ACKConfigMap"];
    let role = "acs:ram::1234567890123456:role/KubeAdmin";
    // Absent: created.
    let mut a = vec![
        "add",
        "role",
        "--rolearn",
        role,
        "--username",
        "admin",
        "--groups",
        "system:masters",
    ];
    a.extend_from_slice(&cm);
    let (code, out, err) = run_async(argv(&kc, &a), None).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added"), "{out}");
    let stored = api.configmap("alibabacloud-auth").expect("created");
    let roles: serde_yaml::Value =
        serde_yaml::from_str(stored["data"]["mapRoles"].as_str().unwrap()).unwrap();
    assert_eq!(roles[0]["rolearn"], role);
    assert_eq!(roles[0]["groups"][0], "system:masters");

    // Existing data written by hand (other casing, comments): other keys stay byte-identical.
    let users = "# the team\n- UserArn: acs:ram::1234567890123456:user/bob\n  username: bob\n";
    api.put_configmap(
        "alibabacloud-auth",
        &[
            ("mapUsers", users),
            (
                "mapRoles",
                "- RoleARN: acs:ram::1234567890123456:role/Dev\n  username: dev\n",
            ),
            ("note", "kept"),
        ],
    );
    let mut a = vec!["add", "role", "--rolearn", role, "--username", "admin"];
    a.extend_from_slice(&cm);
    let (code, _, err) = run_async(argv(&kc, &a), None).await;
    assert_eq!(code, 0, "{err}");
    let stored = api.configmap("alibabacloud-auth").unwrap();
    assert_eq!(stored["data"]["mapUsers"], users);
    assert_eq!(stored["data"]["note"], "kept");
    let roles: serde_yaml::Value =
        serde_yaml::from_str(stored["data"]["mapRoles"].as_str().unwrap()).unwrap();
    assert_eq!(roles.as_sequence().unwrap().len(), 2, "{roles:?}");
    // The server accepts the result.
    let data: std::collections::BTreeMap<String, String> =
        serde_json::from_value(stored["data"].clone()).unwrap();
    let parsed = ram_authenticator::kube::configmap::parse_data(
        &data,
        &ram_authenticator::kube::configmap::LastGood::default(),
    );
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    assert_eq!(parsed.index.len(), 3);
    // Idempotent; a user entry found whatever its key casing.
    let rv = api.resource_version();
    let (_, out, _) = run_async(argv(&kc, &a), None).await;
    assert!(out.contains("nothing to do"), "{out}");
    let mut b = vec![
        "add",
        "user",
        "--userarn",
        "acs:ram::1234567890123456:user/BOB",
        "--username",
        "bob",
    ];
    b.extend_from_slice(&cm);
    let (_, out, _) = run_async(argv(&kc, &b), None).await;
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(api.resource_version(), rv);
    // --dry-run prints the ConfigMap; remove takes the entry out.
    let mut r = vec!["remove", "role", "--rolearn", role, "--dry-run"];
    r.extend_from_slice(&cm);
    let (code, out, _) = run_async(argv(&kc, &r), None).await;
    assert_eq!(code, 0);
    let shown: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
    assert_eq!(shown["kind"], "ConfigMap");
    assert!(
        !shown["data"]["mapRoles"]
            .as_str()
            .unwrap()
            .contains("KubeAdmin"),
        "{out}"
    );
    assert_eq!(api.resource_version(), rv);
    r.retain(|a| *a != "--dry-run");
    let (code, out, _) = run_async(argv(&kc, &r), None).await;
    assert_eq!(code, 0);
    assert!(out.contains("removed"), "{out}");
    let (_, out, _) = run_async(argv(&kc, &["list", "--backend", "ACKConfigMap"]), None).await;
    assert!(
        out.contains("user/bob -> bob") && !out.contains("KubeAdmin"),
        "{out}"
    );
    // --name is for objects only.
    let mut n = vec![
        "add",
        "role",
        "--rolearn",
        role,
        "--username",
        "a",
        "--name",
        "x",
    ];
    n.extend_from_slice(&cm);
    let (code, _, _) = run_async(argv(&kc, &n), None).await;
    assert_eq!(code, 2);
}

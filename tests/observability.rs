//! Black-box tests of what the binaries tell an operator: the audit lines (length, typed JSON,
//! the level of allows), the absence of colour codes when stderr is not a terminal, `version`,
//! and `/metrics` read by Prometheus' own OpenMetrics parser under its declared content type.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ram-authenticator");

fn setup(extra: &[&str]) -> (tempfile::TempDir, Emulator, Server) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = Emulator::start(dir.path(), &[]);
    let server = Server::start(dir.path(), &emu.url, extra);
    (dir, emu, server)
}

fn alice() -> String {
    v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER)
}

/// An identity STS confirms but no mapping names (account 3333… is not mapped).
fn unmapped() -> String {
    v2_token("LTAI5tDave", "DaveSecret", None, CLUSTER)
}

/// The server's audit lines so far, after letting its log writer catch up.
async fn audit_lines(server: &Server, wanted: usize) -> Vec<String> {
    let lines = || -> Vec<String> {
        server
            .proc
            .stderr()
            .lines()
            .filter(|l| l.contains(" audit: ") || l.contains(r#""target":"audit""#))
            .map(str::to_string)
            .collect()
    };
    eventually(Duration::from_secs(5), || lines().len() >= wanted).await;
    // Anything more that was going to be written is written by now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    lines()
}

#[tokio::test]
async fn text_audit_lines_are_short_and_carry_the_key_id_and_token_hash() {
    let (_dir, emu, server) = setup(&[]);
    let client = server.client();
    let token = alice();
    for _ in 0..2 {
        let v = server
            .review(&client, "authentication.k8s.io/v1", &token)
            .await;
        assert_eq!(v["status"]["authenticated"], true, "{v}");
    }
    let v = server
        .review(&client, "authentication.k8s.io/v1", &unmapped())
        .await;
    assert_eq!(v["status"]["authenticated"], false, "{v}");
    let lines = audit_lines(&server, 3).await;
    let allows: Vec<&String> = lines.iter().filter(|l| l.contains(" allow ")).collect();
    let denies: Vec<&String> = lines.iter().filter(|l| l.contains(" deny ")).collect();
    assert_eq!((allows.len(), denies.len()), (2, 1), "{lines:#?}");
    for line in &allows {
        // `lines()` took the newline off: the line as written is one byte longer.
        assert!(line.len() < 300, "{} bytes: {line}", line.len() + 1);
        for part in [
            " INFO audit: allow ",
            " user=alice ",
            " groups=developers ",
            " arn=acs:ram::1234567890123456:user/alice ",
            " access_key_id=LTAI5tAlice ",
            " token_hash=",
            " duration_us=",
        ] {
            assert!(line.contains(part), "{part:?} missing: {line}");
        }
        assert!(
            !line.contains(&token[11..60]),
            "the token is logged: {line}"
        );
    }
    assert!(allows[0].contains(" cached=false "), "{}", allows[0]);
    assert!(allows[1].contains(" cached=true "), "{}", allows[1]);
    assert!(
        denies[0].contains(" INFO audit: deny reason=not_mapped "),
        "{}",
        denies[0]
    );
    assert!(
        denies[0].contains(" access_key_id=LTAI5tDave "),
        "{}",
        denies[0]
    );

    // Build information at start-up; no colour codes in piped stderr (server and emulator).
    let log = server.proc.stderr();
    assert!(
        log.contains("ram-authenticator starting")
            && log.contains(concat!("version=", env!("CARGO_PKG_VERSION"))),
        "{log}"
    );
    assert!(
        !log.contains('\x1b'),
        "ANSI codes in the server's log: {log}"
    );
    let emu_log = emu.proc.stderr();
    assert!(!emu_log.is_empty());
    assert!(!emu_log.contains('\x1b'), "ANSI codes: {emu_log}");
}

/// One review allowed (alice, v1), then one denied (not mapped, `deny_api_version`).
async fn allow_then_deny(server: &Server, deny_api_version: &str) {
    let client = server.client();
    let v = server
        .review(&client, "authentication.k8s.io/v1", &alice())
        .await;
    assert_eq!(v["status"]["authenticated"], true, "{v}");
    let v = server.review(&client, deny_api_version, &unmapped()).await;
    assert_eq!(v["status"]["authenticated"], false, "{v}");
}

#[tokio::test]
async fn json_audit_lines_have_typed_fields() {
    let (_dir, _emu, server) = setup(&["--log-format", "json"]);
    allow_then_deny(&server, "authentication.k8s.io/v1beta1").await;
    let lines: Vec<Value> = audit_lines(&server, 2)
        .await
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let allow = &lines[0];
    assert_eq!(allow["level"], "INFO", "{allow}");
    assert_eq!(allow["decision"], "allow", "{allow}");
    assert_eq!(
        allow["groups"],
        serde_json::json!(["developers"]),
        "{allow}"
    );
    assert!(allow["duration_us"].is_u64(), "{allow}");
    assert!(allow["cache_hit"].is_boolean(), "{allow}");
    assert_eq!(allow["access_key_id"], "LTAI5tAlice", "{allow}");
    assert_eq!(allow["username"], "alice", "{allow}");
    assert!(allow["token_hash"].as_str().is_some_and(|h| h.len() == 12));
    assert!(allow.get("duration_ms").is_none(), "{allow}");
    let deny = &lines[1];
    assert_eq!(deny["level"], "INFO", "{deny}");
    assert_eq!(deny["decision"], "deny", "{deny}");
    assert_eq!(deny["reason"], "not_mapped", "{deny}");
    assert_eq!(deny["api_version"], "authentication.k8s.io/v1beta1");
    assert!(deny["error"]
        .as_str()
        .is_some_and(|e| e.contains("not mapped")));
    assert!(deny["duration_us"].is_u64(), "{deny}");
}

#[tokio::test]
async fn audit_allows_debug_or_off_hides_allows_and_keeps_denies() {
    // `--audit-allows debug` at the default info level, and `server.auditAllows: off`.
    for (flag, config_line) in [(Some("debug"), None), (None, Some("  auditAllows: off\n"))] {
        let dir = tempfile::tempdir().expect("tempdir");
        let emu = Emulator::start(dir.path(), &[]);
        let config = CONFIG_YAML.replace(
            "server:\n",
            &format!("server:\n{}", config_line.unwrap_or("")),
        );
        let mut extra = Vec::new();
        if let Some(level) = flag {
            extra.extend(["--audit-allows", level]);
        }
        let server = Server::start_with_config(dir.path(), &emu.url, &config, &extra);
        allow_then_deny(&server, "authentication.k8s.io/v1").await;
        let lines = audit_lines(&server, 1).await;
        assert_eq!(lines.len(), 1, "{flag:?} {config_line:?}: {lines:#?}");
        assert!(lines[0].contains(" INFO audit: deny "), "{}", lines[0]);
    }
}

/// `/metrics` through `prometheus_client`'s OpenMetrics parser: one JSON object per family.
fn parse_openmetrics(body: &str) -> Vec<Value> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type,
                "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]})
print(json.dumps(out))
"#;
    let python = ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|py| {
            Command::new(py)
                .args(["-c", "import prometheus_client.openmetrics.parser"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("python3 with prometheus_client: run scripts/install-test-deps.sh");
    let mut child = Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), body.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser output")
}

fn family<'a>(families: &'a [Value], name: &str) -> &'a Value {
    families
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {families:#?}"))
}

fn single_value(families: &[Value], name: &str) -> f64 {
    family(families, name)["samples"][0]["value"]
        .as_f64()
        .expect("value")
}

#[tokio::test]
async fn metrics_parse_as_openmetrics_with_build_info_and_process_metrics() {
    let (_dir, _emu, server) = setup(&[]);
    let client = server.client();
    server
        .review(&client, "authentication.k8s.io/v1", &alice())
        .await;
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("{}/metrics", server.health))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let body = resp.text().await.expect("body");
    assert!(body.ends_with("# EOF\n"), "{body}");
    let families = parse_openmetrics(&body);

    let build = family(&families, "ack_ram_authenticator_build_info");
    assert_eq!(build["type"], "gauge");
    let sample = &build["samples"][0];
    assert_eq!(sample["value"], 1.0);
    assert_eq!(sample["labels"]["version"], env!("CARGO_PKG_VERSION"));
    for label in ["commit", "rustc"] {
        assert!(
            sample["labels"][label]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "{sample}"
        );
    }
    let latency = family(
        &families,
        "ack_ram_authenticator_authenticate_latency_seconds",
    );
    assert!(latency["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .any(|s| {
            s["name"] == "ack_ram_authenticator_authenticate_latency_seconds_count"
                && s["labels"]["result"] == "success"
                && s["value"] == 1.0
        }));

    let cpu = family(&families, "process_cpu_seconds");
    assert_eq!(cpu["type"], "counter");
    assert_eq!(cpu["samples"][0]["name"], "process_cpu_seconds_total");
    let cpu = cpu["samples"][0]["value"].as_f64().expect("cpu");
    assert!((0.0..600.0).contains(&cpu), "cpu seconds {cpu}");
    let rss = single_value(&families, "process_resident_memory_bytes");
    let vsz = single_value(&families, "process_virtual_memory_bytes");
    assert!(rss > 1e6 && vsz >= rss, "rss {rss} vsz {vsz}");
    let open = single_value(&families, "process_open_fds");
    let max = single_value(&families, "process_max_fds");
    assert!(open >= 3.0 && open <= max, "open {open} max {max}");
    let start = single_value(&families, "process_start_time_seconds");
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        start > now - 120.0 && start <= now + 1.0,
        "start {start}, now {now}"
    );
}

/// Runs the binary with stderr piped, as a script or kubectl would; returns (status, stderr).
fn run_piped(args: &[&str], home: &Path, envs: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("HOME", home)
        .env("TERM", "xterm-256color")
        .env("RUST_LOG", "debug")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_ID")
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const AK_ENV: [(&str, &str); 2] = [
    ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI5tAlice"),
    ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "AliceSecret"),
];

#[test]
fn no_colour_codes_in_piped_stderr_of_any_command() {
    let home = tempfile::tempdir().expect("tempdir");
    type Case<'a> = (Vec<&'a str>, &'a [(&'a str, &'a str)]);
    let cases: Vec<Case> = vec![
        (vec!["token", "-i", CLUSTER], &AK_ENV),
        (vec!["token", "-i", CLUSTER], &[]),
        (vec!["verify", "--token", "k8s-ack-v2.e30="], &[]),
        (vec!["init"], &[]),
        (vec!["check-config", "-c", "/nonexistent/config.yaml"], &[]),
        (vec!["kubeconfig", "--cluster-id", CLUSTER], &[]),
        (vec!["version", "-o", "xml"], &[]),
        (vec!["crd", "extra"], &[]),
        (vec!["server", "--no-such-flag"], &[]),
        (vec!["nonsense"], &[]),
    ];
    for (args, envs) in cases {
        let (_, stderr) = run_piped(&args, home.path(), envs);
        assert!(!stderr.is_empty(), "{args:?} wrote nothing to stderr");
        assert!(
            !stderr.contains('\x1b'),
            "{args:?}: ANSI codes in piped stderr: {stderr:?}"
        );
    }
    // The server and the emulator: see the audit-line test, which checks both logs.
}

/// Runs the binary on a pseudo-terminal (util-linux `script`); returns what the terminal got.
fn run_on_terminal(args: &str, no_color: Option<&str>) -> String {
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &format!("'{BIN}' {args}"), "/dev/null"])
        .env("HOME", home.path())
        .env("TERM", "xterm-256color")
        .env("RUST_LOG", "debug")
        .env_remove("NO_COLOR")
        .envs(AK_ENV)
        .stdin(Stdio::null());
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = cmd.output().expect("util-linux script");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let args = format!("token -i {CLUSTER}");
    let coloured = run_on_terminal(&args, None);
    assert!(coloured.contains("credentials found"), "{coloured:?}");
    assert!(
        coloured.contains('\x1b'),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = run_on_terminal(&args, Some("1"));
    assert!(plain.contains("credentials found"), "{plain:?}");
    assert!(
        !plain.contains('\x1b'),
        "colour despite NO_COLOR: {plain:?}"
    );
}

#[test]
fn version_prints_each_format() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().expect("version");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(run(&["version", "--short"]), format!("{version}\n"));
    assert_eq!(run(&["version", "-s"]), format!("{version}\n"));
    assert_eq!(
        run(&["version", "-s", "-o", "json"]),
        format!("\"{version}\"\n")
    );

    let text = run(&["version"]);
    assert!(
        text.starts_with(&format!("ram-authenticator {version}\n")),
        "{text}"
    );
    for key in ["commit: ", "built: ", "rustc: "] {
        assert!(text.contains(key), "{key} missing: {text}");
    }

    let json: Value = serde_json::from_str(&run(&["version", "-o", "json"])).expect("json");
    let yaml: Value = serde_yaml::from_str(&run(&["version", "--output", "yaml"])).expect("yaml");
    assert_eq!(json, yaml);
    assert_eq!(json["version"], version);
    let date = json["buildDate"].as_str().expect("buildDate");
    assert!(chrono::DateTime::parse_from_rfc3339(date).is_ok(), "{date}");
    let commit = json["gitCommit"].as_str().expect("gitCommit");
    assert!(
        commit == "unknown"
            || (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit}"
    );
    assert!(
        json["rustc"]
            .as_str()
            .is_some_and(|r| r.starts_with(char::is_numeric)),
        "{json}"
    );
    // The text form says the same.
    assert!(text.contains(&format!("commit: {commit}\n")), "{text}");

    let (code, stderr) = run_piped(&["version", "-o", "xml"], Path::new("/"), &[]);
    assert_eq!(code, 2, "{stderr}");
}

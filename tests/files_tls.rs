//! Files and TLS, black-box: keys never written through planted symlinks, a state directory
//! others can write refused, `init`'s next steps and its cluster ID check, mutual TLS with the
//! kubeconfig `init --client-cert` writes, and reloads of the certificate, the client CA and the
//! config file that refuse bad content once per content.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use ram_authenticator::server::init::ClientCa;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ram-authenticator"))
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn init(state: &Path, kubeconfig: &Path, port: u16, extra: &[&str]) -> std::process::Output {
    bin()
        .args(["init", "--cluster-id", CLUSTER, "--port", &port.to_string()])
        .arg("--state-dir")
        .arg(state)
        .arg("--generate-kubeconfig")
        .arg(kubeconfig)
        .args(extra)
        .output()
        .expect("init")
}

/// A client built from a webhook kubeconfig exactly as written: CA, server URL and, when
/// present, the client certificate and key.
fn client_from_kubeconfig(path: &Path) -> (reqwest::Client, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (ca, url) = read_kubeconfig(path);
    let v: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("read")).expect("yaml");
    let user = &v["users"][0]["user"];
    let mut builder = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).expect("ca"))
        .no_proxy();
    if let (Some(cert), Some(key)) = (
        user["client-certificate-data"].as_str(),
        user["client-key-data"].as_str(),
    ) {
        let b64 = |s: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("base64")
        };
        let mut pem = b64(cert);
        pem.extend(b64(key));
        builder = builder.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
    }
    (builder.build().expect("client"), url)
}

fn client_with(ca: &[u8], identity: Option<(&str, &str)>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca).expect("ca"))
        .no_proxy();
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).expect("id"));
    }
    b.build().expect("client")
}

async fn metrics(server: &Server) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("{}/metrics", server.health))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Polls `/metrics` (up to 10 s) until `series` has the value `want`.
async fn wait_metric(server: &Server, series: &str, want: f64) {
    let mut last = String::new();
    for _ in 0..100 {
        last = metrics(server).await;
        if metric(&last, series) == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{series} never reached {want}:\n{last}");
}

/// How many times the server logged `needle`, once it has at least `at_least` times (waiting up
/// to 10 s); the count must then stay the same over ten more polls (200 ms apart).
async fn settled_count(server: &Server, needle: &str, at_least: usize) -> usize {
    assert!(
        eventually(Duration::from_secs(10), || server
            .proc
            .stderr()
            .matches(needle)
            .count()
            >= at_least)
        .await,
        "{needle:?} not logged {at_least} times: {}",
        server.proc.stderr()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let count = server.proc.stderr().matches(needle).count();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        server.proc.stderr().matches(needle).count(),
        count,
        "{needle:?} repeated"
    );
    count
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn init_never_writes_a_key_through_a_planted_symlink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let loot = dir.path().join("loot");
    std::fs::create_dir(&loot).expect("loot");
    let kubeconfig = state.join("webhook.kubeconfig");
    // Dangling links at every final name, and at the temporary names an older version used
    // (`.<name>.tmp-<pid>`) for the next few hundred process IDs.
    let mut planted: Vec<(PathBuf, PathBuf)> = Vec::new();
    let names = [
        "key.pem",
        "cert.pem",
        "webhook.kubeconfig",
        "client-ca-key.pem",
        "apiserver-client-key.pem",
    ];
    for name in names {
        planted.push((state.join(name), loot.join(name)));
    }
    let me = std::process::id();
    for pid in me..me + 300 {
        for name in names {
            planted.push((
                state.join(format!(".{name}.tmp-{pid}")),
                loot.join(format!("{name}.{pid}")),
            ));
        }
    }
    for (link, target) in &planted {
        std::os::unix::fs::symlink(target, link).expect("symlink");
    }
    let out = init(&state, &kubeconfig, 21362, &["--client-cert"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_dir(&loot).expect("ls").count(),
        0,
        "something was written through a planted link"
    );
    for name in [
        "key.pem",
        "client-ca-key.pem",
        "apiserver-client-key.pem",
        "webhook.kubeconfig",
    ] {
        let p = state.join(name);
        let meta = std::fs::symlink_metadata(&p).expect("meta");
        assert!(meta.file_type().is_file(), "{name} is a regular file");
        assert_eq!(mode(&p), 0o600, "{name}");
    }
    assert_eq!(mode(&state.join("cert.pem")), 0o644);
    // No temporary file is left behind; the planted temp-name links are untouched.
    for entry in std::fs::read_dir(&state).expect("ls") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            assert!(
                entry.file_type().expect("type").is_symlink(),
                "left behind: {name}"
            );
        }
    }

    // A link to an existing file where the key goes: init refuses the half pair and the
    // file the link points to is unchanged.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let state2 = dir2.path().join("state");
    std::fs::create_dir(&state2).expect("mkdir");
    let victim = dir2.path().join("victim");
    std::fs::write(&victim, "precious").expect("victim");
    std::os::unix::fs::symlink(&victim, state2.join("key.pem")).expect("symlink");
    let out = init(&state2, &state2.join("k"), 21362, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite half a pair"));
    assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
}

#[test]
fn a_state_directory_others_can_write_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    for (m, who) in [
        (0o777, "every user"),
        (0o1777, "every user"),
        (0o775, "its group"),
    ] {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(m)).expect("chmod");
        let out = init(&state, &dir.path().join("k"), 21362, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&format!("can be written by {who}")), "{err}");
        assert!(!state.join("key.pem").exists());
        let out = bin()
            .args(["server", "--cluster-id", CLUSTER, "--port", "0"])
            .args([
                "--health-address",
                "127.0.0.1:0",
                "--kubeconfig-pregenerated",
            ])
            .arg("--state-dir")
            .arg(&state)
            .output()
            .expect("server");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("chmod go-w"), "{err}");
    }
    // A new state directory is created private.
    let fresh = dir.path().join("fresh/state");
    let out = init(&fresh, &dir.path().join("k"), 21362, &[]);
    assert!(out.status.success());
    assert_eq!(mode(&fresh), 0o700);
}

#[test]
fn init_refuses_an_empty_cluster_id_and_prints_next_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    for id in ["", "   "] {
        let out = bin()
            .args(["init", "-i", id, "--state-dir"])
            .arg(dir.path().join("s"))
            .output()
            .expect("init");
        assert_eq!(out.status.code(), Some(2), "{id:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cluster ID is empty"), "{stderr}");
        assert!(!dir.path().join("s").exists());
    }
    let kubeconfig = dir.path().join("out/kubeconfig.yaml");
    let out = init(&dir.path().join("s"), &kubeconfig, 21999, &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Next steps",
        &format!(
            "--authentication-token-webhook-config-file={}",
            kubeconfig.display()
        ),
        "--authentication-token-webhook-version=v1",
        "--authentication-token-webhook-cache-ttl=",
        "--port 21999",
        "configure-apiserver.sh",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(!text.contains("Mutual TLS"), "{text}");
    assert_eq!(mode(&kubeconfig), 0o644);
}

#[tokio::test]
async fn mutual_tls_with_the_kubeconfig_init_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let kubeconfig = dir.path().join("init.kubeconfig");
    let port = free_port();
    let out = init(&state, &kubeconfig, port, &["--client-cert"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Mutual TLS is on"), "{stdout}");
    assert_eq!(mode(&kubeconfig), 0o600, "the kubeconfig holds a key");

    let emu = Emulator::start(dir.path(), &[]);
    // One flag turned it on: the server finds the client CA in the state directory.
    let server = Server::start(
        dir.path(),
        &emu.url,
        &["--kubeconfig-pregenerated", "--port", &port.to_string()],
    );
    assert!(
        eventually(Duration::from_secs(5), || server
            .proc
            .stderr()
            .contains("mutual TLS"))
        .await,
        "{}",
        server.proc.stderr()
    );
    let (client, url) = client_from_kubeconfig(&kubeconfig);
    let token = v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER);
    let v = post_review(&client, &url, "authentication.k8s.io/v1", &token).await;
    assert_eq!(v["status"]["user"]["username"], "alice", "{v}");

    // Without a certificate, or with one from another CA, the handshake fails.
    let (ca, _) = read_kubeconfig(&kubeconfig);
    let stranger = ClientCa::generate().expect("ca");
    let foreign = stranger.issue("kube-apiserver").expect("issue");
    for (what, c) in [
        ("no certificate", client_with(&ca, None)),
        (
            "another CA",
            client_with(&ca, Some((&foreign.cert_pem, &foreign.key_pem))),
        ),
    ] {
        let body = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
        let r = c.post(&url).json(&body).send().await;
        assert!(r.is_err(), "{what}: {r:?}");
    }
    // A bare TLS handshake without a certificate is refused by the server.
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let refused = match connector.connect(name, tcp).await {
        Err(_) => true,
        Ok(mut tls) => {
            // TLS 1.3: the client finishes first; the server's alert arrives on the first read.
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let _ = tls
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await;
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
                Ok(Err(e)) => {
                    e.to_string().contains("CertificateRequired")
                        || e.to_string().contains("certificate")
                }
                Ok(Ok(0)) => true,
                _ => false,
            }
        }
    };
    assert!(refused, "a client without a certificate got through");
}

#[tokio::test]
async fn server_writes_the_client_certificate_into_its_kubeconfig() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let out = init(
        &state,
        &dir.path().join("unused"),
        21362,
        &["--client-cert"],
    );
    assert!(out.status.success());
    let emu = Emulator::start(dir.path(), &[]);
    let server = Server::start(dir.path(), &emu.url, &[]);
    assert_eq!(mode(&server.kubeconfig), 0o600);
    let (client, url) = client_from_kubeconfig(&server.kubeconfig);
    let token = v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER);
    let v = post_review(&client, &url, "authentication.k8s.io/v1", &token).await;
    assert_eq!(v["status"]["user"]["username"], "alice", "{v}");
}

#[tokio::test]
async fn client_ca_file_is_reloaded_and_a_bad_one_reported_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_a = ClientCa::generate().expect("ca");
    let ca_b = ClientCa::generate().expect("ca");
    let (a, b) = (ca_a.issue("a").expect("a"), ca_b.issue("b").expect("b"));
    let ca_file = dir.path().join("clients.pem");
    // Replaced atomically, as a Secret volume or `install` + `mv` does.
    ram_authenticator::files::write_atomic(&ca_file, ca_a.cert_pem.as_bytes(), 0o644)
        .expect("write");
    let emu = Emulator::start(dir.path(), &[]);
    let server = Server::start(
        dir.path(),
        &emu.url,
        &["--client-ca-file", ca_file.to_str().expect("utf8")],
    );
    let (ca, _) = read_kubeconfig(&server.kubeconfig);
    // The state directory has no client certificate from this CA: the kubeconfig gets none,
    // and the server says so.
    let written = std::fs::read_to_string(&server.kubeconfig).expect("kubeconfig");
    assert!(!written.contains("client-key-data"), "{written}");
    assert!(
        eventually(Duration::from_secs(5), || server
            .proc
            .stderr()
            .contains("no client certificate for kube-apiserver"))
        .await
    );
    let health = server.url.replace("/authenticate", "/healthz");
    let works = |id: &(String, String)| {
        let c = client_with(&ca, Some((&id.0, &id.1)));
        let health = health.clone();
        async move { c.get(&health).send().await.is_ok() }
    };
    let a = (a.cert_pem, a.key_pem);
    let b = (b.cert_pem, b.key_pem);
    assert!(works(&a).await);
    assert!(!works(&b).await);

    ram_authenticator::files::write_atomic(&ca_file, ca_b.cert_pem.as_bytes(), 0o644)
        .expect("write");
    let mut switched = false;
    for _ in 0..100 {
        if works(&b).await && !works(&a).await {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "the new client CA was not picked up");

    // Caught half-written (empty for 50 ms, under one poll): not tried, so not reported.
    for _ in 0..8 {
        std::fs::write(&ca_file, "").expect("truncate");
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::write(&ca_file, &ca_b.cert_pem).expect("write");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    wait_metric(
        &server,
        "ack_ram_authenticator_file_errors_total{file=\"client_ca\"}",
        0.0,
    )
    .await;
    assert!(works(&b).await);
    ram_authenticator::files::write_atomic(&ca_file, b"not a certificate", 0o644).expect("write");
    assert_eq!(
        settled_count(&server, "client_ca file change refused", 1).await,
        1
    );
    assert!(works(&b).await, "a bad CA file keeps the current CA");
    wait_metric(
        &server,
        "ack_ram_authenticator_file_errors_total{file=\"client_ca\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn certificate_reload_refuses_a_world_readable_key_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = Emulator::start(dir.path(), &[]);
    let server = Server::start(dir.path(), &emu.url, &[]);
    let m = metrics(&server).await;
    for f in ["certificate", "key", "config", "client_ca"] {
        assert_eq!(
            metric(
                &m,
                &format!("ack_ram_authenticator_file_errors_total{{file=\"{f}\"}}")
            ),
            Some(0.0),
            "{f} starts at 0: {m}"
        );
    }
    let client = server.client();
    let health = server.url.replace("/authenticate", "/healthz");
    // The key becomes readable by every user: refused as at start-up (a new key with such a
    // mode is covered by the unit test beside the resolver), once however many polls see it.
    let key_path = server.state_dir.join("key.pem");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(
        settled_count(&server, "key file change refused", 1).await,
        1
    );
    assert!(server.proc.stderr().contains("readable by every user"));
    wait_metric(
        &server,
        "ack_ram_authenticator_file_errors_total{file=\"key\"}",
        1.0,
    )
    .await;
    assert!(client.get(&health).send().await.is_ok(), "still serving");
    // Fixed: the recovery is logged once.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(settled_count(&server, "file is usable again", 1).await, 1);
    assert!(client.get(&health).send().await.is_ok(), "still serving");
}

#[tokio::test]
async fn config_reload_keeps_mappings_on_empty_or_truncated_files_and_names_restart_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = Emulator::start(dir.path(), &[]);
    let server = Server::start(dir.path(), &emu.url, &[]);
    let client = server.client();
    let token = v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER);
    let alice = |v: &serde_json::Value| v["status"]["user"]["username"] == "alice";
    assert!(alice(
        &server
            .review(&client, "authentication.k8s.io/v1", &token)
            .await
    ));

    // Truncated to nothing, then to its first lines: mappings kept, each reported once.
    for (n, text) in ["", "\nclusterID: c1234567890abcdef\nserver:\n"]
        .iter()
        .enumerate()
    {
        std::fs::write(&server.config, text).expect("truncate");
        let count = (n + 1) as f64;
        wait_metric(
            &server,
            "ack_ram_authenticator_file_errors_total{file=\"config\"}",
            count,
        )
        .await;
        wait_metric(
            &server,
            "ack_ram_authenticator_mapping_reload_errors_total{source=\"MountedFile\"}",
            count,
        )
        .await;
        assert!(
            alice(
                &server
                    .review(&client, "authentication.k8s.io/v1", &token)
                    .await
            ),
            "mappings lost after {text:?}"
        );
    }
    let ready = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("c")
        .get(format!("{}/readyz", server.health))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    assert_eq!(
        settled_count(&server, "config file change refused", 2).await,
        2
    );
    assert!(!server.proc.stderr().contains("mappings reloaded"));

    // A restart-only setting changes with a mapping: the mapping applies, the setting is
    // named once and not applied.
    let edited = CONFIG_YAML
        .replace("clusterID: c1234567890abcdef", "clusterID: another-cluster")
        .replace("username: alice", "username: alice2");
    std::fs::write(&server.config, &edited).expect("edit");
    let mut applied = false;
    for _ in 0..100 {
        let v = server
            .review(&client, "authentication.k8s.io/v1", &token)
            .await;
        if v["status"]["user"]["username"] == "alice2" {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        applied,
        "the mapping change was applied, with the old cluster ID still in use"
    );
    assert_eq!(settled_count(&server, "apply only at start-up", 1).await, 1);
    let stderr = server.proc.stderr();
    assert!(
        stderr.contains("settings=clusterid") || stderr.contains("settings=\"clusterid"),
        "{stderr}"
    );
}

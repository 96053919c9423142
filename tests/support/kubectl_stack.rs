//! Real `kubectl` against a stand-in kube-apiserver that authenticates every request through
//! the webhook (`ram-authenticator server` with the STS emulator behind it):
//!
//! kubectl ──exec──► the credential plugin ──► bearer token
//! kubectl ──HTTPS──► stand-in kube-apiserver (this file) ──TokenReview──► `ram-authenticator server`
//!                                                                  ──GetCallerIdentity──► `sts-emulator`
//!
//! The stand-in answers `kubectl auth whoami` (SelfSubjectReview) and a raw GET with the user the
//! webhook authenticated, or 401 when it did not. kubectl must be installed
//! (`scripts/install-test-deps.sh`); `KUBECTL` may name it.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_ram-authenticator");
pub const EMULATOR: &str = env!("CARGO_BIN_EXE_sts-emulator");
pub const CLUSTER: &str = "c-kubectl-test";
pub const ALICE_ID: &str = "LTAI5tQuickstartAlice";
pub const ALICE_SECRET: &str = "QuickstartAliceSecret0000000000";
pub const ADMIN_ROLE: &str = "acs:ram::1234567890123456:role/KubeAdmin";

pub const CONFIG: &str = r#"
clusterID: c-kubectl-test
server:
  mapUsers:
    - userARN: acs:ram::1234567890123456:user/alice
      username: alice
      groups: [developers, "ram:authenticated"]
  mapRoles:
    - roleARN: acs:ram::1234567890123456:role/KubeAdmin
      username: "admin:{{SessionName}}"
      groups: [cluster-admins]
"#;

/// Child processes are killed when dropped.
pub struct Proc {
    pub child: Child,
    pub stderr: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Spawns `cmd` and waits for one stdout line per prefix in `wanted` (in order); returns
    /// the rest of each line.
    pub fn spawn(mut cmd: Command, dir: &Path, name: &str, wanted: &[&str]) -> (Self, Vec<String>) {
        let stderr = dir.join(format!("{name}.stderr"));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let proc = Self { child, stderr };
        let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        let n = wanted.len();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut found = 0;
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if found < wanted.len() {
                    if let Some(rest) = line.trim().strip_prefix(wanted[found].as_str()) {
                        let _ = tx.send(rest.trim().to_string());
                        found += 1;
                    }
                }
                line.clear();
            }
        });
        let mut values = Vec::new();
        for _ in 0..n {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(v) => values.push(v),
                Err(_) => panic!(
                    "{name} did not start: {}",
                    std::fs::read_to_string(&proc.stderr).unwrap_or_default()
                ),
            }
        }
        (proc, values)
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// kubectl: `$KUBECTL`, else `kubectl` on PATH. Missing is a failure, not a skip.
pub fn kubectl() -> PathBuf {
    if let Some(k) = std::env::var_os("KUBECTL").filter(|k| !k.is_empty()) {
        return PathBuf::from(k);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl is not installed: run scripts/install-test-deps.sh (or set KUBECTL)")
}

/// What the stand-in API server needs: where the webhook is and whom to trust.
pub struct Upstream {
    webhook_url: String,
    client: reqwest::Client,
    seen: Mutex<Vec<String>>,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("response")
}

/// Every request: authenticate the bearer token through the webhook, then answer.
async fn handle(State(up): State<Arc<Upstream>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    up.seen
        .lock()
        .expect("lock")
        .push(format!("{method} {path}"));
    if method == "GET" && path == "/version" {
        // Public on a real API server; the kubectl of some distributions asks for it first.
        return json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0", "platform": "linux/amd64"}),
        );
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let Some(token) = token else {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    };
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                        "spec": {"token": token}});
    let answer: Value = match up.client.post(&up.webhook_url).json(&review).send().await {
        Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
        Ok(r) => {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("webhook answered {}", r.status()),
            )
        }
        Err(e) => {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("webhook unreachable: {e}"),
            )
        }
    };
    if answer["status"]["authenticated"] != true {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let user = answer["status"]["user"].clone();
    match (method.as_str(), path.as_str()) {
        ("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews") => json_response(
            StatusCode::CREATED,
            &json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                    "metadata": {"creationTimestamp": null}, "status": {"userInfo": user}}),
        ),
        ("GET", "/api/v1/namespaces/default/pods") => json_response(
            StatusCode::OK,
            &json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                    "items": [{"metadata": {"name": user["username"], "namespace": "default",
                                            "annotations": {"userinfo": user.to_string()}}}]}),
        ),
        ("GET", "/api") => json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        ("GET", "/apis") => json_response(
            StatusCode::OK,
            &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": "authentication.k8s.io",
                 "versions": [{"groupVersion": "authentication.k8s.io/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": "authentication.k8s.io/v1", "version": "v1"}}]}),
        ),
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

/// The stand-in kube-apiserver: HTTPS on 127.0.0.1 with a fresh self-signed certificate.
pub struct ApiServer {
    pub addr: SocketAddr,
    pub ca_pem: String,
    upstream: Arc<Upstream>,
    _runtime: tokio::runtime::Runtime,
}

impl ApiServer {
    pub fn start(webhook_kubeconfig: &Path) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(webhook_kubeconfig).expect("kubeconfig"))
                .expect("yaml");
        let cluster = &kc["clusters"][0]["cluster"];
        let webhook_url = cluster["server"].as_str().expect("server").to_string();
        let webhook_ca = base64::engine::general_purpose::STANDARD
            .decode(cluster["certificate-authority-data"].as_str().expect("ca"))
            .expect("base64");
        let webhook_port = webhook_url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|p| p.parse::<u16>().ok())
            .expect("webhook port");
        let client = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&webhook_ca).expect("webhook CA"))
            // The kubeconfig names localhost; the webhook listens on IPv4 loopback.
            .resolve(
                "localhost",
                SocketAddr::from(([127, 0, 0, 1], webhook_port)),
            )
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let upstream = Arc::new(Upstream {
            webhook_url,
            client,
            seen: Mutex::new(Vec::new()),
        });

        let cert = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .expect("cert");
        let ca_pem = cert.cert.pem();
        let server_config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
            )
            .expect("tls config");
        let mut server_config = server_config;
        server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(upstream.clone());
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Self {
            addr,
            ca_pem,
            upstream,
            _runtime: runtime,
        }
    }

    pub fn seen(&self) -> Vec<String> {
        self.upstream.seen.lock().expect("lock").clone()
    }
}

/// Everything running: emulator, webhook server, stand-in API server.
pub struct Stack {
    dir: tempfile::TempDir,
    pub emulator_url: String,
    pub api: ApiServer,
    _server: Proc,
    _emulator: Proc,
}

impl Stack {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/emulator-keys.yaml");
        let mut cmd = Command::new(EMULATOR);
        cmd.args(["--listen", "127.0.0.1:0", "--keys"]).arg(keys);
        let (emulator, found) = Proc::spawn(cmd, dir.path(), "emulator", &["listening on"]);
        let emulator_url = found[0].clone();

        let config = dir.path().join("config.yaml");
        std::fs::write(&config, CONFIG).expect("config");
        let webhook_kubeconfig = dir.path().join("webhook.kubeconfig");
        let mut cmd = Command::new(BIN);
        cmd.arg("server")
            .arg("--config")
            .arg(&config)
            .args([
                "--cluster-id",
                CLUSTER,
                "--address",
                "127.0.0.1",
                "--port",
                "0",
            ])
            .args([
                "--health-address",
                "127.0.0.1:0",
                "--sts-endpoint",
                &emulator_url,
            ])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--generate-kubeconfig")
            .arg(&webhook_kubeconfig);
        let (server, _) = Proc::spawn(cmd, dir.path(), "server", &["serving", "health"]);
        let api = ApiServer::start(&webhook_kubeconfig);
        Self {
            dir,
            emulator_url,
            api,
            _server: server,
            _emulator: emulator,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a kubeconfig from `ram-authenticator kubeconfig` for `cluster_id`.
    pub fn kubeconfig(&self, name: &str, cluster_id: &str, extra: &[&str]) -> PathBuf {
        let ca = self.path().join("apiserver-ca.pem");
        std::fs::write(&ca, &self.api.ca_pem).expect("ca");
        let out = Command::new(BIN)
            .args(["kubeconfig", "--cluster-id", cluster_id, "--name", name])
            .arg("--absolute-path")
            .arg("--server")
            .arg(format!("https://127.0.0.1:{}", self.api.addr.port()))
            .arg("--ca-file")
            .arg(&ca)
            .args(extra)
            .output()
            .expect("kubeconfig");
        assert!(out.status.success(), "kubeconfig: {}", text(&out.stderr));
        let path = self.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&path, &out.stdout).expect("write kubeconfig");
        path
    }

    /// Runs kubectl with `kubeconfig`, Alice's keys in the environment and a private HOME.
    pub fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        self.kubectl_with_path(kubeconfig, args, None)
    }

    /// Like [`Stack::kubectl`], with `first` put in front of PATH (where kubectl finds the
    /// plugin's command).
    pub fn kubectl_with_path(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        first: Option<&Path>,
    ) -> Output {
        let home = self.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let mut path: Vec<PathBuf> = first.map(Path::to_path_buf).into_iter().collect();
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        Command::new(kubectl())
            .env_clear()
            .env("PATH", std::env::join_paths(path).expect("PATH"))
            .env("HOME", &home)
            .env("USER", "kubectl-tester")
            .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", ALICE_ID)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ALICE_SECRET)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }
}

pub fn supports_auth_whoami() -> bool {
    // Older kubectls print `auth`'s help for `auth whoami --help`: look for the subcommand.
    Command::new(kubectl())
        .args(["auth", "--help"])
        .output()
        .map(|o| text(&o.stdout).contains("whoami"))
        .unwrap_or(false)
}

//! The alert rules and the Grafana dashboard (deploy/monitoring/) against a real Prometheus.
//!
//! Starts the webhook (the real binary) with all three mapping sources (MountedFile, and
//! ACKConfigMap and CRD from the fake API server), drives reviews of every result through the STS
//! emulator (throttling and server errors included), a refused config edit, a refused ConfigMap
//! and an API server outage, so that labelled families have series. Then the Prometheus server
//! from the `prometheus` package (installed by scripts/install-test-deps.sh; `$PROMETHEUS`
//! overrides the binary) scrapes it on 127.0.0.1 every 200 ms, with the rules file loaded, and
//! the test asks Prometheus' HTTP API for:
//! - every metric name used by a rule or a dashboard query: each must have been scraped, so a
//!   renamed metric fails here, not in an operator's pager;
//! - every dashboard query, evaluated: none may be refused;
//! - the rule groups: every rule loaded and evaluated without error.

mod common;
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_apiserver::FakeApiServer;

const JOB: &str = "ram-authenticator";
const RULES: &str = "deploy/monitoring/ram-authenticator.rules.yaml";
const DASHBOARD: &str = "deploy/monitoring/grafana-dashboard.json";
/// How long Prometheus may take to show what the webhook exports.
const SCRAPE_BOUND: Duration = Duration::from_secs(15);

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Metric names in a PromQL expression: ours, the process collector's, and `up`.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            // Label values (inside quotes) are not names; label names never have our prefixes.
            let word = &expr[start..i];
            let quoted = expr[..start].matches('"').count() % 2 == 1;
            if !quoted
                && (word.starts_with("ack_ram_authenticator_")
                    || word.starts_with("process_")
                    || word == "up")
            {
                into.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
}

/// Every `expr` of the rules file.
fn rule_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo(RULES)).expect("rules file");
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("rules YAML");
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("alert or record name");
            out.push((
                name.to_string(),
                rule["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    assert!(!out.is_empty(), "no rules in {RULES}");
    out
}

/// Every query of the dashboard, with the panel's title.
fn dashboard_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo(DASHBOARD)).expect("dashboard file");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut out = Vec::new();
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push((
                    title.clone(),
                    target["expr"].as_str().expect("expr").to_string(),
                ));
            }
            walk(panel["panels"].as_array().map_or(&[], |v| v), out);
        }
    }
    walk(dashboard["panels"].as_array().expect("panels"), &mut out);
    assert!(!out.is_empty(), "no queries in {DASHBOARD}");
    out
}

/// A dashboard query with Grafana's variables replaced, as Prometheus can run it.
fn instantiate(expr: &str) -> String {
    expr.replace("$__rate_interval", "5s")
        .replace("$instance", ".*")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The Prometheus server binary; fails (never skips) when it is not installed.
fn prometheus_binary() -> String {
    let bin = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
    let ok = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Prometheus server `{bin}` does not run: install it with scripts/install-test-deps.sh \
         (Debian package `prometheus`) or point $PROMETHEUS at it"
    );
    bin
}

struct Prometheus {
    proc: common::Proc,
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Self {
        let bin = prometheus_binary();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\n  evaluation_interval: 200ms\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: ['{target}']\n",
                rules = repo(RULES).display(),
            ),
        )
        .expect("prometheus.yml");
        let port = free_port();
        let stderr_path = dir.join("prometheus.stderr");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("start prometheus");
        Self {
            proc: common::Proc { child, stderr_path },
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
        }
    }

    fn log(&self) -> String {
        self.proc.stderr()
    }

    /// GET an API path with query parameters; the `data` of a successful answer.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.url), params)
            .map_err(|e| e.to_string())?;
        let resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    async fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            let ready = self
                .http
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "prometheus did not become ready: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The metric names scraped from the webhook so far.
    async fn scraped_names(&self) -> BTreeSet<String> {
        let selector = format!("{{job=\"{JOB}\"}}");
        match self
            .api("/api/v1/label/__name__/values", &[("match[]", &selector)])
            .await
        {
            Ok(names) => names
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect(),
            Err(_) => BTreeSet::new(),
        }
    }
}

/// Sends a TokenReview and returns the result's `status.error` (or "authenticated").
async fn review(server: &common::Server, client: &reqwest::Client, token: &str) -> String {
    let v = server
        .review(client, "authentication.k8s.io/v1", token)
        .await;
    if v["status"]["authenticated"] == true {
        "authenticated".into()
    } else {
        v["status"]["error"].as_str().unwrap_or("?").to_string()
    }
}

fn fresh_v1(akid: &str, secret: &str) -> String {
    common::v1_token(akid, secret, None, common::CLUSTER)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_rules_and_the_dashboard_is_scraped_by_a_real_prometheus() {
    support::init();
    // Fail at once, before anything starts, when there is no Prometheus.
    prometheus_binary();

    let api = FakeApiServer::start().await;
    api.put_mapping(
        "bob",
        "acs:ram::1234567890123456:user/bob",
        "bob-from-crd",
        &[],
    );
    api.put_configmap(
        "alibabacloud-auth",
        &[(
            "mapUsers",
            "- userarn: acs:ram::1234567890123456:user/frank\n  username: frank\n",
        )],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = api.write_kubeconfig(dir.path());
    let path = dir.path().to_path_buf();
    let (emu, server) = tokio::task::spawn_blocking(move || {
        common::start_with_kubeconfig(
            &path,
            &kubeconfig,
            &[
                "--backend-mode",
                "MountedFile,ACKConfigMap,CRD",
                // Short STS deadlines, so the faults below answer quickly.
                "--sts-timeout-ms",
                "500",
                "--sts-deadline-ms",
                "1500",
            ],
        )
    })
    .await
    .expect("start");

    let target = server
        .health
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let prometheus = Prometheus::start(dir.path(), &target);
    prometheus.wait_ready().await;

    // Reviews of every result.
    let client = server.client();
    let alice = common::v2_token("LTAI5tAlice", "AliceSecret", None, common::CLUSTER);
    assert_eq!(review(&server, &client, &alice).await, "authenticated");
    // Again: from the identity cache.
    assert_eq!(review(&server, &client, &alice).await, "authenticated");
    let dave = fresh_v1("LTAI5tDave", "DaveSecret");
    assert_ne!(review(&server, &client, &dave).await, "authenticated");
    assert_ne!(
        review(&server, &client, "k8s-ack-v2.bm90IGEgdG9rZW4").await,
        "authenticated"
    );
    let malformed = client
        .post(&server.url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("malformed review");
    assert!(malformed.status().is_client_error() || malformed.status().is_success());
    emu.fault("throttle", 0);
    assert_ne!(
        review(&server, &client, &fresh_v1("LTAI5tAlice", "AliceSecret")).await,
        "authenticated"
    );
    emu.fault("error", 0);
    assert_ne!(
        review(&server, &client, &fresh_v1("LTAI5tAlice", "AliceSecret")).await,
        "authenticated"
    );
    emu.fault("none", 0);

    // Refused reloads: a broken config edit, a broken ConfigMap.
    std::fs::write(&server.config, "server: [").expect("break the config");
    api.put_configmap("alibabacloud-auth", &[("mapRoles", "- rolearn: [")]);
    // An API server outage: the watches fail, then resume.
    api.set_available(false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    api.set_available(true).await;

    // What the rules and the dashboard use.
    let mut wanted = BTreeSet::new();
    let rules = rule_exprs();
    let queries = dashboard_exprs();
    for (_, expr) in rules.iter().chain(queries.iter()) {
        metric_names(expr, &mut wanted);
    }
    assert!(
        wanted.contains("ack_ram_authenticator_authenticate_latency_seconds_bucket"),
        "the name extraction found nothing sensible: {wanted:?}"
    );

    // Wait until Prometheus has every name, or the bound passes.
    let start = Instant::now();
    let mut scraped;
    loop {
        scraped = prometheus.scraped_names().await;
        if wanted.is_subset(&scraped) || start.elapsed() > SCRAPE_BOUND {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        scraped.contains("up"),
        "Prometheus never scraped the webhook at {target}: {}",
        prometheus.log()
    );

    // Every dashboard query runs.
    let mut refused = Vec::new();
    for (title, expr) in &queries {
        if let Err(e) = prometheus
            .api("/api/v1/query", &[("query", &instantiate(expr))])
            .await
        {
            refused.push(format!("{title}: {e}\n    {expr}"));
        }
    }

    // Every rule loaded and evaluated without error.
    let mut broken_rules = Vec::new();
    let loaded = prometheus.api("/api/v1/rules", &[]).await.expect("rules");
    let mut loaded_names = BTreeSet::new();
    for group in loaded["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let name = rule["name"].as_str().unwrap_or("?").to_string();
            if rule["health"] == "err" {
                broken_rules.push(format!("{name}: {}", rule["lastError"]));
            }
            loaded_names.insert(name);
        }
    }
    let expected_rules: BTreeSet<String> = rules.iter().map(|(n, _)| n.clone()).collect();

    let missing: Vec<&String> = wanted.difference(&scraped).collect();
    let mut report = String::new();
    if !missing.is_empty() {
        report.push_str(&format!(
            "metric names used by {RULES} or {DASHBOARD} that the webhook does not export \
             (none scraped in {SCRAPE_BOUND:?}):\n"
        ));
        for name in &missing {
            let users: Vec<&str> = rules
                .iter()
                .chain(queries.iter())
                .filter(|(_, e)| {
                    let mut n = BTreeSet::new();
                    metric_names(e, &mut n);
                    n.contains(*name)
                })
                .map(|(who, _)| who.as_str())
                .collect();
            report.push_str(&format!(
                "  MISSING {name}  (used by: {})\n",
                users.join(", ")
            ));
        }
    }
    if !refused.is_empty() {
        report.push_str(&format!(
            "dashboard queries Prometheus refused:\n  {}\n",
            refused.join("\n  ")
        ));
    }
    if !broken_rules.is_empty() {
        report.push_str(&format!(
            "rules that failed to evaluate:\n  {}\n",
            broken_rules.join("\n  ")
        ));
    }
    if loaded_names != expected_rules {
        report.push_str(&format!(
            "Prometheus loaded the rules {loaded_names:?}, the file has {expected_rules:?}\n"
        ));
    }
    let log = server.proc.stderr();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    assert!(
        report.is_empty(),
        "{report}\nscraped names: {scraped:?}\nwebhook log (last lines):\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn metric_names_skip_label_values_and_functions() {
    let mut names = BTreeSet::new();
    metric_names(
        r#"sum by (job) (rate(ack_ram_authenticator_x_total{result="ack_ram_authenticator_not"}[5m])) / up > process_cpu_seconds_total"#,
        &mut names,
    );
    let want: BTreeSet<String> = [
        "ack_ram_authenticator_x_total",
        "up",
        "process_cpu_seconds_total",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, want);
}

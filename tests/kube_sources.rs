//! The Kubernetes mapping sources (kube-rs watches) against a fake API server speaking the
//! real list/watch protocol. Every change must reach `Source::index()` within `support::BOUND`
//! (2 s), checked every 20 ms.

mod common;
mod support;

use std::sync::Arc;
use std::time::Duration;

use ram_authenticator::arn::canonicalize;
use ram_authenticator::config::BackendMode;
use ram_authenticator::kube::{ConfigMapSource, CrdSource, WatchOptions};
use ram_authenticator::mapping::Source;
use ram_authenticator::metrics::Metrics;
use serde_json::json;

use support::fake_apiserver::{FakeApiServer, CONFIGMAPS_PATH, MAPPINGS_PATH};
use support::{eventually, BOUND};

const ACCOUNT: &str = "1234567890123456";

fn arn(rest: &str) -> String {
    format!("acs:ram::{ACCOUNT}:{rest}")
}

/// Short backoffs so that recoveries fit the bound.
fn options() -> WatchOptions {
    WatchOptions {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        restart_delay: Duration::from_millis(50),
        ..WatchOptions::default()
    }
}

fn username(source: &dyn Source, raw_arn: &str) -> Option<String> {
    source
        .index()
        .lookup(&canonicalize(raw_arn).expect("arn"))
        .map(|e| e.username.as_str().to_string())
}

fn has(source: &dyn Source, raw_arn: &str, want: Option<&str>) -> bool {
    username(source, raw_arn).as_deref() == want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_objects_created_changed_and_deleted_reach_the_index() {
    support::init();
    let api = FakeApiServer::start().await;
    api.put_mapping("alice", &arn("user/alice"), "alice", &["dev"]);
    api.put_mapping("dev-roles", &arn("role/dev-*"), "dev:{{SessionName}}", &[]);
    // Readiness: false while the API server cannot be reached, true after the first list.
    api.set_available(false).await;
    let metrics = Arc::new(Metrics::new());
    let source = CrdSource::spawn(api.client(), metrics.clone(), &options());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!source.ready(), "ready before any list");
    assert!(source.index().is_empty());
    api.set_available(true).await;
    let took = eventually("first list", BOUND, || source.ready()).await;
    eprintln!("ready {took:?} after the API server came up");
    assert!(has(&*source, &arn("user/alice"), Some("alice")));
    assert!(has(
        &*source,
        &arn("assumed-role/dev-backend/s"),
        Some("dev:{{SessionName}}")
    ));
    assert!(metrics
        .encode()
        .contains("ack_ram_authenticator_mapping_entries{source=\"CRD\"} 2"));

    // Created.
    api.put_mapping("ops", &arn("role/Ops"), "ops", &[]);
    let took = eventually("create", BOUND, || {
        has(&*source, &arn("role/ops"), Some("ops"))
    })
    .await;
    eprintln!("create seen after {took:?}");
    // Changed (username, then ARN).
    api.put_mapping("alice", &arn("user/alice"), "alice-2", &["dev"]);
    eventually("update", BOUND, || {
        has(&*source, &arn("user/alice"), Some("alice-2"))
    })
    .await;
    api.put_mapping("alice", &arn("user/alicia"), "alicia", &[]);
    eventually("ARN change", BOUND, || {
        has(&*source, &arn("user/alicia"), Some("alicia"))
            && has(&*source, &arn("user/alice"), None)
    })
    .await;
    // An exact object beats the pattern; deleting it gives the pattern back.
    api.put_mapping("dev-special", &arn("role/dev-special"), "special", &[]);
    eventually("exact beats pattern", BOUND, || {
        has(&*source, &arn("role/dev-special"), Some("special"))
    })
    .await;
    api.delete_mapping("dev-special").expect("exists");
    eventually("delete", BOUND, || {
        has(
            &*source,
            &arn("role/dev-special"),
            Some("dev:{{SessionName}}"),
        )
    })
    .await;

    // A malformed object is skipped; the others keep serving and later changes still apply.
    api.put_mapping_spec("broken", json!({"arn": 42, "username": "x"}));
    api.put_mapping_spec("no-user", json!({"arn": arn("user/nouser")}));
    api.put_mapping("late", &arn("user/late"), "late", &[]);
    eventually("after malformed objects", BOUND, || {
        has(&*source, &arn("user/late"), Some("late"))
    })
    .await;
    assert!(has(&*source, &arn("user/nouser"), None));
    let skipped: Vec<String> = source.skipped().into_iter().map(|(n, _)| n).collect();
    assert_eq!(skipped, vec!["broken", "no-user"]);

    // status.canonicalARN is written off the request path.
    eventually("status written", BOUND, || {
        api.mapping("ops").is_some_and(|o| {
            o["status"]["canonicalARN"] == json!(format!("acs:ram::{ACCOUNT}:role/ops"))
        })
    })
    .await;
    assert!(api
        .mapping("broken")
        .is_some_and(|o| o.get("status").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relist_after_410_drops_objects_deleted_meanwhile() {
    support::init();
    let api = FakeApiServer::start().await;
    api.put_mapping("keep", &arn("user/keep"), "keep", &[]);
    api.put_mapping("gone", &arn("user/gone"), "gone", &[]);
    let source = CrdSource::spawn(api.client(), Arc::new(Metrics::new()), &options());
    eventually("first list", BOUND, || {
        source.ready() && has(&*source, &arn("user/gone"), Some("gone"))
    })
    .await;
    assert_eq!(api.list_requests(MAPPINGS_PATH), 1);

    // Disconnected: an object is deleted, another changed, and the history the watch would
    // resume from is compacted. On reconnection the server answers 410; only a re-list can
    // show the deletion.
    api.set_available(false).await;
    api.delete_mapping("gone").expect("exists");
    api.put_mapping("keep", &arn("user/keep"), "keep-2", &[]);
    api.expire_history();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        has(&*source, &arn("user/gone"), Some("gone")),
        "the last mappings serve while the API server is unreachable"
    );
    api.set_available(true).await;
    let took = eventually("re-list after 410", BOUND, || {
        has(&*source, &arn("user/gone"), None) && has(&*source, &arn("user/keep"), Some("keep-2"))
    })
    .await;
    eprintln!("re-listed {took:?} after the API server came back");
    assert_eq!(api.list_requests(MAPPINGS_PATH), 2);
    assert_eq!(
        api.expired_answers(),
        (1, 0),
        "the watch resumed from a compacted version and got 410"
    );

    // 410 in an open watch stream (the ERROR event) also leads to a re-list.
    eventually("watching", BOUND, || api.open_watches() == 1).await;
    api.expire_history();
    eventually("re-list after in-stream 410", BOUND, || {
        api.list_requests(MAPPINGS_PATH) == 3
    })
    .await;
    assert_eq!(api.expired_answers(), (1, 1));
    api.put_mapping("after", &arn("user/after"), "after", &[]);
    eventually("watch resumed after re-list", BOUND, || {
        has(&*source, &arn("user/after"), Some("after"))
    })
    .await;
    assert!(has(&*source, &arn("user/keep"), Some("keep-2")));
    assert!(source.ready(), "a re-list does not make the source unready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_api_keeps_the_last_mappings_then_recovers() {
    support::init();
    let api = FakeApiServer::start().await;
    api.put_mapping("a", &arn("user/a"), "a", &[]);
    let source = CrdSource::spawn(api.client(), Arc::new(Metrics::new()), &options());
    eventually("first list", BOUND, || {
        has(&*source, &arn("user/a"), Some("a"))
    })
    .await;

    // A broken connection: the watch resumes from where it was, no re-list.
    api.drop_connections();
    api.put_mapping("b", &arn("user/b"), "b", &[]);
    eventually("after a dropped connection", BOUND, || {
        has(&*source, &arn("user/b"), Some("b"))
    })
    .await;
    assert_eq!(
        api.list_requests(MAPPINGS_PATH),
        1,
        "resumed without a re-list"
    );

    // Down for a while: lookups keep answering from memory.
    api.set_available(false).await;
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < until {
        assert!(has(&*source, &arn("user/a"), Some("a")));
        assert!(has(&*source, &arn("user/b"), Some("b")));
        assert!(source.ready());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Changes made meanwhile arrive once it is back (history kept: a resumed watch).
    api.delete_mapping("a").expect("exists");
    api.put_mapping("c", &arn("user/c"), "c", &[]);
    api.set_available(true).await;
    let took = eventually("recovery", BOUND, || {
        has(&*source, &arn("user/a"), None) && has(&*source, &arn("user/c"), Some("c"))
    })
    .await;
    eprintln!("recovered {took:?} after the API server came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_follows_edits_and_keeps_the_last_good_mappings() {
    support::init();
    let api = FakeApiServer::start().await;
    let roles = format!(
        "- roleARN: {}\n  username: admin\n  groups: [system:masters]\n",
        arn("role/Admin")
    );
    api.put_configmap(
        "alibabacloud-auth",
        &[
            ("mapRoles", &roles),
            (
                "mapUsers",
                &format!("- UserArn: {}\n  UserName: bob\n", arn("user/bob")),
            ),
            (
                "mapAccounts",
                "- 2222222222222222\n- \"3333333333333333\"\n",
            ),
        ],
    );
    api.put_configmap(
        "other",
        &[(
            "mapUsers",
            &format!("- userarn: {}\n  username: x\n", arn("user/x")),
        )],
    );
    let metrics = Arc::new(Metrics::new());
    let source = ConfigMapSource::spawn(api.client(), metrics.clone(), &options());
    eventually("first list", BOUND, || source.ready()).await;
    assert!(has(&*source, &arn("assumed-role/Admin/s"), Some("admin")));
    assert!(has(&*source, &arn("user/bob"), Some("bob")));
    assert!(source.index().maps_account("2222222222222222"));
    assert!(source.index().maps_account("3333333333333333"));
    assert!(
        has(&*source, &arn("user/x"), None),
        "only alibabacloud-auth is read"
    );
    assert!(api
        .requests()
        .iter()
        .filter(|r| r.starts_with(&format!("GET {CONFIGMAPS_PATH}")))
        .all(|r| r.contains("fieldSelector=metadata.name%3Dalibabacloud-auth")));
    assert_eq!(metrics.configmap_watch_failures.get(), 0);

    // One edit, one key broken: the good key (mapRoles) applies, the broken one (mapUsers) keeps
    // its last good value, the failure is counted.
    api.put_configmap(
        "alibabacloud-auth",
        &[
            ("mapRoles", &roles.replace("admin", "admin-2")),
            (
                "mapUsers",
                &format!("- userarn: {}\n  usrname: bob\n", arn("user/bob")),
            ),
        ],
    );
    eventually("failure counted", BOUND, || {
        metrics.configmap_watch_failures.get() == 1
    })
    .await;
    eventually("the good key applies", BOUND, || {
        has(&*source, &arn("role/admin"), Some("admin-2"))
    })
    .await;
    assert!(
        has(&*source, &arn("user/bob"), Some("bob")),
        "the broken mapUsers keeps its last good value"
    );
    assert!(metrics
        .encode()
        .contains("mapping_reload_errors_total{source=\"ACKConfigMap\"} 1"));

    // Fixed: applies.
    api.put_configmap(
        "alibabacloud-auth",
        &[("mapRoles", &roles.replace("admin", "admin-3"))],
    );
    eventually("fixed edit", BOUND, || {
        has(&*source, &arn("role/admin"), Some("admin-3")) && has(&*source, &arn("user/bob"), None)
    })
    .await;
    // Changes to other ConfigMaps do nothing.
    api.put_configmap("other", &[]);
    // Deleted: no mappings.
    api.delete_configmap("alibabacloud-auth").expect("exists");
    eventually("deleted", BOUND, || source.index().is_empty()).await;
    // Re-created.
    api.put_configmap("alibabacloud-auth", &[("mapAccounts", "- 1111\n")]);
    eventually("re-created", BOUND, || source.index().maps_account("1111")).await;

    // Watch failures are counted too (the API server unreachable).
    let before = metrics.configmap_watch_failures.get();
    api.set_available(false).await;
    eventually("watch failure counted", BOUND, || {
        metrics.configmap_watch_failures.get() > before
    })
    .await;
    assert!(
        source.index().maps_account("1111"),
        "last mappings keep serving"
    );
    api.put_configmap("alibabacloud-auth", &[("mapAccounts", "- 4444\n")]);
    api.set_available(true).await;
    eventually("recovered", BOUND, || source.index().maps_account("4444")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_absent_at_start_is_ready_and_empty() {
    support::init();
    let api = FakeApiServer::start().await;
    let source = ConfigMapSource::spawn(api.client(), Arc::new(Metrics::new()), &options());
    eventually("first list", BOUND, || source.ready()).await;
    assert!(source.index().is_empty());
    api.put_configmap(
        "alibabacloud-auth",
        &[(
            "mapUsers",
            &format!("- userarn: {}\n  username: z\n", arn("user/z")),
        )],
    );
    eventually("created later", BOUND, || {
        has(&*source, &arn("user/z"), Some("z"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_status_writes_change_nothing_else() {
    support::init();
    let api = FakeApiServer::start().await;
    api.deny_status_writes(true);
    api.put_mapping("a", &arn("user/a"), "a", &[]);
    let source = CrdSource::spawn(api.client(), Arc::new(Metrics::new()), &options());
    eventually("first list", BOUND, || {
        has(&*source, &arn("user/a"), Some("a"))
    })
    .await;
    eventually("status write attempted", BOUND, || {
        api.requests().iter().any(|r| r.starts_with("PATCH "))
    })
    .await;
    api.put_mapping("b", &arn("user/b"), "b", &[]);
    eventually("later change", BOUND, || {
        has(&*source, &arn("user/b"), Some("b"))
    })
    .await;
    assert!(api.mapping("a").is_some_and(|o| o.get("status").is_none()));
    // After one 403 the writer stops asking.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let patches = api
        .requests()
        .iter()
        .filter(|r| r.starts_with("PATCH "))
        .count();
    assert_eq!(patches, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_sources_reads_the_kubeconfig_and_keeps_the_order() {
    support::init();
    let api = FakeApiServer::start().await;
    api.put_mapping("a", &arn("user/a"), "from-crd", &[]);
    api.put_configmap(
        "alibabacloud-auth",
        &[(
            "mapUsers",
            &format!("- userarn: {}\n  username: from-cm\n", arn("user/a")),
        )],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = api.write_kubeconfig(dir.path());
    let sources = ram_authenticator::kube::start_sources(
        &[
            BackendMode::Crd,
            BackendMode::MountedFile,
            BackendMode::AckConfigMap,
        ],
        Some(&kubeconfig),
        Arc::new(Metrics::new()),
    )
    .await
    .expect("sources");
    let names: Vec<(BackendMode, &str)> = sources.iter().map(|(m, s)| (*m, s.name())).collect();
    assert_eq!(
        names,
        vec![
            (BackendMode::Crd, "CRD"),
            (BackendMode::AckConfigMap, "ACKConfigMap")
        ]
    );
    eventually("both ready", BOUND, || {
        sources.iter().all(|(_, s)| s.ready())
    })
    .await;
    assert!(has(&*sources[0].1, &arn("user/a"), Some("from-crd")));
    assert!(has(&*sources[1].1, &arn("user/a"), Some("from-cm")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_ended_by_the_server_resume_without_a_relist() {
    support::init();
    let api = FakeApiServer::start().await;
    api.put_mapping("a", &arn("user/a"), "a", &[]);
    let opts = WatchOptions {
        watch_timeout_secs: Some(1),
        ..options()
    };
    let source = CrdSource::spawn(api.client(), Arc::new(Metrics::new()), &opts);
    eventually("first list", BOUND, || {
        has(&*source, &arn("user/a"), Some("a"))
    })
    .await;
    // timeoutSeconds=1: the server ends each watch after a second; the watcher watches again
    // from the last version it saw (bookmarks included), without listing.
    let watches = || {
        api.requests()
            .iter()
            .filter(|r| r.starts_with(&format!("GET {MAPPINGS_PATH}?")) && r.contains("watch=true"))
            .count()
    };
    eventually("watch renewed twice", Duration::from_secs(4), || {
        watches() >= 3
    })
    .await;
    assert!(api
        .requests()
        .iter()
        .filter(|r| r.contains("watch=true"))
        .all(|r| r.contains("timeoutSeconds=1") && r.contains("allowWatchBookmarks=true")));
    api.put_mapping("b", &arn("user/b"), "b", &[]);
    eventually("change after renewals", BOUND, || {
        has(&*source, &arn("user/b"), Some("b"))
    })
    .await;
    assert_eq!(api.list_requests(MAPPINGS_PATH), 1);
}

/// The STS emulator and the whole server with `--backend-mode <modes> --kubeconfig <fake>`.
async fn start_server(
    api: &FakeApiServer,
    modes: &str,
) -> (tempfile::TempDir, common::Emulator, common::Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = api.write_kubeconfig(dir.path());
    let path = dir.path().to_path_buf();
    let modes = modes.to_string();
    let (emu, server) = tokio::task::spawn_blocking(move || {
        let emu = common::Emulator::start(&path, &[]);
        let kc = kubeconfig.to_str().expect("utf-8 path").to_string();
        let server = common::Server::start(
            &path,
            &emu.url,
            &["--backend-mode", &modes, "--kubeconfig", &kc],
        );
        (emu, server)
    })
    .await
    .expect("start");
    (dir, emu, server)
}

/// The whole server (`--backend-mode CRD --kubeconfig <fake>`) with the STS emulator: the
/// TokenReview answer for the same identity follows the RAMIdentityMapping objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_reviews_follow_ramidentitymappings() {
    support::init();
    let api = FakeApiServer::start().await;
    let alice = "acs:ram::1234567890123456:user/alice";
    api.put_mapping("alice", alice, "alice-from-crd", &["crd-group"]);
    let (_dir, emu, server) = start_server(&api, "CRD").await;
    let client = server.client();
    let token = || common::v2_token("LTAI5tAlice", "AliceSecret", None, common::CLUSTER);
    let review = |client: reqwest::Client, token: String| {
        let server = &server;
        async move {
            server
                .review(&client, "authentication.k8s.io/v1", &token)
                .await
        }
    };
    let until = |want: Option<&'static str>| {
        let client = client.clone();
        let review = &review;
        let token = &token;
        async move {
            let start = tokio::time::Instant::now();
            loop {
                let v = review(client.clone(), token()).await;
                let got = v["status"]["user"]["username"].as_str().map(str::to_string);
                let ok = match want {
                    Some(name) => {
                        v["status"]["authenticated"] == true && got.as_deref() == Some(name)
                    }
                    None => v["status"]["authenticated"] == false,
                };
                if ok {
                    return v;
                }
                assert!(start.elapsed() < BOUND, "review never became {want:?}: {v}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let v = until(Some("alice-from-crd")).await;
    assert_eq!(v["status"]["user"]["groups"], json!(["crd-group"]));
    // Changed.
    api.put_mapping("alice", alice, "alice-renamed", &[]);
    let v = until(Some("alice-renamed")).await;
    assert_eq!(v["status"]["user"]["groups"], json!([]));
    // Deleted: not mapped any more (the config file's own mapping of alice is not consulted:
    // only CRD was asked for).
    api.delete_mapping("alice").expect("exists");
    until(None).await;
    // A pattern brings it back.
    api.put_mapping(
        "everyone",
        "acs:ram::1234567890123456:user/*",
        "user:{{AccountID}}",
        &[],
    );
    until(Some("user:1234567890123456")).await;
    assert!(emu.requests() >= 1);
    // The server only listed and watched; it never asked the API server on the request path
    // for anything else (status patches aside).
    assert!(api
        .requests()
        .iter()
        .all(|r| r.starts_with(&format!("GET {MAPPINGS_PATH}")) || r.starts_with("PATCH ")));
}

/// A `410 Gone` is the normal end of a watch: the source lists again at once, whether the 410
/// comes inside the watch stream or as the answer to the watch request, and it is not counted
/// as a failure. The backoff here is long (3 s): any wait for it would break the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_relists_at_once_and_is_not_a_failure() {
    support::init();
    let api = FakeApiServer::start().await;
    for name in ["a", "b", "keep"] {
        api.put_mapping(name, &arn(&format!("user/{name}")), name, &[]);
    }
    let opts = WatchOptions {
        backoff_min: Duration::from_secs(3),
        backoff_max: Duration::from_secs(3),
        restart_delay: Duration::from_millis(50),
        watch_timeout_secs: Some(1),
        ..WatchOptions::default()
    };
    let metrics = Arc::new(Metrics::new());
    let source = CrdSource::spawn(api.client(), metrics.clone(), &opts);
    eventually("first list", BOUND, || {
        has(&*source, &arn("user/a"), Some("a")) && has(&*source, &arn("user/b"), Some("b"))
    })
    .await;
    let bound = Duration::from_millis(1500);

    // In the stream: deleted unseen, then the open watch ends with the 410 ERROR event.
    api.delete_mapping_unseen("a").expect("exists");
    api.expire_history();
    let took = eventually("re-list after an in-stream 410", bound, || {
        has(&*source, &arn("user/a"), None)
    })
    .await;
    eprintln!("in-stream 410: the deletion applied after {took:?}");
    assert_eq!(api.list_requests(MAPPINGS_PATH), 2);

    // As the answer to the watch request (the watch in place ends within its 1 s timeout).
    // A second apart, as two expiries are (closer ones count as failures: no busy loop).
    tokio::time::sleep(Duration::from_secs(1)).await;
    api.delete_mapping_unseen("b").expect("exists");
    api.answer_watches_with_gone(1);
    let took = eventually(
        "re-list after an HTTP 410",
        bound + Duration::from_secs(1),
        || has(&*source, &arn("user/b"), None),
    )
    .await;
    eprintln!("HTTP 410: the deletion applied after {took:?}");
    assert_eq!(api.list_requests(MAPPINGS_PATH), 3);
    assert!(has(&*source, &arn("user/keep"), Some("keep")));
    assert_eq!(
        metrics.watch_failures_of("CRD").get(),
        0,
        "a 410 is not a failure"
    );
    assert!(metrics
        .encode()
        .contains("ack_ram_authenticator_watch_failures_total{source=\"CRD\"} 0"));
}

/// An API server that answers every watch with 410 gets about one list a second, not a busy
/// loop; the failures are counted; once it watches normally again, so does the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_410s_do_not_spin() {
    support::init();
    let api = FakeApiServer::start().await;
    api.put_mapping("a", &arn("user/a"), "a", &[]);
    api.answer_watches_with_gone(usize::MAX);
    let metrics = Arc::new(Metrics::new());
    let source = CrdSource::spawn(api.client(), metrics.clone(), &options());
    eventually("first list", BOUND, || {
        has(&*source, &arn("user/a"), Some("a"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lists = api.list_requests(MAPPINGS_PATH);
    assert!((2..=6).contains(&lists), "{lists} lists in about 3 s");
    assert!(metrics.watch_failures_of("CRD").get() >= 1);
    api.answer_watches_with_gone(0);
    api.put_mapping("b", &arn("user/b"), "b", &[]);
    eventually("watching again", BOUND, || {
        has(&*source, &arn("user/b"), Some("b"))
    })
    .await;
}

/// The whole server against an API server that fails (503) long enough for the watches'
/// backoff to reach its cap, while a RAMIdentityMapping is deleted and the ConfigMap edited and
/// the history compacted: the last mappings serve meanwhile; once the API server is back,
/// both sources catch up within the (default) cap plus two seconds, and the 410 each watch meets
/// costs no extra wait. Every request names the product in its User-Agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_catches_up_within_seconds_after_an_outage() {
    support::init();
    let api = FakeApiServer::start().await;
    let alice = "acs:ram::1234567890123456:user/alice";
    let erin_users = "- userarn: acs:ram::4444444444444444:user/erin\n  username: erin\n";
    api.put_mapping("alice", alice, "alice-from-crd", &[]);
    api.put_configmap("alibabacloud-auth", &[("mapUsers", erin_users)]);
    let (_dir, _emu, server) = start_server(&api, "CRD,ACKConfigMap").await;
    let client = server.client();
    let granted = |akid: &'static str, secret: &'static str| {
        let (client, server) = (client.clone(), &server);
        async move {
            let token = common::v2_token(akid, secret, None, common::CLUSTER);
            let v = server
                .review(&client, "authentication.k8s.io/v1", &token)
                .await;
            v["status"]["authenticated"] == true
        }
    };
    let start = tokio::time::Instant::now();
    while !(granted("LTAI5tAlice", "AliceSecret").await
        && granted("LTAI5tErin", "ErinSecret").await)
    {
        assert!(start.elapsed() < Duration::from_secs(5), "never granted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The outage: long enough for the default backoff (0.5 s doubling to 4 s) to reach its cap.
    let outage_started = tokio::time::Instant::now();
    api.set_outage(true);
    api.put_configmap("alibabacloud-auth", &[("mapUsers", "[]")]);
    api.delete_mapping_unseen("alice").expect("exists");
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(
        granted("LTAI5tAlice", "AliceSecret").await && granted("LTAI5tErin", "ErinSecret").await,
        "the last mappings serve during the outage"
    );
    let back = tokio::time::Instant::now();
    api.set_outage(false);
    let cap = WatchOptions::default().backoff_max;
    loop {
        let alice = granted("LTAI5tAlice", "AliceSecret").await;
        let erin = granted("LTAI5tErin", "ErinSecret").await;
        if !alice && !erin {
            break;
        }
        assert!(
            back.elapsed() < cap + Duration::from_secs(2),
            "still granted {:?} after the API server came back (alice {alice}, erin {erin})",
            back.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "caught up {:?} after the API server came back",
        back.elapsed()
    );

    let requests = api.requests();
    let times = api.request_times();
    for path in [MAPPINGS_PATH, CONFIGMAPS_PATH] {
        let on_path: Vec<(tokio::time::Instant, &String)> = times
            .iter()
            .zip(&requests)
            .filter(|(_, r)| r.starts_with(&format!("GET {path}")))
            .map(|(t, r)| (*t, r))
            .collect();
        // During the outage the attempts spread out: the backoff grew, up to its cap.
        let during: Vec<tokio::time::Instant> = on_path
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t > outage_started && *t < back)
            .collect();
        let gaps: Vec<Duration> = during.windows(2).map(|w| w[1] - w[0]).collect();
        eprintln!("{path}: gaps during the outage {gaps:?}");
        assert!(
            during.len() >= 4 && during.len() <= 12,
            "{path}: {} attempts in 9 s",
            during.len()
        );
        assert!(gaps.iter().any(|g| *g >= cap / 2), "{path}: {gaps:?}");
        assert!(
            gaps.iter().all(|g| *g <= cap + Duration::from_secs(1)),
            "{path}: {gaps:?}"
        );
        // Once back: the first request met a 410, and the list followed at once.
        let after: Vec<&(tokio::time::Instant, &String)> =
            on_path.iter().filter(|(t, _)| *t >= back).collect();
        let first = after.first().expect("a request after the outage").0;
        let list = after
            .iter()
            .find(|(_, r)| !r.contains("watch="))
            .expect("a list after the outage")
            .0;
        assert!(
            list - first < Duration::from_millis(500),
            "{path}: listed {:?} after the first request",
            list - first
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        api.user_agents()
            .iter()
            .all(|ua| *ua == format!("ram-authenticator/{version}")),
        "{:?}",
        api.user_agents()
    );
    let metrics = server.metrics().await;
    for source in ["CRD", "ACKConfigMap"] {
        let series = format!("ack_ram_authenticator_watch_failures_total{{source=\"{source}\"}}");
        assert!(
            common::sample(&metrics, &series) >= 3.0,
            "{source}: {metrics}"
        );
    }
}

//! The identity cache's lifetimes: an identity is remembered until the token's signing date +
//! 15 minutes or the configured TTL, whichever is sooner; STS verdicts against a token briefly.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use ram_authenticator::authenticator::{Authenticator, CacheSettings};
use ram_authenticator::config::FileConfig;
use ram_authenticator::mapping::file::FileSource;
use ram_authenticator::mapping::Chain;
use ram_authenticator::metrics::Metrics;
use ram_authenticator::sts::{StsClient, StsSettings};
use ram_authenticator::token::v2;
use ram_authenticator::types::{format_utc, Clock, FixedClock, SystemClock};

fn authenticator(
    emu: &common::Emulator,
    clock: Arc<dyn Clock>,
    cache: CacheSettings,
) -> Authenticator {
    let config = FileConfig::parse(common::CONFIG_YAML).expect("config");
    let chain = Chain::new(vec![Arc::new(
        FileSource::from_config(&config).expect("source"),
    )]);
    let metrics = Arc::new(Metrics::new());
    let sts =
        StsClient::new(StsSettings::new(emu.url.clone()), Some(metrics.clone())).expect("sts");
    Authenticator::new(
        common::CLUSTER.into(),
        clock,
        sts,
        chain,
        cache,
        metrics,
        Vec::new(),
    )
}

fn token_signed_at(date: chrono::DateTime<Utc>, secret: &str) -> String {
    v2::mint(&v2::MintV2 {
        access_key_id: "LTAI5tAlice",
        access_key_secret: secret,
        security_token: None,
        cluster_id: common::CLUSTER,
        date: &format_utc(date),
        extra_query: &[],
        user_agent: "t",
    })
}

#[tokio::test]
async fn entries_end_with_the_tokens_own_life() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = common::Emulator::start(dir.path(), &[]);
    // Signed 14 min 57 s ago: about 3 s of life left (dates have whole seconds).
    let now = Utc::now();
    let signed = now - TimeDelta::seconds(14 * 60 + 57);
    let token = token_signed_at(signed, "AliceSecret");
    // The clock is pinned so that the local date check keeps passing; only the cache entry's
    // own deadline can make the second STS call happen.
    let auth = authenticator(&emu, Arc::new(FixedClock(now)), CacheSettings::default());
    assert!(auth.authenticate(&token).await.decision.is_ok());
    let again = auth.authenticate(&token).await;
    assert!(again.cache_hit && again.decision.is_ok());
    assert_eq!(
        again.token_hash,
        ram_authenticator::types::short_hash(&token)
    );
    assert_eq!(emu.requests(), 1);
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let late = auth.authenticate(&token).await;
    assert!(!late.cache_hit, "the entry outlived its token");
    assert_eq!(emu.requests(), 2);
}

#[tokio::test]
async fn configured_ttl_caps_entries_and_verdicts_are_remembered_briefly() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = common::Emulator::start(dir.path(), &[]);
    let settings = CacheSettings {
        ttl: Duration::from_millis(500),
        negative_ttl: Duration::from_millis(500),
        max_entries: 10,
    };
    let auth = authenticator(&emu, Arc::new(SystemClock), settings);
    let good = token_signed_at(Utc::now(), "AliceSecret");
    let bad = token_signed_at(Utc::now(), "WrongSecret");
    assert!(auth.authenticate(&good).await.decision.is_ok());
    assert!(auth.authenticate(&bad).await.decision.is_err());
    assert!(auth.authenticate(&good).await.cache_hit);
    let remembered = auth.authenticate(&bad).await;
    assert!(
        remembered.cache_hit && remembered.decision.is_err(),
        "a signature verdict is remembered"
    );
    assert_eq!(emu.requests(), 2);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(!auth.authenticate(&good).await.cache_hit);
    assert!(!auth.authenticate(&bad).await.cache_hit);
    assert_eq!(emu.requests(), 4);
}

#[tokio::test]
async fn transient_failures_are_not_cached() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = common::Emulator::start(dir.path(), &[]);
    let auth = authenticator(&emu, Arc::new(SystemClock), CacheSettings::default());
    let token = token_signed_at(Utc::now(), "AliceSecret");
    emu.fault("throttle", 0);
    assert!(auth.authenticate(&token).await.decision.is_err());
    emu.fault("none", 0);
    let next = auth.authenticate(&token).await;
    assert!(
        !next.cache_hit && next.decision.is_ok(),
        "a throttled answer was not remembered"
    );
}

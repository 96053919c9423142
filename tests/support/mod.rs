//! Test support shared by the Kubernetes source tests.
#![allow(dead_code)]

pub mod fake_apiserver;
pub mod kubectl_stack;

use std::time::Duration;

/// How long a change in the fake API server may take to reach a source's index.
pub const BOUND: Duration = Duration::from_secs(2);
/// How often the tests look.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` every [`POLL`] until it holds or `bound` passes; returns the time it took.
pub async fn eventually(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = tokio::time::Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() > bound {
            panic!("{what}: not true within {bound:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

//! The token written to a file for a `tokenFile:` kubeconfig, and kept fresh.
//!
//! `token --write-token-file PATH` writes the bare token atomically (an exclusive temporary file
//! in the same directory, then `rename`; mode 0600): a reader sees the previous token or the new
//! one, never a partial or empty file. With `--refresh` the command keeps running, like the
//! kubelet with projected service-account tokens: it rewrites the file after `--refresh-fraction`
//! (default 0.8) of the token's life, which ends at the earlier of the webhook's acceptance
//! window (15 minutes after signing) and the expiry of the temporary credentials that signed it.
//! When credentials or STS fail it keeps the last good token and retries with backoff; SIGTERM
//! or SIGINT stop it with exit status 0.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use super::credentials::Env;
use super::TokenArgs;
use crate::types::{format_utc, short_hash, SystemClock};

/// Rewrite after this fraction of the token's life (the kubelet's choice for projected tokens).
pub const DEFAULT_FRACTION: f64 = 0.8;
/// The first retry after a failure; doubled on each further failure.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between retries.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Writes `token` to `path` atomically, mode 0600.
pub fn write(path: &Path, token: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!token.is_empty(), "refusing to write an empty token");
    crate::files::write_atomic(path, token.as_bytes(), 0o600)
        .with_context(|| format!("cannot write the token file {}", path.display()))
}

/// The wait before retry number `failures` (1-based): doubling from 1 s, at most 30 s and at
/// most `cap` (the normal rotation interval), with up to 20% jitter.
pub fn retry_delay(failures: u32, cap: Option<Duration>) -> Duration {
    let base = FIRST_RETRY.saturating_mul(1 << failures.saturating_sub(1).min(10));
    let max = cap.map_or(MAX_RETRY, |c| c.clamp(FIRST_RETRY, MAX_RETRY));
    let base = base.min(max);
    base + base.mul_f64(rand::random_range(0.0..0.2))
}

/// Runs the refresher until SIGTERM or SIGINT.
pub async fn refresh(args: &TokenArgs, env: &Env, path: &Path) -> anyhow::Result<i32> {
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut failures = 0u32;
    let mut interval: Option<Duration> = None;
    loop {
        let outcome = tokio::select! {
            r = super::issue(args, env, &SystemClock) => r,
            _ = term.recv() => return Ok(stopped("SIGTERM")),
            _ = int.recv() => return Ok(stopped("SIGINT")),
        };
        let wait = match outcome.and_then(|issued| {
            write(path, &issued.minted.token)?;
            Ok(issued)
        }) {
            Ok(issued) => {
                failures = 0;
                let life = (issued.valid_until - issued.signed_at)
                    .to_std()
                    .unwrap_or_default();
                let next = life
                    .mul_f64(args.refresh_fraction)
                    .max(Duration::from_secs(1));
                interval = Some(next);
                tracing::info!(
                    path = %path.display(),
                    token = %short_hash(&issued.minted.token),
                    valid_until = %format_utc(issued.valid_until),
                    next_in_ms = next.as_millis() as u64,
                    "token written"
                );
                next
            }
            Err(e) => {
                failures += 1;
                let next = retry_delay(failures, interval);
                tracing::warn!(
                    path = %path.display(),
                    failures,
                    retry_in_ms = next.as_millis() as u64,
                    "cannot renew the token; the file keeps the last good one: {e:#}"
                );
                next
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = term.recv() => return Ok(stopped("SIGTERM")),
            _ = int.recv() => return Ok(stopped("SIGINT")),
        }
    }
}

fn stopped(signal: &str) -> i32 {
    tracing::info!(signal, "stopping");
    0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn retries_back_off_within_bounds() {
        let d = |n, cap| retry_delay(n, cap).as_millis();
        assert!((1000..1200).contains(&d(1, None)));
        assert!((2000..2400).contains(&d(2, None)));
        assert!((30_000..36_000).contains(&d(20, None)));
        assert!((30_000..36_000).contains(&d(u32::MAX, None)));
        // Never longer than the rotation interval, never under a second.
        assert!((9_000..10_800).contains(&d(8, Some(Duration::from_secs(9)))));
        assert!((1000..1200).contains(&d(8, Some(Duration::from_millis(10)))));
    }

    #[test]
    fn writes_whole_private_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("token");
        write(&p, "k8s-ack-v2.abc").expect("write");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "k8s-ack-v2.abc");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(write(&p, "").is_err());
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "k8s-ack-v2.abc");
        let e = write(&dir.path().join("missing/token"), "t").expect_err("no dir");
        assert!(
            format!("{e:#}").contains("cannot write the token file"),
            "{e:#}"
        );
    }
}

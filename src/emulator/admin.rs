//! Injected faults and request statistics, driven by the admin API under `/_emulator/`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest delay a fault may ask for (ten minutes).
pub const MAX_DELAY_MS: u64 = 600_000;

/// How STS requests are disturbed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FaultMode {
    /// Answer normally.
    #[default]
    None,
    /// Answer 400 `Throttling.User`.
    Throttle,
    /// Answer 500 `InternalError`.
    Error,
    /// Wait `delayMs`, then answer normally.
    Slow,
}

/// The body of `POST /_emulator/faults`, and what `GET /_emulator/faults` answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    pub mode: FaultMode,
    /// Delay of `slow`, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Apply to the next `count` STS requests, then return to `none`; absent: until changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// What to do with one STS request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Pass,
    Throttle,
    Error,
    Delay(Duration),
}

/// The current fault, shared by all requests.
#[derive(Debug, Default)]
pub struct Faults {
    spec: Mutex<FaultSpec>,
}

impl Faults {
    pub fn new(spec: FaultSpec) -> Self {
        Self {
            spec: Mutex::new(normalize(spec)),
        }
    }

    /// Replaces the fault.
    pub fn set(&self, spec: FaultSpec) -> FaultSpec {
        let spec = normalize(spec);
        *lock(&self.spec) = spec;
        spec
    }

    pub fn get(&self) -> FaultSpec {
        *lock(&self.spec)
    }

    /// Decides the fate of the next STS request, counting it against `count`.
    pub fn next(&self) -> Decision {
        let mut spec = lock(&self.spec);
        let decision = match spec.mode {
            FaultMode::None => return Decision::Pass,
            FaultMode::Throttle => Decision::Throttle,
            FaultMode::Error => Decision::Error,
            FaultMode::Slow => Decision::Delay(Duration::from_millis(spec.delay_ms)),
        };
        if let Some(left) = spec.count {
            let left = left.saturating_sub(1);
            if left == 0 {
                *spec = FaultSpec::default();
            } else {
                spec.count = Some(left);
            }
        }
        decision
    }
}

fn normalize(spec: FaultSpec) -> FaultSpec {
    if spec.mode == FaultMode::None || spec.count == Some(0) {
        return FaultSpec::default();
    }
    FaultSpec {
        delay_ms: spec.delay_ms.min(MAX_DELAY_MS),
        ..spec
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The code counted for a request that succeeded.
pub const SUCCESS_CODE: &str = "Success";

/// Counts of STS requests (admin calls excluded), and apart from them, of the stand-ins'.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    by: Mutex<ByLabel>,
    metadata: Mutex<BTreeMap<&'static str, u64>>,
    credentials_uri: AtomicU64,
}

#[derive(Debug, Default)]
struct ByLabel {
    action: HashMap<&'static str, u64>,
    code: HashMap<&'static str, u64>,
}

/// What `GET /_emulator/stats` answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    pub requests: u64,
    pub by_action: BTreeMap<String, u64>,
    pub by_code: BTreeMap<String, u64>,
    /// Metadata stand-in requests: `token` (tokens issued), `hardened` and `plain` (answered
    /// with and without a token), `refused` (4xx), `hang` (left unanswered).
    #[serde(default)]
    pub by_metadata: BTreeMap<String, u64>,
    /// Requests to the credentials URI.
    #[serde(default)]
    pub credentials_uri: u64,
}

impl Stats {
    /// Counts one STS request: its action label and its outcome code ([`SUCCESS_CODE`] on success).
    pub fn record(&self, action: &'static str, code: &'static str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut by = lock(&self.by);
        *by.action.entry(action).or_default() += 1;
        *by.code.entry(code).or_default() += 1;
    }

    /// Counts one metadata stand-in request by its outcome.
    pub fn record_metadata(&self, outcome: &'static str) {
        *lock(&self.metadata).entry(outcome).or_default() += 1;
    }

    /// Counts one credentials-URI request.
    pub fn record_credentials_uri(&self) {
        self.credentials_uri.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let by = lock(&self.by);
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            by_action: by.action.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            by_code: by.code.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            by_metadata: lock(&self.metadata)
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            credentials_uri: self.credentials_uri.load(Ordering::Relaxed),
        }
    }

    pub fn reset(&self) {
        let mut by = lock(&self.by);
        self.requests.store(0, Ordering::Relaxed);
        by.action.clear();
        by.code.clear();
        lock(&self.metadata).clear();
        self.credentials_uri.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_limits_a_fault() {
        let f = Faults::new(FaultSpec {
            mode: FaultMode::Throttle,
            delay_ms: 0,
            count: Some(2),
        });
        assert_eq!(f.next(), Decision::Throttle);
        assert_eq!(f.get().count, Some(1));
        assert_eq!(f.next(), Decision::Throttle);
        assert_eq!(f.next(), Decision::Pass);
        assert_eq!(f.get(), FaultSpec::default());
    }

    #[test]
    fn fault_without_count_stays() {
        let f = Faults::default();
        assert_eq!(f.next(), Decision::Pass);
        f.set(FaultSpec {
            mode: FaultMode::Slow,
            delay_ms: 5,
            count: None,
        });
        for _ in 0..5 {
            assert_eq!(f.next(), Decision::Delay(Duration::from_millis(5)));
        }
        f.set(FaultSpec {
            mode: FaultMode::Error,
            delay_ms: 0,
            count: Some(0),
        });
        assert_eq!(f.next(), Decision::Pass);
    }

    #[test]
    fn fault_json_shape() {
        let spec: FaultSpec =
            serde_json::from_str(r#"{"mode":"slow","delayMs":20,"count":3}"#).expect("parses");
        assert_eq!(spec.mode, FaultMode::Slow);
        assert_eq!(spec.delay_ms, 20);
        assert_eq!(spec.count, Some(3));
        assert!(serde_json::from_str::<FaultSpec>(r#"{"mode":"boom"}"#).is_err());
        assert!(serde_json::from_str::<FaultSpec>(r#"{"mode":"none","delay":1}"#).is_err());
        let huge = Faults::new(FaultSpec {
            mode: FaultMode::Slow,
            delay_ms: u64::MAX,
            count: None,
        });
        assert_eq!(huge.get().delay_ms, MAX_DELAY_MS);
    }

    #[test]
    fn stats_count_and_reset() {
        let s = Stats::default();
        s.record("GetCallerIdentity", SUCCESS_CODE);
        s.record("GetCallerIdentity", "SignatureDoesNotMatch");
        s.record("AssumeRole", SUCCESS_CODE);
        s.record_metadata("token");
        s.record_metadata("token");
        s.record_credentials_uri();
        let snap = s.snapshot();
        assert_eq!(snap.by_metadata["token"], 2);
        assert_eq!(snap.credentials_uri, 1);
        assert_eq!(snap.requests, 3);
        assert_eq!(snap.by_action["GetCallerIdentity"], 2);
        assert_eq!(snap.by_code[SUCCESS_CODE], 2);
        s.reset();
        assert_eq!(s.snapshot(), StatsSnapshot::default());
    }
}

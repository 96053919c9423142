//! The request path, as plain calls: token → local checks → identity cache → STS → mapping.
//!
//! The cache remembers what STS confirmed, under a SHA-256 of the token (never the token), until
//! the token's signing date + 15 minutes or the configured TTL, whichever is sooner. Concurrent
//! reviews of the same new token make one STS call (moka's single flight). STS's verdicts on a
//! token (4xx such as `SignatureDoesNotMatch`) are remembered briefly; transient failures
//! (throttling, 5xx, timeouts) are not. Identities are cached, mappings are applied on every
//! review, so mapping changes take effect at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::mapping::{Chain, Identity, MappingError, User};
use crate::metrics::{AuthResult, Metrics};
use crate::sts::{StsClient, StsError};
use crate::token::{self, TokenError};
use crate::types::{short_hash, Clock};

/// Tuning of the identity cache.
#[derive(Clone, Debug)]
pub struct CacheSettings {
    /// Upper bound on how long an identity is remembered.
    pub ttl: Duration,
    /// How long an STS verdict against a token is remembered.
    pub negative_ttl: Duration,
    /// Entries at most.
    pub max_entries: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(15 * 60),
            negative_ttl: Duration::from_secs(30),
            max_entries: 100_000,
        }
    }
}

#[derive(Clone, Debug)]
enum Verdict {
    Confirmed(Arc<Identity>),
    Rejected(StsError),
}

#[derive(Clone, Debug)]
struct CacheValue {
    verdict: Verdict,
    expires_at: Instant,
}

struct ValueExpiry;

impl moka::Expiry<[u8; 32], CacheValue> for ValueExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &CacheValue,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(created_at))
    }
}

/// Why a review was denied.
#[derive(Debug, thiserror::Error)]
pub enum Denial {
    #[error("invalid token: {0}")]
    Token(#[from] TokenError),
    #[error("{0}")]
    Sts(StsError),
    #[error("STS returned an identity that cannot be read: {0}")]
    BadIdentity(String),
    #[error("{0}")]
    NotMapped(#[from] MappingError),
    #[error("the token is not valid for the requested audiences")]
    Audience,
}

impl Denial {
    /// The metric result label.
    pub fn result(&self) -> AuthResult {
        match self {
            Self::Token(_) | Self::Audience => AuthResult::invalid_token,
            Self::Sts(_) | Self::BadIdentity(_) => AuthResult::sts_error,
            Self::NotMapped(_) => AuthResult::unknown_user,
        }
    }

    /// A short fixed reason for the audit log.
    pub fn reason(&self) -> String {
        match self {
            Self::Token(e) => e.reason().to_string(),
            Self::Sts(e) => format!("sts:{}", e.code()),
            Self::BadIdentity(_) => "sts:bad_identity".into(),
            Self::NotMapped(_) => "not_mapped".into(),
            Self::Audience => "audience".into(),
        }
    }

    /// The text for `status.error`: what happened, never a secret. STS transport failures say
    /// that STS was unavailable or throttling.
    pub fn status_error(&self) -> String {
        match self {
            Self::Sts(StsError::Throttled { code }) => {
                format!("STS is throttling ({code}); try again shortly")
            }
            Self::Sts(
                StsError::Unavailable(_)
                | StsError::DeadlineExceeded(_)
                | StsError::ServerError { .. },
            ) => {
                format!(
                    "STS unavailable ({}); try again shortly",
                    self.reason().trim_start_matches("sts:")
                )
            }
            Self::Sts(StsError::Rejected { code, .. }) => format!("STS rejected the token: {code}"),
            other => other.to_string(),
        }
    }
}

/// What one review produced, with what the audit log needs.
#[derive(Debug)]
pub struct Outcome {
    pub decision: Result<User, Denial>,
    pub token_hash: String,
    pub access_key_id: Option<String>,
    pub format: Option<&'static str>,
    pub arn: Option<String>,
    pub account_id: Option<String>,
    pub cache_hit: bool,
}

/// The authenticator: everything a review needs, shared by all requests.
pub struct Authenticator {
    cluster_id: String,
    clock: Arc<dyn Clock>,
    sts: StsClient,
    chain: Chain,
    cache: moka::future::Cache<[u8; 32], CacheValue>,
    cache_settings: CacheSettings,
    metrics: Arc<Metrics>,
    scrubbed_accounts: HashSet<String>,
}

impl Authenticator {
    pub fn new(
        cluster_id: String,
        clock: Arc<dyn Clock>,
        sts: StsClient,
        chain: Chain,
        cache_settings: CacheSettings,
        metrics: Arc<Metrics>,
        scrubbed_accounts: impl IntoIterator<Item = String>,
    ) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(cache_settings.max_entries)
            .expire_after(ValueExpiry)
            .build();
        Self {
            cluster_id,
            clock,
            sts,
            chain,
            cache,
            cache_settings,
            metrics,
            scrubbed_accounts: scrubbed_accounts.into_iter().collect(),
        }
    }

    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether logs may show this account's ARNs and UIDs.
    pub fn is_scrubbed(&self, account_id: &str) -> bool {
        self.scrubbed_accounts.contains(account_id)
    }

    /// Identities currently cached.
    pub fn cached_entries(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Authenticates one token.
    pub async fn authenticate(&self, token_text: &str) -> Outcome {
        let parsed = token::parse(token_text);
        let (access_key_id, format) = match &parsed {
            Ok(req) => (Some(req.access_key_id.0.clone()), Some(req.format.as_str())),
            Err(_) => (None, None),
        };
        let (decision, identity, cache_hit) = self.decide(token_text, parsed).await;
        Outcome {
            decision,
            token_hash: short_hash(token_text),
            access_key_id,
            format,
            arn: identity.as_ref().map(|i| i.arn.clone()),
            account_id: identity.as_ref().map(|i| i.account_id.clone()),
            cache_hit,
        }
    }

    /// The decision for a parsed token, the identity STS confirmed (if any) and whether the
    /// cache answered.
    async fn decide(
        &self,
        token_text: &str,
        parsed: Result<token::SignedRequest, TokenError>,
    ) -> (Result<User, Denial>, Option<Arc<Identity>>, bool) {
        let now = self.clock.now();
        let req =
            match parsed.and_then(|req| token::check(&req, &self.cluster_id, now).map(|()| req)) {
                Ok(req) => req,
                Err(e) => return (Err(e.into()), None, false),
            };
        match self.confirm(token_text, req, now).await {
            Err(denial) => (Err(denial), None, false),
            Ok((Verdict::Rejected(e), hit)) => (Err(Denial::Sts(e)), None, hit),
            Ok((Verdict::Confirmed(identity), hit)) => {
                let decision = self.chain.map(&identity).map_err(Denial::from);
                (decision, Some(identity), hit)
            }
        }
    }

    /// What STS said of a token that passed the local checks: from the cache, or from one STS
    /// call shared by every concurrent review of the same token. Returns whether it was a hit.
    async fn confirm(
        &self,
        token_text: &str,
        req: token::SignedRequest,
        now: chrono::DateTime<Utc>,
    ) -> Result<(Verdict, bool), Denial> {
        let digest: [u8; 32] = Sha256::digest(token_text.as_bytes()).into();
        if let Some(hit) = self.cache.get(&digest).await {
            self.metrics.cache_hits.inc();
            return Ok((hit.verdict, true));
        }
        self.metrics.cache_misses.inc();

        // Token life left, measured on the injected clock, as a monotonic deadline.
        let life_left = (req.valid_until() - now).to_std().unwrap_or(Duration::ZERO);
        let access_key_id = req.access_key_id.0.clone();
        let sts = self.sts.clone();
        let settings = self.cache_settings.clone();
        let result = self
            .cache
            .try_get_with(digest, async move {
                match sts.get_caller_identity(&req).await {
                    Ok(ci) => {
                        let identity = Identity::from_sts(&ci, &access_key_id)
                            .map_err(|e| StsError::BadResponse(format!("identity ARN: {e}")))?;
                        Ok(CacheValue {
                            verdict: Verdict::Confirmed(Arc::new(identity)),
                            expires_at: Instant::now() + settings.ttl.min(life_left),
                        })
                    }
                    Err(e) if e.is_verdict_on_token() => Ok(CacheValue {
                        verdict: Verdict::Rejected(e),
                        expires_at: Instant::now() + settings.negative_ttl.min(life_left),
                    }),
                    Err(e) => Err(e),
                }
            })
            .await;
        self.metrics
            .cache_entries
            .set(i64::try_from(self.cache.entry_count()).unwrap_or(i64::MAX));
        match result {
            Ok(value) => Ok((value.verdict, false)),
            Err(e) => Err(match &*e {
                StsError::BadResponse(m) => Denial::BadIdentity(m.clone()),
                other => Denial::Sts(other.clone()),
            }),
        }
    }

    /// The time used for date checks.
    pub fn now(&self) -> chrono::DateTime<Utc> {
        self.clock.now()
    }
}

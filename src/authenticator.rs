//! The request path, as plain calls: token → local checks → identity cache → STS → mapping.
//!
//! The cache remembers what STS confirmed, under a SHA-256 of the token (never the token), until
//! the token's signing date + 15 minutes or the configured TTL, whichever is sooner. Concurrent
//! reviews of the same new token make one STS call (the first review holds the cache slot, the
//! others wait for what it puts there). STS's verdicts on a token (4xx such as
//! `SignatureDoesNotMatch`) are remembered briefly; transient failures (throttling, 5xx,
//! timeouts) are handed to the reviews that waited for them and then forgotten. Identities are
//! cached, mappings are applied on every review, so mapping changes take effect at once.
//!
//! An entry is small (a hash, one packed string and a deadline: about 200 bytes in all, measured), so the
//! default bound of 100,000 identities stays within a few tens of MiB.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::mapping::{principal_of, Chain, Identity, MappingError, User};
use crate::metrics::{AuthResult, Metrics};
use crate::sts::{StsClient, StsError};
use crate::token::{self, TokenError};
use crate::types::Clock;

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

/// What the cache holds for a token.
#[derive(Clone, Debug)]
enum Cached {
    /// STS confirmed the identity: `AccountId`, `Arn` and `PrincipalId`, packed in one string.
    Confirmed {
        packed: Box<str>,
        expires_at: Instant,
    },
    /// STS judged the token (a 4xx).
    Rejected(Box<(StsError, Instant)>),
    /// STS could not answer; given to the reviews that waited for this call, never kept.
    Transient(Box<StsError>),
}

impl Cached {
    fn is_fresh(&self, now: Instant) -> bool {
        match self {
            Self::Confirmed { expires_at, .. } => *expires_at > now,
            Self::Rejected(r) => r.1 > now,
            Self::Transient(_) => false,
        }
    }
}

/// Packs the parts of STS's answer that identities are rebuilt from.
fn pack(account_id: &str, arn: &str, principal_id: &str) -> Result<Box<str>, StsError> {
    if [account_id, arn, principal_id]
        .iter()
        .any(|p| p.contains('\n'))
    {
        return Err(StsError::BadResponse(
            "identity field with a line break".into(),
        ));
    }
    Ok(format!("{account_id}\n{arn}\n{principal_id}").into_boxed_str())
}

fn unpack(packed: &str, access_key_id: &str) -> Result<Identity, StsError> {
    let mut parts = packed.splitn(3, '\n');
    let (Some(account), Some(arn), Some(principal)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(StsError::BadResponse("corrupt cache entry".into()));
    };
    Identity::from_parts(account, arn, principal, access_key_id)
        .map_err(|e| StsError::BadResponse(format!("identity ARN: {e}")))
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
    #[error("identities of this account may not log in to this cluster (server.allowedAccounts)")]
    AccountNotAllowed(String),
}

impl Denial {
    /// The metric result label.
    pub fn result(&self) -> AuthResult {
        match self {
            Self::Token(_) | Self::Audience | Self::Sts(StsError::Unsendable(_)) => {
                AuthResult::invalid_token
            }
            Self::Sts(_) | Self::BadIdentity(_) => AuthResult::sts_error,
            Self::NotMapped(_) => AuthResult::unknown_user,
            Self::AccountNotAllowed(_) => AuthResult::account_not_allowed,
        }
    }

    /// A short fixed reason for the audit log.
    pub fn reason(&self) -> String {
        match self {
            Self::Token(e) => e.reason().to_string(),
            Self::Sts(StsError::Unsendable(_)) => "unsendable_request".into(),
            Self::Sts(e) => format!("sts:{}", e.code()),
            Self::BadIdentity(_) => "sts:bad_identity".into(),
            Self::NotMapped(_) => "not_mapped".into(),
            Self::Audience => "audience".into(),
            Self::AccountNotAllowed(_) => "account_not_allowed".into(),
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
    cache: quick_cache::sync::Cache<[u8; 32], Cached>,
    cache_settings: CacheSettings,
    metrics: Arc<Metrics>,
    scrubbed_accounts: HashSet<String>,
    /// Accounts allowed to log in; empty means every account.
    allowed_accounts: HashSet<String>,
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
        let cache = quick_cache::sync::Cache::new(
            usize::try_from(cache_settings.max_entries)
                .unwrap_or(usize::MAX)
                .max(1),
        );
        Self {
            cluster_id,
            clock,
            sts,
            chain,
            cache,
            cache_settings,
            metrics,
            scrubbed_accounts: scrubbed_accounts.into_iter().collect(),
            allowed_accounts: HashSet::new(),
        }
    }

    /// Denies identities of accounts not listed, before any mapping (empty: every account).
    pub fn with_allowed_accounts(mut self, accounts: impl IntoIterator<Item = String>) -> Self {
        self.allowed_accounts = accounts.into_iter().collect();
        self
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
        self.cache.len() as u64
    }

    /// Authenticates one token.
    pub async fn authenticate(&self, token_text: &str) -> Outcome {
        let parsed = token::parse(token_text);
        let (access_key_id, format) = match &parsed {
            Ok(req) => (Some(req.access_key_id.0.clone()), Some(req.format.as_str())),
            Err(_) => (None, None),
        };
        // One hash of the token serves as the cache key and, cut short, as its name in the logs
        // (the same value as `types::short_hash`).
        let digest: [u8; 32] = Sha256::digest(token_text.as_bytes()).into();
        let (decision, identity, cache_hit) = self.decide(&digest, parsed).await;
        Outcome {
            decision,
            token_hash: hex::encode(&digest[..6]),
            access_key_id,
            format,
            arn: identity.as_ref().map(|i| i.arn.clone()),
            account_id: identity.map(|i| i.account_id),
            cache_hit,
        }
    }

    /// The decision for a parsed token, the identity STS confirmed (if any) and whether the
    /// cache answered.
    async fn decide(
        &self,
        digest: &[u8; 32],
        parsed: Result<token::SignedRequest, TokenError>,
    ) -> (Result<User, Denial>, Option<Identity>, bool) {
        let now = self.clock.now();
        let checked = parsed.and_then(|req| {
            token::check(&req, &self.cluster_id, now)?;
            self.sts.check_sent_headers(&req)?;
            Ok(req)
        });
        let req = match checked {
            Ok(req) => req,
            Err(e) => return (Err(e.into()), None, false),
        };
        match self.confirm(digest, req, now).await {
            (Err(denial), hit) => (Err(denial), None, hit),
            (Ok(identity), hit) => {
                let decision = if !self.allowed_accounts.is_empty()
                    && !self.allowed_accounts.contains(&identity.account_id)
                {
                    Err(Denial::AccountNotAllowed(identity.account_id.clone()))
                } else {
                    self.chain.map(&identity).map_err(Denial::from)
                };
                (decision, Some(identity), hit)
            }
        }
    }

    /// What STS said of a token that passed the local checks: from the cache, or from one STS
    /// call shared by every concurrent review of the same token. Also says whether the cache
    /// answered.
    async fn confirm(
        &self,
        digest: &[u8; 32],
        req: token::SignedRequest,
        now: chrono::DateTime<Utc>,
    ) -> (Result<Identity, Denial>, bool) {
        let access_key_id = req.access_key_id.0.clone();
        let (cached, hit) = loop {
            match self.cache.get_value_or_guard_async(digest).await {
                Ok(value) if value.is_fresh(Instant::now()) => break (value, true),
                // Handed over by the review that made the STS call this one waited for.
                Ok(value @ Cached::Transient(_)) => break (value, false),
                Ok(_) => {
                    self.cache
                        .remove_if(digest, |v| !v.is_fresh(Instant::now()));
                }
                Err(guard) => {
                    self.metrics.cache_misses.inc();
                    let value = self.fetch(&req, now).await;
                    let transient = matches!(value, Cached::Transient(_));
                    let _ = guard.insert(value.clone());
                    if transient {
                        self.cache.remove(digest);
                    }
                    self.metrics
                        .cache_entries
                        .set(i64::try_from(self.cache.len()).unwrap_or(i64::MAX));
                    break (value, false);
                }
            }
        };
        if hit {
            self.metrics.cache_hits.inc();
        }
        let result = match cached {
            Cached::Confirmed { packed, .. } => {
                unpack(&packed, &access_key_id).map_err(|e| match e {
                    StsError::BadResponse(m) => Denial::BadIdentity(m),
                    other => Denial::Sts(other),
                })
            }
            Cached::Rejected(r) => Err(Denial::Sts(r.0)),
            Cached::Transient(e) => Err(match *e {
                StsError::BadResponse(m) => Denial::BadIdentity(m),
                other => Denial::Sts(other),
            }),
        };
        (result, hit)
    }

    /// One STS call, turned into what the cache keeps.
    async fn fetch(&self, req: &token::SignedRequest, now: chrono::DateTime<Utc>) -> Cached {
        // Token life left, measured on the injected clock, as a monotonic deadline.
        let life_left = (req.valid_until() - now).to_std().unwrap_or(Duration::ZERO);
        let settings = &self.cache_settings;
        let checked = |ci: crate::identity::CallerIdentity| {
            let principal = principal_of(&ci);
            let packed = pack(&ci.account_id, &ci.arn, &principal)?;
            // Refuse an identity whose ARN cannot be read before remembering it.
            crate::arn::Arn::parse(&ci.arn)
                .map_err(|e| StsError::BadResponse(format!("identity ARN: {e}")))?;
            Ok::<_, StsError>(packed)
        };
        match self.sts.get_caller_identity(req).await.and_then(checked) {
            Ok(packed) => Cached::Confirmed {
                packed,
                expires_at: Instant::now() + settings.ttl.min(life_left),
            },
            Err(e) if e.is_verdict_on_token() => Cached::Rejected(Box::new((
                e,
                Instant::now() + settings.negative_ttl.min(life_left),
            ))),
            Err(e) => Cached::Transient(Box::new(e)),
        }
    }

    /// The time used for date checks.
    pub fn now(&self) -> chrono::DateTime<Utc> {
        self.clock.now()
    }
}

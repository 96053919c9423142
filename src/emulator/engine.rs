//! What STS does with a request: read it (v1 RPC or v2 `ACS3-HMAC-SHA256`), check the key, the
//! date, the signature, the security token and the nonce, then answer `GetCallerIdentity` or
//! `AssumeRole`; or, unsigned, check an OIDC token and answer `AssumeRoleWithOIDC`. Plain code
//! over plain types; the HTTP layer only converts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng as _;
use serde::Serialize;

use super::errors::{shorten, StsErrorCode};
use super::keys::{IdentitySpec, Key, KeyStore, Role, StandInRole};
use super::nonce::{NonceStore, DEFAULT_CAPACITY};
use super::oidc::{self, TokenInfo};
use crate::signing::acs3::{self, Authorization};
use crate::signing::{constant_time_eq, percent_decode, rpc, sha256_hex};
use crate::types::{format_utc, Clock, Secret};

/// The STS API version accepted.
pub const STS_VERSION: &str = "2015-04-01";
/// `GetCallerIdentity`.
pub const GET_CALLER_IDENTITY: &str = "GetCallerIdentity";
/// `AssumeRole`.
pub const ASSUME_ROLE: &str = "AssumeRole";
/// `AssumeRoleWithOIDC` (not signed).
pub const ASSUME_ROLE_WITH_OIDC: &str = "AssumeRoleWithOIDC";
/// The longest `Policy` accepted.
pub const MAX_POLICY_LEN: usize = 2048;
/// How far a request date may be from the emulator's clock, either way.
pub const MAX_SKEW: TimeDelta = TimeDelta::minutes(15);
/// The most parameters a request may carry (query and form body together).
pub const MAX_PARAMS: usize = 128;
/// `AssumeRole`'s `DurationSeconds` bounds and default.
pub const MIN_DURATION: i64 = 900;
pub const MAX_DURATION: i64 = 43_200;
pub const DEFAULT_DURATION: i64 = 3_600;
/// How many temporary credentials are held at most.
pub const DEFAULT_TEMP_CAPACITY: usize = 100_000;

/// The parts of an HTTP request the emulator looks at.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// Headers with lower-case names, in the order received.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    /// v2 when the request carries an `Authorization` or `x-acs-action` header, else v1.
    pub fn scheme(&self) -> Scheme {
        if self.header("authorization").is_some() || self.header("x-acs-action").is_some() {
            Scheme::V2
        } else {
            Scheme::V1
        }
    }

    fn is_form_body(&self) -> bool {
        match self.header("content-type") {
            Some(ct) => ct
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded"),
            None => !self.body.is_empty(),
        }
    }
}

/// Which signature scheme a request used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// RPC signature 1.0, `HMAC-SHA1`, parameters in the query or a form body.
    V1,
    /// OpenAPI V3, `ACS3-HMAC-SHA256`, in the `Authorization` header.
    V2,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// What is known about a request, for logs and statistics (filled in as far as it was read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub scheme: Scheme,
    pub action: Option<String>,
    pub access_key_id: Option<String>,
}

impl RequestInfo {
    /// A cheap look at a request that is not verified (a request refused by an injected fault).
    pub fn peek(req: &Request<'_>) -> Self {
        let scheme = req.scheme();
        match scheme {
            Scheme::V2 => Self {
                scheme,
                action: req.header("x-acs-action").map(str::to_string),
                access_key_id: req
                    .header("authorization")
                    .and_then(|a| Authorization::parse(a).ok())
                    .map(|a| a.access_key_id),
            },
            Scheme::V1 => {
                let params = v1_params(req).unwrap_or_default();
                let get = |name: &str| {
                    params
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                };
                Self {
                    scheme,
                    action: get("Action"),
                    access_key_id: get("AccessKeyId"),
                }
            }
        }
    }

    /// A fixed label for the action (unknown names are grouped, so statistics stay bounded).
    pub fn action_label(&self) -> &'static str {
        match self.action.as_deref() {
            Some(GET_CALLER_IDENTITY) => GET_CALLER_IDENTITY,
            Some(ASSUME_ROLE) => ASSUME_ROLE,
            Some(ASSUME_ROLE_WITH_OIDC) => ASSUME_ROLE_WITH_OIDC,
            Some(_) => "other",
            None => "none",
        }
    }
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    CallerIdentity(IdentitySpec),
    AssumeRole(AssumedRole),
    AssumeRoleWithOidc(AssumedRole, TokenInfo),
}

/// Temporary credentials minted by `AssumeRole`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumedRole {
    pub arn: String,
    pub assumed_role_id: String,
    pub access_key_id: String,
    pub access_key_secret: Secret,
    pub security_token: Secret,
    /// `YYYY-MM-DDThh:mm:ssZ`.
    pub expiration: String,
}

/// The result of one request.
#[derive(Debug)]
pub struct Outcome {
    pub info: RequestInfo,
    pub result: Result<Reply, StsErrorCode>,
}

/// The emulated STS: the configured keys and roles, the temporary credentials it minted, the
/// nonces it saw, and its clock.
pub struct Emulator {
    store: KeyStore,
    temp: RwLock<HashMap<String, Arc<Key>>>,
    temp_capacity: usize,
    nonces: NonceStore,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("keys", &self.store.keys.len())
            .field("roles", &self.store.roles.len())
            .field("nonces", &self.nonces.len())
            .finish()
    }
}

impl Emulator {
    pub fn new(store: KeyStore, clock: Arc<dyn Clock>) -> Self {
        Self::with_capacities(store, clock, DEFAULT_CAPACITY, DEFAULT_TEMP_CAPACITY)
    }

    /// With explicit bounds on remembered nonces and live temporary credentials.
    pub fn with_capacities(
        store: KeyStore,
        clock: Arc<dyn Clock>,
        nonce_capacity: usize,
        temp_capacity: usize,
    ) -> Self {
        Self {
            store,
            temp: RwLock::new(HashMap::new()),
            temp_capacity: temp_capacity.max(1),
            nonces: NonceStore::new(nonce_capacity),
            clock,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Verifies and answers one STS request.
    pub fn handle(&self, req: &Request<'_>) -> Outcome {
        let mut info = RequestInfo {
            scheme: req.scheme(),
            action: None,
            access_key_id: None,
        };
        let result = self.handle_inner(req, &mut info);
        Outcome { info, result }
    }

    fn handle_inner(
        &self,
        req: &Request<'_>,
        info: &mut RequestInfo,
    ) -> Result<Reply, StsErrorCode> {
        if !matches!(req.method, "GET" | "POST") {
            return Err(StsErrorCode::UnsupportedMethod(shorten(req.method)));
        }
        if req.path != "/" {
            return Err(StsErrorCode::ActionNotFound(shorten(req.path)));
        }
        if is_oidc_call(req) {
            info.action = Some(ASSUME_ROLE_WITH_OIDC.to_string());
            return self.assume_role_with_oidc(req);
        }
        let call = match info.scheme {
            Scheme::V1 => parse_v1(req, info)?,
            Scheme::V2 => parse_v2(req, info)?,
        };
        if !matches!(call.action.as_str(), GET_CALLER_IDENTITY | ASSUME_ROLE) {
            return Err(StsErrorCode::ActionNotFound(shorten(&call.action)));
        }
        if call.version != STS_VERSION {
            return Err(StsErrorCode::InvalidVersion(shorten(&call.version)));
        }
        let key = self
            .lookup(&call.access_key_id)
            .ok_or(StsErrorCode::AccessKeyNotFound)?;
        if key.disabled {
            return Err(StsErrorCode::AccessKeyInactive);
        }
        let date = parse_request_date(&call.date)?;
        let now = self.clock.now();
        if (now - date).abs() > MAX_SKEW {
            return Err(StsErrorCode::TimestampExpired {
                date: format_utc(date),
                now: format_utc(now),
            });
        }
        if !call.verify(key.secret.expose()) {
            return Err(StsErrorCode::SignatureDoesNotMatch);
        }
        check_security_token(&key, call.security_token.as_deref(), now)?;
        if let Some(nonce) = &call.nonce {
            let remember = format!("{}\n{nonce}", call.access_key_id);
            let until = date + MAX_SKEW + TimeDelta::minutes(1);
            if !self.nonces.check_and_insert(&remember, until, now) {
                return Err(StsErrorCode::SignatureNonceUsed);
            }
        }
        match call.action.as_str() {
            GET_CALLER_IDENTITY => Ok(Reply::CallerIdentity(key.identity.clone())),
            _ => self.assume_role(&call, &key, now).map(Reply::AssumeRole),
        }
    }

    fn lookup(&self, access_key_id: &str) -> Option<Arc<Key>> {
        if let Some(key) = self.store.keys.get(access_key_id) {
            return Some(key.clone());
        }
        let temp = match self.temp.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        temp.get(access_key_id).cloned()
    }

    fn assume_role(
        &self,
        call: &Call,
        caller: &Key,
        now: DateTime<Utc>,
    ) -> Result<AssumedRole, StsErrorCode> {
        let get = |name: &str| {
            call.params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let arn = get("RoleArn").ok_or_else(|| StsErrorCode::MissingParameter("RoleArn".into()))?;
        let session = get("RoleSessionName")
            .ok_or_else(|| StsErrorCode::MissingParameter("RoleSessionName".into()))?;
        if !valid_session_name(session) {
            return Err(StsErrorCode::InvalidRoleSessionName);
        }
        let duration = duration_param(get("DurationSeconds"))?;
        let role = self
            .store
            .role(arn)
            .ok_or_else(|| StsErrorCode::RoleNotFound(shorten(arn)))?;
        if matches!(caller.identity, IdentitySpec::Account { .. }) {
            return Err(StsErrorCode::NoPermission(
                "Roles may not be assumed by root accounts.".into(),
            ));
        }
        match &role.trusted_access_key_ids {
            Some(trusted) if !trusted.contains(&call.access_key_id) => {
                return Err(StsErrorCode::NoPermission(format!(
                    "AccessKey {} is not trusted by role {}.",
                    shorten(&call.access_key_id),
                    role.arn
                )));
            }
            None if caller.identity.account_id() != role.account_id => {
                return Err(StsErrorCode::NoPermission(format!(
                    "account {} may not assume role {} of another account.",
                    caller.identity.account_id(),
                    role.arn
                )));
            }
            _ => {}
        }

        self.mint(role, session, duration, now)
    }

    /// Mints temporary credentials of `role` for `session`, valid `duration` seconds; they
    /// verify as `acs:ram::<acct>:assumed-role/<role>/<session>` until they expire.
    fn mint(
        &self,
        role: &Role,
        session: &str,
        duration: i64,
        now: DateTime<Utc>,
    ) -> Result<AssumedRole, StsErrorCode> {
        let mut rng = rand::rng();
        let access_key_id = format!("STS.{}", random_alphanumeric(&mut rng, 24));
        let secret = Secret::new(random_alphanumeric(&mut rng, 40));
        let mut raw = [0u8; 96];
        rng.fill(&mut raw[..]);
        let token = Secret::new(format!(
            "CAIS{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ));
        let expiration = now + TimeDelta::seconds(duration);
        let identity = IdentitySpec::AssumedRoleUser {
            account_id: role.account_id.clone(),
            role_name: role.role_name.clone(),
            role_id: role.role_id.clone(),
            session_name: session.to_string(),
        };
        let arn = format!(
            "acs:ram::{}:assumed-role/{}/{session}",
            role.account_id, role.role_name
        );
        let key = Key {
            secret: secret.clone(),
            security_token: Some(token.clone()),
            disabled: false,
            expiration: Some(expiration),
            identity,
        };
        {
            let mut temp = match self.temp.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            if temp.len() >= self.temp_capacity {
                temp.retain(|_, k| k.expiration.is_some_and(|e| e > now));
            }
            if temp.len() >= self.temp_capacity {
                return Err(StsErrorCode::Throttling);
            }
            temp.insert(access_key_id.clone(), Arc::new(key));
        }
        Ok(AssumedRole {
            arn,
            assumed_role_id: format!("{}:{session}", role.role_id),
            access_key_id,
            access_key_secret: secret,
            security_token: token,
            expiration: format_utc(expiration),
        })
    }
}

impl Emulator {
    /// Fresh credentials for a stand-in's role (ECS metadata, credentials URI), valid for its
    /// `durationSeconds` from now.
    pub fn mint_stand_in(&self, stand_in: &StandInRole) -> Result<AssumedRole, StsErrorCode> {
        let role = self
            .store
            .roles
            .get(&stand_in.role)
            .ok_or(StsErrorCode::InternalError)?;
        self.mint(
            role,
            &stand_in.session_name,
            stand_in.duration_seconds,
            self.clock.now(),
        )
    }

    /// The ECS metadata stand-in's role, when the keys file has one.
    pub fn ecs_metadata(&self) -> Option<&StandInRole> {
        self.store.ecs_metadata.as_ref()
    }

    /// The credentials URI's role, when the keys file has one.
    pub fn credentials_uri(&self) -> Option<&StandInRole> {
        self.store.credentials_uri.as_ref()
    }

    /// `AssumeRoleWithOIDC`: the parameters, the role, the provider, the token, the trust.
    fn assume_role_with_oidc(&self, req: &Request<'_>) -> Result<Reply, StsErrorCode> {
        let mut params = Vec::new();
        parse_pairs(req.query, &mut params)?;
        if !req.body.is_empty() && req.is_form_body() {
            let body = std::str::from_utf8(req.body).map_err(|_| StsErrorCode::MalformedQuery)?;
            parse_pairs(body, &mut params)?;
        }
        reject_duplicates(&params)?;
        let get = |name: &str| param(&params, name);
        let require =
            |name: &str| get(name).ok_or_else(|| StsErrorCode::MissingParameter(name.to_string()));
        let version = get("Version")
            .or_else(|| req.header("x-acs-version"))
            .ok_or_else(|| StsErrorCode::MissingParameter("Version".into()))?;
        if version != STS_VERSION {
            return Err(StsErrorCode::InvalidVersion(shorten(version)));
        }
        let role_arn = require("RoleArn")?;
        let provider_arn = require("OIDCProviderArn")?;
        let token = get("OIDCToken").ok_or_else(|| {
            StsErrorCode::OidcTokenInvalid("the OIDCToken can not be empty".into())
        })?;
        let session = require("RoleSessionName")?;
        if !valid_session_name(session) {
            return Err(StsErrorCode::InvalidRoleSessionName);
        }
        let duration = duration_param(get("DurationSeconds"))?;
        if let Some(policy) = get("Policy") {
            let is_object = policy.len() <= MAX_POLICY_LEN
                && serde_json::from_str::<serde_json::Value>(policy).is_ok_and(|v| v.is_object());
            if !is_object {
                return Err(StsErrorCode::InvalidPolicy);
            }
        }
        let role = self
            .store
            .role(role_arn)
            .ok_or_else(|| StsErrorCode::RoleNotFound(shorten(role_arn)))?;
        let provider = self.store.oidc_provider(provider_arn).ok_or_else(|| {
            StsErrorCode::AuthNoPermission("No such OIDC Provider registered.".into())
        })?;
        let now = self.clock.now();
        let info = oidc::verify(token, provider, now)?;
        if !role
            .trusted_oidc_providers
            .contains(&provider.arn.to_lowercase())
        {
            return Err(StsErrorCode::AuthNoPermission(format!(
                "role {} does not trust the OIDC provider {}.",
                role.arn, provider.arn
            )));
        }
        if let Some(subjects) = &role.oidc_subjects {
            if !subjects.iter().any(|p| oidc::glob_match(p, &info.subject)) {
                return Err(StsErrorCode::AuthNoPermission(format!(
                    "the token's subject {:?} is not allowed to assume role {}.",
                    shorten(&info.subject),
                    role.arn
                )));
            }
        }
        let creds = self.mint(role, session, duration, now)?;
        Ok(Reply::AssumeRoleWithOidc(creds, info))
    }
}

/// Whether a request is an (unsigned) `AssumeRoleWithOIDC` call: by its `x-acs-action` header
/// or its `Action` parameter.
fn is_oidc_call(req: &Request<'_>) -> bool {
    if let Some(action) = req.header("x-acs-action") {
        return action == ASSUME_ROLE_WITH_OIDC;
    }
    let mut params = Vec::new();
    let _ = parse_pairs(req.query, &mut params);
    if !req.body.is_empty() && req.is_form_body() {
        if let Ok(body) = std::str::from_utf8(req.body) {
            let _ = parse_pairs(body, &mut params);
        }
    }
    params
        .iter()
        .any(|(k, v)| k == "Action" && v == ASSUME_ROLE_WITH_OIDC)
}

/// `DurationSeconds`: 900..43200, default 3600.
fn duration_param(raw: Option<&str>) -> Result<i64, StsErrorCode> {
    match raw {
        None => Ok(DEFAULT_DURATION),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|d| (MIN_DURATION..=MAX_DURATION).contains(d))
            .ok_or_else(|| StsErrorCode::InvalidDurationSeconds(shorten(raw))),
    }
}

/// A request read far enough to be verified.
struct Call {
    action: String,
    version: String,
    access_key_id: String,
    date: String,
    nonce: Option<String>,
    security_token: Option<String>,
    /// Every parameter (v1: including `Signature`; v2: query and form body).
    params: Vec<(String, String)>,
    proof: Proof,
}

enum Proof {
    V1 {
        method: String,
    },
    V2 {
        auth: Authorization,
        query: BTreeMap<String, String>,
        headers: BTreeMap<String, String>,
        body_sha256: String,
    },
}

impl Call {
    fn verify(&self, secret: &str) -> bool {
        match &self.proof {
            Proof::V1 { method } => rpc::verify(method, &self.params, secret),
            Proof::V2 {
                auth,
                query,
                headers,
                body_sha256,
            } => acs3::verify(auth, secret, "POST", "/", query, headers, body_sha256),
        }
    }
}

fn parse_v1(req: &Request<'_>, info: &mut RequestInfo) -> Result<Call, StsErrorCode> {
    let params = v1_params(req)?;
    reject_duplicates(&params)?;
    let get = |name: &str| param(&params, name);
    let require =
        |name: &str| get(name).ok_or_else(|| StsErrorCode::MissingParameter(name.to_string()));
    info.action = get("Action").map(str::to_string);
    info.access_key_id = get("AccessKeyId").map(str::to_string);
    let action = require("Action")?.to_string();
    let version = require("Version")?.to_string();
    let access_key_id = require("AccessKeyId")?.to_string();
    require("Signature")?;
    let method = require("SignatureMethod")?;
    if method != rpc::SIGNATURE_METHOD {
        return Err(StsErrorCode::IncompleteSignature(format!(
            "SignatureMethod {:?} is not supported, use HMAC-SHA1",
            shorten(method)
        )));
    }
    let sig_version = require("SignatureVersion")?;
    if sig_version != rpc::SIGNATURE_VERSION {
        return Err(StsErrorCode::IncompleteSignature(format!(
            "SignatureVersion {:?} is not supported, use 1.0",
            shorten(sig_version)
        )));
    }
    let nonce = require("SignatureNonce")?.to_string();
    let date = require("Timestamp")?.to_string();
    let security_token = get("SecurityToken").map(str::to_string);
    Ok(Call {
        action,
        version,
        access_key_id,
        date,
        nonce: Some(nonce),
        security_token,
        params,
        proof: Proof::V1 {
            method: req.method.to_string(),
        },
    })
}

fn parse_v2(req: &Request<'_>, info: &mut RequestInfo) -> Result<Call, StsErrorCode> {
    info.action = req.header("x-acs-action").map(str::to_string);
    let authorization = req
        .header("authorization")
        .ok_or_else(|| StsErrorCode::MissingParameter("Authorization".into()))?;
    let auth = Authorization::parse(authorization)
        .map_err(|e| StsErrorCode::IncompleteSignature(e.to_string()))?;
    info.access_key_id = Some(auth.access_key_id.clone());
    if auth.algorithm != acs3::ALGORITHM {
        return Err(StsErrorCode::IncompleteSignature(format!(
            "algorithm {:?} is not supported, use {}",
            shorten(&auth.algorithm),
            acs3::ALGORITHM
        )));
    }
    if req.method != "POST" && req.method != "GET" {
        return Err(StsErrorCode::UnsupportedMethod(shorten(req.method)));
    }
    let require_header = |name: &str| {
        req.header(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| StsErrorCode::MissingParameter(name.to_string()))
    };
    let action = require_header("x-acs-action")?.to_string();
    let version = require_header("x-acs-version")?.to_string();
    let date = require_header("x-acs-date")?.to_string();

    let mut query_pairs = Vec::new();
    parse_pairs(req.query, &mut query_pairs)?;
    reject_duplicates(&query_pairs)?;
    let mut params = query_pairs.clone();
    if !req.body.is_empty() && req.is_form_body() {
        let body = std::str::from_utf8(req.body).map_err(|_| StsErrorCode::MalformedQuery)?;
        parse_pairs(body, &mut params)?;
        reject_duplicates(&params)?;
    }
    let mut headers = BTreeMap::new();
    for (name, value) in req.headers {
        if *name != "authorization" {
            headers
                .entry(name.to_string())
                .or_insert_with(|| value.to_string());
        }
    }
    Ok(Call {
        action,
        version,
        access_key_id: auth.access_key_id.clone(),
        date,
        nonce: req
            .header("x-acs-signature-nonce")
            .filter(|n| !n.is_empty())
            .map(str::to_string),
        security_token: req
            .header("x-acs-security-token")
            .filter(|t| !t.is_empty())
            .map(str::to_string),
        params,
        proof: Proof::V2 {
            auth,
            query: query_pairs.into_iter().collect(),
            headers,
            body_sha256: sha256_hex(req.body),
        },
    })
}

/// The parameters of a v1 request: the query, then a form body.
fn v1_params(req: &Request<'_>) -> Result<Vec<(String, String)>, StsErrorCode> {
    let mut params = Vec::new();
    parse_pairs(req.query, &mut params)?;
    if req.method == "POST" && !req.body.is_empty() && req.is_form_body() {
        let body = std::str::from_utf8(req.body).map_err(|_| StsErrorCode::MalformedQuery)?;
        parse_pairs(body, &mut params)?;
    }
    Ok(params)
}

/// The value of parameter `name`, if present and not empty.
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Splits and decodes `k=v&k=v` (a query string or a form body) onto `out`.
fn parse_pairs(input: &str, out: &mut Vec<(String, String)>) -> Result<(), StsErrorCode> {
    for part in input.split('&').filter(|p| !p.is_empty()) {
        if out.len() >= MAX_PARAMS {
            return Err(StsErrorCode::TooManyParameters(MAX_PARAMS));
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = percent_decode(k).ok_or(StsErrorCode::MalformedQuery)?;
        let v = percent_decode(v).ok_or(StsErrorCode::MalformedQuery)?;
        out.push((k, v));
    }
    Ok(())
}

fn reject_duplicates(params: &[(String, String)]) -> Result<(), StsErrorCode> {
    let mut seen = std::collections::HashSet::with_capacity(params.len());
    for (k, _) in params {
        if !seen.insert(k.as_str()) {
            return Err(StsErrorCode::DuplicateParameter(shorten(k)));
        }
    }
    Ok(())
}

/// Reads a request date: `YYYY-MM-DDThh:mm:ssZ` (what Alibaba's signers write), or RFC 3339.
pub fn parse_request_date(value: &str) -> Result<DateTime<Utc>, StsErrorCode> {
    chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%SZ")
        .map(|d| d.and_utc())
        .ok()
        .or_else(|| crate::types::parse_utc(value))
        .ok_or_else(|| StsErrorCode::TimestampFormat(shorten(value)))
}

fn check_security_token(
    key: &Key,
    sent: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StsErrorCode> {
    match (&key.security_token, sent) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(StsErrorCode::SecurityTokenMalformed),
        (Some(_), None) => Err(StsErrorCode::MissingSecurityToken),
        (Some(want), Some(got)) => {
            if !constant_time_eq(want.expose().as_bytes(), got.as_bytes()) {
                return Err(StsErrorCode::SecurityTokenMismatch);
            }
            if key.expiration.is_some_and(|e| e <= now) {
                return Err(StsErrorCode::SecurityTokenExpired);
            }
            Ok(())
        }
    }
}

/// 2 to 64 characters of `A-Z a-z 0-9 . @ - _`.
fn valid_session_name(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'@' | b'-' | b'_'))
}

fn random_alphanumeric(rng: &mut impl rand::Rng, len: usize) -> String {
    rng.sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A fresh STS-style request ID (upper-case UUID form).
pub fn new_request_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode_upper(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeRoleBody<'a> {
    request_id: &'a str,
    assumed_role_user: AssumedRoleUserBody<'a>,
    credentials: CredentialsBody<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeRoleWithOidcBody<'a> {
    request_id: &'a str,
    assumed_role_user: AssumedRoleUserBody<'a>,
    credentials: CredentialsBody<'a>,
    #[serde(rename = "OIDCTokenInfo")]
    oidc_token_info: OidcTokenInfoBody,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct OidcTokenInfoBody {
    subject: String,
    issuer: String,
    /// Comma-separated, as STS writes them.
    client_ids: String,
    expiration_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuance_time: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AssumedRoleUserBody<'a> {
    arn: &'a str,
    assumed_role_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialsBody<'a> {
    access_key_id: &'a str,
    access_key_secret: &'a str,
    security_token: &'a str,
    expiration: &'a str,
}

impl AssumedRole {
    fn user_body(&self) -> AssumedRoleUserBody<'_> {
        AssumedRoleUserBody {
            arn: &self.arn,
            assumed_role_id: &self.assumed_role_id,
        }
    }

    fn credentials_body(&self) -> CredentialsBody<'_> {
        CredentialsBody {
            access_key_id: &self.access_key_id,
            access_key_secret: self.access_key_secret.expose(),
            security_token: self.security_token.expose(),
            expiration: &self.expiration,
        }
    }
}

/// The HTTP status and JSON body of an answer.
pub fn render(result: &Result<Reply, StsErrorCode>, request_id: &str) -> (u16, Vec<u8>) {
    let json = match result {
        Ok(Reply::CallerIdentity(identity)) => {
            serde_json::to_vec(&identity.caller_identity(request_id))
        }
        Ok(Reply::AssumeRole(a)) => serde_json::to_vec(&AssumeRoleBody {
            request_id,
            assumed_role_user: a.user_body(),
            credentials: a.credentials_body(),
        }),
        Ok(Reply::AssumeRoleWithOidc(a, info)) => serde_json::to_vec(&AssumeRoleWithOidcBody {
            request_id,
            assumed_role_user: a.user_body(),
            credentials: a.credentials_body(),
            oidc_token_info: OidcTokenInfoBody {
                subject: info.subject.clone(),
                issuer: info.issuer.clone(),
                client_ids: info.client_ids.join(","),
                expiration_time: format_utc(info.expiration),
                issuance_time: info.issued_at.map(format_utc),
            },
        }),
        Err(e) => serde_json::to_vec(&e.body(request_id)),
    };
    let status = match result {
        Ok(_) => 200,
        Err(e) => e.status(),
    };
    // Serialising plain strings cannot fail.
    (status, json.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sts::CallerIdentity;
    use crate::token::{self, v1, v2, SignedRequest, Wire};
    use crate::types::FixedClock;
    use std::sync::atomic::{AtomicI64, Ordering};

    const KEYS: &str = r#"
keys:
  - accessKeyId: AKuser
    accessKeySecret: user-secret
    identity: {type: RAMUser, accountId: "100", userName: alice, userId: "2001"}
  - accessKeyId: STS.bob
    accessKeySecret: bob-secret
    securityToken: "CAIS+bob/token=="
    identity: {type: AssumedRoleUser, accountId: "100", roleName: Admin, roleId: "3001", sessionName: bob@example.com}
  - accessKeyId: STS.old
    accessKeySecret: old-secret
    securityToken: old-token
    expiration: 2026-01-01T00:00:00Z
    identity: {type: AssumedRoleUser, accountId: "100", roleName: Admin, roleId: "3001", sessionName: old}
  - accessKeyId: AKoff
    accessKeySecret: off-secret
    disabled: true
    identity: {type: RAMUser, accountId: "100", userName: off, userId: "2002"}
  - accessKeyId: AKroot
    accessKeySecret: root-secret
    identity: {type: Account, accountId: "100"}
  - accessKeyId: AKother
    accessKeySecret: other-secret
    identity: {type: RAMUser, accountId: "200", userName: carol, userId: "2003"}
roles:
  - arn: acs:ram::100:role/Admin
    roleId: "3001"
  - arn: acs:ram::100:role/Locked
    roleId: "3002"
    trustedAccessKeyIds: [AKother]
"#;

    const NOW: &str = "2026-11-23T09:36:00Z";

    /// A clock tests can move.
    struct TestClock(AtomicI64);
    impl Clock for TestClock {
        fn now(&self) -> DateTime<Utc> {
            DateTime::from_timestamp(self.0.load(Ordering::SeqCst), 0).expect("date")
        }
    }

    fn now() -> DateTime<Utc> {
        crate::types::parse_utc(NOW).expect("date")
    }

    fn emulator() -> Emulator {
        Emulator::new(
            KeyStore::from_yaml(KEYS).expect("keys"),
            Arc::new(FixedClock(now())),
        )
    }

    /// Runs a signed request from a token through the emulator, as the server would send it.
    fn send(em: &Emulator, req: &SignedRequest) -> Outcome {
        let query = req.query_string();
        let headers = req.headers();
        let mut hv: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        hv.push(("accept", "application/json"));
        em.handle(&Request {
            method: req.method(),
            path: "/",
            query: &query,
            headers: &hv,
            body: b"",
        })
    }

    fn v2_token(akid: &str, secret: &str, st: Option<&str>, date: &str) -> SignedRequest {
        let tok = v2::mint(&v2::MintV2 {
            access_key_id: akid,
            access_key_secret: secret,
            security_token: st,
            cluster_id: "c1",
            date,
            extra_query: &[],
            user_agent: "test",
        });
        token::parse(&tok).expect("parses")
    }

    fn v1_token(
        akid: &str,
        secret: &str,
        st: Option<&str>,
        date: &str,
        nonce: &str,
    ) -> SignedRequest {
        let tok = v1::mint(&v1::MintV1 {
            access_key_id: akid,
            access_key_secret: secret,
            security_token: st,
            cluster_id: "c1",
            timestamp: date,
            nonce,
            host: "sts.aliyuncs.com",
        });
        token::parse(&tok).expect("parses")
    }

    fn code(o: &Outcome) -> &'static str {
        match &o.result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        }
    }

    fn rpc_query(method: &str, secret: &str, params: &[(&str, &str)]) -> String {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        rpc::signed_query(method, secret, &params)
    }

    fn rpc_params<'a>(
        action: &'a str,
        akid: &'a str,
        nonce: &'a str,
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut p = vec![
            ("Action", action),
            ("Version", STS_VERSION),
            ("Format", "JSON"),
            ("AccessKeyId", akid),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", nonce),
            ("Timestamp", NOW),
        ];
        p.extend_from_slice(extra);
        p
    }

    fn get(em: &Emulator, query: &str) -> Outcome {
        em.handle(&Request {
            method: "GET",
            path: "/",
            query,
            headers: &[],
            body: b"",
        })
    }

    #[test]
    fn v2_and_v1_tokens_verify() {
        let em = emulator();
        let o = send(&em, &v2_token("AKuser", "user-secret", None, NOW));
        assert_eq!(o.info.scheme, Scheme::V2);
        assert_eq!(o.info.access_key_id.as_deref(), Some("AKuser"));
        assert_eq!(o.info.action_label(), GET_CALLER_IDENTITY);
        let Ok(Reply::CallerIdentity(id)) = &o.result else {
            panic!("{:?}", o.result)
        };
        assert_eq!(id.caller_identity("r").arn, "acs:ram::100:user/alice");

        let req = v1_token(
            "STS.bob",
            "bob-secret",
            Some("CAIS+bob/token=="),
            NOW,
            "n-1",
        );
        let o = send(&em, &req);
        assert_eq!(o.info.scheme, Scheme::V1);
        assert_eq!(code(&o), "ok");
        // The same v1 request again: its nonce was used.
        assert_eq!(code(&send(&em, &req)), "SignatureNonceUsed");
    }

    #[test]
    fn each_check_has_its_code() {
        let em = emulator();
        let cases: Vec<(SignedRequest, &str)> = vec![
            (
                v2_token("AKnone", "x", None, NOW),
                "InvalidAccessKeyId.NotFound",
            ),
            (
                v2_token("AKoff", "off-secret", None, NOW),
                "InvalidAccessKeyId.Inactive",
            ),
            (
                v2_token("AKuser", "wrong", None, NOW),
                "SignatureDoesNotMatch",
            ),
            (
                v2_token("AKuser", "user-secret", None, "2026-11-23T09:20:59Z"),
                "InvalidTimeStamp.Expired",
            ),
            (
                v2_token("AKuser", "user-secret", None, "2026-11-23T09:51:01Z"),
                "InvalidTimeStamp.Expired",
            ),
            (
                v2_token("STS.bob", "bob-secret", None, NOW),
                "MissingSecurityToken",
            ),
            (
                v2_token("STS.bob", "bob-secret", Some("other"), NOW),
                "InvalidSecurityToken.MismatchWithAccessKey",
            ),
            (
                v2_token("AKuser", "user-secret", Some("tok"), NOW),
                "InvalidSecurityToken.Malformed",
            ),
            (
                v2_token("STS.old", "old-secret", Some("old-token"), NOW),
                "InvalidSecurityToken.Expired",
            ),
        ];
        for (req, want) in cases {
            let o = send(&em, &req);
            assert_eq!(code(&o), want, "{:?}", o.info);
            let (status, body) = render(&o.result, "r");
            assert!(status >= 400);
            let text = String::from_utf8(body).expect("utf8");
            assert!(
                !text.contains("bob/token") && !text.contains("secret"),
                "{text}"
            );
        }
        // Within the window both ways.
        let o = send(
            &em,
            &v2_token("AKuser", "user-secret", None, "2026-11-23T09:21:00Z"),
        );
        assert_eq!(code(&o), "ok");
        let o = send(
            &em,
            &v2_token("AKuser", "user-secret", None, "2026-11-23T09:51:00Z"),
        );
        assert_eq!(code(&o), "ok");
    }

    #[test]
    fn v2_tampering_is_caught() {
        let em = emulator();
        let req = v2_token("AKuser", "user-secret", None, NOW);
        let Wire::V2 {
            mut query,
            headers,
            authorization,
        } = req.wire.clone()
        else {
            panic!("v2")
        };
        query.insert("ACKClusterId".into(), "other".into());
        let tampered = SignedRequest {
            wire: Wire::V2 {
                query,
                headers,
                authorization,
            },
            ..req.clone()
        };
        assert_eq!(code(&send(&em, &tampered)), "SignatureDoesNotMatch");
        // A body the signature did not cover.
        let query = req.query_string();
        let headers = req.headers();
        let hv: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let o = em.handle(&Request {
            method: "POST",
            path: "/",
            query: &query,
            headers: &hv,
            body: b"x=1",
        });
        assert_eq!(code(&o), "SignatureDoesNotMatch");
    }

    #[test]
    fn v1_parameter_checks() {
        let em = emulator();
        let q = rpc_query(
            "GET",
            "user-secret",
            &rpc_params("Nope", "AKuser", "a", &[]),
        );
        let o = get(&em, &q);
        assert_eq!(code(&o), "InvalidAction.NotFound");
        assert_eq!(o.info.action_label(), "other");
        assert_eq!(code(&get(&em, "Version=2015-04-01")), "MissingParameter");
        let mut p = rpc_params(GET_CALLER_IDENTITY, "AKuser", "b", &[]);
        p[4].1 = "HMAC-SHA256";
        assert_eq!(
            code(&get(&em, &rpc_query("GET", "user-secret", &p))),
            "IncompleteSignature"
        );
        let mut p = rpc_params(GET_CALLER_IDENTITY, "AKuser", "c", &[]);
        p[1].1 = "2020-01-01";
        assert_eq!(
            code(&get(&em, &rpc_query("GET", "user-secret", &p))),
            "InvalidVersion"
        );
        let mut p = rpc_params(GET_CALLER_IDENTITY, "AKuser", "e", &[]);
        p[7].1 = "2026-11-23 09:36:00";
        assert_eq!(
            code(&get(&em, &rpc_query("GET", "user-secret", &p))),
            "InvalidTimeStamp.Format"
        );
        assert_eq!(code(&get(&em, "Action=A&Action=B")), "InvalidParameter");
        assert_eq!(code(&get(&em, "Action=%zz")), "InvalidParameter");
        // Signed for POST, sent as GET.
        let q = rpc_query(
            "POST",
            "user-secret",
            &rpc_params(GET_CALLER_IDENTITY, "AKuser", "d", &[]),
        );
        assert_eq!(code(&get(&em, &q)), "SignatureDoesNotMatch");
        // A POST with a form body.
        let o = em.handle(&Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &[("content-type", "application/x-www-form-urlencoded")],
            body: q.as_bytes(),
        });
        assert_eq!(code(&o), "ok");
        // Other paths and methods.
        let o = em.handle(&Request {
            method: "GET",
            path: "/x",
            query: &q,
            headers: &[],
            body: b"",
        });
        assert_eq!(code(&o), "InvalidAction.NotFound");
        let o = em.handle(&Request {
            method: "PUT",
            path: "/",
            query: &q,
            headers: &[],
            body: b"",
        });
        assert_eq!(code(&o), "UnsupportedHTTPMethod");
    }

    #[test]
    fn assume_role_mints_credentials_that_work_and_expire() {
        let clock = Arc::new(TestClock(AtomicI64::new(now().timestamp())));
        let em = Emulator::new(KeyStore::from_yaml(KEYS).expect("keys"), clock.clone());
        let q = rpc_query(
            "GET",
            "user-secret",
            &rpc_params(
                ASSUME_ROLE,
                "AKuser",
                "ar-1",
                &[
                    ("RoleArn", "ACS:RAM::100:ROLE/admin"),
                    ("RoleSessionName", "kube@example.com"),
                    ("DurationSeconds", "900"),
                ],
            ),
        );
        let o = get(&em, &q);
        let Ok(Reply::AssumeRole(creds)) = &o.result else {
            panic!("{:?}", o.result)
        };
        assert_eq!(
            creds.arn,
            "acs:ram::100:assumed-role/Admin/kube@example.com"
        );
        assert_eq!(creds.assumed_role_id, "3001:kube@example.com");
        assert!(creds.access_key_id.starts_with("STS."));
        assert_eq!(creds.expiration, "2026-11-23T09:51:00Z");
        let (status, body) = render(&o.result, "r");
        assert_eq!(status, 200);
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            json["Credentials"]["AccessKeyId"],
            creds.access_key_id.as_str()
        );
        assert_eq!(
            json["AssumedRoleUser"]["AssumedRoleId"],
            "3001:kube@example.com"
        );
        assert_eq!(json["RequestId"], "r");

        let ok = v2_token(
            &creds.access_key_id,
            creds.access_key_secret.expose(),
            Some(creds.security_token.expose()),
            NOW,
        );
        let o = send(&em, &ok);
        let Ok(Reply::CallerIdentity(id)) = &o.result else {
            panic!("{:?}", o.result)
        };
        let ci: CallerIdentity = id.caller_identity("r");
        assert_eq!(ci.arn, creds.arn);
        assert_eq!(ci.principal_id.as_deref(), Some("3001:kube@example.com"));

        // 15 minutes later the credentials have expired.
        clock.0.fetch_add(900, Ordering::SeqCst);
        let later = format_utc(clock.now());
        let expired = v2_token(
            &creds.access_key_id,
            creds.access_key_secret.expose(),
            Some(creds.security_token.expose()),
            &later,
        );
        assert_eq!(code(&send(&em, &expired)), "InvalidSecurityToken.Expired");
    }

    #[test]
    fn assume_role_refusals() {
        let em = emulator();
        let try_assume = |akid: &str, secret: &str, nonce: &str, extra: &[(&str, &str)]| {
            let q = rpc_query("GET", secret, &rpc_params(ASSUME_ROLE, akid, nonce, extra));
            code(&get(&em, &q))
        };
        let admin = ("RoleArn", "acs:ram::100:role/Admin");
        let session = ("RoleSessionName", "s1");
        assert_eq!(
            try_assume("AKuser", "user-secret", "1", &[session]),
            "MissingParameter"
        );
        assert_eq!(
            try_assume("AKuser", "user-secret", "2", &[admin]),
            "MissingParameter"
        );
        assert_eq!(
            try_assume(
                "AKuser",
                "user-secret",
                "3",
                &[admin, ("RoleSessionName", "a b")]
            ),
            "InvalidParameter.RoleSessionName"
        );
        assert_eq!(
            try_assume(
                "AKuser",
                "user-secret",
                "4",
                &[admin, session, ("DurationSeconds", "899")]
            ),
            "InvalidParameter.DurationSeconds"
        );
        assert_eq!(
            try_assume(
                "AKuser",
                "user-secret",
                "5",
                &[("RoleArn", "acs:ram::100:role/Nope"), session]
            ),
            "EntityNotExist.Role"
        );
        assert_eq!(
            try_assume(
                "AKuser",
                "user-secret",
                "6",
                &[("RoleArn", "acs:ram::100:role/Locked"), session]
            ),
            "NoPermission"
        );
        assert_eq!(
            try_assume("AKother", "other-secret", "7", &[admin, session]),
            "NoPermission"
        );
        assert_eq!(
            try_assume("AKroot", "root-secret", "8", &[admin, session]),
            "NoPermission"
        );
        assert_eq!(
            try_assume(
                "AKother",
                "other-secret",
                "9",
                &[("RoleArn", "acs:ram::100:role/Locked"), session]
            ),
            "ok"
        );
    }

    #[test]
    fn temporary_credentials_are_bounded() {
        let em = Emulator::with_capacities(
            KeyStore::from_yaml(KEYS).expect("keys"),
            Arc::new(FixedClock(now())),
            100,
            2,
        );
        let results: Vec<&str> = (0..3)
            .map(|i| {
                let nonce = format!("cap-{i}");
                let q = rpc_query(
                    "GET",
                    "user-secret",
                    &rpc_params(
                        ASSUME_ROLE,
                        "AKuser",
                        &nonce,
                        &[
                            ("RoleArn", "acs:ram::100:role/Admin"),
                            ("RoleSessionName", "s1"),
                        ],
                    ),
                );
                code(&get(&em, &q))
            })
            .collect();
        assert_eq!(results, vec!["ok", "ok", "Throttling.User"]);
    }

    #[test]
    fn peek_reads_action_and_key() {
        let q = rpc_query("GET", "s", &rpc_params(ASSUME_ROLE, "AKx", "n", &[]));
        let info = RequestInfo::peek(&Request {
            method: "GET",
            path: "/",
            query: &q,
            headers: &[],
            body: b"",
        });
        assert_eq!(info.action.as_deref(), Some(ASSUME_ROLE));
        assert_eq!(info.access_key_id.as_deref(), Some("AKx"));
        assert_eq!(info.scheme, Scheme::V1);
    }

    #[test]
    fn request_ids_look_like_sts() {
        let id = new_request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(id, new_request_id());
    }
}

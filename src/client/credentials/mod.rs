//! Where the client's Alibaba Cloud credentials come from: one [`Source`] trait and one ordered
//! chain, in the order of Alibaba's own SDKs (`alibabacloud_credentials`). First found wins:
//!
//! 1. [`env`]: `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET`,
//!    `ALIBABA_CLOUD_SECURITY_TOKEN` (older names `ALICLOUD_ACCESS_KEY`, `ALICLOUD_SECRET_KEY`,
//!    `ALICLOUD_ACCESS_KEY_STS_TOKEN`).
//! 2. [`oidc`]: an OIDC role (RRSA): `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`,
//!    `ALIBABA_CLOUD_OIDC_TOKEN_FILE` and `ALIBABA_CLOUD_ROLE_ARN`, traded with STS
//!    `AssumeRoleWithOIDC`.
//! 3. [`profile`]: the aliyun CLI's `~/.aliyun/config.json` (`ALIBABA_CLOUD_CONFIG_FILE`): the
//!    profile named by `--profile` or `ALIBABA_CLOUD_PROFILE`, else its `current` one. Modes
//!    `AK`, `StsToken`, `RamRoleArn`, `ChainableRamRoleArn`, `OIDC`, `EcsRamRole`,
//!    `CredentialsURI`, `External`.
//! 4. [`ini`]: `~/.alibabacloud/credentials` (`ALIBABA_CLOUD_CREDENTIALS_FILE`).
//! 5. [`legacy`]: the old `~/.acs/credentials`.
//! 6. [`ecs`]: the ECS instance RAM role, from the metadata service (unless
//!    `ALIBABA_CLOUD_ECS_METADATA_DISABLED=true`).
//! 7. [`uri`]: a credentials URI (`ALIBABA_CLOUD_CREDENTIALS_URI`).
//!
//! `--profile NAME` narrows the chain to that profile (3 and 4); a profile named by
//! `ALIBABA_CLOUD_PROFILE` ends it after 4.
//!
//! Finding is a pure function of an injected environment and file paths ([`locate`]); getting
//! the credentials a source names ([`Fetcher::obtain`]) may call STS, the metadata service, a URI
//! or a command, and caches every temporary credential it gets (see [`super::cache`]).

pub mod ecs;
pub mod env;
pub mod external;
pub mod ini;
pub mod legacy;
pub mod oidc;
pub mod profile;
pub mod uri;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::assume_role::{self, AssumeRoleError, RoleRequest, TempCredentials};
use super::cache::{self, Cache};
use crate::sts::{StsClient, StsSettings};
use crate::types::{AccessKeyId, Clock, Secret};

/// An environment: variable name to value.
pub type Env = BTreeMap<String, String>;

/// The process environment (variables whose name and value are UTF-8).
pub fn process_env() -> Env {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Reads a variable; empty counts as unset.
pub fn env_var<'a>(env: &'a Env, name: &str) -> Option<&'a str> {
    env.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// Whether a variable is set to `true` (any case).
pub fn env_true(env: &Env, name: &str) -> bool {
    env_var(env, name).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Long-term or temporary Alibaba Cloud credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: AccessKeyId,
    pub access_key_secret: Secret,
    /// Present for temporary (STS) credentials.
    pub security_token: Option<Secret>,
}

impl Credentials {
    fn new(id: &str, secret: &str, token: Option<&str>) -> Self {
        Self {
            access_key_id: AccessKeyId(id.trim().to_string()),
            access_key_secret: Secret::new(secret.trim()),
            security_token: token
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(Secret::new),
        }
    }
}

/// A role a profile asks to assume with its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileRole {
    pub role_arn: String,
    pub session_name: Option<String>,
}

/// How the credentials a source found are obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Keys as they are, from the environment or a file.
    Static(Credentials),
    /// STS `AssumeRoleWithOIDC` with a token read from a file.
    Oidc(oidc::OidcRole),
    /// The ECS metadata service.
    Ecs(ecs::EcsRole),
    /// A credentials URI.
    Uri(uri::CredentialsUri),
    /// A command that prints credentials.
    External(external::ExternalCommand),
    /// The credentials of another profile, including the role that one assumes
    /// (`ChainableRamRoleArn` whose source profile has a role of its own).
    Chained(Box<Found>),
}

/// What a source found: how to get the credentials, and what to say about them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub provider: Provider,
    /// A role the profile asks to assume with those credentials (`RamRoleArn`,
    /// `ChainableRamRoleArn`, `ram_role_arn`).
    pub role: Option<ProfileRole>,
    /// Where the credentials came from, in words (for messages and logs).
    pub source: String,
    /// The profile used, if the credentials came from one.
    pub profile: Option<String>,
    /// A guess rather than a configuration (the ECS metadata service when nothing asked for
    /// it): when it fails, the chain goes on.
    pub probe: bool,
}

impl Found {
    fn fixed(credentials: Credentials, source: String, profile: Option<String>) -> Self {
        Self {
            provider: Provider::Static(credentials),
            role: None,
            source,
            profile,
            probe: false,
        }
    }

    /// The role ARN the provider itself assumes (OIDC), so that `ALIBABA_CLOUD_ROLE_ARN` is not
    /// assumed a second time.
    pub fn assumed_role(&self) -> Option<&str> {
        match &self.provider {
            Provider::Oidc(o) => Some(&o.role_arn),
            _ => None,
        }
    }
}

/// The files the chain reads. `None` when the path cannot be known (`HOME` unset).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Paths {
    pub aliyun_config: Option<PathBuf>,
    pub credentials_ini: Option<PathBuf>,
    pub acs_legacy: Option<PathBuf>,
}

/// Overrides the aliyun CLI config path.
pub const CONFIG_FILE_ENV: &str = "ALIBABA_CLOUD_CONFIG_FILE";
/// Overrides the credentials INI path.
pub const CREDENTIALS_FILE_ENV: &str = "ALIBABA_CLOUD_CREDENTIALS_FILE";
/// Names the profile to use when `--profile` is not given.
pub const PROFILE_ENV: &str = "ALIBABA_CLOUD_PROFILE";

impl Paths {
    /// The default paths under `$HOME`, each overridable by its environment variable.
    pub fn from_env(env: &Env) -> Self {
        let home = env_var(env, "HOME").map(PathBuf::from);
        let under_home = |rel: &str| home.as_ref().map(|h| h.join(rel));
        Self {
            aliyun_config: env_var(env, CONFIG_FILE_ENV)
                .map(PathBuf::from)
                .or_else(|| under_home(".aliyun/config.json")),
            credentials_ini: env_var(env, CREDENTIALS_FILE_ENV)
                .map(PathBuf::from)
                .or_else(|| under_home(".alibabacloud/credentials")),
            acs_legacy: under_home(".acs/credentials"),
        }
    }
}

/// Why no usable credentials were found.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{set} is set but {missing} is not: set both, or neither")]
    EnvIncomplete {
        set: &'static str,
        missing: &'static str,
    },
    #[error("{what}: {set} set but {missing} not: set all of them, or none")]
    VariablesIncomplete {
        what: &'static str,
        set: String,
        missing: String,
    },
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is malformed: {detail}")]
    Malformed { path: String, detail: String },
    #[error("{what} in {path} is incomplete: {detail}")]
    Incomplete {
        what: String,
        path: String,
        detail: String,
    },
    #[error("{what} in {path} uses {mode:?}, which is not supported (supported: {supported})")]
    Unsupported {
        what: String,
        path: String,
        mode: String,
        supported: &'static str,
    },
    #[error("profile {name:?} was not found; looked at: {}", .looked.join("; "))]
    ProfileNotFound { name: String, looked: Vec<String> },
    #[error(
        "no Alibaba Cloud credentials found; looked at: {}. Set ALIBABA_CLOUD_ACCESS_KEY_ID and \
         ALIBABA_CLOUD_ACCESS_KEY_SECRET, or configure a profile with `aliyun configure`",
        .looked.join("; ")
    )]
    NotFound { looked: Vec<String> },
    /// A configured source could not deliver (no answer, a refusal, a bad answer).
    #[error("{what}: {detail}")]
    Failed { what: String, detail: String },
    #[error(transparent)]
    Role(#[from] AssumeRoleError),
}

/// What a source's look-up gives.
pub enum Lookup {
    Found(Box<Found>),
    /// Nothing here; the note says where it looked and why it went on.
    NotHere(String),
}

/// What the sources read: the environment, the files, and what the command line says.
pub struct Context<'a> {
    pub env: &'a Env,
    pub paths: &'a Paths,
    /// `--profile`.
    pub profile_flag: Option<&'a str>,
    /// `--session-name` (or `ALIBABA_CLOUD_ROLE_SESSION_NAME`).
    pub session_name: Option<&'a str>,
    /// `--duration-seconds`: the lifetime asked for temporary credentials.
    pub duration_seconds: u32,
}

impl<'a> Context<'a> {
    /// A context with defaults for what the command line did not say.
    pub fn new(env: &'a Env, paths: &'a Paths, profile_flag: Option<&'a str>) -> Self {
        Self {
            env,
            paths,
            profile_flag: profile_flag.map(str::trim).filter(|p| !p.is_empty()),
            session_name: None,
            duration_seconds: assume_role::DEFAULT_DURATION_SECONDS,
        }
    }

    /// The profile asked for: `--profile`, else `ALIBABA_CLOUD_PROFILE`.
    pub fn profile(&self) -> Option<&'a str> {
        self.profile_flag.or_else(|| env_var(self.env, PROFILE_ENV))
    }
}

/// One place credentials can come from.
pub trait Source: Sync {
    /// Looks for this source's configuration, without any network call. A source that is
    /// configured but broken is an error; one that is absent says where it looked.
    fn locate(&self, ctx: &Context<'_>) -> Result<Lookup, CredentialError>;
}

/// The chain for `ctx`, in order.
fn sources(ctx: &Context<'_>) -> Vec<&'static dyn Source> {
    if ctx.profile_flag.is_some() {
        return vec![&profile::AliyunCli, &ini::Ini];
    }
    let mut chain: Vec<&'static dyn Source> = vec![
        &env::Environment,
        &oidc::OidcEnv,
        &profile::AliyunCli,
        &ini::Ini,
    ];
    if ctx.profile().is_none() {
        chain.extend([
            &legacy::Legacy as &'static dyn Source,
            &ecs::EcsMetadata,
            &uri::UriEnv,
        ]);
    }
    chain
}

/// Finds the first source from position `start` that has credentials; notes where it looked.
fn locate_from(
    ctx: &Context<'_>,
    start: usize,
    looked: &mut Vec<String>,
) -> Result<Option<(usize, Found)>, CredentialError> {
    for (i, source) in sources(ctx).into_iter().enumerate().skip(start) {
        match source.locate(ctx)? {
            Lookup::Found(found) => return Ok(Some((i, *found))),
            Lookup::NotHere(note) => looked.push(note),
        }
    }
    Ok(None)
}

fn nothing_found(ctx: &Context<'_>, looked: Vec<String>) -> CredentialError {
    match ctx.profile() {
        Some(name) => CredentialError::ProfileNotFound {
            name: name.to_string(),
            looked,
        },
        None => CredentialError::NotFound { looked },
    }
}

/// The first source that has credentials (without fetching them).
pub fn locate(ctx: &Context<'_>) -> Result<Found, CredentialError> {
    let mut looked = Vec::new();
    match locate_from(ctx, 0, &mut looked)? {
        Some((_, found)) => Ok(found),
        None => Err(nothing_found(ctx, looked)),
    }
}

/// Credentials ready to sign with, and where they came from.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub found: Found,
    pub credentials: Credentials,
    /// When temporary credentials expire.
    pub expiration: Option<DateTime<Utc>>,
}

/// Runs the chain and gets the credentials of the first source that has them. A probe that
/// fails (no metadata service) is noted and the chain goes on.
pub async fn resolve(
    ctx: &Context<'_>,
    fetcher: &Fetcher<'_>,
) -> Result<Resolved, CredentialError> {
    let mut looked = Vec::new();
    let mut start = 0;
    while let Some((i, found)) = locate_from(ctx, start, &mut looked)? {
        match fetcher.obtain(&found).await {
            Ok(r) => return Ok(r),
            Err(e) if found.probe => {
                tracing::debug!(source = %found.source, error = %e, "probe found nothing");
                looked.push(format!("{} ({e})", found.source));
                start = i + 1;
            }
            Err(e) => return Err(e),
        }
    }
    Err(nothing_found(ctx, looked))
}

/// Gets credentials over the network (STS, the metadata service, a URI, a command) and keeps
/// every temporary one in the cache.
pub struct Fetcher<'a> {
    pub env: &'a Env,
    pub clock: &'a dyn Clock,
    pub cache: Option<Cache>,
    /// How to reach STS (`AssumeRole`, `AssumeRoleWithOIDC`).
    pub sts: StsSettings,
    /// The metadata service's base URL.
    pub metadata_endpoint: String,
}

impl Fetcher<'_> {
    fn sts_client(&self) -> Result<StsClient, CredentialError> {
        StsClient::new(self.sts.clone(), None).map_err(|e| CredentialError::Failed {
            what: "STS client".into(),
            detail: e.to_string(),
        })
    }

    /// The credentials `found` names: as they are, from the cache while fresh, else fetched.
    pub async fn obtain(&self, found: &Found) -> Result<Resolved, CredentialError> {
        let resolved = |credentials: Credentials, expiration| Resolved {
            found: found.clone(),
            credentials,
            expiration,
        };
        // What identifies fetched credentials in the cache.
        let (kind, id) = match &found.provider {
            Provider::Static(c) => return Ok(resolved(c.clone(), None)),
            Provider::Chained(base) => {
                let (credentials, expiration) = self.obtain_with_role(base).await?;
                return Ok(resolved(credentials, expiration));
            }
            Provider::Oidc(o) => ("oidc", o.cache_id(&self.sts.endpoint)),
            Provider::Ecs(e) => ("ecs", e.cache_id(&self.metadata_endpoint)),
            Provider::Uri(u) => ("uri", u.url.clone()),
            Provider::External(x) => ("external", x.command.clone()),
        };
        let key = cache::source_key(kind, &id);
        if let Some(hit) = self
            .cache
            .as_ref()
            .and_then(|c| c.load(&key, kind, self.clock.now()))
        {
            return Ok(resolved(hit.credentials, Some(hit.expiration)));
        }
        let temp = match &found.provider {
            Provider::Oidc(o) => {
                o.fetch(&self.sts_client()?, self.env, self.clock.now())
                    .await?
            }
            Provider::Ecs(e) => e.fetch(self.env, &self.metadata_endpoint).await?,
            Provider::Uri(u) => u.fetch().await?,
            Provider::External(x) => match x.run().await? {
                external::Output::Temporary(t) => t,
                // No expiration: nothing to cache.
                external::Output::Keys(c) => return Ok(resolved(c, None)),
            },
            Provider::Static(_) | Provider::Chained(_) => {
                return Err(CredentialError::Failed {
                    what: found.source.clone(),
                    detail: "nothing to fetch".into(),
                })
            }
        };
        self.store(&key, kind, &temp);
        Ok(resolved(temp.credentials, Some(temp.expiration)))
    }

    /// The credentials of `found` with its own role assumed, if it has one (the source profile
    /// of a `ChainableRamRoleArn` profile).
    async fn obtain_with_role(
        &self,
        found: &Found,
    ) -> Result<(Credentials, Option<DateTime<Utc>>), CredentialError> {
        let base = Box::pin(self.obtain(found)).await?;
        let request = assume_role::choose_role(
            None,
            None,
            assume_role::DEFAULT_DURATION_SECONDS,
            self.env,
            found.role.as_ref(),
        )?;
        Ok(match request {
            None => (base.credentials, base.expiration),
            Some(role) => {
                let t = self.assume_role(&base, &role).await?;
                (t.credentials, Some(t.expiration))
            }
        })
    }

    fn store(&self, key: &str, id: &str, temp: &TempCredentials) {
        if let Some(cache) = &self.cache {
            if let Err(e) = cache.store(key, id, temp) {
                tracing::warn!(dir = %cache.dir().display(), error = %e, "cannot write the credentials cache; continuing without it");
            }
        }
    }

    /// The role's temporary credentials, assumed with `base`: from the cache while fresh, else
    /// from STS (then cached).
    pub async fn assume_role(
        &self,
        base: &Resolved,
        role: &RoleRequest,
    ) -> Result<TempCredentials, CredentialError> {
        let key = cache::key(&cache::KeyParts {
            base_access_key_id: &base.credentials.access_key_id.0,
            profile: base.found.profile.as_deref(),
            role_arn: &role.role_arn,
            session_name: &role.session_name,
            endpoint: &self.sts.endpoint,
        });
        if let Some(hit) = self
            .cache
            .as_ref()
            .and_then(|c| c.load(&key, &role.role_arn, self.clock.now()))
        {
            return Ok(hit);
        }
        let client = self.sts_client()?;
        tracing::debug!(role_arn = %role.role_arn, session = %role.session_name, endpoint = %self.sts.endpoint, "assuming role");
        let temp = assume_role::assume_role(
            &client,
            &base.credentials,
            role,
            self.clock.now(),
            &super::exec_credential::random_nonce(),
        )
        .await?;
        self.store(&key, &role.role_arn, &temp);
        Ok(temp)
    }
}

/// Reads a small text file; `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, CredentialError> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| CredentialError::Malformed {
                path: path.display().to_string(),
                detail: "not UTF-8 text".into(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CredentialError::Unreadable {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn json_error_kind(e: &serde_json::Error) -> &'static str {
    // serde's full message can quote the input (a secret): name only the kind of fault.
    match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected value type",
        serde_json::error::Category::Eof => "unexpected end of file",
    }
}

/// The answer shape shared by the ECS metadata service and credentials URIs:
/// `{"Code":"Success","AccessKeyId","AccessKeySecret","SecurityToken","Expiration"}`.
#[derive(serde::Deserialize)]
struct CodeCredentials {
    #[serde(default, rename = "Code")]
    code: String,
    #[serde(flatten)]
    credentials: assume_role::ResponseCredentials,
}

/// Reads a `Code: Success` answer; anything else is refused with a reason (never the body).
fn parse_code_credentials(body: &[u8]) -> Result<TempCredentials, String> {
    let c: CodeCredentials = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the answer is not the expected JSON (line {}, column {}: {})",
            e.line(),
            e.column(),
            json_error_kind(&e)
        )
    })?;
    if c.code != "Success" {
        let code: String = c
            .code
            .chars()
            .take(80)
            .map(|ch| if ch.is_control() { '?' } else { ch })
            .collect();
        return Err(format!("the answer has Code {code:?}, not \"Success\""));
    }
    c.credentials
        .into_temp(String::new())
        .map_err(|e| format!("the answer has {e}"))
}

/// A plain HTTP client for the metadata service and credentials URIs: no proxy, no
/// redirects, the given timeouts.
fn http_client(
    connect: std::time::Duration,
    total: std::time::Duration,
) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .tls_backend_rustls()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect)
        .timeout(total)
        .user_agent(super::exec_credential::USER_AGENT)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// The most bytes read from the metadata service, a credentials URI or a command.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Reads a response body up to [`MAX_ANSWER_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!(
                "the answer is larger than {MAX_ANSWER_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error in words, without the URL (it may hold a token).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        let mut detail = String::new();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        format!("cannot connect ({detail})")
    } else {
        "the request failed".into()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    /// An environment from pairs (shared by the client's unit tests).
    pub(crate) fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    struct Home {
        dir: tempfile::TempDir,
    }

    impl Home {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }
        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, text).expect("write");
            path
        }
        fn env(&self, extra: &[(&str, &str)]) -> Env {
            let mut e = env(extra);
            e.insert("HOME".into(), self.dir.path().display().to_string());
            e
        }
        /// The chain's first find (ECS disabled unless `extra` says otherwise).
        fn resolve(
            &self,
            extra: &[(&str, &str)],
            profile: Option<&str>,
        ) -> Result<Found, CredentialError> {
            let mut e = self.env(&[(ecs::DISABLED_ENV, "true")]);
            e.extend(env(extra));
            locate(&Context::new(&e, &Paths::from_env(&e), profile))
        }
    }

    const ALIYUN: &str = r#"{"current":"default","profiles":[
        {"name":"default","mode":"AK","access_key_id":"AK1","access_key_secret":"S1","region_id":"cn-hangzhou"},
        {"name":"sts","mode":"StsToken","access_key_id":"STS.2","access_key_secret":"SecretTwo","sts_token":"TokenTwo"},
        {"name":"role","mode":"RamRoleArn","access_key_id":"AK3","access_key_secret":"S3","ram_role_arn":"acs:ram::1:role/r","ram_session_name":"sess"},
        {"name":"ecs","mode":"EcsRamRole","ram_role_name":"x"},
        {"name":"sso","mode":"CloudSSO"},
        {"name":"oidc","mode":"OIDC","oidc_provider_arn":"acs:ram::1:oidc-provider/p","oidc_token_file":"/t","ram_role_arn":"acs:ram::1:role/o"},
        {"name":"uri","mode":"CredentialsURI","credentials_uri":"http://127.0.0.1:1/c"},
        {"name":"ext","mode":"External","process_command":"/bin/creds --json"},
        {"name":"chain","mode":"ChainableRamRoleArn","source_profile":"default","ram_role_arn":"acs:ram::1:role/c","ram_session_name":"cs"},
        {"name":"chain2","mode":"ChainableRamRoleArn","source_profile":"role","ram_role_arn":"acs:ram::1:role/c2"},
        {"name":"loop","mode":"ChainableRamRoleArn","source_profile":"loop","ram_role_arn":"acs:ram::1:role/l"},
        {"name":"orphan","mode":"ChainableRamRoleArn","source_profile":"nobody","ram_role_arn":"acs:ram::1:role/l"},
        {"name":"halfoidc","mode":"OIDC","oidc_provider_arn":"acs:ram::1:oidc-provider/p"},
        {"name":"half","mode":"AK","access_key_id":"AK5"},
        {"name":"nosts","mode":"StsToken","access_key_id":"AK6","access_key_secret":"S6"},
        {"name":"norole","mode":"RamRoleArn","access_key_id":"AK7","access_key_secret":"S7"}
    ]}"#;

    const INI: &str = "# comment\n[default]\ntype = access_key\naccess_key_id = INI1\naccess_key_secret = IS1\n\n\
        [sts]\ntype = sts\naccess_key_id = STS.I2\naccess_key_secret = IS2\nsecurity_token = IT2\n\n\
        [role]\ntype = ram_role_arn\naccess_key_id = INI3\naccess_key_secret = IS3\nrole_arn = acs:ram::1:role/ini\nrole_session_name = s3\n\n\
        [ecs]\ntype = ecs_ram_role\nrole_name = x\n\n\
        [off]\nenable = false\ntype = access_key\naccess_key_id = X\naccess_key_secret = Y\n\n\
        [half]\ntype = access_key\naccess_key_id = INI6\n\n\
        [notype]\naccess_key_id = a\n";

    /// The keys of a source that has them as they are.
    fn keys(f: &Found) -> &Credentials {
        match &f.provider {
            Provider::Static(c) => c,
            other => panic!("not static keys: {other:?}"),
        }
    }

    #[test]
    fn environment_wins_and_reads_aliases() {
        let home = Home::new();
        home.write(".aliyun/config.json", ALIYUN);
        let f = home
            .resolve(
                &[
                    ("ALIBABA_CLOUD_ACCESS_KEY_ID", "E1"),
                    ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ES1"),
                    ("ALIBABA_CLOUD_SECURITY_TOKEN", "ET1"),
                ],
                None,
            )
            .expect("env");
        assert_eq!(keys(&f).access_key_id.0, "E1");
        assert_eq!(keys(&f).access_key_secret.expose(), "ES1");
        assert_eq!(
            keys(&f).security_token.as_ref().map(Secret::expose),
            Some("ET1")
        );
        assert_eq!(f.source, "environment (ALIBABA_CLOUD_ACCESS_KEY_ID)");

        let f = home
            .resolve(
                &[
                    ("ALICLOUD_ACCESS_KEY", "A1"),
                    ("ALICLOUD_SECRET_KEY", "AS1"),
                    ("ALICLOUD_ACCESS_KEY_STS_TOKEN", "AT1"),
                ],
                None,
            )
            .expect("aliases");
        assert_eq!(keys(&f).access_key_id.0, "A1");
        assert_eq!(
            keys(&f).security_token.as_ref().map(Secret::expose),
            Some("AT1")
        );
        // Empty values count as unset: the file is used.
        let f = home
            .resolve(&[("ALIBABA_CLOUD_ACCESS_KEY_ID", "")], None)
            .expect("file");
        assert_eq!(keys(&f).access_key_id.0, "AK1");
    }

    #[test]
    fn incomplete_environment_is_an_error() {
        let home = Home::new();
        let err = |pairs: &[(&str, &str)]| {
            home.resolve(pairs, None)
                .expect_err("incomplete")
                .to_string()
        };
        assert_eq!(
            err(&[("ALIBABA_CLOUD_ACCESS_KEY_ID", "x")]),
            "ALIBABA_CLOUD_ACCESS_KEY_ID is set but ALIBABA_CLOUD_ACCESS_KEY_SECRET is not: set both, or neither"
        );
        assert!(
            err(&[("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "x")]).starts_with(
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET is set but ALIBABA_CLOUD_ACCESS_KEY_ID is not"
            )
        );
        assert!(err(&[("ALICLOUD_ACCESS_KEY", "x")])
            .starts_with("ALICLOUD_ACCESS_KEY is set but ALICLOUD_SECRET_KEY is not"));
        assert!(err(&[("ALICLOUD_SECRET_KEY", "x")])
            .starts_with("ALICLOUD_SECRET_KEY is set but ALICLOUD_ACCESS_KEY is not"));
        assert!(err(&[("ALIBABA_CLOUD_SECURITY_TOKEN", "x")]).starts_with(
            "ALIBABA_CLOUD_SECURITY_TOKEN is set but ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET is not"
        ));
    }

    #[test]
    fn aliyun_cli_profiles() {
        let home = Home::new();
        home.write(".aliyun/config.json", ALIYUN);
        let f = home.resolve(&[], None).expect("current");
        assert_eq!(keys(&f).access_key_id.0, "AK1");
        assert_eq!(f.profile.as_deref(), Some("default"));
        assert!(keys(&f).security_token.is_none());
        assert!(f.role.is_none());

        let f = home.resolve(&[], Some("sts")).expect("sts");
        assert_eq!(
            keys(&f).security_token.as_ref().map(Secret::expose),
            Some("TokenTwo")
        );
        let f = home
            .resolve(&[(PROFILE_ENV, "role")], None)
            .expect("role via env");
        assert_eq!(keys(&f).access_key_id.0, "AK3");
        assert_eq!(
            f.role,
            Some(ProfileRole {
                role_arn: "acs:ram::1:role/r".into(),
                session_name: Some("sess".into())
            })
        );

        let f = home.resolve(&[], Some("ecs")).expect("ecs");
        assert_eq!(
            f.provider,
            Provider::Ecs(ecs::EcsRole {
                role_name: Some("x".into())
            })
        );
        assert!(!f.probe, "a profile asks for ECS: its failure is an error");
        let e = home.resolve(&[], Some("sso")).expect_err("sso").to_string();
        assert!(
            e.contains("mode CloudSSO") && e.contains("not supported"),
            "{e}"
        );
        let e = home
            .resolve(&[], Some("half"))
            .expect_err("half")
            .to_string();
        assert!(e.contains("needs access_key_secret"), "{e}");
        let e = home
            .resolve(&[], Some("nosts"))
            .expect_err("nosts")
            .to_string();
        assert!(e.contains("needs sts_token"), "{e}");
        let e = home
            .resolve(&[], Some("norole"))
            .expect_err("norole")
            .to_string();
        assert!(e.contains("needs ram_role_arn"), "{e}");
    }

    #[test]
    fn profile_flag_beats_environment() {
        let home = Home::new();
        home.write(".aliyun/config.json", ALIYUN);
        let f = home
            .resolve(
                &[
                    ("ALIBABA_CLOUD_ACCESS_KEY_ID", "E1"),
                    ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ES1"),
                ],
                Some("sts"),
            )
            .expect("flag");
        assert_eq!(keys(&f).access_key_id.0, "STS.2");
        // ALIBABA_CLOUD_PROFILE does not: the environment's keys come first.
        let f = home
            .resolve(
                &[
                    ("ALIBABA_CLOUD_ACCESS_KEY_ID", "E1"),
                    ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ES1"),
                    (PROFILE_ENV, "sts"),
                ],
                None,
            )
            .expect("env");
        assert_eq!(keys(&f).access_key_id.0, "E1");
    }

    #[test]
    fn malformed_aliyun_config_does_not_leak_its_content() {
        let home = Home::new();
        home.write(".aliyun/config.json", r#"{"current": "default", "profiles": [{"name": "default", "access_key_secret": SECRETVALUE}]}"#);
        let e = home.resolve(&[], None).expect_err("bad json").to_string();
        assert!(e.contains("malformed") && e.contains("syntax error"), "{e}");
        assert!(!e.contains("SECRETVALUE"));
    }

    #[test]
    fn ini_sections_and_types() {
        let home = Home::new();
        home.write(".alibabacloud/credentials", INI);
        let f = home.resolve(&[], None).expect("default");
        assert_eq!(keys(&f).access_key_id.0, "INI1");
        assert_eq!(keys(&f).access_key_secret.expose(), "IS1");
        assert!(f.source.starts_with("section [default] of "));
        let f = home.resolve(&[], Some("sts")).expect("sts");
        assert_eq!(
            keys(&f).security_token.as_ref().map(Secret::expose),
            Some("IT2")
        );
        let f = home.resolve(&[], Some("role")).expect("role");
        assert_eq!(
            f.role,
            Some(ProfileRole {
                role_arn: "acs:ram::1:role/ini".into(),
                session_name: Some("s3".into())
            })
        );
        let e = home.resolve(&[], Some("ecs")).expect_err("ecs").to_string();
        assert!(
            e.contains("type ecs_ram_role") && e.contains("not supported"),
            "{e}"
        );
        let e = home
            .resolve(&[], Some("half"))
            .expect_err("half")
            .to_string();
        assert!(e.contains("type access_key needs access_key_secret"), "{e}");
        let e = home
            .resolve(&[], Some("notype"))
            .expect_err("notype")
            .to_string();
        assert!(e.contains("no type"), "{e}");
        let e = home.resolve(&[], Some("off")).expect_err("off").to_string();
        assert!(
            e.contains("profile \"off\" was not found") && e.contains("enable = false"),
            "{e}"
        );
    }

    #[test]
    fn ini_path_override_and_malformed_ini() {
        let home = Home::new();
        let path = home.write(
            "elsewhere.ini",
            "[default]\ntype = access_key\naccess_key_id = O1\naccess_key_secret = OS1\n",
        );
        let f = home
            .resolve(&[(CREDENTIALS_FILE_ENV, &path.display().to_string())], None)
            .expect("override");
        assert_eq!(keys(&f).access_key_id.0, "O1");

        home.write(".alibabacloud/credentials", "[default\ntype = access_key\n");
        let e = home.resolve(&[], None).expect_err("bad ini").to_string();
        assert!(
            e.contains("line 1: section header without closing ]"),
            "{e}"
        );
        home.write(".alibabacloud/credentials", "access_key_id = x\n");
        let e = home.resolve(&[], None).expect_err("bad ini").to_string();
        assert!(e.contains("outside of any [section]"), "{e}");
        home.write(".alibabacloud/credentials", "[default]\njust words\n");
        let e = home.resolve(&[], None).expect_err("bad ini").to_string();
        assert!(e.contains("line 2: expected `key = value`"), "{e}");
    }

    #[test]
    fn aliyun_config_override_and_fallthrough_to_ini() {
        let home = Home::new();
        let cfg = home.write("cli.json", ALIYUN);
        home.write(".alibabacloud/credentials", INI);
        let f = home
            .resolve(&[(CONFIG_FILE_ENV, &cfg.display().to_string())], None)
            .expect("override");
        assert_eq!(keys(&f).access_key_id.0, "AK1");
        // A profile the CLI config lacks is looked up in the INI file.
        home.write(".aliyun/config.json", r#"{"current":"x","profiles":[]}"#);
        let f = home.resolve(&[], None).expect("ini default");
        assert_eq!(keys(&f).access_key_id.0, "INI1");
    }

    #[test]
    fn legacy_acs_credentials() {
        let home = Home::new();
        home.write(
            ".acs/credentials",
            r#"{"AcsAccessKeyId":"L1","AcsAccessKeySecret":"LS1","AcsAccessSecurityToken":"LT1"}"#,
        );
        let f = home.resolve(&[], None).expect("legacy");
        assert_eq!(keys(&f).access_key_id.0, "L1");
        assert_eq!(
            keys(&f).security_token.as_ref().map(Secret::expose),
            Some("LT1")
        );
        home.write(
            ".acs/credentials",
            r#"{"AcsAccessKeyId":"L1","AcsAccessKeySecret":"LS1","AcsAccessSecurityToken":""}"#,
        );
        assert!(keys(&home.resolve(&[], None).expect("legacy"))
            .security_token
            .is_none());
        home.write(".acs/credentials", r#"{"AcsAccessKeyId":"L1"}"#);
        let e = home.resolve(&[], None).expect_err("half").to_string();
        assert!(e.contains("AcsAccessKeySecret is missing"), "{e}");
        home.write(".acs/credentials", "not json");
        let e = home.resolve(&[], None).expect_err("bad").to_string();
        assert!(e.contains("malformed"), "{e}");
        // A named profile never falls back to the profile-less legacy file.
        home.write(
            ".acs/credentials",
            r#"{"AcsAccessKeyId":"L1","AcsAccessKeySecret":"LS1"}"#,
        );
        let e = home
            .resolve(&[], Some("p"))
            .expect_err("no profile")
            .to_string();
        assert!(e.contains("profile \"p\" was not found"), "{e}");
    }

    #[test]
    fn nothing_found_lists_every_place() {
        let home = Home::new();
        let e = home.resolve(&[], None).expect_err("none").to_string();
        assert!(
            e.contains("environment (ALIBABA_CLOUD_ACCESS_KEY_ID"),
            "{e}"
        );
        assert!(e.contains(".aliyun/config.json (not found)"), "{e}");
        assert!(e.contains(".alibabacloud/credentials (not found)"), "{e}");
        assert!(e.contains(".acs/credentials (not found)"), "{e}");
        assert!(
            e.contains("ECS instance RAM role (ALIBABA_CLOUD_ECS_METADATA_DISABLED=true)"),
            "{e}"
        );
        assert!(
            e.contains("credentials URI (ALIBABA_CLOUD_CREDENTIALS_URI: not set)"),
            "{e}"
        );
        assert!(
            e.contains("OIDC role (ALIBABA_CLOUD_OIDC_PROVIDER_ARN"),
            "{e}"
        );
        let e = env(&[(ecs::DISABLED_ENV, "true")]);
        let e = locate(&Context::new(&e, &Paths::from_env(&e), None))
            .expect_err("no home")
            .to_string();
        assert!(e.contains("HOME is not set"), "{e}");
        // Without ECS disabled, the metadata service is the last guess but one (a probe).
        let home = Home::new();
        let e = home.env(&[]);
        let f = locate(&Context::new(&e, &Paths::from_env(&e), None)).expect("ecs probe");
        assert_eq!(f.provider, Provider::Ecs(ecs::EcsRole { role_name: None }));
        assert!(f.probe);
        let e = home.env(&[(ecs::ROLE_ENV, "EcsRole")]);
        let f = locate(&Context::new(&e, &Paths::from_env(&e), None)).expect("ecs role");
        assert!(!f.probe, "a named role is asked for");
        let f = home
            .resolve(&[(uri::URI_ENV, "http://127.0.0.1:1/creds")], None)
            .expect("uri");
        assert_eq!(
            f.provider,
            Provider::Uri(uri::CredentialsUri {
                url: "http://127.0.0.1:1/creds".into()
            })
        );
    }

    #[test]
    fn code_success_answers() {
        let t = parse_code_credentials(
            br#"{"Code":"Success","AccessKeyId":"STS.e","AccessKeySecret":"s","SecurityToken":"t","Expiration":"2030-01-01T00:00:00Z","LastUpdated":"x"}"#,
        )
        .expect("success");
        assert_eq!(t.credentials.access_key_id.0, "STS.e");
        for (bad, why) in [
            (&br#"{"Code":"Failed","AccessKeyId":"a","AccessKeySecret":"s","SecurityToken":"t","Expiration":"2030-01-01T00:00:00Z"}"#[..], "Code \"Failed\""),
            (br#"{"AccessKeyId":"a","AccessKeySecret":"s","SecurityToken":"t","Expiration":"2030-01-01T00:00:00Z"}"#, "Code \"\""),
            (br#"{"Code":"Success","AccessKeyId":"a","AccessKeySecret":"s","Expiration":"2030-01-01T00:00:00Z"}"#, "without SecurityToken"),
            (br#"{"Code":"Success","AccessKeyId":"a","AccessKeySecret":"s","SecurityToken":"t","Expiration":"soon"}"#, "not a date"),
            (b"<html>SECRET</html>", "not the expected JSON"),
        ] {
            let e = parse_code_credentials(bad).expect_err("refused");
            assert!(e.contains(why), "{e}");
            assert!(!e.contains("SECRET"));
        }
    }

    #[test]
    fn oidc_from_the_environment() {
        let home = Home::new();
        home.write(".aliyun/config.json", ALIYUN);
        let all = [
            (
                oidc::PROVIDER_ARN_ENV,
                "acs:ram::1:oidc-provider/ack-rrsa-c1",
            ),
            (oidc::TOKEN_FILE_ENV, "/var/run/secrets/tokens/oidc-token"),
            ("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::1:role/app"),
        ];
        // Before the CLI profile, after the environment's keys.
        let f = home.resolve(&all, None).expect("oidc");
        let Provider::Oidc(o) = &f.provider else {
            panic!("not oidc: {f:?}");
        };
        assert_eq!(o.role_arn, "acs:ram::1:role/app");
        assert_eq!(o.provider_arn, "acs:ram::1:oidc-provider/ack-rrsa-c1");
        assert_eq!(f.assumed_role(), Some("acs:ram::1:role/app"));
        let mut with_keys = all.to_vec();
        with_keys.extend([
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "E1"),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ES1"),
        ]);
        assert_eq!(
            keys(&home.resolve(&with_keys, None).expect("env"))
                .access_key_id
                .0,
            "E1"
        );
        // Each one missing is named.
        for skip in 0..3 {
            let some: Vec<_> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, kv)| *kv)
                .collect();
            let e = home
                .resolve(&some, None)
                .expect_err("incomplete")
                .to_string();
            assert!(
                e.starts_with("OIDC role: ") && e.contains(&format!("{} not", all[skip].0)),
                "{e}"
            );
        }
        // The role ARN alone is a role to assume with other credentials, not OIDC.
        let f = home
            .resolve(&[("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::1:role/app")], None)
            .expect("cli profile");
        assert_eq!(keys(&f).access_key_id.0, "AK1");
    }

    #[test]
    fn new_cli_profile_modes() {
        let home = Home::new();
        home.write(".aliyun/config.json", ALIYUN);
        let f = home.resolve(&[], Some("oidc")).expect("oidc");
        assert!(
            matches!(&f.provider, Provider::Oidc(o) if o.role_arn == "acs:ram::1:role/o" && o.token_file == Path::new("/t"))
        );
        let e = home
            .resolve(&[], Some("halfoidc"))
            .expect_err("half")
            .to_string();
        assert!(e.contains("mode OIDC needs oidc_token_file"), "{e}");
        let f = home.resolve(&[], Some("uri")).expect("uri");
        assert!(matches!(&f.provider, Provider::Uri(u) if u.url == "http://127.0.0.1:1/c"));
        let f = home.resolve(&[], Some("ext")).expect("ext");
        assert!(matches!(&f.provider, Provider::External(x) if x.command == "/bin/creds --json"));

        // ChainableRamRoleArn: the source profile's keys, and this profile's role.
        let f = home.resolve(&[], Some("chain")).expect("chain");
        assert_eq!(keys(&f).access_key_id.0, "AK1");
        assert_eq!(
            f.role,
            Some(ProfileRole {
                role_arn: "acs:ram::1:role/c".into(),
                session_name: Some("cs".into())
            })
        );
        // A source profile that assumes a role itself is chained.
        let f = home.resolve(&[], Some("chain2")).expect("chain2");
        let Provider::Chained(base) = &f.provider else {
            panic!("not chained: {f:?}");
        };
        assert_eq!(
            base.role.as_ref().map(|r| r.role_arn.as_str()),
            Some("acs:ram::1:role/r")
        );
        assert_eq!(
            f.role.as_ref().map(|r| r.role_arn.as_str()),
            Some("acs:ram::1:role/c2")
        );
        let e = home
            .resolve(&[], Some("loop"))
            .expect_err("loop")
            .to_string();
        assert!(e.contains("a loop?"), "{e}");
        let e = home
            .resolve(&[], Some("orphan"))
            .expect_err("orphan")
            .to_string();
        assert!(
            e.contains("source_profile \"nobody\" does not exist"),
            "{e}"
        );
    }

    #[test]
    fn unreadable_file_is_reported() {
        let home = Home::new();
        // A directory where the file should be cannot be read as a file.
        std::fs::create_dir_all(home.dir.path().join(".aliyun/config.json")).expect("mkdir");
        let e = home.resolve(&[], None).expect_err("unreadable").to_string();
        assert!(e.starts_with("cannot read "), "{e}");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let home = Home::new();
        home.write(".aliyun/config.json", ALIYUN);
        let f = home.resolve(&[], Some("sts")).expect("sts");
        let dbg = format!("{f:?}");
        assert!(
            !dbg.contains("SecretTwo") && !dbg.contains("TokenTwo"),
            "{dbg}"
        );
    }
}

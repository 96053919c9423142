//! The keys file: the AccessKeys the emulator knows, the identity behind each, the roles
//! `AssumeRole` may assume, the OIDC providers `AssumeRoleWithOIDC` trusts, and the roles behind
//! the ECS metadata and credentials-URI stand-ins. See `examples/emulator-keys.yaml` for a
//! documented example.
//!
//! ```yaml
//! oidcProviders:                 # for AssumeRoleWithOIDC (optional)
//!   - arn: acs:ram::<acct>:oidc-provider/<name>   # OIDCProviderArn, matched without case
//!     issuerUrl: https://oidc.example/<id>       # the JWT's `iss` must equal it
//!     clientIds: [sts.aliyuncs.com]             # the JWT's `aud` must hold one of them
//!     jwks:                                     # RS256 verification keys (JWK members)
//!       - {kid: key-1, n: <base64url modulus, 2048..8192 bits>, e: AQAB}
//! roles:
//!   - arn: acs:ram::<acct>:role/<name>
//!     roleId: "3004"
//!     trustedOidcProviderArns: [acs:ram::<acct>:oidc-provider/<name>]  # optional
//!     oidcSubjects: ["system:serviceaccount:apps:*"]   # optional globs on `sub` (`*`, `?`)
//! ecsMetadata:                   # the ECS metadata stand-in (optional)
//!   roleArn: acs:ram::<acct>:role/<name>   # one of `roles`; listed by its name
//!   instanceId: i-emulator0000000001       # session name of the minted credentials
//!   durationSeconds: 21600                 # optional, 60..43200
//! credentialsUri:                # the credentials-URI stand-in (optional)
//!   roleArn: acs:ram::<acct>:role/<name>   # one of `roles`
//!   sessionName: credentials-uri           # optional, this default
//!   durationSeconds: 3600                  # optional, 60..43200
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::arn::{Arn, Resource};
use crate::sts::CallerIdentity;
use crate::types::{parse_utc, Secret};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// AccessKeys and their identities.
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    /// Roles that `AssumeRole` may assume.
    #[serde(default)]
    pub roles: Vec<RoleEntry>,
    /// OIDC identity providers `AssumeRoleWithOIDC` accepts tokens of.
    #[serde(default, rename = "oidcProviders")]
    pub oidc_providers: Vec<OidcProviderEntry>,
    /// The role the ECS metadata stand-in hands out.
    #[serde(default, rename = "ecsMetadata")]
    pub ecs_metadata: Option<EcsMetadataEntry>,
    /// The role the credentials-URI stand-in hands out.
    #[serde(default, rename = "credentialsUri")]
    pub credentials_uri: Option<CredentialsUriEntry>,
}

/// One OIDC identity provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OidcProviderEntry {
    /// `acs:ram::<account>:oidc-provider/<name>`; matched without case.
    pub arn: String,
    /// The exact `iss` of its tokens.
    pub issuer_url: String,
    /// The audiences accepted: a token's `aud` must hold at least one.
    pub client_ids: Vec<String>,
    /// Its RS256 signing keys.
    pub jwks: Vec<JwkEntry>,
}

/// An RSA public key in JWK form (RFC 7517 members; `n` and `e` base64url without padding).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwkEntry {
    /// Matched against the JWT header's `kid` when both are set.
    #[serde(default)]
    pub kid: Option<String>,
    /// `RSA` when set.
    #[serde(default)]
    pub kty: Option<String>,
    /// `RS256` when set.
    #[serde(default)]
    pub alg: Option<String>,
    /// `sig` when set.
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    pub n: String,
    pub e: String,
}

/// The ECS instance whose metadata service is emulated.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EcsMetadataEntry {
    /// One of `roles`; the metadata service lists its name.
    pub role_arn: String,
    /// The instance ID, used as the session name of the credentials it hands out.
    pub instance_id: String,
    /// Life of the credentials it hands out (60..43200, default 21600).
    #[serde(default)]
    pub duration_seconds: Option<i64>,
}

/// The identity behind the credentials URI.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialsUriEntry {
    /// One of `roles`.
    pub role_arn: String,
    /// The session name of the credentials it hands out (default `credentials-uri`).
    #[serde(default)]
    pub session_name: Option<String>,
    /// Life of the credentials it hands out (60..43200, default 3600).
    #[serde(default)]
    pub duration_seconds: Option<i64>,
}

/// One AccessKey.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyEntry {
    pub access_key_id: String,
    pub access_key_secret: Secret,
    /// When set, requests must carry exactly this security token.
    #[serde(default)]
    pub security_token: Option<Secret>,
    /// A disabled key is refused with `InvalidAccessKeyId.Inactive`.
    #[serde(default)]
    pub disabled: bool,
    /// RFC 3339 date after which the security token is refused with
    /// `InvalidSecurityToken.Expired` (only with `securityToken`).
    #[serde(default)]
    pub expiration: Option<String>,
    pub identity: IdentitySpec,
}

/// The identity `GetCallerIdentity` reports for a key.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum IdentitySpec {
    /// A RAM user: `acs:ram::<acct>:user/<name>`.
    #[serde(rename = "RAMUser", rename_all = "camelCase")]
    RamUser {
        account_id: String,
        user_name: String,
        user_id: String,
    },
    /// A session of an assumed role: `acs:ram::<acct>:assumed-role/<role>/<session>`.
    #[serde(rename = "AssumedRoleUser", rename_all = "camelCase")]
    AssumedRoleUser {
        account_id: String,
        role_name: String,
        role_id: String,
        session_name: String,
    },
    /// The account itself (root): `acs:ram::<acct>:root`.
    #[serde(rename = "Account", rename_all = "camelCase")]
    Account { account_id: String },
}

impl IdentitySpec {
    pub fn account_id(&self) -> &str {
        match self {
            Self::RamUser { account_id, .. }
            | Self::AssumedRoleUser { account_id, .. }
            | Self::Account { account_id } => account_id,
        }
    }

    /// The `GetCallerIdentity` answer for this identity, shaped as STS shapes it.
    pub fn caller_identity(&self, request_id: &str) -> CallerIdentity {
        let request_id = Some(request_id.to_string());
        match self {
            Self::RamUser {
                account_id,
                user_name,
                user_id,
            } => CallerIdentity {
                request_id,
                account_id: account_id.clone(),
                user_id: Some(user_id.clone()),
                role_id: None,
                arn: format!("acs:ram::{account_id}:user/{user_name}"),
                identity_type: Some("RAMUser".into()),
                principal_id: Some(user_id.clone()),
            },
            Self::AssumedRoleUser {
                account_id,
                role_name,
                role_id,
                session_name,
            } => CallerIdentity {
                request_id,
                account_id: account_id.clone(),
                user_id: None,
                role_id: Some(role_id.clone()),
                arn: format!("acs:ram::{account_id}:assumed-role/{role_name}/{session_name}"),
                identity_type: Some("AssumedRoleUser".into()),
                principal_id: Some(format!("{role_id}:{session_name}")),
            },
            Self::Account { account_id } => CallerIdentity {
                request_id,
                account_id: account_id.clone(),
                user_id: Some(account_id.clone()),
                role_id: None,
                arn: format!("acs:ram::{account_id}:root"),
                identity_type: Some("Account".into()),
                principal_id: Some(account_id.clone()),
            },
        }
    }
}

/// One role.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoleEntry {
    /// `acs:ram::<account>:role/<name>`; matched without case.
    pub arn: String,
    pub role_id: String,
    /// Who may assume the role; absent means any key whose identity is in the role's account.
    #[serde(default)]
    pub trusted_access_key_ids: Option<Vec<String>>,
    /// OIDC providers whose tokens may assume the role (`AssumeRoleWithOIDC`); absent: none.
    #[serde(default)]
    pub trusted_oidc_provider_arns: Vec<String>,
    /// Globs (`*` any run, `?` one character) one of which the token's `sub` must match;
    /// absent: any subject.
    #[serde(default)]
    pub oidc_subjects: Option<Vec<String>>,
}

/// A usable key: what verification needs.
#[derive(Debug)]
pub struct Key {
    pub secret: Secret,
    pub security_token: Option<Secret>,
    pub disabled: bool,
    pub expiration: Option<DateTime<Utc>>,
    pub identity: IdentitySpec,
}

/// A role ready for `AssumeRole`.
#[derive(Debug, Clone)]
pub struct Role {
    /// The ARN as configured.
    pub arn: String,
    pub account_id: String,
    pub role_name: String,
    pub role_id: String,
    pub trusted_access_key_ids: Option<Vec<String>>,
    /// Lower-cased ARNs of the OIDC providers it trusts.
    pub trusted_oidc_providers: Vec<String>,
    pub oidc_subjects: Option<Vec<String>>,
}

/// A checked OIDC provider.
#[derive(Debug, Clone)]
pub struct OidcProvider {
    /// The ARN as configured.
    pub arn: String,
    pub issuer_url: String,
    pub client_ids: Vec<String>,
    pub keys: Vec<RsaKey>,
}

/// A checked RS256 public key.
#[derive(Debug, Clone)]
pub struct RsaKey {
    pub kid: Option<String>,
    /// Big-endian modulus.
    pub n: Vec<u8>,
    /// Big-endian public exponent.
    pub e: Vec<u8>,
}

/// A role handed out by a stand-in (ECS metadata or credentials URI).
#[derive(Debug, Clone)]
pub struct StandInRole {
    /// Lower-cased ARN of one of the roles.
    pub role: String,
    /// The name the metadata service lists (the role's name).
    pub role_name: String,
    pub session_name: String,
    pub duration_seconds: i64,
}

/// The checked contents of a keys file.
#[derive(Debug, Default)]
pub struct KeyStore {
    pub keys: HashMap<String, Arc<Key>>,
    /// Keyed by the lower-cased ARN.
    pub roles: HashMap<String, Role>,
    /// Keyed by the lower-cased ARN.
    pub oidc_providers: HashMap<String, OidcProvider>,
    pub ecs_metadata: Option<StandInRole>,
    pub credentials_uri: Option<StandInRole>,
}

/// Bounds of `durationSeconds` of the stand-ins.
pub const STAND_IN_MIN_DURATION: i64 = 60;
pub const STAND_IN_MAX_DURATION: i64 = 43_200;
/// Default life of ECS metadata credentials (what ECS hands out).
pub const ECS_DEFAULT_DURATION: i64 = 21_600;
/// Default life of credentials-URI credentials.
pub const URI_DEFAULT_DURATION: i64 = 3_600;
/// Default session name of credentials-URI credentials.
pub const URI_DEFAULT_SESSION: &str = "credentials-uri";

/// Why a keys file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read the keys file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("keys file {path}: {detail}")]
    Parse { path: String, detail: String },
    #[error("keys file {path}: {detail}")]
    Invalid { path: String, detail: String },
}

impl KeyStore {
    /// Reads and checks a keys file.
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            KeysError::Parse { detail, .. } => KeysError::Parse {
                path: path.display().to_string(),
                detail,
            },
            KeysError::Invalid { detail, .. } => KeysError::Invalid {
                path: path.display().to_string(),
                detail,
            },
            other => other,
        })
    }

    /// Parses and checks the YAML text of a keys file.
    pub fn from_yaml(text: &str) -> Result<Self, KeysError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let file: KeysFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let msg = e.into_inner().to_string();
            // serde_yaml often starts its message with a shorter path of its own: keep the
            // longer one once.
            let detail = match msg.split_once(": ") {
                _ if at == "." => msg,
                Some((lead, rest)) if !lead.contains(' ') && at.starts_with(lead) => {
                    format!("{at}: {rest}")
                }
                _ => format!("{at}: {msg}"),
            };
            KeysError::Parse {
                path: String::new(),
                detail,
            }
        })?;
        Self::from_file(file).map_err(|detail| KeysError::Invalid {
            path: String::new(),
            detail,
        })
    }

    /// Checks a parsed keys file; the error names the entry and what is wrong with it.
    pub fn from_file(file: KeysFile) -> Result<Self, String> {
        if file.keys.is_empty() {
            return Err("defines no keys (a top-level `keys:` list is required)".into());
        }
        let mut keys = HashMap::new();
        for (i, entry) in file.keys.into_iter().enumerate() {
            let at = format!("keys[{i}]");
            check_name(&format!("{at}.accessKeyId"), &entry.access_key_id)?;
            if entry.access_key_secret.is_empty() {
                return Err(format!("{at}.accessKeySecret is empty"));
            }
            if entry.security_token.as_ref().is_some_and(|t| t.is_empty()) {
                return Err(format!(
                    "{at}.securityToken is empty (remove it for a key without a token)"
                ));
            }
            let expiration = match &entry.expiration {
                None => None,
                Some(_) if entry.security_token.is_none() => {
                    return Err(format!(
                        "{at}.expiration is set but securityToken is not (only temporary credentials expire)"
                    ))
                }
                Some(raw) => Some(parse_utc(raw).ok_or_else(|| {
                    format!("{at}.expiration {raw:?} is not an RFC 3339 date such as 2030-01-01T00:00:00Z")
                })?),
            };
            check_identity(&format!("{at}.identity"), &entry.identity)?;
            let key = Key {
                secret: entry.access_key_secret,
                security_token: entry.security_token,
                disabled: entry.disabled,
                expiration,
                identity: entry.identity,
            };
            if keys
                .insert(entry.access_key_id.clone(), Arc::new(key))
                .is_some()
            {
                return Err(format!(
                    "{at}.accessKeyId {:?} is listed more than once",
                    entry.access_key_id
                ));
            }
        }
        let oidc_providers = check_oidc_providers(file.oidc_providers)?;
        let mut roles = HashMap::new();
        for (i, entry) in file.roles.into_iter().enumerate() {
            let at = format!("roles[{i}]");
            let arn = Arn::parse(entry.arn.trim()).map_err(|e| format!("{at}.arn: {e}"))?;
            let Resource::Role(role_name) = &arn.resource else {
                return Err(format!(
                    "{at}.arn {:?} is not a role ARN (acs:ram::<account>:role/<name>)",
                    entry.arn
                ));
            };
            check_account(&format!("{at}.arn"), &arn.account_id)?;
            check_name(&format!("{at}.roleId"), &entry.role_id)?;
            if let Some(trusted) = &entry.trusted_access_key_ids {
                if let Some(unknown) = trusted.iter().find(|k| !keys.contains_key(*k)) {
                    return Err(format!(
                        "{at}.trustedAccessKeyIds names {unknown:?}, which is not in keys"
                    ));
                }
            }
            let mut trusted_oidc_providers = Vec::new();
            for (j, provider) in entry.trusted_oidc_provider_arns.iter().enumerate() {
                let lower = provider.trim().to_lowercase();
                if !oidc_providers.contains_key(&lower) {
                    return Err(format!(
                        "{at}.trustedOidcProviderArns[{j}] names {provider:?}, which is not in oidcProviders"
                    ));
                }
                trusted_oidc_providers.push(lower);
            }
            if let Some(subjects) = &entry.oidc_subjects {
                if subjects.is_empty() {
                    return Err(format!(
                        "{at}.oidcSubjects is empty (remove it to accept any subject)"
                    ));
                }
                if let Some(j) = subjects.iter().position(|s| s.is_empty()) {
                    return Err(format!("{at}.oidcSubjects[{j}] is empty"));
                }
            }
            let role = Role {
                arn: entry.arn.trim().to_string(),
                account_id: arn.account_id.clone(),
                role_name: role_name.clone(),
                role_id: entry.role_id,
                trusted_access_key_ids: entry.trusted_access_key_ids,
                trusted_oidc_providers,
                oidc_subjects: entry.oidc_subjects,
            };
            if roles.insert(role.arn.to_lowercase(), role).is_some() {
                return Err(format!(
                    "{at}.arn {:?} is listed more than once (ARNs are compared without case)",
                    entry.arn
                ));
            }
        }
        let ecs_metadata = match file.ecs_metadata {
            None => None,
            Some(e) => {
                check_name("ecsMetadata.instanceId", &e.instance_id)?;
                Some(stand_in(
                    "ecsMetadata",
                    &roles,
                    &e.role_arn,
                    e.instance_id,
                    e.duration_seconds.unwrap_or(ECS_DEFAULT_DURATION),
                )?)
            }
        };
        let credentials_uri = match file.credentials_uri {
            None => None,
            Some(u) => {
                let session = u
                    .session_name
                    .unwrap_or_else(|| URI_DEFAULT_SESSION.to_string());
                check_name("credentialsUri.sessionName", &session)?;
                Some(stand_in(
                    "credentialsUri",
                    &roles,
                    &u.role_arn,
                    session,
                    u.duration_seconds.unwrap_or(URI_DEFAULT_DURATION),
                )?)
            }
        };
        Ok(Self {
            keys,
            roles,
            oidc_providers,
            ecs_metadata,
            credentials_uri,
        })
    }

    /// The OIDC provider with this ARN, compared without case.
    pub fn oidc_provider(&self, arn: &str) -> Option<&OidcProvider> {
        self.oidc_providers.get(&arn.trim().to_lowercase())
    }

    /// The role with this ARN, compared without case.
    pub fn role(&self, arn: &str) -> Option<&Role> {
        self.roles.get(&arn.trim().to_lowercase())
    }
}

fn check_oidc_providers(
    entries: Vec<OidcProviderEntry>,
) -> Result<HashMap<String, OidcProvider>, String> {
    let mut providers = HashMap::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let at = format!("oidcProviders[{i}]");
        let arn = Arn::parse(entry.arn.trim()).map_err(|e| format!("{at}.arn: {e}"))?;
        let is_provider = matches!(&arn.resource, Resource::Other(r)
            if r.len() > "oidc-provider/".len()
                && r.get(..14).is_some_and(|p| p.eq_ignore_ascii_case("oidc-provider/")));
        if !is_provider {
            return Err(format!(
                "{at}.arn {:?} is not an OIDC provider ARN (acs:ram::<account>:oidc-provider/<name>)",
                entry.arn
            ));
        }
        check_account(&format!("{at}.arn"), &arn.account_id)?;
        check_name(&format!("{at}.issuerUrl"), &entry.issuer_url)?;
        if entry.client_ids.is_empty() {
            return Err(format!(
                "{at}.clientIds is empty (list at least one audience)"
            ));
        }
        if let Some(j) = entry.client_ids.iter().position(|c| c.is_empty()) {
            return Err(format!("{at}.clientIds[{j}] is empty"));
        }
        if entry.jwks.is_empty() {
            return Err(format!("{at}.jwks is empty (list at least one RSA key)"));
        }
        let keys = entry
            .jwks
            .into_iter()
            .enumerate()
            .map(|(j, jwk)| check_jwk(&format!("{at}.jwks[{j}]"), jwk))
            .collect::<Result<Vec<_>, _>>()?;
        let provider = OidcProvider {
            arn: entry.arn.trim().to_string(),
            issuer_url: entry.issuer_url,
            client_ids: entry.client_ids,
            keys,
        };
        if providers
            .insert(provider.arn.to_lowercase(), provider)
            .is_some()
        {
            return Err(format!(
                "{at}.arn {:?} is listed more than once (ARNs are compared without case)",
                entry.arn
            ));
        }
    }
    Ok(providers)
}

fn check_jwk(at: &str, jwk: JwkEntry) -> Result<RsaKey, String> {
    use base64::Engine as _;
    if jwk.kty.as_deref().is_some_and(|k| k != "RSA") {
        return Err(format!("{at}.kty must be RSA"));
    }
    if jwk.alg.as_deref().is_some_and(|a| a != "RS256") {
        return Err(format!("{at}.alg must be RS256"));
    }
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err(format!("{at}.use must be sig"));
    }
    let decode = |field: &str, value: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value.trim_end_matches('='))
            .map_err(|_| format!("{at}.{field} is not base64url"))
    };
    let n = decode("n", &jwk.n)?;
    let e = decode("e", &jwk.e)?;
    let bits = n.iter().position(|b| *b != 0).map_or(0, |first| {
        (n.len() - first) * 8 - n[first].leading_zeros() as usize
    });
    if !(2048..=8192).contains(&bits) {
        return Err(format!(
            "{at}.n is a {bits}-bit modulus; RS256 keys of 2048 to 8192 bits are accepted"
        ));
    }
    if e.is_empty() || e.len() > 4 {
        return Err(format!("{at}.e is not a usable RSA exponent"));
    }
    Ok(RsaKey { kid: jwk.kid, n, e })
}

fn stand_in(
    at: &str,
    roles: &HashMap<String, Role>,
    role_arn: &str,
    session_name: String,
    duration_seconds: i64,
) -> Result<StandInRole, String> {
    let lower = role_arn.trim().to_lowercase();
    let role = roles
        .get(&lower)
        .ok_or_else(|| format!("{at}.roleArn names {role_arn:?}, which is not in roles"))?;
    if !(STAND_IN_MIN_DURATION..=STAND_IN_MAX_DURATION).contains(&duration_seconds) {
        return Err(format!(
            "{at}.durationSeconds {duration_seconds} is not within {STAND_IN_MIN_DURATION}..{STAND_IN_MAX_DURATION}"
        ));
    }
    Ok(StandInRole {
        role: lower,
        role_name: role.role_name.clone(),
        session_name,
        duration_seconds,
    })
}

fn check_name(at: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{at} is empty"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{at} {value:?} contains whitespace"));
    }
    Ok(())
}

fn check_account(at: &str, account: &str) -> Result<(), String> {
    if account.is_empty() || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{at}: account ID {account:?} is not a string of digits (quote it in YAML: \"1234567890123456\")"
        ));
    }
    Ok(())
}

fn check_identity(at: &str, identity: &IdentitySpec) -> Result<(), String> {
    check_account(&format!("{at}.accountId"), identity.account_id())?;
    match identity {
        IdentitySpec::RamUser {
            user_name, user_id, ..
        } => {
            check_name(&format!("{at}.userName"), user_name)?;
            check_name(&format!("{at}.userId"), user_id)
        }
        IdentitySpec::AssumedRoleUser {
            role_name,
            role_id,
            session_name,
            ..
        } => {
            check_name(&format!("{at}.roleName"), role_name)?;
            check_name(&format!("{at}.roleId"), role_id)?;
            check_name(&format!("{at}.sessionName"), session_name)
        }
        IdentitySpec::Account { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
keys:
  - accessKeyId: AK1
    accessKeySecret: S1
    identity: {type: RAMUser, accountId: "123", userName: alice, userId: "2001"}
  - accessKeyId: STS.AK2
    accessKeySecret: S2
    securityToken: T2
    expiration: 2030-01-01T00:00:00Z
    identity: {type: AssumedRoleUser, accountId: "123", roleName: Admin, roleId: "3001", sessionName: bob}
  - accessKeyId: AK3
    accessKeySecret: S3
    disabled: true
    identity: {type: Account, accountId: "123"}
roles:
  - arn: acs:ram::123:role/Admin
    roleId: "3001"
    trustedAccessKeyIds: [AK1]
"#;

    fn err(yaml: &str) -> String {
        KeyStore::from_yaml(yaml)
            .map(|_| ())
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn loads_a_good_file() {
        let store = KeyStore::from_yaml(GOOD).expect("loads");
        assert_eq!(store.keys.len(), 3);
        let k2 = &store.keys["STS.AK2"];
        assert_eq!(k2.security_token.as_ref().map(Secret::expose), Some("T2"));
        assert!(k2.expiration.is_some());
        assert!(store.keys["AK3"].disabled);
        let role = store
            .role("ACS:RAM::123:ROLE/admin")
            .expect("case-insensitive");
        assert_eq!(role.role_name, "Admin");
        assert_eq!(role.account_id, "123");
    }

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/emulator-keys.yaml");
        let store = KeyStore::load(&path).expect("the example keys file is valid");
        for id in [
            "LTAI5tQuickstartAlice",
            "STS.QuickstartBob",
            "LTAI5tTestAccessKeyId",
            "STS.TestAccessKeyId",
        ] {
            assert!(store.keys.contains_key(id), "{id}");
        }
        assert_eq!(
            store.keys["STS.TestAccessKeyId"]
                .security_token
                .as_ref()
                .map(Secret::expose),
            Some("CAIS+test/token==")
        );
        assert!(store
            .role("acs:ram::1234567890123456:role/KubeAdmin")
            .is_some());
        let provider = store
            .oidc_provider("ACS:RAM::1234567890123456:OIDC-PROVIDER/ack-rrsa-emulator")
            .expect("the OIDC provider, found without case");
        assert_eq!(provider.keys.len(), 1);
        assert_eq!(provider.keys[0].n.len(), 256);
        let workload = store
            .role("acs:ram::1234567890123456:role/KubeWorkload")
            .expect("role");
        assert_eq!(workload.trusted_oidc_providers.len(), 1);
        let ecs = store.ecs_metadata.as_ref().expect("ecsMetadata");
        assert_eq!(
            (ecs.role_name.as_str(), ecs.duration_seconds),
            ("KubeEcsNode", ECS_DEFAULT_DURATION)
        );
        let uri = store.credentials_uri.as_ref().expect("credentialsUri");
        assert_eq!(uri.session_name, URI_DEFAULT_SESSION);
    }

    #[test]
    fn refuses_bad_oidc_and_stand_in_entries() {
        // A 2048-bit modulus (0x80 then zeros is not a real key, but has the right size).
        let n2048 = format!("gA{}", "A".repeat(340));
        let n1024 = format!("gA{}", "A".repeat(169));
        let file = |providers: &str, rest: &str| {
            format!(
                "keys:\n  - {{accessKeyId: A, accessKeySecret: s, identity: {{type: Account, accountId: \"1\"}}}}\nroles:\n  - {{arn: \"acs:ram::1:role/R\", roleId: \"9\"}}\noidcProviders:\n{providers}{rest}"
            )
        };
        let provider = |arn: &str, client_ids: &str, jwks: &str| {
            format!("  - {{arn: \"{arn}\", issuerUrl: \"https://i\", clientIds: {client_ids}, jwks: {jwks}}}\n")
        };
        let good_jwks = format!("[{{n: {n2048}, e: AQAB}}]");
        let good = provider("acs:ram::1:oidc-provider/p", "[a]", &good_jwks);
        assert!(KeyStore::from_yaml(&file(&good, "")).is_ok());
        let cases = [
            (
                file(&provider("acs:ram::1:role/p", "[a]", &good_jwks), ""),
                "oidcProviders[0].arn",
            ),
            (
                file(&provider("acs:ram::1:oidc-provider/p", "[]", &good_jwks), ""),
                "oidcProviders[0].clientIds is empty",
            ),
            (
                file(&provider("acs:ram::1:oidc-provider/p", "[a]", "[]"), ""),
                "oidcProviders[0].jwks is empty",
            ),
            (
                file(
                    &provider(
                        "acs:ram::1:oidc-provider/p",
                        "[a]",
                        &format!("[{{n: {n1024}, e: AQAB}}]"),
                    ),
                    "",
                ),
                "1024-bit modulus",
            ),
            (
                file(
                    &provider("acs:ram::1:oidc-provider/p", "[a]", "[{n: '***', e: AQAB}]"),
                    "",
                ),
                "jwks[0].n is not base64url",
            ),
            (
                file(
                    &provider(
                        "acs:ram::1:oidc-provider/p",
                        "[a]",
                        &format!("[{{kty: EC, n: {n2048}, e: AQAB}}]"),
                    ),
                    "",
                ),
                "jwks[0].kty must be RSA",
            ),
            (
                file(&format!("{good}{good}"), ""),
                "oidcProviders[1].arn",
            ),
            (
                file(&good, "ecsMetadata: {roleArn: \"acs:ram::1:role/Nope\", instanceId: i-1}\n"),
                "ecsMetadata.roleArn",
            ),
            (
                file(
                    &good,
                    "ecsMetadata: {roleArn: \"acs:ram::1:role/R\", instanceId: i-1, durationSeconds: 10}\n",
                ),
                "ecsMetadata.durationSeconds 10",
            ),
            (
                file(&good, "credentialsUri: {roleArn: \"acs:ram::1:role/R\", sessionName: \"a b\"}\n"),
                "credentialsUri.sessionName",
            ),
        ];
        for (yaml, want) in cases {
            let e = err(&yaml);
            assert!(e.contains(want), "want {want:?} in {e}");
        }
        let untrusted = r#"
keys:
  - {accessKeyId: A, accessKeySecret: s, identity: {type: Account, accountId: "1"}}
roles:
  - {arn: "acs:ram::1:role/R", roleId: "9", trustedOidcProviderArns: ["acs:ram::1:oidc-provider/x"]}
"#;
        assert!(err(untrusted).contains("roles[0].trustedOidcProviderArns[0]"));
        let no_subjects = r#"
keys:
  - {accessKeyId: A, accessKeySecret: s, identity: {type: Account, accountId: "1"}}
roles:
  - {arn: "acs:ram::1:role/R", roleId: "9", oidcSubjects: []}
"#;
        assert!(err(no_subjects).contains("roles[0].oidcSubjects is empty"));
    }

    #[test]
    fn identities_are_shaped_like_sts() {
        let store = KeyStore::from_yaml(GOOD).expect("loads");
        let user = store.keys["AK1"].identity.caller_identity("R");
        assert_eq!(user.arn, "acs:ram::123:user/alice");
        assert_eq!(user.principal_id.as_deref(), Some("2001"));
        assert_eq!(user.user_id.as_deref(), Some("2001"));
        assert_eq!(user.role_id, None);
        let role = store.keys["STS.AK2"].identity.caller_identity("R");
        assert_eq!(role.arn, "acs:ram::123:assumed-role/Admin/bob");
        assert_eq!(role.principal_id.as_deref(), Some("3001:bob"));
        assert_eq!(role.role_id.as_deref(), Some("3001"));
        assert_eq!(role.user_id, None);
        let root = store.keys["AK3"].identity.caller_identity("R");
        assert_eq!(root.arn, "acs:ram::123:root");
        assert_eq!(root.identity_type.as_deref(), Some("Account"));
    }

    #[test]
    fn refuses_bad_files_with_a_reason() {
        assert!(err("keys: []").contains("defines no keys"));
        assert!(err("keys: [{accessKeyId: A}]").contains("keys[0]"));
        assert!(err("kees: []").contains("unknown field"));
        let dup = r#"
keys:
  - {accessKeyId: A, accessKeySecret: s, identity: {type: Account, accountId: "1"}}
  - {accessKeyId: A, accessKeySecret: s, identity: {type: Account, accountId: "1"}}
"#;
        assert!(err(dup).contains("keys[1].accessKeyId \"A\" is listed more than once"));
        let bad_type = r#"
keys:
  - {accessKeyId: A, accessKeySecret: s, identity: {type: Robot, accountId: "1"}}
"#;
        assert!(err(bad_type).contains("keys[0].identity"));
        let bad_account = r#"
keys:
  - {accessKeyId: A, accessKeySecret: s, identity: {type: Account, accountId: "abc"}}
"#;
        assert!(err(bad_account).contains("keys[0].identity.accountId"));
        let expiring_without_token = r#"
keys:
  - {accessKeyId: A, accessKeySecret: s, expiration: "2030-01-01T00:00:00Z", identity: {type: Account, accountId: "1"}}
"#;
        assert!(err(expiring_without_token).contains("securityToken is not"));
        let bad_role = r#"
keys:
  - {accessKeyId: A, accessKeySecret: s, identity: {type: Account, accountId: "1"}}
roles:
  - {arn: "acs:ram::1:user/x", roleId: "1"}
"#;
        assert!(err(bad_role).contains("roles[0].arn"));
        let unknown_trust = r#"
keys:
  - {accessKeyId: A, accessKeySecret: s, identity: {type: Account, accountId: "1"}}
roles:
  - {arn: "acs:ram::1:role/x", roleId: "1", trustedAccessKeyIds: [B]}
"#;
        assert!(err(unknown_trust).contains("\"B\", which is not in keys"));
    }

    #[test]
    fn parse_errors_do_not_quote_secrets_as_debug() {
        // A wrongly typed secret is reported by its place, not by a Debug dump of the entry.
        let e = err("keys: [{accessKeyId: A, accessKeySecret: [x], identity: {type: Account, accountId: \"1\"}}]");
        assert!(e.contains("keys[0].accessKeySecret"), "{e}");
    }
}

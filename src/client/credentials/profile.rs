//! The aliyun CLI's `~/.aliyun/config.json` (`ALIBABA_CLOUD_CONFIG_FILE`): the profile named by
//! `--profile` or `ALIBABA_CLOUD_PROFILE`, else its `current` profile.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    ecs, external, json_error_kind, oidc, read_optional, uri, Context, CredentialError,
    Credentials, Found, Lookup, ProfileRole, Provider, Source,
};

/// The modes this client understands.
const SUPPORTED: &str =
    "AK, StsToken, RamRoleArn, ChainableRamRoleArn, OIDC, EcsRamRole, CredentialsURI, External";
/// How many `source_profile` links a `ChainableRamRoleArn` profile may follow.
const MAX_CHAIN: usize = 8;

/// `~/.aliyun/config.json`.
pub struct AliyunCli;

impl Source for AliyunCli {
    fn locate(&self, ctx: &Context<'_>) -> Result<Lookup, CredentialError> {
        let Some(path) = &ctx.paths.aliyun_config else {
            return Ok(Lookup::NotHere(
                "~/.aliyun/config.json (HOME is not set)".into(),
            ));
        };
        let Some(text) = read_optional(path)? else {
            return Ok(Lookup::NotHere(format!("{} (not found)", path.display())));
        };
        Ok(
            match from_aliyun_config(&text, path, ctx.profile(), ctx.duration_seconds)? {
                AliyunOutcome::Found(found) => Lookup::Found(found),
                AliyunOutcome::NoProfile(name) => {
                    Lookup::NotHere(format!("{} (no profile {name:?})", path.display()))
                }
            },
        )
    }
}

#[derive(Deserialize)]
struct AliyunConfig {
    #[serde(default)]
    current: String,
    #[serde(default)]
    profiles: Vec<AliyunProfile>,
}

#[derive(Deserialize)]
struct AliyunProfile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    access_key_id: String,
    #[serde(default)]
    access_key_secret: String,
    #[serde(default)]
    sts_token: String,
    #[serde(default)]
    ram_role_arn: String,
    #[serde(default)]
    ram_session_name: String,
    #[serde(default)]
    ram_role_name: String,
    #[serde(default)]
    source_profile: String,
    #[serde(default)]
    oidc_provider_arn: String,
    #[serde(default)]
    oidc_token_file: String,
    #[serde(default)]
    credentials_uri: String,
    #[serde(default)]
    process_command: String,
}

enum AliyunOutcome {
    Found(Box<Found>),
    NoProfile(String),
}

fn from_aliyun_config(
    text: &str,
    path: &Path,
    profile: Option<&str>,
    duration_seconds: u32,
) -> Result<AliyunOutcome, CredentialError> {
    let config: AliyunConfig =
        serde_json::from_str(text).map_err(|e| CredentialError::Malformed {
            path: path.display().to_string(),
            detail: format!(
                "not the aliyun CLI's JSON (line {}, column {}: {})",
                e.line(),
                e.column(),
                json_error_kind(&e)
            ),
        })?;
    let name = profile
        .map(str::to_string)
        .or_else(|| Some(config.current.clone()).filter(|c| !c.is_empty()))
        .unwrap_or_else(|| "default".to_string());
    let reader = Reader {
        config: &config,
        path,
        duration_seconds,
    };
    match reader.profile(&name, 0)? {
        Some(found) => Ok(AliyunOutcome::Found(Box::new(found))),
        None => Ok(AliyunOutcome::NoProfile(name)),
    }
}

struct Reader<'a> {
    config: &'a AliyunConfig,
    path: &'a Path,
    duration_seconds: u32,
}

fn trimmed(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

impl Reader<'_> {
    /// The profile `name`, `None` when the file has no such profile. `depth` counts the
    /// `source_profile` links followed so far.
    fn profile(&self, name: &str, depth: usize) -> Result<Option<Found>, CredentialError> {
        let Some(prof) = self.config.profiles.iter().find(|pr| pr.name == name) else {
            return Ok(None);
        };
        let p = self.path.display().to_string();
        let what = format!("profile {name:?}");
        let incomplete = |detail: String| CredentialError::Incomplete {
            what: what.clone(),
            path: p.clone(),
            detail,
        };
        let need = |value: &str, mode: &str, field: &str| {
            trimmed(value).ok_or_else(|| incomplete(format!("mode {mode} needs {field}")))
        };
        let keys = |mode: &str, token: Option<&str>| -> Result<Credentials, CredentialError> {
            let id = need(&prof.access_key_id, mode, "access_key_id")?;
            let secret = need(&prof.access_key_secret, mode, "access_key_secret")?;
            Ok(Credentials::new(&id, &secret, token))
        };
        let role = |mode: &str| -> Result<ProfileRole, CredentialError> {
            Ok(ProfileRole {
                role_arn: need(&prof.ram_role_arn, mode, "ram_role_arn")?,
                session_name: trimmed(&prof.ram_session_name),
            })
        };
        let mode = if prof.mode.is_empty() {
            "AK"
        } else {
            prof.mode.as_str()
        };
        let mut found = Found {
            provider: Provider::Static(Credentials::new("", "", None)),
            role: None,
            source: format!("profile {name:?} of {p}"),
            profile: Some(name.to_string()),
            probe: false,
        };
        match mode {
            "AK" => found.provider = Provider::Static(keys("AK", None)?),
            "StsToken" => {
                let token = need(&prof.sts_token, "StsToken", "sts_token")?;
                found.provider = Provider::Static(keys("StsToken", Some(&token))?);
            }
            "RamRoleArn" => {
                let role = role("RamRoleArn")?;
                found.provider = Provider::Static(keys("RamRoleArn", Some(&prof.sts_token))?);
                found.role = Some(role);
            }
            "ChainableRamRoleArn" => {
                let role = role("ChainableRamRoleArn")?;
                let source_name = need(
                    &prof.source_profile,
                    "ChainableRamRoleArn",
                    "source_profile",
                )?;
                if depth >= MAX_CHAIN {
                    return Err(incomplete(format!(
                        "source_profile links more than {MAX_CHAIN} profiles deep (a loop?)"
                    )));
                }
                let source = self.profile(&source_name, depth + 1)?.ok_or_else(|| {
                    incomplete(format!("its source_profile {source_name:?} does not exist"))
                })?;
                found.source = format!("profile {name:?} (from profile {source_name:?}) of {p}");
                found.provider = match source.role {
                    None => source.provider,
                    Some(_) => Provider::Chained(Box::new(source)),
                };
                found.role = Some(role);
            }
            "OIDC" => {
                found.provider = Provider::Oidc(oidc::OidcRole {
                    provider_arn: need(&prof.oidc_provider_arn, "OIDC", "oidc_provider_arn")?,
                    token_file: PathBuf::from(need(
                        &prof.oidc_token_file,
                        "OIDC",
                        "oidc_token_file",
                    )?),
                    role_arn: need(&prof.ram_role_arn, "OIDC", "ram_role_arn")?,
                    session_name: trimmed(&prof.ram_session_name),
                    duration_seconds: self.duration_seconds,
                });
            }
            "EcsRamRole" => {
                found.provider = Provider::Ecs(ecs::EcsRole {
                    role_name: trimmed(&prof.ram_role_name),
                });
            }
            "CredentialsURI" => {
                found.provider = Provider::Uri(uri::CredentialsUri {
                    url: need(&prof.credentials_uri, "CredentialsURI", "credentials_uri")?,
                });
            }
            "External" => {
                found.provider = Provider::External(external::ExternalCommand {
                    command: need(&prof.process_command, "External", "process_command")?,
                });
            }
            other => {
                return Err(CredentialError::Unsupported {
                    what,
                    path: p,
                    mode: format!("mode {other}"),
                    supported: SUPPORTED,
                })
            }
        }
        Ok(Some(found))
    }
}

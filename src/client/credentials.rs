//! Where the client's Alibaba Cloud credentials come from.
//!
//! The chain, first found wins:
//! 1. `--profile NAME` given on the command line: that profile only (aliyun CLI config, then the
//!    credentials INI file); the environment's keys are not consulted.
//! 2. The environment: `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET`,
//!    `ALIBABA_CLOUD_SECURITY_TOKEN` (older names `ALICLOUD_ACCESS_KEY`, `ALICLOUD_SECRET_KEY`,
//!    `ALICLOUD_ACCESS_KEY_STS_TOKEN`).
//! 3. The aliyun CLI's `~/.aliyun/config.json` (`ALIBABA_CLOUD_CONFIG_FILE`): the profile named by
//!    `ALIBABA_CLOUD_PROFILE`, else its `current` profile. Modes `AK`, `StsToken`, `RamRoleArn`.
//! 4. The INI file `~/.alibabacloud/credentials` (`ALIBABA_CLOUD_CREDENTIALS_FILE`): section
//!    `[<profile>]` or `[default]`; types `access_key`, `sts`, `ram_role_arn`.
//! 5. The legacy JSON `~/.acs/credentials` (`AcsAccessKeyId`, `AcsAccessKeySecret`,
//!    `AcsAccessSecurityToken`).
//!
//! Everything here is a function of an injected environment (a map) and file paths, so the
//! chain is tested without touching the process environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::types::{AccessKeyId, Secret};

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

/// Credentials found by the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub credentials: Credentials,
    /// A role the profile asks to assume (`RamRoleArn` mode, `ram_role_arn` type).
    pub role: Option<ProfileRole>,
    /// Where the credentials came from, in words (for messages and logs).
    pub source: String,
    /// The profile used, if the credentials came from one.
    pub profile: Option<String>,
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

const ENV_ID: [&str; 2] = ["ALIBABA_CLOUD_ACCESS_KEY_ID", "ALICLOUD_ACCESS_KEY"];
const ENV_SECRET: [&str; 2] = ["ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALICLOUD_SECRET_KEY"];
const ENV_TOKEN: [&str; 2] = [
    "ALIBABA_CLOUD_SECURITY_TOKEN",
    "ALICLOUD_ACCESS_KEY_STS_TOKEN",
];

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
}

/// Runs the chain. `profile_flag` is `--profile`; everything else comes from `env` and `paths`.
pub fn resolve(
    env: &Env,
    profile_flag: Option<&str>,
    paths: &Paths,
) -> Result<Found, CredentialError> {
    let profile_flag = profile_flag.map(str::trim).filter(|p| !p.is_empty());
    let mut looked = Vec::new();
    if profile_flag.is_none() {
        if let Some(found) = from_env(env)? {
            return Ok(found);
        }
        looked.push(format!(
            "environment ({} / {}: not set)",
            ENV_ID[0], ENV_ID[1]
        ));
    }
    let profile = profile_flag.or_else(|| env_var(env, PROFILE_ENV));

    match &paths.aliyun_config {
        None => looked.push("~/.aliyun/config.json (HOME is not set)".into()),
        Some(path) => match read_optional(path)? {
            None => looked.push(format!("{} (not found)", path.display())),
            Some(text) => match from_aliyun_config(&text, path, profile)? {
                AliyunOutcome::Found(found) => return Ok(*found),
                AliyunOutcome::NoProfile(name) => {
                    looked.push(format!("{} (no profile {name:?})", path.display()))
                }
            },
        },
    }

    let section = profile.unwrap_or("default");
    match &paths.credentials_ini {
        None => looked.push("~/.alibabacloud/credentials (HOME is not set)".into()),
        Some(path) => match read_optional(path)? {
            None => looked.push(format!("{} (not found)", path.display())),
            Some(text) => match from_ini(&text, path, section)? {
                IniOutcome::Found(found) => return Ok(*found),
                IniOutcome::NoSection => {
                    looked.push(format!("{} (no section [{section}])", path.display()))
                }
                IniOutcome::Disabled => looked.push(format!(
                    "{} (section [{section}] has enable = false)",
                    path.display()
                )),
            },
        },
    }

    if let Some(name) = profile {
        return Err(CredentialError::ProfileNotFound {
            name: name.to_string(),
            looked,
        });
    }

    match &paths.acs_legacy {
        None => looked.push("~/.acs/credentials (HOME is not set)".into()),
        Some(path) => match read_optional(path)? {
            None => looked.push(format!("{} (not found)", path.display())),
            Some(text) => return from_acs_legacy(&text, path),
        },
    }
    Err(CredentialError::NotFound { looked })
}

/// The first of `names` that is set, with its name.
fn first_set<'a>(env: &'a Env, names: &[&'static str]) -> Option<(&'static str, &'a str)> {
    names.iter().find_map(|n| env_var(env, n).map(|v| (*n, v)))
}

/// Credentials from the environment, `None` when none of the variables is set.
pub fn from_env(env: &Env) -> Result<Option<Found>, CredentialError> {
    let id = first_set(env, &ENV_ID);
    let secret = first_set(env, &ENV_SECRET);
    let token = first_set(env, &ENV_TOKEN);
    match (id, secret) {
        (Some((id_name, id)), Some((_, secret))) => Ok(Some(Found {
            credentials: Credentials::new(id, secret, token.map(|(_, t)| t)),
            role: None,
            source: format!("environment ({id_name})"),
            profile: None,
        })),
        (Some((set, _)), None) => Err(CredentialError::EnvIncomplete {
            set,
            missing: if set == ENV_ID[0] {
                ENV_SECRET[0]
            } else {
                ENV_SECRET[1]
            },
        }),
        (None, Some((set, _))) => Err(CredentialError::EnvIncomplete {
            set,
            missing: if set == ENV_SECRET[0] {
                ENV_ID[0]
            } else {
                ENV_ID[1]
            },
        }),
        (None, None) => match token {
            Some((set, _)) => Err(CredentialError::EnvIncomplete {
                set,
                missing: if set == ENV_TOKEN[0] {
                    "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET"
                } else {
                    "ALICLOUD_ACCESS_KEY and ALICLOUD_SECRET_KEY"
                },
            }),
            None => Ok(None),
        },
    }
}

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

// ---- aliyun CLI config.json ----

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
}

enum AliyunOutcome {
    Found(Box<Found>),
    NoProfile(String),
}

fn from_aliyun_config(
    text: &str,
    path: &Path,
    profile: Option<&str>,
) -> Result<AliyunOutcome, CredentialError> {
    let p = path.display().to_string();
    let config: AliyunConfig =
        serde_json::from_str(text).map_err(|e| CredentialError::Malformed {
            path: p.clone(),
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
    let Some(prof) = config.profiles.iter().find(|pr| pr.name == name) else {
        return Ok(AliyunOutcome::NoProfile(name));
    };
    let what = format!("profile {name:?}");
    let incomplete = |detail: &str| CredentialError::Incomplete {
        what: what.clone(),
        path: p.clone(),
        detail: detail.to_string(),
    };
    let keys = |mode: &str| {
        if prof.access_key_id.trim().is_empty() {
            return Err(incomplete(&format!("mode {mode} needs access_key_id")));
        }
        if prof.access_key_secret.trim().is_empty() {
            return Err(incomplete(&format!("mode {mode} needs access_key_secret")));
        }
        Ok(())
    };
    let mode = if prof.mode.is_empty() {
        "AK"
    } else {
        prof.mode.as_str()
    };
    let (credentials, role) = match mode {
        "AK" => {
            keys("AK")?;
            (
                Credentials::new(&prof.access_key_id, &prof.access_key_secret, None),
                None,
            )
        }
        "StsToken" => {
            keys("StsToken")?;
            if prof.sts_token.trim().is_empty() {
                return Err(incomplete("mode StsToken needs sts_token"));
            }
            (
                Credentials::new(
                    &prof.access_key_id,
                    &prof.access_key_secret,
                    Some(&prof.sts_token),
                ),
                None,
            )
        }
        "RamRoleArn" => {
            keys("RamRoleArn")?;
            if prof.ram_role_arn.trim().is_empty() {
                return Err(incomplete("mode RamRoleArn needs ram_role_arn"));
            }
            (
                Credentials::new(
                    &prof.access_key_id,
                    &prof.access_key_secret,
                    Some(&prof.sts_token),
                ),
                Some(ProfileRole {
                    role_arn: prof.ram_role_arn.trim().to_string(),
                    session_name: Some(prof.ram_session_name.trim().to_string())
                        .filter(|s| !s.is_empty()),
                }),
            )
        }
        other => {
            return Err(CredentialError::Unsupported {
                what,
                path: p,
                mode: format!("mode {other}"),
                supported: "AK, StsToken, RamRoleArn",
            })
        }
    };
    Ok(AliyunOutcome::Found(Box::new(Found {
        credentials,
        role,
        source: format!("profile {name:?} of {p}"),
        profile: Some(name),
    })))
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

// ---- ~/.alibabacloud/credentials (INI) ----

enum IniOutcome {
    Found(Box<Found>),
    NoSection,
    Disabled,
}

/// Parses INI text into sections of `key = value`. Comments start with `#` or `;`.
fn parse_ini(text: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("line {}: section header without closing ]", n + 1))?
                .trim();
            if name.is_empty() {
                return Err(format!("line {}: empty section name", n + 1));
            }
            sections.entry(name.to_string()).or_default();
            current = Some(name.to_string());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected `key = value`", n + 1))?;
        let section = current
            .as_ref()
            .ok_or_else(|| format!("line {}: key outside of any [section]", n + 1))?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        sections
            .entry(section.clone())
            .or_default()
            .insert(key.trim().to_ascii_lowercase(), value.to_string());
    }
    Ok(sections)
}

fn from_ini(text: &str, path: &Path, section: &str) -> Result<IniOutcome, CredentialError> {
    let p = path.display().to_string();
    let sections = parse_ini(text).map_err(|detail| CredentialError::Malformed {
        path: p.clone(),
        detail,
    })?;
    let Some(values) = sections.get(section) else {
        return Ok(IniOutcome::NoSection);
    };
    if values
        .get("enable")
        .is_some_and(|v| v.eq_ignore_ascii_case("false"))
    {
        return Ok(IniOutcome::Disabled);
    }
    let what = format!("section [{section}]");
    let get = |k: &str| values.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let need = |k: &str, ty: &str| {
        get(k).ok_or_else(|| CredentialError::Incomplete {
            what: what.clone(),
            path: p.clone(),
            detail: format!("type {ty} needs {k}"),
        })
    };
    let ty = get("type").ok_or_else(|| CredentialError::Incomplete {
        what: what.clone(),
        path: p.clone(),
        detail: "no type (want type = access_key, sts or ram_role_arn)".into(),
    })?;
    let (credentials, role) = match ty {
        "access_key" => (
            Credentials::new(
                need("access_key_id", ty)?,
                need("access_key_secret", ty)?,
                None,
            ),
            None,
        ),
        "sts" => (
            Credentials::new(
                need("access_key_id", ty)?,
                need("access_key_secret", ty)?,
                Some(need("security_token", ty)?),
            ),
            None,
        ),
        "ram_role_arn" => (
            Credentials::new(
                need("access_key_id", ty)?,
                need("access_key_secret", ty)?,
                get("security_token"),
            ),
            Some(ProfileRole {
                role_arn: need("role_arn", ty)?.to_string(),
                session_name: get("role_session_name").map(str::to_string),
            }),
        ),
        other => {
            return Err(CredentialError::Unsupported {
                what,
                path: p,
                mode: format!("type {other}"),
                supported: "access_key, sts, ram_role_arn",
            })
        }
    };
    Ok(IniOutcome::Found(Box::new(Found {
        credentials,
        role,
        source: format!("section [{section}] of {p}"),
        profile: Some(section.to_string()),
    })))
}

// ---- ~/.acs/credentials (legacy JSON) ----

#[derive(Deserialize)]
struct AcsLegacy {
    #[serde(rename = "AcsAccessKeyId", default)]
    id: String,
    #[serde(rename = "AcsAccessKeySecret", default)]
    secret: String,
    #[serde(rename = "AcsAccessSecurityToken", default)]
    token: Option<String>,
}

fn from_acs_legacy(text: &str, path: &Path) -> Result<Found, CredentialError> {
    let p = path.display().to_string();
    let doc: AcsLegacy = serde_json::from_str(text).map_err(|e| CredentialError::Malformed {
        path: p.clone(),
        detail: format!(
            "not JSON with AcsAccessKeyId and AcsAccessKeySecret (line {}, column {}: {})",
            e.line(),
            e.column(),
            json_error_kind(&e)
        ),
    })?;
    for (value, name) in [
        (&doc.id, "AcsAccessKeyId"),
        (&doc.secret, "AcsAccessKeySecret"),
    ] {
        if value.trim().is_empty() {
            return Err(CredentialError::Incomplete {
                what: "the credentials".into(),
                path: p,
                detail: format!("{name} is missing or empty"),
            });
        }
    }
    Ok(Found {
        credentials: Credentials::new(&doc.id, &doc.secret, doc.token.as_deref()),
        role: None,
        source: p,
        profile: None,
    })
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
        fn resolve(
            &self,
            extra: &[(&str, &str)],
            profile: Option<&str>,
        ) -> Result<Found, CredentialError> {
            let e = self.env(extra);
            resolve(&e, profile, &Paths::from_env(&e))
        }
    }

    const ALIYUN: &str = r#"{"current":"default","profiles":[
        {"name":"default","mode":"AK","access_key_id":"AK1","access_key_secret":"S1","region_id":"cn-hangzhou"},
        {"name":"sts","mode":"StsToken","access_key_id":"STS.2","access_key_secret":"SecretTwo","sts_token":"TokenTwo"},
        {"name":"role","mode":"RamRoleArn","access_key_id":"AK3","access_key_secret":"S3","ram_role_arn":"acs:ram::1:role/r","ram_session_name":"sess"},
        {"name":"ecs","mode":"EcsRamRole","ram_role_name":"x"},
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
        assert_eq!(f.credentials.access_key_id.0, "E1");
        assert_eq!(f.credentials.access_key_secret.expose(), "ES1");
        assert_eq!(
            f.credentials.security_token.as_ref().map(Secret::expose),
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
        assert_eq!(f.credentials.access_key_id.0, "A1");
        assert_eq!(
            f.credentials.security_token.as_ref().map(Secret::expose),
            Some("AT1")
        );
        // Empty values count as unset: the file is used.
        let f = home
            .resolve(&[("ALIBABA_CLOUD_ACCESS_KEY_ID", "")], None)
            .expect("file");
        assert_eq!(f.credentials.access_key_id.0, "AK1");
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
        assert_eq!(f.credentials.access_key_id.0, "AK1");
        assert_eq!(f.profile.as_deref(), Some("default"));
        assert!(f.credentials.security_token.is_none());
        assert!(f.role.is_none());

        let f = home.resolve(&[], Some("sts")).expect("sts");
        assert_eq!(
            f.credentials.security_token.as_ref().map(Secret::expose),
            Some("TokenTwo")
        );
        let f = home
            .resolve(&[(PROFILE_ENV, "role")], None)
            .expect("role via env");
        assert_eq!(f.credentials.access_key_id.0, "AK3");
        assert_eq!(
            f.role,
            Some(ProfileRole {
                role_arn: "acs:ram::1:role/r".into(),
                session_name: Some("sess".into())
            })
        );

        let e = home.resolve(&[], Some("ecs")).expect_err("ecs").to_string();
        assert!(
            e.contains("mode EcsRamRole") && e.contains("not supported"),
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
        assert_eq!(f.credentials.access_key_id.0, "STS.2");
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
        assert_eq!(f.credentials.access_key_id.0, "E1");
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
        assert_eq!(f.credentials.access_key_id.0, "INI1");
        assert_eq!(f.credentials.access_key_secret.expose(), "IS1");
        assert!(f.source.starts_with("section [default] of "));
        let f = home.resolve(&[], Some("sts")).expect("sts");
        assert_eq!(
            f.credentials.security_token.as_ref().map(Secret::expose),
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
        assert_eq!(f.credentials.access_key_id.0, "O1");

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
        assert_eq!(f.credentials.access_key_id.0, "AK1");
        // A profile the CLI config lacks is looked up in the INI file.
        home.write(".aliyun/config.json", r#"{"current":"x","profiles":[]}"#);
        let f = home.resolve(&[], None).expect("ini default");
        assert_eq!(f.credentials.access_key_id.0, "INI1");
    }

    #[test]
    fn legacy_acs_credentials() {
        let home = Home::new();
        home.write(
            ".acs/credentials",
            r#"{"AcsAccessKeyId":"L1","AcsAccessKeySecret":"LS1","AcsAccessSecurityToken":"LT1"}"#,
        );
        let f = home.resolve(&[], None).expect("legacy");
        assert_eq!(f.credentials.access_key_id.0, "L1");
        assert_eq!(
            f.credentials.security_token.as_ref().map(Secret::expose),
            Some("LT1")
        );
        home.write(
            ".acs/credentials",
            r#"{"AcsAccessKeyId":"L1","AcsAccessKeySecret":"LS1","AcsAccessSecurityToken":""}"#,
        );
        assert!(home
            .resolve(&[], None)
            .expect("legacy")
            .credentials
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
        let e = resolve(&Env::new(), None, &Paths::from_env(&Env::new()))
            .expect_err("no home")
            .to_string();
        assert!(e.contains("HOME is not set"), "{e}");
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

//! The credentials INI file, `~/.alibabacloud/credentials` (`ALIBABA_CLOUD_CREDENTIALS_FILE`):
//! section `[<profile>]` or `[default]`; types `access_key`, `sts`, `ram_role_arn`.

use std::collections::BTreeMap;
use std::path::Path;

use super::{
    read_optional, Context, CredentialError, Credentials, Found, Lookup, ProfileRole, Source,
};

/// `~/.alibabacloud/credentials`.
pub struct Ini;

impl Source for Ini {
    fn locate(&self, ctx: &Context<'_>) -> Result<Lookup, CredentialError> {
        let section = ctx.profile().unwrap_or("default");
        let Some(path) = &ctx.paths.credentials_ini else {
            return Ok(Lookup::NotHere(
                "~/.alibabacloud/credentials (HOME is not set)".into(),
            ));
        };
        let Some(text) = read_optional(path)? else {
            return Ok(Lookup::NotHere(format!("{} (not found)", path.display())));
        };
        Ok(match from_ini(&text, path, section)? {
            IniOutcome::Found(found) => Lookup::Found(found),
            IniOutcome::NoSection => {
                Lookup::NotHere(format!("{} (no section [{section}])", path.display()))
            }
            IniOutcome::Disabled => Lookup::NotHere(format!(
                "{} (section [{section}] has enable = false)",
                path.display()
            )),
        })
    }
}

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
    let mut found = Found::fixed(
        credentials,
        format!("section [{section}] of {p}"),
        Some(section.to_string()),
    );
    found.role = role;
    Ok(IniOutcome::Found(Box::new(found)))
}

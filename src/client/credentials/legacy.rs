//! The legacy JSON file `~/.acs/credentials` (`AcsAccessKeyId`, `AcsAccessKeySecret`,
//! `AcsAccessSecurityToken`).

use std::path::Path;

use serde::Deserialize;

use super::{
    json_error_kind, read_optional, Context, CredentialError, Credentials, Found, Lookup, Source,
};

/// `~/.acs/credentials`.
pub struct Legacy;

impl Source for Legacy {
    fn locate(&self, ctx: &Context<'_>) -> Result<Lookup, CredentialError> {
        let Some(path) = &ctx.paths.acs_legacy else {
            return Ok(Lookup::NotHere(
                "~/.acs/credentials (HOME is not set)".into(),
            ));
        };
        match read_optional(path)? {
            None => Ok(Lookup::NotHere(format!("{} (not found)", path.display()))),
            Some(text) => Ok(Lookup::Found(Box::new(from_acs_legacy(&text, path)?))),
        }
    }
}

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
    Ok(Found::fixed(
        Credentials::new(&doc.id, &doc.secret, doc.token.as_deref()),
        p,
        None,
    ))
}

//! Parsing and canonicalising `acs:ram::` ARNs.
//!
//! `acs:ram::<acct>:assumed-role/<role>/<session>` canonicalises to `acs:ram::<acct>:role/<role>`;
//! `user/...`, `role/...` and `root` stay as they are. Comparison is case-insensitive.

use std::fmt;

/// Why an ARN could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArnError {
    #[error("ARN {0:?} does not start with acs:ram::")]
    NotRam(String),
    #[error("ARN {0:?} has no account ID")]
    NoAccount(String),
    #[error("ARN {0:?} has no resource")]
    NoResource(String),
    #[error("ARN {0:?}: an assumed-role ARN needs a role name and a session name")]
    BadAssumedRole(String),
}

/// A parsed ARN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arn {
    pub account_id: String,
    pub resource: Resource,
    raw: String,
}

/// The resource part of a RAM ARN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    Root,
    User(String),
    Role(String),
    AssumedRole {
        role: String,
        session: String,
    },
    /// Any other kind, kept as written.
    Other(String),
}

/// An ARN in canonical form, compared without case.
#[derive(Clone, Debug)]
pub struct CanonicalArn {
    value: String,
    key: String,
}

impl CanonicalArn {
    /// The canonical ARN as written (case preserved).
    pub fn as_str(&self) -> &str {
        &self.value
    }
    /// The lower-cased form used for matching.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl PartialEq for CanonicalArn {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for CanonicalArn {}

impl fmt::Display for CanonicalArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl Arn {
    /// Parses `acs:ram::<account>:<resource>`.
    pub fn parse(raw: &str) -> Result<Self, ArnError> {
        let short = || raw.chars().take(200).collect::<String>();
        let rest =
            strip_prefix_ignore_case(raw, "acs:ram::").ok_or_else(|| ArnError::NotRam(short()))?;
        let (account, resource) = rest
            .split_once(':')
            .ok_or_else(|| ArnError::NoResource(short()))?;
        if account.is_empty() {
            return Err(ArnError::NoAccount(short()));
        }
        if resource.is_empty() {
            return Err(ArnError::NoResource(short()));
        }
        let resource = match resource.split_once('/') {
            None if resource.eq_ignore_ascii_case("root") => Resource::Root,
            Some((kind, name)) if kind.eq_ignore_ascii_case("user") && !name.is_empty() => {
                Resource::User(name.to_string())
            }
            Some((kind, name)) if kind.eq_ignore_ascii_case("role") && !name.is_empty() => {
                Resource::Role(name.to_string())
            }
            Some((kind, rest)) if kind.eq_ignore_ascii_case("assumed-role") => {
                match rest.split_once('/') {
                    Some((role, session)) if !role.is_empty() && !session.is_empty() => {
                        Resource::AssumedRole {
                            role: role.to_string(),
                            session: session.to_string(),
                        }
                    }
                    _ => return Err(ArnError::BadAssumedRole(short())),
                }
            }
            _ => Resource::Other(resource.to_string()),
        };
        Ok(Self {
            account_id: account.to_string(),
            resource,
            raw: raw.to_string(),
        })
    }

    /// The ARN as it was written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The canonical form: assumed roles become their role.
    pub fn canonical(&self) -> CanonicalArn {
        let value = match &self.resource {
            Resource::AssumedRole { role, .. } => {
                format!("acs:ram::{}:role/{role}", self.account_id)
            }
            _ => self.raw.clone(),
        };
        CanonicalArn {
            key: value.to_lowercase(),
            value,
        }
    }

    /// The session name of an assumed role, empty otherwise.
    pub fn session_name(&self) -> &str {
        match &self.resource {
            Resource::AssumedRole { session, .. } => session,
            _ => "",
        }
    }
}

/// Canonicalises an ARN written in a mapping (role, user or root ARN, or an assumed-role ARN).
pub fn canonicalize(raw: &str) -> Result<CanonicalArn, ArnError> {
    Arn::parse(raw.trim()).map(|a| a.canonical())
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalises_assumed_roles() {
        let a = Arn::parse("acs:ram::1234567890123456:assumed-role/KubeAdmin/alice@example.com")
            .expect("arn");
        assert_eq!(
            a.canonical().as_str(),
            "acs:ram::1234567890123456:role/KubeAdmin"
        );
        assert_eq!(a.session_name(), "alice@example.com");
        assert_eq!(a.account_id, "1234567890123456");
    }

    #[test]
    fn users_roles_and_root_stay() {
        for arn in [
            "acs:ram::123:user/alice",
            "acs:ram::123:role/admin",
            "acs:ram::123:root",
        ] {
            assert_eq!(canonicalize(arn).expect("arn").as_str(), arn);
        }
    }

    #[test]
    fn matching_ignores_case() {
        assert_eq!(
            canonicalize("ACS:RAM::123:ROLE/Admin").expect("arn"),
            canonicalize("acs:ram::123:role/admin").expect("arn")
        );
    }

    #[test]
    fn rejects_bad_arns() {
        assert!(matches!(
            Arn::parse("arn:aws:iam::1:user/x"),
            Err(ArnError::NotRam(_))
        ));
        assert!(matches!(
            Arn::parse("acs:ram:::user/x"),
            Err(ArnError::NoAccount(_))
        ));
        assert!(matches!(
            Arn::parse("acs:ram::1:"),
            Err(ArnError::NoResource(_))
        ));
        assert!(matches!(
            Arn::parse("acs:ram::1:assumed-role/x"),
            Err(ArnError::BadAssumedRole(_))
        ));
        assert!(Arn::parse("acs:ram::1:assumed-role/r/s/t").is_ok());
    }
}

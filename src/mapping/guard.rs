//! Guard rails on what a mapping may grant.
//!
//! Other parts of Kubernetes trust names under `system:`: `system:node:<name>` and the
//! `system:nodes` group are what the node authorizer and NodeRestriction grant kubelet powers
//! to, `system:serviceaccount:<ns>:<name>` is a service account, `system:kube-controller-manager`
//! and friends are control-plane components. A RAM identity must not be able to pose as one of
//! them because one mapping was careless, so by default:
//!
//! - no mapping may produce a username starting with `system:`;
//! - no mapping may produce a group starting with `system:`, except `system:masters` (the
//!   long-standing way to make an administrator, which ack-ram-authenticator's users rely on).
//!
//! A mapping that tries is skipped, as if it were not there, and reported (log line, the
//! `mappings_skipped` gauge, `check-config`). `server.allowReservedNames` lifts the rule for
//! named sources, or all of them, explicitly.
//!
//! The check runs twice: when a mapping is loaded (its literal text), and when an identity is
//! mapped (the rendered username and groups, since a template placeholder could in principle
//! render into a reserved prefix).

use std::fmt;

/// The prefix Kubernetes reserves for its own identities.
pub const RESERVED_PREFIX: &str = "system:";
/// The one reserved group a mapping may grant by default.
pub const ALLOWED_RESERVED_GROUP: &str = "system:masters";

/// Whether a username is reserved.
pub fn reserved_username(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

/// Whether a group is reserved (and not the allowed `system:masters`).
pub fn reserved_group(group: &str) -> bool {
    group.starts_with(RESERVED_PREFIX) && group != ALLOWED_RESERVED_GROUP
}

/// Why a mapping was skipped: the reserved name it would have produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reserved {
    Username(String),
    Group(String),
}

impl fmt::Display for Reserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Username(u) => write!(
                f,
                "username {u:?} is reserved (names starting with {RESERVED_PREFIX:?} belong to \
                 Kubernetes' own identities); allow it with server.allowReservedNames"
            ),
            Self::Group(g) => write!(
                f,
                "group {g:?} is reserved (groups starting with {RESERVED_PREFIX:?} other than \
                 {ALLOWED_RESERVED_GROUP}); allow it with server.allowReservedNames"
            ),
        }
    }
}

/// The first reserved name among a username and its groups.
pub fn check<'a>(username: &str, groups: impl IntoIterator<Item = &'a str>) -> Option<Reserved> {
    if reserved_username(username) {
        return Some(Reserved::Username(username.to_string()));
    }
    groups
        .into_iter()
        .find(|g| reserved_group(g))
        .map(|g| Reserved::Group(g.to_string()))
}

/// Which sources may produce reserved names (`server.allowReservedNames`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AllowReserved {
    /// None (the default).
    #[default]
    None,
    /// Every source.
    All,
    /// The named sources (backend mode names: `MountedFile`, `ACKConfigMap`, `CRD`).
    Sources(Vec<String>),
}

impl AllowReserved {
    /// Parses `true`/`false`/`all`/`none` or a list of backend mode names.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        let items: Vec<&str> = items
            .iter()
            .flat_map(|s| s.as_ref().split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        match items.as_slice() {
            [] => Ok(Self::None),
            [one] if matches!(one.to_ascii_lowercase().as_str(), "false" | "none") => {
                Ok(Self::None)
            }
            [one] if matches!(one.to_ascii_lowercase().as_str(), "true" | "all") => Ok(Self::All),
            many => {
                let mut names = Vec::new();
                for item in many {
                    let mode = crate::config::BackendMode::parse(item).map_err(|e| {
                        format!("{e}; or true/all for every source, false/none for none")
                    })?;
                    names.push(mode.as_str().to_string());
                }
                Ok(Self::Sources(names))
            }
        }
    }

    /// Whether `source` may produce reserved names.
    pub fn allows(&self, source: &str) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Sources(names) => names.iter().any(|n| n == source),
        }
    }
}

impl fmt::Display for AllowReserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::All => f.write_str("all sources"),
            Self::Sources(names) => f.write_str(&names.join(", ")),
        }
    }
}

/// What `check-config` says of one mapping: skipped by the guard rails, or a warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Advice {
    /// The mapping produces a reserved name and its source may not: it is skipped.
    Skipped { origin: String, reserved: Reserved },
    /// A role mapping whose username or groups take `{{SessionName}}`/`{{SessionNameRaw}}`:
    /// whoever assumes the role picks the session name, so they pick that part of the name.
    SessionChosen { origin: String, arn: String },
}

impl fmt::Display for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Skipped { origin, reserved } => write!(f, "{origin}: SKIPPED: {reserved}"),
            Self::SessionChosen { origin, arn } => write!(
                f,
                "{origin}: warning: the username or groups of {arn} depend on \
                 {{{{SessionName}}}}/{{{{SessionNameRaw}}}}, which whoever assumes the role \
                 chooses freely (RoleSessionName); anyone allowed to assume it can take any such \
                 name. Bind RBAC to the role's fixed part, or map one role per person \
                 (see docs/mappings.md#guard-rails)"
            ),
        }
    }
}

/// Reviews the entries of one source as the server would use them.
pub fn advise(entries: &[super::Entry], source: &str, allow: &AllowReserved) -> Vec<Advice> {
    let mut out = Vec::new();
    for e in entries {
        if let Some(r) = &e.reserved {
            if !allow.allows(source) {
                out.push(Advice::Skipped {
                    origin: e.origin.clone(),
                    reserved: r.clone(),
                });
                continue;
            }
        }
        let is_role = e.arn.to_ascii_lowercase().contains(":role/");
        if is_role
            && (e.username.uses_session_name() || e.groups.iter().any(|g| g.uses_session_name()))
        {
            out.push(Advice::SessionChosen {
                origin: e.origin.clone(),
                arn: e.arn.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names() {
        assert!(reserved_username("system:node:x"));
        assert!(reserved_username(
            "system:serviceaccount:kube-system:default"
        ));
        assert!(!reserved_username("alice"));
        assert!(
            !reserved_username("System:node:x"),
            "Kubernetes names are case-sensitive"
        );
        assert!(reserved_group("system:nodes"));
        assert!(reserved_group("system:authenticated"));
        assert!(!reserved_group("system:masters"));
        assert!(!reserved_group("developers"));
        assert_eq!(
            check("alice", ["dev", "system:nodes"]),
            Some(Reserved::Group("system:nodes".into()))
        );
        assert_eq!(check("alice", ["system:masters"]), None);
    }

    #[test]
    fn advice_names_skipped_and_session_chosen_mappings() {
        let entry = |arn: &str, user: &str, groups: &[&str], origin: &str| {
            super::super::Entry::new(
                arn,
                user,
                &groups.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
                origin.into(),
            )
            .expect("entry")
        };
        let entries = vec![
            entry(
                "acs:ram::1:role/node",
                "system:node:{{SessionName}}",
                &[],
                "a",
            ),
            entry("acs:ram::1:role/ops", "ops", &["system:nodes"], "b"),
            entry("acs:ram::1:role/dev", "dev:{{SessionName}}", &["dev"], "c"),
            entry("acs:ram::1:role/admin", "admin", &["system:masters"], "d"),
            entry("acs:ram::1:user/al", "al", &[], "e"),
        ];
        let advice = advise(&entries, "MountedFile", &AllowReserved::None);
        assert_eq!(advice.len(), 3, "{advice:?}");
        assert!(
            matches!(&advice[0], Advice::Skipped { origin, reserved: Reserved::Username(_) } if origin == "a")
        );
        assert!(
            matches!(&advice[1], Advice::Skipped { origin, reserved: Reserved::Group(g) } if origin == "b" && g == "system:nodes")
        );
        assert!(matches!(&advice[2], Advice::SessionChosen { origin, .. } if origin == "c"));
        assert!(advice[2].to_string().contains("chooses"));
        // Allowed explicitly: no longer skipped, but the session-name warning still applies.
        let advice = advise(&entries, "MountedFile", &AllowReserved::All);
        assert_eq!(advice.len(), 2, "{advice:?}");
        assert!(matches!(&advice[0], Advice::SessionChosen { origin, .. } if origin == "a"));
    }

    #[test]
    fn allow_lists() {
        assert_eq!(AllowReserved::parse::<&str>(&[]), Ok(AllowReserved::None));
        assert_eq!(AllowReserved::parse(&["true"]), Ok(AllowReserved::All));
        assert_eq!(AllowReserved::parse(&["none"]), Ok(AllowReserved::None));
        let some = AllowReserved::parse(&["mountedfile,crd"]).expect("list");
        assert!(some.allows("MountedFile") && some.allows("CRD"));
        assert!(!some.allows("ACKConfigMap"));
        assert!(AllowReserved::parse(&["nope"]).is_err());
        assert!(AllowReserved::All.allows("CRD"));
        assert!(!AllowReserved::None.allows("CRD"));
    }
}

//! From a confirmed identity to a Kubernetes user.
//!
//! Sources of mappings ([`Source`]: the config file, the `alibabacloud-auth` ConfigMap, the
//! `RAMIdentityMapping` custom resources) each keep an in-memory [`Index`]; the [`Chain`] asks
//! them in the configured order, first match wins. When no source maps the ARN, `mapAccounts`
//! of any source applies: the identity's account listed there maps to its canonical ARN as
//! username, with no groups.
//!
//! Lookups are pure and in memory: nothing on the request path touches the Kubernetes API.

pub mod file;
pub mod glob;
pub mod guard;
pub mod index;
pub mod template;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::arn::{Arn, ArnError, CanonicalArn};
use crate::sts::CallerIdentity;

pub use index::{Entry, Index};
pub use template::Template;

/// The principal ID of STS's answer: `PrincipalId`, else `UserId`, else `RoleId`, else the
/// account (a root identity).
pub fn principal_of(ci: &CallerIdentity) -> String {
    ci.principal_id
        .clone()
        .or_else(|| ci.user_id.clone())
        .or_else(|| ci.role_id.clone())
        .unwrap_or_else(|| ci.account_id.clone())
}

/// Prefix of `user.uid`, kept from ack-ram-authenticator.
pub const UID_PREFIX: &str = "ack-ram-authenticator";

/// An identity STS confirmed, normalised for mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub account_id: String,
    /// The ARN as STS wrote it.
    pub arn: String,
    pub canonical_arn: CanonicalArn,
    /// `PrincipalId` before `:` (the user or role ID).
    pub user_id: String,
    /// `PrincipalId` after `:` (empty for users).
    pub session_name: String,
    pub principal_id: String,
    pub access_key_id: String,
}

impl Identity {
    /// Normalises STS's answer.
    pub fn from_sts(ci: &CallerIdentity, access_key_id: &str) -> Result<Self, ArnError> {
        Self::from_parts(&ci.account_id, &ci.arn, &principal_of(ci), access_key_id)
    }

    /// Builds the identity from the account, the ARN and the principal ID STS returned.
    pub fn from_parts(
        account_id: &str,
        arn: &str,
        principal_id: &str,
        access_key_id: &str,
    ) -> Result<Self, ArnError> {
        let parsed = Arn::parse(arn)?;
        let (user_id, session_name) = match principal_id.split_once(':') {
            Some((u, s)) => (u.to_string(), s.to_string()),
            None => (principal_id.to_string(), String::new()),
        };
        let session_name = if session_name.is_empty() {
            parsed.session_name().to_string()
        } else {
            session_name
        };
        Ok(Self {
            account_id: account_id.to_string(),
            arn: arn.to_string(),
            canonical_arn: parsed.canonical(),
            user_id,
            session_name,
            principal_id: principal_id.to_string(),
            access_key_id: access_key_id.to_string(),
        })
    }

    /// `ack-ram-authenticator:<AccountId>:<UserID>`.
    pub fn uid(&self) -> String {
        format!("{UID_PREFIX}:{}:{}", self.account_id, self.user_id)
    }
}

/// The Kubernetes user an identity maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
    /// Which source and entry mapped it (for the audit log).
    pub mapped_by: String,
}

/// Why an identity could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("ARN {0} is not mapped to any Kubernetes user")]
    NotMapped(String),
}

/// A source of mappings, kept in memory and updated in the background.
pub trait Source: Send + Sync {
    /// The backend mode name (`MountedFile`, `ACKConfigMap`, `CRD`).
    fn name(&self) -> &'static str;
    /// The current snapshot.
    fn index(&self) -> Arc<Index>;
    /// Whether the source has loaded once.
    fn ready(&self) -> bool;
}

/// A fixed set of mappings (tests, `verify --config`).
pub struct StaticSource {
    pub name: &'static str,
    pub index: Arc<Index>,
}

impl Source for StaticSource {
    fn name(&self) -> &'static str {
        self.name
    }
    fn index(&self) -> Arc<Index> {
        self.index.clone()
    }
    fn ready(&self) -> bool {
        true
    }
}

/// The configured sources, in order, and which of them may produce reserved names.
#[derive(Clone, Default)]
pub struct Chain {
    sources: Vec<Arc<dyn Source>>,
    allow_reserved: guard::AllowReserved,
}

/// A mapping the guard rails skip: the source, the entry's origin and the reserved name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub source: &'static str,
    pub origin: String,
    pub reserved: guard::Reserved,
}

impl Chain {
    /// A chain where no source may produce reserved names.
    pub fn new(sources: Vec<Arc<dyn Source>>) -> Self {
        Self::guarded(sources, guard::AllowReserved::None)
    }

    /// A chain where the sources `allow_reserved` names may produce reserved names.
    pub fn guarded(sources: Vec<Arc<dyn Source>>, allow_reserved: guard::AllowReserved) -> Self {
        Self {
            sources,
            allow_reserved,
        }
    }

    /// Mappings of one source that the guard rails skip in its current snapshot.
    pub fn skipped_in(&self, source: &dyn Source) -> Vec<Skipped> {
        if self.allow_reserved.allows(source.name()) {
            return Vec::new();
        }
        let mut out: Vec<Skipped> = source
            .index()
            .reserved()
            .map(|(e, r)| Skipped {
                source: source.name(),
                origin: e.origin.clone(),
                reserved: r.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.origin.cmp(&b.origin));
        out
    }

    pub fn sources(&self) -> &[Arc<dyn Source>] {
        &self.sources
    }

    /// Whether every source has loaded once.
    pub fn ready(&self) -> bool {
        self.sources.iter().all(|s| s.ready())
    }

    /// Maps an identity: the first source whose index matches the canonical ARN wins; failing
    /// that, an account listed in any source's `mapAccounts` maps to the canonical ARN.
    pub fn map(&self, identity: &Identity) -> Result<User, MappingError> {
        let snapshots: Vec<(&'static str, Arc<Index>)> =
            self.sources.iter().map(|s| (s.name(), s.index())).collect();
        for (name, index) in &snapshots {
            let allow = self.allow_reserved.allows(name);
            if let Some(entry) = index.lookup_guarded(&identity.canonical_arn, allow) {
                let username = entry.username.render(identity);
                let groups: Vec<String> = entry.groups.iter().map(|g| g.render(identity)).collect();
                // The rendered names too: a placeholder must not open a way into `system:`.
                if !allow {
                    if let Some(r) = guard::check(&username, groups.iter().map(String::as_str)) {
                        tracing::warn!(source = name, entry = %entry.origin, arn = %identity.canonical_arn, reason = %r, "mapping skipped: it rendered a reserved name");
                        continue;
                    }
                }
                return Ok(self.user(
                    identity,
                    username,
                    groups,
                    format!("{name}:{}", entry.origin),
                ));
            }
        }
        for (name, index) in &snapshots {
            if index.maps_account(&identity.account_id) {
                return Ok(self.user(
                    identity,
                    identity.canonical_arn.as_str().to_string(),
                    Vec::new(),
                    format!("{name}:mapAccounts"),
                ));
            }
        }
        Err(MappingError::NotMapped(identity.canonical_arn.to_string()))
    }

    fn user(
        &self,
        identity: &Identity,
        username: String,
        groups: Vec<String>,
        mapped_by: String,
    ) -> User {
        let one = |v: &str| vec![v.to_string()];
        let mut extra = BTreeMap::new();
        extra.insert("arn".to_string(), one(&identity.arn));
        extra.insert(
            "canonicalArn".to_string(),
            one(identity.canonical_arn.as_str()),
        );
        extra.insert("sessionName".to_string(), one(&identity.session_name));
        extra.insert("accessKeyId".to_string(), one(&identity.access_key_id));
        extra.insert("principalId".to_string(), one(&identity.principal_id));
        User {
            username,
            uid: identity.uid(),
            groups,
            extra,
            mapped_by,
        }
    }
}

/// One `mapRoles` entry as written in a config file or ConfigMap (keys in any casing).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RoleMappingDoc {
    #[serde(rename = "rolearn")]
    pub role_arn: String,
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// One `mapUsers` entry as written in a config file or ConfigMap (keys in any casing).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserMappingDoc {
    #[serde(rename = "userarn")]
    pub user_arn: String,
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Lower-cases every mapping key of a YAML tree, so that `roleARN`, `rolearn` and `RoleArn`
/// read alike (ack-ram-authenticator read its files without case).
pub fn lowercase_keys(value: serde_yaml::Value) -> serde_yaml::Value {
    use serde_yaml::Value;
    match value {
        Value::Mapping(map) => Value::Mapping(
            map.into_iter()
                .map(|(k, v)| {
                    let k = match k {
                        Value::String(s) => Value::String(s.to_lowercase()),
                        other => other,
                    };
                    (k, lowercase_keys(v))
                })
                .collect(),
        ),
        Value::Sequence(seq) => Value::Sequence(seq.into_iter().map(lowercase_keys).collect()),
        Value::Tagged(t) => lowercase_keys(t.value),
        other => other,
    }
}

/// Builds index entries from `mapRoles`/`mapUsers` documents; `what` names the place for errors
/// (e.g. `server.mapRoles`).
pub fn entries_from_docs(
    what: &str,
    roles: &[RoleMappingDoc],
    users: &[UserMappingDoc],
) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    let role_items = roles
        .iter()
        .map(|r| ("mapRoles", &r.role_arn, &r.username, &r.groups));
    let user_items = users
        .iter()
        .map(|u| ("mapUsers", &u.user_arn, &u.username, &u.groups));
    let mut counters = (0usize, 0usize);
    for (key, arn, username, groups) in role_items.chain(user_items) {
        let i = if key == "mapRoles" {
            counters.0 += 1;
            counters.0 - 1
        } else {
            counters.1 += 1;
            counters.1 - 1
        };
        let origin = format!("{what}.{key}[{i}]");
        entries.push(
            Entry::new(arn, username, groups, origin.clone())
                .map_err(|e| format!("{origin}: {e}"))?,
        );
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(arn: &str, principal: &str) -> Identity {
        Identity::from_sts(
            &CallerIdentity {
                request_id: None,
                account_id: "1234567890123456".into(),
                user_id: None,
                role_id: None,
                arn: arn.into(),
                identity_type: None,
                principal_id: Some(principal.into()),
            },
            "STS.AK",
        )
        .expect("identity")
    }

    fn chain(entries: Vec<Entry>, accounts: &[&str]) -> Chain {
        let index = Index::build(entries, accounts.iter().map(|a| a.to_string()).collect());
        Chain::new(vec![Arc::new(StaticSource {
            name: "MountedFile",
            index: Arc::new(index),
        })])
    }

    #[test]
    fn maps_assumed_role_with_templates() {
        let e = Entry::new(
            "acs:ram::1234567890123456:role/KubeAdmin",
            "admin:{{AccountID}}:{{SessionName}}",
            &["g-{{SessionNameRaw}}".to_string()],
            "t".into(),
        )
        .expect("entry");
        let id = identity(
            "acs:ram::1234567890123456:assumed-role/KubeAdmin/alice@example.com",
            "3001:alice@example.com",
        );
        let user = chain(vec![e], &[]).map(&id).expect("mapped");
        assert_eq!(user.username, "admin:1234567890123456:alice-example.com");
        assert_eq!(user.groups, vec!["g-alice@example.com"]);
        assert_eq!(user.uid, "ack-ram-authenticator:1234567890123456:3001");
        assert_eq!(
            user.extra["canonicalArn"],
            vec!["acs:ram::1234567890123456:role/KubeAdmin"]
        );
        assert_eq!(user.extra["sessionName"], vec!["alice@example.com"]);
    }

    #[test]
    fn map_accounts_applies_after_no_match() {
        let id = identity("acs:ram::1234567890123456:user/bob", "2001");
        let user = chain(vec![], &["1234567890123456"])
            .map(&id)
            .expect("mapped");
        assert_eq!(user.username, "acs:ram::1234567890123456:user/bob");
        assert!(user.groups.is_empty());
        assert_eq!(user.uid, "ack-ram-authenticator:1234567890123456:2001");
        assert_eq!(
            chain(vec![], &["999"]).map(&id),
            Err(MappingError::NotMapped(
                "acs:ram::1234567890123456:user/bob".into()
            ))
        );
    }

    #[test]
    fn a_template_that_renders_a_reserved_name_is_skipped() {
        let e = Entry::new(
            "acs:ram::1234567890123456:role/Ops",
            "{{SessionNameRaw}}",
            &[],
            "t".into(),
        )
        .expect("entry");
        assert!(e.reserved.is_none(), "nothing reserved in the literal text");
        let id = identity(
            "acs:ram::1234567890123456:assumed-role/Ops/system:kube-scheduler",
            "3001:system:kube-scheduler",
        );
        assert!(matches!(
            chain(vec![e.clone()], &[]).map(&id),
            Err(MappingError::NotMapped(_))
        ));
        let index = Arc::new(Index::build(vec![e], vec![]));
        let allowed = Chain::guarded(
            vec![Arc::new(StaticSource {
                name: "MountedFile",
                index,
            })],
            guard::AllowReserved::All,
        );
        assert_eq!(
            allowed.map(&id).expect("allowed").username,
            "system:kube-scheduler"
        );
    }

    #[test]
    fn key_casing_is_ignored() {
        let yaml = "- RoleArn: acs:ram::1:role/a\n  UserName: a\n  GROUPS: [x]\n";
        let v = lowercase_keys(serde_yaml::from_str(yaml).expect("yaml"));
        let docs: Vec<RoleMappingDoc> = serde_yaml::from_value(v).expect("docs");
        assert_eq!(docs[0].role_arn, "acs:ram::1:role/a");
        assert_eq!(docs[0].groups, vec!["x"]);
    }
}

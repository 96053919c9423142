//! The in-memory index every source keeps: exact ARNs in a hash map, wildcard patterns in a
//! list ordered by precedence, and the accounts of `mapAccounts`.
//!
//! Precedence, deterministic whatever the order entries arrive in:
//! 1. an exact (canonical, case-insensitive) ARN match;
//! 2. else the matching pattern with the most literal characters;
//! 3. ties broken by the pattern text, then by the entry's origin (e.g. the object's name).
//!
//! Two exact entries for the same ARN: the one whose origin sorts first wins (the loser is
//! reported by [`Index::build`] callers through [`Index::shadowed`]).

use std::collections::{HashMap, HashSet};

use super::glob::Glob;
use super::guard::{self, Reserved};
use super::template::Template;
use crate::arn::{canonicalize, CanonicalArn};

/// One mapping: an ARN (or pattern) to a username and groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The ARN or pattern as written.
    pub arn: String,
    pub username: Template,
    pub groups: Vec<Template>,
    /// Where it came from, for logs: `server.mapRoles[2]`, `RAMIdentityMapping/dev`.
    pub origin: String,
    /// The reserved name the entry's literal text produces, if any (see [`super::guard`]).
    pub reserved: Option<Reserved>,
    key: Key,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    Exact(String),
    Pattern(Glob),
}

impl Entry {
    /// Validates an entry: a parsable ARN (or a pattern), a non-empty username, known templates.
    pub fn new(
        arn: &str,
        username: &str,
        groups: &[String],
        origin: String,
    ) -> Result<Self, String> {
        let arn = arn.trim();
        if arn.is_empty() {
            return Err("the ARN is empty".into());
        }
        let key = if Glob::is_pattern(arn) {
            if !arn.to_ascii_lowercase().starts_with("acs:ram::") {
                return Err(format!("pattern {arn:?} does not start with acs:ram::"));
            }
            Key::Pattern(Glob::new(arn))
        } else {
            Key::Exact(
                canonicalize(arn)
                    .map_err(|e| e.to_string())?
                    .key()
                    .to_string(),
            )
        };
        if username.trim().is_empty() {
            return Err("the username is empty".into());
        }
        let username = Template::parse(username).map_err(|e| format!("username: {e}"))?;
        let groups = groups
            .iter()
            .map(|g| Template::parse(g).map_err(|e| format!("group {g:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let reserved = guard::check(
            username.literal_prefix(),
            groups.iter().map(Template::literal_prefix),
        );
        Ok(Self {
            arn: arn.to_string(),
            username,
            groups,
            origin,
            reserved,
            key,
        })
    }

    pub fn is_pattern(&self) -> bool {
        matches!(self.key, Key::Pattern(_))
    }
}

/// A snapshot of one source's mappings.
#[derive(Clone, Debug, Default)]
pub struct Index {
    exact: HashMap<String, Entry>,
    patterns: Vec<(Glob, Entry)>,
    accounts: HashSet<String>,
    shadowed: Vec<String>,
}

impl Index {
    /// Builds the index. Never fails: conflicts are resolved by the documented precedence and
    /// listed in [`Index::shadowed`].
    pub fn build(mut entries: Vec<Entry>, accounts: Vec<String>) -> Self {
        entries.sort_by(|a, b| a.origin.cmp(&b.origin));
        let mut exact: HashMap<String, Entry> = HashMap::new();
        let mut patterns = Vec::new();
        let mut shadowed = Vec::new();
        for entry in entries {
            match &entry.key {
                Key::Exact(k) => {
                    if let Some(winner) = exact.get(k) {
                        shadowed.push(format!("{} (same ARN as {})", entry.origin, winner.origin));
                    } else {
                        exact.insert(k.clone(), entry);
                    }
                }
                Key::Pattern(g) => patterns.push((g.clone(), entry)),
            }
        }
        patterns.sort_by(|(ga, ea), (gb, eb)| {
            gb.literal_len()
                .cmp(&ga.literal_len())
                .then_with(|| ga.as_str().to_lowercase().cmp(&gb.as_str().to_lowercase()))
                .then_with(|| ea.origin.cmp(&eb.origin))
        });
        Self {
            exact,
            patterns,
            accounts: accounts.into_iter().map(|a| a.trim().to_string()).collect(),
            shadowed,
        }
    }

    /// The entry for a canonical ARN, by the precedence above.
    pub fn lookup(&self, arn: &CanonicalArn) -> Option<&Entry> {
        self.lookup_guarded(arn, true)
    }

    /// Like [`lookup`](Self::lookup), skipping entries that produce reserved names unless
    /// `allow_reserved`: a skipped entry is as if it were not there.
    pub fn lookup_guarded(&self, arn: &CanonicalArn, allow_reserved: bool) -> Option<&Entry> {
        let usable = |e: &Entry| allow_reserved || e.reserved.is_none();
        self.exact.get(arn.key()).filter(|e| usable(e)).or_else(|| {
            self.patterns
                .iter()
                .find(|(g, e)| usable(e) && g.matches_lower(arn.key()))
                .map(|(_, e)| e)
        })
    }

    /// Entries whose literal text produces a reserved name, with that name.
    pub fn reserved(&self) -> impl Iterator<Item = (&Entry, &Reserved)> {
        self.exact
            .values()
            .chain(self.patterns.iter().map(|(_, e)| e))
            .filter_map(|e| e.reserved.as_ref().map(|r| (e, r)))
    }

    /// Whether `mapAccounts` lists the account.
    pub fn maps_account(&self, account_id: &str) -> bool {
        self.accounts.contains(account_id)
    }

    /// Number of entries (exact, patterns and accounts).
    pub fn len(&self) -> usize {
        self.exact.len() + self.patterns.len() + self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries that lost to another entry for the same exact ARN.
    pub fn shadowed(&self) -> &[String] {
        &self.shadowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(arn: &str, user: &str, origin: &str) -> Entry {
        Entry::new(arn, user, &[], origin.into()).expect("entry")
    }

    fn lookup<'a>(i: &'a Index, arn: &str) -> Option<&'a str> {
        i.lookup(&canonicalize(arn).expect("arn"))
            .map(|e| e.username.as_str())
    }

    #[test]
    fn exact_beats_pattern_and_specific_beats_general() {
        let i = Index::build(
            vec![
                e("acs:ram::1:role/*", "any", "a"),
                e("acs:ram::1:role/dev-*", "dev", "b"),
                e("acs:ram::1:role/dev-alice", "alice", "c"),
            ],
            vec![],
        );
        assert_eq!(lookup(&i, "acs:ram::1:role/dev-alice"), Some("alice"));
        assert_eq!(lookup(&i, "acs:ram::1:assumed-role/DEV-bob/s"), Some("dev"));
        assert_eq!(lookup(&i, "acs:ram::1:role/ops"), Some("any"));
        assert_eq!(lookup(&i, "acs:ram::2:role/ops"), None);
    }

    #[test]
    fn resolution_does_not_depend_on_arrival_order() {
        let a = e("acs:ram::1:role/x?", "first", "obj-a");
        let b = e("acs:ram::1:role/?y", "second", "obj-b");
        let c = e("acs:ram::1:role/xy", "exact-c", "obj-c");
        let d = e("ACS:RAM::1:ROLE/XY", "exact-d", "obj-d");
        let i1 = Index::build(vec![a.clone(), b.clone(), c.clone(), d.clone()], vec![]);
        let i2 = Index::build(vec![d, c, b.clone(), a.clone()], vec![]);
        assert_eq!(lookup(&i1, "acs:ram::1:role/xy"), Some("exact-c"));
        assert_eq!(lookup(&i2, "acs:ram::1:role/xy"), Some("exact-c"));
        assert_eq!(i1.shadowed().len(), 1);
        let i3 = Index::build(vec![a.clone(), b.clone()], vec![]);
        let i4 = Index::build(vec![b, a], vec![]);
        assert_eq!(
            lookup(&i3, "acs:ram::1:role/xy"),
            lookup(&i4, "acs:ram::1:role/xy")
        );
    }

    #[test]
    fn refuses_bad_entries() {
        assert!(Entry::new("", "u", &[], "o".into()).is_err());
        assert!(Entry::new("acs:ram::1:role/a", " ", &[], "o".into()).is_err());
        assert!(Entry::new("arn:aws:iam::1:role/*", "u", &[], "o".into()).is_err());
        assert!(Entry::new("acs:ram::1:role/a", "{{Nope}}", &[], "o".into()).is_err());
    }
}

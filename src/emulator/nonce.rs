//! Remembers the `SignatureNonce`s already used, each until its request's date is too old to be
//! accepted anyway, in bounded memory.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// How many nonces are remembered at most; when full, the one closest to expiry is forgotten.
pub const DEFAULT_CAPACITY: usize = 200_000;

/// A set of used nonces with expiry. Cheap to share: one short lock per check, never held
/// across an await.
#[derive(Debug)]
pub struct NonceStore {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    expiry_of: HashMap<String, DateTime<Utc>>,
    by_expiry: BTreeSet<(DateTime<Utc>, String)>,
}

impl NonceStore {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    /// Records `key` as used until `expires`; returns false when it was already used and has
    /// not expired at `now`.
    pub fn check_and_insert(&self, key: &str, expires: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let mut inner = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Forget what has expired.
        while let Some(first) = inner.by_expiry.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, k)) = inner.by_expiry.pop_first() {
                inner.expiry_of.remove(&k);
            }
        }
        if inner.expiry_of.contains_key(key) {
            return false;
        }
        while inner.expiry_of.len() >= self.capacity {
            match inner.by_expiry.pop_first() {
                Some((_, k)) => {
                    inner.expiry_of.remove(&k);
                }
                None => break,
            }
        }
        inner.expiry_of.insert(key.to_string(), expires);
        inner.by_expiry.insert((expires, key.to_string()));
        true
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        match self.inner.lock() {
            Ok(g) => g.expiry_of.len(),
            Err(poisoned) => poisoned.into_inner().expiry_of.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("date") + TimeDelta::minutes(minutes)
    }

    #[test]
    fn refuses_reuse_until_expiry() {
        let store = NonceStore::new(10);
        assert!(store.check_and_insert("a", t(15), t(0)));
        assert!(!store.check_and_insert("a", t(15), t(1)));
        assert!(!store.check_and_insert("a", t(15), t(14)));
        // Expired: the date check would refuse the request anyway, so it may be forgotten.
        assert!(store.check_and_insert("a", t(30), t(15)));
        assert!(store.check_and_insert("b", t(30), t(15)));
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn memory_is_bounded() {
        let store = NonceStore::new(3);
        for i in 0..10 {
            assert!(store.check_and_insert(&format!("n{i}"), t(15 + i), t(0)));
        }
        assert_eq!(store.len(), 3);
        // The newest are kept.
        assert!(!store.check_and_insert("n9", t(30), t(0)));
        assert!(store.check_and_insert("n0", t(30), t(0)));
    }
}

//! The on-disk cache of temporary credentials from `AssumeRole`, so that every kubectl call
//! does not cost an STS round trip.
//!
//! One JSON file per (base AccessKey ID, profile, role ARN, session name, endpoint), under
//! `~/.kube/cache/ram-authenticator/` (`RAM_AUTHENTICATOR_CACHE_DIR` overrides), mode 0600 in a
//! 0700 directory, written atomically. An entry is used until 5 minutes before it expires. A
//! corrupt or unreadable entry is ignored and rewritten: the cache is never fatal.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::assume_role::TempCredentials;
use super::credentials::{env_var, Credentials, Env};
use crate::types::{format_utc, parse_utc, AccessKeyId, Secret};

/// Environment variable that moves the cache directory.
pub const CACHE_DIR_ENV: &str = "RAM_AUTHENTICATOR_CACHE_DIR";
/// Cached credentials are replaced this long before they expire.
pub const REFRESH_BEFORE: TimeDelta = TimeDelta::minutes(5);
const FORMAT_VERSION: u32 = 1;

/// What identifies one cache entry.
pub struct KeyParts<'a> {
    pub base_access_key_id: &'a str,
    pub profile: Option<&'a str>,
    pub role_arn: &'a str,
    pub session_name: &'a str,
    pub endpoint: &'a str,
}

/// The file name of an entry: a hash of its key parts.
pub fn key(parts: &KeyParts<'_>) -> String {
    let mut h = Sha256::new();
    for part in [
        parts.base_access_key_id,
        parts.profile.unwrap_or(""),
        parts.role_arn,
        parts.session_name,
        parts.endpoint,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    version: u32,
    role_arn: String,
    assumed_role_arn: String,
    access_key_id: String,
    access_key_secret: Secret,
    security_token: Secret,
    expiration: String,
}

/// A cache directory.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$RAM_AUTHENTICATOR_CACHE_DIR`, else `$HOME/.kube/cache/ram-authenticator`; `None`
    /// without either.
    pub fn from_env(env: &Env) -> Option<Self> {
        env_var(env, CACHE_DIR_ENV)
            .map(PathBuf::from)
            .or_else(|| {
                env_var(env, "HOME").map(|h| Path::new(h).join(".kube/cache/ram-authenticator"))
            })
            .map(Self::new)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the entry for `key`.
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The cached credentials for `key` and `role_arn`, if present, readable and valid for
    /// more than [`REFRESH_BEFORE`] after `now`.
    pub fn load(&self, key: &str, role_arn: &str, now: DateTime<Utc>) -> Option<TempCredentials> {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cache entry unreadable; ignoring it");
                return None;
            }
        };
        let entry: Entry = match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(path = %path.display(), line = e.line(), "cache entry corrupt; ignoring it");
                return None;
            }
        };
        if entry.version != FORMAT_VERSION || entry.role_arn != role_arn {
            tracing::debug!(path = %path.display(), "cache entry of another version or role; ignoring it");
            return None;
        }
        let Some(expiration) = parse_utc(&entry.expiration) else {
            tracing::debug!(path = %path.display(), "cache entry without a valid expiration; ignoring it");
            return None;
        };
        if entry.access_key_id.is_empty()
            || entry.access_key_secret.is_empty()
            || entry.security_token.is_empty()
        {
            tracing::debug!(path = %path.display(), "cache entry incomplete; ignoring it");
            return None;
        }
        if expiration - REFRESH_BEFORE <= now {
            tracing::debug!(path = %path.display(), expiration = %format_utc(expiration), "cached credentials expire soon; renewing");
            return None;
        }
        tracing::debug!(path = %path.display(), access_key_id = %entry.access_key_id, "using cached role credentials");
        Some(TempCredentials {
            credentials: Credentials {
                access_key_id: AccessKeyId(entry.access_key_id),
                access_key_secret: entry.access_key_secret,
                security_token: Some(entry.security_token),
            },
            expiration,
            assumed_role_arn: entry.assumed_role_arn,
        })
    }

    /// Writes the entry for `key` atomically (temporary file, then rename), mode 0600, in a
    /// directory of mode 0700.
    pub fn store(&self, key: &str, role_arn: &str, creds: &TempCredentials) -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let perms = std::fs::metadata(&self.dir)?.permissions();
        if perms.mode() & 0o077 != 0 {
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let entry = Entry {
            version: FORMAT_VERSION,
            role_arn: role_arn.to_string(),
            assumed_role_arn: creds.assumed_role_arn.clone(),
            access_key_id: creds.credentials.access_key_id.0.clone(),
            access_key_secret: creds.credentials.access_key_secret.clone(),
            security_token: creds.credentials.security_token.clone().unwrap_or_default(),
            expiration: format_utc(creds.expiration),
        };
        let bytes = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        let target = self.path(key);
        let tmp = self.dir.join(format!(
            ".{key}.{}.{:08x}.tmp",
            std::process::id(),
            rand::random::<u32>()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)
        };
        let result = write();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    fn creds(expiration: &str) -> TempCredentials {
        TempCredentials {
            credentials: Credentials {
                access_key_id: AccessKeyId("STS.cached".into()),
                access_key_secret: Secret::new("cached-secret"),
                security_token: Some(Secret::new("cached-token")),
            },
            expiration: parse_utc(expiration).expect("date"),
            assumed_role_arn: "acs:ram::1:assumed-role/r/s".into(),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        parse_utc(s).expect("date")
    }

    const ROLE: &str = "acs:ram::1:role/r";

    #[test]
    fn keys_differ_by_every_part() {
        let base = KeyParts {
            base_access_key_id: "AK",
            profile: None,
            role_arn: ROLE,
            session_name: "s",
            endpoint: "https://sts.aliyuncs.com",
        };
        let k = key(&base);
        assert_eq!(k.len(), 32);
        assert_eq!(k, key(&KeyParts { ..base }));
        let variants = [
            KeyParts {
                base_access_key_id: "AK2",
                ..base
            },
            KeyParts {
                profile: Some("p"),
                ..base
            },
            KeyParts {
                role_arn: "acs:ram::1:role/x",
                ..base
            },
            KeyParts {
                session_name: "t",
                ..base
            },
            KeyParts {
                endpoint: "http://127.0.0.1:1",
                ..base
            },
            // Moving a character between parts changes the key too.
            KeyParts {
                base_access_key_id: "AKs",
                session_name: "",
                ..base
            },
        ];
        for v in &variants {
            assert_ne!(key(v), k);
        }
    }

    #[test]
    fn hit_then_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path().join("sub/cache"));
        assert!(cache.load("k", ROLE, at("2026-01-01T00:00:00Z")).is_none());
        cache
            .store("k", ROLE, &creds("2026-01-01T01:00:00Z"))
            .expect("store");
        let hit = cache
            .load("k", ROLE, at("2026-01-01T00:54:59Z"))
            .expect("hit");
        assert_eq!(hit, creds("2026-01-01T01:00:00Z"));
        // Within 5 minutes of expiry: renewed.
        assert!(cache.load("k", ROLE, at("2026-01-01T00:55:00Z")).is_none());
        assert!(cache.load("k", ROLE, at("2026-01-01T02:00:00Z")).is_none());
        // Another role under the same key is not served.
        assert!(cache
            .load("k", "acs:ram::1:role/other", at("2026-01-01T00:00:00Z"))
            .is_none());
    }

    #[test]
    fn modes_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache_dir = dir.path().join("c");
        std::fs::create_dir(&cache_dir).expect("mkdir");
        std::fs::set_permissions(&cache_dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let cache = Cache::new(&cache_dir);
        cache
            .store("k", ROLE, &creds("2026-01-01T01:00:00Z"))
            .expect("store");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&cache_dir), 0o700);
        assert_eq!(mode(&cache.path("k")), 0o600);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&cache_dir)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("k.json")]);
    }

    #[test]
    fn corrupt_entries_are_ignored_and_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path());
        let now = at("2026-01-01T00:00:00Z");
        for junk in [
            &b"{not json"[..],
            b"",
            br#"{"version":1}"#,
            br#"{"version":2,"roleArn":"acs:ram::1:role/r","assumedRoleArn":"","accessKeyId":"a","accessKeySecret":"b","securityToken":"c","expiration":"2026-01-01T01:00:00Z"}"#,
            br#"{"version":1,"roleArn":"acs:ram::1:role/r","assumedRoleArn":"","accessKeyId":"a","accessKeySecret":"b","securityToken":"c","expiration":"later"}"#,
            br#"{"version":1,"roleArn":"acs:ram::1:role/r","assumedRoleArn":"","accessKeyId":"","accessKeySecret":"b","securityToken":"c","expiration":"2026-01-01T01:00:00Z"}"#,
        ] {
            std::fs::write(cache.path("k"), junk).expect("write");
            assert!(cache.load("k", ROLE, now).is_none());
        }
        cache
            .store("k", ROLE, &creds("2026-01-01T01:00:00Z"))
            .expect("rewrite");
        assert!(cache.load("k", ROLE, now).is_some());
        // An unreadable entry (a directory in its place) is ignored too.
        std::fs::create_dir(cache.path("d")).expect("mkdir");
        assert!(cache.load("d", ROLE, now).is_none());
    }

    #[test]
    fn dir_from_env() {
        let env: Env = [("HOME".to_string(), "/home/a".to_string())].into();
        assert_eq!(
            Cache::from_env(&env).expect("home").dir(),
            Path::new("/home/a/.kube/cache/ram-authenticator")
        );
        let env: Env = [
            ("HOME".to_string(), "/home/a".to_string()),
            (CACHE_DIR_ENV.to_string(), "/tmp/c".to_string()),
        ]
        .into();
        assert_eq!(
            Cache::from_env(&env).expect("env").dir(),
            Path::new("/tmp/c")
        );
        assert!(Cache::from_env(&Env::new()).is_none());
    }
}

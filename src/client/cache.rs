//! The on-disk cache of temporary credentials (from `AssumeRole`, `AssumeRoleWithOIDC`, the ECS
//! metadata service, a credentials URI or an external command), so that every kubectl call does
//! not cost a round trip.
//!
//! One JSON file per source and its parameters (for a role: base AccessKey ID, profile, role ARN,
//! session name, endpoint), under `~/.kube/cache/ram-authenticator/`
//! (`RAM_AUTHENTICATOR_CACHE_DIR` overrides), mode 0600 in a 0700 directory, written atomically.
//! An entry is used until 5 minutes before it expires. A corrupt or unreadable entry is ignored
//! and rewritten: the cache is never fatal.
//!
//! An entry is trusted only when it is a regular file owned by the current user that nobody else
//! may read or write, in a directory owned by the user (or root) that nobody else may write to.
//! Anything else (another user's file, a file readable by others, a directory others can write
//! to, a symlink, a FIFO or device) is ignored with a warning and replaced. Opening never blocks
//! (`O_NONBLOCK|O_NOFOLLOW`, then checks on the open descriptor).

use std::io::Read as _;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
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

/// The file name of an entry for credentials a source (`oidc`, `ecs`, `uri`, `external`)
/// fetched with parameters `id`.
pub fn source_key(kind: &str, id: &str) -> String {
    let mut h = Sha256::new();
    for part in ["source", kind, id] {
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
        let bytes = match self.read_private(&path) {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(reason) => {
                tracing::warn!(path = %path.display(), "ignoring the cached credentials: {reason}; they will be replaced");
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

    /// Reads an entry if it is safe to trust: `Ok(None)` when there is none, `Err(reason)` when
    /// there is one that must not be used.
    fn read_private(&self, path: &Path) -> Result<Option<Vec<u8>>, String> {
        let uid = current_uid();
        match std::fs::metadata(&self.dir) {
            Ok(dir) => check_dir(&dir, uid).map_err(|why| format!("its directory {why}"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("its directory cannot be read ({e})")),
        }
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err("it is a symlink".into()),
            Err(e) => return Err(format!("it cannot be opened ({e})")),
        };
        let meta = file
            .metadata()
            .map_err(|e| format!("it cannot be examined ({e})"))?;
        if !meta.file_type().is_file() {
            return Err("it is not a regular file".into());
        }
        if meta.uid() != uid {
            return Err(format!("it is owned by uid {}, not {uid}", meta.uid()));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "its mode {:04o} lets others read or write it",
                meta.mode() & 0o7777
            ));
        }
        let mut bytes = Vec::new();
        file.take(MAX_ENTRY_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("it cannot be read ({e})"))?;
        Ok(Some(bytes))
    }

    /// Writes the entry for `key` atomically (an exclusive temporary file, then rename), mode
    /// 0600, in a directory of mode 0700 owned by the current user. Whatever was at the entry's
    /// name (a foreign file, a symlink, a FIFO) is replaced, never written through.
    pub fn store(&self, key: &str, role_arn: &str, creds: &TempCredentials) -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let dir = std::fs::metadata(&self.dir)?;
        let uid = current_uid();
        if dir.uid() != uid {
            return Err(std::io::Error::other(format!(
                "the cache directory {} is owned by uid {}, not {uid}",
                self.dir.display(),
                dir.uid()
            )));
        }
        if dir.permissions().mode() & 0o077 != 0 {
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
        crate::files::write_atomic(&self.path(key), &bytes, 0o600)
    }
}

/// Entries are a few hundred bytes; anything much larger is not ours.
const MAX_ENTRY_BYTES: u64 = 64 * 1024;

/// The effective user ID of this process.
pub fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A directory whose entries may be trusted: owned by `uid` or root, writable by nobody else.
fn check_dir(meta: &std::fs::Metadata, uid: u32) -> Result<(), String> {
    if !meta.is_dir() {
        return Err("is not a directory".into());
    }
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(format!("is owned by uid {}, not {uid}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "has mode {:04o}: others can write to it",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
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
            write_private(&cache.path("k"), junk);
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

    fn write_private(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    /// A cache holding a valid entry for "k" written by `store`, plus the entry's JSON.
    fn stored() -> (tempfile::TempDir, Cache, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path().join("c"));
        cache
            .store("k", ROLE, &creds("2026-01-01T01:00:00Z"))
            .expect("store");
        let bytes = std::fs::read(cache.path("k")).expect("read");
        (dir, cache, bytes)
    }

    #[test]
    fn only_private_regular_files_of_the_user_are_trusted() {
        let now = at("2026-01-01T00:00:00Z");
        let (_d, cache, _) = stored();
        assert!(cache.load("k", ROLE, now).is_some(), "baseline");

        // Readable or writable by others.
        for mode in [0o666, 0o644, 0o640, 0o602] {
            let (_d, cache, _) = stored();
            std::fs::set_permissions(cache.path("k"), std::fs::Permissions::from_mode(mode))
                .expect("chmod");
            assert!(cache.load("k", ROLE, now).is_none(), "mode {mode:o}");
        }

        // Owned by another user (the tests run as root or not: pick a uid that is not ours).
        if current_uid() == 0 {
            let (_d, cache, _) = stored();
            std::os::unix::fs::chown(cache.path("k"), Some(4242), Some(4242)).expect("chown");
            assert!(cache.load("k", ROLE, now).is_none(), "foreign owner");
            // Replaced by the next store, with our ownership.
            cache
                .store("k", ROLE, &creds("2026-01-01T01:00:00Z"))
                .expect("replace");
            assert_eq!(std::fs::metadata(cache.path("k")).expect("meta").uid(), 0);
            assert!(cache.load("k", ROLE, now).is_some());
            // A directory owned by another user is not read, and not written to.
            std::os::unix::fs::chown(cache.dir(), Some(4242), Some(4242)).expect("chown dir");
            assert!(cache.load("k", ROLE, now).is_none(), "foreign directory");
            assert!(cache
                .store("k", ROLE, &creds("2026-01-01T01:00:00Z"))
                .is_err());
        }

        // A directory others can write to: not read; the next store makes it private again.
        let (_d, cache, _) = stored();
        std::fs::set_permissions(cache.dir(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        assert!(cache.load("k", ROLE, now).is_none(), "0777 directory");
        cache
            .store("k", ROLE, &creds("2026-01-01T01:00:00Z"))
            .expect("store");
        assert_eq!(
            std::fs::metadata(cache.dir())
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert!(cache.load("k", ROLE, now).is_some());

        // A symlink to a perfectly good private entry is still not followed.
        let (d, cache, bytes) = stored();
        let elsewhere = d.path().join("elsewhere.json");
        write_private(&elsewhere, &bytes);
        std::fs::remove_file(cache.path("k")).expect("rm");
        std::os::unix::fs::symlink(&elsewhere, cache.path("k")).expect("symlink");
        assert!(cache.load("k", ROLE, now).is_none(), "symlink");
        cache
            .store("k", ROLE, &creds("2026-01-01T01:00:00Z"))
            .expect("replace link");
        assert!(!std::fs::symlink_metadata(cache.path("k"))
            .expect("meta")
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&elsewhere).expect("target"), bytes);
    }

    #[test]
    fn a_fifo_never_blocks() {
        let now = at("2026-01-01T00:00:00Z");
        let (_d, cache, _) = stored();
        std::fs::remove_file(cache.path("k")).expect("rm");
        let status = std::process::Command::new("mkfifo")
            .arg("-m")
            .arg("600")
            .arg(cache.path("k"))
            .status()
            .expect("mkfifo");
        assert!(status.success());
        let (tx, rx) = std::sync::mpsc::channel();
        let c = cache.clone();
        std::thread::spawn(move || {
            let _ = tx.send(c.load("k", ROLE, now).is_none());
        });
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)),
            Ok(true),
            "loading a FIFO must return at once, with nothing"
        );
        cache
            .store("k", ROLE, &creds("2026-01-01T01:00:00Z"))
            .expect("replace fifo");
        assert!(cache.load("k", ROLE, now).is_some());
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

//! Files that hold keys, certificates, kubeconfigs and credentials: created exclusively
//! (`O_CREAT|O_EXCL`, so a planted symlink or an existing file is never written through), with
//! their final mode from the first byte, and replaced atomically (a fresh temporary file in the
//! same directory, then `rename`). A reader of the target sees the old file or the new one, never
//! a partial one.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Creates `path` exclusively with `mode`: fails with `AlreadyExists` when anything (a file, a
/// directory, a symlink, even a dangling one) is already there.
pub fn create_new(path: &Path, mode: u32) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

/// Replaces `path` with `data` atomically; the file has `mode` from its creation on (the process
/// umask can only remove bits, which [`create_new`] then restores with an explicit chmod on the
/// open descriptor).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        let mut f = create_new(&tmp, mode)?;
        // The umask may have cleared bits of `mode`; set them on the descriptor, not the path.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A temporary name beside `path` that nobody can predict: `.<name>.<pid>.<random>.tmp`.
fn temp_path(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ))
}

/// Creates `dir` (and its parents) if missing, the last one with mode 0700, then checks it with
/// [`check_private_dir`].
pub fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("cannot create state directory {}: {e}", dir.display()))?;
    }
    check_private_dir(dir)
}

/// Refuses a directory that users other than its owner can write to (group or world write bit,
/// sticky or not): they could plant files or symlinks where keys are written and read.
pub fn check_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(dir)
        .map_err(|e| anyhow::anyhow!("cannot use state directory {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        anyhow::bail!("state directory {} is not a directory", dir.display());
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        anyhow::bail!(
            "state directory {} can be written by {} (mode {:o}); it holds the private key, so \
             only its owner may write to it: run chmod go-w on it",
            dir.display(),
            if mode & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            },
            mode & 0o7777
        );
    }
    Ok(())
}

/// Reports a watched file that cannot be used, once per distinct content: the first refusal of
/// a given content logs one ERROR and counts one `file_errors_total{file}`; the same content
/// seen again on later polls stays quiet; a good content after a refusal logs one INFO.
#[derive(Debug)]
pub struct ReportOnce {
    file: &'static str,
    keeping: &'static str,
    last_bad: std::sync::Mutex<Option<[u8; 32]>>,
}

impl ReportOnce {
    /// `file` is the metric label: `certificate`, `key`, `config` or `client_ca`; `keeping` says
    /// what stays in use meanwhile ("current one", "previous mappings").
    pub fn new(file: &'static str, keeping: &'static str) -> Self {
        Self {
            file,
            keeping,
            last_bad: std::sync::Mutex::new(None),
        }
    }

    /// The label this reporter counts under.
    pub fn file(&self) -> &'static str {
        self.file
    }

    /// Records a refusal of `content` (any bytes identifying what was read: the file's content,
    /// its mode, or the read error). Returns true when this content is new, i.e. when the
    /// refusal was logged and counted now.
    pub fn refused(
        &self,
        content: &[u8],
        path: &Path,
        error: &str,
        metrics: Option<&crate::metrics::Metrics>,
    ) -> bool {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(content).into();
        let mut last = self.last_bad.lock().unwrap_or_else(|p| p.into_inner());
        if *last == Some(digest) {
            return false;
        }
        *last = Some(digest);
        if let Some(m) = metrics {
            m.file_refused(self.file);
        }
        tracing::error!(
            file = self.file,
            path = %path.display(),
            error = %error,
            "{} file change refused; keeping the {} (reported once per content)",
            self.file,
            self.keeping
        );
        true
    }

    /// Records a good read; logs once when it ends a run of refusals.
    pub fn accepted(&self, path: &Path) {
        let mut last = self.last_bad.lock().unwrap_or_else(|p| p.into_inner());
        if last.take().is_some() {
            tracing::info!(file = self.file, path = %path.display(), "file is usable again");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn writes_with_final_mode_and_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("key.pem");
        write_atomic(&p, b"one", 0o600).expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"one");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write_atomic(&p, b"two", 0o644).expect("rewrite");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn never_writes_through_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"untouched").expect("victim");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        let err = create_new(&link, 0o600).expect_err("symlink refused");
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        // Replacing the link's name swaps the link itself, never the file it points to.
        write_atomic(&link, b"secret", 0o600).expect("replace");
        assert_eq!(std::fs::read(&victim).expect("read"), b"untouched");
        assert!(!std::fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink());
    }

    #[test]
    fn private_dir_refuses_group_and_world_writable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("a/state");
        ensure_private_dir(&state).expect("created");
        let mode = std::fs::metadata(&state)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
        for (bad, who) in [
            (0o777, "every user"),
            (0o1777, "every user"),
            (0o770, "its group"),
        ] {
            std::fs::set_permissions(&state, std::fs::Permissions::from_mode(bad)).expect("chmod");
            let err = check_private_dir(&state).expect_err("refused").to_string();
            assert!(err.contains(who) && err.contains("chmod go-w"), "{err}");
        }
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        check_private_dir(&state).expect("0755 is fine");
        let file = dir.path().join("file");
        std::fs::write(&file, "x").expect("write");
        assert!(check_private_dir(&file).is_err());
    }

    #[test]
    fn report_once_per_content() {
        let m = crate::metrics::Metrics::new();
        let r = ReportOnce::new("config", "previous mappings");
        let p = Path::new("/x");
        assert!(r.refused(b"bad", p, "e", Some(&m)));
        assert!(!r.refused(b"bad", p, "e", Some(&m)));
        assert!(r.refused(b"worse", p, "e", Some(&m)));
        r.accepted(p);
        assert!(
            r.refused(b"bad", p, "e", Some(&m)),
            "after recovery a bad content counts again"
        );
        assert!(m
            .encode()
            .contains("ack_ram_authenticator_file_errors_total{file=\"config\"} 3"));
    }
}

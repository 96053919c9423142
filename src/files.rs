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
}

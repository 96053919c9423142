//! Build information for `version`, the start-up log line and the `build_info` metric: the git
//! commit, the build date and the compiler. Never fails the build: what cannot be found is
//! "unknown".
//!
//! - commit: `RAM_AUTHENTICATOR_GIT_COMMIT` if set (for builds without `.git`, such as the
//!   image), else `git rev-parse HEAD`;
//! - date: `SOURCE_DATE_EPOCH` (reproducible builds) if set and valid, else now;
//! - rustc: `$RUSTC -V`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RAM_AUTHENTICATOR_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = std::env::var("RAM_AUTHENTICATOR_GIT_COMMIT")
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = output(&rustc, &["-V"])
        .map(|v| v.trim_start_matches("rustc ").to_string())
        .unwrap_or_else(|| "unknown".into());
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    println!(
        "cargo:rustc-env=RAM_AUTHENTICATOR_GIT_COMMIT={}",
        one_line(&commit)
    );
    println!(
        "cargo:rustc-env=RAM_AUTHENTICATOR_BUILD_DATE={}",
        rfc3339(epoch)
    );
    println!(
        "cargo:rustc-env=RAM_AUTHENTICATOR_RUSTC={}",
        one_line(&rustc)
    );
}

/// The output of a command, trimmed, when it ran and succeeded.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// The checked-out commit, and the files whose change means another commit: the worktree's
/// `HEAD`, the branch it names and `packed-refs`.
fn git_commit() -> Option<String> {
    // Only this package's own checkout: not a repository that merely contains the unpacked
    // sources (a home directory kept in git, say).
    output(
        "git",
        &["ls-files", "--full-name", "--error-unmatch", "Cargo.toml"],
    )?;
    let commit = output("git", &["rev-parse", "HEAD"])?;
    let git_dir = output("git", &["rev-parse", "--git-dir"]).map(PathBuf::from);
    let common_dir = output("git", &["rev-parse", "--git-common-dir"]).map(PathBuf::from);
    if let Some(dir) = &git_dir {
        watch(&dir.join("HEAD"));
        if let Some(branch) = output("git", &["symbolic-ref", "-q", "HEAD"]) {
            for base in [Some(dir), common_dir.as_ref()].into_iter().flatten() {
                watch(&base.join(&branch));
            }
        }
    }
    if let Some(dir) = common_dir.as_ref().or(git_dir.as_ref()) {
        watch(&dir.join("packed-refs"));
    }
    Some(commit)
}

/// Reruns the build script when `path` changes; only existing files (a missing one would rerun
/// it on every build).
fn watch(path: &Path) {
    if path.is_file() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("unknown").trim().to_string()
}

/// `YYYY-MM-DDThh:mm:ssZ` of a Unix time (days to civil date: H. Hinnant's algorithm).
fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

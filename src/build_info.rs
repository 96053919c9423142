//! What this binary is: version, git commit, build date and compiler (set by `build.rs`), and
//! the `version` command that prints them.

use clap::Args;
use serde::Serialize;

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit built, or "unknown".
pub const GIT_COMMIT: &str = env!("RAM_AUTHENTICATOR_GIT_COMMIT");
/// When it was built (RFC 3339, UTC; `SOURCE_DATE_EPOCH` when set).
pub const BUILD_DATE: &str = env!("RAM_AUTHENTICATOR_BUILD_DATE");
/// The compiler (`rustc -V` without the leading "rustc "), or "unknown".
pub const RUSTC: &str = env!("RAM_AUTHENTICATOR_RUSTC");

/// The build information, as `version -o json|yaml` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    pub version: &'static str,
    pub git_commit: &'static str,
    pub build_date: &'static str,
    pub rustc: &'static str,
}

/// This binary's build information.
pub const BUILD: BuildInfo = BuildInfo {
    version: VERSION,
    git_commit: GIT_COMMIT,
    build_date: BUILD_DATE,
    rustc: RUSTC,
};

/// Output format of `version`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum VersionFormat {
    #[default]
    Text,
    Json,
    Yaml,
}

/// Arguments of `version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print only the version number.
    #[arg(short, long)]
    pub short: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = VersionFormat::Text)]
    pub output: VersionFormat,
}

impl BuildInfo {
    /// The rendering `version` prints.
    pub fn render(&self, short: bool, format: VersionFormat) -> anyhow::Result<String> {
        Ok(match (short, format) {
            (true, VersionFormat::Text) => format!("{}\n", self.version),
            (true, VersionFormat::Json) => format!("{}\n", serde_json::json!(self.version)),
            (true, VersionFormat::Yaml) => serde_yaml::to_string(self.version)?,
            (false, VersionFormat::Text) => format!(
                "ram-authenticator {}\ncommit: {}\nbuilt: {}\nrustc: {}\n",
                self.version, self.git_commit, self.build_date, self.rustc
            ),
            (false, VersionFormat::Json) => format!("{}\n", serde_json::to_string_pretty(self)?),
            (false, VersionFormat::Yaml) => serde_yaml::to_string(self)?,
        })
    }
}

/// `version`.
pub fn version(args: &VersionArgs) -> anyhow::Result<i32> {
    crate::output::emit(&BUILD.render(args.short, args.output)?)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_is_filled_in() {
        assert_eq!(BUILD.version, env!("CARGO_PKG_VERSION"));
        for v in [GIT_COMMIT, BUILD_DATE, RUSTC] {
            assert!(!v.is_empty() && !v.contains('\n'), "{v:?}");
        }
        assert!(
            BUILD_DATE.ends_with('Z') && BUILD_DATE.len() == 20,
            "{BUILD_DATE}"
        );
    }

    #[test]
    fn renders_each_format() {
        let b = BUILD;
        let json: serde_json::Value =
            serde_json::from_str(&b.render(false, VersionFormat::Json).expect("json"))
                .expect("parse");
        assert_eq!(json["version"], VERSION);
        assert_eq!(json["gitCommit"], GIT_COMMIT);
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&b.render(false, VersionFormat::Yaml).expect("yaml"))
                .expect("parse");
        assert_eq!(yaml["buildDate"].as_str(), Some(BUILD_DATE));
        assert_eq!(
            b.render(true, VersionFormat::Text).expect("short"),
            format!("{VERSION}\n")
        );
        assert!(b
            .render(false, VersionFormat::Text)
            .expect("text")
            .starts_with(&format!("ram-authenticator {VERSION}\n")));
    }
}

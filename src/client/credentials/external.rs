//! An external command (aliyun CLI profile mode `External`, `process_command`) that prints
//! credentials as JSON on standard output, as the aliyun CLI expects:
//! `{"mode":"AK","access_key_id":...,"access_key_secret":...}` or
//! `{"mode":"StsToken",...,"sts_token":...}` (with an optional `expiration`, RFC 3339, which lets
//! temporary credentials be cached). The command line is split on whitespace and run without a
//! shell.

use std::time::Duration;

use serde::Deserialize;

use super::{json_error_kind, CredentialError, Credentials, MAX_ANSWER_BYTES};
use crate::client::assume_role::TempCredentials;
use crate::types::Secret;

/// How long the command may run.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A command line that prints credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalCommand {
    pub command: String,
}

/// What the command printed.
#[derive(Debug)]
pub enum Output {
    /// Long-term keys (`AK`), or temporary ones without an expiration.
    Keys(Credentials),
    /// Temporary credentials with an expiration.
    Temporary(TempCredentials),
}

#[derive(Deserialize)]
struct Printed {
    #[serde(default)]
    mode: String,
    #[serde(default)]
    access_key_id: String,
    #[serde(default)]
    access_key_secret: Secret,
    #[serde(default)]
    sts_token: Secret,
    #[serde(default)]
    expiration: String,
}

impl ExternalCommand {
    fn program(&self) -> &str {
        self.command.split_whitespace().next().unwrap_or("")
    }

    /// Runs the command and reads its output.
    pub async fn run(&self) -> Result<Output, CredentialError> {
        let failed = |detail: String| CredentialError::Failed {
            what: format!("external command {:?}", self.program()),
            detail,
        };
        let mut words = self.command.split_whitespace();
        let program = words
            .next()
            .ok_or_else(|| failed("process_command is empty".into()))?;
        let child = tokio::process::Command::new(program)
            .args(words)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(format!("cannot start it: {e}")))?;
        let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| failed(format!("it did not finish within {TIMEOUT:?}")))?
            .map_err(|e| failed(format!("cannot read its output: {e}")))?;
        if !out.status.success() {
            return Err(failed(format!("it exited with {}", out.status)));
        }
        if out.stdout.len() > MAX_ANSWER_BYTES {
            return Err(failed(format!(
                "it printed more than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        parse(&out.stdout).map_err(failed)
    }
}

/// Reads the JSON the command printed.
fn parse(stdout: &[u8]) -> Result<Output, String> {
    let p: Printed = serde_json::from_slice(stdout).map_err(|e| {
        format!(
            "its output is not credentials JSON (line {}, column {}: {})",
            e.line(),
            e.column(),
            json_error_kind(&e)
        )
    })?;
    if p.access_key_id.trim().is_empty() || p.access_key_secret.is_empty() {
        return Err("its output has no access_key_id or access_key_secret".into());
    }
    let token = match p.mode.as_str() {
        "AK" => None,
        "StsToken" if p.sts_token.is_empty() => {
            return Err("its output has mode StsToken but no sts_token".into())
        }
        "StsToken" => Some(p.sts_token.expose().to_string()),
        other => {
            return Err(format!(
                "its output has mode {:?}; want AK or StsToken",
                other.chars().take(40).collect::<String>()
            ))
        }
    };
    let credentials = Credentials::new(
        &p.access_key_id,
        p.access_key_secret.expose(),
        token.as_deref(),
    );
    let expiration = crate::types::parse_utc(p.expiration.trim());
    Ok(match (token, expiration) {
        (Some(_), Some(expiration)) => Output::Temporary(TempCredentials {
            credentials,
            expiration,
            assumed_role_arn: String::new(),
        }),
        _ => Output::Keys(credentials),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn runs_commands_without_a_shell() {
        let run = |command: &str| {
            let c = ExternalCommand {
                command: command.into(),
            };
            async move { c.run().await }
        };
        let e = run("false").await.expect_err("exit 1").to_string();
        assert!(e.contains("exited with"), "{e}");
        let e = run("/nonexistent/helper --json")
            .await
            .expect_err("missing")
            .to_string();
        assert!(e.contains("cannot start it"), "{e}");
        // No shell: the words are arguments, not a pipeline.
        let e = run("echo {\"mode\":\"AK\"} | cat")
            .await
            .expect_err("echo")
            .to_string();
        assert!(e.contains("not credentials JSON"), "{e}");
        let Ok(Output::Keys(c)) =
            run("echo {\"mode\":\"AK\",\"access_key_id\":\"a\",\"access_key_secret\":\"b\"}").await
        else {
            panic!("echo AK");
        };
        assert_eq!(c.access_key_id.0, "a");
    }

    #[test]
    fn reads_the_cli_format() {
        let Ok(Output::Keys(c)) =
            parse(br#"{"mode":"AK","access_key_id":"a","access_key_secret":"b"}"#)
        else {
            panic!("AK");
        };
        assert_eq!(c.access_key_id.0, "a");
        assert!(c.security_token.is_none());
        let Ok(Output::Temporary(t)) = parse(
            br#"{"mode":"StsToken","access_key_id":"a","access_key_secret":"b","sts_token":"t","expiration":"2030-01-01T00:00:00Z"}"#,
        ) else {
            panic!("StsToken");
        };
        assert_eq!(
            t.credentials.security_token.as_ref().map(Secret::expose),
            Some("t")
        );
        for (bad, why) in [
            (
                &br#"{"mode":"RamRoleArn","access_key_id":"a","access_key_secret":"b"}"#[..],
                "want AK or StsToken",
            ),
            (
                br#"{"mode":"StsToken","access_key_id":"a","access_key_secret":"b"}"#,
                "no sts_token",
            ),
            (
                br#"{"mode":"AK","access_key_id":"a"}"#,
                "no access_key_id or access_key_secret",
            ),
            (b"SECRET not json", "not credentials JSON"),
        ] {
            let e = parse(bad).expect_err("refused");
            assert!(e.contains(why), "{e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
    }
}

//! How a command ends: usage errors exit 2, every other failure exits 1, and an error chain is
//! rendered with each cause once.

use std::fmt::Display;

/// The command line cannot be acted on (a missing, empty, malformed or conflicting flag): exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A usage error (exit code 2) with this message.
pub fn usage(message: impl Display) -> anyhow::Error {
    UsageError(message.to_string()).into()
}

/// The exit code for an error: 2 when a usage error is anywhere in its chain, else 1.
pub fn code(error: &anyhow::Error) -> u8 {
    if error
        .chain()
        .any(|e| e.downcast_ref::<UsageError>().is_some())
    {
        2
    } else {
        1
    }
}

/// The error and its causes on one line, `outer: cause: root`, leaving out a cause whose text
/// is already part of what was printed (many errors repeat their source in their own message).
pub fn render(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || out.contains(text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read config file /nope.yaml: {source}")]
    struct Read {
        source: std::io::Error,
    }

    #[test]
    fn each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file (os error 2)");
        let e = anyhow::Error::from(Read { source: io });
        assert_eq!(format!("{e:#}").matches("os error 2").count(), 2);
        assert_eq!(
            render(&e),
            "cannot read config file /nope.yaml: No such file (os error 2)"
        );
        let e: anyhow::Error = Err::<(), _>(e)
            .context("cannot start")
            .context("cannot start")
            .expect_err("error");
        assert_eq!(
            render(&e),
            "cannot start: cannot read config file /nope.yaml: No such file (os error 2)"
        );
        assert_eq!(code(&e), 1);
    }

    #[test]
    fn usage_errors_exit_2_even_with_context() {
        let e = Err::<(), _>(usage("--cluster-id is empty"))
            .context("token")
            .expect_err("error");
        assert_eq!(code(&e), 2);
        assert_eq!(render(&e), "token: --cluster-id is empty");
    }
}

//! The one error type of `ferry ctl`, and its exit codes.

use std::process::ExitCode;

/// What went wrong, phrased for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad flags or arguments that clap could not catch (exit 2).
    #[error("{0}")]
    Usage(String),
    /// No HTTP answer at all: refused, unresolvable, timed out, TLS failure (exit 3).
    #[error("cannot reach Ferry at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    /// HTTP 401 (exit 1).
    #[error("authentication failed for user '{user}' ({reason})")]
    Unauthorized { user: String, reason: String },
    /// HTTP 403 (exit 1).
    #[error("access refused for user '{user}': {reason}")]
    Forbidden { user: String, reason: String },
    /// HTTP 404 (exit 1): `what` names the object, e.g. "queue 'q' in vhost '/'".
    #[error("not found: {what}")]
    NotFound { what: String },
    /// Any other 4xx/5xx (exit 1).
    #[error("HTTP {status} from {method} {path}: {reason}")]
    Http {
        status: u16,
        method: &'static str,
        path: String,
        reason: String,
    },
    /// A 2xx answer whose body is not what the API promises (exit 1).
    #[error("unexpected answer from {path}: {detail}")]
    BadResponse { path: String, detail: String },
    /// A local input (definitions file, stdin) that is not what it must be (exit 1).
    #[error("{0}")]
    Input(String),
    /// Reading or writing a local file or stdin/stdout (exit 1).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl CtlError {
    /// 0 ok, 1 refused by the API (4xx/5xx) or local I/O, 2 usage, 3 unreachable.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// The numeric exit code (for tests and scripts).
    #[must_use]
    pub fn code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 2,
            CtlError::Unreachable { .. } => 3,
            _ => 1,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> CtlError {
        CtlError::Io {
            what: what.into(),
            source,
        }
    }
}

//! Everything that ends a run early, each with a one-line message that says
//! what the user can do about it.

use std::process::ExitCode;

/// A run that could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad flags or an impossible combination of them.
    #[error("{0}")]
    Usage(String),
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// host:port from the URI.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The broker sent connection.close or channel.close.
    #[error("broker closed the {scope} ({during}): {code} {text}")]
    Closed {
        /// "connection" or "channel".
        scope: &'static str,
        /// What the client was doing.
        during: String,
        /// AMQP reply code.
        code: u16,
        /// The broker's reply text.
        text: String,
    },
    /// The socket closed without an AMQP close (e.g. a refused login on a
    /// broker that does not report it, or a crash).
    #[error("broker closed the socket without connection.close ({0})")]
    Eof(String),
    /// The broker sent something this client cannot follow.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A socket read or write failed.
    #[error("I/O error ({during}): {source}")]
    Io {
        /// What the client was doing.
        during: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Topology setup or teardown (through lapin) failed.
    #[error("topology {during}: {message}")]
    Topology {
        /// What was being set up.
        during: String,
        /// lapin's error, which carries the reply code and text.
        message: String,
    },
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// /proc could not be read (bad --broker-pid, not Linux).
    #[error("{0}")]
    Proc(String),
}

impl BenchError {
    /// Usage errors exit 2 like clap's own; everything else 1.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        match self {
            BenchError::Usage(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }

    pub(crate) fn io(during: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io {
            during: during.into(),
            source,
        }
    }
}

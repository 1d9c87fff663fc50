//! The crate's single error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// An operating-system call failed.
    #[error("{op} failed for {}: {source}", path.display())]
    Io {
        /// What the log was doing (`"write"`, `"fdatasync"`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Stored bytes failed verification where a crash cannot explain them.
    #[error("corrupt log data in {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The segment (or index) file.
        path: PathBuf,
        /// Byte offset of the bad record or header.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// An earlier write or fsync failed; the log refuses further changes
    /// until it is reopened (and recovered).
    #[error("log is poisoned by an earlier I/O failure; reopen it to recover")]
    Poisoned,
    /// The index is not in `[first, next)`.
    #[error("index {index} is outside the log [{first}, {next})")]
    OutOfRange {
        /// Requested index.
        index: u64,
        /// First retained index.
        first: u64,
        /// Index the next append gets.
        next: u64,
    },
    /// A `RecordPos` does not describe a record of this log (for example it
    /// predates a truncation).
    #[error("record position for index {index} does not match the log: {reason}")]
    InvalidPosition {
        /// Index the position claimed.
        index: u64,
        /// What did not match.
        reason: &'static str,
    },
    /// The record a durability callback waited for was truncated away.
    #[error("record {index} was truncated before it became durable")]
    Truncated {
        /// The index waited for.
        index: u64,
    },
    /// The payload is larger than a record can hold.
    #[error("payload of {len} bytes exceeds the {max}-byte limit")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// The limit ([`crate::MAX_PAYLOAD_LEN`]).
        max: usize,
    },
    /// The configuration is unusable.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(&'static str),
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        LogError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}

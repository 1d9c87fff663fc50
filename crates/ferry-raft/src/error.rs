//! ferry-raft's errors: one enum for the layer, mapped to openraft's
//! `StorageError` where openraft asks.

use crate::types::StorageError;
use openraft::{ErrorSubject, ErrorVerb, StorageIOError};
use std::path::PathBuf;

/// Stored bytes that do not decode as what they claim to be (the record's
/// CRC matched, so a crash cannot explain them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// Why a group's Raft log could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum RaftLogError {
    /// The underlying ferry-log failed.
    #[error(transparent)]
    Log(#[from] ferry_log::LogError),
    /// A small metadata file (vote, purged, committed) failed.
    #[error("{what} file in {}: {source}", dir.display())]
    Meta {
        /// Which file.
        what: &'static str,
        /// The group's directory.
        dir: PathBuf,
        /// The failure.
        #[source]
        source: ferry_log::framed::FramedError,
    },
    /// A record decoded to something impossible at its place.
    #[error("corrupt raft log in {}: {reason}", dir.display())]
    Corrupt {
        /// The group's directory.
        dir: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A request named entries this log does not hold.
    #[error("raft index {index} is not in the log [{first}, {next})")]
    OutOfRange {
        /// Requested raft index.
        index: u64,
        /// First raft index held.
        first: u64,
        /// Raft index the next append gets.
        next: u64,
    },
    /// A queue snapshot file could not be written or read, or is not
    /// what was written.
    #[error("queue snapshot {}: {reason}", path.display())]
    Snapshot {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A blocking task did not finish (the runtime is shutting down).
    #[error("storage task failed: {0}")]
    Task(String),
}

impl RaftLogError {
    /// As openraft's storage error for `verb` on the log.
    pub(crate) fn to_storage(&self, subject: ErrorSubject<u64>, verb: ErrorVerb) -> StorageError {
        StorageError::IO {
            source: StorageIOError::new(subject, verb, openraft::AnyError::error(self.to_string())),
        }
    }

    /// As openraft's storage error for a log read.
    pub(crate) fn read_logs(&self) -> StorageError {
        self.to_storage(ErrorSubject::Logs, ErrorVerb::Read)
    }

    /// As openraft's storage error for a log write.
    pub(crate) fn write_logs(&self) -> StorageError {
        self.to_storage(ErrorSubject::Logs, ErrorVerb::Write)
    }

    /// As openraft's storage error for a vote write.
    pub(crate) fn write_vote(&self) -> StorageError {
        self.to_storage(ErrorSubject::Vote, ErrorVerb::Write)
    }
}

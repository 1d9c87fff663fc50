//! # ferry-raft: Ferry's adapter to openraft
//!
//! Owns openraft's type configuration for every group of a node
//! ([`TypeConfig`]: entries carry a [`Batch`] of opaque commands), the Raft
//! log of a group over a ferry-log ([`RaftLog`]: entries as records, the
//! vote, the purged and committed pointers, durability through the node's
//! durability round), the pure codecs of those records (`codec`,
//! `docs/raft-log.md`), the state machine of a group whose state is
//! small enough to snapshot whole (`machine`), and a replicated queue's
//! replica as its group's state machine (`replica`: it hands the queue its
//! commands with their positions in the group's log, which is the queue's
//! log) with its snapshots (`snapshot`: the queue's state image and the
//! records of its messages, in one file per group), and a replicated
//! stream's replica as its group's state machine (`stream`: committed
//! records appended to the stream's own log at the offsets it counts).
//!
//! Must not: know AMQP, Kafka, exchanges, vhosts or what a command means
//! (state machines above decode their commands), read clocks, or do
//! blocking I/O on an async worker (fsyncs run in the durability round or
//! on tokio's blocking pool).

pub mod codec;
mod error;
pub mod machine;
pub mod replica;
pub mod snapshot;
mod store;
pub mod stream;
pub mod stream_snapshot;
#[cfg(feature = "test-support")]
pub mod testing;
mod types;

pub use error::{CodecError, RaftLogError};
pub use store::RaftLog;
pub use types::{
    Applied, Batch, Entry, LogId, Membership, NodeId, SnapshotData, SnapshotFileRef, StorageError,
    TypeConfig, Vote,
};

//! openraft's type configuration for every Ferry Raft group (the metadata
//! group and one group per replicated queue or stream).
//!
//! Ferry-raft stays ignorant of what a command means: an entry carries a
//! [`Batch`] of opaque commands that the group's state machine decodes, and
//! a state machine answers each entry with an opaque [`Applied`].

use bytes::Bytes;

openraft::declare_raft_types!(
    /// The one Raft type configuration of a Ferry node.
    pub TypeConfig:
        D = Batch,
        R = Applied,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

/// A node's id in the cluster (`--node-id`).
pub type NodeId = u64;
/// A Raft log id of this configuration.
pub type LogId = openraft::LogId<NodeId>;
/// A vote of this configuration.
pub type Vote = openraft::Vote<NodeId>;
/// A log entry of this configuration.
pub type Entry = openraft::Entry<TypeConfig>;
/// A membership of this configuration.
pub type Membership = openraft::Membership<NodeId, openraft::BasicNode>;
/// A storage error of this configuration.
pub type StorageError = openraft::StorageError<NodeId>;

/// The payload of a normal entry: commands proposed together (one Raft
/// entry per proposer round, see `docs/raft-log.md`). Each command is
/// stored as one ferry-log record, so a command's record index is the same
/// on every replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The commands, in order; each is opaque to ferry-raft.
    pub commands: Vec<Bytes>,
}

impl Batch {
    /// A batch of the given commands.
    pub fn new(commands: Vec<Bytes>) -> Self {
        Batch { commands }
    }

    /// Payload bytes (for cache accounting).
    pub fn bytes(&self) -> usize {
        self.commands.iter().map(Bytes::len).sum()
    }
}

/// What a state machine answers for one applied entry (opaque to
/// ferry-raft; the proposer that wrote the entry decodes it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied(pub Bytes);

/// A snapshot's data.
#[derive(Debug, Clone)]
pub enum SnapshotData {
    /// A small state whole (the metadata group's).
    Inline(Bytes),
    /// A file (a queue group's snapshot: its state and the records of
    /// its messages), shipped in chunks, never held whole in memory.
    File(SnapshotFileRef),
    /// A stream group's snapshot: written to a file from the stream's
    /// records only when a follower needs it, then shipped as a `File`.
    Stream(crate::stream_snapshot::StreamSnapshotRef),
}

impl Default for SnapshotData {
    fn default() -> Self {
        SnapshotData::Inline(Bytes::new())
    }
}

impl PartialEq for SnapshotData {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (SnapshotData::Inline(a), SnapshotData::Inline(b)) => a == b,
            (SnapshotData::File(a), SnapshotData::File(b)) => a.path == b.path && a.len == b.len,
            (SnapshotData::Stream(a), SnapshotData::Stream(b)) => {
                a.meta == b.meta && a.next == b.next
            }
            _ => false,
        }
    }
}

impl Eq for SnapshotData {}

/// A snapshot file, open (a newer snapshot may remove its name while it
/// is shipped: the open handle still reads it).
#[derive(Debug, Clone)]
pub struct SnapshotFileRef {
    /// Where it is.
    pub path: std::path::PathBuf,
    /// Its bytes.
    pub len: u64,
    /// The open file.
    pub file: std::sync::Arc<dyn ferry_log::IoFile>,
}

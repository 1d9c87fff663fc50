//! ferry-cluster's errors: one enum for the layer.

/// Bytes from a peer that do not decode (after authentication: a bug or a
/// version mismatch, never trusted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad cluster message: {0}")]
pub struct WireError(pub String);

/// Why a request to a peer, or a peer's connection, failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No connection to the peer (refused, reset, not yet retried).
    #[error("peer {addr} unreachable: {reason}")]
    Unreachable {
        /// The peer's cluster address.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// The connection dropped after the request was sent: the peer may
    /// have acted on it.
    #[error("peer {addr}: connection lost before the answer")]
    Lost {
        /// The peer's cluster address.
        addr: String,
    },
    /// The peer did not answer in time.
    #[error("peer {addr} did not answer within {millis} ms")]
    Timeout {
        /// The peer's cluster address.
        addr: String,
        /// The limit.
        millis: u64,
    },
    /// The handshake failed: wrong secret, wrong version, or not a Ferry node.
    #[error("cluster handshake with {addr} failed: {reason}")]
    Handshake {
        /// The other side's address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// The peer answered with an error or something undecodable.
    #[error("peer {addr}: {reason}")]
    Remote {
        /// The peer's cluster address.
        addr: String,
        /// Its reason.
        reason: String,
    },
    /// A frame did not decode.
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl LinkError {
    /// Whether the peer surely never acted on the request (it was never
    /// sent, or the peer refused it as not its to take): safe to send again.
    pub fn not_taken(&self) -> bool {
        match self {
            LinkError::Unreachable { .. } | LinkError::Handshake { .. } => true,
            LinkError::Remote { reason, .. } => {
                reason.starts_with(crate::network::REDIRECT)
                    || reason == "no leader yet"
                    || reason.starts_with(crate::network::NO_GROUP)
            }
            _ => false,
        }
    }
}

/// Why a clustered node could not start or serve a cluster operation.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory belongs to another node, or its identity file is damaged.
    #[error("node identity: {0}")]
    Identity(String),
    /// The metadata group's snapshot file could not be read.
    #[error("metadata snapshot: {0}")]
    MetaSnapshot(String),
    /// The metadata group's log could not be opened.
    #[error(transparent)]
    Log(#[from] ferry_raft::RaftLogError),
    /// The cluster port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// openraft refused to start or answer.
    #[error("raft: {0}")]
    Raft(String),
    /// The cluster did not form (or the node did not join) in time.
    #[error("{0}")]
    NotFormed(String),
    /// The cluster refused this node for good (its node name is another
    /// member's).
    #[error("{0}")]
    JoinRefused(String),
    /// A request went to a node that is not the metadata leader.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's address, if known.
        leader: Option<String>,
    },
}

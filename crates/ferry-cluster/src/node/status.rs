//! What a clustered node reports: its members as it sees them, its
//! groups' figures for Prometheus, why a forget was refused, and the
//! figures it sends with its ping answers.

use bytes::Bytes;
use ferry_raft::NodeId;
use std::sync::Arc;

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Raft node id.
    pub id: NodeId,
    /// Node name (empty until it announced itself).
    pub name: String,
    /// Cluster address.
    pub addr: String,
    /// A voter (false: a learner still catching up).
    pub voter: bool,
    /// Answered a ping just now (always true for this node).
    pub running: bool,
    /// What its stats provider answered with the ping (empty for this
    /// node, one that is down, or one without a provider).
    pub stats: Bytes,
}

/// The cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This node's id.
    pub me: NodeId,
    /// The metadata group's leader, if known.
    pub leader: Option<NodeId>,
    /// The metadata group's term.
    pub term: u64,
    /// The cluster id, once set (hex).
    pub cluster_id: Option<String>,
    /// Every member.
    pub members: Vec<MemberStatus>,
}

/// A Raft group's figures for Prometheus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStats {
    /// The group's label ("meta" for the metadata group).
    pub group: String,
    /// Current term.
    pub term: u64,
    /// Index of the last entry in this node's log.
    pub last_log_index: u64,
    /// Index of the last entry applied here.
    pub last_applied_index: u64,
    /// 1 if this node leads the group.
    pub leader: bool,
    /// Times this node saw the group's leader change (including to none).
    pub leader_changes: u64,
    /// Terms this node saw begin (each is an election).
    pub elections: u64,
    /// On the leader: entries each follower lacks, by follower node id.
    pub lag: Vec<(NodeId, u64)>,
}

/// This node's figures for the others' `/api/nodes` (memory, disk, ...),
/// opaque here: sent with every answer to a ping.
pub type StatsProvider = Arc<dyn Fn() -> Bytes + Send + Sync>;

/// Why `forget` did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    /// No member has that name or address.
    #[error("no such cluster member")]
    NotAMember,
    /// The cluster refused (this node, a running node, no leader, ...).
    #[error("{0}")]
    Refused(String),
}

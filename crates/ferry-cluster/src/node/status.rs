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
    /// The group's label ("meta" for the metadata group, a queue group's
    /// id in hex).
    pub group: String,
    /// A queue group's queue: (vhost, name).
    pub queue: Option<(String, String)>,
    /// Current term.
    pub term: u64,
    /// Index of the last entry in this node's log.
    pub last_log_index: u64,
    /// Index of the last entry applied here.
    pub last_applied_index: u64,
    /// Index of the last entry this node knows committed.
    pub commit_index: u64,
    /// Index of the last entry the current snapshot covers (0: none).
    pub snapshot_index: u64,
    /// The log holds nothing at or below this index (0: nothing purged).
    pub purged_index: u64,
    /// 1 if this node leads the group.
    pub leader: bool,
    /// Times this node saw the group's leader change (including to none).
    pub leader_changes: u64,
    /// Terms this node saw begin (each is an election).
    pub elections: u64,
    /// On the leader: entries each follower lacks, by follower node id.
    pub lag: Vec<(NodeId, u64)>,
    /// Its Raft instance runs (false: the group hibernates, idle).
    pub awake: bool,
    /// Times the group hibernated on this node.
    pub hibernations: u64,
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
    /// No metadata leader took the change in time (an election that does
    /// not end: the cluster has lost its majority).
    #[error("no metadata leader accepted the change: {0}")]
    NoLeader(String),
}

/// Leader changes and elections a node saw in one group.
#[derive(Debug, Default)]
pub struct RaftCounters {
    leader_changes: std::sync::atomic::AtomicU64,
    elections: std::sync::atomic::AtomicU64,
}

/// Counts leader changes and new terms as `raft`'s metrics move (until
/// the instance stops), and bumps `changes` (its slot's) at each move.
pub async fn count_changes(
    raft: crate::FerryRaft,
    counters: Arc<RaftCounters>,
    changes: Option<crate::slot::Changes>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    // The server metrics change with the leadership and the vote only.
    let mut rx = raft.server_metrics();
    let (mut leader, mut term) = {
        let m = rx.borrow();
        (m.current_leader, m.vote.leader_id().get_term())
    };
    while rx.changed().await.is_ok() {
        if let Some(c) = &changes {
            c.send_modify(|n| *n += 1);
        }
        let (now_leader, now_term) = {
            let m = rx.borrow();
            (m.current_leader, m.vote.leader_id().get_term())
        };
        if now_leader != leader {
            leader = now_leader;
            counters.leader_changes.fetch_add(1, Relaxed);
        }
        if now_term > term {
            counters.elections.fetch_add(now_term - term, Relaxed);
            term = now_term;
        }
    }
}

/// The figures of group `group` (label) as node `me` sees them in `m`,
/// its metrics.
pub fn stats_of(
    group: String,
    m: &crate::slot::Metrics,
    me: NodeId,
    (counters, log): (&RaftCounters, &ferry_raft::RaftLog),
) -> GroupStats {
    use std::sync::atomic::Ordering::Relaxed;
    let last = m.last_log_index.unwrap_or(0);
    let lag = m
        .replication
        .as_ref()
        .map(|r| {
            r.iter()
                .filter(|(id, _)| **id != me)
                .map(|(id, matched)| (*id, last.saturating_sub(matched.map_or(0, |l| l.index))))
                .collect()
        })
        .unwrap_or_default();
    GroupStats {
        group,
        queue: None,
        term: m.current_term,
        last_log_index: last,
        last_applied_index: m.last_applied.map_or(0, |l| l.index),
        commit_index: log.committed().map_or(0, |l| l.index),
        snapshot_index: m.snapshot.map_or(0, |l| l.index),
        purged_index: m.purged.map_or(0, |l| l.index),
        awake: true,
        hibernations: 0,
        leader: m.current_leader == Some(me),
        leader_changes: counters.leader_changes.load(Relaxed),
        elections: counters.elections.load(Relaxed),
        lag,
    }
}

/// More groups' figures for Prometheus (the node's queue groups, which
/// the node itself does not know).
pub type GroupStatsProvider = Arc<dyn Fn() -> Vec<GroupStats> + Send + Sync>;

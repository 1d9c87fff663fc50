//! Replicated queues as the broker sees them: a vhost holds a replica
//! (`ferry_queue::queue::Replica`) like any queue; where its group runs is
//! the [`ReplicaHost`]'s (a cluster: the node's Raft groups), injected
//! once the node has joined its cluster. Until then (a node opens its
//! replicated queues at start, before it joins) the replicas wait here,
//! unbound, and are started when the host arrives.
//!
//! A replicated queue or stream is stored in its vhost's definitions with
//! storage `group-<16 hex digits>`, its group id (the group's log is the
//! host's; a stream's own log is in the vhost's `queues/` under that name).

use ferry_queue::error::Result;
use ferry_queue::queue::{Binding, Depth, Replica};
use ferry_queue::stream::Stream;
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;

/// The storage name of a replicated queue's definition.
pub fn storage_of(group: u64) -> String {
    format!("group-{group:016x}")
}

/// The group of a replicated queue's storage name.
pub fn group_of(storage: &str) -> Option<u64> {
    u64::from_str_radix(storage.strip_prefix("group-")?, 16).ok()
}

/// A replica waiting for its group.
#[derive(Debug, Clone)]
pub struct PendingReplica {
    /// Its vhost.
    pub vhost: Arc<str>,
    /// Its group's id.
    pub group: u64,
    /// The nodes that hold it (ids the host chose when it was declared;
    /// empty for one recorded before they were kept).
    pub replicas: Vec<u64>,
    /// Reopened at start: its group was formed before (it must not be
    /// initialized or elected again; only whether this node is one of
    /// its nodes matters).
    pub reopened: bool,
    /// The replica: a queue's or a stream's.
    pub kind: Replicated,
    /// Where its group's log and proposer go.
    pub binding: Arc<Binding>,
}

/// What a replicated group replicates.
#[derive(Debug, Clone)]
pub enum Replicated {
    /// A queue (its group's log is the queue's log).
    Queue(Replica),
    /// A stream (its replicas append committed records to their own log).
    Stream(Arc<Stream>),
}

impl PendingReplica {
    /// The queue's or stream's name.
    pub fn name(&self) -> &Arc<str> {
        match &self.kind {
            Replicated::Queue(r) => r.queue().name(),
            Replicated::Stream(s) => s.name(),
        }
    }
}

/// Where a replicated queue's group stands, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The leader's node name, if one is known.
    pub leader: Option<String>,
    /// Its nodes' names.
    pub members: Vec<String>,
    /// Those this node sees up (itself, and those its failure detector
    /// heard lately): RabbitMQ's `online`.
    pub online: Vec<String>,
}

/// What a rebalance of queue leaders did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rebalanced {
    /// Groups this node is a member of that had a leader.
    pub groups: usize,
    /// Of those, the ones whose leadership a less loaded member was asked
    /// to take.
    pub moved: usize,
}

/// Runs replicated queues' groups (a cluster node).
pub trait ReplicaHost: Send + Sync {
    /// Spreads the leaderships of the groups this node is a member of
    /// evenly over their live members: each over-loaded leader's group is
    /// asked to elect a member with fewer. Blocking.
    fn rebalance(&self) -> Rebalanced;
    /// The figures (ready, unacked, consumers, ...) of the replicated
    /// queues this node holds a follower replica of, as their live
    /// leaders have them (`only`: just that group). A leader that does
    /// not answer within a second is left out. Blocking.
    fn leader_depths(&self, only: Option<u64>) -> Vec<(u64, Depth)>;
    /// The nodes a new replicated queue goes to (this node first).
    fn placement(&self) -> Vec<u64>;
    /// Starts this node's member of `p`'s group (if it is one) and binds
    /// the replica to it. `catching_up`: the replica waited for the host
    /// (opened at start, or declared while this node caught up with its
    /// cluster). Blocking.
    fn start(&self, p: PendingReplica, catching_up: bool) -> Result<()>;
    /// Stops this node's member of `group` and removes its log. Blocking.
    fn remove(&self, group: u64);
    /// Takes node `who` out of `group`'s members (`replicas`: the nodes
    /// its definitions record), through the group's leader; waits a few
    /// seconds for one (an election). Blocking.
    fn remove_member(
        &self,
        group: u64,
        replicas: &[u64],
        who: u64,
    ) -> std::result::Result<(), String>;
    /// Adds node `who` to `group`'s members (`replicas`: the nodes its
    /// definitions record) through the group's leader: a learner that
    /// becomes a voter once caught up. Blocking.
    fn add_member(&self, group: u64, replicas: &[u64], who: u64)
        -> std::result::Result<(), String>;
    /// Where `group` stands (None: no member here).
    fn status(&self, group: u64) -> Option<ReplicaStatus>;
    /// This node's id in the cluster.
    fn node_id(&self) -> u64;
}

/// The broker's replicated queues: the host once known, the replicas
/// waiting for it.
#[derive(Default)]
pub struct ReplicaHub {
    host: RwLock<Option<Arc<dyn ReplicaHost>>>,
    pending: Mutex<Vec<PendingReplica>>,
}

impl std::fmt::Debug for ReplicaHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaHub")
            .field("pending", &self.pending.lock().len())
            .finish_non_exhaustive()
    }
}

impl ReplicaHub {
    /// Sets the host and starts every replica that waited for it.
    pub fn set_host(&self, host: Arc<dyn ReplicaHost>) {
        *self.host.write() = Some(host.clone());
        let waiting: Vec<PendingReplica> = std::mem::take(&mut *self.pending.lock());
        for p in waiting {
            let (vhost, group) = (p.vhost.clone(), p.group);
            if let Err(e) = host.start(p, true) {
                tracing::error!(%vhost, group, error = %e, "a replicated queue's group did not start");
            }
        }
    }

    /// Whether replicated queues can be declared (a host is set).
    pub fn active(&self) -> bool {
        self.host.read().is_some()
    }

    /// The nodes a new replicated queue goes to.
    pub fn placement(&self) -> Vec<u64> {
        self.host
            .read()
            .as_ref()
            .map(|h| h.placement())
            .unwrap_or_default()
    }

    /// Starts `p`'s group now, or once the host is set.
    pub fn start(&self, p: PendingReplica) -> Result<()> {
        let host = self.host.read().clone();
        match host {
            Some(h) => h.start(p, false),
            None => {
                self.pending.lock().push(p);
                Ok(())
            }
        }
    }

    /// Where `group` stands, as this node sees it.
    pub fn status(&self, group: u64) -> Option<ReplicaStatus> {
        let host = self.host.read().clone();
        host.and_then(|h| h.status(group))
    }

    /// Spreads queue and stream leaders over the nodes (None: no host).
    pub fn rebalance(&self) -> Option<Rebalanced> {
        let host = self.host.read().clone();
        host.map(|h| h.rebalance())
    }

    /// Takes node `who` out of `group` (see [`ReplicaHost::remove_member`]).
    pub fn remove_member(
        &self,
        group: u64,
        replicas: &[u64],
        who: u64,
    ) -> std::result::Result<(), String> {
        self.with_host(|h| h.remove_member(group, replicas, who))
    }

    /// Adds node `who` to `group` (see [`ReplicaHost::add_member`]).
    pub fn add_member(
        &self,
        group: u64,
        replicas: &[u64],
        who: u64,
    ) -> std::result::Result<(), String> {
        self.with_host(|h| h.add_member(group, replicas, who))
    }

    fn with_host(
        &self,
        f: impl FnOnce(&dyn ReplicaHost) -> std::result::Result<(), String>,
    ) -> std::result::Result<(), String> {
        let host = self.host.read().clone();
        match host {
            Some(h) => f(&*h),
            None => Err("this node is not clustered".into()),
        }
    }

    /// This node's id in its cluster (None: not clustered, or not yet).
    pub fn node_id(&self) -> Option<u64> {
        self.host.read().as_ref().map(|h| h.node_id())
    }

    /// The leaders' figures of the queues this node follows (see
    /// [`ReplicaHost::leader_depths`]).
    pub fn leader_depths(&self, only: Option<u64>) -> Vec<(u64, Depth)> {
        let host = self.host.read().clone();
        host.map(|h| h.leader_depths(only)).unwrap_or_default()
    }

    /// Stops this node's member of `group` (a deleted queue).
    pub fn remove(&self, group: u64) {
        self.pending.lock().retain(|p| p.group != group);
        let host = self.host.read().clone();
        if let Some(h) = host {
            h.remove(group);
        }
    }
}

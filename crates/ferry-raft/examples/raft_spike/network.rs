//! The network seam, in-process: a [`Router`] holds, per node, a map
//! group id → `Raft` handle, and a group's RPC to another node calls that
//! node's `Raft` for the same group directly (no encoding, no socket).
//!
//! The measurement's stand-in for ferry-cluster's links (one multiplexed
//! connection per peer pair, frames tagged with the group id): the per-group
//! client is the same cheap handle `(group, target, links)` that
//! `ferry_cluster::GroupNetwork` hands out, minus encoding and sockets.
//!
//! A node can be marked down ([`Router::set_down`]): every RPC from or to it
//! fails with `Unreachable`, which emulates kill -9 of that node (its Raft
//! tasks keep running but can reach nobody) or a full partition of it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ferry_raft::{NodeId, TypeConfig, Vote};
use openraft::error::{
    Fatal, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, Snapshot};
use parking_lot::RwLock;

use crate::cluster::{GroupId, Raft};

/// Errors of the in-process network.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum NetError {
    /// The node is not known to the router.
    #[error("node {0} is not in the router")]
    UnknownNode(NodeId),
    /// The sending or receiving node is marked down.
    #[error("node {0} is down")]
    NodeDown(NodeId),
    /// The target node has no replica of the group.
    #[error("node {node} has no replica of group {group}")]
    NoSuchGroup {
        /// Target node.
        node: NodeId,
        /// Group asked for.
        group: GroupId,
    },
    /// A replica of the group is already registered on the node.
    #[error("group {group} is already registered on node {node}")]
    Duplicate {
        /// Node.
        node: NodeId,
        /// Group.
        group: GroupId,
    },
}

/// Counters of RPCs the router delivered (attempts to a down node excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// AppendEntries calls (heartbeats included).
    pub append_entries: u64,
    /// RequestVote calls.
    pub votes: u64,
}

#[derive(Default)]
struct Counters {
    append_entries: AtomicU64,
    votes: AtomicU64,
}

struct NodeSlot {
    id: NodeId,
    down: AtomicBool,
    groups: RwLock<HashMap<GroupId, Raft>>,
}

/// Every node's replicas, reachable by (node, group).
pub struct Router {
    nodes: Vec<NodeSlot>,
    counters: Counters,
}

impl Router {
    /// A router for these nodes, all up, with no group yet.
    pub fn new(nodes: impl IntoIterator<Item = NodeId>) -> Arc<Self> {
        let nodes = nodes
            .into_iter()
            .map(|id| NodeSlot {
                id,
                down: AtomicBool::new(false),
                groups: RwLock::new(HashMap::new()),
            })
            .collect();
        Arc::new(Self {
            nodes,
            counters: Counters::default(),
        })
    }

    fn slot(&self, node: NodeId) -> Result<&NodeSlot, NetError> {
        self.nodes
            .iter()
            .find(|s| s.id == node)
            .ok_or(NetError::UnknownNode(node))
    }

    /// The network factory for `group`'s replica on `node`, to pass to
    /// `Raft::new` (register the resulting handle with [`Router::register`]).
    pub fn factory(self: &Arc<Self>, node: NodeId, group: GroupId) -> GroupNetworkFactory {
        GroupNetworkFactory {
            group,
            source: node,
            router: self.clone(),
        }
    }

    /// Make `raft` reachable as `group`'s replica on `node`.
    pub fn register(&self, node: NodeId, group: GroupId, raft: Raft) -> Result<(), NetError> {
        let mut groups = self.slot(node)?.groups.write();
        if groups.contains_key(&group) {
            return Err(NetError::Duplicate { node, group });
        }
        groups.insert(group, raft);
        Ok(())
    }

    /// Mark `node` down (every RPC from or to it fails) or up again.
    pub fn set_down(&self, node: NodeId, down: bool) -> Result<(), NetError> {
        self.slot(node)?.down.store(down, Ordering::SeqCst);
        Ok(())
    }

    /// Whether `node` is marked down (unknown nodes count as down).
    pub fn is_down(&self, node: NodeId) -> bool {
        self.slot(node)
            .map_or(true, |s| s.down.load(Ordering::Relaxed))
    }

    /// RPC counters so far.
    pub fn stats(&self) -> RouterStats {
        let c = &self.counters;
        RouterStats {
            append_entries: c.append_entries.load(Ordering::Relaxed),
            votes: c.votes.load(Ordering::Relaxed),
        }
    }

    /// The target replica for an RPC from `source` to `target`, or why not.
    fn reach(&self, source: NodeId, target: NodeId, group: GroupId) -> Result<Raft, NetError> {
        if self.is_down(source) {
            return Err(NetError::NodeDown(source));
        }
        let slot = self.slot(target)?;
        if slot.down.load(Ordering::Relaxed) {
            return Err(NetError::NodeDown(target));
        }
        let raft = slot.groups.read().get(&group).cloned();
        raft.ok_or(NetError::NoSuchGroup {
            node: target,
            group,
        })
    }
}

/// Hands one group replica its per-target clients.
#[derive(Clone)]
pub struct GroupNetworkFactory {
    group: GroupId,
    source: NodeId,
    router: Arc<Router>,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        GroupNetwork {
            group: self.group,
            source: self.source,
            target,
            router: self.router.clone(),
        }
    }
}

/// One group replica's client to the same group on `target`.
pub struct GroupNetwork {
    group: GroupId,
    source: NodeId,
    target: NodeId,
    router: Arc<Router>,
}

impl GroupNetwork {
    /// The replica this client talks to, or why it cannot be reached.
    fn target_raft(&self) -> Result<Raft, Unreachable> {
        self.router
            .reach(self.source, self.target, self.group)
            .map_err(|e| Unreachable::new(&e))
    }
}

type RpcResult<T> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId>>>;

impl RaftNetwork<TypeConfig> for GroupNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let raft = self.target_raft().map_err(RPCError::Unreachable)?;
        let counters = &self.router.counters;
        counters.append_entries.fetch_add(1, Ordering::Relaxed);
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let raft = self.target_raft().map_err(RPCError::Unreachable)?;
        self.router.counters.votes.fetch_add(1, Ordering::Relaxed);
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let raft = self.target_raft().map_err(StreamingError::Unreachable)?;
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}

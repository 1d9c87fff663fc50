//! Wiring: the cluster node runs the broker's replicated queues' groups
//! (`ferry_broker::replicated::ReplicaHost`). Each group's Raft log lives
//! in `<data>/cluster/groups/<group id>`.

use ferry_broker::replicated::{PendingReplica, ReplicaHost, ReplicaStatus};
use ferry_cluster::group::QueueGroup;
use ferry_cluster::node::ClusterNode;
use ferry_log::{LogConfig, StdIo};
use ferry_queue::error::{CoreError, ErrorKind, Result};
use ferry_queue::syncer::Syncer;
use ferry_raft::RaftLog;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// The node's queue groups.
pub struct GroupHost {
    node: ClusterNode,
    rt: tokio::runtime::Handle,
    syncer: Arc<Syncer>,
    groups: Mutex<HashMap<u64, QueueGroup>>,
    /// Replicas of a new queue (`default_replicas`; at least one).
    replicas: usize,
}

impl GroupHost {
    pub fn new(
        node: ClusterNode,
        rt: tokio::runtime::Handle,
        syncer: Arc<Syncer>,
        replicas: usize,
    ) -> Self {
        GroupHost {
            node,
            rt,
            syncer,
            groups: Mutex::new(HashMap::new()),
            replicas: replicas.max(1),
        }
    }

    fn dir(&self, group: u64) -> std::path::PathBuf {
        self.node.dir().join("groups").join(format!("{group:016x}"))
    }
}

fn internal(e: impl std::fmt::Display) -> CoreError {
    CoreError::request(ErrorKind::Internal, e.to_string())
}

impl ReplicaHost for GroupHost {
    fn placement(&self) -> Vec<u64> {
        let me = self.node.id();
        let mut ids: Vec<u64> = self
            .node
            .voters()
            .keys()
            .copied()
            .filter(|id| *id != me)
            .collect();
        ids.insert(0, me);
        ids.truncate(self.replicas);
        ids
    }

    fn start(&self, p: PendingReplica, catching_up: bool) -> Result<()> {
        let me = self.node.id();
        if !p.replicas.is_empty() && !p.replicas.contains(&me) {
            // Not one of its nodes: the queue exists here, unbound.
            return Ok(());
        }
        if catching_up && !p.replicas.is_empty() && self.node.is_fresh() {
            // This node is one of the queue's nodes, declared before this
            // data directory existed: it was wiped, and its member of the
            // group lost the votes and entries it acknowledged. Rejoining
            // as a voter could elect a member that lacks committed
            // entries: it stays out (the queue is served by the others)
            // until rebuilding a member is built.
            tracing::warn!(
                vhost = %p.vhost,
                queue = %p.replica.queue().name(),
                group = p.group,
                "this node's replica of a quorum queue lost its data; it stays out of the queue's group"
            );
            return Ok(());
        }
        if self.groups.lock().contains_key(&p.group) {
            return Ok(());
        }
        let log = RaftLog::open(
            Arc::new(StdIo),
            &self.dir(p.group),
            LogConfig::default(),
            self.syncer.clone(),
        )
        .map_err(internal)?;
        let config = self.node.group_config().map_err(internal)?;
        let (replica, binding) = (p.replica.clone(), p.binding.clone());
        let group = self
            .rt
            .block_on(QueueGroup::start(
                p.group,
                me,
                config,
                self.node.links().clone(),
                self.node.groups().clone(),
                log,
                move |log, proposer| {
                    binding.bind(log, proposer);
                    replica
                },
            ))
            .map_err(internal)?;
        if !p.replicas.is_empty() {
            let voters = self.node.voters();
            let members: std::collections::BTreeMap<u64, openraft::BasicNode> = p
                .replicas
                .iter()
                .filter_map(|id| voters.get(id).map(|n| (*id, n.clone())))
                .collect();
            // The same configuration on every member: safe (see the
            // metadata group's formation).
            let _ = self.rt.block_on(group.raft().initialize(members));
            if p.replicas.first() == Some(&me) {
                // The declaring node stands first (RabbitMQ's
                // `client-local` leader placement): its client's node leads.
                let _ = self.rt.block_on(group.raft().trigger().elect());
            }
        }
        self.groups.lock().insert(p.group, group);
        Ok(())
    }

    fn status(&self, group: u64) -> Option<ReplicaStatus> {
        let m = self
            .groups
            .lock()
            .get(&group)?
            .raft()
            .metrics()
            .borrow()
            .clone();
        let names = self.node.meta_state();
        let name = |id: &u64| {
            names
                .nodes
                .get(id)
                .map_or_else(|| id.to_string(), |n| n.name.clone())
        };
        Some(ReplicaStatus {
            leader: m.current_leader.as_ref().map(name),
            members: m
                .membership_config
                .membership()
                .voter_ids()
                .map(|id| name(&id))
                .collect(),
        })
    }

    fn remove(&self, group: u64) {
        let g = self.groups.lock().remove(&group);
        if let Some(g) = g {
            self.rt.block_on(g.shutdown());
        }
        let _ = std::fs::remove_dir_all(self.dir(group));
    }
}

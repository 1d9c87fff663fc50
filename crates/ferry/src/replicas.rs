//! Wiring: the cluster node runs the broker's replicated queues' groups
//! (`ferry_broker::replicated::ReplicaHost`) and replicated streams'.
//! Each group's Raft log lives in `<data>/cluster/groups/<group id>`.

use ferry_broker::replicated::{
    PendingReplica, Rebalanced, ReplicaHost, ReplicaStatus, Replicated,
};
use ferry_cluster::group::QueueGroup;
use ferry_cluster::node::ClusterNode;
use ferry_cluster::outside::OutsideGroup;
use ferry_cluster::slot::RaftSlot;
use ferry_cluster::stream_group::StreamGroup;
use ferry_log::{LogConfig, StdIo};
use ferry_queue::error::{CoreError, ErrorKind, Result};
use ferry_queue::syncer::Syncer;
use ferry_raft::RaftLog;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// The node's queue groups.
pub struct GroupHost {
    starter: Starter,
    /// Replicas of a new queue (`default_replicas`; at least one).
    replicas: usize,
}

/// What starting a group member takes (cloned into a wiped node's
/// rebuild task).
#[derive(Clone)]
struct Starter {
    node: ClusterNode,
    rt: tokio::runtime::Handle,
    syncer: Arc<Syncer>,
    /// This node's members of queue and stream groups, with their vhost.
    groups: Arc<Mutex<HashMap<u64, (String, Member)>>>,
    /// Queues whose groups this node is not in, served through them.
    outside: Arc<Mutex<HashMap<u64, OutsideGroup>>>,
    /// Groups whose member on this (wiped) node is being rebuilt, with the
    /// members their definitions record: until its member has heard its
    /// group's membership, that is what it shows (without itself).
    rebuilding: Arc<Mutex<HashMap<u64, Vec<u64>>>>,
}

impl GroupHost {
    pub fn new(
        node: ClusterNode,
        rt: tokio::runtime::Handle,
        syncer: Arc<Syncer>,
        replicas: usize,
    ) -> Self {
        GroupHost {
            starter: Starter {
                node,
                rt,
                syncer,
                groups: Arc::new(Mutex::new(HashMap::new())),
                outside: Arc::new(Mutex::new(HashMap::new())),
                rebuilding: Arc::new(Mutex::new(HashMap::new())),
            },
            replicas: replicas.max(1),
        }
    }

    /// Times this node's queue groups hibernated, in all.
    pub fn hibernations(&self) -> u64 {
        let groups = self.starter.groups.lock();
        groups.values().map(|(_, g)| g.slot().sleeps()).sum()
    }

    /// The queue groups' figures for Prometheus.
    pub fn group_stats(&self) -> Vec<ferry_cluster::node::GroupStats> {
        let groups = self.starter.groups.lock();
        groups.values().map(|(vhost, g)| g.stats(vhost)).collect()
    }
}

/// This node's member of a group.
enum Member {
    Queue(QueueGroup),
    Stream(StreamGroup),
}

impl Member {
    fn slot(&self) -> &Arc<RaftSlot> {
        match self {
            Member::Queue(g) => g.slot(),
            Member::Stream(g) => g.slot(),
        }
    }

    fn stats(&self, vhost: &str) -> ferry_cluster::node::GroupStats {
        match self {
            Member::Queue(g) => g.stats(vhost),
            Member::Stream(g) => g.stats(vhost),
        }
    }

    async fn shutdown(&self) {
        match self {
            Member::Queue(g) => g.shutdown().await,
            Member::Stream(g) => g.shutdown().await,
        }
    }
}

fn internal(e: impl std::fmt::Display) -> CoreError {
    CoreError::request(ErrorKind::Internal, e.to_string())
}

impl Starter {
    fn dir(&self, group: u64) -> std::path::PathBuf {
        self.node.dir().join("groups").join(format!("{group:016x}"))
    }

    /// Starts this node's member of `p`'s group (blocking: opens its log
    /// and starts its Raft); `initialize`: with the queue's nodes as the
    /// group's first configuration.
    fn start_member(&self, p: PendingReplica, initialize: bool) -> Result<()> {
        let me = self.node.id();
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
        let (links, groups) = (self.node.links().clone(), self.node.groups().clone());
        let binding = p.binding.clone();
        let group = match &p.kind {
            Replicated::Queue(replica) => {
                let replica = replica.clone();
                Member::Queue(
                    self.rt
                        .block_on(QueueGroup::start(
                            p.group,
                            me,
                            &config,
                            links,
                            groups,
                            log,
                            move |log, proposer| {
                                binding.bind(log, proposer);
                                replica
                            },
                        ))
                        .map_err(internal)?,
                )
            }
            Replicated::Stream(stream) => {
                let (group, proposer) = self
                    .rt
                    .block_on(StreamGroup::start(
                        p.group,
                        me,
                        &config,
                        links,
                        groups,
                        log,
                        stream.clone(),
                    ))
                    .map_err(internal)?;
                binding.bind_proposer(proposer);
                Member::Stream(group)
            }
        };
        if initialize && !p.replicas.is_empty() {
            let voters = self.node.voters();
            let members: std::collections::BTreeMap<u64, openraft::BasicNode> = p
                .replicas
                .iter()
                .filter_map(|id| voters.get(id).map(|n| (*id, n.clone())))
                .collect();
            // The same configuration on every member: safe (see the
            // metadata group's formation).
            let alone = members.len() == 1;
            let Some(raft) = self.rt.block_on(group.slot().raft()) else {
                return Err(internal("the queue's group stopped as it started"));
            };
            let _ = self.rt.block_on(raft.initialize(members));
            // A group of one elects itself as it initializes: standing
            // again would start a second term over the first (and log a
            // warning per declared queue).
            if p.replicas.first() == Some(&me) && !alone {
                // The declaring node stands first (RabbitMQ's
                // `client-local` leader placement): it stands for election
                // at once, so its client's node usually leads. (Repeating
                // the election while the others start their part of the
                // group made two nodes duel for terms: it is not done.)
                let _ = self.rt.block_on(raft.trigger().elect());
            }
        }
        self.groups
            .lock()
            .insert(p.group, (p.vhost.to_string(), group));
        Ok(())
    }

    /// A queue whose group this node is not in (the cluster has more
    /// nodes than its replicas): its clients are served through the
    /// group's leader.
    fn start_outside(&self, p: PendingReplica) {
        if self.outside.lock().contains_key(&p.group) {
            return;
        }
        let voters = self.node.voters();
        let members: Vec<(u64, String)> = p
            .replicas
            .iter()
            .filter_map(|id| voters.get(id).map(|n| (*id, n.addr.clone())))
            .collect();
        let _rt = self.rt.enter();
        let binding = p.binding.clone();
        let links = self.node.links().clone();
        let g = match &p.kind {
            Replicated::Queue(replica) => OutsideGroup::start(
                p.group,
                members,
                links,
                replica.clone(),
                move |log, proposer| binding.bind(log, proposer),
            ),
            Replicated::Stream(stream) => {
                OutsideGroup::start_stream(p.group, members, links, stream, move |proposer| {
                    binding.bind_proposer(proposer)
                })
            }
        };
        self.outside.lock().insert(p.group, g);
    }

    /// A wiped node's member of `p`'s group: the leader first takes it out
    /// of the voters (it lost the votes and entries it acknowledged, and
    /// voting with an empty log could elect a member that lacks committed
    /// entries), then it starts as a learner that catches up, and the
    /// leader makes it a voter again.
    fn rebuild(self, p: PendingReplica) {
        let me = self.node.id();
        let voters = self.node.voters();
        let members: Vec<(u64, String)> = p
            .replicas
            .iter()
            .filter(|id| **id != me)
            .filter_map(|id| voters.get(id).map(|n| (*id, n.addr.clone())))
            .collect();
        let links = self.node.links().clone();
        self.rebuilding.lock().insert(p.group, p.replicas.clone());
        let rt = self.rt.clone();
        rt.spawn(async move {
            ferry_cluster::rebuild::ask_rebuild(links, p.group, members).await;
            let (group, queue) = (p.group, p.name().clone());
            if !self.rebuilding.lock().contains_key(&group) {
                // Removed from this node meanwhile (shrunk, deleted).
                return;
            }
            let rebuilding = self.rebuilding.clone();
            let started = tokio::task::spawn_blocking(move || self.start_member(p, false)).await;
            // Its member is in `groups` now (or failed to start: reopened
            // by the next change of its replicas).
            rebuilding.lock().remove(&group);
            match started {
                Ok(Ok(())) => tracing::info!(%queue, group, "rebuilding this node's replica of a queue from the others"),
                Ok(Err(e)) => tracing::error!(%queue, group, error = %e, "cannot start a rebuilt replica"),
                Err(e) => tracing::error!(%queue, group, error = %e, "cannot start a rebuilt replica"),
            }
        });
    }
}

impl GroupHost {
    /// Asks `to` to stand for election in `group` (this node: at once).
    fn ask_to_stand(&self, group: u64, to: u64, slot: &Arc<RaftSlot>) {
        let node = &self.starter.node;
        let r = if to == node.id() {
            self.starter.rt.block_on(async {
                match slot.raft().await {
                    Some(raft) => ferry_cluster::stand(&raft).await.map(|_| ()),
                    None => Err("the group stopped on this node".to_string()),
                }
            })
        } else {
            match node.voters().get(&to) {
                Some(n) => self
                    .starter
                    .rt
                    .block_on(node.links().link(to, &n.addr).request(
                        ferry_cluster::wire::KIND_STAND,
                        group,
                        bytes::Bytes::new(),
                        std::time::Duration::from_secs(5),
                    ))
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => Err("not a member".into()),
            }
        };
        if let Err(e) = r {
            tracing::warn!(group, node = to, error = %e, "rebalance: a member did not stand");
        }
    }
}

impl GroupHost {
    /// How to reach `group`'s leader: through the members its definitions
    /// record (`replicas`) and this node's own member, if any.
    fn ask(&self, group: u64, replicas: &[u64]) -> ferry_cluster::membership::GroupAsk {
        let node = &self.starter.node;
        let voters = node.voters();
        let local = self
            .starter
            .groups
            .lock()
            .get(&group)
            .map(|(_, g)| (node.id(), g.slot().clone()));
        ferry_cluster::membership::GroupAsk {
            links: node.links().clone(),
            local,
            group,
            members: replicas
                .iter()
                .filter_map(|id| voters.get(id).map(|n| (*id, n.addr.clone())))
                .collect(),
            timeout: std::time::Duration::from_secs(10),
        }
    }
}

impl ReplicaHost for GroupHost {
    fn leader_depths(&self, only: Option<u64>) -> Vec<(u64, ferry_queue::queue::Depth)> {
        use ferry_cluster::wire::remote;
        let node = &self.starter.node;
        let me = node.id();
        let voters = node.voters();
        // The nodes to ask (id → address, groups): a member's leader; for
        // a queue this node is outside of, every member (only the leader
        // answers for it).
        let mut ask: std::collections::BTreeMap<u64, (String, Vec<u64>)> = Default::default();
        let mut add = |node_id: u64, addr: &str, group: u64| {
            ask.entry(node_id)
                .or_insert_with(|| (addr.to_string(), Vec::new()))
                .1
                .push(group);
        };
        let wanted = |id: &u64| only.is_none_or(|o| o == *id);
        for (id, (_, g)) in self
            .starter
            .groups
            .lock()
            .iter()
            .filter(|(id, _)| wanted(id))
        {
            let Member::Queue(q) = g else { continue };
            let leader = q.slot().with_metrics(|m| m.current_leader);
            if let Some(l) = leader.filter(|l| *l != me && node.groups().is_alive(*l)) {
                if let Some(n) = voters.get(&l) {
                    add(l, &n.addr, *id);
                }
            }
        }
        for (id, o) in self
            .starter
            .outside
            .lock()
            .iter()
            .filter(|(id, _)| wanted(id))
        {
            // (The elector watches only the nodes this node shares groups
            // with: a member that is down fails its request at once.)
            for (m, addr) in o.queue_members() {
                add(*m, addr, *id);
            }
        }
        let mut out: Vec<(u64, ferry_queue::queue::Depth)> = Vec::new();
        for (leader, (addr, groups)) in ask {
            let asked = self
                .starter
                .rt
                .block_on(node.links().link(leader, &addr).request(
                    remote::KIND_FIGURES,
                    0,
                    remote::encode_groups(&groups),
                    std::time::Duration::from_secs(1),
                ));
            let Ok(frame) = asked else { continue };
            if let Ok(figures) = remote::decode_figures(frame.body) {
                out.extend(figures);
            }
        }
        out
    }

    fn rebalance(&self) -> Rebalanced {
        let node = &self.starter.node;
        let me = node.id();
        let live: Vec<u64> = node
            .voters()
            .keys()
            .copied()
            .filter(|id| *id == me || node.groups().is_alive(*id))
            .collect();
        let views: Vec<(crate::rebalance::GroupView, Arc<RaftSlot>)> = self
            .starter
            .groups
            .lock()
            .iter()
            .map(|(id, (_, g))| {
                let slot = g.slot().clone();
                let view = slot.with_metrics(|m| crate::rebalance::GroupView {
                    id: *id,
                    voters: m.membership_config.membership().voter_ids().collect(),
                    leader: m.current_leader,
                });
                (view, slot)
            })
            .collect();
        let plain: Vec<crate::rebalance::GroupView> =
            views.iter().map(|(v, _)| v.clone()).collect();
        let moves = crate::rebalance::plan(&plain, &live);
        for (group, to) in &moves {
            if let Some((_, slot)) = views.iter().find(|(v, _)| v.id == *group) {
                self.ask_to_stand(*group, *to, slot);
            }
        }
        let groups = plain.iter().filter(|v| v.leader.is_some()).count();
        tracing::info!(
            groups,
            moved = moves.len(),
            "rebalance of queue leaders asked"
        );
        Rebalanced {
            groups,
            moved: moves.len(),
        }
    }

    fn placement(&self) -> Vec<u64> {
        let me = self.starter.node.id();
        let mut ids: Vec<u64> = self
            .starter
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
        let me = self.starter.node.id();
        if !p.replicas.is_empty() && !p.replicas.contains(&me) {
            // Not one of its nodes: served through the group's leader.
            self.starter.start_outside(p);
            return Ok(());
        }
        if !p.reopened && catching_up && !p.replicas.is_empty() && self.starter.node.is_fresh() {
            // This node is one of the queue's nodes, declared before this
            // data directory existed: it was wiped. Its member is rebuilt
            // from the others (in the background: the leader must first
            // take it out of the voters).
            tracing::warn!(
                vhost = %p.vhost,
                queue = %p.name(),
                group = p.group,
                "this node's replica of a queue lost its data; it is rebuilt from the others"
            );
            self.starter.clone().rebuild(p);
            return Ok(());
        }
        let initialize = !p.reopened;
        self.starter.start_member(p, initialize)
    }

    fn status(&self, group: u64) -> Option<ReplicaStatus> {
        let metrics = self
            .starter
            .groups
            .lock()
            .get(&group)
            .map(|(_, g)| g.slot().with_metrics(Clone::clone));
        let names = self.starter.node.meta_state();
        let name = |id: &u64| {
            names
                .nodes
                .get(id)
                .map_or_else(|| id.to_string(), |n| n.name.clone())
        };
        let me = self.starter.node.id();
        let groups = self.starter.node.groups();
        // The voters in every configuration in force (while a member comes
        // or goes, those in both the old and the new one): the members a
        // vote can be counted on whichever configuration decides.
        let heard = metrics.as_ref().and_then(|m| {
            let membership = m.membership_config.membership();
            membership.nodes().next()?;
            let joint = membership.get_joint_config();
            let mut voters: Vec<u64> = joint.first()?.iter().copied().collect();
            voters.retain(|id| joint.iter().all(|c| c.contains(id)));
            Some((m.current_leader, voters))
        });
        let rebuilding = || self.starter.rebuilding.lock().get(&group).cloned();
        let (leader, voters) = match (heard, metrics.is_some()) {
            (Some(h), _) => h,
            // A rebuilt member that has not heard its group's membership
            // yet: the others its definitions record, not its old self.
            (None, _) if rebuilding().is_some() => (
                None,
                rebuilding()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|id| *id != me)
                    .collect(),
            ),
            // A member of the group here whose Raft has not loaded a
            // membership yet (just started): a member all the same (the
            // broker's `set_replicas` must not reopen it).
            (None, true) => (None, Vec::new()),
            (None, false) => return None,
        };
        // By name (ids are hashes of addresses).
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        Some(ReplicaStatus {
            leader: leader.as_ref().map(name),
            online: sorted(
                voters
                    .iter()
                    .filter(|id| **id == me || groups.is_alive(**id))
                    .map(name)
                    .collect(),
            ),
            members: sorted(voters.iter().map(name).collect()),
        })
    }

    fn remove(&self, group: u64) {
        self.starter.rebuilding.lock().remove(&group);
        if let Some(o) = self.starter.outside.lock().remove(&group) {
            o.shutdown();
        }
        let g = self.starter.groups.lock().remove(&group);
        if let Some((_, g)) = g {
            self.starter.rt.block_on(g.shutdown());
        }
        let _ = std::fs::remove_dir_all(self.starter.dir(group));
    }

    fn node_id(&self) -> u64 {
        self.starter.node.id()
    }

    fn add_member(
        &self,
        group: u64,
        replicas: &[u64],
        who: u64,
    ) -> std::result::Result<(), String> {
        let addr = self
            .starter
            .node
            .voters()
            .get(&who)
            .map(|n| n.addr.clone())
            .ok_or_else(|| format!("node {who} is not a voting member of the cluster"))?;
        let ask = self.ask(group, replicas);
        self.starter
            .rt
            .block_on(ferry_cluster::membership::add_member(ask, who, &addr))
    }

    fn remove_member(
        &self,
        group: u64,
        replicas: &[u64],
        who: u64,
    ) -> std::result::Result<(), String> {
        let ask = self.ask(group, replicas);
        self.starter
            .rt
            .block_on(ferry_cluster::membership::remove_member(ask, who))
    }
}

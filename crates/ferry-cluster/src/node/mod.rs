//! A clustered node: its identity, cluster port and links, the metadata
//! Raft group (group 0, on every node) and how the cluster forms.
//!
//! Formation: every seed derives every seed's node id from the seed list
//! (`identity::node_id`) and starts the metadata group with that same
//! configuration — safe on all of them at once — so the group elects a
//! leader as soon as a majority of the seeds reach each other, whatever
//! the order they start in. A node that is not a seed asks the seeds to
//! let it join (the leader adds it as a learner, then as a voter). Once a
//! node is a member it announces its name and address through the group;
//! the first leader also gives the cluster its id, which every node
//! records in its data directory.

mod admission;
pub mod identity;
mod join;
mod leave;
pub mod machine;
pub mod meta;
pub mod meta_snapshot;
mod rpc;
mod status;

pub use join::NodeExit;
pub use status::{
    count_changes, stats_of, ClusterStatus, ForgetError, GroupStats, GroupStatsProvider,
    MemberStatus, RaftCounters, StatsProvider,
};

use crate::error::NodeError;
use crate::group::{queue_raft_config, GroupConfig};
use crate::handshake::{Identity, Secret};
use crate::link::Links;
use crate::listener::Listener;
use crate::network::{FerryRaft, GroupNetwork, RaftGroups};
use crate::wire::{self, KIND_JOIN, KIND_PING, KIND_PROPOSE, KIND_REPLY};
use bytes::Bytes;
use ferry_log::{FileIo, LogConfig};
use ferry_queue::syncer::Syncer;
use ferry_raft::{Batch, NodeId, RaftLog};
use identity::{node_id, Recorded};
use machine::{DefinitionApplier, MetaMachine};
use meta::{MetaCommand, MetaState};
use openraft::{BasicNode, Config, Raft};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The metadata group's id.
pub const META_GROUP: u64 = 0;

/// How a clustered node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `<data dir>/cluster`.
    pub dir: PathBuf,
    /// `--node-name`.
    pub name: String,
    /// `--cluster-listen`.
    pub listen: String,
    /// `--cluster-advertise` (the address the others dial).
    pub advertise: String,
    /// `--cluster-seeds`.
    pub seeds: Vec<String>,
    /// The shared secret.
    pub secret: Secret,
    /// TLS on the links (`cluster_tls`).
    pub tls: Option<crate::LinkTls>,
    /// Metadata group heartbeat, ms.
    pub heartbeat_ms: u64,
    /// Metadata group election timeout range, ms.
    pub election_ms: (u64, u64),
    /// Queue groups: bytes of records between snapshots (`GroupConfig`).
    pub snapshot_bytes: u64,
    /// Queue groups: hibernate after this long unused (`GroupConfig`).
    pub hibernate_after: Option<Duration>,
    /// Metadata group: entries between snapshots (the log is cut at each,
    /// keeping as many entries again for followers a little behind).
    pub meta_snapshot_interval: u64,
}

/// A clustered node.
#[derive(Clone)]
pub struct ClusterNode {
    inner: Arc<NodeInner>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("me", &self.inner.me)
            .finish_non_exhaustive()
    }
}

pub(crate) struct NodeInner {
    me: Identity,
    cfg: NodeConfig,
    io: Arc<dyn FileIo>,
    links: Arc<Links>,
    groups: Arc<RaftGroups>,
    listener: Mutex<Option<Listener>>,
    meta: FerryRaft,
    /// The metadata group's log (its commit index for the figures).
    meta_log: RaftLog,
    sm: MetaMachine,
    recorded: Mutex<Recorded>,
    /// The data directory was new at this start.
    fresh: bool,
    /// What this node answers a ping with after its formed byte.
    stats: parking_lot::RwLock<Option<StatsProvider>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    counters: Arc<status::RaftCounters>,
    group_stats: parking_lot::RwLock<Option<status::GroupStatsProvider>>,
    /// Set once this node leaves its cluster (`leave`) or is to join
    /// another (`join_other`): the process then stops or starts over.
    exit: tokio::sync::watch::Sender<Option<NodeExit>>,
    /// Why the cluster refused this node's join for good, if it did.
    refused: Mutex<Option<String>>,
}

fn raft_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Raft(e.to_string())
}

impl ClusterNode {
    /// Starts the node: checks its data directory's identity, opens the
    /// metadata group (whose definition commands `applier` applies here),
    /// binds the cluster port and starts forming or joining the cluster
    /// (in the background: see [`Self::wait_formed`]).
    pub async fn start(
        cfg: NodeConfig,
        io: Arc<dyn FileIo>,
        syncer: Arc<Syncer>,
        applier: Arc<dyn DefinitionApplier>,
    ) -> Result<Self, NodeError> {
        let id = node_id(&cfg.advertise);
        let (recorded, fresh, incarnation, log, sm) = {
            let (io, cfg) = (io.clone(), cfg.clone());
            tokio::task::spawn_blocking(move || -> Result<_, NodeError> {
                io.create_dir_all(&cfg.dir)
                    .map_err(|e| NodeError::Identity(format!("{}: {e}", cfg.dir.display())))?;
                let loaded = Recorded::load(&*io, &cfg.dir)?;
                let fresh = loaded.is_none();
                let recorded = match loaded {
                    Some(r) => {
                        r.check(&cfg.name, &cfg.advertise)?;
                        r
                    }
                    None => {
                        let r = Recorded {
                            id,
                            name: cfg.name.clone(),
                            advertise: cfg.advertise.clone(),
                            cluster: None,
                        };
                        r.save(&*io, &cfg.dir)?;
                        r
                    }
                };
                let incarnation = identity::incarnation(&*io, &cfg.dir)?;
                let log = RaftLog::open(
                    io.clone(),
                    &cfg.dir.join("meta"),
                    LogConfig::default(),
                    syncer,
                )?;
                let sm = MetaMachine::open(io, cfg.dir.clone(), applier)
                    .map_err(NodeError::MetaSnapshot)?;
                Ok((recorded, fresh, incarnation, log, sm))
            })
            .await
            .map_err(raft_err)??
        };
        let me = Identity {
            id,
            name: cfg.name.clone(),
            advertise: cfg.advertise.clone(),
            incarnation,
            cluster: crate::handshake::ClusterTag::new(recorded.cluster),
        };
        let links = Links::new(me.clone(), cfg.secret.clone(), cfg.tls.clone());
        links.set_admission(admission::admission(sm.clone()));
        let groups = RaftGroups::new();
        let raft_cfg = Config {
            cluster_name: "ferry-meta".into(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_ms.0,
            election_timeout_max: cfg.election_ms.1,
            // A snapshot carries the cluster state and every definition
            // (machine.rs); the log keeps as many entries again after it
            // for followers a little behind.
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.meta_snapshot_interval),
            max_in_snapshot_log_to_keep: cfg.meta_snapshot_interval,
            ..Config::default()
        }
        .validate()
        .map_err(raft_err)?;
        let meta_log = log.clone();
        let meta = Raft::new(
            id,
            Arc::new(raft_cfg),
            GroupNetwork::new(META_GROUP, links.clone()),
            log,
            sm.clone(),
        )
        .await
        .map_err(raft_err)?;
        groups.insert(META_GROUP, meta.clone());
        let inner = Arc::new(NodeInner {
            me: me.clone(),
            cfg: cfg.clone(),
            io,
            links,
            groups: groups.clone(),
            listener: Mutex::new(None),
            meta,
            meta_log,
            sm,
            recorded: Mutex::new(recorded),
            fresh,
            stats: parking_lot::RwLock::new(None),
            tasks: Mutex::new(Vec::new()),
            counters: Arc::default(),
            group_stats: parking_lot::RwLock::new(None),
            exit: tokio::sync::watch::Sender::new(None),
            refused: Mutex::new(None),
        });
        let handler = rpc::NodeHandler::new(groups, Arc::downgrade(&inner));
        let auth = (cfg.secret.clone(), cfg.tls.clone());
        let listener = Listener::bind(&cfg.listen, me, auth, Arc::new(handler))
            .await
            .map_err(|source| NodeError::Listen {
                addr: cfg.listen.clone(),
                source,
            })?;
        *inner.listener.lock() = Some(listener);
        let node = ClusterNode { inner };
        node.bootstrap().await?;
        let weak = Arc::downgrade(&node.inner);
        let peers: crate::elector::Peers = Arc::new(move || {
            weak.upgrade().map_or_else(Vec::new, |inner| {
                let n = ClusterNode { inner };
                n.voters().into_iter().map(|(id, b)| (id, b.addr)).collect()
            })
        });
        crate::elector::spawn(id, &node.inner.links, node.inner.groups.clone(), peers);
        let keeper = node.clone();
        let t = tokio::spawn(async move { keeper.keep_announced().await });
        node.inner.tasks.lock().push(t);
        let t = tokio::spawn(status::count_changes(
            node.inner.meta.clone(),
            node.inner.counters.clone(),
            None,
        ));
        node.inner.tasks.lock().push(t);
        Ok(node)
    }

    /// Sets what this node sends with its ping answers (its figures for
    /// the other nodes' `/api/nodes`).
    pub fn set_stats(&self, provider: StatsProvider) {
        *self.inner.stats.write() = Some(provider);
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.me.id
    }

    /// The bound cluster port.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner
            .listener
            .lock()
            .as_ref()
            .map(Listener::local_addr)
    }

    /// The Raft groups this node serves (the metadata group and, later,
    /// its queues' and streams' groups).
    pub fn groups(&self) -> &Arc<RaftGroups> {
        &self.inner.groups
    }

    /// Whether this node's data directory was new at this start (a new
    /// node, or one whose directory was wiped).
    pub fn is_fresh(&self) -> bool {
        self.inner.fresh
    }

    /// This node's links to the others.
    pub fn links(&self) -> &Arc<Links> {
        &self.inner.links
    }

    /// `<data>/cluster`.
    pub fn dir(&self) -> &std::path::Path {
        &self.inner.cfg.dir
    }

    /// The metadata group's voters and their cluster addresses, by id.
    pub fn voters(&self) -> BTreeMap<NodeId, BasicNode> {
        let m = self.inner.meta.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .filter(|(id, _)| voters.contains(id))
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    /// How the node's queue groups run: quiescent (the elector elects
    /// their leaders), snapshots when the group asks (`GroupConfig`).
    pub fn group_config(&self) -> Result<GroupConfig, NodeError> {
        let raft = queue_raft_config(Config::default())?;
        Ok(GroupConfig {
            raft,
            snapshot_bytes: self.inner.cfg.snapshot_bytes,
            hibernate_after: self.inner.cfg.hibernate_after,
        })
    }

    /// The metadata group's applied state.
    pub fn meta_state(&self) -> MetaState {
        self.inner.sm.read(MetaState::clone)
    }

    /// The metadata group's Raft handle.
    pub fn meta_raft(&self) -> &FerryRaft {
        &self.inner.meta
    }

    fn seed_members(&self) -> BTreeMap<NodeId, BasicNode> {
        self.inner
            .cfg
            .seeds
            .iter()
            .map(|s| (node_id(s), BasicNode { addr: s.clone() }))
            .collect()
    }

    async fn bootstrap(&self) -> Result<(), NodeError> {
        if self.inner.meta.is_initialized().await.map_err(raft_err)? {
            return Ok(());
        }
        let seeds = self.seed_members();
        let alone = seeds.is_empty();
        // A seed on a new data directory whose cluster already runs (it was
        // wiped, or started long after the others) joins it instead: it
        // holds none of the votes and entries it may have acknowledged
        // before, and the others rebuild it (`admission`).
        let formed = self.inner.fresh && !alone && self.seeds_formed().await;
        if (alone || seeds.contains_key(&self.id())) && !formed {
            let members = if alone {
                BTreeMap::from([(
                    self.id(),
                    BasicNode {
                        addr: self.inner.cfg.advertise.clone(),
                    },
                )])
            } else {
                seeds
            };
            match self.inner.meta.initialize(members).await {
                Ok(())
                | Err(openraft::error::RaftError::APIError(
                    openraft::error::InitializeError::NotAllowed(_),
                )) => {}
                Err(e) => return Err(raft_err(e)),
            }
        } else {
            let joiner = self.clone();
            let t = tokio::spawn(async move { joiner.join_loop().await });
            self.inner.tasks.lock().push(t);
        }
        Ok(())
    }

    /// Whether another seed answers that the cluster has formed (a ping
    /// answered with 1: it knows a metadata leader).
    async fn seeds_formed(&self) -> bool {
        let mut asks = Vec::new();
        for addr in &self.inner.cfg.seeds {
            let id = node_id(addr);
            if id == self.id() {
                continue;
            }
            let link = self.inner.links.link(id, addr);
            asks.push(async move {
                link.request(KIND_PING, META_GROUP, Bytes::new(), Duration::from_secs(1))
                    .await
                    .is_ok_and(|f| f.body.first() == Some(&1))
            });
        }
        crate::join_all(asks).await.into_iter().any(|formed| formed)
    }

    /// Asks the seeds (then whoever they name as leader) to add this node,
    /// until it is a member.
    async fn join_loop(&self) {
        let body = rpc::encode_join(&self.inner.me);
        let mut targets: Vec<String> = self.inner.cfg.seeds.clone();
        loop {
            if self.is_voter() {
                return;
            }
            let mut redirected = Vec::new();
            for addr in &targets {
                let link = self.inner.links.link(node_id(addr), addr);
                match link
                    .request(KIND_JOIN, META_GROUP, body.clone(), Duration::from_secs(10))
                    .await
                {
                    Ok(f) if f.kind == KIND_JOIN | KIND_REPLY => {
                        tracing::info!(via = %addr, "joined the cluster");
                        return;
                    }
                    Ok(_) => {}
                    Err(crate::LinkError::Remote { reason, .. })
                        if reason.starts_with(rpc::NAME_TAKEN) =>
                    {
                        tracing::error!(via = %addr, %reason, "the cluster refused this node");
                        *self.inner.refused.lock() = Some(reason);
                        return;
                    }
                    Err(crate::LinkError::Remote { reason, .. }) => {
                        if let Some(leader) = reason.strip_prefix(rpc::REDIRECT) {
                            redirected.push(leader.to_owned());
                        }
                        tracing::debug!(via = %addr, %reason, "join refused");
                    }
                    Err(e) => tracing::debug!(via = %addr, error = %e, "join attempt failed"),
                }
            }
            targets = if redirected.is_empty() {
                self.inner.cfg.seeds.clone()
            } else {
                redirected
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn is_voter(&self) -> bool {
        let m = self.inner.meta.metrics().borrow().clone();
        m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id())
    }

    /// Keeps this node's name and address announced in the metadata
    /// group, gives the cluster its id when leading a group without one,
    /// and records the id in the data directory.
    async fn keep_announced(&self) {
        let mut metrics = self.inner.meta.metrics();
        loop {
            let m = metrics.borrow().clone();
            if m.current_leader.is_some() && self.is_voter() {
                let st = self.inner.sm.read(MetaState::clone);
                let me = &self.inner.me;
                if let Some(why) = name_taken(&st, &m, me) {
                    tracing::error!(reason = %why, "the cluster refused this node");
                    *self.inner.refused.lock() = Some(why.clone());
                    self.inner.exit.send_replace(Some(NodeExit::Refused(why)));
                    return;
                }
                let mut cmds = Vec::new();
                let announced = st.nodes.get(&me.id).is_some_and(|m| {
                    m.name == me.name
                        && m.advertise == me.advertise
                        && m.incarnation == me.incarnation
                });
                if !announced {
                    cmds.push(MetaCommand::NodeInfo {
                        id: me.id,
                        name: me.name.clone(),
                        advertise: me.advertise.clone(),
                        incarnation: me.incarnation,
                    });
                }
                if st.cluster_id.is_none() && m.current_leader == Some(me.id) {
                    let mut id = [0u8; 16];
                    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id);
                    cmds.push(MetaCommand::ClusterId(id));
                }
                if !cmds.is_empty() {
                    if let Err(e) = self.propose_meta(cmds).await {
                        tracing::debug!(error = %e, "announcing this node failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
                self.record_cluster_id(st.cluster_id).await;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    async fn record_cluster_id(&self, id: Option<[u8; 16]>) {
        let Some(id) = id else { return };
        let rec = {
            let mut r = self.inner.recorded.lock();
            if r.cluster == Some(id) {
                return;
            }
            r.cluster = Some(id);
            r.clone()
        };
        // Links from now on say so (those up already were checked with
        // none recorded here, which is never refused).
        self.inner.me.cluster.set(id);
        let (io, dir) = (self.inner.io.clone(), self.inner.cfg.dir.clone());
        let saved = tokio::task::spawn_blocking(move || rec.save(&*io, &dir)).await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::warn!("could not record the cluster id in the data directory");
        }
    }

    /// The metadata group's leader: `None` when it is this node, its link
    /// otherwise; an error while there is none.
    fn meta_leader(&self) -> Result<Option<Arc<crate::link::PeerLink>>, String> {
        let m = self.inner.meta.metrics().borrow().clone();
        let leader = m.current_leader.ok_or("no metadata leader")?;
        if leader == self.id() {
            return Ok(None);
        }
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
            .ok_or("no metadata leader")?;
        Ok(Some(self.inner.links.link(leader, &addr)))
    }

    /// Proposes metadata commands through the group's leader; returns once
    /// the leader applied them.
    pub async fn propose_meta(&self, cmds: Vec<MetaCommand>) -> Result<(), NodeError> {
        let cmds: Vec<Bytes> = cmds.iter().map(MetaCommand::encode).collect();
        match self
            .meta_leader()
            .map_err(|_| NodeError::NotLeader { leader: None })?
        {
            None => {
                self.inner
                    .meta
                    .client_write(Batch::new(cmds))
                    .await
                    .map_err(raft_err)?;
            }
            Some(link) => {
                link.request(
                    KIND_PROPOSE,
                    META_GROUP,
                    wire::encode_commands(&cmds),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|e| NodeError::Raft(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Proposes one definition command (opaque here) through the metadata
    /// group and returns its result's bytes once this node applied it
    /// too, so what the caller does next here sees the change. Waits up
    /// to `timeout` for a leader (an election, a partition healing).
    pub async fn propose_definition(
        &self,
        command: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, NodeError> {
        let deadline = Instant::now() + timeout;
        let cmd = MetaCommand::Definition(command).encode();
        let mut metrics = self.inner.meta.metrics();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt: Result<(), String> = match self.meta_leader() {
                Err(e) => Err(e),
                Ok(None) => match self
                    .inner
                    .meta
                    .client_write(Batch::new(vec![cmd.clone()]))
                    .await
                {
                    // The leader applied it: so did this node.
                    Ok(r) => return Ok(r.data.0),
                    Err(e) => Err(e.to_string()),
                },
                Ok(Some(link)) => {
                    match link
                        .request(
                            KIND_PROPOSE,
                            META_GROUP,
                            wire::encode_commands(std::slice::from_ref(&cmd)),
                            left,
                        )
                        .await
                    {
                        Ok(f) => {
                            let (index, reply) =
                                rpc::decode_proposed(f.body).map_err(NodeError::Raft)?;
                            self.inner
                                .meta
                                .wait(Some(deadline.saturating_duration_since(Instant::now())))
                                .applied_index_at_least(Some(index), "a definition applied here")
                                .await
                                .map_err(raft_err)?;
                            return Ok(reply);
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let why = attempt.err().unwrap_or_default();
                return Err(NodeError::Raft(format!(
                    "no metadata leader accepted the change within {timeout:?}: {why}"
                )));
            }
            // A leader change wakes the retry; the cap retries a leader
            // that answered with an error of the moment.
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(200)), metrics.changed()).await;
        }
    }

    /// Waits until this node is a voting member that knows the leader and
    /// has applied its own announcement.
    pub async fn wait_formed(&self, timeout: Duration) -> Result<(), NodeError> {
        let deadline = Instant::now() + timeout;
        let mut metrics = self.inner.meta.metrics();
        loop {
            if let Some(why) = self.inner.refused.lock().clone() {
                return Err(NodeError::JoinRefused(why));
            }
            let (known, caught_up) = {
                let m = metrics.borrow();
                // Everything this node has logged is applied: a restarted
                // node has caught up on the definitions before it serves.
                let applied = m.last_applied.map_or(0, |l| l.index);
                (
                    m.current_leader.is_some(),
                    applied >= m.last_log_index.unwrap_or(0),
                )
            };
            if known
                && caught_up
                && self.is_voter()
                && self.inner.sm.read(|s| s.nodes.contains_key(&self.id()))
            {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NodeError::NotFormed(format!(
                    "the cluster did not form within {timeout:?}: is a majority of the seeds up \
                     and do they share the secret?"
                )));
            }
            // Metrics change on every apply and leader change; the cap
            // re-checks the applied state, which has no channel of its own.
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(100)), metrics.changed()).await;
        }
    }

    /// The cluster as this node sees it (pings every other member).
    pub async fn status(&self) -> ClusterStatus {
        let m = self.inner.meta.metrics().borrow().clone();
        let st = self.inner.sm.read(MetaState::clone);
        let membership = m.membership_config.membership().clone();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let mut pings = Vec::new();
        for (id, node) in membership.nodes() {
            let (id, addr) = (*id, node.addr.clone());
            let link = (id != self.id()).then(|| self.inner.links.link(id, &addr));
            pings.push(async move {
                let (up, stats) = match link {
                    None => (true, Bytes::new()),
                    Some(l) => match l
                        .request(
                            KIND_PING,
                            META_GROUP,
                            Bytes::new(),
                            Duration::from_millis(800),
                        )
                        .await
                    {
                        Ok(f) => (true, f.body.slice(f.body.len().min(1)..)),
                        Err(_) => (false, Bytes::new()),
                    },
                };
                (id, addr, up, stats)
            });
        }
        let mut members = Vec::new();
        for (id, addr, running, stats) in crate::join_all(pings).await {
            members.push(MemberStatus {
                id,
                name: st
                    .nodes
                    .get(&id)
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
                addr,
                voter: voters.contains(&id),
                running,
                stats,
            });
        }
        ClusterStatus {
            me: self.id(),
            leader: m.current_leader,
            term: m.current_term,
            cluster_id: st
                .cluster_id
                .map(|c| c.iter().map(|b| format!("{b:02x}")).collect()),
            members,
        }
    }

    /// The figures of this node's Raft groups: the metadata group and
    /// those the group-stats provider adds (`set_group_stats`).
    pub fn group_stats(&self) -> Vec<GroupStats> {
        let mut all = vec![status::stats_of(
            "meta".into(),
            &self.inner.meta.metrics().borrow(),
            self.id(),
            (&self.inner.counters, &self.inner.meta_log),
        )];
        let more = self.inner.group_stats.read().clone();
        if let Some(f) = more {
            all.extend(f());
        }
        all
    }

    /// Adds the figures of other groups (the queue groups) to
    /// [`group_stats`](Self::group_stats).
    pub fn set_group_stats(&self, provider: status::GroupStatsProvider) {
        *self.inner.group_stats.write() = Some(provider);
    }

    /// Stops the node's Raft groups, links and port.
    pub async fn shutdown(&self) {
        for t in self.inner.tasks.lock().drain(..) {
            t.abort();
        }
        let _ = self.inner.meta.shutdown().await;
        self.inner.links.close();
        if let Some(l) = self.inner.listener.lock().take() {
            l.close();
        }
    }
}

/// Why this node must stop, if another member of its cluster carries its
/// name: seeds that form the cluster together are not checked by a join,
/// so two of them may have been started with the same `--node-name`.
/// Of two such members the one with the higher id stops (every node sees
/// the same pair; a name freed by a forget is free again).
fn name_taken(
    st: &MetaState,
    m: &openraft::RaftMetrics<NodeId, BasicNode>,
    me: &Identity,
) -> Option<String> {
    let membership = m.membership_config.membership();
    let (other, info) = st.nodes.iter().find(|(other, info)| {
        **other < me.id && info.name == me.name && membership.get_node(other).is_some()
    })?;
    Some(format!(
        "{}{} is the name of node {other:016x} ({}); wipe this node's data directory and start \
         it with another --node-name",
        rpc::NAME_TAKEN,
        me.name,
        info.advertise
    ))
}

//! openraft's network over the node links: the client side
//! ([`GroupNetwork`] → [`GroupClient`], one cheap handle per target) and
//! the serving side ([`RaftGroups`]: the Raft instances of this node,
//! keyed by group id, answering the frames that arrive for them).

use crate::error::LinkError;
use crate::link::{Links, PeerLink};
use crate::listener::{Answer, Handler};
use crate::served::Served;
use crate::slot::{RaftRef, RaftSlot};
use crate::wire::remote;
use crate::wire::{
    self, Frame, SnapshotBody, KIND_APPEND, KIND_ERROR, KIND_PROPOSE, KIND_REBUILD, KIND_REPLY,
    KIND_SNAPSHOT, KIND_SNAPSHOT_CHUNK, KIND_VOTE,
};
use bytes::Bytes;
use ferry_raft::snapshot::{SnapshotStore, CHUNK};
use ferry_raft::{NodeId, SnapshotData, SnapshotFileRef, TypeConfig, Vote};
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::Snapshot;
use openraft::{BasicNode, OptionalSend, Raft};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A Raft instance of this configuration.
pub type FerryRaft = Raft<TypeConfig>;

/// The network of one group: hands openraft a client per target node.
#[derive(Debug, Clone)]
pub struct GroupNetwork {
    group: u64,
    links: Arc<Links>,
}

impl GroupNetwork {
    /// The network of `group` over this node's links.
    pub fn new(group: u64, links: Arc<Links>) -> Self {
        GroupNetwork { group, links }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = GroupClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GroupClient {
        GroupClient {
            group: self.group,
            link: self.links.link(target, &node.addr),
        }
    }
}

/// Requests of one group to one target node.
#[derive(Debug, Clone)]
pub struct GroupClient {
    group: u64,
    link: Arc<PeerLink>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// The prefix of the answer of a node that runs no member of the group
/// (yet: a new queue's declaration has not reached it).
pub(crate) const NO_GROUP: &str = "no raft group";

fn rpc_err<E: std::error::Error>(e: LinkError) -> RpcErr<E> {
    match e {
        LinkError::Unreachable { .. } | LinkError::Handshake { .. } | LinkError::Lost { .. } => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        // Unreachable for now: openraft backs off (`backoff`) instead of
        // retrying at once, which flooded the log and a core while a
        // thousand new queues' declarations travelled.
        LinkError::Remote { ref reason, .. } if reason.starts_with(NO_GROUP) => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

/// Waits between attempts to reach an unreachable member: short at first
/// (a new group's member appears within milliseconds), then 500 ms.
fn backoff_steps() -> impl Iterator<Item = Duration> + Send + 'static {
    [20u64, 50, 100, 200]
        .into_iter()
        .map(Duration::from_millis)
        .chain(std::iter::repeat(Duration::from_millis(500)))
}

impl GroupClient {
    async fn call(&self, kind: u8, body: Bytes, ttl: Duration) -> Result<Bytes, LinkError> {
        let f = self.link.request(kind, self.group, body, ttl).await?;
        if f.kind != kind | KIND_REPLY {
            return Err(LinkError::Remote {
                addr: self.link.addr().to_owned(),
                reason: format!("answer of kind {} to a request of kind {kind}", f.kind),
            });
        }
        Ok(f.body)
    }
}

impl RaftNetwork<TypeConfig> for GroupClient {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(backoff_steps())
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let body = self
            .call(KIND_APPEND, wire::encode_append(&rpc), option.hard_ttl())
            .await
            .map_err(rpc_err)?;
        wire::decode_append_reply(body).map_err(|e| rpc_err(e.into()))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        let body = self
            .call(KIND_VOTE, wire::encode_vote_req(&rpc), option.hard_ttl())
            .await
            .map_err(rpc_err)?;
        wire::decode_vote_reply(body).map_err(|e| rpc_err(e.into()))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let ttl = option.hard_ttl().max(Duration::from_secs(30));
        let send = async {
            let body = match *snapshot.snapshot {
                SnapshotData::Inline(b) => SnapshotBody::Inline(b),
                SnapshotData::File(f) => {
                    self.send_file(&f, ttl).await?;
                    SnapshotBody::File { len: f.len }
                }
                SnapshotData::Stream(r) => {
                    // Written from the stream's records now, then shipped.
                    let f = tokio::task::spawn_blocking(move || r.materialize())
                        .await
                        .map_err(|e| self.remote(format!("stream snapshot task: {e}")))?
                        .map_err(|e| self.remote(format!("stream snapshot: {e}")))?;
                    self.send_file(&f, ttl).await?;
                    SnapshotBody::File { len: f.len }
                }
            };
            let req = wire::encode_snapshot(&vote, &snapshot.meta, &body);
            self.call(KIND_SNAPSHOT, req, ttl).await
        };
        let got = tokio::select! {
            r = send => r,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let body = got.map_err(|e| match e {
            LinkError::Unreachable { .. }
            | LinkError::Handshake { .. }
            | LinkError::Lost { .. } => StreamingError::Unreachable(Unreachable::new(&e)),
            other => StreamingError::Network(NetworkError::new(&other)),
        })?;
        wire::decode_snapshot_reply(body)
            .map_err(|e| StreamingError::Network(NetworkError::new(&LinkError::from(e))))
    }
}

impl GroupClient {
    fn remote(&self, reason: String) -> LinkError {
        LinkError::Remote {
            addr: self.link.addr().to_owned(),
            reason,
        }
    }

    /// Sends a snapshot file in chunks, each answered before the next
    /// (read on the blocking pool; never held whole in memory).
    async fn send_file(&self, f: &SnapshotFileRef, ttl: Duration) -> Result<(), LinkError> {
        let mut off = 0u64;
        loop {
            let file = f.file.clone();
            let want = usize::try_from((f.len - off).min(CHUNK as u64)).unwrap_or(CHUNK);
            let chunk = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                file.read_at(&mut buf, off).map(|n| {
                    buf.truncate(n);
                    buf
                })
            })
            .await
            .map_err(|e| LinkError::Remote {
                addr: self.link.addr().to_owned(),
                reason: format!("snapshot read task: {e}"),
            })?
            .map_err(|e| LinkError::Remote {
                addr: self.link.addr().to_owned(),
                reason: format!("snapshot read: {e}"),
            })?;
            if chunk.len() != want {
                return Err(LinkError::Remote {
                    addr: self.link.addr().to_owned(),
                    reason: format!("snapshot file shorter than {} bytes", f.len),
                });
            }
            self.call(KIND_SNAPSHOT_CHUNK, wire::encode_chunk(off, &chunk), ttl)
                .await?;
            off += want as u64;
            if off >= f.len {
                return Ok(());
            }
        }
    }
}

/// This node's Raft instances by group id; serves their requests (and
/// the requests of followers of the replicated queues this node leads).
#[derive(Default)]
pub struct RaftGroups {
    groups: RwLock<HashMap<u64, Arc<RaftSlot>>>,
    served: RwLock<HashMap<u64, Arc<Served>>>,
    /// This node's replicas of replicated streams (read by nodes outside
    /// their groups).
    streams: RwLock<HashMap<u64, Arc<ferry_queue::stream::Stream>>>,
    /// Where the queue groups receive snapshot files.
    stores: RwLock<HashMap<u64, Arc<SnapshotStore>>>,
    /// Groups without timers of their own (`elector`), each with its
    /// fence: true while this node leads it without hearing from a
    /// majority of its voters (it must not serve).
    quiescent: RwLock<HashMap<u64, tokio::sync::watch::Sender<bool>>>,
    /// The other nodes the elector found alive at its last round.
    alive: RwLock<std::collections::HashSet<NodeId>>,
}

impl std::fmt::Debug for RaftGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftGroups")
            .field("groups", &self.groups.read().len())
            .finish()
    }
}

impl RaftGroups {
    /// An empty set.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Serves requests for `group` with `raft`, which never hibernates
    /// (the metadata group).
    pub fn insert(&self, group: u64, raft: FerryRaft) {
        let awake = crate::slot::Awake {
            raft,
            tasks: Vec::new(),
        };
        let slot = RaftSlot::fixed(group, crate::slot::changes(), awake);
        self.insert_slot(group, slot);
    }

    /// Serves requests for `group` with `slot`'s instance.
    pub fn insert_slot(&self, group: u64, slot: Arc<RaftSlot>) {
        self.groups.write().insert(group, slot);
    }

    /// Stops serving `group`.
    pub fn remove(&self, group: u64) -> Option<Arc<RaftSlot>> {
        self.served.write().remove(&group);
        self.streams.write().remove(&group);
        self.stores.write().remove(&group);
        self.quiescent.write().remove(&group);
        self.groups.write().remove(&group)
    }

    /// Makes `group` quiescent: no tick, no heartbeats, no election
    /// timer; the node's elector elects its leaders. (A hibernating
    /// group's instance is made so each time it starts: [`quiesce`].)
    pub(crate) fn set_quiescent(&self, group: u64) {
        if let Some(raft) = self.get(group).and_then(|s| s.awake()) {
            quiesce(&raft);
            self.quiescent
                .write()
                .insert(group, tokio::sync::watch::Sender::new(false));
        }
    }

    /// Makes `group` quiescent (each of its instances calls [`quiesce`]
    /// as it starts): the fence its leader watches.
    pub(crate) fn add_fence(&self, group: u64) -> tokio::sync::watch::Receiver<bool> {
        self.quiescent
            .write()
            .entry(group)
            .or_insert_with(|| tokio::sync::watch::Sender::new(false))
            .subscribe()
    }

    /// Whether `group` is fenced now.
    pub(crate) fn is_fenced(&self, group: u64) -> bool {
        self.quiescent
            .read()
            .get(&group)
            .is_some_and(|f| *f.borrow())
    }

    /// Fences `group` (or lifts its fence).
    pub(crate) fn set_fenced(&self, group: u64, fenced: bool) {
        if let Some(f) = self.quiescent.read().get(&group) {
            f.send_if_modified(|v| std::mem::replace(v, fenced) != fenced);
        }
    }

    /// Records the other nodes found alive (the elector, each round).
    pub(crate) fn set_alive(&self, alive: std::collections::HashSet<NodeId>) {
        *self.alive.write() = alive;
    }

    /// Whether the elector found node `id` alive at its last round (this
    /// node's own id is not in the set).
    pub fn is_alive(&self, id: NodeId) -> bool {
        self.alive.read().contains(&id)
    }

    /// The quiescent groups.
    pub(crate) fn quiescent(&self) -> Vec<(u64, Arc<RaftSlot>)> {
        let ids: Vec<u64> = self.quiescent.read().keys().copied().collect();
        let groups = self.groups.read();
        ids.into_iter()
            .filter_map(|id| groups.get(&id).map(|r| (id, r.clone())))
            .collect()
    }

    /// Receives the snapshots of queue `group` into `store`.
    pub(crate) fn insert_store(&self, group: u64, store: Arc<SnapshotStore>) {
        self.stores.write().insert(group, store);
    }

    /// Answers the followers of replicated queue `group` with `served`.
    pub(crate) fn insert_served(&self, group: u64, served: Arc<Served>) {
        self.served.write().insert(group, served);
    }

    /// Serves the reads of nodes outside replicated stream `group` from
    /// `stream`, this node's replica.
    pub(crate) fn insert_stream(&self, group: u64, stream: Arc<ferry_queue::stream::Stream>) {
        self.streams.write().insert(group, stream);
    }

    /// Answers a frame for one of this node's groups: Raft's requests,
    /// forwarded proposals, a follower's queue requests, a stream read.
    pub(crate) async fn serve_frame(&self, from: NodeId, frame: &Frame) -> Result<Bytes, String> {
        if frame.kind == wire::KIND_ALIVE {
            return Ok(Bytes::new());
        }
        if frame.kind == remote::KIND_FIGURES {
            let groups = remote::decode_groups(frame.body.clone()).map_err(|e| e.to_string())?;
            let served = self.served.read();
            let figures: Vec<(u64, ferry_queue::queue::Depth)> = groups
                .iter()
                .filter_map(|g| Some((*g, served.get(g)?.figures()?)))
                .collect();
            return Ok(remote::encode_figures(&figures));
        }
        if (remote::KIND_PULL..=remote::KIND_PURGE).contains(&frame.kind) {
            let served = self.served.read().get(&frame.group).cloned();
            return match served {
                Some(s) => s.handle(from, frame.kind, frame.body.clone()).await,
                None => Err(format!("no queue group {} on this node", frame.group)),
            };
        }
        if frame.kind == crate::wire::stream::KIND_STREAM_READ {
            let stream = self.streams.read().get(&frame.group).cloned();
            return match stream {
                Some(s) => crate::stream_served::serve(s, frame.body.clone()).await,
                None => Err(format!("{NO_GROUP} {} on this node", frame.group)),
            };
        }
        let Some(slot) = self.get(frame.group) else {
            return Err(format!("{NO_GROUP} {} on this node", frame.group));
        };
        match slot.raft().await {
            Some(raft) if frame.kind == KIND_REBUILD => {
                crate::rebuild::rebuild(raft.clone(), from).await
            }
            Some(raft) if frame.kind == wire::KIND_STAND => stand(&raft).await,
            Some(raft) if frame.kind == wire::KIND_SHRINK => {
                crate::membership::serve_shrink(&raft, &frame.body).await
            }
            Some(raft) if frame.kind == wire::KIND_GROW => {
                crate::membership::serve_grow(&raft, &frame.body).await
            }
            Some(raft) if frame.kind == KIND_SNAPSHOT || frame.kind == KIND_SNAPSHOT_CHUNK => {
                self.serve_snapshot(&raft, frame).await
            }
            Some(raft) if frame.kind == KIND_PROPOSE => {
                // A queue group's leader decides which records it proposes
                // (`admission`); a stream's or the metadata group's takes
                // them all.
                let queue = self.served.read().get(&frame.group).cloned();
                match queue {
                    Some(q) => {
                        crate::admission::propose_forwarded(&raft, q.replica(), frame.body.clone())
                            .await
                    }
                    None => propose(&raft, frame.body.clone()).await,
                }
            }
            Some(raft) => serve(&raft, frame.kind, frame.body.clone()).await,
            None => Err(format!("{NO_GROUP} {} on this node", frame.group)),
        }
    }

    /// A snapshot's chunk (written to the group's reception file) or the
    /// snapshot itself (installed).
    async fn serve_snapshot(&self, raft: &FerryRaft, frame: &Frame) -> Result<Bytes, String> {
        let store = || {
            self.stores
                .read()
                .get(&frame.group)
                .cloned()
                .ok_or_else(|| format!("group {} takes no snapshot files", frame.group))
        };
        if frame.kind == KIND_SNAPSHOT_CHUNK {
            let (off, bytes) = wire::decode_chunk(frame.body.clone()).map_err(|e| e.to_string())?;
            let store = store()?;
            blocking(tokio::task::spawn_blocking(move || store.receive_chunk(off, &bytes)).await)?;
            return Ok(Bytes::new());
        }
        let (vote, meta, body) =
            wire::decode_snapshot(frame.body.clone()).map_err(|e| e.to_string())?;
        let data = match body {
            SnapshotBody::Inline(b) => SnapshotData::Inline(b),
            SnapshotBody::File { len } => {
                let store = store()?;
                let (path, file) =
                    blocking(tokio::task::spawn_blocking(move || store.received(len)).await)?;
                SnapshotData::File(SnapshotFileRef { path, len, file })
            }
        };
        let snap = Snapshot {
            meta,
            snapshot: Box::new(data),
        };
        let resp = raft
            .install_full_snapshot(vote, snap)
            .await
            .map_err(|e| e.to_string())?;
        Ok(wire::encode_snapshot_reply(&resp))
    }

    /// The instance of `group` (awake or hibernating).
    pub fn get(&self, group: u64) -> Option<Arc<RaftSlot>> {
        self.groups.read().get(&group).cloned()
    }

    /// The instance of `group`, woken if it hibernates.
    pub async fn awake(&self, group: u64) -> Option<RaftRef> {
        let slot = self.get(group)?;
        slot.raft().await
    }
}

/// A blocking task's result as a request's.
fn blocking<T>(
    r: Result<Result<T, ferry_raft::RaftLogError>, tokio::task::JoinError>,
) -> Result<T, String> {
    r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}

/// The answer frame to `req`: its reply kind, or an error with `reason`.
pub(crate) fn answer(req: &Frame, result: Result<Bytes, String>) -> Frame {
    match result {
        Ok(body) => Frame {
            kind: req.kind | KIND_REPLY,
            corr: req.corr,
            group: req.group,
            body,
        },
        Err(reason) => Frame {
            kind: KIND_ERROR,
            corr: req.corr,
            group: req.group,
            body: Bytes::from(reason),
        },
    }
}

/// Serves a Raft request for one of this node's groups.
pub(crate) async fn serve(raft: &FerryRaft, kind: u8, body: Bytes) -> Result<Bytes, String> {
    match kind {
        KIND_APPEND => {
            let req = wire::decode_append(body).map_err(|e| e.to_string())?;
            let resp = raft.append_entries(req).await.map_err(|e| e.to_string())?;
            Ok(wire::encode_append_reply(&resp))
        }
        KIND_VOTE => {
            let req = wire::decode_vote_req(body).map_err(|e| e.to_string())?;
            let resp = raft.vote(req).await.map_err(|e| e.to_string())?;
            Ok(wire::encode_vote_reply(&resp))
        }
        other => Err(format!("unknown request kind {other}")),
    }
}

/// An error answer starting with this names the leader's cluster address.
pub(crate) const REDIRECT: &str = "redirect ";

/// A proposal forwarded to this node as the group's leader (the
/// metadata group's, or a stream's; a queue group's goes through
/// `admission::propose_forwarded`): its commands as one entry. Answers
/// `index u64 | the applied result`, or (not the leader) `redirect ADDR`
/// / why not.
async fn propose(raft: &FerryRaft, body: Bytes) -> Result<Bytes, String> {
    let cmds = wire::decode_commands(body).map_err(|e| e.to_string())?;
    match raft.client_write(ferry_raft::Batch::new(cmds)).await {
        Ok(r) => {
            let mut b = Vec::with_capacity(8 + r.data.0.len());
            b.extend_from_slice(&r.log_id.index.to_le_bytes());
            b.extend_from_slice(&r.data.0);
            Ok(Bytes::from(b))
        }
        Err(e) => Err(write_error(e)),
    }
}

/// A forwarded proposal's error answer: `redirect ADDR` or `no leader
/// yet` when this node does not lead (surely not taken: the forwarder
/// sends it again), else why it failed.
pub(crate) fn write_error(
    e: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, BasicNode>>,
) -> String {
    use openraft::error::{ClientWriteError, RaftError};
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_node {
            Some(n) => format!("{REDIRECT}{}", n.addr),
            None => "no leader yet".into(),
        },
        e => e.to_string(),
    }
}

impl Handler for Arc<RaftGroups> {
    fn handle(&self, from: &crate::Identity, frame: Frame) -> Answer {
        let groups = self.clone();
        let from = from.id;
        Box::pin(async move {
            let result = groups.serve_frame(from, &frame).await;
            answer(&frame, result)
        })
    }
}

/// Makes an instance quiescent (`elector`): no tick, no heartbeats, no
/// election timer. With no heartbeat and no election timer the tick would
/// only step down a leader that removed itself from the group, which
/// queue groups never do.
pub(crate) fn quiesce(raft: &FerryRaft) {
    raft.runtime_config().tick(false);
    raft.runtime_config().heartbeat(false);
    raft.runtime_config().elect(false);
}

/// Stands for election in `raft`'s group now (a rebalance's request). The
/// voters grant it once they have not heard from the current leader for
/// the lease (an idle quiescent group's: at once). A hibernating group's
/// voters, woken by the vote request, refuse it for the lease from their
/// start: this node stands once more after that unless it leads by then.
pub async fn stand(raft: &FerryRaft) -> Result<Bytes, String> {
    raft.trigger().elect().await.map_err(|e| e.to_string())?;
    let again = raft.clone();
    tokio::spawn(async move {
        tokio::time::sleep(AFTER_WAKE).await;
        let leads = {
            let m = again.metrics();
            let m = m.borrow();
            m.current_leader == Some(m.id)
        };
        if !leads {
            let _ = again.trigger().elect().await;
        }
    });
    Ok(Bytes::new())
}

/// A woken instance's lease (openraft's election timeout, from its
/// start), and a little more.
const AFTER_WAKE: Duration = Duration::from_millis(crate::group::QUEUE_LEASE_MS.1 + 100);

//! A replicated stream's Raft group on this node: the group's Raft
//! instance over its log, the stream replica as its state machine
//! (`ferry_raft::stream::StreamMachine`) and the proposer its publishes
//! go through (the queue groups' [`run_proposer`]: batched in order on the
//! leader, forwarded from a follower).
//!
//! Unlike a queue, every replica of a stream serves its own consumers from
//! its own copy (committed records only), so nothing here watches the
//! leadership: it only decides where proposals go. Every replica also
//! serves the reads of nodes outside the group (`stream_served`; its
//! replica is registered with the node's groups here). Quiescent like the
//! queue groups (the node's elector elects their leaders). Snapshots are
//! the machine's checkpoints, triggered every `snapshot_bytes` of records;
//! a lagging replica receives the leader's as a file (`SnapshotStore`'s
//! reception).

use crate::error::NodeError;
use crate::group::{snapshot_when_due, GroupConfig};
use crate::leadership::Leadership;
use crate::link::Links;
use crate::network::{FerryRaft, GroupNetwork, RaftGroups};
use crate::node::{count_changes, stats_of, GroupStats, RaftCounters};
use crate::proposer::{run_proposer, GroupProposer};
use crate::rebuild::watch_learner;
use crate::slot::{Awake, RaftSlot};
use ferry_queue::queue::Proposer;
use ferry_queue::stream::Stream;
use ferry_raft::snapshot::SnapshotStore;
use ferry_raft::stream::StreamMachine;
use ferry_raft::{NodeId, RaftLog};
use openraft::Raft;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// This node's replica of a replicated stream's group.
pub struct StreamGroup {
    raft: FerryRaft,
    log: RaftLog,
    slot: Arc<RaftSlot>,
    stream: Arc<Stream>,
    groups: Arc<RaftGroups>,
    id: u64,
    me: NodeId,
    counters: Arc<RaftCounters>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for StreamGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamGroup")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl StreamGroup {
    /// Starts this node's replica of group `id`: its Raft instance over
    /// `log`, applying to `stream`; also returns the proposer the stream
    /// publishes through (the caller binds it). The caller initializes the
    /// group's membership.
    pub async fn start(
        id: u64,
        me: NodeId,
        config: &GroupConfig,
        links: Arc<Links>,
        groups: Arc<RaftGroups>,
        log: RaftLog,
        stream: Arc<Stream>,
    ) -> Result<(Self, Arc<dyn Proposer>), NodeError> {
        let (proposer, proposals) = GroupProposer::new();
        let log_for_stats = log.clone();
        let (io, dir) = (log.io().clone(), log.dir().to_path_buf());
        // Receives a leader's snapshot file (chunks) when this replica lags
        // behind the leader's cut log.
        let store = tokio::task::spawn_blocking(move || SnapshotStore::open(io, &dir))
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?
            .map_err(|e| NodeError::Raft(e.to_string()))?
            .0;
        let sm = StreamMachine::new(
            stream.clone(),
            log.io().clone(),
            log.dir(),
            config.snapshot_bytes,
        );
        let due = sm.due();
        let raft = Raft::new(
            me,
            config.raft.clone(),
            GroupNetwork::new(id, links.clone()),
            log.clone(),
            sm,
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        let counters = Arc::new(RaftCounters::default());
        let changes = crate::slot::changes();
        let tasks = vec![
            tokio::spawn(count_changes(
                raft.clone(),
                counters.clone(),
                Some(changes.clone()),
            )),
            tokio::spawn(watch_learner(raft.clone(), links.clone(), id, me)),
            tokio::spawn(snapshot_when_due(raft.clone(), due)),
        ];
        let slot = RaftSlot::fixed(
            id,
            changes,
            Awake {
                raft: raft.clone(),
                tasks,
            },
        );
        groups.insert_slot(id, slot.clone());
        groups.insert_store(id, store);
        groups.insert_stream(id, stream.clone());
        groups.set_quiescent(id);
        let lead = Leadership::Member {
            slot: slot.clone(),
            me,
        };
        let tasks = vec![tokio::spawn(run_proposer(
            lead,
            links.clone(),
            id,
            proposals,
            (None, Some(log)),
            false,
        ))];
        let group = StreamGroup {
            raft,
            log: log_for_stats,
            slot,
            stream,
            groups,
            id,
            me,
            counters,
            tasks: Mutex::new(tasks),
        };
        Ok((group, Arc::new(proposer)))
    }

    /// The group's Raft instance.
    pub fn raft(&self) -> &FerryRaft {
        &self.raft
    }

    /// The group's Raft instance as the node's other parts reach it (a
    /// stream's never hibernates).
    pub fn slot(&self) -> &Arc<RaftSlot> {
        &self.slot
    }

    /// The group's figures for Prometheus (label: its id in hex), for
    /// the stream `vhost`/`name`.
    pub fn stats(&self, vhost: &str) -> GroupStats {
        let mut s = stats_of(
            format!("{:016x}", self.id),
            &self.raft.metrics().borrow(),
            self.me,
            (&self.counters, &self.log),
        );
        s.queue = Some((vhost.to_owned(), self.stream.name().to_string()));
        s
    }

    /// Stops this replica: it leaves the group's Raft.
    pub async fn shutdown(&self) {
        let slot = self.groups.remove(self.id);
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        match slot {
            Some(s) => s.stop().await,
            None => {
                let _ = self.raft.shutdown().await;
            }
        }
    }
}

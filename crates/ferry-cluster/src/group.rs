//! A replicated queue's Raft group on this node: the group's Raft
//! instance over its log, the queue replica as its state machine
//! (`ferry_raft::replica::QueueMachine`), the proposer the queue hands its
//! commands to (`proposer`), and the watch that makes the replica
//! serve while this node leads the group.
//!
//! Proposals keep their order and are applied once (`proposer`: batched
//! into numbered entries, a batch in doubt sent again). The replica serves only once it has applied
//! everything logged before its leadership began, so no message an old
//! leader's committed ack settled is delivered again.
//!
//! Consumers of this node's clients are served by the leader when this
//! node follows (`port`: a session with the leader), and the leader
//! serves the other nodes' consumers (`served`).

use crate::admission::Gate;
use crate::error::NodeError;
use crate::leadership::Leadership;
use crate::link::Links;
use crate::network::{quiesce, FerryRaft, GroupNetwork, RaftGroups};
use crate::node::{count_changes, stats_of, GroupStats, RaftCounters};
use crate::port::{run_forwarder, run_puller, FollowerPort};
use crate::proposer::{run_proposer, GroupProposer};
use crate::rebuild::watch_learner;
use crate::served::{Served, SESSION_TTL};
use crate::slot::{Awake, Changes, RaftRef, RaftSlot};
use ferry_queue::queue::{CommandLog, Proposer, Replica};
use ferry_raft::replica::{GroupLog, QueueMachine, SnapshotDue};
use ferry_raft::snapshot::SnapshotStore;
use ferry_raft::{NodeId, RaftLog};
use openraft::{Config, Raft, ServerState};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A queue group's openraft heartbeat interval (its tick task, disabled,
/// still wakes every 1.5 × this; heartbeats are off).
pub const QUEUE_TICK_MS: u64 = 300;
/// A queue group's election timeout range, ms: the lease after the last
/// word from a leader during which its followers refuse other candidates.
pub const QUEUE_LEASE_MS: (u64, u64) = (400, 500);

/// How this node runs its queue groups.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// openraft's settings (timers; snapshots are triggered by the group,
    /// `SnapshotPolicy::Never`, and the log is purged up to each).
    pub raft: Arc<Config>,
    /// Bytes of records applied since the last snapshot before the next
    /// one (and at least the records of the messages the queue holds).
    pub snapshot_bytes: u64,
    /// A queue group nobody used for this long hibernates (`slot`);
    /// None: never.
    pub hibernate_after: Option<Duration>,
}

/// openraft's settings of a queue group (from `base`, timers replaced):
/// quiescent, and the group triggers its snapshots itself; the log is
/// purged up to each (the snapshot holds the records the queue needs).
pub fn queue_raft_config(base: Config) -> Result<Arc<Config>, NodeError> {
    Config {
        cluster_name: "ferry-queue".into(),
        // Quiescent (`elector`): no tick, heartbeats or election timer;
        // the election timeout is the lease during which a voter that
        // heard the leader refuses another candidate.
        heartbeat_interval: QUEUE_TICK_MS,
        election_timeout_min: QUEUE_LEASE_MS.0,
        election_timeout_max: QUEUE_LEASE_MS.1,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..base
    }
    .validate()
    .map(Arc::new)
    .map_err(|e| NodeError::Raft(e.to_string()))
}

/// Triggers a snapshot each time the state machine says one is due, and
/// waits for it (a while at most: openraft skips a trigger while it
/// builds a snapshot) before the machine may ask again.
pub(crate) async fn snapshot_when_due(raft: FerryRaft, due: Arc<SnapshotDue>) {
    let mut metrics = raft.metrics();
    loop {
        due.wait().await;
        let before = metrics.borrow().snapshot;
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
        let built = metrics.wait_for(|m| m.snapshot != before);
        let _ = tokio::time::timeout(Duration::from_secs(5), built).await;
        due.rearm();
    }
}

/// This node's replica of a replicated queue's group.
pub struct QueueGroup {
    slot: Arc<RaftSlot>,
    replica: Replica,
    log: RaftLog,
    groups: Arc<RaftGroups>,
    id: u64,
    me: NodeId,
    counters: Arc<RaftCounters>,
    /// The tasks that run while the group hibernates too.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for QueueGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueGroup")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What a queue group's Raft instance is started from, the first time
/// and each time it wakes from hibernation: all of it outlives the
/// instance.
struct Instance {
    id: u64,
    me: NodeId,
    config: Arc<Config>,
    links: Arc<Links>,
    log: RaftLog,
    sm: QueueMachine,
    replica: Replica,
    serving: Arc<watch::Sender<bool>>,
    served: Arc<Served>,
    fence: watch::Receiver<bool>,
    counters: Arc<RaftCounters>,
    changes: Changes,
    due: Arc<SnapshotDue>,
}

impl Instance {
    /// Starts openraft's instance (quiescent) and the tasks that follow it.
    async fn start(self: Arc<Self>) -> Result<Awake, NodeError> {
        let raft = Raft::new(
            self.me,
            self.config.clone(),
            GroupNetwork::new(self.id, self.links.clone()),
            self.log.clone(),
            self.sm.clone(),
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        quiesce(&raft);
        // Its metrics start as openraft's defaults (no leader) until its
        // core reports: a leader that woke would look deposed to the
        // watchers and hand its consumers' messages out again.
        let _ = raft.metrics().changed().await;
        let tasks = vec![
            tokio::spawn(count_changes(
                raft.clone(),
                self.counters.clone(),
                Some(self.changes.clone()),
            )),
            tokio::spawn(watch_leadership(
                raft.clone(),
                (self.replica.clone(), self.serving.clone()),
                self.me,
                self.served.clone(),
                Some(self.fence.clone()),
            )),
            tokio::spawn(watch_learner(
                raft.clone(),
                self.links.clone(),
                self.id,
                self.me,
            )),
            tokio::spawn(snapshot_when_due(raft.clone(), self.due.clone())),
        ];
        Ok(Awake { raft, tasks })
    }

    /// Whether the group's own parts let it hibernate: no snapshot asked
    /// for or being built, not fenced.
    fn quiet(&self) -> bool {
        !self.due.pending() && !self.due.building() && !*self.fence.borrow()
    }
}

impl QueueGroup {
    /// Starts this node's replica of group `id`: its Raft instance over
    /// `log` (the group's log, also the queue's), the replica `open`
    /// builds (given the log to read and the proposer to write through),
    /// serving the group's requests from the other nodes through
    /// `groups`. The caller initializes the group's membership. With
    /// `config.hibernate_after`, the instance stops while the group is
    /// idle and starts again when something needs it (`slot`).
    pub async fn start(
        id: u64,
        me: NodeId,
        config: &GroupConfig,
        links: Arc<Links>,
        groups: Arc<RaftGroups>,
        log: RaftLog,
        open: impl FnOnce(Arc<dyn CommandLog>, Arc<dyn Proposer>) -> Replica,
    ) -> Result<Self, NodeError> {
        let (proposer, rx) = GroupProposer::new();
        let (io, dir) = (log.io().clone(), log.dir().to_path_buf());
        let (store, image) = tokio::task::spawn_blocking(move || SnapshotStore::open(io, &dir))
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        let replica = open(
            Arc::new(GroupLog::new(log.clone(), store.clone())),
            Arc::new(proposer),
        );
        let sm = QueueMachine::new(
            log.clone(),
            replica.clone(),
            store.clone(),
            image,
            config.snapshot_bytes,
        );
        // Served first: a forwarded proposal never finds the group
        // without its replica's decision (`admission`).
        let served = Served::new(replica.clone());
        groups.insert_served(id, served.clone());
        groups.insert_store(id, store);
        let (serving, serving_rx) = watch::channel(false);
        let counters = Arc::new(RaftCounters::default());
        let changes = crate::slot::changes();
        let instance = Arc::new(Instance {
            id,
            me,
            config: config.raft.clone(),
            links: links.clone(),
            log: log.clone(),
            due: sm.due(),
            sm,
            replica: replica.clone(),
            serving: Arc::new(serving),
            served: served.clone(),
            fence: groups.add_fence(id),
            counters: counters.clone(),
            changes: changes.clone(),
        });
        let awake = instance.clone().start().await?;
        let slot = match config.hibernate_after {
            Some(idle) => {
                let again = instance.clone();
                let (slept_log, slept_replica) = (log.clone(), replica.clone());
                let sleepy = crate::slot::Sleepy {
                    start: Box::new(move || Box::pin(again.clone().start())),
                    quiet: Box::new(move || instance.quiet()),
                    // What the log keeps for a running instance is read
                    // back from its files once it wakes; the queue's
                    // lists give back what a busy spell grew.
                    slept: Box::new(move || {
                        slept_log.release_memory();
                        slept_replica.release_memory();
                    }),
                    idle,
                };
                RaftSlot::sleepy(id, changes, awake, sleepy)
            }
            None => RaftSlot::fixed(id, changes, awake),
        };
        groups.insert_slot(id, slot.clone());
        let name = replica.queue().name().clone();
        let lead = Leadership::Member {
            slot: slot.clone(),
            me,
        };
        let (port, forwards) = FollowerPort::new(lead.clone(), links.clone(), id, name);
        replica.bind_leader(port.clone());
        let gate = Gate {
            replica: replica.clone(),
            serving: serving_rx,
        };
        let tasks = vec![
            tokio::spawn(run_proposer(
                lead,
                links,
                id,
                rx,
                (Some(gate), Some(log.clone())),
                true,
            )),
            tokio::spawn(run_puller(port.clone(), replica.clone())),
            tokio::spawn(run_forwarder(port, forwards)),
            tokio::spawn(reap(served)),
        ];
        Ok(QueueGroup {
            slot,
            replica,
            log,
            groups,
            id,
            me,
            counters,
            tasks: Mutex::new(tasks),
        })
    }

    /// The group's Raft instance here, awake or hibernating.
    pub fn slot(&self) -> &Arc<RaftSlot> {
        &self.slot
    }

    /// The group's Raft instance, woken if it hibernates (None once the
    /// group stopped here).
    pub async fn raft(&self) -> Option<RaftRef> {
        self.slot.raft().await
    }

    /// The queue replica.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The group's figures for Prometheus (label: its id in hex), for
    /// the queue `vhost`/`name`.
    pub fn stats(&self, vhost: &str) -> GroupStats {
        let mut s = self.slot.with_metrics(|m| {
            stats_of(
                format!("{:016x}", self.id),
                m,
                self.me,
                (&self.counters, &self.log),
            )
        });
        s.awake = self.slot.is_awake();
        s.hibernations = self.slot.sleeps();
        s.queue = Some((vhost.to_owned(), self.replica.queue().name().to_string()));
        s
    }

    /// Stops this replica: it stops serving and leaves the group's Raft.
    pub async fn shutdown(&self) {
        self.groups.remove(self.id);
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        self.slot.stop().await;
        self.replica.set_leader(false);
    }
}

/// Ends the followers' sessions nobody keeps alive (asleep while there
/// are none: an idle queue costs no timer).
async fn reap(served: Arc<Served>) {
    loop {
        served.any_session().await;
        tokio::time::sleep(SESSION_TTL / 4).await;
        served.reap();
    }
}

/// Makes the replica serve while this node leads the group — once it has
/// applied everything logged before its leadership began, and while the
/// elector does not fence it (cut off from a majority). On losing the
/// leadership, the followers' sessions end.
///
/// It watches the server metrics (they change with the leadership only;
/// openraft sends the full metrics at every heartbeat round) and, while
/// catching up as a new leader, the data metrics.
async fn watch_leadership(
    raft: FerryRaft,
    (replica, serving): (Replica, Arc<watch::Sender<bool>>),
    me: NodeId,
    served: Arc<Served>,
    fence: Option<tokio::sync::watch::Receiver<bool>>,
) {
    let mut server = raft.server_metrics();
    // A group without a fence is never fenced (the sender stays here).
    let (_keep, unfenced) = tokio::sync::watch::channel(false);
    let mut fence = fence.unwrap_or(unfenced);
    'watch: loop {
        let leads = {
            let m = server.borrow_and_update();
            m.current_leader == Some(me) && m.state == ServerState::Leader
        } && !*fence.borrow_and_update();
        if leads {
            // Serve once everything logged before the leadership began is
            // applied (the leader's own first entry included).
            // (From the data metrics: openraft publishes them before the
            // server metrics that woke this, the full ones after.)
            let from = raft.data_metrics().borrow().last_log.map_or(0, |l| l.index);
            let mut data = raft.data_metrics();
            while data.borrow_and_update().last_applied.map_or(0, |l| l.index) < from {
                tokio::select! {
                    r = data.changed() => if r.is_err() { break 'watch },
                    r = server.changed() => match r {
                        Ok(()) => continue 'watch,
                        Err(_) => break 'watch,
                    },
                    r = fence.changed() => match r {
                        Ok(()) => continue 'watch,
                        Err(_) => break 'watch,
                    },
                }
            }
            replica.set_leader(true);
            serving.send_if_modified(|s| !std::mem::replace(s, true));
        } else {
            replica.set_leader(false);
            serving.send_if_modified(|s| std::mem::replace(s, false));
            served.end_all();
        }
        let changed = tokio::select! {
            r = server.changed() => r,
            r = fence.changed() => r,
        };
        if changed.is_err() {
            break;
        }
    }
    replica.set_leader(false);
    serving.send_replace(false);
    served.end_all();
}

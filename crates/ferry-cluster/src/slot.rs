//! A group's Raft instance as the rest of the node reaches it: awake (an
//! openraft instance with its tasks) or, for an idle queue group, asleep
//! — hibernated: the instance and its tasks stopped, the group's log,
//! state machine, replica and sessions kept — and started again from them
//! (openraft's restart path, which every node restart takes) by the first
//! thing that needs it: a frame from another node, a proposal, the
//! elector ([`RaftSlot::raft`]).
//!
//! A group sleeps only when nothing is in flight: no one holds a
//! [`RaftRef`], nothing was asked of it for the idle time, everything it
//! logged is applied, a leader's followers have all of it, and no
//! membership change or snapshot is under way (`may_sleep`, and the
//! group's own check). Asleep, its last metrics stand for it (the
//! elector, the figures, the leader guesses read them); a leader that
//! restarts with its committed vote leads again in the same term.
//!
//! Lock order: `waking` (async, held across a start or a stop) before
//! `inner` (never held across an await).

use crate::error::NodeError;
use crate::network::FerryRaft;
use ferry_raft::NodeId;
use openraft::{BasicNode, RaftMetrics, ServerState, StoredMembership};
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A group's metrics.
pub type Metrics = RaftMetrics<NodeId, BasicNode>;

/// A started instance: openraft's and the tasks that follow it.
pub struct Awake {
    /// The instance.
    pub raft: FerryRaft,
    /// Tasks that end with it (aborted when it stops).
    pub tasks: Vec<JoinHandle<()>>,
}

/// Starts a group's instance again (from its kept log and state
/// machine).
pub type Start =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Awake, NodeError>> + Send>> + Send + Sync>;

/// Whether the group's own parts let it sleep now (no snapshot being
/// built, not fenced, ...).
pub type Quiet = Box<dyn Fn() -> bool + Send + Sync>;

/// Called once the instance stopped for a sleep: the group gives back
/// what only a running instance needs (its log's tail cache and buffers)
/// and the spare room its queue's lists grew.
pub type Slept = Box<dyn Fn() + Send + Sync>;

/// How a group that sleeps sleeps and wakes.
pub struct Sleepy {
    /// Starts the instance again.
    pub start: Start,
    /// Whether the group's own parts let it sleep now.
    pub quiet: Quiet,
    /// After each sleep began.
    pub slept: Slept,
    /// Unused this long, it sleeps.
    pub idle: Duration,
}

struct Inner {
    raft: Option<FerryRaft>,
    tasks: Vec<JoinHandle<()>>,
    /// The metrics it had when it went to sleep.
    frozen: Option<Arc<Metrics>>,
    /// Users holding a [`RaftRef`].
    users: usize,
    stopped: bool,
}

/// One group's Raft instance on this node, awake or asleep.
pub struct RaftSlot {
    group: u64,
    inner: Mutex<Inner>,
    waking: tokio::sync::Mutex<()>,
    /// How it starts again, whether its parts let it sleep, and after how
    /// long unused; None: the group never sleeps (streams, the metadata
    /// group).
    start: Option<Sleepy>,
    /// Bumped when the leadership may have moved (and at each start).
    changes: Changes,
    epoch: Instant,
    /// Last use, ms since `epoch`.
    used: AtomicU64,
    sleeps: AtomicU64,
}

impl std::fmt::Debug for RaftSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftSlot")
            .field("group", &self.group)
            .field("awake", &self.is_awake())
            .finish()
    }
}

/// Bumped when a group's leadership may have moved: by the task that
/// follows its instance's server metrics (`node::count_changes`), and as
/// it starts again.
pub type Changes = Arc<watch::Sender<u64>>;

/// A new [`Changes`].
pub fn changes() -> Changes {
    Arc::new(watch::Sender::new(0))
}

/// A use of an awake instance: the group does not sleep while one is
/// held.
pub struct RaftRef {
    raft: FerryRaft,
    slot: Arc<RaftSlot>,
}

impl std::ops::Deref for RaftRef {
    type Target = FerryRaft;
    fn deref(&self) -> &FerryRaft {
        &self.raft
    }
}

impl Drop for RaftRef {
    fn drop(&mut self) {
        self.slot.touch();
        let mut i = self.slot.inner.lock();
        i.users = i.users.saturating_sub(1);
    }
}

impl RaftSlot {
    fn with(group: u64, changes: Changes, awake: Awake, start: Option<Sleepy>) -> Arc<Self> {
        let slot = Arc::new(RaftSlot {
            group,
            inner: Mutex::new(Inner {
                raft: Some(awake.raft),
                tasks: awake.tasks,
                frozen: None,
                users: 0,
                stopped: false,
            }),
            waking: tokio::sync::Mutex::new(()),
            start,
            changes,
            epoch: Instant::now(),
            used: AtomicU64::new(0),
            sleeps: AtomicU64::new(0),
        });
        slot.touch();
        slot
    }

    /// A group that never sleeps (its tasks bump `changes`).
    pub fn fixed(group: u64, changes: Changes, awake: Awake) -> Arc<Self> {
        Self::with(group, changes, awake, None)
    }

    /// A group that sleeps when unused for `sleepy.idle`.
    pub fn sleepy(group: u64, changes: Changes, awake: Awake, sleepy: Sleepy) -> Arc<Self> {
        Self::with(group, changes, awake, Some(sleepy))
    }

    /// The group's id.
    pub fn group(&self) -> u64 {
        self.group
    }

    /// Records a use now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.used.fetch_max(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.used.load(Ordering::Relaxed)))
    }

    /// Whether the instance runs now.
    pub fn is_awake(&self) -> bool {
        self.inner.lock().raft.is_some()
    }

    /// Times the group went to sleep on this node.
    pub fn sleeps(&self) -> u64 {
        self.sleeps.load(Ordering::Relaxed)
    }

    /// The instance if it runs now (not started by this).
    pub fn awake(self: &Arc<Self>) -> Option<RaftRef> {
        let mut i = self.inner.lock();
        let raft = i.raft.clone()?;
        i.users += 1;
        drop(i);
        // (Its drop records the use: the group cannot sleep while held.)
        Some(RaftRef {
            raft,
            slot: self.clone(),
        })
    }

    /// The instance, started again if it sleeps; None once the group
    /// stopped here (or cannot start: logged).
    pub async fn raft(self: &Arc<Self>) -> Option<RaftRef> {
        if let Some(r) = self.awake() {
            return Some(r);
        }
        let _w = self.waking.lock().await;
        if let Some(r) = self.awake() {
            return Some(r);
        }
        let start = &self.start.as_ref()?.start;
        if self.inner.lock().stopped {
            return None;
        }
        match start().await {
            Ok(a) => {
                {
                    let mut i = self.inner.lock();
                    i.raft = Some(a.raft);
                    i.tasks = a.tasks;
                    i.frozen = None;
                }
                self.changes.send_modify(|n| *n += 1);
                tracing::debug!(group = self.group, "a hibernated group woke");
                self.awake()
            }
            Err(e) => {
                tracing::warn!(group = self.group, error = %e, "a hibernated group cannot start");
                None
            }
        }
    }

    /// The running instance, or the metrics it had when it went to sleep.
    fn instance_or_frozen(&self) -> (Option<FerryRaft>, Option<Arc<Metrics>>) {
        let i = self.inner.lock();
        (i.raft.clone(), i.frozen.clone())
    }

    /// Calls `f` with the group's metrics: the instance's, or the last it
    /// had while it sleeps.
    pub fn with_metrics<R>(&self, f: impl FnOnce(&Metrics) -> R) -> R {
        match self.instance_or_frozen() {
            (Some(r), _) => f(&r.metrics().borrow()),
            (None, Some(m)) => f(&m),
            (None, None) => f(&Metrics::new_initial(0)),
        }
    }

    /// Calls `f` with the leader and the membership as this node's Raft
    /// knows them, from its *server* metrics: the source whose changes
    /// bump [`changes`](Self::changes). openraft publishes those before
    /// its full metrics, so a reader woken by a change that read the full
    /// ones could still see the old leader, and wait for a change that
    /// already came (a follower's consumer then never got its session).
    /// While the group sleeps: the last metrics it had.
    pub fn with_leader<R>(
        &self,
        f: impl FnOnce(Option<NodeId>, &StoredMembership<NodeId, BasicNode>) -> R,
    ) -> R {
        match self.instance_or_frozen() {
            (Some(r), _) => {
                let rx = r.server_metrics();
                let m = rx.borrow();
                f(m.current_leader, &m.membership_config)
            }
            (None, Some(m)) => f(m.current_leader, &m.membership_config),
            (None, None) => f(None, &StoredMembership::default()),
        }
    }

    /// A receiver that wakes when the leadership may have moved.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether the group may hibernate now as far as can be told without
    /// waiting: nobody used it for its idle time and everything it holds
    /// is settled (then [`RaftSlot::sleep_if_idle`] puts it to sleep).
    pub fn drowsy(&self, me: NodeId) -> bool {
        let Some(Sleepy { quiet, idle, .. }) = self.start.as_ref() else {
            return false;
        };
        if self.idle() < *idle {
            return false;
        }
        let raft = self.inner.lock().raft.clone();
        raft.is_some_and(|r| may_sleep(&r.metrics().borrow(), me)) && quiet()
    }

    /// Puts the group to sleep if it may: it sleeps, nobody used it for
    /// its idle time, and everything it holds is settled. True if it
    /// slept.
    pub async fn sleep_if_idle(self: &Arc<Self>, me: NodeId) -> bool {
        let Some(Sleepy {
            quiet, idle, slept, ..
        }) = self.start.as_ref()
        else {
            return false;
        };
        let idle = *idle;
        if !self.drowsy(me) {
            return false;
        }
        let Ok(_w) = self.waking.try_lock() else {
            return false;
        };
        let taken = {
            let mut i = self.inner.lock();
            let settled = i.users == 0
                && self.idle() >= idle
                && i.raft
                    .as_ref()
                    .is_some_and(|r| may_sleep(&r.metrics().borrow(), me))
                && quiet();
            if settled {
                self.sleeps.fetch_add(1, Ordering::Relaxed);
                let raft = i.raft.take();
                i.frozen = raft.as_ref().map(|r| {
                    // Who leads as the server metrics say (`with_leader`).
                    let mut m = r.metrics().borrow().clone();
                    let s = r.server_metrics().borrow().clone();
                    m.current_leader = s.current_leader;
                    m.membership_config = s.membership_config;
                    Arc::new(m)
                });
                raft.map(|r| (r, std::mem::take(&mut i.tasks)))
            } else {
                None
            }
        };
        let Some((raft, tasks)) = taken else {
            return false;
        };
        for t in tasks {
            t.abort();
        }
        let _ = raft.shutdown().await;
        slept();
        tracing::debug!(group = self.group, "an idle group hibernates");
        true
    }

    /// Stops the group here for good.
    pub async fn stop(&self) {
        let _w = self.waking.lock().await;
        let (raft, tasks) = {
            let mut i = self.inner.lock();
            i.stopped = true;
            (i.raft.take(), std::mem::take(&mut i.tasks))
        };
        for t in tasks {
            t.abort();
        }
        if let Some(r) = raft {
            let _ = r.shutdown().await;
        }
    }
}

/// Whether Raft's side of a group lets it sleep: a leader or a follower
/// that knows its leader, everything logged applied, a leader's voters
/// and learners all holding its whole log, no membership change under
/// way.
pub(crate) fn may_sleep(m: &Metrics, me: NodeId) -> bool {
    let last = m.last_log_index;
    let applied = m.last_applied.map(|l| l.index);
    if applied != last || m.membership_config.membership().get_joint_config().len() != 1 {
        return false;
    }
    match m.state {
        ServerState::Leader => {
            m.current_leader == Some(me)
                && m.replication.as_ref().is_some_and(|r| {
                    r.iter()
                        .all(|(id, matched)| *id == me || matched.map(|l| l.index) == last)
                })
        }
        ServerState::Follower => m.current_leader.is_some_and(|l| l != me),
        _ => false,
    }
}

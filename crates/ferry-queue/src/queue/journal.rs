//! A queue's command log as the running queue uses it: appending a
//! command's record and applying it (`commit`, the step between deciding
//! and executing, see `inner`), reading bodies back (delivery, dead
//! letters, refilling the in-memory window from a spilled backlog,
//! sizing a backlog), segment cleanup once enough messages left, the
//! confirm waiters its fsyncs release (`crate::syncer`), and replay at
//! open.
//!
//! A replicated queue's journal (`Store::Replicated`, see `replica`)
//! proposes instead of appending — the command is applied once committed,
//! through `Queue::apply_committed` — and reads its records back from its
//! group's log; it has no file of its own to sync or clean up.
//!
//! Lives under the queue's `inner` lock. The one call out is joining a
//! durability round after a cleanup (`crate::syncer::schedule`), which
//! takes no queue lock.

use super::apply::{apply, replay_record, ApplyConfig};
use super::body_cache::BodyCache;
use super::command::Command;
use super::effects::Effects;
use super::queue::Queue;
use super::record::{self, Record};
use super::replica::{CommandLog, ProposeDone, Proposer};
use super::sinks::ConfirmToken;
use super::state::{Entry, QueueState, Spill};
use crate::error::{CoreError, Result};
use crate::syncer::LogParts;
use bytes::Bytes;
use ferry_log::{Log, RecordPos};
use ferry_model::message::Message;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};

/// Largest encode buffer a queue keeps between publishes.
const SCRATCH_KEEP: usize = 1 << 20;

/// Removals between two segment cleanups.
const GC_EVERY: usize = 4096;

/// The log, its encode buffer, cleanup counter and confirm waiters.
#[derive(Debug)]
pub(super) struct Journal {
    store: Store,
    scratch: Vec<u8>,
    settles_since_gc: usize,
    /// Confirms owed once the log is durable up to their index.
    waiters: VecDeque<(u64, ConfirmToken)>,
    /// The queue, to join a durability round after a cleanup.
    owner: Weak<Queue>,
}

/// Where the records are.
// The local log is the hot variant (every publish appends to it): kept
// inline rather than boxed behind a pointer for the rarer replicated one.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Store {
    /// The queue's own log.
    Local(Log),
    /// A replicated queue: proposed to its group, read from its log.
    Replicated {
        log: Arc<dyn CommandLog>,
        proposer: Arc<dyn Proposer>,
    },
}

/// What `commit` did.
#[derive(Debug)]
pub(super) enum Logged {
    /// Appended and applied: where the record is, and the effects.
    Applied(RecordPos, Effects),
    /// Proposed to the queue's group: applied once committed.
    Proposed,
}

impl Logged {
    /// The effects of an applied command (none yet for a proposed one).
    pub(super) fn effects(self) -> Effects {
        match self {
            Logged::Applied(_, fx) => fx,
            Logged::Proposed => Effects::default(),
        }
    }
}

impl Journal {
    /// The journal of an opened (and replayed) log.
    pub(super) fn new(log: Log, owner: Weak<Queue>) -> Self {
        Journal {
            store: Store::Local(log),
            scratch: Vec::new(),
            settles_since_gc: 0,
            waiters: VecDeque::new(),
            owner,
        }
    }

    /// The state `log` describes: each record through
    /// `apply::replay_record`, the one apply path.
    pub(super) fn replay(log: &Log, levels: usize, track_body: bool) -> Result<QueueState> {
        let mut state = QueueState::for_replay(levels, track_body);
        for item in log.reader(log.first_index()) {
            let (pos, rec) = item?;
            let record = record::decode(rec.payload)?;
            replay_record(&mut state, pos, &record);
        }
        state.end_replay();
        Ok(state)
    }

    /// The journal of a replicated queue (see `replica`).
    pub(super) fn replicated(
        log: Arc<dyn CommandLog>,
        proposer: Arc<dyn Proposer>,
        owner: Weak<Queue>,
    ) -> Self {
        Journal {
            store: Store::Replicated { log, proposer },
            scratch: Vec::new(),
            settles_since_gc: 0,
            waiters: VecDeque::new(),
            owner,
        }
    }

    /// Whether commands are proposed to a group rather than appended.
    pub(super) fn is_replicated(&self) -> bool {
        matches!(self.store, Store::Replicated { .. })
    }

    /// What the durability round works on (`crate::syncer::LogOwner`):
    /// nothing for a replicated queue (its group's log is synced).
    pub(super) fn log_parts(&mut self) -> Option<LogParts<'_>> {
        match &mut self.store {
            Store::Local(log) => Some(LogParts {
                log,
                waiters: &mut self.waiters,
            }),
            Store::Replicated { .. } => None,
        }
    }

    /// Proposes `cmd` to a replicated queue's group with `done` (the
    /// publisher's confirm, for an Enqueue).
    pub(super) fn propose(&mut self, cmd: &Command, done: Option<ProposeDone>) -> Result<()> {
        let Store::Replicated { proposer, .. } = &self.store else {
            return Err(CoreError::Corrupt("proposing on a local queue".into()));
        };
        let mut b = Vec::new();
        cmd.encode(&mut b)?;
        proposer.propose(vec![Bytes::from(b)], done);
        Ok(())
    }

    /// Owes `token` a confirm once the record at `index` is durable.
    #[inline]
    pub(super) fn wait_for_sync(&mut self, index: u64, token: ConfirmToken) {
        self.waiters.push_back((index, token));
    }

    /// Takes every confirm owed (the queue is deleted).
    pub(super) fn take_waiters(&mut self) -> Vec<ConfirmToken> {
        self.waiters.drain(..).map(|(_, t)| t).collect()
    }

    /// Logs `cmd` and applies it to `state`. Returns where its record is
    /// and its effects; on an append error nothing changed.
    #[inline]
    pub(super) fn commit(
        &mut self,
        state: &mut QueueState,
        cfg: ApplyConfig,
        cmd: &Command,
    ) -> Result<Logged> {
        let log = match &mut self.store {
            Store::Local(log) => log,
            Store::Replicated { .. } => {
                self.propose(cmd, None)?;
                return Ok(Logged::Proposed);
            }
        };
        self.scratch.clear();
        cmd.encode(&mut self.scratch)?;
        let pos = log.append(&self.scratch)?;
        if self.scratch.capacity() > SCRATCH_KEEP {
            // One huge message must not pin its size in memory forever.
            self.scratch = Vec::new();
        }
        let fx = apply(state, pos, cmd, cfg);
        Ok(Logged::Applied(pos, fx))
    }

    /// The payload of the record at `pos`.
    fn read(&self, pos: &RecordPos) -> Result<Bytes> {
        match &self.store {
            Store::Local(log) => Ok(log.read(pos)?.payload),
            Store::Replicated { log, .. } => log.read(pos),
        }
    }

    /// The records from index `from` on, with their positions, until `f`
    /// says stop.
    fn scan(&self, from: u64, f: &mut dyn FnMut(RecordPos, Bytes) -> Result<bool>) -> Result<()> {
        match &self.store {
            Store::Local(log) => {
                for item in log.reader(from) {
                    let (pos, rec) = item?;
                    if !f(pos, rec.payload)? {
                        break;
                    }
                }
                Ok(())
            }
            Store::Replicated { log, .. } => log.scan(from, f),
        }
    }

    /// The message of `e`: its cached body, else read from its record.
    pub(super) fn load(&mut self, e: &Entry, queue: &str) -> Result<Arc<Message>> {
        if let Some(m) = &e.cached {
            return Ok(m.clone());
        }
        match record::decode(self.read(&e.pos())?)? {
            Record::Enqueue { msg, .. } => Ok(Arc::new(msg)),
            _ => Err(CoreError::Corrupt(format!(
                "record {} of queue '{queue}' is not an enqueue",
                e.id
            ))),
        }
    }

    /// Loads the next part of the head level's spilled backlog back into
    /// memory (records of other levels in its range are skipped), caching
    /// bodies while `cache_ok` and the node's budget allow.
    pub(super) fn refill(
        &mut self,
        state: &mut QueueState,
        cache: &mut BodyCache,
        cache_ok: bool,
    ) -> Result<()> {
        let Some((level, sp, want)) = state.refill_target() else {
            return Ok(());
        };
        let levels = state.levels();
        let mut loaded = 0;
        let mut next = sp.from;
        self.scan(sp.from, &mut |pos, payload| {
            if pos.index >= sp.to || loaded >= want {
                next = pos.index;
                return Ok(false);
            }
            next = pos.index + 1;
            // A held message (`not_before`) lives in the waiting set,
            // never in a spilled range.
            if let Record::Enqueue {
                msg: m,
                expires_at,
                priority,
                not_before: None,
            } = record::decode(payload)?
            {
                let p = priority.unwrap_or(0);
                if levels > 1 && usize::from(p).min(levels - 1) != level {
                    return Ok(true);
                }
                let cached = (cache_ok && cache.try_add(pos.len)).then(|| Arc::new(m.clone()));
                let body = u32::try_from(m.body.len()).unwrap_or(u32::MAX);
                let e = Entry::new(pos, m.persistent, cached).with_priority(p);
                state.refill_push(e, expires_at, body);
                loaded += 1;
            }
            Ok(true)
        })?;
        state.refill_advance(level, next);
        Ok(())
    }

    /// The body bytes of a spilled range of `level` (records of other
    /// levels skipped): one sequential read of every record in the range,
    /// so costs I/O proportional to the backlog beyond the window. Runs
    /// once per queue, when a policy first gives it `max-length-bytes`;
    /// policy changes run on the blocking pool, never on an async worker.
    pub(super) fn spilled_body(&self, levels: usize, level: usize, sp: Spill) -> Result<u64> {
        let mut body = 0u64;
        self.scan(sp.from, &mut |pos, payload| {
            if pos.index >= sp.to {
                return Ok(false);
            }
            if let Record::Enqueue {
                msg,
                priority,
                not_before: None,
                ..
            } = record::decode(payload)?
            {
                let p = usize::from(priority.unwrap_or(0));
                if levels == 1 || p.min(levels - 1) == level {
                    body += u64::try_from(msg.body.len()).unwrap_or(u64::MAX);
                }
            }
            Ok(true)
        })?;
        Ok(body)
    }

    /// Counts `n` messages that left for good; every `GC_EVERY` the
    /// segments holding only settled messages are removed.
    pub(super) fn count_settles(&mut self, n: usize, state: &QueueState, queue: &str) {
        self.settles_since_gc += n;
        if self.settles_since_gc >= GC_EVERY {
            self.settles_since_gc = 0;
            self.gc_segments(state, queue);
            // The log removes only fsynced segments; a queue that never
            // needs a sync for confirms (transient traffic) gets one here
            // so its settled segments can go.
            if let Some(q) = self.owner.upgrade() {
                crate::syncer::schedule(&*q);
            }
        }
    }

    /// Removes log segments that hold only settled messages (a
    /// replicated queue's group log is cut by its snapshots instead).
    pub(super) fn gc_segments(&mut self, state: &QueueState, queue: &str) {
        let Store::Local(log) = &mut self.store else {
            return;
        };
        let live = state.min_live_id().unwrap_or_else(|| log.next_index());
        if let Err(e) = log.purge_before(live) {
            tracing::warn!(queue = %queue, error = %e, "segment cleanup failed");
        }
    }

    /// The index the next record of a local queue gets; for a replicated
    /// one, an index past every record proposed so far is not known here:
    /// None.
    pub(super) fn next_index(&self) -> Option<u64> {
        match &self.store {
            Store::Local(log) => Some(log.next_index()),
            Store::Replicated { .. } => None,
        }
    }
}

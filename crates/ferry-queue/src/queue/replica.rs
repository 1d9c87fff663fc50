//! A replicated queue's seams: where its commands go ([`Proposer`]: the
//! queue's Raft group) and where its records are read back
//! ([`CommandLog`]: the group's Raft log, which is the queue's log — a
//! message's id is the ferry-log index of its Enqueue record there, the
//! same on every replica, and nothing is written twice).
//!
//! A replicated queue decides as a local one does (facts, ids, what to
//! drop), but instead of appending a record and applying it at once it
//! proposes the record; every replica — the leader included — applies it
//! once it is committed, through `Queue::apply_committed` and the one
//! apply path (`apply::apply`). So consumers only ever see committed
//! messages, and a publisher's confirm goes out once its Enqueue is
//! committed (on a majority, fsynced) and applied on the leader. A length
//! limit with a reject-publish overflow is the one decision a replica
//! does not take where a publish arrives: the leader takes it when it
//! proposes the Enqueue (`admission`).
//!
//! ferry-queue does not know Raft: the crate that runs the group
//! implements these traits and calls `apply_committed` from the group's
//! state machine.

use crate::error::Result;
use bytes::Bytes;
use ferry_log::RecordPos;

/// Called once a proposal's fate is known: `Ok` once its commands are
/// committed and applied on this replica, `Err` if they were not stored
/// (this replica lost the leadership first, the group refused them, the
/// leader refused an Enqueue over a reject-publish limit: `REFUSED`,
/// with `Replica::admit`). An
/// `Err` does not prove the commands will never commit: a new leader may
/// still commit them (the publisher's confirm is then a nack although the
/// message may arrive, as with any in-doubt failover).
pub type ProposeDone = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

/// Where a replicated queue's commands go.
pub trait Proposer: Send + Sync + std::fmt::Debug {
    /// Proposes one entry: the queue records `records`, in order. Never
    /// blocks and never calls back into the queue before it returns (the
    /// queue's lock is held); `done`, if any, runs later on another task
    /// with no queue lock held. The group's leader passes the records
    /// through its replica's [`Replica::admit`] before it proposes them
    /// (the `done` of a proposal with a refused record gets
    /// `Err(REFUSED)`).
    fn propose(&self, records: Vec<Bytes>, done: Option<ProposeDone>);
}

/// A replicated queue's records as the queue reads them back.
pub trait CommandLog: Send + Sync + std::fmt::Debug {
    /// The queue record at `pos` (a position `apply_committed` was given).
    fn read(&self, pos: &RecordPos) -> Result<Bytes>;

    /// The queue records from ferry-log index `from` on, in order, with
    /// their positions, until `f` returns false (records that are not the
    /// queue's, such as the group's own, are skipped).
    fn scan(&self, from: u64, f: &mut dyn FnMut(RecordPos, Bytes) -> Result<bool>) -> Result<()>;
}

use super::command::{Command, Facts};
use super::dead_letter::DeadLetter;
use super::inner::Inner;
use super::journal::Journal;
use super::queue::{Enqueued, Queue};
use super::record::{self, Record};
use super::remote::{LeaderPort, RemoteConsumer};
use super::sinks::ConfirmToken;
use super::sinks::Delivery;
use super::spec::{QueueEnv, QueueSpec};
use super::state::{MarkOutcome, QueueState, StateImage};
use crate::error::CoreError;
use ferry_model::message::Message;
use ferry_model::Table;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

/// This node's replica of a replicated queue: the [`Queue`] the vhost and
/// channels use (publish, consume, ack as for any queue), driven by its
/// group — which calls [`Replica::apply_committed`] for every committed
/// command and [`Replica::set_leader`] when the leadership moves.
#[derive(Debug, Clone)]
pub struct Replica {
    queue: Arc<Queue>,
}

impl Replica {
    /// A replica with an empty state that the group's committed commands
    /// build from the start of its log. A follower until
    /// [`set_leader`](Self::set_leader).
    pub fn open(
        spec: QueueSpec,
        effective: &Table,
        vhost: Arc<str>,
        env: QueueEnv,
        log: Arc<dyn CommandLog>,
        proposer: Arc<dyn Proposer>,
    ) -> Self {
        let (args, levels, track_body) = Queue::parse_args(effective, &env);
        let state = QueueState::for_replicated(levels, track_body);
        let queue = Queue::assemble((spec, vhost, PathBuf::new(), env), args, state, |me| {
            Journal::replicated(log, proposer, me)
        });
        // A follower until its group says otherwise.
        queue.inner.lock().leads = false;
        Replica { queue }
    }

    /// The queue (what the vhost and the channels use).
    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// Applies a committed command of the group (on every replica, in log
    /// order; its record is at `pos` of the group's log): the one apply
    /// path. The leader then delivers what became ready, routes dead
    /// letters and sweeps.
    pub fn apply_committed(&self, pos: RecordPos, record: Bytes) -> Result<()> {
        let letters = apply(&self.queue, pos, record)?;
        self.queue.route_letters(letters);
        Ok(())
    }

    /// Applies a committed entry's records (each with its position): if
    /// a Mark opens it, only when it is its proposer's next batch
    /// (`state::Marks`); a resend or a batch past a gap is skipped (on the
    /// leader its Enqueues, which the resend's leader admitted, leave the
    /// pending count). Returns what the
    /// Mark decided (Apply for an entry without one) and the records the
    /// queue could not apply — refused the same way on every replica.
    pub fn apply_entry(&self, records: Vec<(RecordPos, Bytes)>) -> (MarkOutcome, Vec<CoreError>) {
        let mut it = records.into_iter().peekable();
        let mut outcome = MarkOutcome::Apply;
        if let Some((pos, first)) = it.peek() {
            if let Ok(Record::Mark {
                proposer,
                seq,
                refused,
            }) = record::decode(first.clone())
            {
                outcome = self
                    .queue
                    .inner
                    .lock()
                    .state
                    .check_mark(proposer, seq, pos.index, &refused);
                it.next();
            }
        }
        let mut errors = Vec::new();
        if outcome != MarkOutcome::Apply {
            let mut g = self.queue.inner.lock();
            for (_, bytes) in it {
                if let Ok(rec) = record::decode(bytes) {
                    if let Some(cmd) = Command::from_record(&rec) {
                        super::admission::applied(&mut g, &cmd);
                    }
                }
            }
            return (outcome, errors);
        }
        for (pos, bytes) in it {
            if let Err(e) = self.apply_committed(pos, bytes) {
                errors.push(e);
            }
        }
        (outcome, errors)
    }

    /// Becomes (or stops being) the replica that serves: delivers, sweeps,
    /// dead-letters. Stepping down returns what was checked out (the new
    /// leader delivers it) and ends the stand-ins of other nodes'
    /// consumers; this node's own consumers stay, fed by the new leader
    /// from now on (`remote`). Taking over forgets what the old leader
    /// delivered here and was not handed out yet (it is ready here), and
    /// delivers every message present as redelivered (the old leader may
    /// have delivered it).
    pub fn set_leader(&self, leads: bool) {
        let ended = {
            let mut g = self.queue.inner.lock();
            if g.leads == leads {
                return;
            }
            g.leads = leads;
            g.purging = 0;
            g.remote.clear();
            // What an old leadership had in flight is in the log a new
            // leader applies before it serves, or lost (`admission`).
            g.pending.reset();
            if leads {
                g.state.mark_all_redelivered();
                if g.consumers.is_empty() {
                    // x-expires counts from the takeover: the other nodes'
                    // consumers reattach first.
                    self.queue.deadlines.touch(g.expires());
                }
                Vec::new()
            } else {
                g.state.return_all_checked_out();
                g.consumers.take_forwarding()
            }
        };
        for c in ended {
            c.sink.cancelled(&c.tag);
        }
        // Serving: deliver; following: ask the new leader.
        self.queue.dispatch();
    }

    /// Gives back the spare room of the queue's state (its group went to
    /// sleep: idle).
    pub fn release_memory(&self) {
        self.queue().inner.lock().state.shrink();
    }

    /// Gives a follower its way to the leader (once; the first stays).
    pub fn bind_leader(&self, port: Arc<dyn LeaderPort>) {
        self.queue().inner.lock().remote.bind(port);
    }

    /// Whether this replica serves (its group's leader, caught up).
    pub fn serves(&self) -> bool {
        self.queue().inner.lock().leads
    }

    /// The consumers registered on this follower and how many messages
    /// each would take now (at most `cap`); none while it serves.
    pub fn remote_consumers(&self, cap: u32) -> Vec<RemoteConsumer> {
        let g = self.queue().inner.lock();
        if g.leads || g.deleted {
            return Vec::new();
        }
        g.consumers
            .local()
            .map(|c| {
                // How many reservations the sink grants now, given back.
                let mut n = 0;
                while n < cap && c.sink.reserve() {
                    n += 1;
                }
                for _ in 0..n {
                    c.sink.unreserve();
                }
                let waiting = g.remote.waiting_for(c.id);
                RemoteConsumer {
                    id: c.id,
                    tag: c.tag.clone(),
                    no_ack: c.no_ack,
                    exclusive: c.exclusive,
                    priority: c.priority,
                    want: n.saturating_sub(u32::try_from(waiting).unwrap_or(u32::MAX)),
                }
            })
            .collect()
    }

    /// Messages the leader delivered to this follower's consumers: handed
    /// over in order as their credit allows, the rest wait. Returns the
    /// ids whose consumer is gone (for the leader to requeue); a replica
    /// that serves now drops them all (they are ready in its state).
    pub fn deliver_remote(&self, items: Vec<(u64, Delivery)>) -> Vec<u64> {
        let mut g = self.queue().inner.lock();
        if g.leads || g.deleted {
            return Vec::new();
        }
        let inner = &mut *g;
        let mut gone = Vec::new();
        for (cid, d) in items {
            match inner.consumers.find(cid) {
                Some(_) => inner.remote.push(cid, d),
                None => gone.push(d.msg_id),
            }
        }
        inner.remote.drain(&inner.consumers);
        gone
    }

    /// The leader refused or ended consumer `cid` (an exclusive consumer
    /// elsewhere, the queue deleted): it is cancelled here too.
    pub fn cancel_remote(&self, cid: u64) {
        let c = {
            let mut g = self.queue().inner.lock();
            let inner = &mut *g;
            inner.remote.take_for(cid);
            inner.consumers.take(cid)
        };
        if let Some(c) = c {
            c.sink.cancelled(&c.tag);
        }
    }

    /// The replicated state as an image (for the group's snapshot), and
    /// where the records of its messages are (taken together, under the
    /// queue's lock).
    pub fn image_with_positions(&self) -> (StateImage, Vec<RecordPos>) {
        let g = self.queue().inner.lock();
        (g.state.image(), g.state.positions())
    }

    /// Record bytes of the messages the replica holds (what a snapshot
    /// would carry).
    pub fn live_bytes(&self) -> u64 {
        let g = self.queue().inner.lock();
        g.state.ready_bytes() + g.state.unacked_bytes() + g.state.waiting_bytes()
    }

    /// Replaces the state with `image`: a snapshot loaded at start or
    /// installed from the leader (whose log no longer holds what this
    /// replica lacks). Its records are read through the log as any
    /// message's (the group's log finds them in the snapshot).
    pub fn restore(&self, image: &StateImage) {
        let mut g = self.queue().inner.lock();
        let inner = &mut *g;
        if inner.leads {
            inner.state.return_all_checked_out();
        }
        let freed = inner.state.drop_cached();
        inner.cache.freed(freed);
        inner.remote.clear();
        let levels = inner.state.levels();
        let track = inner.state.tracks_body();
        inner.state = QueueState::from_image(levels, track, image);
    }

    /// The leader this follower was fed by is gone: what it delivered and
    /// this node has not handed out yet is forgotten (it delivers them
    /// again, or the new leader does).
    pub fn reset_remote(&self) {
        self.queue().inner.lock().remote.clear();
    }
}

/// A proposed purge did not go through: delivery resumes.
fn purge_settled(q: &Queue) {
    {
        let mut g = q.inner.lock();
        g.purging = g.purging.saturating_sub(1);
    }
    q.dispatch();
}

/// A replicated queue's publish: its Enqueue proposed, the publisher's
/// confirm (if any) sent once it is committed and applied here, a nack if
/// the group did not take it or its leader refused it (a reject-publish
/// limit, `admission`).
pub(super) fn propose_enqueue(
    inner: &mut Inner,
    msg: &Arc<Message>,
    facts: Facts,
    confirm: Option<ConfirmToken>,
) -> Result<Enqueued> {
    let done = confirm.map(|t| -> ProposeDone {
        Box::new(move |r| match r {
            Ok(()) => t.sink.confirmed(&[t.seq]),
            Err(e) if e == super::admission::REFUSED => t.sink.rejected(&[t.seq]),
            Err(_) => t.sink.failed(&[t.seq]),
        })
    });
    let deferred = done.is_some();
    inner
        .journal
        .propose(&Command::Enqueue { msg, facts }, done)?;
    Ok(match deferred {
        true => Enqueued::Deferred,
        false => Enqueued::Confirmed,
    })
}

/// A replicated queue's purge (`g`: its lock, held): on a follower, done
/// by the leader (it alone knows what is checked out, which stays); on
/// the leader, proposed.
pub(super) fn purge(q: &Queue, mut g: parking_lot::MutexGuard<'_, Inner>) -> Result<u32> {
    if !g.leads {
        if let Some(port) = g.remote.port().cloned() {
            drop(g);
            return port.purge();
        }
    }
    let keep = g.state.unacked_ids();
    propose_purge(&mut g, &keep, q.self_ref.clone())
}

/// A replicated queue's purge on its leader: proposed, with delivery
/// paused until it is applied (the purge takes every message present
/// then but the checked-out `keep`). Returns how many messages it takes
/// as things stand.
fn propose_purge(inner: &mut Inner, keep: &[u64], owner: Weak<Queue>) -> Result<u32> {
    let n = inner.state.ready_len() + inner.state.waiting_len();
    let cmd = Command::Purge {
        upto: u64::MAX,
        keep,
    };
    // Not taken: delivery resumes (applied, `apply` resumed it).
    let done: ProposeDone = Box::new(move |r| {
        if r.is_err() {
            if let Some(q) = owner.upgrade() {
                purge_settled(&q);
            }
        }
    });
    inner.journal.propose(&cmd, Some(done))?;
    inner.purging += 1;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The one apply path for a committed command of a replicated queue; on
/// the leader, what follows from it (see `Queue::apply_committed`).
/// Returns the dead letters to route (with no lock held).
pub(super) fn apply(q: &Queue, pos: RecordPos, bytes: Bytes) -> Result<Vec<DeadLetter>> {
    let rec = record::decode(bytes)?;
    let mut letters = Vec::new();
    // A Mark is read by `Replica::apply_entry`; nothing to apply.
    let Some(cmd) = Command::from_record(&rec) else {
        return Ok(letters);
    };
    let mut g = q.inner.lock();
    if g.deleted {
        return Ok(letters);
    }
    let inner = &mut *g;
    let cfg = inner.apply_config();
    super::admission::applied(inner, &cmd);
    let mut fx = super::apply::apply(&mut inner.state, pos, &cmd, cfg);
    if let Command::Purge { .. } = cmd {
        inner.purging = inner.purging.saturating_sub(1);
    }
    if !inner.leads {
        // A follower keeps the state; the leader delivers, dead-letters
        // and sweeps.
        inner.cache.freed(fx.freed_cache);
        return Ok(letters);
    }
    let mut fresh = None;
    let mut now = None;
    if let Command::Enqueue { msg, facts } = cmd {
        let p = facts.priority.unwrap_or(0);
        if !inner.consumers.is_empty()
            && inner.state.tail_mut(pos.index, p).is_some()
            && inner.cache.try_add(pos.len)
        {
            inner.state.cache_tail(pos.index, p, Arc::new(msg.clone()));
        }
        fresh = Some(pos.index);
        now = facts.deadline.map(|_| inner.now_ms());
    }
    inner.execute(&mut fx, &mut letters);
    inner.dispatch(&q.stats, &mut letters, fresh);
    if fresh.is_some() && (inner.args.is_some() || now.is_some()) {
        inner.after_enqueue(now, &mut letters);
    }
    q.deadlines.note(&inner.state);
    Ok(letters)
}

/// The log and proposer of a replica whose group is not running yet (a
/// node opens its replicated queues before it has joined its cluster):
/// reads fail and proposals are refused until [`Binding::bind`] gives the
/// group's.
#[derive(Debug, Default)]
pub struct Binding {
    log: std::sync::OnceLock<Arc<dyn CommandLog>>,
    proposer: std::sync::OnceLock<Arc<dyn Proposer>>,
}

impl Binding {
    /// A binding to fill later, and the log and proposer a replica opens
    /// with, which go through it.
    pub fn new() -> (Arc<Binding>, Arc<dyn CommandLog>, Arc<dyn Proposer>) {
        let b = Arc::new(Binding::default());
        (b.clone(), Arc::new(Bound(b.clone())), Arc::new(Bound(b)))
    }

    /// The group's proposer only (a replicated stream, which reads its
    /// own log; the first binding stays).
    pub fn bind_proposer(&self, proposer: Arc<dyn Proposer>) {
        let _ = self.proposer.set(proposer);
    }

    /// The group's log and proposer (the first binding stays).
    pub fn bind(&self, log: Arc<dyn CommandLog>, proposer: Arc<dyn Proposer>) {
        let _ = self.log.set(log);
        let _ = self.proposer.set(proposer);
    }
}

#[derive(Debug)]
struct Bound(Arc<Binding>);

fn unbound() -> crate::error::CoreError {
    crate::error::CoreError::request(
        crate::error::ErrorKind::Internal,
        "the queue's replication group is not running",
    )
}

impl CommandLog for Bound {
    fn read(&self, pos: &RecordPos) -> Result<Bytes> {
        self.0.log.get().ok_or_else(unbound)?.read(pos)
    }

    fn scan(&self, from: u64, f: &mut dyn FnMut(RecordPos, Bytes) -> Result<bool>) -> Result<()> {
        self.0.log.get().ok_or_else(unbound)?.scan(from, f)
    }
}

impl Proposer for Bound {
    fn propose(&self, records: Vec<Bytes>, done: Option<ProposeDone>) {
        match self.0.proposer.get() {
            Some(p) => p.propose(records, done),
            None => {
                if let Some(d) = done {
                    d(Err(unbound().to_string()));
                }
            }
        }
    }
}

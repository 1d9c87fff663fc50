//! A queue: the handle the vhost and channels share. It takes the `inner`
//! lock (`inner::Inner`: state, journal, consumers, body cache), runs an
//! operation there, and after releasing it does what calls out: routing
//! dead letters, confirms, durability rounds.
//!
//! Every change goes through the log first: an operation decides a
//! `Command` (Enqueue, Settle, Requeue, Retry, Purge, Drop) without
//! touching the state, appends its record, then runs `apply::apply` — the
//! same function restart replay runs — and executes the returned effects
//! (`inner`). Publisher confirms for persistent messages wait for the
//! fsync of their Enqueue record (group commit via the `Syncer`, confirm
//! waiters in the `journal`). Young message bodies stay in a bounded
//! shared cache (`body_cache`) so a consumer that keeps up never reads the
//! disk; older ones are read back from the log when delivered.
//!
//! Lock order: `sync_lock` → `inner` → (sinks: channel locks). Nothing
//! called under `inner` may call back into a queue.
//!
//! TTL, length limits and dead-lettering (`x-message-ttl`, `expiration`,
//! `x-max-length(-bytes)`, `x-overflow`, `x-dead-letter-*`):
//! * An Enqueue record carries the message's deadline (publish time plus
//!   the smaller of the queue TTL and the message's expiration), so a
//!   restart keeps it. Only the head expires (RabbitMQ's rule; with a queue
//!   TTL alone that is FIFO order): checked before each delivery and
//!   basic.get, right after a publish, and by the broker's expiry sweep
//!   (`expire`), woken through `ExpiryTimer` at the head's deadline.
//! * Messages leaving because they died are logged as Drop records with
//!   their reason. With a dead-letter exchange they are handed, after the
//!   queue lock is released, to the vhost (`DeadLetterRouter`), which
//!   republishes them with an x-death header. Like RabbitMQ's classic
//!   queues this is at-most-once: the Drop is logged before the republish.
//! * None of this runs for a queue without those arguments and messages
//!   without `expiration`: no clock reads, no side tables.
//!
//! Priorities (`x-max-priority`: one ready list per level in `QueueState`,
//! the level written into the Enqueue record), consumer priorities and
//! single active consumer (`consumers::Consumers::pick`), the delivery
//! limit (returns counted by Requeue records; past the limit a Drop with
//! reason `delivery_limit`), delayed retry (`x-retry-*`: returns wait,
//! their due times in Retry records) and a delayed exchange's holds are
//! decided in `inner`. Here: queue expiry (`x-expires`: an idle deadline
//! on the broker's `ExpiryTimer`), the head's deadline published to the
//! sweep, and a policy change reaching the queue (`apply_arguments`).

use super::args::QueueArgs;
use super::body_cache::BodyCache;
use super::command::{Command, Facts};
use super::dead_letter::{DeadLetter, Reason};
use super::deadlines::Deadlines;
use super::inner::{Inner, LETTER_BATCH};
use super::journal::{Journal, Logged};
use super::record;
use super::remote::{forward, Forward, Forward::Ack, Forward::Requeue};
use super::sinks::{for_each_sink_run, ConfirmToken, ConsumerSink, Delivery};
use super::spec::{QueueEnv, QueueSpec};
use super::state::QueueState;
use super::stats::{Depth, QueueStats};
use crate::error::{CoreError, ErrorKind, Result};
use crate::syncer::SyncSchedule;
use ferry_log::Log;
use ferry_model::message::Message;
use ferry_model::Table;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

/// A queue. Shared by `Arc` between the vhost and the channels using it.
#[derive(Debug)]
pub struct Queue {
    pub(super) spec: QueueSpec,
    pub(super) vhost: Arc<str>,
    pub(super) dir: PathBuf,
    pub(super) env: QueueEnv,
    /// Whether `Inner::args` is set: plain queues skip the argument
    /// checks without the lock (written with `inner` held).
    pub(super) has_args: AtomicBool,
    /// The head's and the idle deadline, for the broker's sweep.
    pub(super) deadlines: Deadlines,
    pub(super) inner: Mutex<Inner>,
    pub(super) sync_lock: Mutex<()>,
    pub(super) sync_state: SyncSchedule,
    pub(super) self_ref: Weak<Queue>,
    /// Message counters (management API, metrics).
    pub(super) stats: QueueStats,
}

/// What `publish` did with a confirm token.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored as far as this queue's guarantee goes: confirm now.
    Confirmed,
    /// The confirm is sent after the fsync.
    Deferred,
    /// Refused: the queue is full and its overflow is `reject-publish(-dlx)`
    /// (a confirming publisher gets basic.nack).
    Rejected,
}

impl Queue {
    /// Opens (and replays) the queue whose log lives in `dir`.
    pub fn open(
        spec: QueueSpec,
        vhost: Arc<str>,
        dir: PathBuf,
        env: QueueEnv,
    ) -> Result<Arc<Self>> {
        let args = spec.arguments.clone();
        Self::open_effective(spec, &args, vhost, dir, env)
    }

    /// `open` acting on `effective` arguments: the declared ones combined
    /// with the vhost's policies (`policy::effective_queue_args`).
    pub fn open_effective(
        spec: QueueSpec,
        effective: &Table,
        vhost: Arc<str>,
        dir: PathBuf,
        env: QueueEnv,
    ) -> Result<Arc<Self>> {
        env.io.create_dir_all(&dir)?;
        let (log, report) = Log::open(env.io.clone(), &dir, env.log.clone())?;
        tracing::debug!(queue = %spec.name, ?report, "queue log opened");
        let (args, levels, track_body) = Self::parse_args(effective, &env);
        let state = Journal::replay(&log, levels, track_body)?;
        Ok(Self::assemble((spec, vhost, dir, env), args, state, |me| {
            Journal::new(log, me)
        }))
    }

    /// The arguments to act on: None for a plain queue; with the number
    /// of priority levels and whether body bytes are counted.
    pub(super) fn parse_args(
        effective: &Table,
        env: &QueueEnv,
    ) -> (Option<Arc<QueueArgs>>, usize, bool) {
        let args = QueueArgs::parse(effective, env.quorum_delivery_limit);
        let args = (!args.is_plain()).then(|| Arc::new(args));
        let track_body = args.as_ref().is_some_and(|a| a.max_length_bytes.is_some());
        let levels = args.as_ref().map_or(1, |a| a.levels());
        (args, levels, track_body)
    }

    /// A queue around its state and journal (`journal` gets the queue's
    /// own weak handle).
    pub(super) fn assemble(
        (spec, vhost, dir, env): (QueueSpec, Arc<str>, PathBuf, QueueEnv),
        args: Option<Arc<QueueArgs>>,
        state: QueueState,
        journal: impl FnOnce(Weak<Queue>) -> Journal,
    ) -> Arc<Self> {
        let expires = args.as_ref().and_then(|a| a.expires);
        let deadlines = Deadlines::open(&state, expires, env.clock.clone(), env.timer.clone());
        Arc::new_cyclic(|me| {
            let inner = Inner::new(
                spec.name.clone(),
                env.clock.clone(),
                env.timer.clone(),
                args.clone(),
                state,
                journal(me.clone()),
                BodyCache::new(env.cache_used.clone(), env.cache_limit),
            );
            Queue {
                spec,
                vhost,
                dir,
                has_args: AtomicBool::new(args.is_some()),
                deadlines,
                env,
                inner: Mutex::new(inner),
                sync_lock: Mutex::new(()),
                sync_state: SyncSchedule::default(),
                self_ref: me.clone(),
                stats: Default::default(),
            }
        })
    }

    /// Declared shape.
    pub fn spec(&self) -> &QueueSpec {
        &self.spec
    }

    /// Name.
    pub fn name(&self) -> &Arc<str> {
        &self.spec.name
    }

    /// Directory of its log.
    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }

    /// (ready messages, consumers), as queue.declare-ok reports them.
    pub fn counts(&self) -> (u32, u32) {
        let g = self.inner.lock();
        (g.state.ready_len() as u32, g.consumers.len() as u32)
    }

    /// Message counters.
    pub fn stats(&self) -> &QueueStats {
        &self.stats
    }

    /// Ready / unacked messages and bytes, consumers (one lock).
    pub fn depth(&self) -> Depth {
        let g = self.inner.lock();
        Depth {
            ready: g.state.ready_len() as u64,
            unacked: g.state.unacked_len() as u64,
            ready_bytes: g.state.ready_bytes(),
            unacked_bytes: g.state.unacked_bytes(),
            consumers: g.consumers.len() as u64,
            delayed: g.state.waiting_len() as u64,
        }
    }

    /// (tag, no_ack) of each consumer.
    pub fn consumer_tags(&self) -> Vec<(Arc<str>, bool)> {
        self.inner.lock().consumers.tags()
    }

    /// Whether its commands go to a Raft group (`replica`): a follower's
    /// basic.get then waits for the leader's answer (call it where
    /// blocking is allowed).
    pub fn is_replicated(&self) -> bool {
        self.inner.lock().journal.is_replicated()
    }

    /// Whether the queue has been deleted.
    pub fn is_deleted(&self) -> bool {
        self.inner.lock().deleted
    }

    /// Whether the queue keeps deadlines or body sizes (tests: a plain
    /// queue must not).
    #[cfg(test)]
    pub(crate) fn has_side_table(&self) -> bool {
        self.inner.lock().state.has_meta()
    }

    /// Reads the queue's state (tests, here and in ferry-broker).
    #[cfg(any(test, feature = "test-support"))]
    pub fn with_state<T>(&self, f: impl FnOnce(&QueueState) -> T) -> T {
        f(&self.inner.lock().state)
    }

    fn not_found(&self) -> CoreError {
        CoreError::not_found("queue", &self.spec.name, &self.vhost)
    }

    /// Whether the queue has arguments to act on (fast path for plain
    /// queues: one atomic load, no lock).
    #[inline]
    fn has_args(&self) -> bool {
        self.has_args.load(Ordering::Acquire)
    }

    /// The arguments acting now (declared ones combined with policies).
    /// Takes the queue's lock: the queue's own code reads
    /// `Inner::args` through the guard it holds instead.
    pub fn args(&self) -> Option<Arc<QueueArgs>> {
        self.inner.lock().args.clone()
    }

    /// Appends a message. With a confirm token, says whether the confirm
    /// may go out now or after the fsync.
    pub fn publish(&self, msg: &Arc<Message>, confirm: Option<ConfirmToken>) -> Result<Enqueued> {
        let mut letters = Vec::new();
        let r = self.publish_collect(msg, confirm, &mut letters);
        self.route_letters(letters);
        r
    }

    /// `publish`, leaving the dead letters it causes (overflow) in
    /// `letters` for the caller to route (the vhost's dead-letter loop).
    pub fn publish_collect(
        &self,
        msg: &Arc<Message>,
        confirm: Option<ConfirmToken>,
        letters: &mut Vec<DeadLetter>,
    ) -> Result<Enqueued> {
        // Refused before anything changes (overflow, dead letters, log).
        record::check_fields(msg)?;
        let needs_sync = msg.persistent && self.spec.durable;
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        let inner = &mut *g;
        // Plain queue, message without expiration: none of this runs.
        let featured = self.has_args() || msg.expiration_ms.is_some();
        let (mut now, mut deadline, mut priority, mut held) = (None, None, None, None);
        if featured {
            match inner.admit(msg, letters) {
                Some(a) => (now, deadline, priority, held) = a,
                None => return Ok(Enqueued::Rejected),
            }
        }
        let facts = Facts {
            deadline,
            priority,
            not_before: held,
        };
        if inner.journal.is_replicated() {
            self.stats.published();
            return super::replica::propose_enqueue(inner, msg, facts, confirm);
        }
        let Logged::Applied(pos, _) = inner.commit(&Command::Enqueue { msg, facts })? else {
            return Err(CoreError::Corrupt(
                "a local queue's enqueue was not applied".into(),
            ));
        };
        // Only a queue with consumers will read the message back soon; a
        // backlog nobody consumes is read from the log later anyway. The
        // cache is the leader's memory, not state: set after `apply`.
        let p = priority.unwrap_or(0);
        if !inner.consumers.is_empty()
            && inner.state.tail_mut(pos.index, p).is_some()
            && inner.cache.try_add(pos.len)
        {
            inner.state.cache_tail(pos.index, p, msg.clone());
        }
        self.stats.published();
        let result = match confirm {
            Some(t) if needs_sync => {
                inner.journal.wait_for_sync(pos.index, t);
                Enqueued::Deferred
            }
            _ => Enqueued::Confirmed,
        };
        // A message a waiting consumer takes at once is never expired (as in
        // RabbitMQ, even with a TTL of 0).
        inner.dispatch(&self.stats, letters, Some(pos.index));
        if featured {
            inner.after_enqueue(now, letters);
        }
        self.deadlines.note(&inner.state);
        drop(g);
        if needs_sync {
            // Joins the next durability round (see `SyncSchedule`).
            crate::syncer::schedule(self);
        }
        Ok(result)
    }

    /// Drops the bodies this queue keeps in memory (memory alarm): they
    /// are read back from the log when delivered.
    pub fn shed_cache(&self) {
        let inner = &mut *self.inner.lock();
        inner.cache.shed(&mut inner.state);
    }

    /// Registers a consumer. Returns its id (for `cancel`).
    pub fn consume(
        &self,
        tag: Arc<str>,
        sink: Arc<dyn ConsumerSink>,
        no_ack: bool,
        exclusive: bool,
    ) -> Result<u64> {
        self.consume_with_priority(tag, sink, no_ack, exclusive, 0)
    }

    /// `consume` for a consumer with an `x-priority`: while it has credit
    /// it gets messages before consumers of a lower priority (round-robin
    /// among equals). In a single-active-consumer queue priorities do not
    /// matter: the oldest registered consumer is the active one (RabbitMQ
    /// 3.10's classic queues).
    pub fn consume_with_priority(
        &self,
        tag: Arc<str>,
        sink: Arc<dyn ConsumerSink>,
        no_ack: bool,
        exclusive: bool,
        priority: i64,
    ) -> Result<u64> {
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        let single_active = g.single_active();
        let Some(id) = g
            .consumers
            .register(tag, sink, no_ack, exclusive, priority, single_active)
        else {
            return Err(CoreError::request(
                ErrorKind::AccessRefused,
                format!(
                    "queue '{}' in vhost '{}' in exclusive use",
                    self.spec.name, self.vhost
                ),
            ));
        };
        self.deadlines.clear_idle();
        // No dispatch here: the front end first answers consume-ok, which
        // must reach the client before the first delivery, then calls
        // `dispatch`.
        Ok(id)
    }

    /// Removes a consumer. Returns true when an auto-delete queue just lost
    /// its last consumer (the vhost then deletes it).
    pub fn cancel(&self, consumer_id: u64) -> bool {
        let mut g = self.inner.lock();
        let removed = g.consumers.remove(consumer_id);
        super::remote::cancelled(&mut g, consumer_id);
        let emptied = removed.found && g.consumers.is_empty();
        if emptied {
            self.deadlines.touch(g.expires());
        }
        let auto_deleted = emptied && self.spec.auto_delete && !g.deleted;
        if removed.was_first && g.single_active() && !g.consumers.is_empty() {
            // The next consumer in registration order takes over.
            let mut letters = Vec::new();
            g.dispatch(&self.stats, &mut letters, None);
            self.deadlines.note(&g.state);
            drop(g);
            self.route_letters(letters);
        }
        auto_deleted
    }

    /// Marks the queue deleted, cancels its consumers, answers pending
    /// confirms and removes its files. Returns the ready message count.
    pub fn delete(&self) -> Result<u32> {
        let (n, consumers, waiters) = {
            let mut g = self.inner.lock();
            if g.deleted {
                return Ok(0);
            }
            g.deleted = true;
            let n = g.state.ready_len() as u32;
            let consumers = g.consumers.take_all();
            let waiters = g.journal.take_waiters();
            g.cache.release_all();
            g.state = QueueState::new();
            (n, consumers, waiters)
        };
        for c in consumers {
            c.sink.cancelled(&c.tag);
        }
        // The messages are gone with the queue; the publisher's request was
        // still handled, which is what RabbitMQ confirms too.
        for_each_sink_run(waiters, |s, seqs| s.confirmed(seqs));
        let _sync = self.sync_lock.lock();
        // A replicated queue has no directory of its own (its group's
        // log goes with the group).
        if !self.dir.as_os_str().is_empty() {
            self.env.io.remove_dir_all(&self.dir)?;
        }
        Ok(n)
    }

    /// Tries to deliver ready messages (after credit was freed).
    pub fn dispatch(&self) {
        let mut letters = Vec::new();
        {
            let mut g = self.inner.lock();
            g.dispatch(&self.stats, &mut letters, None);
            self.deadlines.note(&g.state);
        }
        self.route_letters(letters);
    }

    /// basic.get: takes the head message. Returns it with the number of
    /// messages left.
    pub fn get(&self, no_ack: bool) -> Result<Option<(Delivery, u32)>> {
        if let Some(through_leader) = super::remote::get(self, no_ack) {
            return through_leader;
        }
        loop {
            let mut letters = Vec::new();
            let got = self.get_locked(no_ack, &mut letters);
            self.route_letters(letters);
            match got {
                // Expired messages were dropped in a batch; go on.
                Ok(None) if self.head_expired() => continue,
                other => return other,
            }
        }
    }

    fn head_expired(&self) -> bool {
        let g = self.inner.lock();
        g.state
            .head_deadline()
            .is_some_and(|d| d <= self.env.clock.now_ms())
    }

    fn get_locked(
        &self,
        no_ack: bool,
        letters: &mut Vec<DeadLetter>,
    ) -> Result<Option<(Delivery, u32)>> {
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        let inner = &mut *g;
        if inner.consumers.is_empty() {
            self.deadlines.touch(inner.expires());
        }
        if inner.state.has_waiting() {
            inner.promote_due();
        }
        inner.ensure_window();
        if inner.state.head_deadline().is_some() {
            let now = self.env.clock.now_ms();
            let done = inner.expire(now, letters)?;
            self.deadlines.note(&inner.state);
            if !done {
                return Ok(None);
            }
        }
        let Some(d) = inner.take_head(no_ack, letters)? else {
            return Ok(None);
        };
        self.stats.got(no_ack, d.redelivered);
        self.deadlines.note(&inner.state);
        Ok(Some((d, inner.state.ready_len() as u32)))
    }

    /// A delayed exchange's release: checks out the earliest held message
    /// due at `now` (due time, then publish order) as basic.get would,
    /// skipping the ready list, whose id order is publish order.
    pub fn take_due(&self, now: u64) -> Result<Option<Delivery>> {
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        let inner = &mut *g;
        let Some(head) = inner.state.peek_due(now).cloned() else {
            self.deadlines.note(&inner.state);
            return Ok(None);
        };
        // Loaded before it leaves the waiting set: a read error keeps it
        // held for the next sweep.
        let message = inner.load(&head)?;
        if inner.state.check_out_due(now) != Some(head.id) {
            return Ok(None);
        }
        self.stats.got(false, head.redelivered());
        self.deadlines.note(&inner.state);
        Ok(Some(inner.delivery(&head, message, true)))
    }

    /// Settles checked-out messages (ack, or reject/nack without requeue).
    pub fn settle(&self, ids: &[u64]) -> Result<()> {
        self.release(ids, false)
    }

    /// Returns checked-out messages to their place (nack/reject with
    /// requeue, channel closed, recover).
    pub fn requeue(&self, ids: &[u64]) -> Result<()> {
        self.release(ids, true)
    }

    fn release(&self, ids: &[u64], requeue: bool) -> Result<()> {
        let mut letters = Vec::new();
        let r = (|| {
            let mut g = self.inner.lock();
            if g.deleted {
                return Ok(());
            }
            let inner = &mut *g;
            let op = || (if requeue { Requeue } else { Ack })(ids.to_vec());
            if forward(inner, op) {
                return Ok(());
            }
            let limit = inner.args.as_deref().and_then(|a| a.delivery_limit);
            if let (true, Some(limit)) = (requeue, limit) {
                // Those past the limit leave here (a Drop); the rest return.
                inner.over_delivery_limit(limit, ids, &mut letters)?;
            }
            let retry = inner.args.as_deref().and_then(|a| a.retry);
            if let (true, Some(policy)) = (requeue, retry) {
                inner.retry_later(&policy, ids)?;
                inner.dispatch(&self.stats, &mut letters, None);
                self.deadlines.note(&inner.state);
                return Ok(());
            }
            let done = inner.checked_out(ids);
            if requeue {
                inner.commit_ids(&Command::Requeue(&done), &mut letters)?;
            } else {
                let fx = inner.commit_ids(&Command::Settle(&done), &mut letters)?;
                // A replicated queue's Settle is applied later: count the
                // acks it settles now.
                let acked = match inner.journal.is_replicated() {
                    true => done.len(),
                    false => fx.removed,
                };
                if acked > 0 {
                    self.stats.acked(acked);
                }
            }
            inner.dispatch(&self.stats, &mut letters, None);
            self.deadlines.note(&inner.state);
            Ok(())
        })();
        self.route_letters(letters);
        r
    }

    /// basic.reject / basic.nack without requeue: the messages leave the
    /// queue (a Drop record, reason rejected) and go to the dead-letter
    /// exchange if there is one.
    pub fn reject(&self, ids: &[u64]) -> Result<()> {
        for chunk in ids.chunks(LETTER_BATCH) {
            let mut letters = Vec::new();
            let logged = {
                let mut g = self.inner.lock();
                if g.deleted {
                    return Ok(());
                }
                let inner = &mut *g;
                if forward(inner, || Forward::Reject(chunk.to_vec())) {
                    continue;
                }
                let done = inner.checked_out(chunk);
                let cmd = Command::Drop {
                    reason: Reason::Rejected,
                    ids: &done,
                };
                let logged = inner.commit_ids(&cmd, &mut letters);
                inner.dispatch(&self.stats, &mut letters, None);
                self.deadlines.note(&inner.state);
                logged
            };
            self.route_letters(letters);
            logged?;
        }
        Ok(())
    }

    /// Drops every ready (and waiting) message; returns how many. The
    /// checked-out ones stay: the Purge record lists them.
    pub fn purge(&self) -> Result<u32> {
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        let Some(upto) = g.journal.next_index() else {
            return super::replica::purge(self, g);
        };
        let inner = &mut *g;
        let keep = inner.state.unacked_ids();
        let mut fx = inner
            .commit(&Command::Purge { upto, keep: &keep })?
            .effects();
        let mut letters = Vec::new();
        inner.execute(&mut fx, &mut letters);
        inner.gc_segments();
        self.deadlines.note(&inner.state);
        Ok(fx.purged as u32)
    }

    /// Hands dead letters to the vhost. Must be called without the lock.
    #[inline]
    pub(super) fn route_letters(&self, letters: Vec<DeadLetter>) {
        if !letters.is_empty() {
            self.route_letters_slow(letters);
        }
    }

    #[cold]
    #[inline(never)]
    fn route_letters_slow(&self, letters: Vec<DeadLetter>) {
        match self.env.dead_letters.as_ref().and_then(Weak::upgrade) {
            Some(router) => router.dead_letter(letters),
            None => tracing::debug!(
                queue = %self.spec.name, count = letters.len(),
                "no dead-letter router: dead letters dropped"
            ),
        }
    }

    /// The head's deadline (`NEVER` if none): when `expire` has work.
    pub fn next_expiry(&self) -> u64 {
        self.deadlines.next_expiry()
    }

    /// Drops (and dead-letters) the messages at the head whose deadline
    /// is at or before `now`, then delivers what is left. Called by the
    /// broker's expiry sweep.
    pub fn expire(&self, now: u64) {
        loop {
            let mut letters = Vec::new();
            let more = {
                let mut g = self.inner.lock();
                if g.deleted || !g.leads {
                    return;
                }
                let inner = &mut *g;
                if inner.state.has_waiting() {
                    inner.state.promote_due(now);
                }
                // Cannot log (poisoned): stop, the head stays undelivered.
                let done = inner.expire(now, &mut letters);
                if done.is_ok() {
                    inner.dispatch(&self.stats, &mut letters, None);
                }
                self.deadlines.note(&inner.state);
                done.is_ok_and(|d| !d)
            };
            self.route_letters(letters);
            if !more {
                return;
            }
        }
    }

    /// queue.declare (active or passive) of an existing queue: a use that
    /// restarts the `x-expires` countdown (RabbitMQ resets it on the stat
    /// both declarations make).
    pub fn touch(&self) {
        let g = self.inner.lock();
        if g.consumers.is_empty() && !g.deleted {
            self.deadlines.touch(g.expires());
        }
    }

    /// When the queue expires unused (`NEVER` if it does not, or if it is
    /// a replica that does not serve: its leader's sweep decides).
    pub fn idle_deadline(&self) -> u64 {
        match self.inner.lock().leads {
            true => self.deadlines.idle(),
            false => crate::clock::NEVER,
        }
    }

    /// Whether the queue has stayed unused past its `x-expires` at `now`
    /// (the broker's sweep then deletes it: through its vhost, or a
    /// replicated queue's leader through the definitions).
    pub fn idle_expired(&self, now: u64) -> bool {
        let g = self.inner.lock();
        !g.deleted && g.leads && g.consumers.is_empty() && self.deadlines.idle() <= now
    }

    /// Acts on new effective arguments (see `policy::effective_queue_args`),
    /// as RabbitMQ's `process_args_policy` does: they are replaced at once
    /// (a lower length limit drops the head, the `x-expires` countdown
    /// restarts, a new dead-letter target applies to the next dead
    /// letter). Deadlines already written into Enqueue records stay: a new
    /// message TTL applies to messages published from now on. A new
    /// `max-length-bytes` counts the bodies already queued, exactly
    /// (`Inner::count_bodies`). What only a declaration decides (priority
    /// levels, the queue type) comes from the same table and does not
    /// change.
    pub fn apply_arguments(&self, effective: &Table) {
        let next = QueueArgs::parse(effective, self.env.quorum_delivery_limit);
        let mut letters = Vec::new();
        {
            let mut g = self.inner.lock();
            if g.deleted {
                return;
            }
            let unchanged = match g.args.as_deref() {
                Some(c) => *c == next,
                None => next.is_plain(),
            };
            if unchanged {
                return;
            }
            let inner = &mut *g;
            if next.max_length_bytes.is_some() {
                inner.count_bodies();
            }
            let expires = next.expires;
            let next = (!next.is_plain()).then(|| Arc::new(next));
            self.has_args.store(next.is_some(), Ordering::Release);
            inner.args = next.clone();
            match expires {
                Some(ms) if inner.consumers.is_empty() => self.deadlines.touch(Some(ms)),
                Some(_) => {}
                None => self.deadlines.clear_idle(),
            }
            if let Some(a) = next.as_deref() {
                if a.limited() {
                    inner.drop_over_limit(a, &mut letters);
                }
            }
            if inner.state.has_meta() || inner.state.has_spill() {
                let now = self.env.clock.now_ms();
                // A failure is logged; the expired head is never delivered.
                let _ = inner.expire(now, &mut letters);
            }
            inner.dispatch(&self.stats, &mut letters, None);
            self.deadlines.note(&inner.state);
        }
        self.route_letters(letters);
    }

    /// Flushes and fsyncs now, on this thread (shutdown, tests).
    pub fn sync_now(&self) {
        crate::syncer::sync_serial(self);
    }
}

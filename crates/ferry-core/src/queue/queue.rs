//! A queue: the state machine, its command log and its consumers.
//!
//! Every change goes through the log first (Enqueue, Settle, Requeue,
//! Purge, Drop), then into `QueueState`. Publisher confirms for persistent
//! messages wait for the fsync of their Enqueue record (group commit via
//! the `Syncer`). Young message bodies stay in a bounded shared cache so a
//! consumer that keeps up never reads the disk; older ones are read back
//! from the log when delivered.
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

use super::args::{Overflow, QueueArgs};
use super::dead_letter::{DeadLetter, DeadLetterRouter, PropertyCodec, Reason};
use super::record::{self, Record};
use super::sinks::{for_each_sink_run, ConfirmToken, ConsumerSink, Delivery};
use super::state::{Entry, QueueState, Replay, WINDOW};
use crate::clock::{Clock, ExpiryTimer, SystemClock, NEVER};
use crate::error::{CoreError, ErrorKind, Result};
use crate::message::Message;
use crate::syncer::{SyncTask, Syncer};
use amq_protocol_types::FieldTable;
use ferry_log::{FileIo, Log, LogConfig};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, Weak};

/// The declared shape of a queue (what queue.declare compares).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueSpec {
    /// Queue name.
    #[serde(with = "arc_str")]
    pub name: Arc<str>,
    /// Survives a restart (with its persistent messages).
    pub durable: bool,
    /// Owning connection of an exclusive queue.
    #[serde(skip)]
    pub exclusive_owner: Option<u64>,
    /// Deleted when its last consumer goes away.
    pub auto_delete: bool,
    /// x-arguments.
    #[serde(with = "crate::exchange::table_serde", default)]
    pub arguments: FieldTable,
}

/// Shared facilities every queue uses.
#[derive(Debug, Clone)]
pub struct QueueEnv {
    /// File I/O seam.
    pub io: Arc<dyn FileIo>,
    /// Group-commit threads.
    pub syncer: Arc<Syncer>,
    /// Log settings.
    pub log: LogConfig,
    /// Bytes of message bodies all queues together may keep in memory.
    pub cache_limit: i64,
    /// Bytes currently cached, across queues.
    pub cache_used: Arc<AtomicI64>,
    /// Time, for message deadlines.
    pub clock: Arc<dyn Clock>,
    /// Where queues ask to be swept when their head's deadline passes.
    pub timer: Arc<ExpiryTimer>,
    /// Re-encodes the properties of dead letters; installed by the front
    /// end (without one, dead letters are dropped).
    pub codec: Arc<OnceLock<Arc<dyn PropertyCodec>>>,
    /// Republishes dead letters: the queue's vhost.
    pub dead_letters: Option<Weak<dyn DeadLetterRouter>>,
}

impl QueueEnv {
    /// An environment with the system clock, its own expiry timer, no
    /// codec and no dead-letter router.
    pub fn new(io: Arc<dyn FileIo>, syncer: Arc<Syncer>, log: LogConfig, cache_limit: i64) -> Self {
        QueueEnv {
            io,
            syncer,
            log,
            cache_limit,
            cache_used: Arc::new(AtomicI64::new(0)),
            clock: Arc::new(SystemClock),
            timer: ExpiryTimer::new(),
            codec: Arc::new(OnceLock::new()),
            dead_letters: None,
        }
    }

    /// The same with another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// Largest encode buffer a queue keeps between publishes.
const SCRATCH_KEEP: usize = 1 << 20;

const SYNC_IDLE: u8 = 0;
const SYNC_QUEUED: u8 = 1;
const SYNC_RUNNING: u8 = 2;
const SYNC_DIRTY: u8 = 3;

/// Dead letters collected under the queue lock before it is released to
/// route them (bounds the bodies held in memory at once).
const LETTER_BATCH: usize = 256;

static NEXT_CONSUMER_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
struct ConsumerEntry {
    id: u64,
    tag: Arc<str>,
    sink: Arc<dyn ConsumerSink>,
    no_ack: bool,
}

#[derive(Debug)]
struct Inner {
    state: QueueState,
    log: Log,
    consumers: Vec<ConsumerEntry>,
    rr: usize,
    exclusive_consumer: bool,
    waiters: VecDeque<(u64, ConfirmToken)>,
    scratch: Vec<u8>,
    cached_bytes: i64,
    settles_since_gc: usize,
    deleted: bool,
}

/// A queue. Shared by `Arc` between the vhost and the channels using it.
#[derive(Debug)]
pub struct Queue {
    spec: QueueSpec,
    vhost: Arc<str>,
    dir: PathBuf,
    env: QueueEnv,
    /// TTL, limits and dead-lettering; None for a plain queue.
    args: Option<Box<QueueArgs>>,
    /// Deadline of the head (`NEVER` if none): when the sweep must look.
    next_expiry: AtomicU64,
    inner: Mutex<Inner>,
    sync_lock: Mutex<()>,
    sync_state: AtomicU8,
    self_ref: Mutex<Option<std::sync::Weak<Queue>>>,
}

/// What dispatch does about the head of the queue.
enum HeadCheck {
    /// Deliver it.
    Deliver,
    /// It expired and was dropped: look at the next one.
    Expired,
    /// Stop delivering for now.
    Stop,
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
        env.io.create_dir_all(&dir)?;
        let (log, report) = Log::open(env.io.clone(), &dir, env.log.clone())?;
        tracing::debug!(queue = %spec.name, ?report, "queue log opened");
        let args = QueueArgs::parse(&spec.arguments);
        let args = (!args.is_plain()).then(|| Box::new(args));
        let track_body = args.as_ref().is_some_and(|a| a.max_length_bytes.is_some());
        let state = replay(&log, track_body)?;
        let head = state.head_deadline();
        if let Some(d) = head {
            env.timer.schedule(d);
        }
        let q = Arc::new(Queue {
            spec,
            vhost,
            dir,
            env,
            args,
            next_expiry: AtomicU64::new(head.unwrap_or(NEVER)),
            inner: Mutex::new(Inner {
                state,
                log,
                consumers: Vec::new(),
                rr: 0,
                exclusive_consumer: false,
                waiters: VecDeque::new(),
                scratch: Vec::new(),
                cached_bytes: 0,
                settles_since_gc: 0,
                deleted: false,
            }),
            sync_lock: Mutex::new(()),
            sync_state: AtomicU8::new(SYNC_IDLE),
            self_ref: Mutex::new(None),
        });
        *q.self_ref.lock() = Some(Arc::downgrade(&q));
        Ok(q)
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

    /// Messages checked out to consumers and not yet settled.
    pub fn unacked_count(&self) -> usize {
        self.inner.lock().state.unacked_len()
    }

    /// Whether the queue has been deleted.
    pub fn is_deleted(&self) -> bool {
        self.inner.lock().deleted
    }

    fn not_found(&self) -> CoreError {
        CoreError::not_found("queue", &self.spec.name, &self.vhost)
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
    pub(crate) fn publish_collect(
        &self,
        msg: &Arc<Message>,
        confirm: Option<ConfirmToken>,
        letters: &mut Vec<DeadLetter>,
    ) -> Result<Enqueued> {
        let needs_sync = msg.persistent && self.spec.durable;
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        let inner = &mut *g;
        // Plain queue, message without expiration: none of this runs.
        let featured = self.args.is_some() || msg.expiration_ms.is_some();
        let (mut now, mut deadline) = (None, None);
        if featured {
            match self.admit(inner, msg, letters) {
                Some(nd) => (now, deadline) = nd,
                None => return Ok(Enqueued::Rejected),
            }
        }
        inner.scratch.clear();
        record::encode_enqueue(msg, deadline, &mut inner.scratch);
        let pos = inner.log.append(&inner.scratch)?;
        if inner.scratch.capacity() > SCRATCH_KEEP {
            // One huge message must not pin its size in memory forever.
            inner.scratch = Vec::new();
        }
        // Only a queue with consumers will read the message back soon; a
        // backlog nobody consumes is read from the log later anyway.
        let cached = (!inner.consumers.is_empty()
            && !inner.state.spills_next()
            && self.try_cache(inner, pos.len))
        .then(|| msg.clone());
        let body = u32::try_from(msg.body.len()).unwrap_or(u32::MAX);
        inner
            .state
            .enqueue(Entry::new(pos, msg.persistent, cached), deadline, body);
        let result = match confirm {
            Some(t) if needs_sync => {
                inner.waiters.push_back((pos.index, t));
                Enqueued::Deferred
            }
            _ => Enqueued::Confirmed,
        };
        // A message a waiting consumer takes at once is never expired (as in
        // RabbitMQ, even with a TTL of 0).
        self.dispatch_locked(inner, letters, Some(pos.index));
        if featured {
            self.after_enqueue(inner, now, letters);
        }
        self.note_expiry(inner);
        drop(g);
        if needs_sync {
            self.schedule_sync();
        }
        Ok(result)
    }

    /// Length limit (reject-publish) and deadline of a message about to be
    /// enqueued: None if refused, else (now, deadline) when it has a TTL.
    #[cold]
    #[inline(never)]
    fn admit(
        &self,
        inner: &Inner,
        msg: &Arc<Message>,
        letters: &mut Vec<DeadLetter>,
    ) -> Option<(Option<u64>, Option<u64>)> {
        let mut ttl = msg.expiration_ms;
        if let Some(a) = self.args.as_deref() {
            if a.overflow != Overflow::DropHead
                && a.over_limit(
                    inner.state.ready_len() as u64 + 1,
                    inner.state.ready_body_bytes() + msg.body.len() as u64,
                )
            {
                if a.overflow == Overflow::RejectPublishDlx {
                    letters.extend(self.letter(msg.clone(), Reason::Maxlen));
                }
                return None;
            }
            ttl = match (ttl, a.message_ttl) {
                (Some(m), Some(q)) => Some(m.min(q)),
                (m, q) => m.or(q),
            };
        }
        let now = ttl.map(|_| self.env.clock.now_ms());
        Some((now, now.zip(ttl).map(|(n, t)| n.saturating_add(t))))
    }

    /// After an enqueue: drop-head overflow, and expiry of the head when
    /// the new message has a deadline (it may be the head, TTL 0).
    #[cold]
    #[inline(never)]
    fn after_enqueue(&self, inner: &mut Inner, now: Option<u64>, letters: &mut Vec<DeadLetter>) {
        if let Some(a) = self.args.as_deref() {
            if a.limited() {
                self.drop_over_limit(inner, a, letters);
            }
        }
        if let Some(n) = now {
            self.expire_locked(inner, n, letters);
        }
    }

    /// A dead letter for `msg`, if this queue has a dead-letter exchange.
    fn letter(&self, msg: Arc<Message>, reason: Reason) -> Option<DeadLetter> {
        let a = self.args.as_deref()?;
        Some(DeadLetter {
            message: msg,
            reason,
            queue: self.spec.name.clone(),
            exchange: a.dead_letter_exchange.clone()?,
            routing_key: a.dead_letter_routing_key.clone(),
        })
    }

    fn has_dlx(&self) -> bool {
        self.args
            .as_deref()
            .is_some_and(|a| a.dead_letter_exchange.is_some())
    }

    /// Hands dead letters to the vhost. Must be called without the lock.
    #[inline]
    fn route_letters(&self, letters: Vec<DeadLetter>) {
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

    /// Removes `e` (just taken off the queue for `reason`) and, with a
    /// dead-letter exchange, adds its dead letter to `letters`.
    fn kill(&self, inner: &mut Inner, e: &Entry, reason: Reason, letters: &mut Vec<DeadLetter>) {
        self.uncache(inner, e);
        if !self.has_dlx() {
            return;
        }
        match self.load(inner, e) {
            Ok(m) => letters.extend(self.letter(m, reason)),
            Err(err) => tracing::error!(
                queue = %self.spec.name, error = %err,
                "cannot read a message to dead-letter it; dropped"
            ),
        }
    }

    /// Drop-head overflow: removes the oldest ready messages while the
    /// queue is over its limits.
    fn drop_over_limit(&self, inner: &mut Inner, a: &QueueArgs, letters: &mut Vec<DeadLetter>) {
        let mut ids = Vec::new();
        while a.over_limit(
            inner.state.ready_len() as u64,
            inner.state.ready_body_bytes(),
        ) {
            self.ensure_window(inner);
            let Some(e) = inner.state.drop_head() else {
                break;
            };
            self.kill(inner, &e, Reason::Maxlen, letters);
            ids.push(e.id);
        }
        self.write_drop(inner, Reason::Maxlen, &ids);
    }

    /// Drops expired messages from the head. False if it stopped at the
    /// dead-letter batch limit with an expired head left.
    fn expire_locked(&self, inner: &mut Inner, now: u64, letters: &mut Vec<DeadLetter>) -> bool {
        if !inner.state.has_meta() && inner.state.spill().is_none() {
            return true;
        }
        let mut ids = Vec::new();
        let mut done = true;
        loop {
            self.ensure_window(inner);
            match inner.state.head_deadline() {
                Some(d) if d <= now => {}
                _ => break,
            }
            if letters.len() >= LETTER_BATCH {
                done = false;
                break;
            }
            let Some(e) = inner.state.drop_head() else {
                break;
            };
            self.kill(inner, &e, Reason::Expired, letters);
            ids.push(e.id);
        }
        self.write_drop(inner, Reason::Expired, &ids);
        done
    }

    /// Publishes the head's deadline to the sweep.
    #[inline]
    fn note_expiry(&self, inner: &Inner) {
        if inner.state.has_meta() || self.next_expiry.load(Ordering::Relaxed) != NEVER {
            self.note_expiry_slow(inner);
        }
    }

    #[cold]
    #[inline(never)]
    fn note_expiry_slow(&self, inner: &Inner) {
        let d = inner.state.head_deadline().unwrap_or(NEVER);
        self.next_expiry.store(d, Ordering::Relaxed);
        if d != NEVER {
            self.env.timer.schedule(d);
        }
    }

    /// Whether the queue keeps deadlines or body sizes (tests: a plain
    /// queue must not).
    #[cfg(test)]
    pub(crate) fn has_side_table(&self) -> bool {
        self.inner.lock().state.has_meta()
    }

    /// The head's deadline (`NEVER` if none): when `expire` has work.
    pub fn next_expiry(&self) -> u64 {
        self.next_expiry.load(Ordering::Relaxed)
    }

    /// Drops (and dead-letters) the messages at the head whose deadline
    /// is at or before `now`, then delivers what is left. Called by the
    /// broker's expiry sweep.
    pub fn expire(&self, now: u64) {
        loop {
            let mut letters = Vec::new();
            let more = {
                let mut g = self.inner.lock();
                if g.deleted {
                    return;
                }
                let inner = &mut *g;
                let done = self.expire_locked(inner, now, &mut letters);
                self.dispatch_locked(inner, &mut letters, None);
                self.note_expiry(inner);
                !done
            };
            self.route_letters(letters);
            if !more {
                return;
            }
        }
    }

    fn try_cache(&self, inner: &mut Inner, size: u32) -> bool {
        let size = i64::from(size);
        let used = self.env.cache_used.fetch_add(size, Ordering::Relaxed);
        if used + size > self.env.cache_limit {
            self.env.cache_used.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        inner.cached_bytes += size;
        true
    }

    fn uncache(&self, inner: &mut Inner, e: &Entry) {
        if e.cached.is_some() {
            let size = i64::from(e.size());
            inner.cached_bytes -= size;
            self.env.cache_used.fetch_sub(size, Ordering::Relaxed);
        }
    }

    /// Drops the bodies this queue keeps in memory (memory alarm): they
    /// are read back from the log when delivered.
    pub fn shed_cache(&self) {
        let mut g = self.inner.lock();
        if g.cached_bytes == 0 {
            return;
        }
        g.state.drop_cached();
        self.env
            .cache_used
            .fetch_sub(g.cached_bytes, Ordering::Relaxed);
        g.cached_bytes = 0;
    }

    /// Registers a consumer. Returns its id (for `cancel`).
    pub fn consume(
        &self,
        tag: Arc<str>,
        sink: Arc<dyn ConsumerSink>,
        no_ack: bool,
        exclusive: bool,
    ) -> Result<u64> {
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        if g.exclusive_consumer || (exclusive && !g.consumers.is_empty()) {
            return Err(CoreError::request(
                ErrorKind::AccessRefused,
                format!(
                    "queue '{}' in vhost '{}' in exclusive use",
                    self.spec.name, self.vhost
                ),
            ));
        }
        let id = NEXT_CONSUMER_ID.fetch_add(1, Ordering::Relaxed);
        g.exclusive_consumer = exclusive;
        g.consumers.push(ConsumerEntry {
            id,
            tag,
            sink,
            no_ack,
        });
        // No dispatch here: the front end first answers consume-ok, which
        // must reach the client before the first delivery, then calls
        // `dispatch`.
        Ok(id)
    }

    /// Removes a consumer. Returns true when an auto-delete queue just lost
    /// its last consumer (the vhost then deletes it).
    pub fn cancel(&self, consumer_id: u64) -> bool {
        let mut g = self.inner.lock();
        let before = g.consumers.len();
        g.consumers.retain(|c| c.id != consumer_id);
        if g.consumers.len() != before {
            g.exclusive_consumer = false;
        }
        before > 0 && g.consumers.is_empty() && self.spec.auto_delete && !g.deleted
    }

    /// Tries to deliver ready messages (after credit was freed).
    pub fn dispatch(&self) {
        let mut letters = Vec::new();
        {
            let mut g = self.inner.lock();
            self.dispatch_locked(&mut g, &mut letters, None);
            self.note_expiry(&g);
        }
        self.route_letters(letters);
    }

    fn load(&self, inner: &mut Inner, e: &Entry) -> Result<Arc<Message>> {
        if let Some(m) = &e.cached {
            return Ok(m.clone());
        }
        let rec = inner.log.read(&e.pos())?;
        match record::decode(rec.payload)? {
            Record::Enqueue { msg, .. } => Ok(Arc::new(msg)),
            _ => Err(CoreError::Corrupt(format!(
                "record {} of queue '{}' is not an enqueue",
                e.id, self.spec.name
            ))),
        }
    }

    /// Loads the next part of a spilled backlog back into memory.
    fn refill(&self, inner: &mut Inner) -> Result<()> {
        let Some(sp) = inner.state.spill() else {
            return Ok(());
        };
        let want = WINDOW.saturating_sub(inner.state.in_memory_len());
        let cache_ok = !inner.consumers.is_empty();
        let Inner {
            log,
            state,
            cached_bytes,
            ..
        } = inner;
        let mut loaded = 0;
        let mut next = sp.from;
        for item in log.reader(sp.from) {
            let (pos, rec) = item?;
            if rec.index >= sp.to || loaded >= want {
                next = rec.index;
                break;
            }
            next = rec.index + 1;
            if let Record::Enqueue { msg: m, expires_at } = record::decode(rec.payload)? {
                let size = i64::from(pos.len);
                let cached = if cache_ok
                    && self.env.cache_used.fetch_add(size, Ordering::Relaxed) + size
                        <= self.env.cache_limit
                {
                    *cached_bytes += size;
                    Some(Arc::new(m.clone()))
                } else {
                    if cache_ok {
                        self.env.cache_used.fetch_sub(size, Ordering::Relaxed);
                    }
                    None
                };
                let body = u32::try_from(m.body.len()).unwrap_or(u32::MAX);
                state.refill_push(Entry::new(pos, m.persistent, cached), expires_at, body);
                loaded += 1;
            }
        }
        state.refill_advance(next);
        Ok(())
    }

    fn ensure_window(&self, inner: &mut Inner) {
        if inner.state.wants_refill() {
            if let Err(e) = self.refill(inner) {
                tracing::error!(queue = %self.spec.name, error = %e, "cannot load spilled messages");
            }
        }
    }

    /// Delivers ready messages to consumers with credit. Expired heads are
    /// dropped on the way (except `fresh`, the message being published).
    fn dispatch_locked(
        &self,
        inner: &mut Inner,
        letters: &mut Vec<DeadLetter>,
        fresh: Option<u64>,
    ) {
        if inner.deleted {
            return;
        }
        let mut settled: Vec<u64> = Vec::new();
        let mut now: Option<u64> = None;
        while inner.state.ready_len() > 0 && !inner.consumers.is_empty() {
            self.ensure_window(inner);
            if inner.state.has_meta() {
                match self.expire_before_delivery(inner, &mut now, fresh, letters) {
                    HeadCheck::Deliver => {}
                    HeadCheck::Expired => continue,
                    HeadCheck::Stop => break,
                }
            }
            let n = inner.consumers.len();
            let Some(idx) = (0..n)
                .map(|i| (inner.rr + i) % n)
                .find(|&i| inner.consumers[i].sink.reserve())
            else {
                break;
            };
            inner.rr = (idx + 1) % n;
            let Some(head) = inner.state.peek_ready().cloned() else {
                inner.consumers[idx].sink.unreserve();
                break;
            };
            let message = match self.load(inner, &head) {
                Ok(m) => m,
                Err(e) => {
                    inner.consumers[idx].sink.unreserve();
                    tracing::error!(queue = %self.spec.name, error = %e, "cannot read message");
                    break;
                }
            };
            let Some(entry) = inner.state.pop_ready() else {
                break;
            };
            self.uncache(inner, &entry);
            let c = &inner.consumers[idx];
            let delivery = Delivery {
                queue: self.spec.name.clone(),
                msg_id: entry.id,
                message,
                redelivered: entry.redelivered(),
                delivery_count: u32::from(entry.delivery_count),
            };
            if c.no_ack {
                settled.push(entry.id);
            } else {
                inner.state.check_out(entry);
            }
            c.sink.deliver(&c.tag, delivery);
        }
        if !settled.is_empty() {
            if let Err(e) = self.write_ids(inner, false, &settled) {
                tracing::error!(queue = %self.spec.name, error = %e, "cannot log settle");
            }
        }
    }

    /// Drops the head if it expired (unless it is `fresh`, the message
    /// being published), reading the clock at most once per dispatch.
    #[cold]
    #[inline(never)]
    fn expire_before_delivery(
        &self,
        inner: &mut Inner,
        now: &mut Option<u64>,
        fresh: Option<u64>,
        letters: &mut Vec<DeadLetter>,
    ) -> HeadCheck {
        let Some(d) = inner.state.head_deadline() else {
            return HeadCheck::Deliver;
        };
        let head = inner.state.peek_ready().map(|e| e.id);
        let now = *now.get_or_insert_with(|| self.env.clock.now_ms());
        if d > now || head == fresh {
            return HeadCheck::Deliver;
        }
        if self.expire_locked(inner, now, letters) {
            return HeadCheck::Expired;
        }
        // Too many dead letters at once: the sweep goes on (and delivers)
        // once these are routed.
        self.env.timer.schedule(now);
        HeadCheck::Stop
    }

    /// basic.get: takes the head message. Returns it with the number of
    /// messages left.
    pub fn get(&self, no_ack: bool) -> Result<Option<(Delivery, u32)>> {
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
        self.ensure_window(inner);
        if inner.state.head_deadline().is_some() {
            let now = self.env.clock.now_ms();
            let done = self.expire_locked(inner, now, letters);
            self.note_expiry(inner);
            if !done {
                return Ok(None);
            }
        }
        let Some(head) = inner.state.peek_ready().cloned() else {
            return Ok(None);
        };
        let message = self.load(inner, &head)?;
        let Some(entry) = inner.state.pop_ready() else {
            return Ok(None);
        };
        self.uncache(inner, &entry);
        let d = Delivery {
            queue: self.spec.name.clone(),
            msg_id: entry.id,
            message,
            redelivered: entry.redelivered(),
            delivery_count: u32::from(entry.delivery_count),
        };
        if no_ack {
            self.write_ids(inner, false, &[entry.id])?;
        } else {
            inner.state.check_out(entry);
        }
        self.note_expiry(inner);
        Ok(Some((d, inner.state.ready_len() as u32)))
    }

    /// Logs a Drop record (nothing if `ids` is empty).
    fn try_write_drop(&self, inner: &mut Inner, reason: Reason, ids: &[u64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        inner.scratch.clear();
        record::encode_drop(reason, ids, &mut inner.scratch);
        inner.log.append(&inner.scratch)?;
        self.count_settles(inner, ids.len());
        Ok(())
    }

    /// `try_write_drop` for the queue's own housekeeping (expiry,
    /// overflow), which has nobody to report a failure to.
    fn write_drop(&self, inner: &mut Inner, reason: Reason, ids: &[u64]) {
        if let Err(e) = self.try_write_drop(inner, reason, ids) {
            tracing::error!(queue = %self.spec.name, error = %e, "cannot log dropped messages");
        }
    }

    fn write_ids(&self, inner: &mut Inner, requeue: bool, ids: &[u64]) -> Result<()> {
        inner.scratch.clear();
        record::encode_ids(requeue, ids, &mut inner.scratch);
        inner.log.append(&inner.scratch)?;
        if !requeue {
            self.count_settles(inner, ids.len());
        }
        Ok(())
    }

    fn count_settles(&self, inner: &mut Inner, n: usize) {
        inner.settles_since_gc += n;
        if inner.settles_since_gc >= 4096 {
            inner.settles_since_gc = 0;
            self.gc_segments(inner);
            // The log removes only fsynced segments; a queue that never
            // needs a sync for confirms (transient traffic) gets one here
            // so its settled segments can go.
            self.schedule_sync();
        }
    }

    /// Removes log segments that hold only settled messages.
    fn gc_segments(&self, inner: &mut Inner) {
        let live = inner
            .state
            .min_live_id()
            .unwrap_or_else(|| inner.log.next_index());
        if let Err(e) = inner.log.purge_before(live) {
            tracing::warn!(queue = %self.spec.name, error = %e, "segment cleanup failed");
        }
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
            let done: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| {
                    if requeue {
                        inner.state.requeue(*id)
                    } else {
                        inner.state.settle(*id)
                    }
                })
                .collect();
            if !done.is_empty() {
                self.write_ids(inner, requeue, &done)?;
            }
            self.dispatch_locked(inner, &mut letters, None);
            self.note_expiry(inner);
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
                let mut done = Vec::with_capacity(chunk.len());
                for id in chunk {
                    if let Some(e) = inner.state.take_unacked(*id) {
                        self.kill(inner, &e, Reason::Rejected, &mut letters);
                        done.push(e.id);
                    }
                }
                let logged = self.try_write_drop(inner, Reason::Rejected, &done);
                self.dispatch_locked(inner, &mut letters, None);
                self.note_expiry(inner);
                logged
            };
            self.route_letters(letters);
            logged?;
        }
        Ok(())
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> Result<u32> {
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        let inner = &mut *g;
        let upto = inner.log.next_index();
        let (n, keep) = inner.state.purge_ready();
        self.env
            .cache_used
            .fetch_sub(inner.cached_bytes, Ordering::Relaxed);
        inner.cached_bytes = 0;
        inner.scratch.clear();
        record::encode_purge(upto, &keep, &mut inner.scratch);
        inner.log.append(&inner.scratch)?;
        self.gc_segments(inner);
        self.note_expiry(inner);
        Ok(n as u32)
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
            let consumers = std::mem::take(&mut g.consumers);
            let waiters: Vec<ConfirmToken> = g.waiters.drain(..).map(|(_, t)| t).collect();
            self.env
                .cache_used
                .fetch_sub(g.cached_bytes, Ordering::Relaxed);
            g.cached_bytes = 0;
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
        self.env.io.remove_dir_all(&self.dir)?;
        Ok(n)
    }

    /// Requests a group-commit sync of this queue's log. A queue is handed
    /// to the Syncer at most once at a time; appends that land while its
    /// fsync runs mark it dirty, and the same thread syncs again, so one
    /// busy queue costs no extra thread wake-ups or lock contention.
    fn schedule_sync(&self) {
        loop {
            let cur = self.sync_state.load(Ordering::Acquire);
            let next = match cur {
                SYNC_IDLE => SYNC_QUEUED,
                SYNC_RUNNING => SYNC_DIRTY,
                _ => return,
            };
            if self
                .sync_state
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            if next == SYNC_QUEUED {
                let me = self.self_ref.lock().as_ref().and_then(|w| w.upgrade());
                match me {
                    Some(q) => self.env.syncer.submit(q),
                    None => self.sync_state.store(SYNC_IDLE, Ordering::Release),
                }
            }
            return;
        }
    }

    /// Flushes and fsyncs now (shutdown, tests).
    pub fn sync_now(&self) {
        self.sync_once();
    }

    /// One group commit: flush and capture under the lock, fsync outside
    /// it, then release the waiters the fsync covered.
    fn sync_once(&self) {
        let _serial = self.sync_lock.lock();
        let job = {
            let mut g = self.inner.lock();
            if g.deleted {
                return;
            }
            g.log.prepare_sync()
        };
        let outcome = match job {
            Ok(Some(job)) => Some(job.run()),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(queue = %self.spec.name, error = %e, "sync failed");
                None
            }
        };
        let (ok, failed) = {
            let mut g = self.inner.lock();
            if let Some(o) = outcome {
                if let Some(e) = o.error() {
                    // The alarm: from here on this queue nacks publishes
                    // and refuses writes until the broker restarts.
                    tracing::error!(
                        queue = %self.spec.name, vhost = %self.vhost, error = %e,
                        "ALARM: fsync failed, queue log poisoned; pending and new \
                         publishes are nacked until restart"
                    );
                }
                g.log.complete_sync(o);
            }
            let mut ok = Vec::new();
            let mut failed = Vec::new();
            if g.log.is_poisoned() {
                failed.extend(g.waiters.drain(..).map(|(_, t)| t));
            } else if let Some(durable) = g.log.durable_index() {
                while g.waiters.front().is_some_and(|(i, _)| *i <= durable) {
                    if let Some((_, t)) = g.waiters.pop_front() {
                        ok.push(t);
                    }
                }
            }
            (ok, failed)
        };
        for_each_sink_run(ok, |s, seqs| s.confirmed(seqs));
        for_each_sink_run(failed, |s, seqs| s.failed(seqs));
    }
}

impl SyncTask for Queue {
    fn run_sync(&self) {
        self.sync_state.store(SYNC_RUNNING, Ordering::Release);
        loop {
            self.sync_once();
            match self.sync_state.compare_exchange(
                SYNC_RUNNING,
                SYNC_IDLE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                // Dirtied while we synced: go again on this thread.
                Err(_) => self.sync_state.store(SYNC_RUNNING, Ordering::Release),
            }
        }
    }
}

fn replay(log: &Log, track_body: bool) -> Result<QueueState> {
    let mut r = Replay::new(track_body);
    for item in log.reader(log.first_index()) {
        let (pos, rec) = item?;
        match record::decode(rec.payload)? {
            Record::Enqueue { msg, expires_at } => r.enqueue(pos, &msg, expires_at),
            Record::Settle(ids) | Record::Drop { ids, .. } => r.settle(&ids),
            Record::Requeue(ids) => r.requeue(&ids),
            Record::Purge { upto, keep } => r.purge(upto, &keep),
        }
    }
    Ok(r.finish())
}

mod arc_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(d).map(Arc::from)
    }
}

//! A queue: the state machine, its command log and its consumers.
//!
//! Every change goes through the log first: an operation decides a
//! `Command` (Enqueue, Settle, Requeue, Retry, Purge, Drop) without
//! touching the state, appends its record, then runs `apply::apply` — the
//! same function restart replay runs — and executes the returned effects
//! (`commit`). Publisher confirms for persistent
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
//!
//! Priorities (`x-max-priority`: one ready list per level in `QueueState`,
//! the level written into the Enqueue record), consumer priorities and
//! single active consumer (`dispatch::pick_consumer`), queue expiry
//! (`x-expires`: an idle deadline on the broker's `ExpiryTimer`) and the
//! delivery limit (returns counted by Requeue records; past the limit a
//! Drop with reason `delivery_limit`) live in `features` and `dispatch`;
//! delayed retry (`x-retry-*`: returns wait, their due times in Retry
//! records) and a delayed exchange's holds live in `delayed`; a policy
//! change reaching the queue (`apply_arguments`) in `policy`.

use super::args::{Overflow, QueueArgs, QUORUM_DELIVERY_LIMIT};
use super::command::{Command, Facts};
use super::dead_letter::{DeadLetter, DeadLetterRouter, Reason};
use super::record::{self, Record};
use super::sinks::{for_each_sink_run, ConfirmToken, ConsumerSink, Delivery};
use super::state::{Entry, QueueState};
use crate::clock::{Clock, ExpiryTimer, SystemClock, NEVER};
use crate::error::{CoreError, ErrorKind, Result};
use crate::syncer::{SyncSchedule, Syncer};
use ferry_log::{FileIo, Log, LogConfig};
use ferry_model::message::Message;
use ferry_model::Table;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

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
    #[serde(with = "ferry_route::table_serde", default)]
    pub arguments: Table,
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
    /// Republishes dead letters: the queue's vhost.
    pub dead_letters: Option<Weak<dyn DeadLetterRouter>>,
    /// The delivery limit of quorum queues declared without
    /// `x-delivery-limit` (None = unlimited).
    pub quorum_delivery_limit: Option<u64>,
}

impl QueueEnv {
    /// An environment with the system clock, its own expiry timer and no
    /// dead-letter router.
    pub fn new(io: Arc<dyn FileIo>, syncer: Arc<Syncer>, log: LogConfig, cache_limit: i64) -> Self {
        QueueEnv {
            io,
            syncer,
            log,
            cache_limit,
            cache_used: Arc::new(AtomicI64::new(0)),
            clock: Arc::new(SystemClock),
            timer: ExpiryTimer::new(),
            dead_letters: None,
            quorum_delivery_limit: Some(QUORUM_DELIVERY_LIMIT),
        }
    }

    /// The same with another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

mod commit;
mod delayed;
mod dispatch;
mod features;
mod policy;
mod sync;

use sync::replay;

/// Largest encode buffer a queue keeps between publishes.
const SCRATCH_KEEP: usize = 1 << 20;

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
    /// `x-priority` of basic.consume (0 if none).
    priority: i64,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// TTL, limits and dead-lettering; None for a plain queue. Replaced
    /// when a policy changes (`policy.rs`); read through the guard.
    args: Option<Arc<QueueArgs>>,
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
    /// Whether `Inner::args` is set: plain queues skip the argument
    /// checks without the lock (written with `inner` held).
    has_args: AtomicBool,
    /// Deadline of the head (`NEVER` if none): when the sweep must look.
    next_expiry: AtomicU64,
    /// When the queue expires unused (`x-expires`; `NEVER` while it has
    /// consumers or has no such argument).
    idle_deadline: AtomicU64,
    inner: Mutex<Inner>,
    sync_lock: Mutex<()>,
    sync_state: SyncSchedule,
    self_ref: Mutex<Option<std::sync::Weak<Queue>>>,
    /// Message counters (management API, metrics).
    stats: super::stats::QueueStats,
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
        let args = QueueArgs::parse(effective, env.quorum_delivery_limit);
        let args = (!args.is_plain()).then(|| Arc::new(args));
        let track_body = args.as_ref().is_some_and(|a| a.max_length_bytes.is_some());
        let levels = args.as_ref().map_or(1, |a| a.levels());
        let state = replay(&log, levels, track_body)?;
        // The head's deadline or the next waiting message's time
        // (replayed retries resume their wait).
        let head = match (state.head_deadline(), state.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(d) = head {
            env.timer.schedule(d);
        }
        // x-expires counts from the (re)start, as in RabbitMQ: a queue has
        // no consumers when it opens.
        let idle = match args.as_ref().and_then(|a| a.expires) {
            Some(ms) => {
                let at = env.clock.now_ms().saturating_add(ms);
                env.timer.schedule(at);
                at
            }
            None => NEVER,
        };
        let q = Arc::new(Queue {
            spec,
            vhost,
            dir,
            env,
            has_args: AtomicBool::new(args.is_some()),
            next_expiry: AtomicU64::new(head.unwrap_or(NEVER)),
            idle_deadline: AtomicU64::new(idle),
            inner: Mutex::new(Inner {
                args,
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
            sync_state: SyncSchedule::default(),
            self_ref: Mutex::new(None),
            stats: Default::default(),
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

    /// Message counters.
    pub fn stats(&self) -> &super::stats::QueueStats {
        &self.stats
    }

    /// Ready / unacked messages and bytes, consumers (one lock).
    pub fn depth(&self) -> super::stats::Depth {
        let g = self.inner.lock();
        super::stats::Depth {
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
        let g = self.inner.lock();
        g.consumers
            .iter()
            .map(|c| (c.tag.clone(), c.no_ack))
            .collect()
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
            match self.admit(inner, msg, letters) {
                Some(a) => (now, deadline, priority, held) = a,
                None => return Ok(Enqueued::Rejected),
            }
        }
        let facts = Facts {
            deadline,
            priority,
            not_before: held,
        };
        let (pos, _) = self.commit(inner, &Command::Enqueue { msg, facts })?;
        // Only a queue with consumers will read the message back soon; a
        // backlog nobody consumes is read from the log later anyway. The
        // cache is the leader's memory, not state: set after `apply`.
        let p = priority.unwrap_or(0);
        if !inner.consumers.is_empty()
            && inner.state.tail_mut(pos.index, p).is_some()
            && self.try_cache(inner, pos.len)
        {
            inner.state.cache_tail(pos.index, p, msg.clone());
        }
        self.stats.published();
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
        // A single-active-consumer queue refuses exclusive consumers
        // outright (RabbitMQ's exclusive_consume_unavailable).
        if g.exclusive_consumer
            || (exclusive && (!g.consumers.is_empty() || Self::single_active(&g)))
        {
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
        let c = ConsumerEntry {
            id,
            tag,
            sink,
            no_ack,
            priority,
        };
        // Kept sorted by priority, highest first, registration order
        // within one; a single-active-consumer queue keeps plain
        // registration order (its first consumer is the active one).
        let at = if Self::single_active(&g) {
            g.consumers.len()
        } else {
            g.consumers.partition_point(|x| x.priority >= priority)
        };
        g.consumers.insert(at, c);
        self.idle_deadline.store(NEVER, Ordering::Relaxed);
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
        let was_active = g.consumers.first().is_some_and(|c| c.id == consumer_id);
        g.consumers.retain(|c| c.id != consumer_id);
        if g.consumers.len() != before {
            g.exclusive_consumer = false;
            if g.consumers.is_empty() {
                self.touch_locked(&g);
            }
        }
        let auto_deleted =
            before > 0 && g.consumers.is_empty() && self.spec.auto_delete && !g.deleted;
        if was_active && Self::single_active(&g) && !g.consumers.is_empty() {
            // The next consumer in registration order takes over.
            let mut letters = Vec::new();
            self.dispatch_locked(&mut g, &mut letters, None);
            self.note_expiry(&g);
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

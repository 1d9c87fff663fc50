//! A queue: the state machine, its command log and its consumers.
//!
//! Every change goes through the log first (Enqueue, Settle, Requeue,
//! Purge), then into `QueueState`. Publisher confirms for persistent
//! messages wait for the fsync of their Enqueue record (group commit via
//! the `Syncer`). Young message bodies stay in a bounded shared cache so a
//! consumer that keeps up never reads the disk; older ones are read back
//! from the log when delivered.
//!
//! Lock order: `sync_lock` → `inner` → (sinks: channel locks). Nothing
//! called under `inner` may call back into a queue.

use super::record::{self, Record};
use super::sinks::{for_each_sink_run, ConfirmToken, ConsumerSink, Delivery};
use super::state::{Entry, QueueState, Replay, WINDOW};
use crate::error::{CoreError, ErrorKind, Result};
use crate::message::Message;
use crate::syncer::{SyncTask, Syncer};
use amq_protocol_types::FieldTable;
use ferry_log::{FileIo, Log, LogConfig};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

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
}

/// Largest encode buffer a queue keeps between publishes.
const SCRATCH_KEEP: usize = 1 << 20;

const SYNC_IDLE: u8 = 0;
const SYNC_QUEUED: u8 = 1;
const SYNC_RUNNING: u8 = 2;
const SYNC_DIRTY: u8 = 3;

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
    inner: Mutex<Inner>,
    sync_lock: Mutex<()>,
    sync_state: AtomicU8,
    self_ref: Mutex<Option<std::sync::Weak<Queue>>>,
}

/// What `publish` did with a confirm token.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored as far as this queue's guarantee goes: confirm now.
    Confirmed,
    /// The confirm is sent after the fsync.
    Deferred,
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
        let state = replay(&log)?;
        let q = Arc::new(Queue {
            spec,
            vhost,
            dir,
            env,
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
        let needs_sync = msg.persistent && self.spec.durable;
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        let inner = &mut *g;
        inner.scratch.clear();
        record::encode_enqueue(msg, &mut inner.scratch);
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
        inner.state.enqueue(Entry::new(pos, msg.persistent, cached));
        let result = match confirm {
            Some(t) if needs_sync => {
                inner.waiters.push_back((pos.index, t));
                Enqueued::Deferred
            }
            _ => Enqueued::Confirmed,
        };
        self.dispatch_locked(inner);
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
        let mut g = self.inner.lock();
        self.dispatch_locked(&mut g);
    }

    fn load(&self, inner: &mut Inner, e: &Entry) -> Result<Arc<Message>> {
        if let Some(m) = &e.cached {
            return Ok(m.clone());
        }
        let rec = inner.log.read(&e.pos())?;
        match record::decode(rec.payload)? {
            Record::Enqueue(m) => Ok(Arc::new(m)),
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
            if let Record::Enqueue(m) = record::decode(rec.payload)? {
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
                state.refill_push(Entry::new(pos, m.persistent, cached));
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

    fn dispatch_locked(&self, inner: &mut Inner) {
        if inner.deleted {
            return;
        }
        let mut settled: Vec<u64> = Vec::new();
        while inner.state.ready_len() > 0 && !inner.consumers.is_empty() {
            self.ensure_window(inner);
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

    /// basic.get: takes the head message. Returns it with the number of
    /// messages left.
    pub fn get(&self, no_ack: bool) -> Result<Option<(Delivery, u32)>> {
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        let inner = &mut *g;
        self.ensure_window(inner);
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
        Ok(Some((d, inner.state.ready_len() as u32)))
    }

    fn write_ids(&self, inner: &mut Inner, requeue: bool, ids: &[u64]) -> Result<()> {
        inner.scratch.clear();
        record::encode_ids(requeue, ids, &mut inner.scratch);
        inner.log.append(&inner.scratch)?;
        if !requeue {
            inner.settles_since_gc += ids.len();
            if inner.settles_since_gc >= 4096 {
                inner.settles_since_gc = 0;
                self.gc_segments(inner);
                // The log removes only fsynced segments; a queue that never
                // needs a sync for confirms (transient traffic) gets one here
                // so its settled segments can go.
                self.schedule_sync();
            }
        }
        Ok(())
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
        self.dispatch_locked(inner);
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

fn replay(log: &Log) -> Result<QueueState> {
    let mut r = Replay::new();
    for item in log.reader(log.first_index()) {
        let (pos, rec) = item?;
        match record::decode(rec.payload)? {
            Record::Enqueue(m) => r.enqueue(pos, &m),
            Record::Settle(ids) => r.settle(&ids),
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

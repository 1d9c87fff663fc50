//! [`Stream`]: an append-only log of messages that consumers read without
//! removing anything, each from its own offset.
//!
//! * Offsets are the log's record indexes (0 for a new stream). A record
//!   carries its publish time (`record.rs`), taken from `QueueEnv`'s clock
//!   and never decreasing within a stream.
//! * Every append joins the node's next durability round. Consumers read only the
//!   durable prefix (`committed`), so an offset a consumer has seen never
//!   names a different message after a crash (the Kafka front end relies on
//!   this). Confirms of persistent messages go out after the same fsync.
//! * A consumer is an offset plus a `ConsumerSink`: dispatch reads records
//!   from the log in order while the sink grants credit (prefetch and
//!   socket room), so catching up on a large stream holds at most a
//!   prefetch window of messages in memory. Acks only give credit back.
//!   Consumers at the tail are woken by the sync that commits new records.
//! * Pull reads (`Stream::read`, `Stream::wait_for`, for Kafka) and the
//!   push consumers' reads live in `pull.rs`; wherever `committed`
//!   advances, `readers.advance` must follow (delete and crash close it).
//! * Retention (`retention.rs`): whole segments, oldest first.
//!
//! Lock order: `sync_lock` → `inner` → sinks (channel locks); `inner` →
//! `readers` (a leaf).

use super::args::StreamArgs;
use super::offset::OffsetSpec;
use super::pull::Readers;
use super::record;
use crate::clock::NEVER;
use crate::error::{CoreError, ErrorKind, Result};
use crate::message::Message;
use crate::queue::sinks::for_each_sink_run;
use crate::queue::stats::QueueStats;
use crate::queue::{ConfirmToken, ConsumerSink, Enqueued, QueueEnv, QueueSpec};
use crate::syncer::{complete_log, prepare_log, sync_alone, LogName, SyncSchedule, SyncTask};
use amq_protocol_types::FieldTable;
use bytes::Bytes;
use ferry_log::Log;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// Largest encode buffer kept between publishes.
const SCRATCH_KEEP: usize = 1 << 20;

static NEXT_CONSUMER_ID: AtomicU64 = AtomicU64::new(1);

/// How basic.consume asked for a stream consumer.
#[derive(Debug, Clone, Copy)]
pub struct StreamConsume<'a> {
    /// no_ack flag (refused: streams need manual acks).
    pub no_ack: bool,
    /// The channel's per-consumer prefetch (0 = none: refused).
    pub prefetch: u32,
    /// basic.consume's arguments (`x-stream-offset`).
    pub arguments: &'a FieldTable,
}

#[derive(Debug)]
pub(super) struct Consumer {
    pub(super) id: u64,
    pub(super) tag: Arc<str>,
    pub(super) sink: Arc<dyn ConsumerSink>,
    /// The next offset it gets.
    pub(super) next: u64,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) log: Log,
    /// Records below this are durable and may be delivered.
    pub(super) committed: u64,
    pub(super) consumers: Vec<Consumer>,
    waiters: VecDeque<(u64, ConfirmToken)>,
    /// (base, newest timestamp) of every sealed segment, oldest first.
    pub(super) sealed_ts: VecDeque<(u64, u64)>,
    /// Base of the segment appends go to.
    pub(super) active_base: u64,
    /// Timestamp of the newest record.
    pub(super) last_ts: u64,
    /// A roll happened or a purge could not finish yet (the segment was
    /// not settled): evaluate retention after the next sync.
    pub(super) retention_pending: bool,
    scratch: Vec<u8>,
    pub(super) deleted: bool,
    /// Stopped on an unreadable record (`crash_locked`): deleted for
    /// every use, but its files stay until the stream is deleted.
    crashed: bool,
    /// The retention in force (`x-max-age`, `x-max-length-bytes`, or a
    /// policy's `max-age` / `max-length-bytes`, which win).
    pub(super) retention: StreamArgs,
}

/// A stream. Shared by `Arc` between the vhost and the channels using it.
#[derive(Debug)]
pub struct Stream {
    spec: QueueSpec,
    vhost: Arc<str>,
    dir: PathBuf,
    pub(super) env: QueueEnv,
    pub(super) args: StreamArgs,
    pub(super) inner: Mutex<Inner>,
    sync_lock: Mutex<()>,
    sync_state: SyncSchedule,
    me: Weak<Stream>,
    /// When age retention must look again (`NEVER` if not needed).
    pub(super) retention_at: AtomicU64,
    stats: QueueStats,
    /// Pull readers waiting for records to commit (`pull.rs`).
    pub(super) readers: Readers,
}

impl Stream {
    /// Opens (recovering) or creates the stream whose log lives in `dir`.
    pub fn open(
        spec: QueueSpec,
        vhost: Arc<str>,
        dir: PathBuf,
        env: QueueEnv,
    ) -> Result<Arc<Self>> {
        let args = spec.arguments.clone();
        Self::open_effective(spec, &args, vhost, dir, env)
    }

    /// `open` acting on `effective` arguments (the declared ones with a
    /// policy's retention keys, `policy::effective_stream_args`).
    pub fn open_effective(
        spec: QueueSpec,
        effective: &amq_protocol_types::FieldTable,
        vhost: Arc<str>,
        dir: PathBuf,
        env: QueueEnv,
    ) -> Result<Arc<Self>> {
        env.io.create_dir_all(&dir)?;
        let args = StreamArgs::parse(effective);
        let mut cfg = env.log.clone();
        if let Some(b) = args.segment_bytes {
            cfg.segment_bytes = b;
        }
        let (log, report) = Log::open(env.io.clone(), &dir, cfg)?;
        tracing::debug!(stream = %spec.name, ?report, "stream log opened");
        let segments = log.segments();
        let mut sealed_ts = VecDeque::new();
        let mut last_ts = 0;
        for (i, s) in segments.iter().enumerate() {
            if s.records == 0 {
                continue;
            }
            // Decoded whole, not just its time: a record that cannot be
            // decoded makes the stream `crashed` at boot (`VHost::load`).
            let rec = log.read_index(s.base + s.records - 1)?;
            last_ts = last_ts.max(record::decode(rec.payload)?.0);
            if i + 1 < segments.len() {
                sealed_ts.push_back((s.base, last_ts));
            }
        }
        let active_base = segments.last().map_or(0, |s| s.base);
        let committed = log.next_index();
        let s = Arc::new_cyclic(|me| Stream {
            spec,
            vhost,
            dir,
            env,
            args,
            inner: Mutex::new(Inner {
                log,
                committed,
                consumers: Vec::new(),
                waiters: VecDeque::new(),
                sealed_ts,
                active_base,
                last_ts,
                retention_pending: false,
                scratch: Vec::new(),
                deleted: false,
                crashed: false,
                retention: args,
            }),
            sync_lock: Mutex::new(()),
            sync_state: SyncSchedule::default(),
            me: me.clone(),
            retention_at: AtomicU64::new(NEVER),
            stats: QueueStats::default(),
            readers: Readers::new(committed),
        });
        if s.args.has_retention() {
            // Time passed while the broker was down.
            let now = s.env.clock.now_ms();
            let mut g = s.inner.lock();
            s.apply_retention(&mut g, now);
        }
        Ok(s)
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

    /// Its arguments.
    pub fn args(&self) -> &StreamArgs {
        &self.args
    }

    /// Message counters.
    pub fn stats(&self) -> &QueueStats {
        &self.stats
    }

    /// (messages retained, 0), as RabbitMQ 3.10's queue.declare-ok reports
    /// a stream: it counts no consumers (see `consumer_count`).
    pub fn counts(&self) -> (u32, u32) {
        let g = self.inner.lock();
        let n = g.log.next_index() - g.log.first_index();
        (u32::try_from(n).unwrap_or(u32::MAX), 0)
    }

    /// Consumers attached now.
    pub fn consumer_count(&self) -> usize {
        self.inner.lock().consumers.len()
    }

    /// (first retained offset, next offset, committed offset).
    pub fn offsets(&self) -> (u64, u64, u64) {
        let g = self.inner.lock();
        (g.log.first_index(), g.log.next_index(), g.committed)
    }

    /// Bytes of its segments on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.inner.lock().log.disk_bytes()
    }

    /// (tag, next offset) of each consumer.
    pub fn consumer_offsets(&self) -> Vec<(Arc<str>, u64)> {
        let g = self.inner.lock();
        g.consumers
            .iter()
            .map(|c| (c.tag.clone(), c.next))
            .collect()
    }

    /// Whether it has been deleted.
    pub fn is_deleted(&self) -> bool {
        self.inner.lock().deleted
    }

    pub(super) fn not_found(&self) -> CoreError {
        CoreError::not_found("queue", &self.spec.name, &self.vhost)
    }

    /// RabbitMQ's 540 for an operation streams do not have.
    pub fn unsupported(&self, op: &str) -> CoreError {
        crate::source::unsupported(op, &self.spec.name, &self.vhost)
    }

    /// The message's properties with the `x-stream-offset` header every
    /// delivery carries (written once, at append: the offset is known).
    fn with_offset(&self, raw: &Bytes, offset: u64) -> Bytes {
        let v = ferry_model::Value::I64(i64::try_from(offset).unwrap_or(i64::MAX));
        let edit = crate::props::with_header(raw, "x-stream-offset", v);
        match edit {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(stream = %self.spec.name, error = %e, "properties kept as sent");
                raw.clone()
            }
        }
    }

    /// Appends a message. With a confirm token, says whether the confirm
    /// may go out now (transient message) or after the fsync.
    pub fn publish(&self, msg: &Arc<Message>, confirm: Option<ConfirmToken>) -> Result<Enqueued> {
        let result = {
            let mut g = self.inner.lock();
            if g.deleted {
                return Err(self.not_found());
            }
            let inner = &mut *g;
            let ts = self.env.clock.now_ms().max(inner.last_ts);
            let offset = inner.log.next_index();
            let props = self.with_offset(&msg.properties, offset);
            inner.scratch.clear();
            record::encode(msg, &props, ts, &mut inner.scratch)?;
            let pos = inner.log.append(&inner.scratch)?;
            if inner.scratch.capacity() > SCRATCH_KEEP {
                inner.scratch = Vec::new();
            }
            if pos.segment != inner.active_base {
                // The log rolled: the previous segment is sealed.
                inner
                    .sealed_ts
                    .push_back((inner.active_base, inner.last_ts));
                inner.active_base = pos.segment;
                inner.retention_pending = inner.retention.has_retention();
            }
            inner.last_ts = ts;
            self.stats.published();
            match confirm {
                Some(t) if msg.persistent => {
                    inner.waiters.push_back((offset, t));
                    Enqueued::Deferred
                }
                _ => Enqueued::Confirmed,
            }
        };
        self.schedule_sync();
        Ok(result)
    }

    /// Registers a consumer at the offset basic.consume's arguments ask
    /// for, with RabbitMQ's refusals (manual acks and a prefetch count are
    /// required). The front end sends consume-ok, then calls `dispatch`.
    pub fn consume(
        &self,
        tag: Arc<str>,
        sink: Arc<dyn ConsumerSink>,
        how: StreamConsume<'_>,
    ) -> Result<u64> {
        // RabbitMQ 3.10's checks, in its order.
        let refuse = |text: String| CoreError::request(ErrorKind::PreconditionFailed, text);
        if how.arguments.inner().contains_key("x-priority") {
            return Err(refuse(format!(
                "invalid arg 'x-priority' for queue '{}' in vhost '{}' of queue type rabbit_stream_queue",
                self.spec.name, self.vhost
            )));
        }
        if how.prefetch == 0 {
            return Err(refuse(format!(
                "consumer prefetch count is not set for 'queue '{}' in vhost '{}''",
                self.spec.name, self.vhost
            )));
        }
        if how.no_ack {
            return Err(self.unsupported("automatic acknowledgement"));
        }
        let spec = OffsetSpec::parse(
            how.arguments,
            self.env.clock.now_ms(),
            &self.spec.name,
            &self.vhost,
        )
        .map_err(|t| CoreError::request(ErrorKind::PreconditionFailed, t))?;
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        let next = self.resolve(&g, spec)?;
        let id = NEXT_CONSUMER_ID.fetch_add(1, Ordering::Relaxed);
        g.consumers.push(Consumer {
            id,
            tag,
            sink,
            next,
        });
        Ok(id)
    }

    /// The offset a consumer asking for `spec` starts at.
    fn resolve(&self, g: &Inner, spec: OffsetSpec) -> Result<u64> {
        let first = g.log.first_index();
        let next = g.log.next_index();
        Ok(match spec {
            OffsetSpec::First => first,
            OffsetSpec::Next => next,
            OffsetSpec::Last => next.saturating_sub(1).max(first),
            OffsetSpec::Offset(n) if n > next => next,
            OffsetSpec::Offset(n) => n.max(first),
            OffsetSpec::Timestamp(t) => self.offset_at(g, t)?,
        })
    }

    /// The first offset published at or after `t` (ms): the first segment
    /// whose newest record is recent enough, then a scan of that segment.
    fn offset_at(&self, g: &Inner, t: u64) -> Result<u64> {
        let base = g
            .sealed_ts
            .iter()
            .find(|(_, ts)| *ts >= t)
            .map_or(g.active_base, |(b, _)| *b)
            .max(g.log.first_index());
        for item in g.log.reader(base) {
            let (_, rec) = item?;
            if record::timestamp(&rec.payload)? >= t {
                return Ok(rec.index);
            }
        }
        Ok(g.log.next_index())
    }

    /// Removes a consumer. Streams are never auto-delete: always false.
    pub fn cancel(&self, consumer_id: u64) -> bool {
        self.inner.lock().consumers.retain(|c| c.id != consumer_id);
        false
    }

    /// Delivers committed records to every consumer with credit.
    pub fn dispatch(&self) {
        let mut g = self.inner.lock();
        if !g.deleted {
            self.dispatch_locked(&mut g);
        }
    }

    pub(super) fn dispatch_locked(&self, inner: &mut Inner) {
        let first = inner.log.first_index();
        let committed = inner.committed;
        let mut corrupt = None;
        for c in inner.consumers.iter_mut() {
            // Retention moved the start past it.
            c.next = c.next.max(first);
            if c.next >= committed {
                continue;
            }
            match self.feed(&inner.log, committed, c) {
                Ok(()) => {}
                Err(e) if e.is_corruption() => {
                    corrupt = Some((c.next, e));
                    break;
                }
                Err(e) => {
                    tracing::error!(stream = %self.spec.name, consumer = %c.tag, error = %e, "stream read failed");
                }
            }
        }
        if let Some((offset, e)) = corrupt {
            self.crash_locked(inner, offset, &e);
        }
    }

    /// A record that does not decode (or fails its checksum) at `offset`:
    /// corrupt data is never served, so the stream stops as if deleted
    /// (consumers cancelled, publishes refused), keeps its files, and its
    /// vhost reports it as crashed (as at boot: `vhost/crashed.rs`). Logged
    /// at ERROR once.
    pub(super) fn crash_locked(&self, inner: &mut Inner, offset: u64, e: &CoreError) {
        if inner.deleted {
            return;
        }
        tracing::error!(
            vhost = %self.vhost,
            queue = %self.spec.name,
            offset,
            error = %e,
            "queue crashed: a stream record cannot be read; the stream is unavailable \
             (state 'crashed') until it is deleted, the rest of the broker runs"
        );
        inner.deleted = true;
        inner.crashed = true;
        self.readers.close();
        let consumers = std::mem::take(&mut inner.consumers);
        let waiters: Vec<ConfirmToken> = inner.waiters.drain(..).map(|(_, t)| t).collect();
        for c in consumers {
            c.sink.cancelled(&c.tag);
        }
        for_each_sink_run(waiters, |s, seqs| s.confirmed(seqs));
        let Some(router) = self.env.dead_letters.clone() else {
            return;
        };
        let (name, reason) = (self.spec.name.clone(), e.to_string());
        // The vhost takes its own locks: not under this stream's.
        let spawned = std::thread::Builder::new()
            .name("ferry-stream-crash".into())
            .spawn(move || {
                if let Some(v) = router.upgrade() {
                    v.stream_crashed(&name, reason);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(queue = %self.spec.name, error = %e, "cannot report the crashed stream");
        }
    }

    /// Acks: nothing leaves a stream; the channel already took the credit
    /// back, so the consumers may read on.
    pub fn settle(&self, ids: &[u64]) -> Result<()> {
        self.stats.acked(ids.len());
        self.dispatch();
        Ok(())
    }

    /// Deletes the stream: consumers cancelled, pending confirms answered,
    /// files removed. Returns 0 (RabbitMQ's delete-ok count for streams).
    pub fn delete(&self) -> Result<u32> {
        let (consumers, waiters) = {
            let mut g = self.inner.lock();
            if g.deleted && !g.crashed {
                return Ok(0);
            }
            g.deleted = true;
            g.crashed = false;
            let consumers = std::mem::take(&mut g.consumers);
            let waiters: Vec<ConfirmToken> = g.waiters.drain(..).map(|(_, t)| t).collect();
            (consumers, waiters)
        };
        self.readers.close();
        for c in consumers {
            c.sink.cancelled(&c.tag);
        }
        for_each_sink_run(waiters, |s, seqs| s.confirmed(seqs));
        let _sync = self.sync_lock.lock();
        self.env.io.remove_dir_all(&self.dir)?;
        Ok(0)
    }

    /// Joins the next durability round (see `SyncSchedule`).
    pub(super) fn schedule_sync(&self) {
        self.sync_state.request(&self.env.syncer, || {
            self.me.upgrade().map(|s| s as Arc<dyn SyncTask>)
        });
    }

    /// Flushes and fsyncs now, on this thread (shutdown, tests).
    pub fn sync_now(&self) {
        let _serial = self.sync_lock.lock();
        sync_alone(self);
    }

    fn log_name(&self) -> LogName<'_> {
        LogName {
            kind: "stream",
            name: &self.spec.name,
            vhost: &self.vhost,
        }
    }
}

/// A stream's share of a durability round: what it covered is committed
/// (confirms, retention, consumers at the tail woken).
impl SyncTask for Stream {
    fn schedule(&self) -> &SyncSchedule {
        &self.sync_state
    }

    fn prepare_sync(&self) -> Option<ferry_log::SyncJob> {
        let mut g = self.inner.lock();
        if g.deleted {
            return None;
        }
        prepare_log(&mut g.log, self.log_name())
    }

    fn complete_sync(&self, outcome: Option<ferry_log::SyncOutcome>) {
        let (ok, failed) = {
            let mut g = self.inner.lock();
            if g.deleted {
                // `delete` answered the waiters; the files may be gone.
                return;
            }
            let inner = &mut *g;
            let released =
                complete_log(&mut inner.log, &mut inner.waiters, outcome, self.log_name());
            if !inner.log.is_poisoned() {
                let durable = inner.log.durable_index();
                inner.committed = durable.map_or(0, |i| i + 1);
                self.readers.advance(inner.committed);
                if inner.retention_pending {
                    self.apply_retention(inner, self.env.clock.now_ms());
                }
                self.dispatch_locked(inner);
            }
            released
        };
        for_each_sink_run(ok, |s, seqs| s.confirmed(seqs));
        for_each_sink_run(failed, |s, seqs| s.failed(seqs));
    }
}

impl crate::source::Source for Stream {
    fn name(&self) -> &Arc<str> {
        Stream::name(self)
    }
    fn spec(&self) -> &QueueSpec {
        Stream::spec(self)
    }
    fn kind(&self) -> &'static str {
        "stream"
    }
    fn publish(&self, msg: &Arc<Message>, confirm: Option<ConfirmToken>) -> Result<Enqueued> {
        Stream::publish(self, msg, confirm)
    }
    fn dispatch(&self) {
        Stream::dispatch(self);
    }
    fn settle(&self, ids: &[u64]) -> Result<()> {
        Stream::settle(self, ids)
    }
    fn requeue(&self, _ids: &[u64]) -> Result<()> {
        Err(self.unsupported("basic.nack and basic.reject"))
    }
    fn reject(&self, _ids: &[u64]) -> Result<()> {
        Err(self.unsupported("basic.nack and basic.reject"))
    }
    /// A closing channel's unacked stream deliveries: nothing to return.
    fn abandon(&self, _ids: &[u64]) -> Result<()> {
        Ok(())
    }
    fn cancel(&self, consumer_id: u64) -> bool {
        Stream::cancel(self, consumer_id)
    }
    fn sync_now(&self) {
        Stream::sync_now(self);
    }
}

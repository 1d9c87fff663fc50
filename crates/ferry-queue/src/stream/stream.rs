//! [`Stream`]: an append-only log of messages that consumers read without
//! removing anything, each from its own offset.
//!
//! * Offsets are the log's record indexes (0 for a new stream). A record
//!   carries its publish time (`record.rs`), taken from `QueueEnv`'s clock
//!   and never decreasing within a stream.
//! * Every append joins the node's next durability round. Consumers read only the
//!   durable prefix (`committed`), so an offset a consumer has seen never
//!   names a different message after a crash (the Kafka front end relies on
//!   this). Every confirm goes out after the fsync that commits its
//!   message, persistent or not (RabbitMQ streams persist every message),
//!   so a confirmed message is already counted and readable.
//! * A consumer is an offset plus a `ConsumerSink` (`consumers.rs`):
//!   dispatch reads records from the log in order while the sink grants
//!   credit (prefetch and socket room), so catching up on a large stream
//!   holds at most a prefetch window of messages in memory. Acks only give
//!   credit back. Consumers at the tail are woken by the sync that commits
//!   new records.
//! * On a node outside a replicated stream's group (no copy here), its
//!   consumers read through a member (`remote.rs`, the [`StreamPort`]).
//! * Pull reads (`Stream::read`, `Stream::wait_for`, for Kafka) run the
//!   reader and waiters of `pull.rs` (`PullRead`, `Readers`); wherever
//!   `committed` advances, `readers.advance` must follow (delete and crash
//!   close it).
//! * Retention (`retention.rs`, the `Retention` policy): whole segments,
//!   oldest first.
//! * What the log determines (offsets, committed prefix, publish times)
//!   is a [`StreamState`] changed only through `apply.rs` — by a live
//!   publish, by a retention decision (a Truncate), by the sync that
//!   commits records, and by replay at open (`commit.rs`, with `Inner`,
//!   the state behind the lock). Consumers, credit, dispatch, pull readers
//!   and confirm waiters are leader-local.
//!
//! This file is the stream's public face: its one `impl` decides the
//! facts of a publish, checks consume, and drives the parts above under
//! the lock order below; the parts own the state and the work.
//!
//! Lock order: `sync_lock` → `inner` → sinks (channel locks); `inner` →
//! `readers` (a leaf); `inner` → the port (`StreamPort::wake`, which never
//! calls back).

use super::args::StreamArgs;
use super::command::Append;
use super::commit::Inner;
use super::consumers;
use super::offset::OffsetSpec;
use super::pull::{Capture, Fill, PullRead, ReadBatch, ReadLimits, Readers, WaitFor};
use super::remote::StreamPort;
use super::retention::Retention;
#[cfg(doc)]
use super::state::StreamState;
use crate::clock::NEVER;
use crate::error::{CoreError, ErrorKind, Result};
use crate::queue::sinks::for_each_sink_run;
use crate::queue::stats::QueueStats;
use crate::queue::{ConfirmToken, ConsumerSink, Enqueued, Proposer, QueueEnv, QueueSpec};
use crate::syncer::SyncSchedule;
use bytes::Bytes;
use ferry_log::Log;
use ferry_model::message::Message;
use ferry_model::Table;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

/// How basic.consume asked for a stream consumer.
#[derive(Debug, Clone, Copy)]
pub struct StreamConsume<'a> {
    /// no_ack flag (refused: streams need manual acks).
    pub no_ack: bool,
    /// The channel's per-consumer prefetch (0 = none: refused).
    pub prefetch: u32,
    /// basic.consume's arguments (`x-stream-offset`).
    pub arguments: &'a Table,
}

/// A stream. Shared by `Arc` between the vhost and the channels using it.
#[derive(Debug)]
pub struct Stream {
    pub(super) spec: QueueSpec,
    pub(super) vhost: Arc<str>,
    dir: PathBuf,
    pub(super) env: QueueEnv,
    pub(super) args: StreamArgs,
    pub(super) inner: Mutex<Inner>,
    pub(super) sync_lock: Mutex<()>,
    pub(super) sync_state: SyncSchedule,
    pub(super) me: Weak<Stream>,
    /// When age retention must look again (`NEVER` if not needed).
    pub(super) retention_at: AtomicU64,
    pub(super) stats: QueueStats,
    /// Pull readers waiting for records to commit (`pull.rs`).
    pub(super) readers: Readers,
    /// A replicated stream's group (`replica.rs`): publishes are proposed
    /// to it and appended here once committed. None: a local stream.
    pub(super) proposer: Option<Arc<dyn Proposer>>,
    /// Set on a node outside a replicated stream's group, which holds no
    /// copy: its publishes are forwarded, its consumers read through a
    /// member (`remote.rs`).
    pub(super) port: OnceLock<Arc<dyn StreamPort>>,
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
        effective: &Table,
        vhost: Arc<str>,
        dir: PathBuf,
        env: QueueEnv,
    ) -> Result<Arc<Self>> {
        Self::open_with(spec, effective, vhost, dir, env, None)
    }

    /// `open_effective`, replicated through `proposer` if given.
    pub(super) fn open_with(
        spec: QueueSpec,
        effective: &Table,
        vhost: Arc<str>,
        dir: PathBuf,
        env: QueueEnv,
        proposer: Option<Arc<dyn Proposer>>,
    ) -> Result<Arc<Self>> {
        env.io.create_dir_all(&dir)?;
        let args = StreamArgs::parse(effective);
        let (log, report) = Log::open(env.io.clone(), &dir, log_config(&env, &args))?;
        tracing::debug!(stream = %spec.name, ?report, "stream log opened");
        let state = super::commit::replay(&log)?;
        let committed = state.committed();
        let s = Arc::new_cyclic(|me| Stream {
            spec,
            vhost,
            dir,
            env,
            args,
            inner: Mutex::new(Inner::new(log, state, Retention::of(&args))),
            sync_lock: Mutex::new(()),
            sync_state: SyncSchedule::default(),
            me: me.clone(),
            retention_at: AtomicU64::new(NEVER),
            stats: QueueStats::default(),
            readers: Readers::new(committed),
            proposer,
            port: OnceLock::new(),
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
        let n = g.state.next() - g.state.first();
        (u32::try_from(n).unwrap_or(u32::MAX), 0)
    }

    /// Consumers attached now.
    pub fn consumer_count(&self) -> usize {
        self.inner.lock().consumers.count()
    }

    /// (first retained offset, next offset, committed offset).
    pub fn offsets(&self) -> (u64, u64, u64) {
        let g = self.inner.lock();
        (g.state.first(), g.state.next(), g.state.committed())
    }

    /// Bytes of its segments on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.inner.lock().log.disk_bytes()
    }

    /// (tag, next offset) of each consumer.
    pub fn consumer_offsets(&self) -> Vec<(Arc<str>, u64)> {
        self.inner.lock().consumers.offsets()
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
    pub(super) fn with_offset(&self, raw: &Bytes, offset: u64) -> Bytes {
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

    /// Appends a message. With a confirm token the confirm is deferred to
    /// the sync that commits the message, whatever its delivery mode: a
    /// stream stores every message, and a confirmed one must be readable.
    pub fn publish(&self, msg: &Arc<Message>, confirm: Option<ConfirmToken>) -> Result<Enqueued> {
        if let Some(p) = &self.proposer {
            return self.propose_append(p.as_ref(), msg, confirm);
        }
        let result = self.append(&mut self.inner.lock(), msg, confirm)?;
        self.schedule_sync();
        Ok(result)
    }

    /// `publish` short of joining the sync, under `inner`: decides the
    /// facts (publish time, the offset header), then logs and applies the
    /// Append (`commit`).
    pub(super) fn append(
        &self,
        inner: &mut Inner,
        msg: &Message,
        confirm: Option<ConfirmToken>,
    ) -> Result<Enqueued> {
        if inner.deleted {
            return Err(self.not_found());
        }
        let ts = self.env.clock.now_ms().max(inner.state.last_ts());
        let offset = inner.log.next_index();
        let props = self.with_offset(&msg.properties, offset);
        let rec = Append {
            ts,
            msg,
            properties: &props,
        };
        inner.commit(rec, &self.readers, &self.spec.name)?;
        self.stats.published();
        Ok(match confirm {
            Some(t) => {
                inner.waiters.push_back((offset, t));
                Enqueued::Deferred
            }
            None => Enqueued::Confirmed,
        })
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
        if how.arguments.get("x-priority").is_some() {
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
        if let Some(port) = self.port.get() {
            return self.consume_remote(port, tag, sink, spec);
        }
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        let next = consumers::start(&g.log, &g.state, spec)?;
        Ok(g.consumers.add(tag, sink, next))
    }

    /// Removes a consumer. Streams are never auto-delete: always false.
    pub fn cancel(&self, consumer_id: u64) -> bool {
        self.inner.lock().consumers.remove(consumer_id);
        if let Some(port) = self.port.get() {
            // Its reader stops.
            port.wake(consumer_id);
        }
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
        if let Some(port) = self.port.get() {
            return self.dispatch_remote(port, inner);
        }
        let corrupt =
            inner
                .consumers
                .dispatch(&inner.log, &inner.state, &self.spec.name, &self.stats);
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
        let consumers = inner.consumers.take();
        let waiters: Vec<ConfirmToken> = inner.waiters.drain(..).map(|(_, t)| t).collect();
        consumers.cancelled();
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
            let consumers = g.consumers.take();
            let waiters: Vec<ConfirmToken> = g.waiters.drain(..).map(|(_, t)| t).collect();
            (consumers, waiters)
        };
        self.readers.close();
        if let Some(port) = self.port.get() {
            // Their readers stop.
            consumers.ids().into_iter().for_each(|id| port.wake(id));
        }
        consumers.cancelled();
        for_each_sink_run(waiters, |s, seqs| s.confirmed(seqs));
        let _sync = self.sync_lock.lock();
        self.env.io.remove_dir_all(&self.dir)?;
        Ok(0)
    }

    /// Committed records from `from` on, within `limits`: at least one
    /// record when `from` is committed, whatever its size. Below the first
    /// retained offset or past the log's end: `OffsetOutOfRange`. Fails on
    /// a deleted or crashed stream (`NotFound`), on an I/O error, and on a
    /// corrupt record, which crashes the stream (`crash_locked`).
    ///
    /// Blocking file reads: never call it on an async worker thread. The
    /// stream's lock is held only to capture positions, never during I/O
    /// (`pull.rs`).
    pub fn read(&self, from: u64, limits: ReadLimits) -> Result<ReadBatch> {
        self.check_copy()?;
        let mut read = PullRead::new(from, limits);
        loop {
            let view = {
                let g = self.inner.lock();
                if g.deleted {
                    return Err(self.not_found());
                }
                match read.capture(&g.log, &g.state)? {
                    Capture::Done(batch) => return Ok(batch),
                    Capture::View(view) => view,
                }
            };
            match read.fill(&view) {
                Fill::Done(batch) => return Ok(batch),
                Fill::More => {}
                Fill::Failed(offset, e) => self.read_failed(offset, e)?,
            }
        }
    }

    /// A pull read failed at `offset`: fine if retention removed that
    /// offset meanwhile (`Ok`: look again); a corrupt record crashes the
    /// stream; the error is returned otherwise.
    fn read_failed(&self, offset: u64, e: CoreError) -> Result<()> {
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        if offset < g.state.first() {
            return Ok(());
        }
        if e.is_corruption() {
            self.crash_locked(&mut g, offset, &e);
        } else {
            tracing::error!(stream = %self.name(), offset, error = %e, "stream read failed");
        }
        Err(e)
    }

    /// Resolves once the record at `offset` is committed (a read from
    /// `offset` then returns at least one record, or `OffsetOutOfRange` if
    /// retention went past it), or the stream is deleted or crashed. Woken
    /// by the sync that commits records, never by polling. The deadline is
    /// the caller's: `tokio::time::timeout(max_wait, s.wait_for(n))`;
    /// dropping the future unregisters it.
    pub fn wait_for(&self, offset: u64) -> WaitFor<'_> {
        self.readers.wait_for(offset)
    }

    /// Joins the next durability round (see `SyncSchedule`).
    pub(super) fn schedule_sync(&self) {
        crate::syncer::schedule(self);
    }

    /// Flushes and fsyncs now, on this thread (shutdown, tests).
    pub fn sync_now(&self) {
        crate::syncer::sync_serial(self);
    }

    /// Runs retention as of `now` (`Inner::retain`: a Truncate decided by
    /// [`Retention`]) and posts the next age deadline to the broker's timer.
    pub(super) fn apply_retention(&self, inner: &mut Inner, now: u64) {
        let at = inner.retain(now, &self.readers, &self.spec.name);
        self.retention_at.store(at, Ordering::Release);
        if at != NEVER {
            self.env.timer.schedule(at);
        }
    }

    /// When the oldest sealed segment ages out (`NEVER` if not pending).
    pub fn retention_deadline(&self) -> u64 {
        self.retention_at.load(Ordering::Acquire)
    }

    /// The timer's call: applies retention as of `now`.
    pub fn enforce_retention(&self, now: u64) {
        let mut g = self.inner.lock();
        if g.deleted || !g.retention.is_set() {
            return;
        }
        self.apply_retention(&mut g, now);
        self.dispatch_locked(&mut g);
    }

    /// A policy change: the retention of `effective` (`max-age`,
    /// `max-length-bytes`) applies at once; the segment size stays until
    /// the stream reopens.
    pub fn apply_arguments(&self, effective: &Table) {
        let next = Retention::of(&StreamArgs::parse(effective));
        let mut g = self.inner.lock();
        if g.deleted || g.retention == next {
            return;
        }
        g.retention = next;
        let now = self.env.clock.now_ms();
        self.apply_retention(&mut g, now);
        self.dispatch_locked(&mut g);
    }
}

/// The log settings of a stream: the broker's, with its own segment size.
pub(super) fn log_config(env: &QueueEnv, args: &StreamArgs) -> ferry_log::LogConfig {
    let mut cfg = env.log.clone();
    if let Some(b) = args.segment_bytes {
        cfg.segment_bytes = b;
    }
    cfg
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

//! A stream's push consumers (AMQP basic.consume): each an offset plus a
//! `ConsumerSink`. Owns where each one starts (`x-stream-offset`, resolved
//! against the state and the log), their offsets, and dispatch: reading
//! committed records from the log in order while a sink grants credit, so
//! catching up on a large stream holds at most a prefetch window of
//! messages in memory.
//!
//! On a node outside a replicated stream's group the log is not read:
//! records a member sent wait in each consumer's inbox (at most what its
//! credit asked for) and go to its sink as credit allows (`remote.rs`
//! drives this).
//!
//! Runs under the stream's `inner` (it is a field of `Inner`); sinks are
//! called under it (lock order `inner` → sinks). Must not: read past the
//! committed prefix, or decide what a corrupt record does to the stream
//! (dispatch returns it; the stream crashes, `Stream::crash_locked`).

use super::offset::OffsetSpec;
use super::pull::{decode_record, StreamRecord};
use super::record;
use super::state::StreamState;
use crate::error::{CoreError, Result};
use crate::queue::stats::QueueStats;
use crate::queue::{ConsumerSink, Delivery};
use ferry_log::{Log, LogError};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

static NEXT_CONSUMER_ID: AtomicU64 = AtomicU64::new(1);

/// Bytes of records one push view covers before the next is taken.
const PUSH_VIEW_BYTES: u64 = 1 << 20;

#[derive(Debug)]
struct Consumer {
    id: u64,
    tag: Arc<str>,
    sink: Arc<dyn ConsumerSink>,
    /// The next offset it gets.
    next: u64,
    /// Outside the group: records read through a member, waiting for its
    /// credit (in offset order). Always empty where the log is read.
    inbox: VecDeque<StreamRecord>,
}

/// The push consumers attached to a stream.
#[derive(Debug, Default)]
pub(super) struct Consumers {
    list: Vec<Consumer>,
}

impl Consumers {
    /// Attaches a consumer that gets `next` first; returns its id.
    pub(super) fn add(&mut self, tag: Arc<str>, sink: Arc<dyn ConsumerSink>, next: u64) -> u64 {
        let id = NEXT_CONSUMER_ID.fetch_add(1, Ordering::Relaxed);
        self.list.push(Consumer {
            id,
            tag,
            sink,
            next,
            inbox: VecDeque::new(),
        });
        id
    }

    /// The ids of the consumers attached now.
    pub(super) fn ids(&self) -> Vec<u64> {
        self.list.iter().map(|c| c.id).collect()
    }

    /// Detaches consumer `id` (if attached).
    pub(super) fn remove(&mut self, id: u64) {
        self.list.retain(|c| c.id != id);
    }

    /// Consumers attached now.
    pub(super) fn count(&self) -> usize {
        self.list.len()
    }

    /// (tag, next offset) of each consumer.
    pub(super) fn offsets(&self) -> Vec<(Arc<str>, u64)> {
        self.list.iter().map(|c| (c.tag.clone(), c.next)).collect()
    }

    /// Retention moved the start to `first`: consumers before it move up.
    pub(super) fn move_up(&mut self, first: u64) {
        for c in self.list.iter_mut() {
            c.next = c.next.max(first);
        }
    }

    /// Detaches every consumer (delete, crash): tell them with
    /// [`cancelled`](Self::cancelled) once `inner` is released, or under
    /// it as a crash does.
    pub(super) fn take(&mut self) -> Consumers {
        std::mem::take(self)
    }

    /// Tells each consumer's sink it was cancelled.
    pub(super) fn cancelled(self) {
        for c in self.list {
            c.sink.cancelled(&c.tag);
        }
    }

    /// Delivers committed records to every consumer with credit. A
    /// corrupt record stops the round and comes back with its offset
    /// (the stream crashes); other read errors are logged per consumer.
    pub(super) fn dispatch(
        &mut self,
        log: &Log,
        state: &StreamState,
        queue: &Arc<str>,
        stats: &QueueStats,
    ) -> Option<(u64, CoreError)> {
        let first = state.first();
        let committed = state.committed();
        for c in self.list.iter_mut() {
            // Retention moved the start past it.
            c.next = c.next.max(first);
            if c.next >= committed {
                continue;
            }
            match c.feed(log, committed, queue, stats) {
                Ok(()) => {}
                Err(e) if e.is_corruption() => return Some((c.next, e)),
                Err(e) => {
                    tracing::error!(stream = %queue, consumer = %c.tag, error = %e, "stream read failed");
                }
            }
        }
        None
    }

    /// How many more records consumer `id` would take now: what its sink
    /// grants (probed, given back), at most `cap`, less what waits in its
    /// inbox. None if it is not attached.
    pub(super) fn room(&self, id: u64, cap: u32) -> Option<u32> {
        let c = self.list.iter().find(|c| c.id == id)?;
        let mut n = 0;
        while n < cap && c.sink.reserve() {
            n += 1;
        }
        for _ in 0..n {
            c.sink.unreserve();
        }
        let waiting = u32::try_from(c.inbox.len()).unwrap_or(u32::MAX);
        Some(n.saturating_sub(waiting))
    }

    /// Records read for consumer `id` through a member join its inbox;
    /// `next` is where its reads go on (the start a member resolved, when
    /// nothing came yet). False if it is not attached (cancelled).
    pub(super) fn push_inbox(&mut self, id: u64, next: u64, records: Vec<StreamRecord>) -> bool {
        let Some(c) = self.list.iter_mut().find(|c| c.id == id) else {
            return false;
        };
        if records.is_empty() && c.inbox.is_empty() {
            c.next = next;
        }
        c.inbox.extend(records);
        true
    }

    /// Hands each consumer's inbox to its sink while it grants credit.
    /// Returns the consumers whose inbox is empty and who could take more
    /// (their readers ask a member again).
    pub(super) fn drain_inboxes(&mut self, queue: &Arc<str>, stats: &QueueStats) -> Vec<u64> {
        let mut hungry = Vec::new();
        for c in self.list.iter_mut() {
            while !c.inbox.is_empty() {
                if !c.sink.reserve() {
                    break;
                }
                let Some(rec) = c.inbox.pop_front() else {
                    c.sink.unreserve();
                    break;
                };
                c.next = rec.offset + 1;
                c.hand_over(rec, queue, stats);
            }
            if c.inbox.is_empty() && c.sink.reserve() {
                c.sink.unreserve();
                hungry.push(c.id);
            }
        }
        hungry
    }
}

impl Consumer {
    /// Delivers records from `next` for as long as the sink grants credit
    /// (under `inner`), through views of the committed records like
    /// `Stream::read`.
    fn feed(
        &mut self,
        log: &Log,
        committed: u64,
        queue: &Arc<str>,
        stats: &QueueStats,
    ) -> Result<()> {
        while self.next < committed {
            let view = log.view(self.next, committed, PUSH_VIEW_BYTES)?;
            if view.end() <= self.next {
                return Ok(());
            }
            let mut reader = view.records();
            while self.next < view.end() {
                if !self.sink.reserve() {
                    return Ok(());
                }
                let item = reader.next().unwrap_or_else(|| {
                    Err(LogError::OutOfRange {
                        index: self.next,
                        first: log.first_index(),
                        next: log.next_index(),
                    })
                });
                let rec = match item.map_err(CoreError::from).and_then(decode_record) {
                    Ok(r) => r,
                    Err(e) => {
                        self.sink.unreserve();
                        return Err(e);
                    }
                };
                self.next = rec.offset + 1;
                self.hand_over(rec, queue, stats);
            }
        }
        Ok(())
    }

    /// Delivers `rec` (credit reserved) to the sink.
    fn hand_over(&mut self, rec: StreamRecord, queue: &Arc<str>, stats: &QueueStats) {
        let d = Delivery {
            queue: queue.clone(),
            msg_id: rec.offset,
            message: Arc::new(rec.message),
            redelivered: false,
            delivery_count: 0,
        };
        self.sink.deliver(&self.tag, d);
        stats.delivered(false, false);
    }
}

/// The offset a consumer asking for `spec` starts at.
pub(super) fn start(log: &Log, state: &StreamState, spec: OffsetSpec) -> Result<u64> {
    let first = state.first();
    let next = state.next();
    Ok(match spec {
        OffsetSpec::First => first,
        OffsetSpec::Next => next,
        OffsetSpec::Last => next.saturating_sub(1).max(first),
        OffsetSpec::Offset(n) if n > next => next,
        OffsetSpec::Offset(n) => n.max(first),
        OffsetSpec::Timestamp(t) => offset_at(log, state, t)?,
    })
}

/// The first offset published at or after `t` (ms): the first segment
/// whose newest record is recent enough, then a scan of that segment.
fn offset_at(log: &Log, state: &StreamState, t: u64) -> Result<u64> {
    let base = state
        .sealed_ts()
        .iter()
        .find(|(_, ts)| *ts >= t)
        .map_or(state.active_base(), |(b, _)| *b)
        .max(state.first());
    for item in log.reader(base) {
        let (_, rec) = item?;
        if record::timestamp(&rec.payload)? >= t {
            return Ok(rec.index);
        }
    }
    Ok(state.next())
}

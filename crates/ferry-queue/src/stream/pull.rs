//! Reading a stream: the pull API a Kafka Fetch needs, and the push
//! consumers' reads, through one reader.
//!
//! * [`Stream::read`]: committed records from an offset, bounded by bytes
//!   and records (at least one record when one is available, however
//!   large, as Kafka does), with the stream's first offset and committed
//!   end, or an explicit [`ReadBatch::OffsetOutOfRange`].
//! * [`Stream::wait_for`]: a future that resolves once records at an
//!   offset are committed, or the stream is deleted or crashed. The core
//!   runs no timers: the caller bounds the wait with its own
//!   (`tokio::time::timeout(max_wait, stream.wait_for(next))`).
//! * `Stream::feed` (AMQP push consumers) reads the same way, under the
//!   stream's lock, while the consumer's sink grants credit.
//!
//! Both read through a [`ferry_log::LogView`] of the committed records and
//! decode with [`decode_record`]. `read` captures the view under `inner`
//! (positions and file handles, no I/O) and reads it after releasing the
//! lock, so a slow disk never holds up publishers. `read` does blocking
//! file reads: call it off async worker threads (`spawn_blocking` or a read
//! pool). `wait_for` never blocks.
//!
//! Waiters live in [`Readers`], a leaf lock apart from `inner`: the sync
//! that commits records and a crash call `Readers::advance` /
//! `Readers::close` under `inner`, delete after releasing it; `wait_for`
//! takes only the leaf lock. Must not: hand out uncommitted records, skip records
//! silently (retention answers `OffsetOutOfRange`), or serve a record that
//! fails its checksum or decoding (the stream crashes, as for push reads).

use super::record;
use super::stream::{Consumer, Stream};
use crate::error::{CoreError, Result};
use crate::queue::Delivery;
use bytes::Bytes;
use ferry_log::{Log, LogError, Record};
use ferry_model::message::Message;
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// Bytes of records one push view covers before the next is taken.
const PUSH_VIEW_BYTES: u64 = 1 << 20;

/// Bounds of one [`Stream::read`]. The first record available is returned
/// even when it alone exceeds `max_bytes`; `max_records` 0 counts as 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Stop before a record that would take the batch past this many
    /// bytes (record payload bytes as stored: [`StreamRecord::bytes`]).
    pub max_bytes: u64,
    /// Stop after this many records.
    pub max_records: usize,
}

impl ReadLimits {
    /// Bounded by bytes only.
    pub fn bytes(max_bytes: u64) -> Self {
        ReadLimits {
            max_bytes,
            max_records: usize::MAX,
        }
    }
}

/// One committed record of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRecord {
    /// Its offset (the log index).
    pub offset: u64,
    /// Publish time, ms since the epoch (monotone within a stream).
    pub timestamp_ms: u64,
    /// Size of the stored record payload (what `ReadLimits::max_bytes`
    /// counts).
    pub bytes: u64,
    /// The message, its properties carrying `x-stream-offset`.
    pub message: Message,
}

/// What [`Stream::read`] found. `first` is the first retained offset and
/// `end` the committed end (the high watermark: records below it are
/// durable and readable), both as of the read.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadBatch {
    /// Records from the offset asked for, in order, without gaps; empty
    /// when the offset is at or past `end` but not past the log's end
    /// (appended, not yet committed): wait with [`Stream::wait_for`].
    Records {
        /// First retained offset.
        first: u64,
        /// Committed end (high watermark).
        end: u64,
        /// The records.
        records: Vec<StreamRecord>,
    },
    /// The offset is below `first` (retention removed it) or past the end
    /// of the log. Nothing is skipped silently: the caller decides where
    /// to go (Kafka's OFFSET_OUT_OF_RANGE and the consumer's reset policy).
    OffsetOutOfRange {
        /// First retained offset.
        first: u64,
        /// Committed end (high watermark).
        end: u64,
    },
}

impl ReadBatch {
    /// First retained offset as of the read.
    pub fn first(&self) -> u64 {
        match self {
            ReadBatch::Records { first, .. } | ReadBatch::OffsetOutOfRange { first, .. } => *first,
        }
    }

    /// Committed end (high watermark) as of the read.
    pub fn end(&self) -> u64 {
        match self {
            ReadBatch::Records { end, .. } | ReadBatch::OffsetOutOfRange { end, .. } => *end,
        }
    }

    /// The records (none when out of range).
    pub fn records(&self) -> &[StreamRecord] {
        match self {
            ReadBatch::Records { records, .. } => records,
            ReadBatch::OffsetOutOfRange { .. } => &[],
        }
    }
}

/// How a [`Stream::wait_for`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Records at the offset waited for are committed (or retention
    /// already removed it: the next read says `OffsetOutOfRange`).
    Committed,
    /// The stream was deleted or crashed: reads fail from now on.
    Closed,
}

/// Decodes a log record of a stream. The payload is copied, so a message
/// kept for long (a socket buffer, a Fetch response) does not pin the
/// reader's chunk.
pub(super) fn decode_record(rec: Record) -> Result<StreamRecord> {
    let bytes = rec.payload.len() as u64;
    let (timestamp_ms, message) = record::decode(Bytes::copy_from_slice(&rec.payload))?;
    Ok(StreamRecord {
        offset: rec.index,
        timestamp_ms,
        bytes,
        message,
    })
}

impl Stream {
    /// Committed records from `from` on, within `limits`: at least one
    /// record when `from` is committed, whatever its size. Below the first
    /// retained offset or past the log's end: `OffsetOutOfRange`. Fails on
    /// a deleted or crashed stream (`NotFound`), on an I/O error, and on a
    /// corrupt record, which crashes the stream (`crash_locked`).
    ///
    /// Blocking file reads: never call it on an async worker thread. The
    /// stream's lock is held only to capture positions, never during I/O.
    pub fn read(&self, from: u64, limits: ReadLimits) -> Result<ReadBatch> {
        let max_records = limits.max_records.max(1);
        let mut records: Vec<StreamRecord> = Vec::new();
        let mut bytes = 0u64;
        let mut next = from;
        loop {
            let (first, end, view) = {
                let g = self.inner.lock();
                if g.deleted {
                    return Err(self.not_found());
                }
                let (first, end) = (g.state.first(), g.state.committed());
                if records.is_empty() && (next < first || next > g.state.next()) {
                    return Ok(ReadBatch::OffsetOutOfRange { first, end });
                }
                if next >= end || next < first {
                    return Ok(ReadBatch::Records {
                        first,
                        end,
                        records,
                    });
                }
                let budget = limits.max_bytes.saturating_sub(bytes);
                let view = g.log.view(next, end, budget)?;
                if view.end() <= next {
                    // `committed` ahead of the log's durable end: never
                    // expected; answer what was read rather than spin.
                    return Ok(ReadBatch::Records {
                        first,
                        end,
                        records,
                    });
                }
                (first, end, view)
            };
            let mut reader = view.records();
            let mut failed = None;
            let mut full = false;
            while !full && records.len() < max_records {
                let Some(item) = reader.next() else { break };
                match item.map_err(CoreError::from).and_then(decode_record) {
                    Ok(rec) if !records.is_empty() && bytes + rec.bytes > limits.max_bytes => {
                        full = true;
                    }
                    Ok(rec) => {
                        bytes += rec.bytes;
                        next = rec.offset + 1;
                        records.push(rec);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                // Retention may have removed the segment meanwhile: take
                // another look (out of range, or what was read so far).
                self.read_failed(next, e)?;
                continue;
            }
            // Going on only makes sense where this view ended.
            let stop = next >= end || next < view.end();
            if full || stop || records.len() >= max_records || bytes >= limits.max_bytes {
                return Ok(ReadBatch::Records {
                    first,
                    end,
                    records,
                });
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
        WaitFor {
            readers: &self.readers,
            offset,
            id: None,
        }
    }

    /// Delivers records from `c.next` for as long as `c`'s sink grants
    /// credit (push consumers; under `inner`), through views of the
    /// committed records like [`Stream::read`].
    pub(super) fn feed(&self, log: &Log, committed: u64, c: &mut Consumer) -> Result<()> {
        while c.next < committed {
            let view = log.view(c.next, committed, PUSH_VIEW_BYTES)?;
            if view.end() <= c.next {
                return Ok(());
            }
            let mut reader = view.records();
            while c.next < view.end() {
                if !c.sink.reserve() {
                    return Ok(());
                }
                let item = reader.next().unwrap_or_else(|| {
                    Err(LogError::OutOfRange {
                        index: c.next,
                        first: log.first_index(),
                        next: log.next_index(),
                    })
                });
                let rec = match item.map_err(CoreError::from).and_then(decode_record) {
                    Ok(r) => r,
                    Err(e) => {
                        c.sink.unreserve();
                        return Err(e);
                    }
                };
                let d = Delivery {
                    queue: self.name().clone(),
                    msg_id: rec.offset,
                    message: Arc::new(rec.message),
                    redelivered: false,
                    delivery_count: 0,
                };
                c.sink.deliver(&c.tag, d);
                self.stats().delivered(false, false);
                c.next = rec.offset + 1;
            }
        }
        Ok(())
    }
}

/// The stream's pull waiters and a copy of its committed end. A leaf
/// lock: nothing else is taken while it is held, and wakers are woken
/// after it is released.
#[derive(Debug, Default)]
pub(super) struct Readers {
    committed: AtomicU64,
    closed: AtomicBool,
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    next_id: u64,
    /// (waiter id, offset waited for, its waker).
    list: Vec<(u64, u64, Waker)>,
}

impl Readers {
    pub(super) fn new(committed: u64) -> Self {
        Readers {
            committed: AtomicU64::new(committed),
            ..Readers::default()
        }
    }

    /// The committed end moved to `committed`: wakes who waits below it.
    /// Stored before the waiter list is read, so a waiter that registers
    /// concurrently either sees the new end or is in the list.
    pub(super) fn advance(&self, committed: u64) {
        self.committed.store(committed, Ordering::Release);
        let ready: Vec<Waker> = {
            let mut w = self.waiting.lock();
            let (ready, waiting) = std::mem::take(&mut w.list)
                .into_iter()
                .partition(|(_, offset, _)| *offset < committed);
            w.list = waiting;
            ready.into_iter().map(|(_, _, waker)| waker).collect()
        };
        ready.into_iter().for_each(Waker::wake);
    }

    /// Waiters registered now.
    #[cfg(test)]
    pub(super) fn waiting_len(&self) -> usize {
        self.waiting.lock().list.len()
    }

    /// Deleted or crashed: every waiter resolves with `Closed`.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let all = std::mem::take(&mut self.waiting.lock().list);
        all.into_iter().for_each(|(_, _, w)| w.wake());
    }
}

/// The future of [`Stream::wait_for`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct WaitFor<'a> {
    readers: &'a Readers,
    offset: u64,
    /// Its entry in the waiter list, once registered.
    id: Option<u64>,
}

impl Future for WaitFor<'_> {
    type Output = WaitOutcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WaitOutcome> {
        let this = self.get_mut();
        let r = this.readers;
        let mut w = r.waiting.lock();
        let outcome = if r.closed.load(Ordering::Acquire) {
            Some(WaitOutcome::Closed)
        } else if r.committed.load(Ordering::Acquire) > this.offset {
            Some(WaitOutcome::Committed)
        } else {
            None
        };
        let mine = this
            .id
            .and_then(|id| w.list.iter().position(|(i, _, _)| *i == id));
        if let Some(done) = outcome {
            if let Some(i) = mine {
                w.list.swap_remove(i);
            }
            this.id = None;
            return Poll::Ready(done);
        }
        match mine.and_then(|i| w.list.get_mut(i)) {
            Some((_, _, waker)) => waker.clone_from(cx.waker()),
            None => {
                let id = w.next_id;
                w.next_id += 1;
                w.list.push((id, this.offset, cx.waker().clone()));
                this.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for WaitFor<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.readers
                .waiting
                .lock()
                .list
                .retain(|(i, _, _)| *i != id);
        }
    }
}

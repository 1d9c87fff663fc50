//! Reading a stream: the pull API a Kafka Fetch needs ([`PullRead`], the
//! reader behind `Stream::read`, and [`Readers`], the waiters behind
//! `Stream::wait_for`), and the record decoding push consumers share.
//!
//! * [`Stream::read`]: committed records from an offset, bounded by bytes
//!   and records (at least one record when one is available, however
//!   large, as Kafka does), with the stream's first offset and committed
//!   end, or an explicit [`ReadBatch::OffsetOutOfRange`].
//! * [`Stream::wait_for`]: a future that resolves once records at an
//!   offset are committed, or the stream is deleted or crashed. The core
//!   runs no timers: the caller bounds the wait with its own
//!   (`tokio::time::timeout(max_wait, stream.wait_for(next))`).
//! * AMQP push consumers (`consumers.rs`) read the same way, under the
//!   stream's lock, while the consumer's sink grants credit.
//!
//! Both read through a [`ferry_log::LogView`] of the committed records and
//! decode with [`decode_record`]. `read` captures the view under `inner`
//! ([`PullRead::capture`]: positions and file handles, no I/O) and reads
//! it after releasing the lock ([`PullRead::fill`]), so a slow disk never
//! holds up publishers. `read` does blocking file reads: call it off async
//! worker threads (`spawn_blocking` or a read pool). `wait_for` never
//! blocks.
//!
//! Waiters live in [`Readers`], a leaf lock apart from `inner`: the sync
//! that commits records and a crash call `Readers::advance` /
//! `Readers::close` under `inner`, delete after releasing it; `wait_for`
//! takes only the leaf lock. Must not: hand out uncommitted records, skip records
//! silently (retention answers `OffsetOutOfRange`), or serve a record that
//! fails its checksum or decoding (the stream crashes, as for push reads).

use super::record;
use super::state::StreamState;
#[cfg(doc)]
use super::stream::Stream;
use crate::error::{CoreError, Result};
use bytes::Bytes;
use ferry_log::{Log, LogView, Record};
use ferry_model::message::Message;
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

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

/// One [`Stream::read`] in progress: the records taken so far and where
/// it goes on. The stream alternates [`capture`](Self::capture) under
/// `inner` (positions and file handles, no I/O) with
/// [`fill`](Self::fill) after releasing it.
#[derive(Debug)]
pub(super) struct PullRead {
    max_bytes: u64,
    max_records: usize,
    records: Vec<StreamRecord>,
    bytes: u64,
    next: u64,
    /// First retained offset and committed end as of the last capture.
    first: u64,
    end: u64,
}

/// What [`PullRead::capture`] found.
#[derive(Debug)]
pub(super) enum Capture {
    /// The read is over: the answer.
    Done(ReadBatch),
    /// Read this view (after releasing `inner`).
    View(LogView),
}

/// What [`PullRead::fill`] did with a view.
#[derive(Debug)]
pub(super) enum Fill {
    /// The read is over: the answer.
    Done(ReadBatch),
    /// The view ended short of the limits: capture again.
    More,
    /// Reading the record at this offset failed (`Stream::read_failed`
    /// decides: look again, or fail).
    Failed(u64, CoreError),
}

impl PullRead {
    /// A read from `from` within `limits`.
    pub(super) fn new(from: u64, limits: ReadLimits) -> Self {
        PullRead {
            max_bytes: limits.max_bytes,
            max_records: limits.max_records.max(1),
            records: Vec::new(),
            bytes: 0,
            next: from,
            first: 0,
            end: 0,
        }
    }

    fn done(&mut self) -> ReadBatch {
        ReadBatch::Records {
            first: self.first,
            end: self.end,
            records: std::mem::take(&mut self.records),
        }
    }

    /// Under `inner` (of a stream not deleted): the view of the committed
    /// records to read next, or the answer (out of range, or what was read
    /// so far once nothing more is committed).
    pub(super) fn capture(&mut self, log: &Log, state: &StreamState) -> Result<Capture> {
        let next = self.next;
        let (first, end) = (state.first(), state.committed());
        (self.first, self.end) = (first, end);
        if self.records.is_empty() && (next < first || next > state.next()) {
            return Ok(Capture::Done(ReadBatch::OffsetOutOfRange { first, end }));
        }
        if next >= end || next < first {
            return Ok(Capture::Done(self.done()));
        }
        let budget = self.max_bytes.saturating_sub(self.bytes);
        let view = log.view(next, end, budget)?;
        if view.end() <= next {
            // `committed` ahead of the log's durable end: never
            // expected; answer what was read rather than spin.
            return Ok(Capture::Done(self.done()));
        }
        Ok(Capture::View(view))
    }

    /// Reads `view` (no lock held) into the batch, within the limits.
    pub(super) fn fill(&mut self, view: &LogView) -> Fill {
        let mut reader = view.records();
        let mut full = false;
        while !full && self.records.len() < self.max_records {
            let Some(item) = reader.next() else { break };
            match item.map_err(CoreError::from).and_then(decode_record) {
                Ok(rec) if !self.records.is_empty() && self.bytes + rec.bytes > self.max_bytes => {
                    full = true;
                }
                Ok(rec) => {
                    self.bytes += rec.bytes;
                    self.next = rec.offset + 1;
                    self.records.push(rec);
                }
                // Retention may have removed the segment meanwhile: the
                // stream takes another look (out of range, or what was
                // read so far).
                Err(e) => return Fill::Failed(self.next, e),
            }
        }
        // Going on only makes sense where this view ended.
        let stop = self.next >= self.end || self.next < view.end();
        if full || stop || self.records.len() >= self.max_records || self.bytes >= self.max_bytes {
            return Fill::Done(self.done());
        }
        Fill::More
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

    /// A future that resolves once the record at `offset` is committed, or
    /// the readers close (`Stream::wait_for`).
    pub(super) fn wait_for(&self, offset: u64) -> WaitFor<'_> {
        WaitFor {
            readers: self,
            offset,
            id: None,
        }
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

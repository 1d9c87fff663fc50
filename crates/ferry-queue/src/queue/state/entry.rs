//! [`Entry`]: the 32-byte index entry of one message (where its Enqueue
//! record lives, its delivery count, flags and priority, and its body
//! while it is young enough to be kept in memory).

use ferry_log::RecordPos;
use ferry_model::message::Message;
use std::sync::Arc;

/// One message in the queue: where its Enqueue record lives, plus the
/// little the dispatcher needs. The body stays on disk unless `cached`.
///
/// Kept to 32 bytes: a backlog of millions of messages costs its index in
/// memory, never its bodies (2M messages ≈ 64 MiB).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Log index of the Enqueue record; orders the queue.
    pub id: u64,
    /// `id` minus the base index of the segment holding the record
    /// (a segment holds fewer than 2^32 records).
    seg_delta: u32,
    /// Byte offset of the record in its segment (segments are < 4 GiB).
    offset: u32,
    /// Record length on disk.
    len: u32,
    /// How many times it was returned to the queue after a delivery.
    pub delivery_count: u16,
    flags: u8,
    /// Its priority level (0 outside priority queues).
    pub priority: u8,
    /// The message itself while it is young enough to be kept in memory.
    pub cached: Option<Arc<Message>>,
}

const REDELIVERED: u8 = 1;
const PERSISTENT: u8 = 2;

impl Entry {
    /// An entry for the record at `pos`.
    pub fn new(pos: RecordPos, persistent: bool, cached: Option<Arc<Message>>) -> Self {
        Entry {
            id: pos.index,
            seg_delta: u32::try_from(pos.index.saturating_sub(pos.segment)).unwrap_or(u32::MAX),
            offset: u32::try_from(pos.offset).unwrap_or(u32::MAX),
            len: pos.len,
            delivery_count: 0,
            flags: if persistent { PERSISTENT } else { 0 },
            priority: 0,
            cached,
        }
    }

    /// An entry restored from a snapshot's image (`flags` as
    /// [`Entry::flags`] gave them).
    pub fn restored(pos: RecordPos, delivery_count: u16, flags: u8, priority: u8) -> Self {
        let mut e = Entry::new(pos, false, None);
        e.delivery_count = delivery_count;
        e.flags = flags & (REDELIVERED | PERSISTENT);
        e.priority = priority;
        e
    }

    /// Its flags as one byte (for a snapshot's image).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// The same at priority level `p`.
    pub fn with_priority(mut self, p: u8) -> Self {
        self.priority = p;
        self
    }

    /// Where to read the record back.
    pub fn pos(&self) -> RecordPos {
        RecordPos {
            index: self.id,
            segment: self.id - u64::from(self.seg_delta),
            offset: u64::from(self.offset),
            len: self.len,
        }
    }

    /// Bytes it accounts for (its record on disk).
    pub fn size(&self) -> u32 {
        self.len
    }

    /// Delivered before (AMQP `redelivered`).
    pub fn redelivered(&self) -> bool {
        self.flags & REDELIVERED != 0
    }

    /// Survives a restart.
    pub fn persistent(&self) -> bool {
        self.flags & PERSISTENT != 0
    }

    /// May have been delivered (by a replicated queue's previous leader).
    pub(super) fn mark_redelivered(&mut self) {
        self.flags |= REDELIVERED;
    }

    /// Counts a return to the queue after a delivery.
    pub(super) fn returned(&mut self) {
        self.delivery_count = self.delivery_count.saturating_add(1);
        self.flags |= REDELIVERED;
    }
}

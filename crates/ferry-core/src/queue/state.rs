//! The queue as a deterministic state machine: which messages are ready (in
//! order) and which are checked out to a consumer. It knows nothing of files,
//! sockets or clocks; `Queue` drives it from the command log and from
//! consumers, and a replica (later, Raft) can drive it from the same log.
//!
//! Message deadlines and body sizes (for TTL and `x-max-length-bytes`) live
//! in a side map ([`Meta`]), filled only for messages that have a deadline
//! or in queues that limit bytes: a plain queue pays nothing for them.

use crate::clock::NEVER;
use crate::message::Message;
use ferry_log::RecordPos;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// One message in the queue: where its Enqueue record lives, plus the
/// little the dispatcher needs. The body stays on disk unless `cached`.
///
/// Kept to 32 bytes: a backlog of millions of messages costs its index in
/// memory, never its bodies (2M messages ≈ 64 MiB).
#[derive(Debug, Clone)]
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
            cached,
        }
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

    fn returned(&mut self) {
        self.delivery_count = self.delivery_count.saturating_add(1);
        self.flags |= REDELIVERED;
    }
}

/// What a message needs beyond its index entry, kept only when it has a
/// deadline or its queue counts body bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// When it expires (ms since the epoch); `NEVER` if it does not.
    pub deadline: u64,
    /// Body bytes (what `x-max-length-bytes` counts).
    pub body: u32,
}

/// Ready and checked-out messages.
#[derive(Debug, Default)]
pub struct QueueState {
    ready: VecDeque<Entry>,
    unacked: HashMap<u64, Entry>,
    ready_bytes: u64,
    unacked_bytes: u64,
    spill: Option<Spill>,
    /// Deadlines and body sizes of in-memory messages (ready or checked
    /// out) that have one or whose queue counts bytes.
    meta: HashMap<u64, Meta>,
    /// Whether body bytes of ready messages are counted.
    track_body: bool,
    /// Body bytes of ready in-memory messages (when tracked).
    ready_body: u64,
}

/// The newest part of a long backlog, left in the log instead of memory.
///
/// Every Enqueue record with an index in `[from, to)` is a ready message
/// that nobody has seen yet (so none of them can have been settled or
/// requeued), and each is newer than every message held in memory: the
/// queue's order is `ready` then the spilled range. Memory for a backlog is
/// thus bounded by the window, not by its depth; `Queue` loads the next
/// part of the range back (a sequential log read) as the window drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spill {
    /// First log index not yet loaded back.
    pub from: u64,
    /// One past the last spilled message's index.
    pub to: u64,
    /// Messages in the range.
    pub count: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Their body bytes (counted only when the queue tracks them).
    pub body: u64,
}

/// Ready messages held in memory before new ones spill to the log.
pub const WINDOW: usize = 8192;

impl QueueState {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty queue that counts the body bytes of ready messages
    /// (`x-max-length-bytes`) when `track_body`.
    pub fn with_body_tracking(track_body: bool) -> Self {
        QueueState {
            track_body,
            ..Self::default()
        }
    }

    /// Body bytes of ready messages (0 unless tracked).
    pub fn ready_body_bytes(&self) -> u64 {
        self.ready_body + self.spill.map_or(0, |s| s.body)
    }

    /// Whether any in-memory message has a deadline or a size recorded.
    pub fn has_meta(&self) -> bool {
        !self.meta.is_empty()
    }

    /// The deadline of the head of the queue, if it has one.
    pub fn head_deadline(&self) -> Option<u64> {
        if self.meta.is_empty() {
            return None;
        }
        let head = self.ready.front()?;
        match self.meta.get(&head.id) {
            Some(m) if m.deadline != NEVER => Some(m.deadline),
            _ => None,
        }
    }

    fn note_meta(&mut self, id: u64, deadline: Option<u64>, body: u32) {
        if self.track_body {
            self.ready_body += u64::from(body);
        }
        if deadline.is_some() || self.track_body {
            self.meta.insert(
                id,
                Meta {
                    deadline: deadline.unwrap_or(NEVER),
                    body,
                },
            );
        }
    }

    fn body_of(&self, id: u64) -> u64 {
        if !self.track_body {
            return 0;
        }
        self.meta.get(&id).map_or(0, |m| u64::from(m.body))
    }

    /// Number of messages ready for delivery (AMQP message_count).
    pub fn ready_len(&self) -> usize {
        self.ready.len() + self.spill.map_or(0, |s| s.count)
    }

    /// Ready messages held in memory.
    pub fn in_memory_len(&self) -> usize {
        self.ready.len()
    }

    /// The spilled range, if any.
    pub fn spill(&self) -> Option<Spill> {
        self.spill
    }

    /// Whether the next enqueue will be left in the log (not cached).
    pub fn spills_next(&self) -> bool {
        self.spill.is_some() || self.ready.len() >= WINDOW
    }

    /// Whether the in-memory window should be refilled from the log.
    pub fn wants_refill(&self) -> bool {
        self.spill.is_some() && self.ready.len() < WINDOW / 2
    }

    /// A message loaded back from the spilled range (in order), with its
    /// deadline and body size from its record.
    pub fn refill_push(&mut self, e: Entry, deadline: Option<u64>, body: u32) {
        let size = u64::from(e.size());
        if let Some(sp) = self.spill.as_mut() {
            sp.count = sp.count.saturating_sub(1);
            sp.bytes = sp.bytes.saturating_sub(size);
            if self.track_body {
                sp.body = sp.body.saturating_sub(u64::from(body));
            }
        }
        self.ready_bytes += size;
        self.note_meta(e.id, deadline, body);
        self.ready.push_back(e);
    }

    /// Records how far the spilled range has been loaded back.
    pub fn refill_advance(&mut self, next_from: u64) {
        if let Some(sp) = self.spill.as_mut() {
            sp.from = next_from;
            if sp.from >= sp.to || sp.count == 0 {
                self.spill = None;
            }
        }
    }

    /// Number of messages delivered and not yet settled.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Bytes of ready messages.
    pub fn ready_bytes(&self) -> u64 {
        self.ready_bytes + self.spill.map_or(0, |s| s.bytes)
    }

    /// Bytes of checked-out messages.
    pub fn unacked_bytes(&self) -> u64 {
        self.unacked_bytes
    }

    /// Appends a new message at the tail. Ids grow with the log index.
    /// Past the in-memory window it is left in the log (spilled; its
    /// deadline is read back from its record with it). `body` is its body
    /// size, `deadline` when it expires.
    pub fn enqueue(&mut self, e: Entry, deadline: Option<u64>, body: u32) {
        if self.spill.is_some() || self.ready.len() >= WINDOW {
            let size = u64::from(e.size());
            let sp = self.spill.get_or_insert(Spill {
                from: e.id,
                to: e.id,
                count: 0,
                bytes: 0,
                body: 0,
            });
            sp.to = e.id + 1;
            sp.count += 1;
            sp.bytes += size;
            if self.track_body {
                sp.body += u64::from(body);
            }
            return;
        }
        self.ready_bytes += u64::from(e.size());
        self.note_meta(e.id, deadline, body);
        match self.ready.back() {
            Some(last) if last.id > e.id => self.insert_ordered(e),
            _ => self.ready.push_back(e),
        }
    }

    /// The head of the queue, without removing it.
    pub fn peek_ready(&self) -> Option<&Entry> {
        self.ready.front()
    }

    /// Mutable head (to attach a freshly read message body).
    pub fn peek_ready_mut(&mut self) -> Option<&mut Entry> {
        self.ready.front_mut()
    }

    /// Takes the head of the queue (to deliver it: its deadline stays
    /// known in case it is requeued).
    pub fn pop_ready(&mut self) -> Option<Entry> {
        let e = self.ready.pop_front()?;
        self.ready_bytes -= u64::from(e.size());
        self.ready_body = self.ready_body.saturating_sub(self.body_of(e.id));
        Some(e)
    }

    /// Removes the head of the queue for good (expired or pushed out by a
    /// length limit).
    pub fn drop_head(&mut self) -> Option<Entry> {
        let e = self.pop_ready()?;
        if !self.meta.is_empty() {
            self.meta.remove(&e.id);
        }
        Some(e)
    }

    /// Records that `e` (just popped) is now held by a consumer.
    pub fn check_out(&mut self, mut e: Entry) {
        // Memory holds an index, not bodies: a delivered message is read
        // back from the log if it ever returns.
        e.cached = None;
        self.unacked_bytes += u64::from(e.size());
        self.unacked.insert(e.id, e);
    }

    /// Removes a checked-out message for good. False if it is not checked out.
    pub fn settle(&mut self, id: u64) -> bool {
        self.take_unacked(id).is_some()
    }

    /// Removes a checked-out message for good and returns it.
    pub fn take_unacked(&mut self, id: u64) -> Option<Entry> {
        let e = self.unacked.remove(&id)?;
        self.unacked_bytes -= u64::from(e.size());
        if !self.meta.is_empty() {
            self.meta.remove(&id);
        }
        Some(e)
    }

    /// Returns a checked-out message to its original place in the queue.
    pub fn requeue(&mut self, id: u64) -> bool {
        match self.unacked.remove(&id) {
            Some(mut e) => {
                self.unacked_bytes -= u64::from(e.size());
                e.returned();
                self.ready_bytes += u64::from(e.size());
                self.ready_body += self.body_of(e.id);
                self.insert_ordered(e);
                true
            }
            None => false,
        }
    }

    /// Drops every ready message; returns how many and the ids of the
    /// checked-out ones (which a purge does not touch).
    pub fn purge_ready(&mut self) -> (usize, Vec<u64>) {
        let n = self.ready_len();
        self.spill = None;
        if !self.meta.is_empty() {
            for e in &self.ready {
                self.meta.remove(&e.id);
            }
        }
        self.ready.clear();
        self.ready_bytes = 0;
        self.ready_body = 0;
        let mut keep: Vec<u64> = self.unacked.keys().copied().collect();
        keep.sort_unstable();
        (n, keep)
    }

    /// Drops every cached body (memory pressure); returns the bytes freed
    /// from the accounting.
    pub fn drop_cached(&mut self) -> u64 {
        let mut freed = 0;
        for e in self.ready.iter_mut() {
            if e.cached.take().is_some() {
                freed += u64::from(e.size());
            }
        }
        freed
    }

    /// Smallest id still live (ready or checked out): log records below it
    /// are no longer needed.
    pub fn min_live_id(&self) -> Option<u64> {
        let r = self
            .ready
            .front()
            .map(|e| e.id)
            .or(self.spill.map(|s| s.from));
        let u = self.unacked.keys().min().copied();
        match (r, u) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ids of every checked-out message (to requeue them, e.g. at shutdown).
    pub fn unacked_ids(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.unacked.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn insert_ordered(&mut self, e: Entry) {
        let at = self.ready.partition_point(|x| x.id < e.id);
        self.ready.insert(at, e);
    }
}

/// Rebuilds a `QueueState` from the command log at startup. Every message
/// comes back ready (checkouts are not logged: an unacked message is
/// redelivered after a restart, as in RabbitMQ).
///
/// Enqueue ids only grow, so live messages are kept in one ordered
/// `VecDeque` (no per-message tree nodes: recovering a big backlog costs
/// what the backlog costs at run time). Settles of the head pop it; the
/// rare settle further in is remembered and filtered out at the end.
#[derive(Debug, Default)]
pub struct Replay {
    live: VecDeque<Entry>,
    gone: HashSet<u64>,
    meta: HashMap<u64, Meta>,
    track_body: bool,
}

impl Replay {
    /// Starts an empty replay (of a queue counting body bytes when
    /// `track_body`).
    pub fn new(track_body: bool) -> Self {
        Replay {
            track_body,
            ..Self::default()
        }
    }

    /// Applies an Enqueue record found at `pos`.
    pub fn enqueue(&mut self, pos: RecordPos, msg: &Message, expires_at: Option<u64>) {
        if !msg.persistent {
            // Transient messages do not outlive the process.
            return;
        }
        if expires_at.is_some() || self.track_body {
            self.meta.insert(
                pos.index,
                Meta {
                    deadline: expires_at.unwrap_or(NEVER),
                    body: u32::try_from(msg.body.len()).unwrap_or(u32::MAX),
                },
            );
        }
        self.live.push_back(Entry::new(pos, true, None));
    }

    fn find(&self, id: u64) -> Option<usize> {
        self.live.binary_search_by_key(&id, |e| e.id).ok()
    }

    fn trim_front(&mut self) {
        while let Some(front) = self.live.front() {
            if !self.gone.remove(&front.id) {
                break;
            }
            self.live.pop_front();
        }
    }

    /// Applies a Settle record.
    pub fn settle(&mut self, ids: &[u64]) {
        for id in ids {
            if self.find(*id).is_some() {
                self.gone.insert(*id);
            }
        }
        self.trim_front();
    }

    /// Applies a Requeue record.
    pub fn requeue(&mut self, ids: &[u64]) {
        for id in ids {
            if let Some(i) = self.find(*id) {
                if let Some(e) = self.live.get_mut(i) {
                    e.returned();
                }
            }
        }
    }

    /// Applies a Purge record.
    pub fn purge(&mut self, upto: u64, keep: &[u64]) {
        let cut = self.live.partition_point(|e| e.id < upto);
        let kept: Vec<Entry> = self
            .live
            .drain(..cut)
            .filter(|e| keep.binary_search(&e.id).is_ok())
            .collect();
        for e in kept.into_iter().rev() {
            self.live.push_front(e);
        }
    }

    /// The recovered state: every live message ready, in order.
    pub fn finish(mut self) -> QueueState {
        if !self.gone.is_empty() {
            let gone = std::mem::take(&mut self.gone);
            self.live.retain(|e| !gone.contains(&e.id));
        }
        let mut st = QueueState::with_body_tracking(self.track_body);
        st.ready_bytes = self.live.iter().map(|e| u64::from(e.size())).sum();
        if !self.meta.is_empty() {
            let live = &self.live;
            self.meta
                .retain(|id, _| live.binary_search_by_key(id, |e| e.id).is_ok());
            if self.track_body {
                st.ready_body = self.meta.values().map(|m| u64::from(m.body)).sum();
            }
        }
        st.meta = self.meta;
        st.ready = self.live;
        st
    }
}

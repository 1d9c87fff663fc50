//! The queue as a deterministic state machine: which messages are ready (in
//! order) and which are checked out to a consumer. It knows nothing of files,
//! sockets or clocks; `Queue` drives it from the command log and from
//! consumers, and a replica (later, Raft) can drive it from the same log.
//!
//! Message deadlines and body sizes (for TTL and `x-max-length-bytes`) live
//! in a side map ([`Meta`]), filled only for messages that have a deadline
//! or in queues that limit bytes: a plain queue pays nothing for them.
//!
//! Ready messages are kept per priority level (`x-max-priority`; a plain
//! queue has one level). Each level is an id-ordered list with its own
//! in-memory window and its own spilled range, so the queue's order — the
//! highest non-empty level first, FIFO (by id) within a level — holds for
//! messages still in the log too.

use super::retry::Waiting;
use crate::clock::NEVER;
use ferry_log::RecordPos;
use ferry_model::message::Message;
use std::collections::{HashMap, HashSet, VecDeque};
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

/// The ready messages of one priority level: the in-memory window, then
/// the spilled range (every id in it is newer than every id in `ready`).
#[derive(Debug, Default)]
struct Level {
    ready: VecDeque<Entry>,
    spill: Option<Spill>,
}

impl Level {
    fn len(&self) -> usize {
        self.ready.len() + self.spill.map_or(0, |s| s.count)
    }
}

/// Ready and checked-out messages.
#[derive(Debug)]
pub struct QueueState {
    /// Ready messages by priority level (index = level; at least one).
    levels: Vec<Level>,
    /// Ready messages a level holds in memory before new ones spill.
    window: usize,
    /// Ready messages in memory, over all levels.
    in_memory: usize,
    /// Totals of the spilled ranges of all levels.
    spilled: Spill,
    unacked: HashMap<u64, Entry>,
    ready_bytes: u64,
    unacked_bytes: u64,
    /// Deadlines and body sizes of in-memory messages (ready or checked
    /// out) that have one or whose queue counts bytes.
    meta: HashMap<u64, Meta>,
    /// Whether body bytes of ready messages are counted.
    track_body: bool,
    /// Body bytes of ready in-memory messages (when tracked).
    ready_body: u64,
    /// Messages invisible until a time of their own (delayed retry, a
    /// delayed exchange's held messages): neither ready nor checked out.
    waiting: Waiting,
    /// Replay mode only: ready entries removed for good but still in their
    /// level's list (removing from the middle of a long list one by one
    /// would make a replay quadratic); dropped at the end of the replay.
    gone: Option<HashSet<u64>>,
}

/// The newest part of a long backlog, left in the log instead of memory.
///
/// Every Enqueue record of this level with an index in `[from, to)` is a
/// ready message that nobody has seen yet (so none of them can have been
/// settled or requeued), and each is newer than every message of the level
/// held in memory: the level's order is its `ready` then the spilled range.
/// Records of other levels in the range are skipped when it is read back.
/// Memory for a backlog is thus bounded by the window, not by its depth;
/// `Queue` loads the next part of the range back (a sequential log read)
/// as the window drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// The smallest per-level window of a priority queue.
const MIN_LEVEL_WINDOW: usize = 256;

impl Default for QueueState {
    fn default() -> Self {
        Self::with_levels(1, false)
    }
}

impl QueueState {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty queue that counts the body bytes of ready messages
    /// (`x-max-length-bytes`) when `track_body`.
    pub fn with_body_tracking(track_body: bool) -> Self {
        Self::with_levels(1, track_body)
    }

    /// An empty queue with `levels` priority levels (1 for a plain queue).
    /// The levels share the window: each holds `WINDOW / levels` in memory
    /// (at least 256), so memory stays bounded by the window (plus at most
    /// 256 entries a level) however the messages spread over the levels.
    pub fn with_levels(levels: usize, track_body: bool) -> Self {
        let levels = levels.clamp(1, 256);
        QueueState {
            levels: (0..levels).map(|_| Level::default()).collect(),
            window: Self::window_for(levels),
            in_memory: 0,
            spilled: Spill::default(),
            unacked: HashMap::new(),
            ready_bytes: 0,
            unacked_bytes: 0,
            meta: HashMap::new(),
            track_body,
            ready_body: 0,
            waiting: Waiting::default(),
            gone: None,
        }
    }

    fn window_for(levels: usize) -> usize {
        if levels <= 1 {
            WINDOW
        } else {
            (WINDOW / levels).max(MIN_LEVEL_WINDOW)
        }
    }

    /// Number of priority levels.
    pub fn levels(&self) -> usize {
        self.levels.len()
    }

    fn level_of(&self, priority: u8) -> usize {
        usize::from(priority).min(self.levels.len() - 1)
    }

    /// The level the queue delivers from next: the highest with any ready
    /// message (in memory or spilled).
    fn head_level(&self) -> Option<usize> {
        if self.levels.len() == 1 {
            return (self.levels[0].len() > 0).then_some(0);
        }
        self.levels.iter().rposition(|l| l.len() > 0)
    }

    /// Starts counting body bytes (a policy set `max-length-bytes` on a
    /// running queue). Returns the messages held in memory (ready and
    /// checked out), which the queue sizes with [`QueueState::note_body`],
    /// and the queue sizes each spilled range (see
    /// [`QueueState::spilled_ranges`]); new ones are sized as they arrive.
    /// Nothing if bodies were counted already.
    pub fn track_bodies(&mut self) -> Vec<Entry> {
        if self.track_body {
            return Vec::new();
        }
        self.track_body = true;
        self.levels
            .iter()
            .flat_map(|l| l.ready.iter().cloned())
            .chain(self.unacked.values().cloned())
            .collect()
    }

    /// Records the body size of an in-memory message (ready or checked
    /// out) that was not counted (see [`QueueState::track_bodies`]); a
    /// checked-out one counts once it is requeued.
    pub fn note_body(&mut self, id: u64, body: u32) {
        if !self.track_body {
            return;
        }
        let unacked = self.unacked.contains_key(&id);
        let m = self.meta.entry(id).or_insert(Meta {
            deadline: NEVER,
            body: 0,
        });
        if m.body == 0 {
            m.body = body;
            if !unacked {
                self.ready_body += u64::from(body);
            }
        }
    }

    /// Every level's spilled range, by level index.
    pub fn spilled_ranges(&self) -> Vec<(usize, Spill)> {
        let ranges = self.levels.iter().enumerate();
        ranges
            .filter_map(|(i, l)| l.spill.map(|s| (i, s)))
            .collect()
    }

    /// Sets the body bytes of level `level`'s spilled range, as read back
    /// from its records when tracking started.
    pub fn note_spilled_body(&mut self, level: usize, body: u64) {
        if !self.track_body {
            return;
        }
        if let Some(sp) = self.levels.get_mut(level).and_then(|l| l.spill.as_mut()) {
            self.spilled.body = self.spilled.body.saturating_sub(sp.body) + body;
            sp.body = body;
        }
    }

    /// Body bytes of ready messages (0 unless tracked).
    pub fn ready_body_bytes(&self) -> u64 {
        self.ready_body + self.spilled.body
    }

    /// Whether any in-memory message has a deadline or a size recorded.
    pub fn has_meta(&self) -> bool {
        !self.meta.is_empty()
    }

    /// The deadline of the head of the queue (in a priority queue: of the
    /// highest non-empty level), if it has one.
    pub fn head_deadline(&self) -> Option<u64> {
        if self.meta.is_empty() {
            return None;
        }
        self.deadline_of(self.peek_ready()?.id)
    }

    fn deadline_of(&self, id: u64) -> Option<u64> {
        match self.meta.get(&id) {
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
        self.in_memory + self.spilled.count
    }

    /// Ready messages held in memory.
    pub fn in_memory_len(&self) -> usize {
        self.in_memory
    }

    /// Whether any level has a spilled range (a range ends when its last
    /// message is loaded back, so a non-zero total count says it).
    pub fn has_spill(&self) -> bool {
        self.spilled.count > 0
    }

    /// The spilled range of level 0 (a plain queue's only level), if any.
    pub fn spill(&self) -> Option<Spill> {
        self.levels[0].spill
    }

    /// The level to load back from the log before the next delivery, with
    /// its spilled range and how many messages to load: the head level,
    /// when its window ran below half.
    pub fn refill_target(&self) -> Option<(usize, Spill, usize)> {
        let lvl = self.head_level()?;
        let l = &self.levels[lvl];
        let sp = l.spill?;
        (l.ready.len() < self.window / 2).then(|| (lvl, sp, self.window - l.ready.len()))
    }

    /// A message loaded back from the spilled range of its level (in
    /// order), with its deadline and body size from its record.
    pub fn refill_push(&mut self, e: Entry, deadline: Option<u64>, body: u32) {
        let size = u64::from(e.size());
        let lvl = self.level_of(e.priority);
        if let Some(sp) = self.levels[lvl].spill.as_mut() {
            sp.count = sp.count.saturating_sub(1);
            sp.bytes = sp.bytes.saturating_sub(size);
            self.spilled.count = self.spilled.count.saturating_sub(1);
            self.spilled.bytes = self.spilled.bytes.saturating_sub(size);
            if self.track_body {
                sp.body = sp.body.saturating_sub(u64::from(body));
                self.spilled.body = self.spilled.body.saturating_sub(u64::from(body));
            }
        }
        self.ready_bytes += size;
        self.in_memory += 1;
        self.note_meta(e.id, deadline, body);
        self.levels[lvl].ready.push_back(e);
    }

    /// Records how far the spilled range of `level` has been loaded back.
    pub fn refill_advance(&mut self, level: usize, next_from: u64) {
        if let Some(sp) = self.levels.get_mut(level).and_then(|l| l.spill.as_mut()) {
            sp.from = next_from;
            if sp.from >= sp.to || sp.count == 0 {
                // Whatever the range still claimed is gone with it (only a
                // damaged log leaves any), so the totals stay exact.
                let left = *sp;
                self.spilled.count -= left.count.min(self.spilled.count);
                self.spilled.bytes -= left.bytes.min(self.spilled.bytes);
                self.spilled.body -= left.body.min(self.spilled.body);
                self.levels[level].spill = None;
            }
        }
    }

    /// Number of messages delivered and not yet settled.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Bytes of ready messages.
    pub fn ready_bytes(&self) -> u64 {
        self.ready_bytes + self.spilled.bytes
    }

    /// Bytes of checked-out messages.
    pub fn unacked_bytes(&self) -> u64 {
        self.unacked_bytes
    }

    /// Appends a new message at the tail of its level. Ids grow with the
    /// log index. Past the level's in-memory window it is left in the log
    /// (spilled; its deadline is read back from its record with it).
    /// `body` is its body size, `deadline` when it expires.
    pub fn enqueue(&mut self, e: Entry, deadline: Option<u64>, body: u32) {
        let lvl = self.level_of(e.priority);
        let window = self.window;
        let level = &mut self.levels[lvl];
        if level.spill.is_some() || level.ready.len() >= window {
            let size = u64::from(e.size());
            let sp = level.spill.get_or_insert(Spill {
                from: e.id,
                to: e.id,
                ..Spill::default()
            });
            sp.to = e.id + 1;
            sp.count += 1;
            sp.bytes += size;
            self.spilled.count += 1;
            self.spilled.bytes += size;
            if self.track_body {
                sp.body += u64::from(body);
                self.spilled.body += u64::from(body);
            }
            return;
        }
        self.ready_bytes += u64::from(e.size());
        self.in_memory += 1;
        self.note_meta(e.id, deadline, body);
        let ready = &mut self.levels[lvl].ready;
        match ready.back() {
            Some(last) if last.id > e.id => insert_ordered(ready, e),
            _ => ready.push_back(e),
        }
    }

    /// The head of the queue, without removing it. None also when the
    /// head level's messages are all still in the log (refill first).
    pub fn peek_ready(&self) -> Option<&Entry> {
        self.levels[self.head_level()?].ready.front()
    }

    /// Mutable head (to attach a freshly read message body).
    pub fn peek_ready_mut(&mut self) -> Option<&mut Entry> {
        let lvl = self.head_level()?;
        self.levels[lvl].ready.front_mut()
    }

    /// Takes the head of the queue (to deliver it: its deadline stays
    /// known in case it is requeued).
    pub fn pop_ready(&mut self) -> Option<Entry> {
        let lvl = self.head_level()?;
        self.pop_level(lvl)
    }

    fn pop_level(&mut self, lvl: usize) -> Option<Entry> {
        let e = self.levels[lvl].ready.pop_front()?;
        self.in_memory -= 1;
        self.ready_bytes -= u64::from(e.size());
        self.ready_body = self.ready_body.saturating_sub(self.body_of(e.id));
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

    /// How often a checked-out message was returned before.
    pub fn unacked_delivery_count(&self, id: u64) -> Option<u16> {
        self.unacked.get(&id).map(|e| e.delivery_count)
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

    /// Drops every cached body (memory pressure); returns the bytes freed
    /// from the accounting.
    pub fn drop_cached(&mut self) -> u64 {
        let mut freed = 0;
        for e in self.levels.iter_mut().flat_map(|l| l.ready.iter_mut()) {
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
            .levels
            .iter()
            .filter_map(|l| l.ready.front().map(|e| e.id).or(l.spill.map(|s| s.from)))
            .min();
        let u = self.unacked.keys().min().copied();
        let u = match (u, self.waiting.min_id()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
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
}

/// Commands by id (remove, return, purge), the head walk, replay mode.
mod by_id;
/// Delayed retry and held messages: the waiting set's side of the state.
mod waiting;

fn insert_ordered(ready: &mut VecDeque<Entry>, e: Entry) {
    let at = ready.partition_point(|x| x.id < e.id);
    ready.insert(at, e);
}

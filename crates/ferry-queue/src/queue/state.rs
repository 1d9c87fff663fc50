//! The queue as a deterministic state machine: which messages are ready (in
//! order), which are checked out to a consumer and which wait for a time of
//! their own. It knows nothing of files, sockets or clocks; `Queue` drives
//! it from the command log and from consumers, and a replica (later, Raft)
//! can drive it from the same log.
//!
//! [`QueueState`] composes its parts and keeps the operations that cross
//! them (commands naming a message by id wherever it is, purges, the
//! replay mode); `apply` has the rules, this file keeps the accounting
//! exact. The parts:
//! * [`Entry`] (`entry`): a message's 32-byte index entry;
//! * `Ready` (`ready`): the ready messages per priority level, in memory
//!   and spilled to the log ([`Spill`]), with their counts and bytes;
//! * `CheckedOut` (`checked_out`): the messages held by consumers;
//! * `MetaTable` (`meta`): deadlines and body sizes ([`Meta`]), filled
//!   only for messages that have a deadline or in queues that limit bytes:
//!   a plain queue pays nothing for them;
//! * [`Waiting`] (`queue::retry`): delayed retries and held messages.

use super::retry::Waiting;
use checked_out::CheckedOut;
use ferry_model::message::Message;
use meta::MetaTable;
use ready::Ready;
use std::sync::Arc;

pub use entry::Entry;
pub use image::{ImageError, ImageRow, StateImage};
pub use marks::{MarkOutcome, MarkRow, Marks};
pub use meta::Meta;
pub use ready::{Spill, WINDOW};

/// The checked-out messages.
mod checked_out;
/// A message's index entry.
mod entry;
/// The state as data, for a replicated queue's snapshot.
mod image;
/// Publisher deduplication: each proposer's last applied batch.
mod marks;
/// Deadlines and body sizes.
mod meta;
/// The ready messages: priority levels, window, spilled ranges.
mod ready;

/// One message in [`QueueState::digest`]: (id, delivery count, priority,
/// waiting until, deadline).
#[cfg(test)]
pub type DigestRow = (u64, u16, u8, Option<u64>, Option<u64>);

/// Ready, checked-out and waiting messages.
#[derive(Debug)]
pub struct QueueState {
    /// Ready messages by priority level.
    ready: Ready,
    /// Messages delivered and not yet settled.
    checked_out: CheckedOut,
    /// Deadlines and body sizes of in-memory messages (ready, checked out
    /// or waiting) that have one or whose queue counts bytes.
    meta: MetaTable,
    /// Messages invisible until a time of their own (delayed retry, a
    /// delayed exchange's held messages): neither ready nor checked out.
    waiting: Waiting,
    /// Each proposer's last applied batch (replicated queues).
    marks: Marks,
}

impl Default for QueueState {
    fn default() -> Self {
        Self::with_levels(1, false)
    }
}

impl QueueState {
    /// Gives back the spare room of its lists and maps where most of it
    /// is spare (for an idle queue: what a busy spell grew stays
    /// allocated otherwise).
    pub fn shrink(&mut self) {
        self.ready.shrink();
        self.checked_out.shrink();
        self.meta.shrink();
    }

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
        QueueState {
            ready: Ready::new(levels),
            checked_out: CheckedOut::default(),
            meta: MetaTable::new(track_body),
            waiting: Waiting::default(),
            marks: Marks::default(),
        }
    }

    /// Decides a replicated queue's entry by its Mark (see `marks`).
    pub fn check_mark(
        &mut self,
        proposer: u64,
        seq: u64,
        index: u64,
        refused: &[u32],
    ) -> MarkOutcome {
        self.marks.check(proposer, seq, index, refused)
    }

    /// An empty queue to replay a log into: nothing spills while
    /// replaying (every replayed message is in memory, as a spilled range
    /// could not be settled by id) and waiting messages are kept by id
    /// (replay names them: a retried or held message delivered again
    /// before the restart); [`QueueState::end_replay`] restores the window
    /// and the waiting set's order for what comes next.
    pub fn for_replay(levels: usize, track_body: bool) -> Self {
        let mut st = Self::with_levels(levels, track_body);
        st.ready.begin_replay();
        st.waiting.index_by_id();
        st
    }

    /// The state of a replicated queue's replica (see `replica`): built
    /// by live applies from the start of the group's log, and kept wholly
    /// in memory as an index (bodies stay in the log): every replica must
    /// find each message a command names, and a spilled range would hide
    /// some. Waiting messages are ordered by time as in a local queue.
    pub fn for_replicated(levels: usize, track_body: bool) -> Self {
        let mut st = Self::with_levels(levels, track_body);
        st.ready.unbounded();
        st
    }

    /// A replicated queue's leader stepping down: every checked-out
    /// message goes back to its place as it was (checkouts are not
    /// commands, so the other replicas never saw them leave).
    pub fn return_all_checked_out(&mut self) {
        for id in self.unacked_ids() {
            if let Some(e) = self.checked_out.take(id) {
                let body = self.meta.body(id);
                self.ready.requeue(e, body);
            }
        }
    }

    /// A replicated queue's replica taking over the leadership: any
    /// message it holds may have been delivered by the previous leader
    /// (checkouts are not commands), so each is delivered as redelivered
    /// — conservatively: also those nobody had delivered. (A replica's
    /// ready messages are all in memory.)
    pub fn mark_all_redelivered(&mut self) {
        self.ready.mark_all_redelivered();
    }

    /// Ends the replay mode: new messages past the window spill again,
    /// waiting ones are ordered by their time.
    pub fn end_replay(&mut self) {
        self.ready.end_replay();
        self.waiting.seal();
    }

    /// Whether body bytes are counted.
    pub fn tracks_body(&self) -> bool {
        self.meta.tracks_body()
    }

    /// Number of priority levels.
    pub fn levels(&self) -> usize {
        self.ready.levels()
    }

    /// Starts counting body bytes (a policy set `max-length-bytes` on a
    /// running queue). Returns the messages held in memory (ready and
    /// checked out), which the queue sizes with [`QueueState::note_body`],
    /// and the queue sizes each spilled range (see
    /// [`QueueState::spilled_ranges`]); new ones are sized as they arrive.
    /// Nothing if bodies were counted already.
    pub fn track_bodies(&mut self) -> Vec<Entry> {
        if !self.meta.start_tracking() {
            return Vec::new();
        }
        self.ready
            .entries()
            .cloned()
            .chain(self.checked_out.entries().cloned())
            .collect()
    }

    /// Records the body size of an in-memory message (ready or checked
    /// out) that was not counted (see [`QueueState::track_bodies`]); a
    /// checked-out one counts once it is requeued.
    pub fn note_body(&mut self, id: u64, body: u32) {
        if !self.meta.tracks_body() {
            return;
        }
        let unacked = self.checked_out.contains(id);
        if let Some(counted) = self.meta.note_body(id, body) {
            if !unacked {
                self.ready.add_body(counted);
            }
        }
    }

    /// Every level's spilled range, by level index.
    pub fn spilled_ranges(&self) -> Vec<(usize, Spill)> {
        self.ready.spilled_ranges()
    }

    /// Sets the body bytes of level `level`'s spilled range, as read back
    /// from its records when tracking started.
    pub fn note_spilled_body(&mut self, level: usize, body: u64) {
        if self.meta.tracks_body() {
            self.ready.note_spilled_body(level, body);
        }
    }

    /// Body bytes of ready messages (0 unless tracked).
    pub fn ready_body_bytes(&self) -> u64 {
        self.ready.body_bytes()
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
        self.meta.deadline(self.peek_ready()?.id)
    }

    /// Number of messages ready for delivery (AMQP message_count).
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Ready messages held in memory.
    pub fn in_memory_len(&self) -> usize {
        self.ready.in_memory()
    }

    /// Whether any level has a spilled range (a range ends when its last
    /// message is loaded back, so a non-zero total count says it).
    pub fn has_spill(&self) -> bool {
        self.ready.has_spill()
    }

    /// The spilled range of level 0 (a plain queue's only level), if any.
    pub fn spill(&self) -> Option<Spill> {
        self.ready.spill()
    }

    /// The level to load back from the log before the next delivery, with
    /// its spilled range and how many messages to load: the head level,
    /// when its window ran below half.
    pub fn refill_target(&self) -> Option<(usize, Spill, usize)> {
        self.ready.refill_target()
    }

    /// A message loaded back from the spilled range of its level (in
    /// order), with its deadline and body size from its record.
    pub fn refill_push(&mut self, e: Entry, deadline: Option<u64>, body: u32) {
        self.meta.note(e.id, deadline, body);
        self.ready.refill_push(e, self.meta.counted(body));
    }

    /// Records how far the spilled range of `level` has been loaded back.
    pub fn refill_advance(&mut self, level: usize, next_from: u64) {
        self.ready.refill_advance(level, next_from);
    }

    /// Number of messages delivered and not yet settled.
    pub fn unacked_len(&self) -> usize {
        self.checked_out.len()
    }

    /// Bytes of ready messages.
    pub fn ready_bytes(&self) -> u64 {
        self.ready.bytes()
    }

    /// Bytes of checked-out messages.
    pub fn unacked_bytes(&self) -> u64 {
        self.checked_out.bytes()
    }

    /// Appends a new message at the tail of its level. Ids grow with the
    /// log index. Past the level's in-memory window it is left in the log
    /// (spilled; its deadline is read back from its record with it).
    /// `body` is its body size, `deadline` when it expires.
    pub fn enqueue(&mut self, e: Entry, deadline: Option<u64>, body: u32) {
        let id = e.id;
        if self.ready.enqueue(e, self.meta.counted(body)) {
            self.meta.note(id, deadline, body);
        }
    }

    /// The head of the queue, without removing it. None also when the
    /// head level's messages are all still in the log (refill first).
    pub fn peek_ready(&self) -> Option<&Entry> {
        self.ready.peek()
    }

    /// Mutable head (to attach a freshly read message body).
    pub fn peek_ready_mut(&mut self) -> Option<&mut Entry> {
        self.ready.peek_mut()
    }

    /// Takes the head of the queue (to deliver it: its deadline stays
    /// known in case it is requeued).
    pub fn pop_ready(&mut self) -> Option<Entry> {
        self.ready.pop(&self.meta)
    }

    /// Records that `e` (just popped) is now held by a consumer.
    pub fn check_out(&mut self, e: Entry) {
        self.checked_out.insert(e);
    }

    /// How often a checked-out message was returned before.
    pub fn unacked_delivery_count(&self, id: u64) -> Option<u16> {
        self.checked_out.get(id).map(|e| e.delivery_count)
    }

    /// Removes a checked-out message for good and returns it.
    pub fn take_unacked(&mut self, id: u64) -> Option<Entry> {
        let e = self.checked_out.take(id)?;
        self.meta.remove(id);
        Some(e)
    }

    /// Drops every cached body (memory pressure); returns the bytes freed
    /// from the accounting.
    pub fn drop_cached(&mut self) -> u64 {
        self.ready.drop_cached()
    }

    /// Smallest id still live (ready, checked out or waiting): log records
    /// below it are no longer needed.
    pub fn min_live_id(&self) -> Option<u64> {
        let r = self.ready.min_id();
        let u = self.checked_out.ids().min();
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
        let mut v: Vec<u64> = self.checked_out.ids().collect();
        v.sort_unstable();
        v
    }

    /// Removes the message `id` for good, wherever it is. None if the
    /// queue does not hold it (or only in a spilled range, which no
    /// command names: a spilled message was never seen, and replay does
    /// not spill).
    pub fn remove(&mut self, id: u64) -> Option<Entry> {
        if !self.checked_out.is_empty() {
            if let Some(e) = self.take_unacked(id) {
                return Some(e);
            }
        }
        let e = match self.ready.take(id, &self.meta) {
            Some(e) => e,
            None => self.waiting.remove(id)?,
        };
        self.meta.remove(id);
        Some(e)
    }

    /// Returns the message `id` (checked out, or — in a replay — ready or
    /// waiting) with its delivery count bumped: ready again in its place,
    /// or waiting until `until`. False if the queue does not hold it.
    pub fn return_any(&mut self, id: u64, until: Option<u64>) -> bool {
        if until.is_none() && !self.checked_out.contains(id) && self.ready.return_in_place(id) {
            // Ready already (a replay): it stays in its place.
            return true;
        }
        let mut e = if let Some(e) = self.checked_out.take(id) {
            e
        } else if let Some(e) = self.ready.take(id, &self.meta) {
            e
        } else if let Some(e) = self.waiting.remove(id) {
            e
        } else {
            return false;
        };
        e.returned();
        match until {
            Some(at) => self.waiting.insert(at, e),
            None => {
                let body = self.meta.body(e.id);
                self.ready.requeue(e, body);
            }
        }
        true
    }

    /// Removes every message with an id below `upto` except the `keep`
    /// ones (sorted): ready (spilled ranges wholly below `upto`
    /// included), waiting and checked out. Returns how many ready and
    /// waiting messages went, and the bytes of cached bodies freed.
    pub fn purge_below(&mut self, upto: u64, keep: &[u64]) -> (usize, u64) {
        let stays = |id: u64| id >= upto || keep.binary_search(&id).is_ok();
        let (mut n, freed) = self.ready.purge_below(upto, stays, &mut self.meta);
        for e in self.waiting.remove_where(|id| !stays(id)) {
            n += 1;
            self.meta.remove(e.id);
        }
        let gone: Vec<u64> = self.checked_out.ids().filter(|id| !stays(*id)).collect();
        for id in gone {
            self.take_unacked(id);
        }
        (n, freed)
    }

    /// The ready messages in delivery order as far as memory holds them:
    /// each level from the highest, its in-memory window, stopping after
    /// the first level with a spilled range (its next message must be
    /// loaded before anything below it). What expiry and overflow decide
    /// from.
    pub fn heads(&self) -> impl Iterator<Item = &Entry> {
        self.ready.heads()
    }

    /// The deadline of a message held in memory, if it has one.
    pub fn deadline(&self, id: u64) -> Option<u64> {
        self.meta.deadline(id)
    }

    /// The counted body bytes of a message held in memory (0 unless the
    /// queue counts them).
    pub fn body_bytes(&self, id: u64) -> u64 {
        self.meta.body(id)
    }

    /// Whether `id` is checked out.
    pub fn is_unacked(&self, id: u64) -> bool {
        self.checked_out.contains(id)
    }

    /// The message `id` if it is the in-memory tail of level `priority`
    /// (a message just enqueued that did not spill): where the leader
    /// keeps its body cached.
    pub fn tail_mut(&mut self, id: u64, priority: u8) -> Option<&mut Entry> {
        self.ready.tail_mut(id, priority)
    }

    /// Keeps `msg` as the cached body of the just-enqueued tail `id`.
    pub fn cache_tail(&mut self, id: u64, priority: u8, msg: Arc<Message>) {
        if let Some(e) = self.tail_mut(id, priority) {
            e.cached = Some(msg);
        }
    }

    /// A new message held (invisible) until `until`: a delayed
    /// exchange's. Never spilled: the waiting set is in memory.
    pub fn hold(&mut self, e: Entry, until: u64, deadline: Option<u64>, body: u32) {
        self.meta.note(e.id, deadline, body);
        self.waiting.insert(until, e);
    }

    /// Messages waiting for their time.
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Their record bytes.
    pub fn waiting_bytes(&self) -> u64 {
        self.waiting.bytes()
    }

    /// Whether any message waits.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// When the next waiting message becomes ready.
    pub fn next_due(&self) -> Option<u64> {
        self.waiting.next_due()
    }

    /// The earliest waiting message due at or before `now` (due time, then
    /// id), left waiting.
    pub fn peek_due(&self, now: u64) -> Option<&Entry> {
        self.waiting.peek_due(now)
    }

    /// Checks out the earliest waiting message due at or before `now`
    /// without passing through the ready list (a delayed exchange releases
    /// in due order, not in the id order of the ready list).
    pub fn check_out_due(&mut self, now: u64) -> Option<u64> {
        let e = self.waiting.pop_due(now)?;
        let id = e.id;
        self.check_out(e);
        Some(id)
    }

    /// Makes every waiting message due at or before `now` ready, in its
    /// original place (its id orders it among the ready ones, as a
    /// requeue does). Returns how many.
    pub fn promote_due(&mut self, now: u64) -> usize {
        let due = self.waiting.take_due(now);
        let n = due.len();
        for e in due {
            let body = self.meta.body(e.id);
            self.ready.insert_due(e, body);
        }
        n
    }

    /// Every message the queue holds, as (id, delivery count, priority,
    /// waiting until, deadline), by id; checked-out ones count as ready
    /// (a restart returns them). Two states with the same digest hold
    /// the same messages (tests: live and replayed states must agree).
    #[cfg(test)]
    pub fn digest(&self) -> Vec<DigestRow> {
        self.image()
            .rows
            .iter()
            .map(|r| (r.id, r.delivery_count, r.priority, r.until, r.deadline))
            .collect()
    }
}

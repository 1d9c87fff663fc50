//! [`Ready`]: the messages ready for delivery, kept per priority level
//! (`x-max-priority`; a plain queue has one level). Each level is an
//! id-ordered list with its own in-memory window and its own spilled range
//! ([`Spill`]), so the queue's order — the highest non-empty level first,
//! FIFO (by id) within a level — holds for messages still in the log too.
//! It owns the counts and bytes of ready messages (body bytes as the
//! caller counts them, see `MetaTable::counted`), the ordered insert of
//! returned messages, the refill of a spilled range, and, in a replay, the
//! removed entries left in place (`gone`).

use super::meta::MetaTable;
use super::Entry;
use crate::ids::IdSet;
use std::collections::VecDeque;

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

/// Ready messages of every level, in memory and spilled.
#[derive(Debug)]
pub(super) struct Ready {
    /// Ready messages by priority level (index = level; at least one).
    levels: Vec<Level>,
    /// Ready messages a level holds in memory before new ones spill.
    window: usize,
    /// Ready messages in memory, over all levels.
    in_memory: usize,
    /// Totals of the spilled ranges of all levels.
    spilled: Spill,
    /// Bytes of ready in-memory messages.
    bytes: u64,
    /// Body bytes of ready in-memory messages (when counted).
    body: u64,
    /// Replay mode only: ready entries removed for good but still in their
    /// level's list (removing from the middle of a long list one by one
    /// would make a replay quadratic); dropped at the end of the replay.
    gone: Option<IdSet<u64>>,
}

impl Ready {
    /// Gives back the lists' spare room (an idle queue's: a list that
    /// once held thousands keeps room for them).
    pub(super) fn shrink(&mut self) {
        for l in &mut self.levels {
            if let Some(to) = spare(l.ready.len(), l.ready.capacity()) {
                l.ready.shrink_to(to);
            }
        }
    }

    /// No ready message, in `levels` priority levels (clamped to 1..=256).
    /// The levels share the window: each holds `WINDOW / levels` in memory
    /// (at least 256), so memory stays bounded by the window (plus at most
    /// 256 entries a level) however the messages spread over the levels.
    pub(super) fn new(levels: usize) -> Self {
        let levels = levels.clamp(1, 256);
        Ready {
            levels: (0..levels).map(|_| Level::default()).collect(),
            window: Self::window_for(levels),
            in_memory: 0,
            spilled: Spill::default(),
            bytes: 0,
            body: 0,
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

    /// A replicated queue's replica: nothing spills (every replica must
    /// find each message a command names); removals are real (a leader
    /// delivers from this list).
    pub(super) fn unbounded(&mut self) {
        self.window = usize::MAX;
    }

    /// Replay mode: nothing spills, removed entries may stay in place.
    pub(super) fn begin_replay(&mut self) {
        self.window = usize::MAX;
        self.gone = Some(IdSet::default());
    }

    /// Ends the replay mode: the window again, the leftovers dropped.
    pub(super) fn end_replay(&mut self) {
        self.window = Self::window_for(self.levels.len());
        if let Some(gone) = self.gone.take().filter(|g| !g.is_empty()) {
            for l in &mut self.levels {
                l.ready.retain(|e| !gone.contains(&e.id));
            }
        }
    }

    /// Number of priority levels.
    pub(super) fn levels(&self) -> usize {
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

    /// Every in-memory ready message, level by level (from the lowest).
    pub(super) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.levels.iter().flat_map(|l| l.ready.iter())
    }

    /// Every level's spilled range, by level index.
    pub(super) fn spilled_ranges(&self) -> Vec<(usize, Spill)> {
        let ranges = self.levels.iter().enumerate();
        ranges
            .filter_map(|(i, l)| l.spill.map(|s| (i, s)))
            .collect()
    }

    /// Sets the body bytes of level `level`'s spilled range.
    pub(super) fn note_spilled_body(&mut self, level: usize, body: u64) {
        if let Some(sp) = self.levels.get_mut(level).and_then(|l| l.spill.as_mut()) {
            self.spilled.body = self.spilled.body.saturating_sub(sp.body) + body;
            sp.body = body;
        }
    }

    /// Counts `body` more body bytes of an in-memory ready message.
    pub(super) fn add_body(&mut self, body: u64) {
        self.body += body;
    }

    /// Body bytes of ready messages (0 unless counted).
    pub(super) fn body_bytes(&self) -> u64 {
        self.body + self.spilled.body
    }

    /// Number of ready messages.
    pub(super) fn len(&self) -> usize {
        self.in_memory + self.spilled.count
    }

    /// Ready messages held in memory.
    pub(super) fn in_memory(&self) -> usize {
        self.in_memory
    }

    /// Bytes of ready messages.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes + self.spilled.bytes
    }

    /// Whether any level has a spilled range (a range ends when its last
    /// message is loaded back, so a non-zero total count says it).
    pub(super) fn has_spill(&self) -> bool {
        self.spilled.count > 0
    }

    /// The spilled range of level 0 (a plain queue's only level), if any.
    pub(super) fn spill(&self) -> Option<Spill> {
        self.levels[0].spill
    }

    /// The level to load back from the log before the next delivery, with
    /// its spilled range and how many messages to load: the head level,
    /// when its window ran below half.
    pub(super) fn refill_target(&self) -> Option<(usize, Spill, usize)> {
        let lvl = self.head_level()?;
        let l = &self.levels[lvl];
        let sp = l.spill?;
        (l.ready.len() < self.window / 2).then(|| (lvl, sp, self.window - l.ready.len()))
    }

    /// A message loaded back from the spilled range of its level (in
    /// order), counting `body` body bytes.
    pub(super) fn refill_push(&mut self, e: Entry, body: u64) {
        let size = u64::from(e.size());
        let lvl = self.level_of(e.priority);
        if let Some(sp) = self.levels[lvl].spill.as_mut() {
            sp.count = sp.count.saturating_sub(1);
            sp.bytes = sp.bytes.saturating_sub(size);
            self.spilled.count = self.spilled.count.saturating_sub(1);
            self.spilled.bytes = self.spilled.bytes.saturating_sub(size);
            sp.body = sp.body.saturating_sub(body);
            self.spilled.body = self.spilled.body.saturating_sub(body);
        }
        self.bytes += size;
        self.in_memory += 1;
        self.body += body;
        self.levels[lvl].ready.push_back(e);
    }

    /// Records how far the spilled range of `level` has been loaded back.
    pub(super) fn refill_advance(&mut self, level: usize, next_from: u64) {
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

    /// Appends a new message at the tail of its level, counting `body`
    /// body bytes; past the level's in-memory window it is left in the
    /// log (spilled). True if it is held in memory.
    pub(super) fn enqueue(&mut self, e: Entry, body: u64) -> bool {
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
            sp.body += body;
            self.spilled.body += body;
            return false;
        }
        self.bytes += u64::from(e.size());
        self.in_memory += 1;
        self.body += body;
        let ready = &mut self.levels[lvl].ready;
        match ready.back() {
            Some(last) if last.id > e.id => insert_ordered(ready, e),
            _ => ready.push_back(e),
        }
        true
    }

    /// The head of the queue, without removing it. None also when the
    /// head level's messages are all still in the log (refill first).
    pub(super) fn peek(&self) -> Option<&Entry> {
        self.levels[self.head_level()?].ready.front()
    }

    /// Mutable head.
    pub(super) fn peek_mut(&mut self) -> Option<&mut Entry> {
        let lvl = self.head_level()?;
        self.levels[lvl].ready.front_mut()
    }

    /// Takes the head of the queue (`meta` has its counted body bytes).
    pub(super) fn pop(&mut self, meta: &MetaTable) -> Option<Entry> {
        let lvl = self.head_level()?;
        let e = self.levels[lvl].ready.pop_front()?;
        self.in_memory -= 1;
        self.bytes -= u64::from(e.size());
        self.body = self.body.saturating_sub(meta.body(e.id));
        Some(e)
    }

    /// Drops every cached body; returns the bytes freed from the
    /// accounting.
    pub(super) fn drop_cached(&mut self) -> u64 {
        let mut freed = 0;
        for e in self.levels.iter_mut().flat_map(|l| l.ready.iter_mut()) {
            if e.cached.take().is_some() {
                freed += u64::from(e.size());
            }
        }
        freed
    }

    /// Flags every in-memory ready message as possibly delivered before.
    pub(super) fn mark_all_redelivered(&mut self) {
        for e in self.levels.iter_mut().flat_map(|l| l.ready.iter_mut()) {
            e.mark_redelivered();
        }
    }

    /// Smallest ready id, in memory or spilled.
    pub(super) fn min_id(&self) -> Option<u64> {
        self.levels
            .iter()
            .filter_map(|l| l.ready.front().map(|e| e.id).or(l.spill.map(|s| s.from)))
            .min()
    }

    /// Counts a return of the ready message `id` in its place (a replay
    /// returning a message that is ready already). False if not ready.
    pub(super) fn return_in_place(&mut self, id: u64) -> bool {
        if let Some((lvl, at)) = self.find(id) {
            if let Some(e) = self.levels[lvl].ready.get_mut(at) {
                e.returned();
                return true;
            }
        }
        false
    }

    /// Puts a returned `e` back into its level in id order, counting
    /// `body` body bytes. In a replay its removed copy may still be there
    /// (left in place, see `gone`): it takes that slot.
    pub(super) fn requeue(&mut self, e: Entry, body: u64) {
        self.count_in(&e, body);
        let lvl = self.level_of(e.priority);
        let ready = &mut self.levels[lvl].ready;
        match self.gone.as_mut() {
            Some(gone) => match ready.binary_search_by_key(&e.id, |x| x.id) {
                Ok(at) => {
                    gone.remove(&e.id);
                    ready[at] = e;
                }
                Err(at) => ready.insert(at, e),
            },
            None => insert_ordered(ready, e),
        }
    }

    /// Makes a message that waited ready in its original place (its id
    /// orders it), counting `body` body bytes.
    pub(super) fn insert_due(&mut self, e: Entry, body: u64) {
        self.count_in(&e, body);
        let lvl = self.level_of(e.priority);
        insert_ordered(&mut self.levels[lvl].ready, e);
    }

    fn count_in(&mut self, e: &Entry, body: u64) {
        self.bytes += u64::from(e.size());
        self.body += body;
        self.in_memory += 1;
    }

    /// Takes a ready in-memory message out of its level (`meta` has its
    /// counted body bytes; its entry there stays: the caller decides).
    pub(super) fn take(&mut self, id: u64, meta: &MetaTable) -> Option<Entry> {
        let (lvl, at) = self.find(id)?;
        let e = match self.gone.as_mut() {
            Some(gone) if at > 0 => {
                gone.insert(id);
                self.levels[lvl].ready.get(at)?.clone()
            }
            _ => self.levels[lvl].ready.remove(at)?,
        };
        if let Some(gone) = self.gone.as_mut() {
            let ready = &mut self.levels[lvl].ready;
            while ready.front().is_some_and(|f| gone.remove(&f.id)) {
                ready.pop_front();
            }
        }
        self.in_memory -= 1;
        self.bytes -= u64::from(e.size());
        self.body = self.body.saturating_sub(meta.body(id));
        Some(e)
    }

    fn find(&self, id: u64) -> Option<(usize, usize)> {
        // The head of a level is the usual case (expiry, overflow, replay
        // of FIFO settles).
        if let Some(lvl) = self
            .levels
            .iter()
            .position(|l| l.ready.front().is_some_and(|e| e.id == id))
        {
            return Some((lvl, 0));
        }
        let (lvl, at) = self.levels.iter().enumerate().find_map(|(lvl, l)| {
            l.ready
                .binary_search_by_key(&id, |e| e.id)
                .ok()
                .map(|at| (lvl, at))
        })?;
        // A front is never a leftover of a replay (they are trimmed).
        match &self.gone {
            Some(g) if g.contains(&id) => None,
            _ => Some((lvl, at)),
        }
    }

    /// Removes every ready message `stays` does not keep (spilled ranges
    /// wholly below `upto` included), and their entries in `meta`.
    /// Returns how many went, and the bytes of cached bodies freed.
    pub(super) fn purge_below(
        &mut self,
        upto: u64,
        stays: impl Fn(u64) -> bool,
        meta: &mut MetaTable,
    ) -> (usize, u64) {
        let mut n = 0;
        let mut freed = 0;
        for lvl in 0..self.levels.len() {
            if let Some(sp) = self.levels[lvl].spill.filter(|s| s.to <= upto) {
                // Nobody has seen a spilled message: none is kept.
                n += sp.count;
                self.spilled.count -= sp.count.min(self.spilled.count);
                self.spilled.bytes -= sp.bytes.min(self.spilled.bytes);
                self.spilled.body -= sp.body.min(self.spilled.body);
                self.levels[lvl].spill = None;
            }
            if self.levels[lvl].ready.front().is_none_or(|e| stays(e.id))
                && self.levels[lvl].ready.iter().all(|e| stays(e.id))
            {
                continue;
            }
            let old = std::mem::take(&mut self.levels[lvl].ready);
            for e in old {
                if self.gone.as_mut().is_some_and(|g| g.remove(&e.id)) {
                    // Removed already (a replay's leftover).
                    continue;
                }
                if stays(e.id) {
                    self.levels[lvl].ready.push_back(e);
                    continue;
                }
                n += 1;
                self.in_memory -= 1;
                self.bytes -= u64::from(e.size());
                self.body = self.body.saturating_sub(meta.body(e.id));
                if e.cached.is_some() {
                    freed += u64::from(e.size());
                }
                meta.remove(e.id);
            }
        }
        (n, freed)
    }

    /// The ready messages in delivery order as far as memory holds them:
    /// each level from the highest, its in-memory window, stopping after
    /// the first level with a spilled range.
    pub(super) fn heads(&self) -> impl Iterator<Item = &Entry> {
        let stop = self.levels.iter().rposition(|l| l.spill.is_some());
        self.levels
            .iter()
            .enumerate()
            .rev()
            .take_while(move |(i, _)| stop.is_none_or(|s| *i >= s))
            .flat_map(|(_, l)| l.ready.iter())
    }

    /// The message `id` if it is the in-memory tail of level `priority`.
    pub(super) fn tail_mut(&mut self, id: u64, priority: u8) -> Option<&mut Entry> {
        let lvl = self.level_of(priority);
        self.levels[lvl].ready.back_mut().filter(|e| e.id == id)
    }
}

fn insert_ordered(ready: &mut VecDeque<Entry>, e: Entry) {
    let at = ready.partition_point(|x| x.id < e.id);
    ready.insert(at, e);
}

/// The room to shrink a list or map of `len` items to, if its `capacity`
/// is mostly spare (a quarter or less used): twice what it holds. Only
/// then: shrinking copies (or rehashes) what it holds.
pub(super) fn spare(len: usize, capacity: usize) -> Option<usize> {
    (capacity > 64 && len.saturating_mul(4) <= capacity).then(|| len * 2)
}

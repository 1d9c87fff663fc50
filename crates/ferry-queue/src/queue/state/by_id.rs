//! The state's side of the commands: removing, returning and purging
//! messages named by id wherever they are (checked out, ready or
//! waiting), the head walk the deciding side reads, and the replay mode
//! (`apply` has the rules; this file keeps the accounting exact).

use super::{insert_ordered, Entry, QueueState};
use ferry_model::message::Message;
use std::collections::HashSet;
use std::sync::Arc;

/// One message in [`QueueState::digest`]: (id, delivery count, priority,
/// waiting until, deadline).
#[cfg(test)]
pub type DigestRow = (u64, u16, u8, Option<u64>, Option<u64>);

impl QueueState {
    /// An empty queue to replay a log into: nothing spills while
    /// replaying (every replayed message is in memory, as a spilled range
    /// could not be settled by id) and waiting messages are kept by id
    /// (replay names them: a retried or held message delivered again
    /// before the restart); [`QueueState::end_replay`] restores the window
    /// and the waiting set's order for what comes next.
    pub fn for_replay(levels: usize, track_body: bool) -> Self {
        let mut st = Self::with_levels(levels, track_body);
        st.window = usize::MAX;
        st.waiting.index_by_id();
        st.gone = Some(HashSet::new());
        st
    }

    /// Ends the replay mode: new messages past the window spill again,
    /// waiting ones are ordered by their time.
    pub fn end_replay(&mut self) {
        self.window = Self::window_for(self.levels.len());
        self.waiting.seal();
        if let Some(gone) = self.gone.take().filter(|g| !g.is_empty()) {
            for l in &mut self.levels {
                l.ready.retain(|e| !gone.contains(&e.id));
            }
        }
    }

    /// Removes the message `id` for good, wherever it is. None if the
    /// queue does not hold it (or only in a spilled range, which no
    /// command names: a spilled message was never seen, and replay does
    /// not spill).
    pub fn remove(&mut self, id: u64) -> Option<Entry> {
        if !self.unacked.is_empty() {
            if let Some(e) = self.take_unacked(id) {
                return Some(e);
            }
        }
        let e = match self.take_ready(id) {
            Some(e) => e,
            None => self.waiting.remove(id)?,
        };
        if !self.meta.is_empty() {
            self.meta.remove(&id);
        }
        Some(e)
    }

    /// Returns the message `id` (checked out, or — in a replay — ready or
    /// waiting) with its delivery count bumped: ready again in its place,
    /// or waiting until `until`. False if the queue does not hold it.
    pub fn return_any(&mut self, id: u64, until: Option<u64>) -> bool {
        if until.is_none() && !self.unacked.contains_key(&id) {
            // Ready already (a replay): it stays in its place.
            if let Some((lvl, at)) = self.find_ready(id) {
                if let Some(e) = self.levels[lvl].ready.get_mut(at) {
                    e.returned();
                    return true;
                }
            }
        }
        let mut e = if let Some(e) = self.unacked.remove(&id) {
            self.unacked_bytes -= u64::from(e.size());
            e
        } else if let Some(e) = self.take_ready(id) {
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
                self.ready_bytes += u64::from(e.size());
                self.ready_body += self.body_of(e.id);
                self.in_memory += 1;
                let lvl = self.level_of(e.priority);
                self.insert_ready(lvl, e);
            }
        }
        true
    }

    /// Puts `e` back into its level in id order. In a replay its removed
    /// copy may still be there (left in place, see `gone`): it takes that
    /// slot.
    fn insert_ready(&mut self, lvl: usize, e: Entry) {
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

    /// Takes a ready in-memory message out of its level (its side-table
    /// entry stays: the caller decides).
    fn take_ready(&mut self, id: u64) -> Option<Entry> {
        let (lvl, at) = self.find_ready(id)?;
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
        self.ready_bytes -= u64::from(e.size());
        self.ready_body = self.ready_body.saturating_sub(self.body_of(id));
        Some(e)
    }

    fn find_ready(&self, id: u64) -> Option<(usize, usize)> {
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

    /// Removes every message with an id below `upto` except the `keep`
    /// ones (sorted): ready (spilled ranges wholly below `upto`
    /// included), waiting and checked out. Returns how many ready and
    /// waiting messages went, and the bytes of cached bodies freed.
    pub fn purge_below(&mut self, upto: u64, keep: &[u64]) -> (usize, u64) {
        let stays = |id: u64| id >= upto || keep.binary_search(&id).is_ok();
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
                self.ready_bytes -= u64::from(e.size());
                self.ready_body = self.ready_body.saturating_sub(self.body_of(e.id));
                if e.cached.is_some() {
                    freed += u64::from(e.size());
                }
                self.meta.remove(&e.id);
            }
        }
        for e in self.waiting.remove_where(|id| !stays(id)) {
            n += 1;
            self.meta.remove(&e.id);
        }
        let gone: Vec<u64> = self
            .unacked
            .keys()
            .copied()
            .filter(|id| !stays(*id))
            .collect();
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
        let stop = self.levels.iter().rposition(|l| l.spill.is_some());
        self.levels
            .iter()
            .enumerate()
            .rev()
            .take_while(move |(i, _)| stop.is_none_or(|s| *i >= s))
            .flat_map(|(_, l)| l.ready.iter())
    }

    /// The deadline of a message held in memory, if it has one.
    pub fn deadline(&self, id: u64) -> Option<u64> {
        self.deadline_of(id)
    }

    /// The counted body bytes of a message held in memory (0 unless the
    /// queue counts them).
    pub fn body_bytes(&self, id: u64) -> u64 {
        self.body_of(id)
    }

    /// Whether `id` is checked out.
    pub fn is_unacked(&self, id: u64) -> bool {
        self.unacked.contains_key(&id)
    }

    /// The message `id` if it is the in-memory tail of level `priority`
    /// (a message just enqueued that did not spill): where the leader
    /// keeps its body cached.
    pub fn tail_mut(&mut self, id: u64, priority: u8) -> Option<&mut Entry> {
        let lvl = self.level_of(priority);
        self.levels[lvl].ready.back_mut().filter(|e| e.id == id)
    }

    /// Keeps `msg` as the cached body of the just-enqueued tail `id`.
    pub fn cache_tail(&mut self, id: u64, priority: u8, msg: Arc<Message>) {
        if let Some(e) = self.tail_mut(id, priority) {
            e.cached = Some(msg);
        }
    }

    /// Every message the queue holds, as (id, delivery count, priority,
    /// waiting until, deadline), by id; checked-out ones count as ready
    /// (a restart returns them). Two states with the same digest hold
    /// the same messages (tests: live and replayed states must agree).
    #[cfg(test)]
    pub fn digest(&self) -> Vec<DigestRow> {
        let row = |e: &Entry, due: Option<u64>| {
            (
                e.id,
                e.delivery_count,
                e.priority,
                due,
                self.deadline_of(e.id),
            )
        };
        let mut v: Vec<_> = self
            .levels
            .iter()
            .flat_map(|l| l.ready.iter())
            .chain(self.unacked.values())
            .map(|e| row(e, None))
            .chain(self.waiting.iter().map(|(due, e)| row(e, Some(due))))
            .collect();
        v.sort_unstable();
        v
    }
}

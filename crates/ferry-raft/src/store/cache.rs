//! The tail cache: the newest entries in memory, so that replication and
//! openraft's apply (which reads every committed entry back through the
//! log store) rarely go to disk.
//!
//! A node holds one per group (thousands of queues), so what it keeps is
//! bounded twice: by entries and bytes, and by the commit — once an entry
//! is committed, only the newest [`KEEP_COMMITTED`] of those stay (apply
//! reads them right after the commit, a follower a little behind gets
//! them from here; one further behind reads the segments). An idle group
//! holds at most that many; emptied buffers are given back.

use crate::types::Entry;
use ferry_log::RecordPos;
use openraft::EntryPayload;
use std::collections::VecDeque;

/// Entries kept at most (each holds a batch of commands).
const MAX_ENTRIES: usize = 1024;
/// Payload bytes kept at most.
const MAX_BYTES: usize = 4 << 20;
/// Committed entries kept (the newest).
pub(crate) const KEEP_COMMITTED: u64 = 32;

/// A contiguous suffix of the log's entries (raft indexes `[base, next)`).
#[derive(Debug, Default)]
pub(crate) struct TailCache {
    base: u64,
    entries: VecDeque<Entry>,
    /// Where each cached entry's command records are, in the same order.
    commands: VecDeque<Vec<RecordPos>>,
    bytes: usize,
}

fn weight(e: &Entry) -> usize {
    match &e.payload {
        EntryPayload::Normal(b) => b.bytes() + 64,
        _ => 64,
    }
}

impl TailCache {
    /// Raft index of the first cached entry (`next()` when empty).
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    fn next(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Caches `e`, the entry after the cached ones (or the first after an
    /// emptied cache); evicts the oldest past the limits.
    pub(crate) fn push(&mut self, e: Entry, commands: Vec<RecordPos>) {
        if self.entries.is_empty() || e.log_id.index != self.next() {
            self.entries.clear();
            self.commands.clear();
            self.bytes = 0;
            self.base = e.log_id.index;
        }
        self.bytes += weight(&e);
        self.entries.push_back(e);
        self.commands.push_back(commands);
        while self.entries.len() > MAX_ENTRIES || (self.bytes > MAX_BYTES && self.entries.len() > 1)
        {
            if let Some(old) = self.entries.pop_front() {
                self.commands.pop_front();
                self.bytes -= weight(&old);
                self.base += 1;
            }
        }
    }

    /// Where the cached entry `index`'s command records are.
    pub(crate) fn commands(&self, index: u64) -> Option<&[RecordPos]> {
        let off = usize::try_from(index.checked_sub(self.base)?).ok()?;
        self.commands.get(off).map(Vec::as_slice)
    }

    /// The cached entry at `index`.
    pub(crate) fn get(&self, index: u64) -> Option<&Entry> {
        let off = usize::try_from(index.checked_sub(self.base)?).ok()?;
        self.entries.get(off)
    }

    /// Drops entries `index` and later.
    pub(crate) fn truncate_from(&mut self, index: u64) {
        while self.next() > index && !self.entries.is_empty() {
            if let Some(e) = self.entries.pop_back() {
                self.commands.pop_back();
                self.bytes -= weight(&e);
            }
        }
        if self.entries.is_empty() {
            self.base = self.base.min(index);
        }
    }

    /// `committed` is the group's commit index: drops the committed
    /// entries but the newest [`KEEP_COMMITTED`].
    pub(crate) fn committed(&mut self, committed: u64) {
        let keep_from = committed.saturating_sub(KEEP_COMMITTED - 1);
        if keep_from > self.base {
            self.purge_to(keep_from - 1);
        }
    }

    /// Gives back most of the buffers' room once they hold far less than
    /// they grew to (a burst's backlog, then quiet).
    fn shrink(&mut self) {
        let cap = self.entries.capacity();
        if cap > 64 && self.entries.len() * 4 < cap {
            let want = (self.entries.len() * 2).max(16);
            self.entries.shrink_to(want);
            self.commands.shrink_to(want);
        }
    }

    /// Drops entries up to and including `index`.
    pub(crate) fn purge_to(&mut self, index: u64) {
        while self.base <= index && !self.entries.is_empty() {
            if let Some(e) = self.entries.pop_front() {
                self.commands.pop_front();
                self.bytes -= weight(&e);
            }
            self.base += 1;
        }
        if self.entries.is_empty() {
            self.base = self.base.max(index.saturating_add(1));
        }
        self.shrink();
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::types::{Batch, LogId};
    use openraft::CommittedLeaderId;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Batch::new(vec![bytes::Bytes::from_static(b"cmd")])),
        }
    }

    fn cached(c: &TailCache) -> (u64, u64) {
        (c.base(), c.next())
    }

    #[test]
    fn a_commit_keeps_only_the_newest_committed_entries() {
        let mut c = TailCache::default();
        for i in 1..=1000 {
            c.push(entry(i), Vec::new());
        }
        assert_eq!(cached(&c), (1, 1001));
        // Entries above the commit all stay; of the committed, the newest.
        c.committed(900);
        assert_eq!(cached(&c), (900 - KEEP_COMMITTED + 1, 1001));
        assert!(c.get(900 - KEEP_COMMITTED).is_none());
        assert!(c.get(900 - KEEP_COMMITTED + 1).is_some());
        // All committed: an idle group holds KEEP_COMMITTED entries, and
        // the room the burst took is given back.
        c.committed(1000);
        assert_eq!(cached(&c), (1000 - KEEP_COMMITTED + 1, 1001));
        assert!(c.entries.capacity() < 128, "{}", c.entries.capacity());
        // A commit behind what is cached changes nothing.
        c.committed(10);
        assert_eq!(cached(&c), (1000 - KEEP_COMMITTED + 1, 1001));
    }

    #[test]
    fn the_cache_is_bounded_without_commits() {
        let mut c = TailCache::default();
        for i in 1..=(MAX_ENTRIES as u64 + 10) {
            c.push(entry(i), Vec::new());
        }
        assert_eq!(c.entries.len(), MAX_ENTRIES);
        assert_eq!(cached(&c), (11, MAX_ENTRIES as u64 + 11));
    }
}

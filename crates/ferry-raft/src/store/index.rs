//! Where each Raft entry starts in the ferry-log: raft index → the ferry
//! index of its header record. Raft indexes are dense, so this is a deque
//! with a base.

use std::collections::VecDeque;

/// Raft index → ferry index of the entry's header record, for the entries
/// the log holds (`[base, next)`).
#[derive(Debug, Default)]
pub(crate) struct EntryIndex {
    base: u64,
    heads: VecDeque<u64>,
}

impl EntryIndex {
    /// An empty index whose first entry will be `base`.
    pub(crate) fn starting_at(base: u64) -> Self {
        EntryIndex {
            base,
            heads: VecDeque::new(),
        }
    }

    /// First raft index held (== `next` when empty).
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// The raft index the next entry gets.
    pub(crate) fn next(&self) -> u64 {
        self.base + self.heads.len() as u64
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// Ferry index of the header of raft entry `index`.
    pub(crate) fn get(&self, index: u64) -> Option<u64> {
        let off = usize::try_from(index.checked_sub(self.base)?).ok()?;
        self.heads.get(off).copied()
    }

    /// Ferry index of the first header held.
    pub(crate) fn first_head(&self) -> Option<u64> {
        self.heads.front().copied()
    }

    /// Records entry `next()` at ferry index `head`.
    pub(crate) fn push(&mut self, head: u64) {
        self.heads.push_back(head);
    }

    /// An empty index: restarts it at `base`.
    pub(crate) fn restart_at(&mut self, base: u64) {
        debug_assert!(self.heads.is_empty());
        self.base = base;
    }

    /// Forgets entries `index` and later.
    pub(crate) fn truncate_from(&mut self, index: u64) {
        let keep = index.saturating_sub(self.base);
        self.heads
            .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
    }

    /// Forgets entries up to and including `index`; the next entry after
    /// an emptied index is `index + 1`.
    pub(crate) fn purge_to(&mut self, index: u64) {
        while self.base <= index && !self.heads.is_empty() {
            self.heads.pop_front();
            self.base += 1;
        }
        if self.heads.is_empty() {
            self.base = self.base.max(index.saturating_add(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_truncate_purge_keep_indexes_dense() {
        let mut ix = EntryIndex::starting_at(5);
        for h in [100, 103, 104, 110] {
            ix.push(h);
        }
        assert_eq!((ix.base(), ix.next()), (5, 9));
        assert_eq!(ix.get(7), Some(104));
        assert_eq!(ix.get(4), None);
        assert_eq!(ix.get(9), None);
        ix.truncate_from(7);
        assert_eq!(ix.next(), 7);
        ix.purge_to(5);
        assert_eq!((ix.base(), ix.first_head()), (6, Some(103)));
        ix.purge_to(20);
        assert!(ix.is_empty());
        assert_eq!((ix.base(), ix.next()), (21, 21));
    }
}

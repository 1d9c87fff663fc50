//! The tail cache: the newest entries in memory, so that replication and
//! openraft's apply (which reads every committed entry back through the
//! log store) rarely go to disk.

use crate::types::Entry;
use ferry_log::RecordPos;
use openraft::EntryPayload;
use std::collections::VecDeque;

/// Entries kept at most (each holds a batch of commands).
const MAX_ENTRIES: usize = 4096;
/// Payload bytes kept at most.
const MAX_BYTES: usize = 8 << 20;

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
    }
}

//! [`CheckedOut`]: the messages delivered to a consumer and not yet
//! settled, by id, with their record bytes. Only their index entries are
//! kept: a delivered message is read back from the log if it returns.

use super::Entry;
use crate::ids::IdMap;

/// Checked-out messages by id.
#[derive(Debug, Default)]
pub(super) struct CheckedOut {
    map: IdMap<u64, Entry>,
    /// Their record bytes.
    bytes: u64,
}

impl CheckedOut {
    /// Gives back the map's spare room.
    pub(super) fn shrink(&mut self) {
        if let Some(to) = super::ready::spare(self.map.len(), self.map.capacity()) {
            self.map.shrink_to(to);
        }
    }

    /// Holds `e` (just popped) for its consumer.
    pub(super) fn insert(&mut self, mut e: Entry) {
        // Memory holds an index, not bodies: a delivered message is read
        // back from the log if it ever returns.
        e.cached = None;
        self.bytes += u64::from(e.size());
        self.map.insert(e.id, e);
    }

    /// Takes out the message `id`.
    pub(super) fn take(&mut self, id: u64) -> Option<Entry> {
        let e = self.map.remove(&id)?;
        self.bytes -= u64::from(e.size());
        Some(e)
    }

    /// The message `id`, if checked out.
    pub(super) fn get(&self, id: u64) -> Option<&Entry> {
        self.map.get(&id)
    }

    /// Whether `id` is checked out.
    pub(super) fn contains(&self, id: u64) -> bool {
        self.map.contains_key(&id)
    }

    /// Number of checked-out messages.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is checked out.
    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Their record bytes.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Every checked-out message (any order).
    pub(super) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.map.values()
    }

    /// Every checked-out id (any order).
    pub(super) fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.map.keys().copied()
    }
}

//! The body cache of one queue: young message bodies kept in memory so a
//! consumer that keeps up never reads the disk, charged against the
//! node-wide budget (`QueueEnv::cache_limit` / `cache_used`). The entries
//! hold the bodies (`Entry::cached`); this type keeps the accounting: how
//! many bytes this queue holds and the shared counter they count towards.

use super::state::{Entry, QueueState};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Bytes cached by one queue, and the node's budget.
#[derive(Debug)]
pub(super) struct BodyCache {
    /// Bytes this queue holds.
    bytes: i64,
    /// Bytes all queues hold (`QueueEnv::cache_used`).
    used: Arc<AtomicI64>,
    /// The node's budget (`QueueEnv::cache_limit`).
    limit: i64,
}

impl BodyCache {
    /// An empty cache charging `used`, within `limit`.
    pub(super) fn new(used: Arc<AtomicI64>, limit: i64) -> Self {
        BodyCache {
            bytes: 0,
            used,
            limit,
        }
    }

    /// Reserves room for a body of `size` bytes: false (nothing reserved)
    /// when the node's budget would be exceeded.
    #[inline]
    pub(super) fn try_add(&mut self, size: u32) -> bool {
        let size = i64::from(size);
        let used = self.used.fetch_add(size, Ordering::Relaxed);
        if used + size > self.limit {
            self.used.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        self.bytes += size;
        true
    }

    /// `e` left the queue's memory: its cached body (if any) is given back.
    #[inline]
    pub(super) fn remove(&mut self, e: &Entry) {
        if e.cached.is_some() {
            let size = i64::from(e.size());
            self.bytes -= size;
            self.used.fetch_sub(size, Ordering::Relaxed);
        }
    }

    /// Cached bodies of `freed` bytes left with removed messages.
    #[inline]
    pub(super) fn freed(&mut self, freed: u64) {
        if freed > 0 {
            let freed = i64::try_from(freed).unwrap_or(i64::MAX);
            self.bytes -= freed;
            self.used.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    /// Drops every cached body of `state` (memory alarm).
    pub(super) fn shed(&mut self, state: &mut QueueState) {
        if self.bytes == 0 {
            return;
        }
        state.drop_cached();
        self.release_all();
    }

    /// Gives back everything this queue holds (its state is dropped).
    pub(super) fn release_all(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::Relaxed);
        self.bytes = 0;
    }
}

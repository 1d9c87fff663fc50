//! What applying one command asks the world to do: plain data returned by
//! [`apply`](super::apply::apply), executed by the queue (the leader) after
//! the state changed, ignored by restart replay.
//!
//! Owns no behaviour: executing effects (reading bodies for dead letters,
//! routing them, dispatching, scheduling the sweep) is `Inner`'s and
//! `Queue`'s (`queue::inner`, `queue::queue`).

use super::dead_letter::Reason;
use super::state::Entry;

/// The effects of one applied command.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Effects {
    /// Messages that became ready (a dispatch may deliver them).
    pub ready: usize,
    /// Messages that left the queue for good (Settle, Drop): they count
    /// towards the log's segment cleanup.
    pub removed: usize,
    /// Messages a Purge removed (ready and waiting ones).
    pub purged: usize,
    /// Messages to dead-letter, with why, in command order: only from a
    /// Drop, and only when the queue has a dead-letter exchange. Each
    /// entry says where its body is (its record, or the cached copy).
    pub dead_letters: Vec<(Entry, Reason)>,
    /// The earliest time this command gave the queue to look at again (a
    /// new message's deadline, a hold's or a retry's due time).
    pub wake_at: Option<u64>,
    /// Bytes of cached bodies that left memory with removed messages (the
    /// node-wide body cache gets them back).
    pub freed_cache: u64,
}

impl Effects {
    pub(super) fn wake(&mut self, at: u64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    pub(super) fn gone(&mut self, e: &Entry) {
        if e.cached.is_some() {
            self.freed_cache += u64::from(e.size());
        }
    }

    /// Dead-letter ids, in order (tests and logs).
    pub fn dead_letter_ids(&self) -> Vec<(u64, Reason)> {
        self.dead_letters.iter().map(|(e, r)| (e.id, *r)).collect()
    }
}

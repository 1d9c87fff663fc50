//! [`StreamState`]: what a stream's log determines, apart from the records
//! themselves: its offset range, the committed prefix, and the publish
//! times retention and timestamp lookups need. Changed only by
//! [`apply`](super::apply::apply) and [`commit`](super::apply::commit).

use std::collections::VecDeque;

/// The deterministic state of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    /// First retained offset (what a Truncate left).
    pub(super) first: u64,
    /// The offset the next Append gets.
    pub(super) next: u64,
    /// Records below this are durable and may be read.
    pub(super) committed: u64,
    /// Publish time of the newest record.
    pub(super) last_ts: u64,
    /// Base of the segment appends go to.
    pub(super) active_base: u64,
    /// (base, newest publish time) of every sealed segment, oldest first.
    pub(super) sealed_ts: VecDeque<(u64, u64)>,
}

impl StreamState {
    /// The state of a log whose first index is `first` before any record
    /// of it is applied (a new stream, or the start of a replay).
    pub fn starting_at(first: u64) -> Self {
        StreamState {
            first,
            next: first,
            committed: first,
            active_base: first,
            ..StreamState::default()
        }
    }

    /// First retained offset.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// Next offset.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// End of the committed prefix.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Publish time of the newest record (0 for an empty stream).
    pub fn last_ts(&self) -> u64 {
        self.last_ts
    }

    /// Base of the active segment.
    pub fn active_base(&self) -> u64 {
        self.active_base
    }

    /// (base, newest publish time) of the sealed segments, oldest first.
    pub fn sealed_ts(&self) -> &VecDeque<(u64, u64)> {
        &self.sealed_ts
    }
}

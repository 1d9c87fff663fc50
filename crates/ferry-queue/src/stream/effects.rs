//! What applying one stream command (or a commit) asks the world to do:
//! plain data returned by [`apply`](super::apply::apply) and
//! [`commit`](super::apply::commit), executed by the stream after the state
//! changed (`stream/commit.rs`), ignored by replay at open.

/// The effects of one applied command or commit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    /// An Append went to a new segment: the segment based here is sealed
    /// now (retention looks again once the sync settles it).
    pub sealed: Option<u64>,
    /// A Truncate moved the first offset here: the log may delete the
    /// segments below (`Log::purge_before`), consumers before it move up.
    pub purge_before: Option<u64>,
    /// Records below this are committed now: consumers at the tail and
    /// pull readers waiting for them wake.
    pub committed: Option<u64>,
}

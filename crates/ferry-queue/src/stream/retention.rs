//! Retention: a stream loses whole segments, oldest first, never the
//! active one (RabbitMQ's segment granularity):
//! * `x-max-length-bytes`: while all segments together are larger;
//! * `x-max-age`: while a sealed segment's newest record is older.
//!
//! The decision (which segment base to cut at) is the leader's: it reads
//! the clock and the segment sizes. Its outcome is a Truncate command
//! applied like every other (`apply.rs`), so a Raft follower would drop the
//! same offsets; deleting the files is the effect (`Stream::purge`).
//!
//! Evaluated when the log rolls (after the sync that settles the rolled
//! segment: the log deletes only settled segments), when the stream opens,
//! and when the broker's `ExpiryTimer` reaches the next age deadline
//! (`Broker::expire_due` → [`Stream::enforce_retention`]); never polled.

use super::apply::apply;
use super::command::Command;
use super::state::StreamState;
use super::stream::{Inner, Stream};
use crate::clock::NEVER;
use ferry_log::Log;
use std::sync::atomic::Ordering;

/// The index below which whole segments must go. `segments` are
/// `(base, bytes)` oldest first with the active one last; `sealed_ts` the
/// newest timestamp of each sealed segment by base.
pub(super) fn cut_point(
    segments: &[(u64, u64)],
    sealed_ts: &[(u64, u64)],
    max_bytes: Option<u64>,
    max_age: Option<(u64, u64)>,
) -> u64 {
    let Some(&(first, _)) = segments.first() else {
        return 0;
    };
    let mut cut = first;
    let ends = || segments.windows(2).map(|w| (w[0].0, w[0].1, w[1].0));
    if let Some(max) = max_bytes {
        let mut total: u64 = segments.iter().map(|s| s.1).sum();
        for (_, bytes, end) in ends() {
            if total <= max {
                break;
            }
            total -= bytes;
            cut = cut.max(end);
        }
    }
    if let Some((now, age)) = max_age {
        let horizon = now.saturating_sub(age);
        for (base, _, end) in ends() {
            match sealed_ts.iter().find(|(b, _)| *b == base) {
                Some((_, ts)) if *ts < horizon => cut = cut.max(end),
                _ => break,
            }
        }
    }
    cut
}

/// Retention's decision: the first offset `log` keeps under `max_bytes`
/// and `max_age` (ms) as of `now`, from the segments the state still
/// retains and their newest publish times (the leader's step: it reads
/// segment sizes and the caller's clock).
pub(super) fn decide(
    log: &Log,
    state: &StreamState,
    max_bytes: Option<u64>,
    max_age: Option<u64>,
    now: u64,
) -> u64 {
    let first = state.first();
    let segments: Vec<(u64, u64)> = log
        .segments()
        .iter()
        .filter(|s| s.base >= first)
        .map(|s| (s.base, s.bytes))
        .collect();
    let sealed: Vec<(u64, u64)> = state.sealed_ts().iter().copied().collect();
    cut_point(&segments, &sealed, max_bytes, max_age.map(|a| (now, a)))
}

impl Stream {
    /// Retention's decision as of `now`: finishes the deletion of an
    /// earlier cut the log could not make yet, then cuts where
    /// [`cut_point`] says (a Truncate through `apply`, executed at once),
    /// and posts the next age deadline to the broker's timer.
    pub(super) fn apply_retention(&self, inner: &mut Inner, now: u64) {
        self.purge(inner);
        let retention = inner.retention;
        let (max_bytes, max_age) = (retention.max_bytes, retention.max_age_ms);
        let before = decide(&inner.log, &inner.state, max_bytes, max_age, now);
        let fx = apply(&mut inner.state, &Command::Truncate { before });
        self.execute(inner, fx);
        let at = match (retention.max_age_ms, inner.state.sealed_ts().front()) {
            (Some(age), Some((_, ts))) => ts.saturating_add(age).saturating_add(1),
            _ => NEVER,
        };
        self.retention_at.store(at, Ordering::Release);
        if at != NEVER {
            self.env.timer.schedule(at);
        }
    }

    /// When the oldest sealed segment ages out (`NEVER` if not pending).
    pub fn retention_deadline(&self) -> u64 {
        self.retention_at.load(Ordering::Acquire)
    }

    /// The timer's call: applies retention as of `now`.
    pub fn enforce_retention(&self, now: u64) {
        let mut g = self.inner.lock();
        if g.deleted || !g.retention.has_retention() {
            return;
        }
        self.apply_retention(&mut g, now);
        self.dispatch_locked(&mut g);
    }

    /// A policy change: the retention of `effective` (`max-age`,
    /// `max-length-bytes`) applies at once; the segment size stays until
    /// the stream reopens.
    pub fn apply_arguments(&self, effective: &ferry_model::Table) {
        let next = super::StreamArgs::parse(effective);
        let mut g = self.inner.lock();
        if g.deleted
            || (g.retention.max_age_ms, g.retention.max_bytes) == (next.max_age_ms, next.max_bytes)
        {
            return;
        }
        g.retention.max_age_ms = next.max_age_ms;
        g.retention.max_bytes = next.max_bytes;
        let now = self.env.clock.now_ms();
        self.apply_retention(&mut g, now);
        self.dispatch_locked(&mut g);
    }
}

#[cfg(test)]
mod tests {
    use super::cut_point;

    #[test]
    fn bytes_drop_oldest_segments_while_over() {
        let segs = [(0, 100), (10, 100), (20, 100), (30, 50)];
        assert_eq!(cut_point(&segs, &[], Some(1000), None), 0);
        assert_eq!(cut_point(&segs, &[], Some(300), None), 10);
        assert_eq!(cut_point(&segs, &[], Some(150), None), 20);
        // The active segment stays even when it alone is too large.
        assert_eq!(cut_point(&segs, &[], Some(0), None), 30);
    }

    #[test]
    fn age_drops_sealed_segments_older_than_the_horizon() {
        let segs = [(0, 1), (10, 1), (20, 1), (30, 1)];
        let ts = [(0, 1_000), (10, 2_000), (20, 3_000)];
        assert_eq!(cut_point(&segs, &ts, None, Some((2_500, 1_000))), 10);
        assert_eq!(cut_point(&segs, &ts, None, Some((10_000, 1_000))), 30);
        assert_eq!(cut_point(&segs, &ts, None, Some((1_500, 1_000))), 0);
        // Both: the further cut wins.
        assert_eq!(cut_point(&segs, &ts, Some(3), Some((2_500, 1_000))), 10);
        assert_eq!(cut_point(&segs, &ts, Some(2), Some((2_500, 1_000))), 20);
    }
}

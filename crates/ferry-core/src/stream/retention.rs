//! Retention: a stream loses whole segments, oldest first, never the
//! active one (RabbitMQ's segment granularity):
//! * `x-max-length-bytes`: while all segments together are larger;
//! * `x-max-age`: while a sealed segment's newest record is older.
//!
//! Evaluated when the log rolls (after the sync that settles the rolled
//! segment: the log deletes only settled segments), when the stream opens,
//! and when the broker's `ExpiryTimer` reaches the next age deadline
//! (`Broker::expire_due` → [`Stream::enforce_retention`]); never polled.

use super::stream::{Inner, Stream};
use crate::clock::NEVER;
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

impl Stream {
    /// Deletes the segments retention no longer keeps, moves consumers
    /// that pointed into them to the new start, and posts the next age
    /// deadline to the broker's timer.
    pub(super) fn apply_retention(&self, inner: &mut Inner, now: u64) {
        let segments: Vec<(u64, u64)> = inner
            .log
            .segments()
            .iter()
            .map(|s| (s.base, s.bytes))
            .collect();
        let sealed: Vec<(u64, u64)> = inner.sealed_ts.iter().copied().collect();
        let retention = inner.retention;
        let age = retention.max_age_ms.map(|a| (now, a));
        let cut = cut_point(&segments, &sealed, retention.max_bytes, age);
        if cut > inner.log.first_index() {
            if let Err(e) = inner.log.purge_before(cut) {
                tracing::warn!(stream = %self.name(), error = %e, "retention failed");
            }
        }
        let first = inner.log.first_index();
        // A segment not settled yet stays until a later sync.
        inner.retention_pending = first < cut;
        while inner.sealed_ts.front().is_some_and(|(b, _)| *b < first) {
            inner.sealed_ts.pop_front();
        }
        for c in inner.consumers.iter_mut() {
            c.next = c.next.max(first);
        }
        let at = match (retention.max_age_ms, inner.sealed_ts.front()) {
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

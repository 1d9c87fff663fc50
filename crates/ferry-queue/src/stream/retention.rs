//! Retention ([`Retention`], the policy): a stream loses whole segments,
//! oldest first, never the active one (RabbitMQ's segment granularity):
//! * `x-max-length-bytes`: while all segments together are larger;
//! * `x-max-age`: while a sealed segment's newest record is older.
//!
//! The decision (which segment base to cut at) is the leader's: it reads
//! the clock and the segment sizes. Its outcome is a Truncate command
//! applied like every other (`apply.rs`), so a Raft follower would drop the
//! same offsets; deleting the files is the effect (`Inner::purge`,
//! `commit.rs`).
//!
//! Evaluated when the log rolls (after the sync that settles the rolled
//! segment: the log deletes only settled segments), when the stream opens,
//! and when the broker's `ExpiryTimer` reaches the next age deadline
//! (`Broker::expire_due` → `Stream::enforce_retention`); never polled.
//! Owns the limits and the decisions, nothing else: the stream's lock,
//! clock and timer stay the stream's (`Inner::retain` runs a decision).

use super::args::StreamArgs;
use super::command::Command;
use super::state::StreamState;
use crate::clock::NEVER;
use ferry_log::Log;

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

/// The retention in force: a pure policy over the stream's state and
/// segments. Its decisions come back as a Truncate for `apply` and a
/// deadline for the broker's timer; it changes nothing itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Retention {
    /// `x-max-length-bytes` (or a policy's `max-length-bytes`).
    pub(super) max_bytes: Option<u64>,
    /// `x-max-age` in ms (or a policy's `max-age`).
    pub(super) max_age_ms: Option<u64>,
}

impl Retention {
    /// The retention `args` ask for (their segment size is not retention).
    pub(super) fn of(args: &StreamArgs) -> Self {
        Retention {
            max_bytes: args.max_bytes,
            max_age_ms: args.max_age_ms,
        }
    }

    /// Whether any limit is set.
    pub(super) fn is_set(&self) -> bool {
        self.max_age_ms.is_some() || self.max_bytes.is_some()
    }

    /// The first offset `log` keeps under these limits as of `now`, from
    /// the segments the state still retains and their newest publish times
    /// (the leader's step: it reads segment sizes and the caller's clock).
    pub(super) fn decide(&self, log: &Log, state: &StreamState, now: u64) -> u64 {
        let first = state.first();
        let segments: Vec<(u64, u64)> = log
            .segments()
            .iter()
            .filter(|s| s.base >= first)
            .map(|s| (s.base, s.bytes))
            .collect();
        let sealed: Vec<(u64, u64)> = state.sealed_ts().iter().copied().collect();
        let max_age = self.max_age_ms.map(|a| (now, a));
        cut_point(&segments, &sealed, self.max_bytes, max_age)
    }

    /// The Truncate [`decide`](Self::decide) asks for as of `now`.
    pub(super) fn truncate(&self, log: &Log, state: &StreamState, now: u64) -> Command<'static> {
        Command::Truncate {
            before: self.decide(log, state, now),
        }
    }

    /// When the oldest sealed segment of `state` ages out (`NEVER` without
    /// an age limit or a sealed segment).
    pub(super) fn deadline(&self, state: &StreamState) -> u64 {
        match (self.max_age_ms, state.sealed_ts().front()) {
            (Some(age), Some((_, ts))) => ts.saturating_add(age).saturating_add(1),
            _ => NEVER,
        }
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

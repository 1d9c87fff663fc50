//! Process-wide histograms and counters the core records into and the
//! metrics endpoint (ferry-http) reads: the node's durability rounds (how
//! many, how many logs each, how long) and the device flush inside them.
//!
//! Fixed buckets and relaxed atomics: recording is two adds and a short
//! scan, no lock and no allocation, so it can sit on the fsync path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds of the buckets, in microseconds (Prometheus `le`, plus an
/// implicit +Inf).
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Upper bounds of the buckets of a count histogram (logs per round).
pub const BUCKETS_LOGS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 4_096];

/// Most buckets a histogram has (besides +Inf).
const MAX_BUCKETS: usize = 16;

/// A histogram of durations (µs buckets, `new`) or of counts
/// (`with_bounds`).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Non-cumulative counts per bucket; index `bounds.len()` is +Inf.
    counts: [AtomicU64; MAX_BUCKETS + 1],
    /// Sum of the observations (µs for durations).
    sum_us: AtomicU64,
}

/// A copy of a histogram, cumulative as Prometheus wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// (upper bound, observations ≤ it), ascending; µs for durations.
    pub buckets: Vec<(u64, u64)>,
    /// Every observation (the +Inf bucket).
    pub count: u64,
    /// Sum of the observations (µs for durations).
    pub sum_us: u64,
}

impl Histogram {
    /// An empty histogram of durations.
    pub const fn new() -> Self {
        Self::with_bounds(&BUCKETS_US)
    }

    /// An empty histogram of plain values with these ascending bucket
    /// bounds (at most 16; more are folded into +Inf).
    pub const fn with_bounds(bounds: &'static [u64]) -> Self {
        let bounds = if bounds.len() > MAX_BUCKETS {
            bounds.split_at(MAX_BUCKETS).0
        } else {
            bounds
        };
        Histogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; MAX_BUCKETS + 1],
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        self.observe_value(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one value (µs for a duration histogram).
    pub fn observe_value(&self, v: u64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(v, Ordering::Relaxed);
    }

    /// Runs `f` and records how long it took.
    pub fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let r = f();
        self.observe(start.elapsed());
        r
    }

    /// The histogram now, cumulative.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            acc += c.load(Ordering::Relaxed);
            buckets.push((*b, acc));
        }
        acc += self
            .counts
            .get(self.bounds.len())
            .map_or(0, |c| c.load(Ordering::Relaxed));
        HistogramSnapshot {
            buckets,
            count: acc,
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Duration of each durability round's device flush (one `syncfs`, or
/// the fdatasyncs of a small round; `ferry_log::sync_round`).
pub static FSYNC: Histogram = Histogram::new();

/// Durability rounds run (each made at least one log durable).
pub static ROUNDS: AtomicU64 = AtomicU64::new(0);

/// Logs (queues, streams) per durability round.
pub static ROUND_LOGS: Histogram = Histogram::with_bounds(&BUCKETS_LOGS);

/// Duration of each durability round: flush every member, device flush,
/// complete every member (confirms, stream consumers woken).
pub static ROUND_DURATION: Histogram = Histogram::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inf_counts_everything() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], (100, 2));
        assert_eq!(s.buckets[1], (250, 3));
        assert_eq!(s.buckets.last().map(|b| b.1), Some(3));
        assert_eq!(s.count, 4);
        assert_eq!(s.sum_us, 50 + 100 + 101 + 60_000_000);
    }

    #[test]
    fn count_histograms_use_their_own_bounds() {
        let h = Histogram::with_bounds(&BUCKETS_LOGS);
        h.observe_value(1);
        h.observe_value(3);
        h.observe_value(1_000);
        h.observe_value(100_000);
        let s = h.snapshot();
        assert_eq!(s.buckets[0], (1, 1));
        assert_eq!(s.buckets[2], (4, 2));
        assert_eq!(s.buckets[10], (1_024, 3));
        assert_eq!(s.buckets.len(), BUCKETS_LOGS.len());
        assert_eq!(s.count, 4);
        assert_eq!(s.sum_us, 1 + 3 + 1_000 + 100_000);
    }
}

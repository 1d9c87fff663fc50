//! Process-wide latency histograms the core records into and the metrics
//! endpoint (ferry-http) reads: today the duration of each log fsync.
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

/// A histogram of durations.
#[derive(Debug)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last one is +Inf.
    counts: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A copy of a histogram, cumulative as Prometheus wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// (upper bound in µs, observations ≤ it), ascending.
    pub buckets: Vec<(u64, u64)>,
    /// Every observation (the +Inf bucket).
    pub count: u64,
    /// Sum of the observations, µs.
    pub sum_us: u64,
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS_US.len() + 1],
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BUCKETS_US.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
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
        let mut buckets = Vec::with_capacity(BUCKETS_US.len());
        for (i, b) in BUCKETS_US.iter().enumerate() {
            acc += self.counts[i].load(Ordering::Relaxed);
            buckets.push((*b, acc));
        }
        acc += self.counts[BUCKETS_US.len()].load(Ordering::Relaxed);
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

/// Duration of each queue-log fsync (the group commit's `SyncJob::run`).
pub static FSYNC: Histogram = Histogram::new();

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
}

//! Counting publisher confirms exactly, whatever mix of single and
//! `multiple` acks/nacks the broker sends.
//!
//! Brokers mostly confirm in order with `multiple`, so the common case is a
//! watermark move; single confirms above the watermark (RabbitMQ sends them
//! out of order across queues) wait in a small set until the gap closes.

use std::collections::BTreeSet;

/// Which publish sequence numbers have been confirmed (acked or nacked).
#[derive(Debug, Default)]
pub struct ConfirmTracker {
    /// Every tag ≤ this is settled.
    watermark: u64,
    /// Settled tags above the watermark.
    singles: BTreeSet<u64>,
}

impl ConfirmTracker {
    /// Records a basic.ack or basic.nack; returns how many messages it
    /// newly settled (0 for a duplicate or stale confirm).
    pub fn settle(&mut self, tag: u64, multiple: bool) -> u64 {
        if tag <= self.watermark {
            return 0;
        }
        if multiple {
            let above = self.singles.split_off(&(tag + 1));
            let already = self.singles.len() as u64;
            self.singles = above;
            let newly = tag - self.watermark - already;
            self.watermark = tag;
            self.advance();
            newly
        } else if self.singles.insert(tag) {
            self.advance();
            1
        } else {
            0
        }
    }

    /// Folds singles that continue the watermark into it (they were
    /// counted when inserted), keeping the set small.
    fn advance(&mut self) {
        while self.singles.first() == Some(&(self.watermark + 1)) {
            self.singles.pop_first();
            self.watermark += 1;
        }
    }

    /// How many tags are settled in all.
    #[must_use]
    pub fn settled(&self) -> u64 {
        self.watermark + self.singles.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiple_moves_the_watermark() {
        let mut t = ConfirmTracker::default();
        assert_eq!(t.settle(50, true), 50);
        assert_eq!(t.settle(50, true), 0);
        assert_eq!(t.settle(10, false), 0);
        assert_eq!(t.settle(256, true), 206);
        assert_eq!(t.settled(), 256);
    }

    #[test]
    fn out_of_order_singles_are_counted_once() {
        let mut t = ConfirmTracker::default();
        assert_eq!(t.settle(3, false), 1);
        assert_eq!(t.settle(1, false), 1);
        assert_eq!(t.settle(3, false), 0);
        assert_eq!(t.settled(), 2);
        assert_eq!(t.settle(2, false), 1);
        assert_eq!(t.settled(), 3);
        // 5 and 7 single, then multiple up to 6 covers 4 and 6 only.
        assert_eq!(t.settle(5, false), 1);
        assert_eq!(t.settle(7, false), 1);
        assert_eq!(t.settle(6, true), 2);
        assert_eq!(t.settled(), 7);
        assert_eq!(t.settle(8, false), 1);
        assert_eq!(t.settled(), 8);
    }

    #[test]
    fn every_order_counts_every_tag_once() {
        // A deterministic shuffle of 1..=200, settled one by one.
        let mut tags: Vec<u64> = (1..=200).collect();
        let mut x = 12345u64;
        for i in (1..tags.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            tags.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut t = ConfirmTracker::default();
        let total: u64 = tags.iter().map(|&tag| t.settle(tag, false)).sum();
        assert_eq!(total, 200);
        assert_eq!(t.settled(), 200);
        assert!(t.singles.is_empty());
    }
}

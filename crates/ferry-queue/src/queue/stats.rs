//! Per-queue message counters for the management API and metrics: how many
//! messages entered the queue and how they left it. Monotonic atomics,
//! bumped on the queue's own paths (one relaxed add each, no lock); rates
//! are computed by whoever samples them (ferry-http), never here.
//!
//! They count since the queue was opened (a restart starts them at zero,
//! as RabbitMQ's do).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one queue.
#[derive(Debug, Default)]
pub struct QueueStats {
    publish: AtomicU64,
    deliver: AtomicU64,
    deliver_no_ack: AtomicU64,
    get: AtomicU64,
    get_no_ack: AtomicU64,
    redeliver: AtomicU64,
    ack: AtomicU64,
}

/// A copy of the counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Messages stored in the queue (publishes and dead letters).
    pub publish: u64,
    /// Deliveries to consumers that acknowledge.
    pub deliver: u64,
    /// Deliveries to auto-ack consumers.
    pub deliver_no_ack: u64,
    /// basic.get answered with a message, acknowledgement expected.
    pub get: u64,
    /// basic.get with no-ack answered with a message.
    pub get_no_ack: u64,
    /// Deliveries and gets of messages delivered before.
    pub redeliver: u64,
    /// Messages acknowledged.
    pub ack: u64,
}

impl StatsSnapshot {
    /// Every way a message left to a client (RabbitMQ's `deliver_get`).
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }

    /// Adds another snapshot (vhost and node totals).
    pub fn add(&mut self, o: &StatsSnapshot) {
        self.publish += o.publish;
        self.deliver += o.deliver;
        self.deliver_no_ack += o.deliver_no_ack;
        self.get += o.get;
        self.get_no_ack += o.get_no_ack;
        self.redeliver += o.redeliver;
        self.ack += o.ack;
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl QueueStats {
    /// A message was stored.
    pub fn published(&self) {
        bump(&self.publish, 1);
    }

    /// A message went to a consumer.
    pub fn delivered(&self, no_ack: bool, redelivered: bool) {
        bump(
            if no_ack {
                &self.deliver_no_ack
            } else {
                &self.deliver
            },
            1,
        );
        if redelivered {
            bump(&self.redeliver, 1);
        }
    }

    /// basic.get returned a message.
    pub fn got(&self, no_ack: bool, redelivered: bool) {
        bump(if no_ack { &self.get_no_ack } else { &self.get }, 1);
        if redelivered {
            bump(&self.redeliver, 1);
        }
    }

    /// `n` messages were acknowledged.
    pub fn acked(&self, n: usize) {
        bump(&self.ack, n as u64);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            publish: r(&self.publish),
            deliver: r(&self.deliver),
            deliver_no_ack: r(&self.deliver_no_ack),
            get: r(&self.get),
            get_no_ack: r(&self.get_no_ack),
            redeliver: r(&self.redeliver),
            ack: r(&self.ack),
        }
    }
}

/// How full a queue is, at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Messages waiting for a consumer.
    pub ready: u64,
    /// Messages delivered and not yet settled.
    pub unacked: u64,
    /// Body bytes of the ready messages.
    pub ready_bytes: u64,
    /// Body bytes of the unacked messages.
    pub unacked_bytes: u64,
    /// Consumers attached.
    pub consumers: u64,
    /// Messages waiting (invisible) for a delayed retry: part of the
    /// queue's total, neither ready nor unacked.
    pub delayed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_split_by_ack_mode_and_sum() {
        let s = QueueStats::default();
        s.published();
        s.published();
        s.delivered(false, false);
        s.delivered(true, true);
        s.got(false, true);
        s.got(true, false);
        s.acked(3);
        let snap = s.snapshot();
        assert_eq!(snap.publish, 2);
        assert_eq!((snap.deliver, snap.deliver_no_ack), (1, 1));
        assert_eq!((snap.get, snap.get_no_ack), (1, 1));
        assert_eq!(snap.redeliver, 2);
        assert_eq!(snap.ack, 3);
        assert_eq!(snap.deliver_get(), 4);
        let mut total = snap;
        total.add(&snap);
        assert_eq!(total.publish, 4);
    }
}

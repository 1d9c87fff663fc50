//! A queue's consumers: who is registered (tag, sink, no-ack, `x-priority`),
//! whether one holds the queue exclusively, and which one gets the next
//! message — the single active consumer (the oldest registered) in such a
//! queue, else the first with credit among the highest-priority consumers,
//! round-robin among equals. Lives under the queue's `inner` lock; it
//! calls only `ConsumerSink::reserve` (see `sinks` for that lock order).

use super::sinks::ConsumerSink;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

static NEXT_CONSUMER_ID: AtomicU64 = AtomicU64::new(1);

/// One registered consumer.
#[derive(Debug)]
pub(super) struct Consumer {
    pub(super) id: u64,
    pub(super) tag: Arc<str>,
    pub(super) sink: Arc<dyn ConsumerSink>,
    pub(super) no_ack: bool,
    /// `x-priority` of basic.consume (0 if none).
    pub(super) priority: i64,
    /// Registered exclusive.
    pub(super) exclusive: bool,
}

/// What `Consumers::remove` did.
#[derive(Debug, Clone, Copy)]
pub(super) struct Removed {
    /// The consumer was registered (and is gone now).
    pub(super) found: bool,
    /// It was the first registered (the single active consumer, if the
    /// queue has one).
    pub(super) was_first: bool,
}

/// The consumer set and its round-robin cursor.
#[derive(Debug, Default)]
pub(super) struct Consumers {
    /// Sorted by priority, highest first, registration order within one;
    /// a single-active-consumer queue keeps plain registration order.
    list: Vec<Consumer>,
    /// Round-robin cursor: where the next search among equals starts.
    rr: usize,
    /// The only consumer was registered exclusive.
    exclusive: bool,
}

impl Consumers {
    /// Number of consumers.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The consumer at `idx` (as `pick` returned it).
    #[inline]
    pub(super) fn at(&self, idx: usize) -> &Consumer {
        &self.list[idx]
    }

    /// (tag, no_ack) of each consumer.
    pub(super) fn tags(&self) -> Vec<(Arc<str>, bool)> {
        self.list
            .iter()
            .map(|c| (c.tag.clone(), c.no_ack))
            .collect()
    }

    /// Registers a consumer; its id, or None when the queue is in
    /// exclusive use (an exclusive consumer holds it, or `exclusive` was
    /// asked of a queue that has consumers or a single active one: a
    /// single-active-consumer queue refuses exclusive consumers outright,
    /// RabbitMQ's exclusive_consume_unavailable).
    pub(super) fn register(
        &mut self,
        tag: Arc<str>,
        sink: Arc<dyn ConsumerSink>,
        no_ack: bool,
        exclusive: bool,
        priority: i64,
        single_active: bool,
    ) -> Option<u64> {
        if self.exclusive || (exclusive && (!self.list.is_empty() || single_active)) {
            return None;
        }
        let id = NEXT_CONSUMER_ID.fetch_add(1, Ordering::Relaxed);
        self.exclusive = exclusive;
        let c = Consumer {
            id,
            tag,
            sink,
            no_ack,
            priority,
            exclusive,
        };
        // A single-active-consumer queue keeps registration order (its
        // first consumer is the active one).
        let at = if single_active {
            self.list.len()
        } else {
            self.list.partition_point(|x| x.priority >= priority)
        };
        self.list.insert(at, c);
        Some(id)
    }

    /// Removes consumer `id`.
    pub(super) fn remove(&mut self, id: u64) -> Removed {
        let before = self.list.len();
        let was_first = self.list.first().is_some_and(|c| c.id == id);
        self.list.retain(|c| c.id != id);
        let found = self.list.len() != before;
        if found {
            self.exclusive = false;
        }
        Removed { found, was_first }
    }

    /// Consumer `id`.
    pub(super) fn find(&self, id: u64) -> Option<&Consumer> {
        self.list.iter().find(|c| c.id == id)
    }

    /// Removes consumer `id` and returns it.
    pub(super) fn take(&mut self, id: u64) -> Option<Consumer> {
        let at = self.list.iter().position(|c| c.id == id)?;
        self.exclusive = false;
        Some(self.list.remove(at))
    }

    /// The consumers of this node's clients (not the stand-ins of
    /// consumers on other nodes, `ConsumerSink::forwards`).
    pub(super) fn local(&self) -> impl Iterator<Item = &Consumer> {
        self.list.iter().filter(|c| !c.sink.forwards())
    }

    /// Whether any consumer is one of this node's clients.
    pub(super) fn any_local(&self) -> bool {
        self.local().next().is_some()
    }

    /// Removes the stand-ins of consumers on other nodes (this replica
    /// stopped serving).
    pub(super) fn take_forwarding(&mut self) -> Vec<Consumer> {
        let (gone, kept) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|c| c.sink.forwards());
        self.list = kept;
        self.exclusive = self.list.iter().any(|c| c.exclusive);
        gone
    }

    /// Removes every consumer (the queue is deleted).
    pub(super) fn take_all(&mut self) -> Vec<Consumer> {
        std::mem::take(&mut self.list)
    }

    /// The consumer to deliver the next message to, its credit reserved:
    /// the single active consumer (the first registered) in such a queue;
    /// else the first with credit among the highest-priority consumers
    /// (round-robin among equals), then the next priority down.
    pub(super) fn pick(&mut self, single_active: bool) -> Option<usize> {
        let cs = &self.list;
        if single_active {
            return cs.first().filter(|c| c.sink.reserve()).map(|_| 0);
        }
        let n = cs.len();
        let mut start = 0;
        while start < n {
            let p = cs[start].priority;
            // Sorted by priority: one group when the last equals the first
            // (the common case, no scan).
            let end = if cs[n - 1].priority == p {
                n
            } else {
                start + cs[start..].iter().take_while(|c| c.priority == p).count()
            };
            let len = end - start;
            let first = if (start..end).contains(&self.rr) {
                self.rr - start
            } else {
                0
            };
            if let Some(i) = (0..len)
                .map(|k| start + (first + k) % len)
                .find(|&i| cs[i].sink.reserve())
            {
                self.rr = i + 1;
                return Some(i);
            }
            start = end;
        }
        None
    }
}

//! What a queue talks to on the way out: consumers (deliveries) and
//! publishers (confirms). Front ends implement these; the queue never knows
//! about channels or sockets.
//!
//! Lock order: a queue calls these while holding its own lock, so an
//! implementation may take its own (channel) lock but must never call back
//! into a queue from inside them.

use crate::message::Message;
use std::sync::Arc;

/// A message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Queue it comes from.
    pub queue: Arc<str>,
    /// Its id in that queue (used to settle or requeue it).
    pub msg_id: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Delivered before.
    pub redelivered: bool,
    /// Times it was returned to the queue.
    pub delivery_count: u32,
}

/// A consumer as a queue sees it.
pub trait ConsumerSink: Send + Sync + std::fmt::Debug {
    /// Takes one unit of credit (prefetch window, channel flow, socket
    /// buffer). A queue delivers only after a successful reservation.
    fn reserve(&self) -> bool;
    /// Gives back a reservation the queue could not use.
    fn unreserve(&self);
    /// Hands over a message; always accepted after `reserve`.
    fn deliver(&self, consumer_tag: &Arc<str>, d: Delivery);
    /// The queue went away; the consumer is cancelled by the server.
    fn cancelled(&self, consumer_tag: &Arc<str>);
}

/// A publisher waiting for confirms.
pub trait ConfirmSink: Send + Sync + std::fmt::Debug {
    /// These publish sequence numbers are safely stored by one queue.
    fn confirmed(&self, seqs: &[u64]);
    /// These could not be stored (e.g. the log failed an fsync).
    fn failed(&self, seqs: &[u64]);
}

/// A confirm the queue owes: whom and which publish.
#[derive(Debug, Clone)]
pub struct ConfirmToken {
    /// The publisher.
    pub sink: Arc<dyn ConfirmSink>,
    /// Its publish sequence number.
    pub seq: u64,
}

/// Groups tokens by sink (consecutive runs) and calls `f` once per run.
pub(crate) fn for_each_sink_run(
    tokens: impl IntoIterator<Item = ConfirmToken>,
    mut f: impl FnMut(&Arc<dyn ConfirmSink>, &[u64]),
) {
    let mut cur: Option<Arc<dyn ConfirmSink>> = None;
    let mut seqs: Vec<u64> = Vec::new();
    for t in tokens {
        match &cur {
            Some(s) if Arc::ptr_eq(s, &t.sink) => seqs.push(t.seq),
            _ => {
                if let Some(s) = cur.take() {
                    f(&s, &seqs);
                }
                seqs.clear();
                seqs.push(t.seq);
                cur = Some(t.sink);
            }
        }
    }
    if let Some(s) = cur {
        f(&s, &seqs);
    }
}

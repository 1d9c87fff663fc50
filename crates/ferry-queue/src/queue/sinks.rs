//! What a queue talks to on the way out: consumers (deliveries) and
//! publishers (confirms). Front ends implement these; the queue never knows
//! about channels or sockets.
//!
//! Lock order: a queue calls `ConsumerSink::reserve` / `unreserve` /
//! `deliver` while holding its own lock (dispatch: the checkout and the
//! channel's delivery tag are one step, see docs/internals.md "One apply
//! path"); `cancelled` and `ConfirmSink` calls come after it is released.
//! An implementation may take its own (channel) lock but must never call
//! back into a queue from inside them.

use ferry_model::message::Message;
use std::collections::HashMap;
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
    /// Whether this stands in for a consumer on another node (a
    /// replicated queue's leader delivers to it for a follower).
    fn forwards(&self) -> bool {
        false
    }
}

/// A publisher waiting for confirms.
pub trait ConfirmSink: Send + Sync + std::fmt::Debug {
    /// These publish sequence numbers are safely stored by one queue.
    fn confirmed(&self, seqs: &[u64]);
    /// These could not be stored (e.g. the log failed an fsync).
    fn failed(&self, seqs: &[u64]);
    /// These were refused by a full queue (`x-overflow: reject-publish`)
    /// after `publish` returned: a replicated queue's leader decides its
    /// limit when it proposes the Enqueue (`admission`). As
    /// `Enqueued::Rejected`: a publisher's nack (the default), while a
    /// transaction or a delayed exchange's release counts them handled.
    fn rejected(&self, seqs: &[u64]) {
        self.failed(seqs);
    }
}

/// A confirm the queue owes: whom and which publish.
#[derive(Debug, Clone)]
pub struct ConfirmToken {
    /// The publisher.
    pub sink: Arc<dyn ConfirmSink>,
    /// Its publish sequence number.
    pub seq: u64,
}

/// Groups tokens by sink, over the whole batch (publishers interleave in
/// a queue's waiters), and calls `f` once per sink with its seqs in order:
/// one fsync covering many publishes of one channel becomes one call, so
/// the channel can confirm them with one `basic.ack multiple`.
pub(crate) fn for_each_sink_run(
    tokens: impl IntoIterator<Item = ConfirmToken>,
    mut f: impl FnMut(&Arc<dyn ConfirmSink>, &[u64]),
) {
    let mut groups: Vec<(Arc<dyn ConfirmSink>, Vec<u64>)> = Vec::new();
    // Thin pointer → index in `groups` (only once a second sink shows up).
    let mut index: HashMap<*const (), usize> = HashMap::new();
    for t in tokens {
        let key = Arc::as_ptr(&t.sink) as *const ();
        let last = groups.len().wrapping_sub(1);
        let at = match groups.last() {
            Some((s, _)) if Arc::as_ptr(s) as *const () == key => Some(last),
            _ => index.get(&key).copied(),
        };
        match at {
            Some(i) => {
                if let Some((_, seqs)) = groups.get_mut(i) {
                    seqs.push(t.seq);
                }
            }
            None => {
                index.insert(key, groups.len());
                groups.push((t.sink, vec![t.seq]));
            }
        }
    }
    for (sink, seqs) in &groups {
        f(sink, seqs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Debug, Default)]
    struct Calls(Mutex<Vec<Vec<u64>>>);
    impl ConfirmSink for Calls {
        fn confirmed(&self, seqs: &[u64]) {
            self.0.lock().push(seqs.to_vec());
        }
        fn failed(&self, _seqs: &[u64]) {}
    }

    #[test]
    fn interleaved_publishers_get_one_call_each() {
        let a = Arc::new(Calls::default());
        let b = Arc::new(Calls::default());
        let (sa, sb): (Arc<dyn ConfirmSink>, Arc<dyn ConfirmSink>) = (a.clone(), b.clone());
        let tokens = [(&sa, 1), (&sb, 1), (&sa, 2), (&sa, 3), (&sb, 2), (&sa, 4)]
            .into_iter()
            .map(|(s, seq)| ConfirmToken {
                sink: s.clone(),
                seq,
            });
        for_each_sink_run(tokens, |s, seqs| s.confirmed(seqs));
        assert_eq!(*a.0.lock(), vec![vec![1, 2, 3, 4]]);
        assert_eq!(*b.0.lock(), vec![vec![1, 2]]);
    }
}

//! Per-channel delivery state shared with the queues' dispatch: delivery
//! tags, the unacked map, prefetch windows and flow. Queues reach it through
//! each consumer's `ConsumerSink`; the channel's own methods (ack, nack,
//! qos, close) reach it directly.
//!
//! Lock order: queue → `DeliveryState` (a queue delivers while holding its
//! lock). So code here never calls into a queue while holding the state
//! lock: it collects what to settle and calls queues afterwards.

use crate::outbox::{Outbound, Outbox};
use ferry_queue::queue::{ConsumerSink, Delivery, Queue};
use ferry_queue::source::Source;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Instant;

/// A delivered, not yet acknowledged message.
#[derive(Debug, Clone)]
pub struct Unacked {
    /// Queue or stream it came from.
    pub queue: Weak<dyn Source>,
    /// Its id there.
    pub msg_id: u64,
    /// Consumer it counts against (None for basic.get).
    pub consumer: Option<Arc<str>>,
    /// When it was delivered (consumer acknowledgement timeout).
    pub at: Instant,
}

/// Mutable delivery state of one channel.
#[derive(Debug)]
pub struct DeliveryState {
    next_tag: u64,
    /// Delivery tag → message.
    pub unacked: BTreeMap<u64, Unacked>,
    /// Unacked count per consumer tag.
    per_consumer: HashMap<Arc<str>, u32>,
    /// Channel-wide prefetch (basic.qos global=true); 0 = unlimited.
    pub global_prefetch: u32,
    /// Messages counted against the global window.
    global_unacked: u32,
    /// channel.flow active.
    pub flow_active: bool,
    /// Closed: refuse all deliveries.
    pub closed: bool,
}

/// Shared part of a channel.
#[derive(Debug)]
pub struct ChannelShared {
    /// Channel number.
    pub id: u16,
    /// The connection's outbox.
    pub outbox: Outbox,
    /// Whether the client wants basic.cancel when a queue goes away.
    pub cancel_notify: bool,
    /// The state.
    pub state: Mutex<DeliveryState>,
    /// Consumers cancelled by the server (queue deleted), for the channel
    /// to forget them.
    pub server_cancelled: Mutex<Vec<Arc<str>>>,
    /// Modes, prefetch and consumers, for the management API.
    pub info: crate::registry::ChannelInfo,
}

impl ChannelShared {
    /// A fresh channel state.
    pub fn new(id: u16, outbox: Outbox, cancel_notify: bool) -> Arc<Self> {
        Arc::new(ChannelShared {
            id,
            outbox,
            cancel_notify,
            state: Mutex::new(DeliveryState {
                next_tag: 1,
                unacked: BTreeMap::new(),
                per_consumer: HashMap::new(),
                global_prefetch: 0,
                global_unacked: 0,
                flow_active: true,
                closed: false,
            }),
            server_cancelled: Mutex::new(Vec::new()),
            info: Default::default(),
        })
    }

    /// Assigns a tag to a basic.get result and records it unless no-ack.
    pub fn record_get(&self, queue: &Arc<Queue>, d: &Delivery, no_ack: bool) -> u64 {
        let mut st = self.state.lock();
        let tag = st.next_tag;
        st.next_tag += 1;
        if !no_ack {
            st.unacked.insert(
                tag,
                Unacked {
                    queue: Arc::downgrade(queue) as Weak<Queue>,
                    msg_id: d.msg_id,
                    consumer: None,
                    at: Instant::now(),
                },
            );
        }
        tag
    }

    /// Removes acknowledged tags: `tag` alone, or every tag up to it with
    /// `multiple` (tag 0 + multiple = all). None if the tag is unknown.
    pub fn take_acked(&self, tag: u64, multiple: bool) -> Option<Vec<(u64, Unacked)>> {
        let mut st = self.state.lock();
        let taken: Vec<(u64, Unacked)> = if multiple {
            let keep = if tag == 0 {
                BTreeMap::new()
            } else {
                st.unacked.split_off(&(tag.saturating_add(1)))
            };
            std::mem::replace(&mut st.unacked, keep)
                .into_iter()
                .collect()
        } else {
            vec![(tag, st.unacked.remove(&tag)?)]
        };
        if multiple && tag != 0 && taken.is_empty() {
            return None;
        }
        for (_, u) in &taken {
            st.release(u.consumer.as_ref());
        }
        Some(taken)
    }

    /// Puts taken messages back as unacked (tx.rollback of acks).
    pub fn restore(&self, items: Vec<(u64, Unacked)>) {
        let mut st = self.state.lock();
        for (tag, u) in items {
            if let Some(c) = &u.consumer {
                *st.per_consumer.entry(c.clone()).or_insert(0) += 1;
                st.global_unacked += 1;
            }
            st.unacked.insert(tag, u);
        }
    }

    /// The oldest unacked delivery: when, and from which queue.
    pub fn oldest_unacked(&self) -> Option<(Instant, Weak<dyn Source>)> {
        let st = self.state.lock();
        // Tags grow with time, so the first entry is the oldest.
        st.unacked.values().next().map(|u| (u.at, u.queue.clone()))
    }

    /// Sends a direct reply to this channel's reply consumer `consumer_tag`
    /// (`channel::reply_to`). RabbitMQ 3.10 gives it the channel's next
    /// delivery tag without taking it (nothing is acked in no-ack mode), so
    /// neither does this. Dropped if the channel is closing, and dropped
    /// (counted, see [`dropped_replies`]) while the connection's socket
    /// buffer is full: a reply consumer that does not read its socket must
    /// not make the broker hold its replies without bound.
    pub fn deliver_reply(&self, consumer_tag: &Arc<str>, message: Arc<ferry_model::Message>) {
        let st = self.state.lock();
        if st.closed {
            return;
        }
        // Under the state lock: delivery tags reach the socket in order.
        let sent = self.outbox.send_if_room(Outbound::Deliver {
            channel: self.id,
            consumer_tag: consumer_tag.clone(),
            delivery_tag: st.next_tag,
            redelivered: false,
            message,
        });
        if !sent {
            DROPPED_REPLIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(
                channel = self.id,
                consumer_tag = %consumer_tag,
                "direct reply dropped: the reply consumer's socket buffer is full"
            );
        }
    }

    /// Removes every unacked message (channel close, recover).
    pub fn take_all(&self) -> Vec<Unacked> {
        let mut st = self.state.lock();
        let all: Vec<Unacked> = std::mem::take(&mut st.unacked).into_values().collect();
        st.per_consumer.values_mut().for_each(|n| *n = 0);
        st.global_unacked = 0;
        all
    }
}

impl DeliveryState {
    fn release(&mut self, consumer: Option<&Arc<str>>) {
        if let Some(c) = consumer {
            if let Some(n) = self.per_consumer.get_mut(c) {
                *n = n.saturating_sub(1);
            }
            self.global_unacked = self.global_unacked.saturating_sub(1);
        }
    }

    /// Forgets a consumer's window (its unacked stay, counted nowhere).
    pub fn forget_consumer(&mut self, tag: &Arc<str>) {
        self.per_consumer.remove(tag);
    }
}

/// A consumer as its queue sees it.
#[derive(Debug)]
pub struct ChannelConsumer {
    /// Owning channel.
    pub channel: Arc<ChannelShared>,
    /// Its queue (weak: the queue owns the consumer, not the reverse).
    pub queue: Weak<dyn Source>,
    /// Tag.
    pub tag: Arc<str>,
    /// Prefetch window; 0 = unlimited.
    pub prefetch: u32,
    /// Auto-ack.
    pub no_ack: bool,
}

impl ConsumerSink for ChannelConsumer {
    fn reserve(&self) -> bool {
        let mut st = self.channel.state.lock();
        if st.closed || !st.flow_active {
            return false;
        }
        if !self.no_ack {
            let mine = st.per_consumer.get(&self.tag).copied().unwrap_or(0);
            if self.prefetch > 0 && mine >= self.prefetch {
                return false;
            }
            if st.global_prefetch > 0 && st.global_unacked >= st.global_prefetch {
                return false;
            }
        }
        // Credit flow towards the socket: without it an auto-ack or
        // unlimited-prefetch consumer on a slow connection would pull the
        // whole queue (bodies included) into memory.
        if !self.channel.outbox.has_room(&self.queue) {
            return false;
        }
        if self.no_ack {
            return true;
        }
        *st.per_consumer.entry(self.tag.clone()).or_insert(0) += 1;
        st.global_unacked += 1;
        true
    }

    fn unreserve(&self) {
        if !self.no_ack {
            self.channel.state.lock().release(Some(&self.tag));
        }
    }

    fn deliver(&self, consumer_tag: &Arc<str>, d: Delivery) {
        let mut st = self.channel.state.lock();
        let tag = st.next_tag;
        st.next_tag += 1;
        if !self.no_ack {
            st.unacked.insert(
                tag,
                Unacked {
                    queue: self.queue.clone(),
                    msg_id: d.msg_id,
                    consumer: Some(consumer_tag.clone()),
                    at: Instant::now(),
                },
            );
        }
        // Sent under the state lock so delivery tags reach the socket in order.
        self.channel.outbox.send(Outbound::Deliver {
            channel: self.channel.id,
            consumer_tag: consumer_tag.clone(),
            delivery_tag: tag,
            redelivered: d.redelivered,
            message: d.message,
        });
    }

    fn cancelled(&self, consumer_tag: &Arc<str>) {
        self.channel
            .server_cancelled
            .lock()
            .push(consumer_tag.clone());
        if self.channel.cancel_notify {
            self.channel.outbox.method(
                self.channel.id,
                ferry_amqp::AMQPClass::Basic(
                    ferry_amqp::amq_protocol::protocol::basic::AMQPMethod::Cancel(
                        ferry_amqp::amq_protocol::protocol::basic::Cancel {
                            consumer_tag: consumer_tag.to_string().into(),
                            nowait: true,
                        },
                    ),
                ),
            );
        }
    }
}

/// Direct replies dropped because their consumer's socket buffer was full.
static DROPPED_REPLIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Direct replies dropped so far (this process) because the reply
/// consumer's socket buffer was full.
pub fn dropped_replies() -> u64 {
    DROPPED_REPLIES.load(std::sync::atomic::Ordering::Relaxed)
}

//! The way into a connection's writer task: everything a connection sends
//! (replies, deliveries, confirms) goes through one ordered queue, so frames
//! from different threads never interleave mid-message.
//!
//! Bytes queued for deliveries are counted; no-ack consumers pause above a
//! limit (there is no ack to bound them), and the writer wakes them once the
//! socket has drained.

use bytes::Bytes;
use ferry_amqp::AMQPClass;
use ferry_model::Message;
use ferry_queue::source::Source;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::mpsc;

/// One item for the writer.
#[derive(Debug)]
pub enum Outbound {
    /// A method frame to encode.
    Method(u16, Box<AMQPClass>),
    /// A message to a consumer.
    Deliver {
        /// Channel.
        channel: u16,
        /// Consumer tag.
        consumer_tag: Arc<str>,
        /// Delivery tag.
        delivery_tag: u64,
        /// Redelivered flag.
        redelivered: bool,
        /// The message.
        message: Arc<Message>,
    },
    /// basic.get-ok with its content.
    GetOk {
        /// Channel.
        channel: u16,
        /// Delivery tag.
        delivery_tag: u64,
        /// Redelivered flag.
        redelivered: bool,
        /// Messages left.
        message_count: u32,
        /// The message.
        message: Arc<Message>,
    },
    /// basic.return with its content.
    Return {
        /// Channel.
        channel: u16,
        /// Reply code (312 NO_ROUTE).
        code: u16,
        /// Reply text.
        text: &'static str,
        /// The message.
        message: Arc<Message>,
    },
    /// A publisher confirm.
    Confirm {
        /// Channel.
        channel: u16,
        /// basic.ack (true) or basic.nack.
        ack: bool,
        /// Publish sequence number.
        tag: u64,
        /// Covers every tag up to this one.
        multiple: bool,
    },
    /// Pre-encoded frames.
    Raw(Bytes),
    /// Write what is queued, then close the socket.
    Shutdown,
}

/// The sending side, shared by the connection and its channels' sinks.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outbound>,
    shared: Arc<OutboxShared>,
}

/// Counters shared with the writer.
#[derive(Debug, Default)]
pub struct OutboxShared {
    queued_bytes: AtomicUsize,
    limit: usize,
    waiting: Mutex<Vec<Weak<dyn Source>>>,
}

impl Outbox {
    /// A new outbox and the writer's receiving end.
    pub fn new(limit: usize) -> (Outbox, mpsc::UnboundedReceiver<Outbound>, Arc<OutboxShared>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(OutboxShared {
            queued_bytes: AtomicUsize::new(0),
            limit,
            waiting: Mutex::new(Vec::new()),
        });
        (
            Outbox {
                tx,
                shared: shared.clone(),
            },
            rx,
            shared,
        )
    }

    /// Queues an item; silently dropped if the writer is gone (the
    /// connection is closing and its cleanup requeues what matters).
    pub fn send(&self, item: Outbound) {
        if let Outbound::Deliver { message, .. } | Outbound::GetOk { message, .. } = &item {
            self.shared
                .queued_bytes
                .fetch_add(message.weight(), Ordering::Relaxed);
            crate::memory::outbox_queued(message.weight());
        }
        let _ = self.tx.send(item);
    }

    /// Queues a delivery unless the bytes queued for the socket are at the
    /// limit already (then it is dropped: false). For deliveries nothing
    /// can pause: direct replies.
    pub fn send_if_room(&self, item: Outbound) -> bool {
        if self.shared.queued_bytes.load(Ordering::Acquire) >= self.shared.limit {
            return false;
        }
        self.send(item);
        true
    }

    /// Queues a method frame.
    pub fn method(&self, channel: u16, m: AMQPClass) {
        self.send(Outbound::Method(channel, Box::new(m)));
    }

    /// Whether the socket buffer has room for more no-ack deliveries. When
    /// not, `queue` is woken once it drains.
    pub fn has_room(&self, queue: &Weak<dyn Source>) -> bool {
        if self.shared.queued_bytes.load(Ordering::Relaxed) < self.shared.limit {
            return true;
        }
        {
            let mut w = self.shared.waiting.lock();
            if !w.iter().any(|q| q.ptr_eq(queue)) {
                w.push(queue.clone());
            }
        }
        // The writer may have drained between the check and the
        // registration; look again so no wake-up is lost.
        self.shared.queued_bytes.load(Ordering::Acquire) < self.shared.limit
    }
}

impl OutboxShared {
    /// Called by the writer after it wrote `bytes` of deliveries.
    pub fn written(&self, bytes: usize) {
        let before = self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        crate::memory::outbox_written(bytes);
        if before - bytes < self.limit / 2 {
            let waiting: Vec<Weak<dyn Source>> = std::mem::take(&mut *self.waiting.lock());
            for q in waiting.iter().filter_map(Weak::upgrade) {
                q.dispatch();
            }
        }
    }
}

impl Drop for OutboxShared {
    fn drop(&mut self) {
        // Deliveries never written leave the memory count with the outbox.
        crate::memory::outbox_written(*self.queued_bytes.get_mut());
    }
}

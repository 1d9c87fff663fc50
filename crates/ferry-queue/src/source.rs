//! The seam between a front end and whatever it publishes to and consumes
//! from: a queue (classic / quorum: messages leave when acked) or a stream
//! (an append-only log: acks only return credit). Channels hold consumers,
//! unacked deliveries and publish targets as `Arc<dyn Source>`, so they
//! need no branch per kind; only consume, get and purge differ, and those
//! go through [`QueueRef`].

use crate::error::{CoreError, ErrorKind, Result};
use crate::queue::{ConfirmToken, Enqueued, Queue, QueueSpec};
use crate::stream::Stream;
use ferry_model::message::Message;
use std::sync::Arc;

/// What a channel does with a queue or a stream once it has one.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// Name.
    fn name(&self) -> &Arc<str>;
    /// Declared shape.
    fn spec(&self) -> &QueueSpec;
    /// `classic`, `quorum` or `stream` (the management API's `type`).
    fn kind(&self) -> &'static str;
    /// Stores a message (see [`Queue::publish`]).
    fn publish(&self, msg: &Arc<Message>, confirm: Option<ConfirmToken>) -> Result<Enqueued>;
    /// Gives consumers with credit a chance to receive.
    fn dispatch(&self);
    /// Delivered messages acknowledged.
    fn settle(&self, ids: &[u64]) -> Result<()>;
    /// basic.nack / reject with requeue, basic.recover.
    fn requeue(&self, ids: &[u64]) -> Result<()>;
    /// basic.nack / reject without requeue.
    fn reject(&self, ids: &[u64]) -> Result<()>;
    /// Unacked deliveries of a closing channel.
    fn abandon(&self, ids: &[u64]) -> Result<()> {
        self.requeue(ids)
    }
    /// Removes a consumer; true when an auto-delete queue lost its last.
    fn cancel(&self, consumer_id: u64) -> bool;
    /// Flushes and fsyncs now.
    fn sync_now(&self);
}

impl Source for Queue {
    fn name(&self) -> &Arc<str> {
        Queue::name(self)
    }
    fn spec(&self) -> &QueueSpec {
        Queue::spec(self)
    }
    fn kind(&self) -> &'static str {
        match self.spec().arguments.get("x-queue-type") {
            Some(v) if ferry_model::args::text(v) == Some("quorum") => "quorum",
            _ => "classic",
        }
    }
    fn publish(&self, msg: &Arc<Message>, confirm: Option<ConfirmToken>) -> Result<Enqueued> {
        Queue::publish(self, msg, confirm)
    }
    fn dispatch(&self) {
        Queue::dispatch(self);
    }
    fn settle(&self, ids: &[u64]) -> Result<()> {
        Queue::settle(self, ids)
    }
    fn requeue(&self, ids: &[u64]) -> Result<()> {
        Queue::requeue(self, ids)
    }
    fn reject(&self, ids: &[u64]) -> Result<()> {
        Queue::reject(self, ids)
    }
    fn cancel(&self, consumer_id: u64) -> bool {
        Queue::cancel(self, consumer_id)
    }
    fn sync_now(&self) {
        Queue::sync_now(self);
    }
}

/// A vhost's entry for a name: a queue or a stream.
#[derive(Debug, Clone)]
pub enum QueueRef {
    /// Classic or quorum queue.
    Queue(Arc<Queue>),
    /// Stream.
    Stream(Arc<Stream>),
}

impl QueueRef {
    /// The entry as the channel's seam.
    pub fn source(&self) -> Arc<dyn Source> {
        match self {
            QueueRef::Queue(q) => q.clone(),
            QueueRef::Stream(s) => s.clone(),
        }
    }

    /// The queue, or RabbitMQ's 540 for an operation (`op`, e.g.
    /// "basic.get") streams do not support.
    pub fn queue(self, op: &str) -> Result<Arc<Queue>> {
        match self {
            QueueRef::Queue(q) => Ok(q),
            QueueRef::Stream(s) => Err(s.unsupported(op)),
        }
    }

    /// Name.
    pub fn name(&self) -> &Arc<str> {
        match self {
            QueueRef::Queue(q) => q.name(),
            QueueRef::Stream(s) => s.name(),
        }
    }

    /// Declared shape.
    pub fn spec(&self) -> &QueueSpec {
        match self {
            QueueRef::Queue(q) => q.spec(),
            QueueRef::Stream(s) => s.spec(),
        }
    }
}

/// RabbitMQ's text for an operation a stream does not support.
pub(crate) fn unsupported(op: &str, queue: &str, vhost: &str) -> CoreError {
    CoreError::request(
        ErrorKind::NotImplemented,
        format!("{op} not supported by stream queues queue '{queue}' in vhost '{vhost}'"),
    )
}

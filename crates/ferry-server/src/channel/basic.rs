//! The consumer registry (`Consumers`): the channel's queue and stream
//! consumers by tag, its per-consumer prefetch, basic.qos, basic.consume
//! and basic.cancel of queue consumers, server-side cancellations, and
//! nudging the queues consumed from. Acks, get and recover are the
//! channel's (`mod.rs`); publish is in `publish`, the reply consumer in
//! `reply_to`.

use super::delivery::{ChannelConsumer, ChannelShared};
use super::{ChannelCtx, Out};
use crate::error::AmqpError;
use ferry_amqp::amq_protocol::protocol::basic;
use ferry_amqp::{AMQPClass, ReplyCode};
use ferry_auth::{Access, Resource};
use ferry_queue::source::{QueueRef, Source};
use ferry_queue::stream::StreamConsume;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug)]
struct ConsumerRef {
    queue: Arc<dyn Source>,
    id: u64,
}

/// A channel's queue and stream consumers (not the reply consumer).
#[derive(Debug, Default)]
pub(super) struct Consumers {
    consumers: HashMap<Arc<str>, ConsumerRef>,
    /// basic.qos's per-consumer prefetch, given to the next consumers.
    prefetch: u32,
}

impl Consumers {
    /// Whether a queue consumer has this tag.
    pub(super) fn contains(&self, tag: &str) -> bool {
        self.consumers.contains_key(tag)
    }

    /// basic.qos.
    pub(super) fn qos(&mut self, out: &Out, shared: &ChannelShared, q: &basic::Qos) {
        if q.global {
            shared.state.lock().global_prefetch = u32::from(q.prefetch_count);
        } else {
            // As RabbitMQ: a per-consumer qos also lifts the
            // channel-wide limit.
            self.prefetch = u32::from(q.prefetch_count);
            shared.info.set_prefetch(self.prefetch);
            shared.state.lock().global_prefetch = 0;
        }
        out.method(AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})));
        self.dispatch();
    }

    /// basic.consume on the queue or stream `name` (already resolved).
    pub(super) fn consume(
        &mut self,
        ctx: &ChannelCtx<'_>,
        out: &Out,
        shared: &Arc<ChannelShared>,
        name: Arc<str>,
        c: basic::Consume,
    ) -> Result<(), AmqpError> {
        ctx.check(Access::Read, Resource::Queue(&name))?;
        let found = ctx.vhost.lookup(&name, ctx.conn_id)?;
        let queue = found.source();
        let arguments = ferry_amqp::model::table_from_amqp(&c.arguments);
        let priority =
            ferry_queue::queue::args::consumer_priority(&arguments, &name, ctx.vhost.name())
                .map_err(|text| AmqpError::new(ReplyCode::PRECONDITION_FAILED, text))?;
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            Arc::from(ferry_model::names::consumer_tag().as_str())
        } else {
            Arc::from(c.consumer_tag.as_str())
        };
        // Only the queue consumers count, not the reply consumer: RabbitMQ
        // 3.10 checks its consumer mapping alone, so a queue consumer may
        // take the reply consumer's tag (basic.cancel then removes the
        // reply consumer first). Tested against both brokers in
        // test_direct_reply_to.py.
        if self.consumers.contains_key(&tag) {
            return Err(AmqpError::new(
                ReplyCode::NOT_ALLOWED,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        let sink = Arc::new(ChannelConsumer {
            channel: shared.clone(),
            queue: Arc::downgrade(&queue),
            tag: tag.clone(),
            prefetch: self.prefetch,
            no_ack: c.no_ack,
        });
        let id = match &found {
            QueueRef::Queue(q) => {
                q.consume_with_priority(tag.clone(), sink, c.no_ack, c.exclusive, priority)?
            }
            // Streams: an offset per consumer, manual acks, a prefetch.
            QueueRef::Stream(s) => s.consume(
                tag.clone(),
                sink,
                StreamConsume {
                    no_ack: c.no_ack,
                    prefetch: self.prefetch,
                    arguments: &arguments,
                },
            )?,
        };
        shared.info.add_consumer(crate::registry::ConsumerInfo {
            tag: tag.to_string(),
            queue: name.to_string(),
            ack_required: !c.no_ack,
            prefetch: self.prefetch,
            exclusive: c.exclusive,
        });
        self.consumers.insert(
            tag.clone(),
            ConsumerRef {
                queue: queue.clone(),
                id,
            },
        );
        if !c.nowait {
            out.method(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(
                basic::ConsumeOk {
                    consumer_tag: tag.to_string().into(),
                },
            )));
        }
        queue.dispatch();
        Ok(())
    }

    /// basic.cancel of a queue consumer (nothing if `tag` is none); an
    /// auto-delete queue left without consumers is deleted.
    pub(super) fn cancel(
        &mut self,
        ctx: &ChannelCtx<'_>,
        shared: &ChannelShared,
        tag: &Arc<str>,
    ) -> Result<(), AmqpError> {
        if let Some(cr) = self.consumers.remove(tag) {
            shared.info.remove_consumer(tag);
            shared.state.lock().forget_consumer(tag);
            if cr.queue.cancel(cr.id) {
                crate::blocking::run(|| ctx.vhost.drop_source(&cr.queue))?;
            }
        }
        Ok(())
    }

    /// Forgets the consumers their queues cancelled (queue deleted).
    pub(super) fn forget_server_cancelled(&mut self, shared: &ChannelShared) {
        let gone: Vec<Arc<str>> = std::mem::take(&mut *shared.server_cancelled.lock());
        for tag in gone {
            self.consumers.remove(&tag);
            shared.info.remove_consumer(&tag);
            shared.state.lock().forget_consumer(&tag);
        }
    }

    /// Gives every queue this channel consumes from a chance to deliver.
    pub(super) fn dispatch(&self) {
        let mut seen: Vec<&Arc<dyn Source>> = Vec::new();
        for c in self.consumers.values() {
            if !seen.iter().any(|q| Arc::ptr_eq(q, &c.queue)) {
                seen.push(&c.queue);
                c.queue.dispatch();
            }
        }
    }

    /// Channel close: every consumer cancelled, auto-delete queues left
    /// without consumers deleted.
    pub(super) fn cancel_all(&mut self, ctx: &ChannelCtx<'_>) {
        for (_, c) in self.consumers.drain() {
            if c.queue.cancel(c.id) {
                if let Err(e) = crate::blocking::run(|| ctx.vhost.drop_source(&c.queue)) {
                    tracing::warn!(error = %e, "auto-delete failed");
                }
            }
        }
    }
}

//! basic.*: qos, consume/cancel, get, ack/nack/reject, recover (publish is
//! in `publish`).

use super::delivery::{ChannelConsumer, Unacked};
use super::{group_by_queue, Channel, ChannelCtx, ConsumerRef};
use crate::direct_reply::PSEUDO_QUEUE;
use crate::error::AmqpError;
use crate::outbox::Outbound;
use ferry_amqp::amq_protocol::protocol::basic;
use ferry_amqp::{AMQPClass, ReplyCode};
use ferry_auth::{Access, Resource};
use ferry_queue::source::QueueRef;
use ferry_queue::stream::StreamConsume;
use std::sync::Arc;

impl Channel {
    pub(super) fn basic_method(
        &mut self,
        ctx: &ChannelCtx<'_>,
        m: basic::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match m {
            basic::AMQPMethod::Publish(p) => {
                self.check_publish(ctx, p.exchange.as_str())?;
                self.start_publish(p)
            }
            basic::AMQPMethod::Ack(a) => self.settle_tags(a.delivery_tag, a.multiple, None),
            basic::AMQPMethod::Nack(n) => {
                self.settle_tags(n.delivery_tag, n.multiple, Some(n.requeue))
            }
            basic::AMQPMethod::Reject(r) => {
                self.settle_tags(r.delivery_tag, false, Some(r.requeue))
            }
            basic::AMQPMethod::Qos(q) => {
                if q.global {
                    self.shared.state.lock().global_prefetch = u32::from(q.prefetch_count);
                } else {
                    // As RabbitMQ: a per-consumer qos also lifts the
                    // channel-wide limit.
                    self.prefetch = u32::from(q.prefetch_count);
                    self.shared.info.set_prefetch(self.prefetch);
                    self.shared.state.lock().global_prefetch = 0;
                }
                self.reply(AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})));
                self.dispatch_consumers();
                Ok(())
            }
            basic::AMQPMethod::Consume(c) if c.queue.as_str() == PSEUDO_QUEUE => {
                self.consume_reply(ctx, &c)
            }
            basic::AMQPMethod::Consume(c) => self.consume(ctx, c),
            basic::AMQPMethod::Cancel(c) => {
                let tag: Arc<str> = Arc::from(c.consumer_tag.as_str());
                // The reply consumer first, as RabbitMQ matches it first.
                let queue_consumer = if self.cancel_reply(ctx, &tag) {
                    None
                } else {
                    self.consumers.remove(&tag)
                };
                if let Some(cr) = queue_consumer {
                    self.shared.info.remove_consumer(&tag);
                    self.shared.state.lock().forget_consumer(&tag);
                    if cr.queue.cancel(cr.id) {
                        crate::blocking::run(|| ctx.vhost.drop_source(&cr.queue))?;
                    }
                }
                if !c.nowait {
                    self.reply(AMQPClass::Basic(basic::AMQPMethod::CancelOk(
                        basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        },
                    )));
                }
                Ok(())
            }
            basic::AMQPMethod::Get(g) => self.get(ctx, g.queue.as_str(), g.no_ack),
            basic::AMQPMethod::Recover(r) => self.recover(r.requeue, true),
            basic::AMQPMethod::RecoverAsync(r) => self.recover(r.requeue, false),
            _ => Err(super::unimplemented()),
        }
    }

    /// The queue a method names, or the channel's last declared queue when
    /// the name is empty (AMQP's "current queue").
    pub(super) fn resolve_queue(&self, name: &str) -> Result<Arc<str>, AmqpError> {
        if !name.is_empty() {
            return Ok(Arc::from(name));
        }
        self.last_queue
            .clone()
            .ok_or_else(|| AmqpError::new(ReplyCode::NOT_FOUND, "no previously declared queue"))
    }

    fn consume(&mut self, ctx: &ChannelCtx<'_>, c: basic::Consume) -> Result<(), AmqpError> {
        let name = self.resolve_queue(c.queue.as_str())?;
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
            channel: self.shared.clone(),
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
        self.shared
            .info
            .add_consumer(crate::registry::ConsumerInfo {
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
            self.reply(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(
                basic::ConsumeOk {
                    consumer_tag: tag.to_string().into(),
                },
            )));
        }
        queue.dispatch();
        Ok(())
    }

    fn get(&mut self, ctx: &ChannelCtx<'_>, queue: &str, no_ack: bool) -> Result<(), AmqpError> {
        let name = self.resolve_queue(queue)?;
        ctx.check(Access::Read, Resource::Queue(&name))?;
        let q = ctx.vhost.queue_for(&name, ctx.conn_id)?;
        match q.get(no_ack)? {
            Some((d, left)) => {
                let tag = self.shared.record_get(&q, &d, no_ack);
                self.outbox.send(Outbound::GetOk {
                    channel: self.id,
                    delivery_tag: tag,
                    redelivered: d.redelivered,
                    message_count: left,
                    message: d.message,
                });
            }
            None => self.reply(AMQPClass::Basic(basic::AMQPMethod::GetEmpty(
                basic::GetEmpty {},
            ))),
        }
        Ok(())
    }

    /// ack (requeue = None), nack/reject (Some(requeue)).
    fn settle_tags(
        &mut self,
        tag: u64,
        multiple: bool,
        requeue: Option<bool>,
    ) -> Result<(), AmqpError> {
        let Some(mut taken) = self.shared.take_acked(tag, multiple) else {
            return Err(AmqpError::new(
                ReplyCode::PRECONDITION_FAILED,
                format!("unknown delivery tag {tag}"),
            ));
        };
        if self.hold_in_tx(&mut taken, requeue) {
            return Ok(());
        }
        let items: Vec<Unacked> = taken.into_iter().map(|(_, u)| u).collect();
        for (q, ids) in group_by_queue(items) {
            match requeue {
                None => q.settle(&ids)?,
                Some(true) => q.requeue(&ids)?,
                // Dead-lettered if the queue has a dead-letter exchange.
                Some(false) => q.reject(&ids)?,
            }
        }
        if self.shared.state.lock().global_prefetch > 0 {
            self.dispatch_consumers();
        }
        Ok(())
    }

    fn recover(&mut self, requeue: bool, reply: bool) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::new(ReplyCode::NOT_IMPLEMENTED, "requeue=false"));
        }
        let all = self.shared.take_all();
        // recover-ok goes first: clients (lapin) drop deliveries they
        // buffered before it, expecting the redeliveries to follow it.
        if reply {
            self.reply(AMQPClass::Basic(basic::AMQPMethod::RecoverOk(
                basic::RecoverOk {},
            )));
        }
        for (q, ids) in group_by_queue(all) {
            q.requeue(&ids)?;
        }
        self.dispatch_consumers();
        Ok(())
    }

    pub(super) fn restore_unacked(&self, items: Vec<(u64, Unacked)>) {
        self.shared.restore(items);
    }
}

//! exchange.* and queue.*: declarations, bindings, purge and delete.

use super::{Channel, ChannelCtx};
use crate::error::AmqpError;
use ferry_amqp::amq_protocol::protocol::{exchange, queue};
use ferry_amqp::{AMQPClass, FieldTable, ShortString};
use ferry_core::exchange::Destination;
use ferry_core::queue::QueueSpec;
use ferry_core::ExchangeArgs;
use std::sync::Arc;

impl Channel {
    pub(super) fn exchange_method(
        &mut self,
        ctx: &ChannelCtx<'_>,
        m: exchange::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match m {
            exchange::AMQPMethod::Declare(d) => {
                ctx.vhost.declare_exchange(
                    d.exchange.as_str(),
                    d.kind.as_str(),
                    d.passive,
                    ExchangeArgs {
                        durable: d.durable,
                        auto_delete: d.auto_delete,
                        internal: d.internal,
                        arguments: d.arguments,
                    },
                )?;
                if !d.nowait {
                    self.reply(AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(
                        exchange::DeclareOk {},
                    )));
                }
            }
            exchange::AMQPMethod::Delete(d) => {
                ctx.vhost
                    .delete_exchange(d.exchange.as_str(), d.if_unused)?;
                if !d.nowait {
                    self.reply(AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(
                        exchange::DeleteOk {},
                    )));
                }
            }
            exchange::AMQPMethod::Bind(b) => self.exchange_binding(
                ctx,
                true,
                (b.source, b.destination, b.routing_key, b.arguments),
                b.nowait,
            )?,
            exchange::AMQPMethod::Unbind(b) => self.exchange_binding(
                ctx,
                false,
                (b.source, b.destination, b.routing_key, b.arguments),
                b.nowait,
            )?,
            _ => return Err(super::unimplemented()),
        }
        Ok(())
    }

    /// exchange.bind / exchange.unbind: (source, destination, key, arguments).
    fn exchange_binding(
        &mut self,
        ctx: &ChannelCtx<'_>,
        bind: bool,
        (source, destination, key, arguments): (ShortString, ShortString, ShortString, FieldTable),
        nowait: bool,
    ) -> Result<(), AmqpError> {
        ctx.vhost.binding(
            bind,
            source.as_str(),
            Destination::Exchange(Arc::from(destination.as_str())),
            key.as_str(),
            arguments,
            ctx.conn_id,
        )?;
        if !nowait {
            self.reply(AMQPClass::Exchange(if bind {
                exchange::AMQPMethod::BindOk(exchange::BindOk {})
            } else {
                exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})
            }));
        }
        Ok(())
    }

    pub(super) fn queue_method(
        &mut self,
        ctx: &ChannelCtx<'_>,
        m: queue::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match m {
            queue::AMQPMethod::Declare(d) => {
                let name = if d.passive && d.queue.as_str().is_empty() {
                    self.resolve_queue("")?
                } else {
                    Arc::from(d.queue.as_str())
                };
                let spec = QueueSpec {
                    name,
                    durable: d.durable,
                    exclusive_owner: d.exclusive.then_some(ctx.conn_id),
                    auto_delete: d.auto_delete,
                    arguments: d.arguments,
                };
                let (name, messages, consumers) =
                    ctx.vhost.declare_queue(spec, d.passive, ctx.conn_id)?;
                self.last_queue = Some(name.clone());
                if !d.nowait {
                    self.reply(AMQPClass::Queue(queue::AMQPMethod::DeclareOk(
                        queue::DeclareOk {
                            queue: name.to_string().into(),
                            message_count: messages,
                            consumer_count: consumers,
                        },
                    )));
                }
            }
            queue::AMQPMethod::Bind(b) => {
                let q = self.resolve_queue(b.queue.as_str())?;
                ctx.vhost.binding(
                    true,
                    b.exchange.as_str(),
                    Destination::Queue(q),
                    b.routing_key.as_str(),
                    b.arguments,
                    ctx.conn_id,
                )?;
                if !b.nowait {
                    self.reply(AMQPClass::Queue(queue::AMQPMethod::BindOk(
                        queue::BindOk {},
                    )));
                }
            }
            queue::AMQPMethod::Unbind(b) => {
                let q = self.resolve_queue(b.queue.as_str())?;
                ctx.vhost.binding(
                    false,
                    b.exchange.as_str(),
                    Destination::Queue(q),
                    b.routing_key.as_str(),
                    b.arguments,
                    ctx.conn_id,
                )?;
                self.reply(AMQPClass::Queue(queue::AMQPMethod::UnbindOk(
                    queue::UnbindOk {},
                )));
            }
            queue::AMQPMethod::Purge(p) => {
                let q = self.resolve_queue(p.queue.as_str())?;
                let n = ctx.vhost.purge_queue(&q, ctx.conn_id)?;
                if !p.nowait {
                    self.reply(AMQPClass::Queue(queue::AMQPMethod::PurgeOk(
                        queue::PurgeOk { message_count: n },
                    )));
                }
            }
            queue::AMQPMethod::Delete(d) => {
                let q = self.resolve_queue(d.queue.as_str())?;
                let n = ctx
                    .vhost
                    .delete_queue(&q, d.if_unused, d.if_empty, ctx.conn_id)?;
                if !d.nowait {
                    self.reply(AMQPClass::Queue(queue::AMQPMethod::DeleteOk(
                        queue::DeleteOk { message_count: n },
                    )));
                }
            }
            _ => return Err(super::unimplemented()),
        }
        Ok(())
    }
}

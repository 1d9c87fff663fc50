//! exchange.* and queue.*: declarations, bindings, purge and delete, as
//! functions over the `ChannelCtx` (vhost, permissions, connection id);
//! the one piece of channel state they keep is the `CurrentQueue`.

use super::{ChannelCtx, Out};
use crate::direct_reply::PSEUDO_QUEUE;
use crate::error::AmqpError;
use ferry_amqp::amq_protocol::protocol::{exchange, queue};
use ferry_amqp::model::table_from_amqp;
use ferry_amqp::{AMQPClass, FieldTable, ReplyCode, ShortString};
use ferry_auth::{Access, Resource};
use ferry_broker::{command, ExchangeArgs};
use ferry_model::Table;
use ferry_queue::queue::QueueSpec;
use ferry_route::{Destination, ExchangeKind};
use std::sync::Arc;

/// The channel's last declared queue: AMQP's "current queue", which an
/// empty queue name in a method designates.
#[derive(Debug, Default)]
pub(super) struct CurrentQueue(Option<Arc<str>>);

impl CurrentQueue {
    /// The queue a method names, or the channel's last declared queue when
    /// the name is empty.
    pub(super) fn resolve(&self, name: &str) -> Result<Arc<str>, AmqpError> {
        if !name.is_empty() {
            return Ok(Arc::from(name));
        }
        self.0
            .clone()
            .ok_or_else(|| AmqpError::new(ReplyCode::NOT_FOUND, "no previously declared queue"))
    }

    /// A queue was declared: it is the current queue now.
    pub(super) fn set(&mut self, name: Arc<str>) {
        self.0 = Some(name);
    }
}

/// exchange.*.
pub(super) fn exchange_method(
    ctx: &ChannelCtx<'_>,
    out: &Out,
    m: exchange::AMQPMethod,
) -> Result<(), AmqpError> {
    match m {
        exchange::AMQPMethod::Declare(d) => {
            let arguments = table_from_amqp(&d.arguments);
            if !d.passive {
                check_exchange_declare(ctx, d.exchange.as_str(), d.kind.as_str(), &arguments)?;
            }
            let args = ExchangeArgs {
                durable: d.durable,
                auto_delete: d.auto_delete,
                internal: d.internal,
                arguments,
            };
            let (name, kind) = (d.exchange.as_str(), d.kind.as_str());
            if d.passive {
                ctx.vhost.declare_exchange(name, kind, true, args)?;
            } else {
                command::declare_exchange(ctx.broker, ctx.vhost, name, kind, args)?;
            }
            if !d.nowait {
                out.method(AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(
                    exchange::DeclareOk {},
                )));
            }
        }
        exchange::AMQPMethod::Delete(d) => {
            // The default and amq.* exchanges get their own refusal first.
            let name = d.exchange.as_str();
            if !name.is_empty() && !name.starts_with("amq.") {
                ctx.check(Access::Configure, Resource::Exchange(name))?;
            }
            command::delete_exchange(ctx.broker, ctx.vhost, name, d.if_unused)?;
            if !d.nowait {
                out.method(AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(
                    exchange::DeleteOk {},
                )));
            }
        }
        exchange::AMQPMethod::Bind(b) => exchange_binding(
            ctx,
            out,
            true,
            (b.source, b.destination, b.routing_key, b.arguments),
            b.nowait,
        )?,
        exchange::AMQPMethod::Unbind(b) => exchange_binding(
            ctx,
            out,
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
    ctx: &ChannelCtx<'_>,
    out: &Out,
    bind: bool,
    (source, destination, key, arguments): (ShortString, ShortString, ShortString, FieldTable),
    nowait: bool,
) -> Result<(), AmqpError> {
    check_binding(
        ctx,
        Resource::Exchange(destination.as_str()),
        source.as_str(),
    )?;
    command::binding(
        ctx.broker,
        ctx.vhost,
        bind,
        (
            source.as_str(),
            Destination::Exchange(Arc::from(destination.as_str())),
        ),
        key.as_str(),
        table_from_amqp(&arguments),
        ctx.conn_id,
    )?;
    if !nowait {
        out.method(AMQPClass::Exchange(if bind {
            exchange::AMQPMethod::BindOk(exchange::BindOk {})
        } else {
            exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})
        }));
    }
    Ok(())
}

/// queue.*.
pub(super) fn queue_method(
    ctx: &ChannelCtx<'_>,
    out: &Out,
    current: &mut CurrentQueue,
    m: queue::AMQPMethod,
) -> Result<(), AmqpError> {
    match m {
        queue::AMQPMethod::Declare(d) => {
            let name = if d.passive && d.queue.as_str().is_empty() {
                current.resolve("")?
            } else {
                Arc::from(d.queue.as_str())
            };
            if name.starts_with(PSEUDO_QUEUE) {
                return super::reply_to::declare_reply_queue(ctx, out, current, &name, d.nowait);
            }
            let server_named = !d.passive && name.is_empty();
            let arguments = table_from_amqp(&d.arguments);
            if !d.passive && !server_named {
                check_queue_declare(ctx, &name, &arguments)?;
            }
            let spec = QueueSpec {
                name,
                durable: d.durable,
                exclusive_owner: d.exclusive.then_some(ctx.conn_id),
                auto_delete: d.auto_delete,
                arguments,
            };
            let arguments = server_named.then(|| spec.arguments.clone());
            let (name, messages, consumers) =
                command::declare_queue(ctx.broker, ctx.vhost, spec, d.passive, ctx.conn_id)?;
            if let Some(arguments) = arguments {
                // The name exists only now; RabbitMQ checks the
                // generated name too. Refused: nobody saw the queue.
                if let Err(e) = check_queue_declare(ctx, &name, &arguments) {
                    ctx.vhost.delete_queue(&name, false, false, ctx.conn_id)?;
                    return Err(e);
                }
            }
            current.set(name.clone());
            if !d.nowait {
                out.method(AMQPClass::Queue(queue::AMQPMethod::DeclareOk(
                    queue::DeclareOk {
                        queue: name.to_string().into(),
                        message_count: messages,
                        consumer_count: consumers,
                    },
                )));
            }
        }
        queue::AMQPMethod::Bind(b) => {
            let q = current.resolve(b.queue.as_str())?;
            queue_binding(ctx, true, q, &b.exchange, &b.routing_key, &b.arguments)?;
            if !b.nowait {
                out.method(AMQPClass::Queue(queue::AMQPMethod::BindOk(
                    queue::BindOk {},
                )));
            }
        }
        queue::AMQPMethod::Unbind(b) => {
            let q = current.resolve(b.queue.as_str())?;
            queue_binding(ctx, false, q, &b.exchange, &b.routing_key, &b.arguments)?;
            out.method(AMQPClass::Queue(queue::AMQPMethod::UnbindOk(
                queue::UnbindOk {},
            )));
        }
        queue::AMQPMethod::Purge(p) => {
            let q = current.resolve(p.queue.as_str())?;
            ctx.check(Access::Read, Resource::Queue(&q))?;
            let n = ctx.vhost.purge_queue(&q, ctx.conn_id)?;
            if !p.nowait {
                out.method(AMQPClass::Queue(queue::AMQPMethod::PurgeOk(
                    queue::PurgeOk { message_count: n },
                )));
            }
        }
        queue::AMQPMethod::Delete(d) => {
            let q = current.resolve(d.queue.as_str())?;
            ctx.check(Access::Configure, Resource::Queue(&q))?;
            let flags = (d.if_unused, d.if_empty);
            let n = command::delete_queue(ctx.broker, ctx.vhost, &q, flags, ctx.conn_id)?;
            if !d.nowait {
                out.method(AMQPClass::Queue(queue::AMQPMethod::DeleteOk(
                    queue::DeleteOk { message_count: n },
                )));
            }
        }
        _ => return Err(super::unimplemented()),
    }
    Ok(())
}

/// An exchange named by a string argument (`alternate-exchange`,
/// `x-dead-letter-exchange`); other types get the core's own refusal.
fn exchange_arg<'a>(arguments: &'a Table, key: &str) -> Option<&'a str> {
    arguments.get(key)?.as_text()
}

/// exchange.declare (not passive), in RabbitMQ's order: an unknown type
/// and the default exchange are refused by the core first; then configure
/// on the exchange and, with an alternate exchange, read on the exchange
/// and write on the alternate.
fn check_exchange_declare(
    ctx: &ChannelCtx<'_>,
    name: &str,
    kind: &str,
    arguments: &Table,
) -> Result<(), AmqpError> {
    if name.is_empty() || ExchangeKind::parse(kind).is_none() {
        return Ok(());
    }
    ctx.check(Access::Configure, Resource::Exchange(name))?;
    if let Some(ae) = exchange_arg(arguments, "alternate-exchange") {
        ctx.check(Access::Read, Resource::Exchange(name))?;
        ctx.check(Access::Write, Resource::Exchange(ae))?;
    }
    Ok(())
}

/// queue.declare (not passive): configure on the queue, and with a
/// dead-letter exchange read on the queue and write on the exchange
/// (RabbitMQ 3.10's order; dead-lettering itself is not checked).
fn check_queue_declare(
    ctx: &ChannelCtx<'_>,
    name: &str,
    arguments: &Table,
) -> Result<(), AmqpError> {
    ctx.check(Access::Configure, Resource::Queue(name))?;
    if let Some(dlx) = exchange_arg(arguments, "x-dead-letter-exchange") {
        ctx.check(Access::Read, Resource::Queue(name))?;
        ctx.check(Access::Write, Resource::Exchange(dlx))?;
    }
    Ok(())
}

/// queue.bind (`bind`) or queue.unbind of queue `q` to `exchange`, after
/// the permission checks.
fn queue_binding(
    ctx: &ChannelCtx<'_>,
    bind: bool,
    q: Arc<str>,
    exchange: &ShortString,
    routing_key: &ShortString,
    arguments: &FieldTable,
) -> Result<(), AmqpError> {
    check_binding(ctx, Resource::Queue(&q), exchange.as_str())?;
    ctx.vhost.binding(
        bind,
        exchange.as_str(),
        Destination::Queue(q),
        routing_key.as_str(),
        table_from_amqp(arguments),
        ctx.conn_id,
    )?;
    Ok(())
}

/// queue.bind / exchange.bind and their unbinds: write on the
/// destination, then (unless the core refuses the default exchange) read
/// on the source exchange.
fn check_binding(
    ctx: &ChannelCtx<'_>,
    destination: Resource<'_>,
    source: &str,
) -> Result<(), AmqpError> {
    ctx.check(Access::Write, destination)?;
    let default_destination = matches!(destination, Resource::Exchange(""));
    if !source.is_empty() && !default_destination {
        ctx.check(Access::Read, Resource::Exchange(source))?;
    }
    Ok(())
}

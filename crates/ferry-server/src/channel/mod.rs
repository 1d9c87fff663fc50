//! One AMQP channel: `Channel` is its state machine and dispatcher; the
//! work lives in parts that own their state (one file each): `publish`
//! (`Publisher`: content assembly, routing, mandatory returns, confirm
//! mode, transactions), `basic` (`Consumers`: the consumer registry,
//! qos, consume/cancel), `declare` (exchange/queue methods as functions
//! over the `ChannelCtx`, and the channel's `CurrentQueue`), `reply_to`
//! (`ReplyTo`: the direct reply-to consumer), `delivery` (delivery tags,
//! unacked messages) and `confirms` (`ConfirmTracker`). This file keeps
//! what crosses parts: basic.get, acks, recover, channel.* and close.

mod basic;
pub mod confirms;
mod declare;
pub mod delivery;
mod publish;
pub mod reply_to;

use crate::error::AmqpError;
use crate::outbox::{Outbound, Outbox};
use crate::ServerConfig;
use basic::Consumers;
use declare::CurrentQueue;
use delivery::{ChannelShared, Unacked};
use ferry_amqp::amq_protocol::protocol::{basic as basic_m, channel, confirm};
use ferry_amqp::{AMQPClass, Frame, ReplyCode};
use ferry_auth::{Access, CompiledPermissions, Resource};
use ferry_broker::VHost;
use ferry_queue::source::Source;
use publish::Publisher;
use reply_to::ReplyTo;
use std::sync::Arc;

/// What a channel needs from its connection.
#[derive(Debug)]
pub struct ChannelCtx<'a> {
    /// The broker (definition changes go through it).
    pub broker: &'a Arc<ferry_broker::Broker>,
    /// The connection's vhost.
    pub vhost: &'a Arc<VHost>,
    /// Connection id (exclusive queue ownership).
    pub conn_id: u64,
    /// Authenticated user (checked against the user_id property).
    pub user: &'a str,
    /// The user has the `impersonator` tag: any user_id is accepted.
    pub impersonator: bool,
    /// The user's permissions in the vhost, cached by the connection.
    pub perms: &'a Arc<CompiledPermissions>,
    /// Limits.
    pub config: &'a ServerConfig,
    /// The broker's direct reply-to consumers.
    pub replies: &'a reply_to::Replies,
}

impl ChannelCtx<'_> {
    /// RabbitMQ's resource check: 403 ACCESS_REFUSED with its text. No
    /// lock, no regex compiled: the expressions are compiled once per
    /// change of permissions, and `.*` never runs a regex.
    pub fn check(&self, access: Access, resource: Resource<'_>) -> Result<(), AmqpError> {
        if self.perms.allows(access, resource) {
            return Ok(());
        }
        Err(ferry_broker::broker::access_refused(resource, self.vhost.name(), self.user).into())
    }
}

/// The channel's way out: its number and the connection's outbox, lent
/// to the parts that answer.
#[derive(Debug)]
struct Out {
    id: u16,
    outbox: Outbox,
}

impl Out {
    /// Sends a method frame on this channel.
    fn method(&self, m: AMQPClass) {
        self.outbox.method(self.id, m);
    }
}

/// A channel as its connection task owns it.
#[derive(Debug)]
pub struct Channel {
    out: Out,
    shared: Arc<ChannelShared>,
    publisher: Publisher,
    consumers: Consumers,
    /// The direct reply-to consumer (`amq.rabbitmq.reply-to`), if any.
    reply: ReplyTo,
    current: CurrentQueue,
}

impl Channel {
    /// A newly opened channel.
    pub fn new(id: u16, outbox: Outbox, cancel_notify: bool) -> Self {
        Channel {
            shared: ChannelShared::new(id, outbox.clone(), cancel_notify),
            out: Out { id, outbox },
            publisher: Publisher::default(),
            consumers: Consumers::default(),
            reply: ReplyTo::default(),
            current: CurrentQueue::default(),
        }
    }

    /// The state shared with queues and the connection registry.
    pub fn shared(&self) -> &Arc<ChannelShared> {
        &self.shared
    }

    /// Whether the channel is in confirm mode (its confirms may be held
    /// until [`Channel::flush_confirms`]).
    pub fn confirming(&self) -> bool {
        self.publisher.confirming()
    }

    /// Sends the confirms held since the last flush (see
    /// `ConfirmTracker::confirm_later`). The connection calls it before it
    /// waits for input, yields or blocks.
    pub fn flush_confirms(&self) {
        self.publisher.flush_confirms();
    }

    /// Whether a publish on this channel is waiting for more content frames.
    pub fn mid_content(&self) -> bool {
        self.publisher.mid_content()
    }

    /// Handles one frame addressed to this (open) channel.
    pub fn handle(&mut self, ctx: &ChannelCtx<'_>, frame: Frame) -> Result<(), AmqpError> {
        self.consumers.forget_server_cancelled(&self.shared);
        match frame {
            Frame::Method { method, .. } => {
                self.publisher.expect_method()?;
                self.handle_method(ctx, method)
            }
            Frame::Header {
                class_id,
                body_size,
                props,
                raw_properties,
                ..
            } => self.publisher.content_header(
                ctx,
                &self.out,
                &self.reply,
                class_id,
                (body_size, props, raw_properties),
            ),
            Frame::Body { payload, .. } => {
                self.publisher
                    .content_body(ctx, &self.out, &self.reply, payload)
            }
            Frame::Heartbeat { .. } => Err(AmqpError::new(
                ReplyCode::UNEXPECTED_FRAME,
                ferry_amqp::frame::rabbit::unexpected_frame_detail(8, &[]),
            )),
        }
    }

    fn handle_method(&mut self, ctx: &ChannelCtx<'_>, method: AMQPClass) -> Result<(), AmqpError> {
        let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        let r = match method {
            // Declare / delete / bind write the definitions file (fsync).
            AMQPClass::Exchange(m) => {
                crate::blocking::run(|| declare::exchange_method(ctx, &self.out, m))
            }
            AMQPClass::Queue(m) => {
                crate::blocking::run(|| declare::queue_method(ctx, &self.out, &mut self.current, m))
            }
            AMQPClass::Basic(m) => self.basic_method(ctx, m),
            AMQPClass::Channel(m) => self.channel_method(m),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                self.publisher
                    .confirm_select(&self.out, &self.shared, s.nowait)
            }
            AMQPClass::Tx(m) => self.publisher.tx_method(&self.out, &self.shared, m),
            _ => Err(unimplemented()),
        };
        r.map_err(|e| {
            if e.class_id == 0 {
                e.on(class_id, method_id)
            } else {
                e
            }
        })
    }

    fn basic_method(
        &mut self,
        ctx: &ChannelCtx<'_>,
        m: basic_m::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match m {
            basic_m::AMQPMethod::Publish(p) => self.publisher.start_publish(ctx, p),
            basic_m::AMQPMethod::Ack(a) => self.settle_tags(a.delivery_tag, a.multiple, None),
            basic_m::AMQPMethod::Nack(n) => {
                self.settle_tags(n.delivery_tag, n.multiple, Some(n.requeue))
            }
            basic_m::AMQPMethod::Reject(r) => {
                self.settle_tags(r.delivery_tag, false, Some(r.requeue))
            }
            basic_m::AMQPMethod::Qos(q) => {
                self.consumers.qos(&self.out, &self.shared, &q);
                Ok(())
            }
            basic_m::AMQPMethod::Consume(c)
                if c.queue.as_str() == crate::direct_reply::PSEUDO_QUEUE =>
            {
                self.reply
                    .consume(ctx, &self.out, &self.shared, &self.consumers, &c)
            }
            basic_m::AMQPMethod::Consume(c) => {
                let name = self.current.resolve(c.queue.as_str())?;
                self.consumers
                    .consume(ctx, &self.out, &self.shared, name, c)
            }
            basic_m::AMQPMethod::Cancel(c) => {
                let tag: Arc<str> = Arc::from(c.consumer_tag.as_str());
                // The reply consumer first, as RabbitMQ matches it first.
                if !self.reply.cancel(ctx, &tag) {
                    self.consumers.cancel(ctx, &self.shared, &tag)?;
                }
                if !c.nowait {
                    self.out
                        .method(AMQPClass::Basic(basic_m::AMQPMethod::CancelOk(
                            basic_m::CancelOk {
                                consumer_tag: c.consumer_tag,
                            },
                        )));
                }
                Ok(())
            }
            basic_m::AMQPMethod::Get(g) => self.get(ctx, g.queue.as_str(), g.no_ack),
            basic_m::AMQPMethod::Recover(r) => self.recover(r.requeue, true),
            basic_m::AMQPMethod::RecoverAsync(r) => self.recover(r.requeue, false),
            _ => Err(unimplemented()),
        }
    }

    fn get(&mut self, ctx: &ChannelCtx<'_>, queue: &str, no_ack: bool) -> Result<(), AmqpError> {
        let name = self.current.resolve(queue)?;
        ctx.check(Access::Read, Resource::Queue(&name))?;
        let q = ctx.vhost.queue_for(&name, ctx.conn_id)?;
        // A replicated queue's follower asks its leader: a round trip.
        let got = match q.is_replicated() {
            true => crate::blocking::run(|| q.get(no_ack))?,
            false => q.get(no_ack)?,
        };
        match got {
            Some((d, left)) => {
                let tag = self.shared.record_get(&q, &d, no_ack);
                self.out.outbox.send(Outbound::GetOk {
                    channel: self.out.id,
                    delivery_tag: tag,
                    redelivered: d.redelivered,
                    message_count: left,
                    message: d.message,
                });
            }
            None => self
                .out
                .method(AMQPClass::Basic(basic_m::AMQPMethod::GetEmpty(
                    basic_m::GetEmpty {},
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
        if self.publisher.hold_in_tx(&mut taken, requeue) {
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
            self.consumers.dispatch();
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
            self.out
                .method(AMQPClass::Basic(basic_m::AMQPMethod::RecoverOk(
                    basic_m::RecoverOk {},
                )));
        }
        for (q, ids) in group_by_queue(all) {
            q.requeue(&ids)?;
        }
        self.consumers.dispatch();
        Ok(())
    }

    fn channel_method(&mut self, m: channel::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            channel::AMQPMethod::Flow(f) if !f.active => {
                // RabbitMQ 3.x does not let clients stop deliveries this way.
                Err(AmqpError::new(ReplyCode::NOT_IMPLEMENTED, "active=false"))
            }
            channel::AMQPMethod::Flow(f) => {
                self.shared.state.lock().flow_active = f.active;
                self.out
                    .method(AMQPClass::Channel(channel::AMQPMethod::FlowOk(
                        channel::FlowOk { active: f.active },
                    )));
                if f.active {
                    self.consumers.dispatch();
                }
                Ok(())
            }
            channel::AMQPMethod::FlowOk(_) => Ok(()),
            channel::AMQPMethod::Open(_) => Err(AmqpError::new(
                ReplyCode::CHANNEL_ERROR,
                "second 'channel.open' seen",
            )),
            _ => Err(unimplemented()),
        }
    }

    /// The channel's oldest unacked delivery, if it is older than its
    /// timeout (the queue's `x-consumer-timeout` or `default`): the
    /// timeout that expired, in milliseconds.
    pub fn expired_delivery(&self, default: Option<std::time::Duration>) -> Option<u64> {
        let (at, queue) = self.shared.oldest_unacked()?;
        let per_queue = queue.upgrade().and_then(|q| {
            q.spec()
                .arguments
                .get("x-consumer-timeout")
                .and_then(ferry_route::as_u64)
        });
        let timeout = per_queue
            .map(std::time::Duration::from_millis)
            .or(default)?;
        (at.elapsed() > timeout).then_some(timeout.as_millis() as u64)
    }

    /// Closes the channel's business: consumers cancelled, unacked messages
    /// requeued. Used for channel.close, errors and connection end.
    ///
    /// An open transaction is discarded as RabbitMQ discards it: its
    /// publishes are never routed, and its acks, nacks and rejects are not
    /// applied: the messages they named are still unacked, so they go back
    /// to their queues (redelivered) with the rest.
    pub fn cleanup(&mut self, ctx: &ChannelCtx<'_>) {
        // Stored before the close: confirmed before close-ok.
        self.publisher.flush_confirms();
        self.publisher.discard_tx(&self.shared);
        self.shared.state.lock().closed = true;
        self.reply.close(ctx);
        self.consumers.cancel_all(ctx);
        let unacked = self.shared.take_all();
        for (q, ids) in group_by_queue(unacked) {
            if let Err(e) = q.abandon(&ids) {
                tracing::error!(queue = %q.name(), error = %e, "requeue on close failed");
            }
        }
        self.publisher.drop_pending();
    }
}

/// RabbitMQ's answer to a method a client has no business sending on a
/// channel (a server-side method such as queue.declare-ok, or a connection
/// method): a connection error.
pub(crate) fn unimplemented() -> AmqpError {
    AmqpError::new(ReplyCode::COMMAND_INVALID, "unimplemented method")
}

/// Groups unacked messages by queue, keeping their order.
fn group_by_queue(items: Vec<Unacked>) -> Vec<(Arc<dyn Source>, Vec<u64>)> {
    let mut out: Vec<(Arc<dyn Source>, Vec<u64>)> = Vec::new();
    for u in items {
        let Some(q) = u.queue.upgrade() else { continue };
        match out.iter_mut().find(|(g, _)| Arc::ptr_eq(g, &q)) {
            Some((_, ids)) => ids.push(u.msg_id),
            None => out.push((q, vec![u.msg_id])),
        }
    }
    out
}

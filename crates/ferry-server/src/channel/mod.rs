//! One AMQP channel: its state machine and the method families it handles
//! (one file each: `declare` for exchange/queue, `basic` for consumers and
//! acks, `publish` for content assembly, confirms and transactions,
//! `reply_to` for direct reply-to).

mod basic;
pub mod confirms;
mod declare;
pub mod delivery;
mod publish;
pub mod reply_to;

use crate::error::AmqpError;
use crate::outbox::Outbox;
use crate::ServerConfig;
use confirms::ConfirmTracker;
use delivery::{ChannelShared, Unacked};
use ferry_amqp::amq_protocol::protocol::{channel, confirm, tx};
use ferry_amqp::{AMQPClass, Frame, ReplyCode};
use ferry_auth::{Access, CompiledPermissions, Resource};
use ferry_broker::VHost;
use ferry_queue::source::Source;
use publish::{PendingContent, TxBuffer};
use std::collections::HashMap;
use std::sync::Arc;

/// What a channel needs from its connection.
#[derive(Debug)]
pub struct ChannelCtx<'a> {
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

#[derive(Debug)]
struct ConsumerRef {
    queue: Arc<dyn Source>,
    id: u64,
}

/// A channel as its connection task owns it.
#[derive(Debug)]
pub struct Channel {
    id: u16,
    shared: Arc<ChannelShared>,
    outbox: Outbox,
    pending: Option<PendingContent>,
    confirms: Option<Arc<ConfirmTracker>>,
    tx: Option<TxBuffer>,
    consumers: HashMap<Arc<str>, ConsumerRef>,
    /// The direct reply-to consumer (`amq.rabbitmq.reply-to`), if any.
    reply: Option<reply_to::ReplyConsumer>,
    prefetch: u32,
    last_queue: Option<Arc<str>>,
    /// The last exchange basic.publish was allowed to write to, under
    /// which permissions (held, so the pointer cannot be reused).
    publish_ok: Option<(Arc<CompiledPermissions>, Arc<str>)>,
}

impl Channel {
    /// A newly opened channel.
    pub fn new(id: u16, outbox: Outbox, cancel_notify: bool) -> Self {
        Channel {
            id,
            shared: ChannelShared::new(id, outbox.clone(), cancel_notify),
            outbox,
            pending: None,
            confirms: None,
            tx: None,
            consumers: HashMap::new(),
            reply: None,
            prefetch: 0,
            last_queue: None,
            publish_ok: None,
        }
    }

    /// The state shared with queues and the connection registry.
    pub fn shared(&self) -> &Arc<ChannelShared> {
        &self.shared
    }

    /// Whether the channel is in confirm mode (its confirms may be held
    /// until [`Channel::flush_confirms`]).
    pub fn confirming(&self) -> bool {
        self.confirms.is_some()
    }

    /// Sends the confirms held since the last flush (see
    /// `ConfirmTracker::confirm_later`). The connection calls it before it
    /// waits for input, yields or blocks.
    pub fn flush_confirms(&self) {
        if let Some(t) = &self.confirms {
            t.flush();
        }
    }

    /// Whether a publish on this channel is waiting for more content frames.
    pub fn mid_content(&self) -> bool {
        self.pending.is_some()
    }

    fn reply(&self, m: AMQPClass) {
        self.outbox.method(self.id, m);
    }

    /// Handles one frame addressed to this (open) channel.
    pub fn handle(&mut self, ctx: &ChannelCtx<'_>, frame: Frame) -> Result<(), AmqpError> {
        self.forget_server_cancelled();
        match frame {
            Frame::Method { method, .. } => {
                if let Some(p) = &self.pending {
                    return Err(p.unexpected_frame());
                }
                self.handle_method(ctx, method)
            }
            Frame::Header {
                class_id,
                body_size,
                props,
                raw_properties,
                ..
            } => self.content_header(ctx, class_id, body_size, props, raw_properties),
            Frame::Body { payload, .. } => self.content_body(ctx, payload),
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
            AMQPClass::Exchange(m) => crate::blocking::run(|| self.exchange_method(ctx, m)),
            AMQPClass::Queue(m) => crate::blocking::run(|| self.queue_method(ctx, m)),
            AMQPClass::Basic(m) => self.basic_method(ctx, m),
            AMQPClass::Channel(m) => self.channel_method(m),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => self.confirm_select(s.nowait),
            AMQPClass::Tx(m) => self.tx_method(ctx, m),
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

    fn channel_method(&mut self, m: channel::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            channel::AMQPMethod::Flow(f) if !f.active => {
                // RabbitMQ 3.x does not let clients stop deliveries this way.
                Err(AmqpError::new(ReplyCode::NOT_IMPLEMENTED, "active=false"))
            }
            channel::AMQPMethod::Flow(f) => {
                self.shared.state.lock().flow_active = f.active;
                self.reply(AMQPClass::Channel(channel::AMQPMethod::FlowOk(
                    channel::FlowOk { active: f.active },
                )));
                if f.active {
                    self.dispatch_consumers();
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

    fn confirm_select(&mut self, nowait: bool) -> Result<(), AmqpError> {
        if self.tx.is_some() {
            return Err(AmqpError::new(
                ReplyCode::PRECONDITION_FAILED,
                "cannot switch from tx to confirm mode",
            ));
        }
        if self.confirms.is_none() {
            self.confirms = Some(Arc::new(ConfirmTracker::new(self.id, self.outbox.clone())));
            self.shared.info.set_confirm();
        }
        if !nowait {
            self.reply(AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(
                confirm::SelectOk {},
            )));
        }
        Ok(())
    }

    fn tx_method(&mut self, ctx: &ChannelCtx<'_>, m: tx::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            tx::AMQPMethod::Select(_) => {
                if self.confirms.is_some() {
                    return Err(AmqpError::new(
                        ReplyCode::PRECONDITION_FAILED,
                        "cannot switch from confirm to tx mode",
                    ));
                }
                if self.tx.is_none() {
                    self.tx = Some(TxBuffer::default());
                    self.shared.info.set_tx();
                }
                self.reply(AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
                Ok(())
            }
            tx::AMQPMethod::Commit(_) => self.tx_commit(ctx),
            tx::AMQPMethod::Rollback(_) => {
                let Some(buf) = self.tx.as_mut() else {
                    return Err(AmqpError::new(
                        ReplyCode::PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                };
                let acks = buf.rollback();
                // Acks taken back: the messages return to the unacked map's
                // owners, as RabbitMQ leaves them unacknowledged.
                self.restore_unacked(acks);
                self.reply(AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})));
                Ok(())
            }
            _ => Err(unimplemented()),
        }
    }

    fn forget_server_cancelled(&mut self) {
        let gone: Vec<Arc<str>> = std::mem::take(&mut *self.shared.server_cancelled.lock());
        for tag in gone {
            self.consumers.remove(&tag);
            self.shared.info.remove_consumer(&tag);
            self.shared.state.lock().forget_consumer(&tag);
        }
    }

    /// Gives every queue this channel consumes from a chance to deliver.
    fn dispatch_consumers(&self) {
        let mut seen: Vec<&Arc<dyn Source>> = Vec::new();
        for c in self.consumers.values() {
            if !seen.iter().any(|q| Arc::ptr_eq(q, &c.queue)) {
                seen.push(&c.queue);
                c.queue.dispatch();
            }
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
        self.flush_confirms();
        if let Some(mut tx) = self.tx.take() {
            let acks = tx.rollback();
            self.restore_unacked(acks);
        }
        self.shared.state.lock().closed = true;
        self.drop_reply(ctx);
        for (_, c) in self.consumers.drain() {
            if c.queue.cancel(c.id) {
                if let Err(e) = crate::blocking::run(|| ctx.vhost.drop_source(&c.queue)) {
                    tracing::warn!(error = %e, "auto-delete failed");
                }
            }
        }
        let unacked = self.shared.take_all();
        for (q, ids) in group_by_queue(unacked) {
            if let Err(e) = q.abandon(&ids) {
                tracing::error!(queue = %q.name(), error = %e, "requeue on close failed");
            }
        }
        self.pending = None;
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

//! A channel's side of direct reply-to (`crate::direct_reply` has the
//! design): the reply consumer (`ReplyTo`), the `reply_to` rewrite of
//! requests, replies handed to other channels, and `queue.declare` of the
//! pseudo-queue names. Reply codes and texts are RabbitMQ 3.10's (`rabbit_channel`).

use super::basic::Consumers;
use super::declare::CurrentQueue;
use super::delivery::ChannelShared;
use super::{ChannelCtx, Out};
use crate::direct_reply::{PSEUDO_QUEUE, REPLY_PREFIX};
use crate::error::AmqpError;
use ferry_amqp::amq_protocol::protocol::{basic, queue};
use ferry_amqp::{AMQPClass, ReplyCode, ShortString};
use ferry_model::Message;
use std::sync::{Arc, Weak};

/// Where a reply goes: a channel's reply consumer.
#[derive(Debug, Clone)]
pub struct ReplyTarget {
    channel: Weak<ChannelShared>,
    tag: Arc<str>,
}

/// The broker-wide registry of reply consumers.
pub type Replies = crate::direct_reply::ReplyRegistry<ReplyTarget>;

impl Replies {
    /// Hands `msg` to the live reply consumer `name` designates
    /// (`amq.rabbitmq.reply-to.<opaque>`): how a publish from outside AMQP
    /// (the management API's) reaches it, as RabbitMQ's default-exchange
    /// routing does for every publisher. False if no consumer is live
    /// under that name; the reply is never stored either way.
    pub fn deliver(&self, name: &str, msg: Arc<Message>) -> bool {
        let Some(t) = self.find(name) else {
            return false;
        };
        let Some(channel) = t.channel.upgrade() else {
            return false;
        };
        channel.deliver_reply(&t.tag, msg);
        true
    }
}

/// A channel's reply consumer.
#[derive(Debug)]
struct ReplyConsumer {
    id: u64,
    tag: Arc<str>,
    /// `amq.rabbitmq.reply-to.<opaque>`: what requests' `reply_to` becomes.
    name: ShortString,
}

/// A channel's direct reply-to state: its reply consumer, if any.
#[derive(Debug, Default)]
pub(super) struct ReplyTo {
    consumer: Option<ReplyConsumer>,
}

impl ReplyTo {
    /// basic.consume on `amq.rabbitmq.reply-to`. No queue, no permission
    /// check, no registration in the management API's consumer list (as in
    /// RabbitMQ, where the reply consumer is not in the consumer mapping).
    pub(super) fn consume(
        &mut self,
        ctx: &ChannelCtx<'_>,
        out: &Out,
        shared: &Arc<ChannelShared>,
        consumers: &Consumers,
        c: &basic::Consume,
    ) -> Result<(), AmqpError> {
        if consumers.contains(c.consumer_tag.as_str()) {
            return Err(AmqpError::new(
                ReplyCode::NOT_ALLOWED,
                format!(
                    "attempt to reuse consumer tag '{}'",
                    c.consumer_tag.as_str()
                ),
            ));
        }
        if !c.no_ack {
            return Err(AmqpError::new(
                ReplyCode::PRECONDITION_FAILED,
                "reply consumer cannot acknowledge",
            ));
        }
        if self.consumer.is_some() {
            return Err(AmqpError::new(
                ReplyCode::PRECONDITION_FAILED,
                "reply consumer already set",
            ));
        }
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            Arc::from(ferry_model::names::consumer_tag().as_str())
        } else {
            Arc::from(c.consumer_tag.as_str())
        };
        let reg = ctx.replies.register(ReplyTarget {
            channel: Arc::downgrade(shared),
            tag: tag.clone(),
        });
        let name = match ShortString::try_new(reg.name) {
            Ok(n) => n,
            Err(e) => {
                ctx.replies.unregister(reg.id);
                return Err(AmqpError::new(ReplyCode::INTERNAL_ERROR, e.to_string()));
            }
        };
        self.consumer = Some(ReplyConsumer {
            id: reg.id,
            tag: tag.clone(),
            name,
        });
        if !c.nowait {
            out.method(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(
                basic::ConsumeOk {
                    consumer_tag: tag.to_string().into(),
                },
            )));
        }
        Ok(())
    }

    /// basic.cancel of the reply consumer: true if `tag` was it.
    pub(super) fn cancel(&mut self, ctx: &ChannelCtx<'_>, tag: &str) -> bool {
        match &self.consumer {
            Some(r) if *r.tag == *tag => {
                ctx.replies.unregister(r.id);
                self.consumer = None;
                true
            }
            _ => false,
        }
    }

    /// Channel close: the name stops working at once.
    pub(super) fn close(&mut self, ctx: &ChannelCtx<'_>) {
        if let Some(r) = self.consumer.take() {
            ctx.replies.unregister(r.id);
        }
    }

    /// A request asking for a direct reply (`reply_to` is the pseudo-queue)
    /// gets this channel's reply consumer's name instead; 406 if the channel
    /// has none. `None`: nothing to rewrite.
    pub(super) fn rewrite(
        &self,
        ctx: &ChannelCtx<'_>,
        exchange: &str,
        reply_to: Option<&[u8]>,
    ) -> Result<Option<ShortString>, AmqpError> {
        if reply_to != Some(PSEUDO_QUEUE.as_bytes()) {
            return Ok(None);
        }
        let Some(r) = &self.consumer else {
            // RabbitMQ looks the exchange up first; routing does that
            // here, later, so a missing one is checked on this error path.
            if !exchange.is_empty() && !ctx.vhost.has_exchange(exchange) {
                return Err(AmqpError::new(
                    ReplyCode::NOT_FOUND,
                    format!("no exchange '{exchange}' in vhost '{}'", ctx.vhost.name()),
                )
                .on(60, 40));
            }
            return Err(AmqpError::new(
                ReplyCode::PRECONDITION_FAILED,
                "fast reply consumer does not exist",
            )
            .on(60, 40));
        };
        Ok(Some(r.name.clone()))
    }
}

/// queue.declare of a name starting with `amq.rabbitmq.reply-to`
/// (RabbitMQ matches the prefix without the dot), passive or not: the
/// pseudo-queue itself and a live reply consumer's name answer
/// declare-ok with 0 messages and 1 consumer; any other is 404.
pub(super) fn declare_reply_queue(
    ctx: &ChannelCtx<'_>,
    out: &Out,
    current: &mut CurrentQueue,
    name: &str,
    nowait: bool,
) -> Result<(), AmqpError> {
    let exists = name == PSEUDO_QUEUE || reply_target(ctx, name).is_some();
    if !exists {
        return Err(AmqpError::new(
            ReplyCode::NOT_FOUND,
            format!("no queue '{name}' in vhost '{}'", ctx.vhost.name()),
        ));
    }
    current.set(Arc::from(name));
    if !nowait {
        out.method(AMQPClass::Queue(queue::AMQPMethod::DeclareOk(
            queue::DeclareOk {
                queue: name.to_string().into(),
                message_count: 0,
                consumer_count: 1,
            },
        )));
    }
    Ok(())
}

/// The live reply consumer `name` designates.
fn reply_target(ctx: &ChannelCtx<'_>, name: &str) -> Option<(Arc<ChannelShared>, Arc<str>)> {
    let t = ctx.replies.find(name)?;
    Some((t.channel.upgrade()?, t.tag))
}

/// Hands a message published to the default exchange to the reply
/// consumers its routing keys name (each once). RabbitMQ delivers with
/// the publish's routing key, `redelivered` false and the consumer
/// channel's next delivery tag, which it does not take (no ack is
/// expected); a channel that is gone drops the reply.
pub(super) fn deliver_replies<'k>(
    ctx: &ChannelCtx<'_>,
    keys: impl Iterator<Item = &'k str>,
    msg: &Arc<Message>,
) {
    // Each name once (a CC header may repeat thousands of keys), and
    // the reply registry locked once per publish; nothing is allocated
    // or locked for the common publish, which has no reply key.
    let mut seen = ferry_route::NameSet::default();
    let mut names = keys
        .filter(|k| k.starts_with(REPLY_PREFIX) && seen.first(k))
        .peekable();
    if names.peek().is_none() {
        return;
    }
    for t in ctx.replies.find_many(names) {
        if let Some(channel) = t.channel.upgrade() {
            channel.deliver_reply(&t.tag, msg.clone());
        }
    }
}

//! basic.publish: content assembly (method → header → body frames),
//! routing, mandatory returns, publisher confirms and transactions.

use super::delivery::Unacked;
use super::{group_by_queue, Channel, ChannelCtx};
use crate::error::AmqpError;
use crate::outbox::Outbound;
use bytes::{Bytes, BytesMut};
use ferry_amqp::amq_protocol::protocol::{basic, tx};
use ferry_amqp::{AMQPClass, BasicProperties, ReplyCode};
use ferry_core::queue::{ConfirmSink, ConfirmToken, Enqueued, Queue};
use ferry_core::Message;
use parking_lot::Mutex;
use std::sync::Arc;

/// A publish waiting for its content.
#[derive(Debug)]
pub struct PendingContent {
    exchange: Arc<str>,
    routing_key: Arc<str>,
    mandatory: bool,
    header: Option<(u64, BasicProperties, Bytes)>,
    body: BytesMut,
    single: Option<Bytes>,
}

/// An acknowledgement held back by a transaction.
#[derive(Debug)]
pub struct TxAck {
    tag: u64,
    unacked: Unacked,
    requeue: bool,
}

/// Work held back by a transaction until tx.commit.
#[derive(Debug, Default)]
pub struct TxBuffer {
    publishes: Vec<(Arc<Message>, Vec<Arc<Queue>>, bool)>,
    acks: Vec<TxAck>,
}

impl TxBuffer {
    /// Drops the publishes, returns the acks to undo.
    pub fn rollback(&mut self) -> Vec<(u64, Unacked)> {
        self.publishes.clear();
        self.acks.drain(..).map(|a| (a.tag, a.unacked)).collect()
    }
}

/// Waits for a commit's durable writes, then sends tx.commit-ok.
#[derive(Debug)]
struct CommitWaiter {
    remaining: Mutex<u64>,
    channel: u16,
    outbox: crate::outbox::Outbox,
}

impl CommitWaiter {
    fn done(&self, n: u64) {
        let mut r = self.remaining.lock();
        *r = r.saturating_sub(n);
        if *r == 0 {
            self.outbox.method(
                self.channel,
                AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})),
            );
        }
    }
}

impl ConfirmSink for CommitWaiter {
    fn confirmed(&self, seqs: &[u64]) {
        self.done(seqs.len() as u64);
    }
    fn failed(&self, seqs: &[u64]) {
        // The commit still completes; the failed log refuses further writes
        // and the publisher learns of it on its next publish.
        tracing::error!(count = seqs.len(), "transaction messages not stored");
        self.done(seqs.len() as u64);
    }
}

impl Channel {
    pub(super) fn start_publish(&mut self, p: basic::Publish) -> Result<(), AmqpError> {
        if p.immediate {
            return Err(AmqpError::new(ReplyCode::NOT_IMPLEMENTED, "immediate=true"));
        }
        self.pending = Some(PendingContent {
            exchange: Arc::from(p.exchange.as_str()),
            routing_key: Arc::from(p.routing_key.as_str()),
            mandatory: p.mandatory,
            header: None,
            body: BytesMut::new(),
            single: None,
        });
        Ok(())
    }

    pub(super) fn content_header(
        &mut self,
        ctx: &ChannelCtx<'_>,
        class_id: u16,
        body_size: u64,
        properties: BasicProperties,
        raw: Bytes,
    ) -> Result<(), AmqpError> {
        let Some(p) = self.pending.as_mut() else {
            return Err(AmqpError::new(
                ReplyCode::UNEXPECTED_FRAME,
                "expected method frame, got non method frame instead",
            ));
        };
        if p.header.is_some() {
            return Err(AmqpError::new(
                ReplyCode::UNEXPECTED_FRAME,
                "expected content body, got non content body frame instead",
            ));
        }
        if class_id != 60 {
            return Err(AmqpError::new(
                ReplyCode::FRAME_ERROR,
                format!("content header for class {class_id}"),
            ));
        }
        if body_size > ctx.config.max_message_size {
            self.pending = None;
            return Err(AmqpError::new(
                ReplyCode::PRECONDITION_FAILED,
                format!(
                    "message size {body_size} is larger than configured max size {}",
                    ctx.config.max_message_size
                ),
            )
            .on(60, 40));
        }
        p.header = Some((body_size, properties, raw));
        if body_size == 0 {
            return self.finish_content(ctx);
        }
        Ok(())
    }

    pub(super) fn content_body(
        &mut self,
        ctx: &ChannelCtx<'_>,
        payload: Bytes,
    ) -> Result<(), AmqpError> {
        let Some(p) = self.pending.as_mut() else {
            return Err(AmqpError::new(
                ReplyCode::UNEXPECTED_FRAME,
                "expected method frame, got non method frame instead",
            ));
        };
        let Some((size, _, _)) = &p.header else {
            return Err(AmqpError::new(
                ReplyCode::UNEXPECTED_FRAME,
                "expected content header for class 60, got non content header frame instead",
            ));
        };
        let size = *size;
        let have = p.body.len() as u64 + p.single.as_ref().map_or(0, |b| b.len() as u64);
        if have + payload.len() as u64 > size {
            return Err(AmqpError::new(
                ReplyCode::FRAME_ERROR,
                "content body larger than declared in its header",
            ));
        }
        // One frame is the common case: keep it as the zero-copy slice.
        if p.single.is_none() && p.body.is_empty() && payload.len() as u64 == size {
            p.single = Some(payload);
        } else {
            if let Some(first) = p.single.take() {
                p.body.reserve(size as usize);
                p.body.extend_from_slice(&first);
            } else if p.body.is_empty() {
                p.body.reserve(size as usize);
            }
            p.body.extend_from_slice(&payload);
        }
        let have = p.body.len() as u64 + p.single.as_ref().map_or(0, |b| b.len() as u64);
        if have == size {
            return self.finish_content(ctx);
        }
        Ok(())
    }

    fn finish_content(&mut self, ctx: &ChannelCtx<'_>) -> Result<(), AmqpError> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let Some((_, props, raw)) = p.header else {
            return Ok(());
        };
        let body = match p.single {
            Some(b) => b,
            None => p.body.freeze(),
        };
        if let Some(uid) = props.user_id() {
            if uid.as_str() != ctx.user {
                return Err(AmqpError::new(
                    ReplyCode::PRECONDITION_FAILED,
                    format!(
                        "user_id property set to '{}' but authenticated user was '{}'",
                        uid.as_str(),
                        ctx.user
                    ),
                )
                .on(60, 40));
            }
        }
        if let Some(exp) = props.expiration() {
            if let Err(reason) = ferry_core::message::parse_expiration(exp.as_str()) {
                return Err(AmqpError::new(
                    ReplyCode::PRECONDITION_FAILED,
                    format!("invalid expiration '{}': {reason}", exp.as_str()),
                )
                .on(60, 40));
            }
        }
        let msg = Arc::new(Message {
            exchange: p.exchange.clone(),
            routing_key: p.routing_key,
            properties: raw,
            body,
            persistent: *props.delivery_mode() == Some(2),
        });
        let mut queues = Vec::new();
        ctx.vhost
            .route(&p.exchange, &msg, props.headers().as_ref(), &mut queues)
            .map_err(|e| AmqpError::from(e).on(60, 40))?;
        if let Some(tx) = self.tx.as_mut() {
            tx.publishes.push((msg, queues, p.mandatory));
            return Ok(());
        }
        self.enqueue(msg, &queues, p.mandatory, None);
        Ok(())
    }

    /// Hands a routed message to its queues.
    fn enqueue(
        &self,
        msg: Arc<Message>,
        queues: &[Arc<Queue>],
        mandatory: bool,
        commit: Option<&Arc<CommitWaiter>>,
    ) {
        if queues.is_empty() && mandatory {
            self.outbox.send(Outbound::Return {
                channel: self.id,
                code: ReplyCode::NO_ROUTE.code(),
                text: "NO_ROUTE",
                message: msg.clone(),
            });
        }
        let tracker = self.confirms.as_ref();
        let seq = tracker.map(|t| t.register(queues.len() as u32));
        for q in queues {
            let token = match (tracker, seq, commit) {
                (Some(t), Some(s), _) => Some(ConfirmToken {
                    sink: t.clone(),
                    seq: s,
                }),
                (_, _, Some(w)) => {
                    *w.remaining.lock() += 1;
                    Some(ConfirmToken {
                        sink: w.clone(),
                        seq: 0,
                    })
                }
                _ => None,
            };
            let sink = token.as_ref().map(|t| (t.sink.clone(), t.seq));
            match q.publish(&msg, token) {
                Ok(Enqueued::Deferred) => {}
                Ok(Enqueued::Confirmed) => {
                    if let Some((s, n)) = sink {
                        s.confirmed(&[n]);
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %q.name(), error = %e, "publish failed");
                    if let Some((s, n)) = sink {
                        match e.kind() {
                            // Deleted meanwhile: as if unroutable.
                            ferry_core::ErrorKind::NotFound => s.confirmed(&[n]),
                            _ => s.failed(&[n]),
                        }
                    }
                }
            }
        }
    }

    pub(super) fn tx_commit(&mut self, _ctx: &ChannelCtx<'_>) -> Result<(), AmqpError> {
        let Some(buf) = self.tx.as_mut() else {
            return Err(AmqpError::new(
                ReplyCode::PRECONDITION_FAILED,
                "channel is not transactional",
            ));
        };
        let publishes = std::mem::take(&mut buf.publishes);
        let acks = std::mem::take(&mut buf.acks);
        // The +1 is released after all publishes are handed over, so the
        // commit-ok waits for every durable write of this transaction.
        let waiter = Arc::new(CommitWaiter {
            remaining: Mutex::new(1),
            channel: self.id,
            outbox: self.outbox.clone(),
        });
        for (msg, queues, mandatory) in publishes {
            self.enqueue(msg, &queues, mandatory, Some(&waiter));
        }
        let (requeue, settle): (Vec<TxAck>, Vec<TxAck>) = acks.into_iter().partition(|a| a.requeue);
        for (q, ids) in group_by_queue(settle.into_iter().map(|a| a.unacked).collect()) {
            q.settle(&ids).map_err(AmqpError::from)?;
        }
        for (q, ids) in group_by_queue(requeue.into_iter().map(|a| a.unacked).collect()) {
            q.requeue(&ids).map_err(AmqpError::from)?;
        }
        waiter.done(1);
        Ok(())
    }

    /// In a transaction, acks wait for the commit. Returns true if held.
    pub(super) fn hold_in_tx(&mut self, taken: &mut Vec<(u64, Unacked)>, requeue: bool) -> bool {
        let Some(buf) = self.tx.as_mut() else {
            return false;
        };
        buf.acks.extend(taken.drain(..).map(|(tag, unacked)| TxAck {
            tag,
            unacked,
            requeue,
        }));
        true
    }
}

//! The publishing side of a channel (`Publisher`): basic.publish's write
//! check, content assembly (method → header → body frames), routing,
//! mandatory returns, confirm mode (confirm.select, the `ConfirmTracker`)
//! and transactions (tx.*, publishes and acks held until tx.commit).

use super::confirms::ConfirmTracker;
use super::delivery::{ChannelShared, Unacked};
use super::reply_to::{self, ReplyTo};
use super::{group_by_queue, unimplemented, ChannelCtx, Out};
use crate::error::AmqpError;
use crate::outbox::Outbound;
use bytes::{Bytes, BytesMut};
use ferry_amqp::amq_protocol::protocol::{basic, confirm, tx};
use ferry_amqp::{AMQPClass, ReplyCode};
use ferry_auth::{Access, CompiledPermissions, Resource};
use ferry_model::Message;
use ferry_queue::queue::{ConfirmSink, ConfirmToken, Enqueued};
use ferry_queue::source::Source;
use parking_lot::Mutex;
use std::sync::Arc;

/// A publish waiting for its content.
#[derive(Debug)]
struct PendingContent {
    exchange: Arc<str>,
    routing_key: Arc<str>,
    mandatory: bool,
    /// (body size, props blob, raw properties: empty when they did not
    /// decode).
    header: Option<(u64, Bytes, Bytes)>,
    body: BytesMut,
    single: Option<Bytes>,
    /// The properties did not decode: RabbitMQ finds out (and closes the
    /// connection with 541) when the message is complete.
    undecodable: bool,
    /// More body than the header declared: as in RabbitMQ, the message
    /// never completes; further body frames are dropped and any other
    /// frame is UNEXPECTED_FRAME.
    overflow: bool,
}

impl PendingContent {
    /// RabbitMQ's answer to a frame other than the next content frame.
    fn unexpected_frame(&self) -> AmqpError {
        let text = if self.header.is_some() {
            "expected content body, got non content body frame instead"
        } else {
            "expected content header for class 60, got non content header frame instead"
        };
        AmqpError::new(ReplyCode::UNEXPECTED_FRAME, text).on(60, 40)
    }
}

/// An acknowledgement held back by a transaction.
#[derive(Debug)]
struct TxAck {
    tag: u64,
    unacked: Unacked,
    requeue: bool,
    /// nack/reject without requeue (dead-lettered), not an ack.
    reject: bool,
}

/// The queues and streams a message was routed to.
type Targets = Vec<Arc<dyn Source>>;

/// Work held back by a transaction until tx.commit.
#[derive(Debug, Default)]
struct TxBuffer {
    publishes: Vec<(Arc<Message>, Targets, bool)>,
    acks: Vec<TxAck>,
}

impl TxBuffer {
    /// Drops the publishes, returns the acks to undo.
    fn rollback(&mut self) -> Vec<(u64, Unacked)> {
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
    fn rejected(&self, seqs: &[u64]) {
        // A full replicated queue refused them (its leader decides):
        // handled, as `Enqueued::Rejected` in a transaction.
        self.done(seqs.len() as u64);
    }
}

/// A channel's publishing state: the publish being assembled, confirm
/// mode, the open transaction and the last exchange allowed.
#[derive(Debug, Default)]
pub(super) struct Publisher {
    pending: Option<PendingContent>,
    confirms: Option<Arc<ConfirmTracker>>,
    tx: Option<TxBuffer>,
    /// The last exchange basic.publish was allowed to write to, under
    /// which permissions (held, so the pointer cannot be reused).
    publish_ok: Option<(Arc<CompiledPermissions>, Arc<str>)>,
}

impl Publisher {
    /// Whether the channel is in confirm mode.
    pub(super) fn confirming(&self) -> bool {
        self.confirms.is_some()
    }

    /// Sends the confirms held since the last flush.
    pub(super) fn flush_confirms(&self) {
        if let Some(t) = &self.confirms {
            t.flush();
        }
    }

    /// Whether a publish is waiting for more content frames.
    pub(super) fn mid_content(&self) -> bool {
        self.pending.is_some()
    }

    /// A method frame arrived: an error while a publish waits for its
    /// content.
    pub(super) fn expect_method(&self) -> Result<(), AmqpError> {
        if let Some(p) = &self.pending {
            return Err(p.unexpected_frame());
        }
        Ok(())
    }

    /// Channel close: the unfinished publish is dropped.
    pub(super) fn drop_pending(&mut self) {
        self.pending = None;
    }

    /// basic.publish: the write check, then the wait for content.
    pub(super) fn start_publish(
        &mut self,
        ctx: &ChannelCtx<'_>,
        p: basic::Publish,
    ) -> Result<(), AmqpError> {
        self.check_publish(ctx, p.exchange.as_str())?;
        self.await_content(p)
    }

    /// basic.publish's write check. A publisher sends to one exchange over
    /// and over and a regular expression costs ~150 ns a message, so the
    /// last exchange allowed is remembered (until the permissions change).
    fn check_publish(&mut self, ctx: &ChannelCtx<'_>, exchange: &str) -> Result<(), AmqpError> {
        if !ctx.perms.runs_regex(Access::Write) {
            return ctx.check(Access::Write, Resource::Exchange(exchange));
        }
        if let Some((perms, x)) = &self.publish_ok {
            if Arc::ptr_eq(perms, ctx.perms) && **x == *exchange {
                return Ok(());
            }
        }
        ctx.check(Access::Write, Resource::Exchange(exchange))?;
        self.publish_ok = Some((ctx.perms.clone(), Arc::from(exchange)));
        Ok(())
    }

    fn await_content(&mut self, p: basic::Publish) -> Result<(), AmqpError> {
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
            undecodable: false,
            overflow: false,
        });
        Ok(())
    }

    /// A content header frame: (body size, props blob, raw properties).
    pub(super) fn content_header(
        &mut self,
        ctx: &ChannelCtx<'_>,
        out: &Out,
        reply: &ReplyTo,
        class_id: u16,
        (body_size, props, raw): (u64, Bytes, Bytes),
    ) -> Result<(), AmqpError> {
        let Some(p) = self.pending.as_mut() else {
            return Err(AmqpError::new(
                ReplyCode::UNEXPECTED_FRAME,
                "expected method frame, got non method frame instead",
            ));
        };
        if p.header.is_some() {
            return Err(p.unexpected_frame());
        }
        if class_id != 60 {
            return Err(AmqpError::new(
                ReplyCode::UNEXPECTED_FRAME,
                format!(
                    "expected content header for class 60, got one for class {class_id} instead"
                ),
            )
            .on(60, 40));
        }
        // Empty raw properties: the connection's mark for properties that
        // did not decode (a decodable list has at least its flags).
        p.undecodable = raw.is_empty();
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
        p.header = Some((body_size, props, raw));
        if body_size == 0 {
            return self.finish_content(ctx, out, reply);
        }
        Ok(())
    }

    /// A content body frame.
    pub(super) fn content_body(
        &mut self,
        ctx: &ChannelCtx<'_>,
        out: &Out,
        reply: &ReplyTo,
        payload: Bytes,
    ) -> Result<(), AmqpError> {
        let Some(p) = self.pending.as_mut() else {
            return Err(AmqpError::new(
                ReplyCode::UNEXPECTED_FRAME,
                "expected method frame, got non method frame instead",
            ));
        };
        let Some((size, _, _)) = &p.header else {
            return Err(p.unexpected_frame());
        };
        let size = *size;
        if p.overflow {
            return Ok(());
        }
        let have = p.body.len() as u64 + p.single.as_ref().map_or(0, |b| b.len() as u64);
        if have + payload.len() as u64 > size {
            // RabbitMQ counts the remaining size below zero and waits for
            // it to reach zero, which it never does.
            p.overflow = true;
            p.body = BytesMut::new();
            p.single = None;
            return Ok(());
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
            return self.finish_content(ctx, out, reply);
        }
        Ok(())
    }

    fn finish_content(
        &mut self,
        ctx: &ChannelCtx<'_>,
        out: &Out,
        reply: &ReplyTo,
    ) -> Result<(), AmqpError> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let Some((_, blob, _)) = p.header else {
            return Ok(());
        };
        if p.undecodable {
            return Err(AmqpError::new(ReplyCode::INTERNAL_ERROR, ""));
        }
        let body = match p.single {
            Some(b) => b,
            None => p.body.freeze(),
        };
        // What the channel reads of the properties, in one pass over the
        // blob the frame parser made.
        let facts = crate::properties::facts(&blob)
            .map_err(|e| AmqpError::new(ReplyCode::INTERNAL_ERROR, e.to_string()))?;
        // As RabbitMQ: the reply-to rewrite comes before the property checks.
        let blob = match reply.rewrite(ctx, &p.exchange, facts.reply_to.as_deref())? {
            Some(name) => crate::properties::with_reply_to(&blob, name.as_str().as_bytes())
                .map_err(|e| AmqpError::new(ReplyCode::INTERNAL_ERROR, e.to_string()))?,
            None => blob,
        };
        if let Some(uid) = &facts.user_id {
            if uid[..] != *ctx.user.as_bytes() && !ctx.impersonator {
                return Err(AmqpError::new(
                    ReplyCode::PRECONDITION_FAILED,
                    format!(
                        "user_id property set to '{}' but authenticated user was '{}'",
                        String::from_utf8_lossy(uid),
                        ctx.user
                    ),
                )
                .on(60, 40));
            }
        }
        let expiration_ms = match &facts.expiration {
            None => None,
            Some(exp) => {
                let exp = String::from_utf8_lossy(exp);
                match ferry_model::message::parse_expiration(&exp) {
                    Ok(ms) => Some(ms),
                    Err(reason) => {
                        return Err(AmqpError::new(
                            ReplyCode::PRECONDITION_FAILED,
                            ferry_model::message::invalid_expiration_text(&exp, &reason),
                        )
                        .on(60, 40));
                    }
                }
            }
        };
        let headers = facts.headers.as_ref();
        let mut msg = Message {
            exchange: p.exchange.clone(),
            routing_key: p.routing_key,
            properties: blob,
            body,
            persistent: facts.delivery_mode == Some(2),
            expiration_ms,
            bcc: Vec::new(),
        };
        let mut queues = Vec::new();
        // Routed by the headers as published (CC and BCC keys) ...
        ctx.vhost
            .route(&p.exchange, &msg, headers, &mut queues)
            .map_err(|e| AmqpError::from(e).on(60, 40))?;
        // ... stored and delivered without BCC, as RabbitMQ strips it (the
        // keys stay with the message: a dead letter is routed by them).
        if let Some(stripped) = crate::properties::without_bcc(&msg.properties, headers) {
            msg.bcc = ferry_route::bcc_keys(headers);
            msg.properties = stripped;
        }
        let msg = Arc::new(msg);
        if p.exchange.is_empty() {
            // The default exchange hands replies to reply consumers (routed
            // now, as RabbitMQ, even in a transaction); they count as
            // unroutable, so a mandatory reply comes back as NO_ROUTE.
            let cc = ferry_route::sender_selected_keys(headers).unwrap_or_default();
            reply_to::deliver_replies(ctx, std::iter::once(&*msg.routing_key).chain(cc), &msg);
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.publishes.push((msg, queues, p.mandatory));
            return Ok(());
        }
        self.enqueue(out, msg, &queues, p.mandatory, None);
        Ok(())
    }

    /// Hands a routed message to its queues.
    fn enqueue(
        &self,
        out: &Out,
        msg: Arc<Message>,
        queues: &[Arc<dyn Source>],
        mandatory: bool,
        commit: Option<&Arc<CommitWaiter>>,
    ) {
        if queues.is_empty() && mandatory {
            out.outbox.send(Outbound::Return {
                channel: out.id,
                code: ReplyCode::NO_ROUTE.code(),
                text: "NO_ROUTE",
                message: msg.clone(),
            });
        }
        let tracker = self.confirms.as_ref();
        // An unroutable publish is confirmed by the channel itself (one
        // report, held with the inline ones until the connection flushes).
        let seq = tracker.map(|t| t.register(queues.len() as u32));
        if let (Some(t), Some(s), true) = (tracker, seq, queues.is_empty()) {
            t.confirm_later(s);
        }
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
            // Confirmed on this thread: a tracker holds it until the
            // connection has handled what it read (one multiple ack for
            // the lot, as RabbitMQ coalesces); a commit counts it now.
            let confirm_now = |s: &Arc<dyn ConfirmSink>, n: u64| match (tracker, seq) {
                (Some(t), Some(seq)) => t.confirm_later(seq),
                _ => s.confirmed(&[n]),
            };
            match q.publish(&msg, token) {
                Ok(Enqueued::Deferred) => {}
                Ok(Enqueued::Confirmed) => {
                    if let Some((s, n)) = sink {
                        confirm_now(&s, n);
                    }
                }
                // A full queue with x-overflow reject-publish(-dlx): a
                // confirming publisher gets basic.nack (a transaction just
                // goes on: its commit does not fail for it in RabbitMQ).
                Ok(Enqueued::Rejected) => {
                    if let Some((s, n)) = sink {
                        if commit.is_some() {
                            s.confirmed(&[n]);
                        } else {
                            s.failed(&[n]);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %q.name(), error = %e, "publish failed");
                    if let Some((s, n)) = sink {
                        match e.kind() {
                            // Deleted meanwhile: as if unroutable.
                            ferry_queue::ErrorKind::NotFound => confirm_now(&s, n),
                            _ => s.failed(&[n]),
                        }
                    }
                }
            }
        }
    }

    fn tx_commit(&mut self, out: &Out) -> Result<(), AmqpError> {
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
            channel: out.id,
            outbox: out.outbox.clone(),
        });
        for (msg, queues, mandatory) in publishes {
            self.enqueue(out, msg, &queues, mandatory, Some(&waiter));
        }
        let (requeue, settle): (Vec<TxAck>, Vec<TxAck>) = acks.into_iter().partition(|a| a.requeue);
        let (reject, settle): (Vec<TxAck>, Vec<TxAck>) = settle.into_iter().partition(|a| a.reject);
        for (q, ids) in group_by_queue(settle.into_iter().map(|a| a.unacked).collect()) {
            q.settle(&ids).map_err(AmqpError::from)?;
        }
        for (q, ids) in group_by_queue(reject.into_iter().map(|a| a.unacked).collect()) {
            q.reject(&ids).map_err(AmqpError::from)?;
        }
        for (q, ids) in group_by_queue(requeue.into_iter().map(|a| a.unacked).collect()) {
            q.requeue(&ids).map_err(AmqpError::from)?;
        }
        waiter.done(1);
        Ok(())
    }

    /// confirm.select.
    pub(super) fn confirm_select(
        &mut self,
        out: &Out,
        shared: &ChannelShared,
        nowait: bool,
    ) -> Result<(), AmqpError> {
        if self.tx.is_some() {
            return Err(AmqpError::new(
                ReplyCode::PRECONDITION_FAILED,
                "cannot switch from tx to confirm mode",
            ));
        }
        if self.confirms.is_none() {
            self.confirms = Some(Arc::new(ConfirmTracker::new(out.id, out.outbox.clone())));
            shared.info.set_confirm();
        }
        if !nowait {
            out.method(AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(
                confirm::SelectOk {},
            )));
        }
        Ok(())
    }

    /// tx.select, tx.commit, tx.rollback.
    pub(super) fn tx_method(
        &mut self,
        out: &Out,
        shared: &ChannelShared,
        m: tx::AMQPMethod,
    ) -> Result<(), AmqpError> {
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
                    shared.info.set_tx();
                }
                out.method(AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
                Ok(())
            }
            tx::AMQPMethod::Commit(_) => self.tx_commit(out),
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
                shared.restore(acks);
                out.method(AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})));
                Ok(())
            }
            _ => Err(unimplemented()),
        }
    }

    /// Channel close: an open transaction is discarded (its acks undone).
    pub(super) fn discard_tx(&mut self, shared: &ChannelShared) {
        if let Some(mut tx) = self.tx.take() {
            let acks = tx.rollback();
            shared.restore(acks);
        }
    }

    /// In a transaction, acks wait for the commit. Returns true if held.
    /// `requeue` as for `settle_tags`: None = ack.
    pub(super) fn hold_in_tx(
        &mut self,
        taken: &mut Vec<(u64, Unacked)>,
        requeue: Option<bool>,
    ) -> bool {
        let Some(buf) = self.tx.as_mut() else {
            return false;
        };
        buf.acks.extend(taken.drain(..).map(|(tag, unacked)| TxAck {
            tag,
            unacked,
            requeue: requeue == Some(true),
            reject: requeue == Some(false),
        }));
        true
    }
}

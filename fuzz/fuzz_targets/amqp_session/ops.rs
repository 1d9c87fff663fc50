//! Running one fuzz op: the client side of every method (encoded and
//! written to the connection), raw frames, injected failures, reconnects,
//! restarts and power cuts.

use super::*;

impl Harness {
    /// Runs one op; false if the run cannot go on.
    pub(crate) fn run(&mut self, op: &Op) -> bool {
        if let Some(ch) = op.channel() {
            self.ensure_open(ch);
        }
        match op {
            Op::Open(c) => {
                let ch = c.get();
                // Opening an open channel is a connection error: now and then.
                if !self.is_open(ch) || c.0 >= 0xF0 {
                    self.send_method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
                    );
                }
            }
            Op::Close(ch) => {
                let ch = ch.get();
                self.send_method(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                        reply_code: 200,
                        reply_text: short("bye"),
                        class_id: 0,
                        method_id: 0,
                    })),
                );
            }
            Op::CloseOk(ch) => {
                self.send_method(
                    ch.get(),
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
            }
            Op::ExchangeDeclare {
                ch,
                name,
                kind,
                flags,
                args,
            } => {
                self.send_method(
                    ch.get(),
                    AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                        exchange: short(pick(EXCHANGES, *name)),
                        kind: short(exchange_kind(*kind)),
                        passive: flags & 0x41 == 0x41,
                        durable: flags & 2 != 0,
                        auto_delete: flags & 4 != 0,
                        internal: flags & 0x88 == 0x88,
                        nowait: flags & 16 != 0,
                        arguments: args.0.clone(),
                    })),
                );
            }
            Op::ExchangeDelete {
                ch,
                name,
                if_unused,
                nowait,
            } => {
                self.send_method(
                    ch.get(),
                    AMQPClass::Exchange(exchange::AMQPMethod::Delete(exchange::Delete {
                        exchange: short(pick(EXCHANGES, *name)),
                        if_unused: *if_unused,
                        nowait: *nowait,
                    })),
                );
            }
            Op::ExchangeBind {
                ch,
                dest,
                src,
                key,
                args,
                unbind,
                nowait,
            } => {
                let (destination, source) =
                    (short(pick(EXCHANGES, *dest)), short(pick(EXCHANGES, *src)));
                let routing_key = short(&key.0);
                let m = if *unbind {
                    exchange::AMQPMethod::Unbind(exchange::Unbind {
                        destination,
                        source,
                        routing_key,
                        nowait: *nowait,
                        arguments: args.0.clone(),
                    })
                } else {
                    exchange::AMQPMethod::Bind(exchange::Bind {
                        destination,
                        source,
                        routing_key,
                        nowait: *nowait,
                        arguments: args.0.clone(),
                    })
                };
                self.send_method(ch.get(), AMQPClass::Exchange(m));
            }
            Op::QueueDeclare {
                ch,
                name,
                flags,
                args,
            } => {
                self.send_method(
                    ch.get(),
                    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                        queue: short(pick(QUEUES, *name)),
                        passive: flags & 0x41 == 0x41,
                        durable: flags & 2 != 0,
                        exclusive: flags & 4 != 0,
                        auto_delete: flags & 8 != 0,
                        nowait: flags & 16 != 0,
                        arguments: args.0.clone(),
                    })),
                );
            }
            Op::QueueBind {
                ch,
                queue: q,
                exchange: x,
                key,
                args,
                unbind,
            } => {
                let (queue, exchange) = (short(pick(QUEUES, *q)), short(pick(EXCHANGES, *x)));
                let routing_key = short(&key.0);
                let m = if *unbind {
                    queue::AMQPMethod::Unbind(queue::Unbind {
                        queue,
                        exchange,
                        routing_key,
                        arguments: args.0.clone(),
                    })
                } else {
                    queue::AMQPMethod::Bind(queue::Bind {
                        queue,
                        exchange,
                        routing_key,
                        nowait: false,
                        arguments: args.0.clone(),
                    })
                };
                self.send_method(ch.get(), AMQPClass::Queue(m));
            }
            Op::QueuePurge {
                ch,
                queue: q,
                nowait,
            } => {
                self.send_method(
                    ch.get(),
                    AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
                        queue: short(pick(QUEUES, *q)),
                        nowait: *nowait,
                    })),
                );
            }
            Op::QueueDelete {
                ch,
                queue: q,
                flags,
            } => {
                self.send_method(
                    ch.get(),
                    AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                        queue: short(pick(QUEUES, *q)),
                        if_unused: flags & 1 != 0,
                        if_empty: flags & 2 != 0,
                        nowait: flags & 4 != 0,
                    })),
                );
            }
            Op::Qos {
                ch,
                prefetch,
                global,
            } => {
                self.send_method(
                    ch.get(),
                    AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                        prefetch_count: u16::from(*prefetch % 8),
                        global: *global,
                    })),
                );
            }
            Op::Consume {
                ch,
                queue: q,
                tag,
                flags,
                args,
            } => {
                self.send_method(
                    ch.get(),
                    AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                        queue: short(pick(QUEUES, *q)),
                        consumer_tag: short(pick(TAGS, *tag)),
                        no_local: flags & 1 != 0,
                        no_ack: flags & 2 != 0,
                        exclusive: flags & 4 != 0,
                        nowait: flags & 8 != 0,
                        arguments: args.0.clone(),
                    })),
                );
            }
            Op::Cancel { ch, tag, nowait } => {
                self.send_method(
                    ch.get(),
                    AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                        consumer_tag: short(pick(TAGS, *tag)),
                        nowait: *nowait,
                    })),
                );
            }
            Op::Get {
                ch,
                queue: q,
                no_ack,
            } => {
                self.send_method(
                    ch.get(),
                    AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                        queue: short(pick(QUEUES, *q)),
                        no_ack: *no_ack,
                    })),
                );
            }
            Op::Ack { ch, tag, multiple } => {
                self.send_method(
                    ch.get(),
                    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: delivery_tag(*tag),
                        multiple: *multiple,
                    })),
                );
            }
            Op::Nack {
                ch,
                tag,
                multiple,
                requeue,
            } => {
                self.send_method(
                    ch.get(),
                    AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: delivery_tag(*tag),
                        multiple: *multiple,
                        requeue: *requeue,
                    })),
                );
            }
            Op::Reject { ch, tag, requeue } => {
                self.send_method(
                    ch.get(),
                    AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
                        delivery_tag: delivery_tag(*tag),
                        requeue: *requeue,
                    })),
                );
            }
            Op::Recover { ch, requeue, reply } => {
                let requeue = *requeue != 255;
                let m = if *reply {
                    basic::AMQPMethod::Recover(basic::Recover { requeue })
                } else {
                    basic::AMQPMethod::RecoverAsync(basic::RecoverAsync { requeue })
                };
                self.send_method(ch.get(), AMQPClass::Basic(m));
            }
            Op::Publish {
                ch,
                exchange: x,
                key,
                mandatory,
                immediate,
                props,
                body,
                chunk,
                extra,
            } => self.publish(
                ch.get(),
                pick(EXCHANGES, *x),
                &key.0,
                (*mandatory, *immediate == 255),
                props,
                body,
                *chunk,
                extra.checked_sub(239),
            ),
            Op::PublishMethodOnly(ch, x) => {
                let ch = ch.get();
                self.mark_unknown(ch);
                self.send_method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                        exchange: short(pick(EXCHANGES, *x)),
                        routing_key: short("q"),
                        mandatory: true,
                        immediate: false,
                    })),
                );
            }
            Op::HeaderOnly(ch, size) => {
                let ch = ch.get();
                self.mark_unknown(ch);
                let raw = encode_properties(&BasicProperties::default()).expect("properties");
                let mut buf = BytesMut::new();
                header_frame(&mut buf, ch, u64::from(*size % 64), &raw);
                self.send_bytes(&buf);
            }
            Op::BodyOnly(ch, body) => {
                let ch = ch.get();
                self.mark_unknown(ch);
                let mut buf = BytesMut::new();
                body_frame(&mut buf, ch, body);
                self.send_bytes(&buf);
            }
            Op::ConfirmSelect(ch, nowait) => {
                let ch = ch.get();
                self.send_method(
                    ch,
                    AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                        nowait: *nowait,
                    })),
                );
                if self.is_open(ch) {
                    if let Some(t) = self.track(ch) {
                        t.confirm = true;
                    }
                }
            }
            Op::TxSelect(ch) => {
                let ch = ch.get();
                self.send_method(ch, AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})));
                if self.is_open(ch) {
                    if let Some(t) = self.track(ch) {
                        t.tx = true;
                    }
                }
            }
            Op::TxCommit(ch) => {
                let ch = ch.get();
                let was_tx = self.is_open(ch) && self.track(ch).is_some_and(|t| t.tx && !t.unknown);
                // Owed before the method runs: commit-ok may be sent at once.
                if was_tx {
                    if let Some(t) = self.track(ch) {
                        t.commit_oks += 1;
                    }
                }
                self.send_method(ch, AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {})));
                if was_tx && !self.is_open(ch) {
                    // The commit failed and closed the channel: nothing owed.
                    if let Some(t) = self.track(ch) {
                        t.commit_oks = 0;
                    }
                }
            }
            Op::TxRollback(ch) => {
                self.send_method(
                    ch.get(),
                    AMQPClass::Tx(tx::AMQPMethod::Rollback(tx::Rollback {})),
                );
            }
            Op::Flow(ch, active) => {
                self.send_method(
                    ch.get(),
                    AMQPClass::Channel(channel::AMQPMethod::Flow(channel::Flow {
                        active: *active != 255,
                    })),
                );
            }
            Op::Heartbeat(ch) => {
                let mut buf = BytesMut::new();
                buf.put_u8(8);
                buf.put_u16(ch.get());
                buf.put_u32(0);
                buf.put_u8(0xCE);
                self.send_bytes(&buf);
            }
            Op::Raw(bytes) => {
                for ch in 1..=3 {
                    self.mark_unknown(ch);
                }
                self.raw = true;
                self.send_bytes(bytes);
                self.raw = false;
            }
            Op::FailNextWrite => {
                self.io.fail_next_write();
                self.fault_pending = true;
            }
            Op::FailNextSync => {
                self.io.fail_next_sync();
                self.fault_pending = true;
            }
            Op::Setup(ch, which) => {
                for op in Op::setup(*ch, *which) {
                    if !self.run(&op) {
                        return false;
                    }
                }
            }
            Op::Reconnect => self.reconnect(),
            Op::Restart(crash) => return self.restart(*crash),
        }
        true
    }

    pub(crate) fn mark_unknown(&mut self, ch: u16) {
        if let Some(t) = self.track(ch) {
            t.unknown = true;
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn publish(
        &mut self,
        ch: u16,
        exchange: &str,
        key: &str,
        (mandatory, immediate): (bool, bool),
        props: &Props,
        body: &[u8],
        chunk: u16,
        extra: Option<u8>,
    ) {
        let frame_max = self.frame_max();
        let properties = props.build(frame_max);
        let Ok(raw) = encode_properties(&properties) else {
            return;
        };
        let mut buf = BytesMut::new();
        let method = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: short(exchange),
            routing_key: short(key),
            mandatory,
            immediate,
        }));
        encode_method(&mut buf, ch, &method).expect("publish method");
        header_frame(&mut buf, ch, body.len() as u64, &raw);
        let max_chunk = frame_max as usize; // check_frame's limit on payloads
        let chunk = (usize::from(chunk) % max_chunk).max(1);
        let mut sent = body.to_vec();
        if let Some(n) = extra {
            sent.extend(std::iter::repeat_n(0xAB, usize::from(n) + 1));
        }
        for piece in sent.chunks(chunk) {
            body_frame(&mut buf, ch, piece);
        }
        self.published
            .insert(message_hash(exchange, key, &raw, body));
        if extra.is_some() {
            // Whether the message completed before the surplus arrived
            // depends on the split; stop counting this channel's publishes.
            self.mark_unknown(ch);
        }
        let counted = self.is_open(ch)
            && extra.is_none()
            && self
                .track(ch)
                .is_some_and(|t| t.confirm && !t.tx && !t.unknown);
        // Owed before the bytes go: the confirm may come back at once. If
        // the publish closes the channel, its track is done with.
        if counted {
            if let Some(t) = self.track(ch) {
                t.expected += 1;
            }
        }
        self.send_bytes(&buf);
    }
}

pub(crate) fn delivery_tag(t: u8) -> u64 {
    match t {
        250 => u64::MAX,
        251 => 1 << 32,
        n => u64::from(n % 16),
    }
}

pub(crate) fn header_frame(buf: &mut BytesMut, ch: u16, body_size: u64, raw: &[u8]) {
    buf.put_u8(2);
    buf.put_u16(ch);
    buf.put_u32((12 + raw.len()) as u32);
    buf.put_u16(60);
    buf.put_u16(0);
    buf.put_u64(body_size);
    buf.put_slice(raw);
    buf.put_u8(0xCE);
}

pub(crate) fn body_frame(buf: &mut BytesMut, ch: u16, body: &[u8]) {
    buf.put_u8(3);
    buf.put_u16(ch);
    buf.put_u32(body.len() as u32);
    buf.put_slice(body);
    buf.put_u8(0xCE);
}

//! The checks on what the server writes to the client's end of the pipe:
//! frames well-formed and within frame_max, content whole and never
//! interleaved, delivery tags in order, only published messages
//! delivered, every confirm-mode publish confirmed exactly once; and the
//! client's view of which channels are open, taken from the same frames.

use super::*;

impl Harness {
    /// One frame the server wrote, in order.
    pub(crate) fn check_server_frame(&mut self, raw: Bytes) -> Seen {
        let frame_max = self.frame_max() as usize;
        let len = raw.len();
        let frame = match parse_frame(raw) {
            Ok(f) => f,
            Err(e) => panic!("the server wrote a frame that does not parse: {e}"),
        };
        // A content header cannot be split: it may exceed frame_max by
        // what RabbitMQ's 8-byte allowance let the publisher send.
        let limit = match frame {
            Frame::Header { .. } => frame_max + 8,
            _ => frame_max,
        };
        assert!(
            len <= limit,
            "server frame of {len} bytes, frame_max {frame_max}"
        );
        let ch = frame.channel();
        if let Some(c) = &self.conn().content {
            let expecting_header = c.header.is_none();
            match &frame {
                Frame::Header { .. } if expecting_header && c.channel == ch => {}
                Frame::Body { .. } if !expecting_header && c.channel == ch => {}
                other => panic!(
                    "the server sent {other:?} in the middle of content for {:?} \
                     (a delivery without its message?)",
                    c.method
                ),
            }
        }
        match frame {
            Frame::Method { method, .. } => return self.check_server_method(ch, method),
            Frame::Header {
                body_size,
                raw_properties,
                ..
            } => {
                let Some(c) = self.conn().content.as_mut() else {
                    panic!("content header without a deliver / get-ok / return");
                };
                c.header = Some((body_size, raw_properties));
                self.finish_content_if_complete();
            }
            Frame::Body { payload, .. } => {
                let Some(c) = self.conn().content.as_mut() else {
                    panic!("content body without a deliver / get-ok / return");
                };
                c.body.extend_from_slice(&payload);
                self.finish_content_if_complete();
            }
            Frame::Heartbeat { .. } => panic!("heartbeat with heartbeats off"),
        }
        Seen::Frame
    }

    pub(crate) fn check_server_method(&mut self, ch: u16, m: AMQPClass) -> Seen {
        let content = |method: &'static str, exchange: &ShortString, key: &ShortString| {
            Some(ServerContent {
                channel: ch,
                method,
                exchange: exchange.to_string(),
                key: key.to_string(),
                header: None,
                body: Vec::new(),
            })
        };
        match &m {
            AMQPClass::Basic(basic::AMQPMethod::Deliver(d)) => {
                self.stats.deliveries += 1;
                self.check_delivery_tag(ch, d.delivery_tag);
                self.conn().content = content("deliver", &d.exchange, &d.routing_key);
            }
            AMQPClass::Basic(basic::AMQPMethod::GetOk(g)) => {
                self.stats.gets += 1;
                self.check_delivery_tag(ch, g.delivery_tag);
                self.conn().content = content("get-ok", &g.exchange, &g.routing_key);
            }
            AMQPClass::Basic(basic::AMQPMethod::Return(r)) => {
                self.stats.returns += 1;
                self.conn().content = content("return", &r.exchange, &r.routing_key);
            }
            AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => {
                self.stats.acks += 1;
                self.check_confirm(ch, true, a.delivery_tag, a.multiple);
            }
            AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => {
                self.stats.nacks += 1;
                assert!(!n.requeue, "the server sets requeue on a nack");
                self.check_confirm(ch, false, n.delivery_tag, n.multiple);
            }
            AMQPClass::Tx(tx::AMQPMethod::CommitOk(_)) => {
                self.stats.commit_oks += 1;
                if let Some(t) = self.track(ch).filter(|t| !t.unknown) {
                    assert!(t.commit_oks > 0, "tx.commit-ok nobody asked for");
                    t.commit_oks -= 1;
                }
            }
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)) => {
                // A new incarnation of the channel: what the previous one
                // was sent came before on the wire.
                let unknown = self.raw;
                let conn = self.conn();
                conn.open.insert(ch);
                conn.track.insert(
                    ch,
                    Track {
                        unknown,
                        ..Track::default()
                    },
                );
            }
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                self.stats.channel_closes += 1;
                let conn = self.conn();
                conn.open.remove(&ch);
                conn.closing.insert(ch);
            }
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                self.conn().open.remove(&ch);
            }
            AMQPClass::Connection(m) if ch == 0 => {
                return match m {
                    connection::AMQPMethod::UpdateSecretOk(_) => Seen::SecretOk,
                    connection::AMQPMethod::Close(c) => {
                        if ferry_fuzz::debug() {
                            eprintln!("connection closed: {} {}", c.reply_code, c.reply_text);
                        }
                        Seen::Close
                    }
                    connection::AMQPMethod::CloseOk(_) => Seen::CloseOk,
                    other => panic!("unexpected connection method from the server: {other:?}"),
                }
            }
            _ => {}
        }
        Seen::Frame
    }

    pub(crate) fn finish_content_if_complete(&mut self) {
        let Some(c) = self.conn.as_ref().and_then(|c| c.content.as_ref()) else {
            return;
        };
        let Some((size, props)) = &c.header else {
            return;
        };
        assert!(
            c.body.len() as u64 <= *size,
            "the server sent more body than its header declared"
        );
        if c.body.len() as u64 == *size {
            let h = message_hash(&c.exchange, &c.key, props, &c.body);
            assert!(
                self.published.contains(&h),
                "the server sent ({}) a message nobody published: {c:?}",
                c.method
            );
            self.conn().content = None;
        }
    }

    pub(crate) fn check_delivery_tag(&mut self, ch: u16, tag: u64) {
        if let Some(t) = self.track(ch) {
            assert_eq!(tag, t.dtag, "delivery tags out of sequence on channel {ch}");
            t.dtag += 1;
        }
    }

    pub(crate) fn check_confirm(&mut self, ch: u16, ack: bool, tag: u64, multiple: bool) {
        let Some(t) = self.track(ch) else { return };
        if !t.confirm || t.unknown {
            return;
        }
        assert!(
            tag >= 1 && tag <= t.expected,
            "confirm for publish {tag} of {} on channel {ch}",
            t.expected
        );
        if multiple {
            assert!(ack, "the server never sends multiple nacks");
            // Covers the publishes from the first unresolved one up to the
            // tag, none of them resolved before (read strictly, so each
            // publish is confirmed exactly once however a client reads it).
            let mut floor = 0;
            while t.resolved.contains(&(floor + 1)) {
                floor += 1;
            }
            assert!(
                floor < tag,
                "multiple ack {tag} on channel {ch} confirms nothing new"
            );
            for p in floor + 1..=tag {
                assert!(
                    t.resolved.insert(p),
                    "publish {p} on channel {ch} confirmed twice (multiple ack {tag})"
                );
            }
        } else {
            assert!(
                t.resolved.insert(tag),
                "publish {tag} on channel {ch} confirmed twice (ack={ack})"
            );
        }
    }

    /// End of a step: sync every queue (releasing deferred confirms), let
    /// the server answer marker round trips until one brings nothing more
    /// (held confirms go out once the connection waits for input; drained
    /// sockets resume deliveries), then check what is owed was sent.
    pub(crate) fn settle(&mut self) {
        for q in self.vhost.queues() {
            q.sync_now();
        }
        loop {
            match self.round_trip() {
                Trip::Quiet => break,
                Trip::Busy => {}
                Trip::Gone => return,
            }
        }
        let conn = self.conn();
        for (ch, t) in &conn.track {
            if !conn.open.contains(ch) {
                continue;
            }
            if t.confirm && !t.unknown {
                let want: BTreeSet<u64> = (1..=t.expected).collect();
                assert!(
                    t.resolved == want,
                    "channel {ch}: {} publishes, confirmed {:?}",
                    t.expected,
                    t.resolved
                );
            }
            if !t.unknown {
                assert_eq!(t.commit_oks, 0, "channel {ch}: tx.commit-ok missing");
            }
        }
    }
}

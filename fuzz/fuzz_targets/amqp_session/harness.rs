//! The harness state: connections, channel tracking, the broker, and the
//! plumbing that feeds client frames in and reads server frames back.

use super::*;

// ----- the harness ---------------------------------------------------------

/// What the harness knows about one channel incarnation.
#[derive(Debug)]
pub(crate) struct Track {
    pub(crate) confirm: bool,
    pub(crate) tx: bool,
    /// Raw content pieces were sent: stop counting publishes.
    pub(crate) unknown: bool,
    /// Publishes that must be confirmed.
    pub(crate) expected: u64,
    /// Tags acked (individually or by a multiple ack) or nacked.
    pub(crate) resolved: BTreeSet<u64>,
    /// commit-oks still owed.
    pub(crate) commit_oks: u32,
    /// Next delivery tag.
    pub(crate) dtag: u64,
}

impl Default for Track {
    fn default() -> Self {
        Track {
            confirm: false,
            tx: false,
            unknown: false,
            expected: 0,
            resolved: BTreeSet::new(),
            commit_oks: 0,
            dtag: 1,
        }
    }
}

pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) outbox: Outbox,
    /// The client's end of the pipe the writer task writes to.
    pub(crate) client: DuplexStream,
    pub(crate) writer: Option<tokio::task::JoinHandle<()>>,
    /// Bytes read and not yet cut into frames.
    pub(crate) out: BytesMut,
    /// A deliver / get-ok / return whose content is being read.
    pub(crate) content: Option<ServerContent>,
    pub(crate) channels: HashMap<u16, Channel>,
    pub(crate) closing: HashSet<u16>,
    pub(crate) track: HashMap<u16, Track>,
}

/// Content the server is sending, as a client reads it.
#[derive(Debug)]
pub(crate) struct ServerContent {
    pub(crate) channel: u16,
    pub(crate) method: &'static str,
    pub(crate) exchange: String,
    pub(crate) key: String,
    pub(crate) header: Option<(u64, Bytes)>,
    pub(crate) body: Vec<u8>,
}

/// Queued after everything else to see when the writer is through: a
/// heartbeat, which the writer never sends itself with heartbeats off.
pub(crate) const MARKER: [u8; 8] = [8, 0, 0, 0, 0, 0, 0, 0xCE];

/// One runtime for all runs; the writer tasks run only inside `block_on`.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

pub(crate) type Assembling = (String, String, Option<(u64, Bytes)>, Vec<u8>);

pub(crate) struct Harness {
    pub(crate) io: SimIo,
    pub(crate) broker_cfg: BrokerConfig,
    pub(crate) server: ServerConfig,
    /// Direct reply-to consumers (shared by connections, as in the server).
    pub(crate) replies: ferry_server::channel::reply_to::Replies,
    pub(crate) broker: Arc<Broker>,
    pub(crate) vhost: Arc<VHost>,
    /// The user's permissions on `/`, as the connection would hold them.
    pub(crate) perms: Arc<CompiledPermissions>,
    pub(crate) conn: Conn,
    pub(crate) next_conn: u64,
    pub(crate) published: HashSet<u64>,
    /// Content being assembled per channel: exchange, key, header, body.
    pub(crate) assembling: HashMap<u16, Assembling>,
    /// A failure was injected and maybe not consumed yet.
    pub(crate) fault_pending: bool,
    /// Raw bytes are being sent (what they do is not modelled).
    pub(crate) raw: bool,
    /// What happened, for `FERRY_FUZZ_DEBUG` (how deep the fuzzer gets).
    pub(crate) stats: Stats,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) deliveries: u32,
    pub(crate) gets: u32,
    pub(crate) returns: u32,
    pub(crate) acks: u32,
    pub(crate) nacks: u32,
    pub(crate) commit_oks: u32,
    pub(crate) channel_closes: u32,
    pub(crate) restarts: u32,
    pub(crate) crash_restarts: u32,
    pub(crate) reconnects: u32,
}

pub(crate) fn message_hash(exchange: &str, key: &str, props: &[u8], body: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    (exchange, key, props, body).hash(&mut h);
    h.finish()
}

pub(crate) fn short(s: &str) -> ShortString {
    s.into()
}

pub(crate) enum Step {
    Continue,
    /// The connection ended (client close or a hard error).
    ConnectionGone,
}

/// What `connection.rs` looks up after the handshake.
fn permissions(broker: &Broker) -> Arc<CompiledPermissions> {
    broker
        .permissions_for(USER, "/")
        .unwrap_or_else(|| Arc::new(CompiledPermissions::deny_all()))
}

impl Harness {
    pub(crate) fn new(input: &Input) -> Option<Harness> {
        let io = SimIo::new();
        let broker_cfg = BrokerConfig {
            data_dir: PathBuf::from("/data"),
            log: LogConfig {
                segment_bytes: 4096,
                index_interval_bytes: 256,
                first_index: 0,
            },
            cache_bytes: 8192,
            ..BrokerConfig::new(PathBuf::from("/data"))
        };
        let server = ServerConfig {
            frame_max: if input.big_frames { 131_072 } else { 4096 },
            socket_buffer_limit: if input.small_socket_buffer {
                2048
            } else {
                4 << 20
            },
            max_message_size: 64 * 1024,
            ..ServerConfig::default()
        };
        let broker = Broker::open(broker_cfg.clone(), io.shared()).ok()?;
        let vhost = broker.vhost("/").ok()?;
        let perms = permissions(&broker);
        let conn = Conn::new(1, &server);
        Some(Harness {
            io,
            broker_cfg,
            server,
            replies: Default::default(),
            broker,
            vhost,
            perms,
            conn,
            next_conn: 2,
            published: HashSet::new(),
            assembling: HashMap::new(),
            fault_pending: false,
            raw: false,
            stats: Stats::default(),
        })
    }

    pub(crate) fn frame_max(&self) -> u32 {
        self.server.frame_max
    }

    /// Sends client frames (already encoded) through the server's framing
    /// loop and dispatch. Returns false once the connection is gone.
    pub(crate) fn send_bytes(&mut self, bytes: &[u8]) -> bool {
        let stream = Bytes::copy_from_slice(bytes);
        let mut at = 0;
        loop {
            match check_frame(&stream[at..], self.frame_max()) {
                Ok(Some(len)) => {
                    let frame = stream.slice(at..at + len);
                    at += len;
                    let frame = match parse_frame(frame) {
                        Ok(f) => f,
                        Err(e) => {
                            let e: AmqpError = e.into();
                            if ferry_fuzz::debug() {
                                eprintln!("connection error: {}", e.text);
                            }
                            self.reconnect();
                            return false;
                        }
                    };
                    if let Step::ConnectionGone = self.dispatch(frame) {
                        self.reconnect();
                        return false;
                    }
                }
                // Half a frame: the connection would wait for the rest; the
                // next op's bytes would follow it, so drop the connection to
                // keep ops independent.
                Ok(None) if at < stream.len() => {
                    self.reconnect();
                    return false;
                }
                Ok(None) => return true,
                Err(e) => {
                    let _: AmqpError = e.into();
                    self.reconnect();
                    return false;
                }
            }
        }
    }

    pub(crate) fn send_method(&mut self, ch: u16, m: AMQPClass) -> bool {
        let mut buf = BytesMut::new();
        encode_method(&mut buf, ch, &m).expect("encoding a client method");
        self.send_bytes(&buf)
    }

    /// Notes the messages a client's frames make up (whatever the server
    /// decides about them), for `check_message`.
    pub(crate) fn note_content(&mut self, frame: &Frame) {
        let ch = frame.channel();
        match frame {
            Frame::Method {
                method: AMQPClass::Basic(basic::AMQPMethod::Publish(p)),
                ..
            } => {
                self.assembling.insert(
                    ch,
                    (
                        p.exchange.to_string(),
                        p.routing_key.to_string(),
                        None,
                        Vec::new(),
                    ),
                );
            }
            Frame::Header {
                body_size,
                raw_properties,
                ..
            } => {
                if let Some(a) = self.assembling.get_mut(&ch) {
                    a.2 = Some((*body_size, raw_properties.clone()));
                }
            }
            Frame::Body { payload, .. } => {
                if let Some(a) = self.assembling.get_mut(&ch) {
                    a.3.extend_from_slice(payload);
                }
            }
            _ => return,
        }
        if let Some((x, k, Some((size, raw)), body)) = self.assembling.get(&ch) {
            if body.len() as u64 >= *size {
                let body = &body[..*size as usize];
                self.published.insert(message_hash(x, k, raw, body));
                self.assembling.remove(&ch);
            }
        }
    }

    /// `connection.rs`'s `Conn::handle`, minus the socket.
    pub(crate) fn dispatch(&mut self, frame: Frame) -> Step {
        self.note_content(&frame);
        let ch = frame.channel();
        if ch == 0 {
            return match frame {
                Frame::Heartbeat { .. } => Step::Continue,
                Frame::Method {
                    method: AMQPClass::Connection(connection::AMQPMethod::Blocked(_)),
                    ..
                }
                | Frame::Method {
                    method: AMQPClass::Connection(connection::AMQPMethod::Unblocked(_)),
                    ..
                } => Step::Continue,
                _ => Step::ConnectionGone,
            };
        }
        if let Frame::Heartbeat { .. } = frame {
            return Step::ConnectionGone;
        }
        if let Frame::Method {
            method: AMQPClass::Channel(channel::AMQPMethod::Open(_)),
            ..
        } = &frame
        {
            // What the previous incarnation of this channel was sent comes
            // first on the wire: read it before the new one's state starts.
            if !self.is_open(ch) && !self.conn.closing.contains(&ch) {
                self.drain();
            }
        }
        let conn = &mut self.conn;
        if conn.closing.contains(&ch) {
            match frame {
                Frame::Method {
                    method: AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)),
                    ..
                } => {
                    conn.closing.remove(&ch);
                }
                Frame::Method {
                    method: AMQPClass::Channel(channel::AMQPMethod::Close(_)),
                    ..
                } => conn.outbox.method(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                ),
                _ => {}
            }
            return Step::Continue;
        }
        if !conn.channels.contains_key(&ch) {
            return match frame {
                Frame::Method {
                    method: AMQPClass::Channel(channel::AMQPMethod::Open(_)),
                    ..
                } => {
                    conn.channels
                        .insert(ch, Channel::new(ch, conn.outbox.clone(), true));
                    // Channels opened by raw bytes are not modelled.
                    let unknown = self.raw;
                    conn.track.insert(
                        ch,
                        Track {
                            unknown,
                            ..Track::default()
                        },
                    );
                    conn.outbox.method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                    );
                    Step::Continue
                }
                _ => Step::ConnectionGone,
            };
        }
        if let Frame::Method {
            method: AMQPClass::Channel(channel::AMQPMethod::Close(_)),
            ..
        } = &frame
        {
            self.drop_channel(ch);
            self.conn.outbox.method(
                ch,
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
            );
            return Step::Continue;
        }
        let ctx = ChannelCtx {
            vhost: &self.vhost,
            conn_id: self.conn.id,
            user: USER,
            impersonator: false,
            perms: &self.perms,
            config: &self.server,
            replies: &self.replies,
        };
        let Some(chan) = self.conn.channels.get_mut(&ch) else {
            return Step::Continue;
        };
        match chan.handle(&ctx, frame) {
            Ok(()) => Step::Continue,
            Err(e) if e.is_connection_error() => {
                if ferry_fuzz::debug() {
                    eprintln!("connection error: {}", e.text);
                }
                Step::ConnectionGone
            }
            Err(e) => {
                self.drop_channel(ch);
                self.conn.closing.insert(ch);
                self.conn.outbox.method(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                        reply_code: e.code_u16(),
                        reply_text: e.text.into(),
                        class_id: e.class_id,
                        method_id: e.method_id,
                    })),
                );
                Step::Continue
            }
        }
    }

    pub(crate) fn drop_channel(&mut self, ch: u16) {
        if let Some(mut c) = self.conn.channels.remove(&ch) {
            let ctx = ChannelCtx {
                vhost: &self.vhost,
                conn_id: self.conn.id,
                user: USER,
                impersonator: false,
                perms: &self.perms,
                config: &self.server,
                replies: &self.replies,
            };
            c.cleanup(&ctx);
        }
    }

    pub(crate) fn close_connection(&mut self) {
        let chans: Vec<u16> = self.conn.channels.keys().copied().collect();
        for ch in chans {
            self.drop_channel(ch);
        }
        self.vhost.connection_closed(self.conn.id);
        self.drain();
        self.conn.finish();
    }

    pub(crate) fn reconnect(&mut self) {
        self.stats.reconnects += 1;
        self.close_connection();
        self.conn = Conn::new(self.next_conn, &self.server);
        self.next_conn += 1;
    }

    pub(crate) fn is_open(&self, ch: u16) -> bool {
        self.conn.channels.contains_key(&ch)
    }

    pub(crate) fn track(&mut self, ch: u16) -> Option<&mut Track> {
        self.conn.track.get_mut(&ch)
    }

    /// Runs the connection's real writer task until everything queued so
    /// far is on the "socket" (a marker frame queued last has come out),
    /// and checks what a client would read. Repeats while the writer's
    /// wake-ups (socket drained: queues dispatch again) queue more.
    pub(crate) fn drain(&mut self) {
        loop {
            self.conn
                .outbox
                .send(Outbound::Raw(Bytes::from_static(&MARKER)));
            let frames = self.conn.read_until_marker();
            let done = frames.is_empty();
            for f in frames {
                self.check_server_frame(f);
            }
            // The writer writes each item whole: a message cut short here
            // was dropped halfway (the writer could not encode it).
            if let Some(c) = &self.conn.content {
                panic!(
                    "the server sent a {} without all of its content: {c:?}",
                    c.method
                );
            }
            if done {
                return;
            }
        }
    }
}

impl Harness {
    /// Returns false if the broker cannot go on (an injected failure hit
    /// the restart).
    pub(crate) fn restart(&mut self, crash: Option<u64>) -> bool {
        self.close_connection();
        self.stats.restarts += 1;
        if let Some(seed) = crash {
            self.stats.crash_restarts += 1;
            // Power cut while running: whatever was not synced may go.
            self.io.crash(seed);
            self.fault_pending = false;
        }
        self.broker.shutdown();
        let opened = Broker::open(self.broker_cfg.clone(), self.io.shared());
        let broker = match opened {
            Ok(b) => b,
            Err(e) => {
                assert!(self.fault_pending, "broker did not start again: {e}");
                return false;
            }
        };
        self.broker = broker;
        self.vhost = self.broker.vhost("/").expect("default vhost");
        self.perms = permissions(&self.broker);
        self.conn = Conn::new(self.next_conn, &self.server);
        self.next_conn += 1;
        true
    }

    /// Opens `ch` first if it is not, as a client would (answering a
    /// pending channel.close first): otherwise most ops would only hit
    /// "expected 'channel.open'" and end the connection.
    pub(crate) fn ensure_open(&mut self, ch: u16) {
        if ch == 0 || self.is_open(ch) {
            return;
        }
        if self.conn.closing.contains(&ch)
            && !self.send_method(
                ch,
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
            )
        {
            return;
        }
        self.send_method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        );
    }
}

impl Conn {
    pub(crate) fn new(id: u64, server: &ServerConfig) -> Conn {
        let (outbox, rx, oshared) = Outbox::new(server.socket_buffer_limit);
        let params = Arc::new(WriterParams::default());
        params.frame_max.store(server.frame_max, Ordering::Relaxed);
        let (client, sock) = tokio::io::duplex(1 << 20);
        let writer = runtime().spawn(writer::run(sock, rx, oshared, params));
        Conn {
            id,
            outbox,
            client,
            writer: Some(writer),
            out: BytesMut::new(),
            content: None,
            channels: HashMap::new(),
            closing: HashSet::new(),
            track: HashMap::new(),
        }
    }

    /// Lets the writer run until the marker comes out; returns the frames
    /// before it. Empty if nothing but the marker came (or the writer is
    /// gone).
    pub(crate) fn read_until_marker(&mut self) -> Vec<Bytes> {
        let Conn { client, out, .. } = self;
        runtime().block_on(async {
            let mut frames = Vec::new();
            loop {
                while let Some(len) = check_frame(out, 0).expect("server frame header") {
                    let f = out.split_to(len).freeze();
                    if f[..] == MARKER {
                        return frames;
                    }
                    frames.push(f);
                }
                match client.read_buf(out).await {
                    Ok(0) | Err(_) => return frames,
                    Ok(_) => {}
                }
            }
        })
    }

    /// Stops the writer (as the connection task does at the end).
    pub(crate) fn finish(&mut self) {
        self.outbox.send(Outbound::Shutdown);
        if let Some(w) = self.writer.take() {
            let _ = runtime().block_on(w);
        }
    }
}

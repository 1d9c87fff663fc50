//! The harness state: the broker on `SimIo`, the front end serving the
//! client's connection, what the client tracks per channel, restarts and
//! power cuts.

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

pub(crate) type Assembling = (String, String, Option<(u64, Bytes)>, Vec<u8>);

pub(crate) struct Harness {
    /// One current-thread runtime per input, its clock paused: the server's
    /// tasks run only while the harness waits for them.
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) io: SimIo,
    pub(crate) broker_cfg: BrokerConfig,
    pub(crate) server: ServerConfig,
    pub(crate) broker: Arc<Broker>,
    /// The default vhost (its queues are synced at the end of each step).
    pub(crate) vhost: Arc<VHost>,
    /// The real front end (connection code) over `broker`; None once a
    /// restart failed.
    pub(crate) front: Option<Frontend>,
    /// The client's connection.
    pub(crate) conn: Option<Conn>,
    pub(crate) next_conn: u16,
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("tokio runtime");
        let broker = Broker::open(broker_cfg.clone(), io.shared()).ok()?;
        let vhost = broker.vhost("/").ok()?;
        let front = Frontend::new(broker.clone(), server.clone());
        let mut h = Harness {
            rt,
            io,
            broker_cfg,
            server,
            broker,
            vhost,
            front: Some(front),
            conn: None,
            next_conn: 1,
            published: HashSet::new(),
            assembling: HashMap::new(),
            fault_pending: false,
            raw: false,
            stats: Stats::default(),
        };
        h.connect();
        Some(h)
    }

    pub(crate) fn frame_max(&self) -> u32 {
        self.server.frame_max
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

    pub(crate) fn is_open(&self, ch: u16) -> bool {
        self.conn.as_ref().is_some_and(|c| c.open.contains(&ch))
    }

    pub(crate) fn track(&mut self, ch: u16) -> Option<&mut Track> {
        self.conn.as_mut()?.track.get_mut(&ch)
    }

    /// A new connection (the old one's exclusive queues go).
    pub(crate) fn reconnect(&mut self) {
        self.stats.reconnects += 1;
        self.client_close();
        self.connect();
    }
}

impl Harness {
    /// Returns false if the broker cannot go on (an injected failure hit
    /// the restart).
    pub(crate) fn restart(&mut self, crash: Option<u64>) -> bool {
        self.stats.restarts += 1;
        match crash {
            // A clean stop with the connection open: the front end closes
            // it (320 CONNECTION_FORCED), the client answers close-ok.
            None => self.stop_front(),
            Some(seed) => {
                self.stats.crash_restarts += 1;
                self.client_close();
                // Power cut while running: whatever was not synced may go.
                self.io.crash(seed);
                self.fault_pending = false;
                self.stop_front();
            }
        }
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
        self.front = Some(Frontend::new(self.broker.clone(), self.server.clone()));
        self.connect();
        true
    }

    /// Shuts the front end down (`Frontend::shutdown`: connections closed
    /// with 320, then `Broker::shutdown`) while the client reads and
    /// answers whatever its connection gets.
    pub(crate) fn stop_front(&mut self) {
        let Some(front) = self.front.take() else {
            return;
        };
        let stop = self.rt.spawn(front.shutdown());
        if self.conn.is_some() {
            loop {
                let Some(frame) = self.next_frame() else {
                    break;
                };
                if let Seen::Close = self.check_server_frame(frame) {
                    self.answer_close(true);
                    break;
                }
            }
            self.close_stream();
            self.finish_connection();
        }
        match self.rt.block_on(stop) {
            Ok(()) => {}
            Err(e) => panic!("the front end's shutdown failed: {e}"),
        }
    }

    /// Opens `ch` first if it is not, as a client would (answering a
    /// pending channel.close first): otherwise most ops would only hit
    /// "expected 'channel.open'" and end the connection.
    pub(crate) fn ensure_open(&mut self, ch: u16) {
        if ch == 0 || self.is_open(ch) {
            return;
        }
        if self.conn().closing.contains(&ch)
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

//! The real channel state machine (`ferry_server::channel::Channel`) over
//! a real broker core (`ferry_core::Broker` on `ferry_log::SimIo`, so
//! nothing touches the disk), fed frames chosen by the fuzzer.
//!
//! There are no sockets: the harness plays the connection task. Every
//! client frame is encoded to bytes and cut again with `check_frame` /
//! `parse_frame`, then dispatched as `connection.rs` does after the
//! handshake (channel.open / close / close-ok bookkeeping, soft errors
//! close the channel, hard errors the connection; the harness then opens a
//! new connection). Everything the server queues in the outbox is encoded
//! as the writer task does and parsed back.
//!
//! Besides "no panic, no hang", it checks:
//! - every outbound item encodes (the writer drops what does not, which
//!   would lose a delivery) into frames that parse and fit frame_max;
//! - delivery tags on a channel are 1, 2, 3, ... in outbox order;
//! - every delivered, got or returned message is one that was published
//!   (also after a restart or a simulated power cut);
//! - publisher confirms: once a step is over (and the queues synced),
//!   every publish of a confirm-mode channel is acked or nacked, none
//!   twice, and no confirm names a publish that did not happen;
//! - every tx.commit that succeeded gets exactly one commit-ok;
//! - after a power cut (`SimIo::crash`), the broker starts again.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::{BufMut, Bytes, BytesMut};
use ferry_amqp::amq_protocol::protocol::{
    basic, channel, confirm, connection, exchange, queue, tx,
};
use ferry_amqp::{
    check_frame, encode_method, encode_properties, parse_frame, AMQPClass, AMQPValue,
    BasicProperties, FieldArray, FieldTable, Frame, ShortString,
};
use ferry_core::{Broker, BrokerConfig, VHost};
use ferry_log::{LogConfig, SimIo};
use ferry_server::channel::{Channel, ChannelCtx};
use ferry_server::outbox::{Outbound, Outbox};
use ferry_server::writer::{self, WriterParams};
use ferry_server::{AmqpError, ServerConfig};
use libfuzzer_sys::fuzz_target;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, DuplexStream};

const USER: &str = "guest";
/// First byte of an input that is a raw client stream rather than ops.
const RAW_MODE: u8 = b'R';
const EXCHANGES: &[&str] = &[
    "",
    "amq.direct",
    "amq.fanout",
    "amq.topic",
    "amq.headers",
    "amq.match",
    "x",
    "y",
    "amq.nope",
];
const KINDS: &[&str] = &["direct", "fanout", "topic", "headers"];
/// Exchange types that do not exist (COMMAND_INVALID, closes the
/// connection), chosen rarely.
const BAD_KINDS: &[&str] = &["x-bogus", ""];

fn exchange_kind(k: u8) -> &'static str {
    if k >= 248 {
        pick(BAD_KINDS, k)
    } else {
        pick(KINDS, k)
    }
}
const QUEUES: &[&str] = &["", "q", "r", "s", "amq.q"];
const TAGS: &[&str] = &["", "c1", "c2"];
const ARG_KEYS: &[&str] = &[
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-queue-type",
    "x-overflow",
    "x-single-active-consumer",
    "x-delivery-limit",
    "alternate-exchange",
    "x-match",
    "a",
    "b",
];
const EXPIRATIONS: &[&str] = &["0", "100", "-1", "abc", "99999999999999999999999", "", "+5"];

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

// ----- fuzz input ----------------------------------------------------------

#[derive(Debug, Arbitrary)]
struct Input {
    big_frames: bool,
    small_socket_buffer: bool,
    ops: Vec<Op>,
}

/// Channel 1..=3 mostly, sometimes 0 (the connection's).
#[derive(Debug, Clone, Copy, Arbitrary)]
struct Ch(u8);

impl Ch {
    fn get(self) -> u16 {
        match self.0 % 16 {
            15 => 0,
            n => 1 + u16::from(n % 3),
        }
    }
}

/// A routing or binding key over a tiny alphabet (topic patterns
/// included), up to the short-string limit.
#[derive(Debug, Clone)]
struct Key(String);

impl<'a> Arbitrary<'a> for Key {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let n = u.int_in_range(0..=u8::MAX)?;
        let mut s = String::new();
        match n {
            // A queue name: what the default and direct exchanges route on.
            0..=99 => s.push_str(pick(QUEUES, n)),
            100..=199 => {
                for _ in 0..n % 12 {
                    s.push_str(
                        ["a", "b", ".", "#", "*", "a.", "#."]
                            [usize::from(u.int_in_range(0..=6u8)?)],
                    );
                }
            }
            // Long keys: a repeated unit, as a topic matcher's worst case.
            _ => {
                let unit = ["a.", "#.", "*.", "a.#."][usize::from(n % 4)];
                // Room left for the last character.
                while s.len() + unit.len() < 255 {
                    s.push_str(unit);
                }
                s.push(if n % 2 == 0 { 'b' } else { '#' });
            }
        }
        s.truncate(255);
        Ok(Key(s))
    }
}

/// Field tables: RabbitMQ's argument names, values of every type, and now
/// and then a deeply nested value.
#[derive(Debug, Clone, Default)]
struct Args(FieldTable);

fn value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<AMQPValue> {
    use AMQPValue as V;
    Ok(match u.int_in_range(0..=17u8)? {
        0 => V::Boolean(u.arbitrary()?),
        1 => V::ShortShortInt(u.arbitrary()?),
        2 => V::ShortShortUInt(u.arbitrary()?),
        3 => V::ShortInt(u.arbitrary()?),
        4 => V::ShortUInt(u.arbitrary()?),
        5 => V::LongInt(u.arbitrary()?),
        6 => V::LongUInt(u.arbitrary()?),
        7 => V::LongLongInt(u.arbitrary()?),
        8 => V::Float(u.arbitrary()?),
        9 => V::Double(u.arbitrary()?),
        10 => V::DecimalValue(ferry_amqp::amq_protocol::types::DecimalValue {
            scale: u.arbitrary()?,
            value: u.arbitrary()?,
        }),
        11 => V::LongString(pick(EXCHANGES, u.arbitrary()?).into()),
        12 => V::LongString(Vec::<u8>::arbitrary(u)?.into()),
        13 if depth < 3 => {
            let n = u.int_in_range(0..=3u8)?;
            let mut a = Vec::new();
            for _ in 0..n {
                a.push(value(u, depth + 1)?);
            }
            V::FieldArray(FieldArray::from(a))
        }
        14 if depth < 3 => V::FieldTable(table(u, depth + 1)?),
        15 => V::Timestamp(u.arbitrary()?),
        16 => V::ByteArray(Vec::<u8>::arbitrary(u)?.into()),
        // Deep nesting: tables and arrays inside each other, mostly around
        // the codec's limit of 32 levels.
        17 => {
            let levels = if u.ratio(1, 8)? {
                u.int_in_range(1..=200u16)?
            } else {
                u.int_in_range(20..=40u16)?
            };
            let mut v = V::Void;
            for i in 0..levels {
                v = if i % 2 == 0 {
                    V::FieldArray(FieldArray::from(vec![v]))
                } else {
                    let mut t = FieldTable::default();
                    t.insert("n".into(), v);
                    V::FieldTable(t)
                };
            }
            v
        }
        _ => V::Void,
    })
}

fn table(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<FieldTable> {
    let mut t = FieldTable::default();
    for _ in 0..u.int_in_range(0..=3u8)? {
        let k = pick(ARG_KEYS, u.arbitrary()?);
        t.insert(k.into(), value(u, depth)?);
    }
    Ok(t)
}

impl<'a> Arbitrary<'a> for Args {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        if u.ratio(1, 2)? {
            return Ok(Args::default());
        }
        Ok(Args(table(u, 0)?))
    }
}

#[derive(Debug, Arbitrary)]
struct Props {
    content_type: bool,
    headers: Option<Args>,
    delivery_mode: Option<u8>,
    priority: Option<u8>,
    expiration: Option<u8>,
    user_id: Option<bool>,
    /// Pads the properties so the header frame's payload is exactly
    /// frame_max minus this many bytes (0..=15): the largest header frames
    /// `check_frame` lets in.
    pad_to_frame_max: Option<u8>,
}

impl Props {
    fn build(&self, frame_max: u32) -> BasicProperties {
        let mut p = BasicProperties::default();
        if self.content_type {
            p = p.with_content_type("text/plain".into());
        }
        let mut headers = self.headers.clone().map(|a| a.0);
        if let Some(m) = self.delivery_mode {
            p = p.with_delivery_mode(match m % 4 {
                0 | 1 => 2,
                2 => 1,
                _ => m,
            });
        }
        if let Some(x) = self.priority {
            p = p.with_priority(x);
        }
        if let Some(e) = self.expiration {
            p = p.with_expiration(pick(EXPIRATIONS, e).into());
        }
        if let Some(own) = self.user_id {
            p = p.with_user_id(if own { USER } else { "other" }.into());
        }
        if let Some(pad) = self.pad_to_frame_max {
            // Size the padding so that 12 fixed bytes + properties come to
            // frame_max - pad.
            let target = frame_max as usize - usize::from(pad % 16);
            let mut h = headers.clone().unwrap_or_default();
            h.insert("pad".into(), AMQPValue::LongString(Vec::new().into()));
            let probe = p.clone().with_headers(h.clone());
            let base = encode_properties(&probe).map(|b| b.len()).unwrap_or(0) + 12;
            if base < target {
                h.insert(
                    "pad".into(),
                    AMQPValue::LongString(vec![b'p'; target - base].into()),
                );
            }
            headers = Some(h);
        }
        if let Some(h) = headers {
            p = p.with_headers(h);
        }
        p
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Open(Ch),
    Close(Ch),
    CloseOk(Ch),
    ExchangeDeclare {
        ch: Ch,
        name: u8,
        kind: u8,
        flags: u8,
        args: Args,
    },
    ExchangeDelete {
        ch: Ch,
        name: u8,
        if_unused: bool,
        nowait: bool,
    },
    ExchangeBind {
        ch: Ch,
        dest: u8,
        src: u8,
        key: Key,
        args: Args,
        unbind: bool,
        nowait: bool,
    },
    QueueDeclare {
        ch: Ch,
        name: u8,
        flags: u8,
        args: Args,
    },
    QueueBind {
        ch: Ch,
        queue: u8,
        exchange: u8,
        key: Key,
        args: Args,
        unbind: bool,
    },
    QueuePurge {
        ch: Ch,
        queue: u8,
        nowait: bool,
    },
    QueueDelete {
        ch: Ch,
        queue: u8,
        flags: u8,
    },
    Qos {
        ch: Ch,
        prefetch: u8,
        global: bool,
    },
    Consume {
        ch: Ch,
        queue: u8,
        tag: u8,
        flags: u8,
        args: Args,
    },
    Cancel {
        ch: Ch,
        tag: u8,
        nowait: bool,
    },
    Get {
        ch: Ch,
        queue: u8,
        no_ack: bool,
    },
    Ack {
        ch: Ch,
        tag: u8,
        multiple: bool,
    },
    Nack {
        ch: Ch,
        tag: u8,
        multiple: bool,
        requeue: bool,
    },
    Reject {
        ch: Ch,
        tag: u8,
        requeue: bool,
    },
    Recover {
        ch: Ch,
        /// 255: requeue=false (NOT_IMPLEMENTED, closes the connection).
        requeue: u8,
        reply: bool,
    },
    Publish {
        ch: Ch,
        exchange: u8,
        key: Key,
        mandatory: bool,
        /// 255: immediate=true (NOT_IMPLEMENTED, closes the connection).
        immediate: u8,
        props: Props,
        body: Vec<u8>,
        /// Body frame size, at most the frame_max payload.
        chunk: u16,
        /// 240 and up: that many minus 239 body bytes more than the header
        /// declared (FRAME_ERROR, closes the connection).
        extra: u8,
    },
    /// Lone pieces of content, in any order.
    PublishMethodOnly(Ch, u8),
    HeaderOnly(Ch, u16),
    BodyOnly(Ch, Vec<u8>),
    ConfirmSelect(Ch, bool),
    TxSelect(Ch),
    TxCommit(Ch),
    TxRollback(Ch),
    /// 255: active=false (NOT_IMPLEMENTED, closes the connection).
    Flow(Ch, u8),
    Heartbeat(Ch),
    /// Arbitrary bytes as frames (after the protocol header).
    Raw(Vec<u8>),
    FailNextWrite,
    FailNextSync,
    /// A canned sequence reaching a deeper state (see `Op::setup`).
    Setup(Ch, u8),
    /// New connection (the old one's exclusive queues go).
    Reconnect,
    /// Broker restart on the same files; with a seed, after a power cut.
    Restart(Option<u64>),
}

impl Op {
    /// Canned sequences the fuzzer can build on: a durable queue with
    /// confirmed persistent publishes, a consumer with a prefetch window, a
    /// transaction that gets and acks, topic routing through a durable
    /// exchange.
    fn setup(ch: Ch, which: u8) -> Vec<Op> {
        let declare = |name: u8| Op::QueueDeclare {
            ch,
            name,
            flags: 2, // durable
            args: Args::default(),
        };
        let publish = |exchange: u8, key: &str, body: &[u8]| Op::Publish {
            ch,
            exchange,
            key: Key(key.to_string()),
            mandatory: true,
            immediate: 0,
            props: Props {
                content_type: true,
                headers: None,
                delivery_mode: Some(0), // persistent
                priority: None,
                expiration: None,
                user_id: None,
                pad_to_frame_max: None,
            },
            body: body.to_vec(),
            chunk: 1,
            extra: 0,
        };
        match which % 4 {
            0 => vec![
                declare(1),
                Op::ConfirmSelect(ch, false),
                publish(0, "q", b"one"),
                publish(0, "q", b"two"),
            ],
            1 => vec![
                declare(1),
                Op::Qos {
                    ch,
                    prefetch: 2,
                    global: false,
                },
                Op::Consume {
                    ch,
                    queue: 1,
                    tag: 1,
                    flags: 0,
                    args: Args::default(),
                },
            ],
            2 => vec![
                declare(1),
                Op::TxSelect(ch),
                publish(0, "q", b"tx"),
                Op::Get {
                    ch,
                    queue: 1,
                    no_ack: false,
                },
                Op::Ack {
                    ch,
                    tag: 1,
                    multiple: false,
                },
                Op::TxCommit(ch),
            ],
            _ => vec![
                Op::ExchangeDeclare {
                    ch,
                    name: 6, // x
                    kind: 2, // topic
                    flags: 2,
                    args: Args::default(),
                },
                declare(2),
                Op::QueueBind {
                    ch,
                    queue: 2,
                    exchange: 6,
                    key: Key("a.#".into()),
                    args: Args::default(),
                    unbind: false,
                },
                publish(6, "a.b", b"routed"),
            ],
        }
    }

    /// The channel a typed op works on, to open it first if needed (not
    /// for the ops that are about opening and closing, nor raw bytes).
    fn channel(&self) -> Option<u16> {
        let ch = match self {
            Op::ExchangeDeclare { ch, .. }
            | Op::ExchangeDelete { ch, .. }
            | Op::ExchangeBind { ch, .. }
            | Op::QueueDeclare { ch, .. }
            | Op::QueueBind { ch, .. }
            | Op::QueuePurge { ch, .. }
            | Op::QueueDelete { ch, .. }
            | Op::Qos { ch, .. }
            | Op::Consume { ch, .. }
            | Op::Cancel { ch, .. }
            | Op::Get { ch, .. }
            | Op::Ack { ch, .. }
            | Op::Nack { ch, .. }
            | Op::Reject { ch, .. }
            | Op::Recover { ch, .. }
            | Op::Publish { ch, .. }
            | Op::ConfirmSelect(ch, _)
            | Op::TxSelect(ch)
            | Op::TxCommit(ch)
            | Op::TxRollback(ch)
            | Op::Flow(ch, _) => ch,
            _ => return None,
        };
        Some(ch.get())
    }
}

// ----- the harness ---------------------------------------------------------

/// What the harness knows about one channel incarnation.
#[derive(Debug)]
struct Track {
    confirm: bool,
    tx: bool,
    /// Raw content pieces were sent: stop counting publishes.
    unknown: bool,
    /// Publishes that must be confirmed.
    expected: u64,
    /// Tags acked (individually or by a multiple ack) or nacked.
    resolved: BTreeSet<u64>,
    /// commit-oks still owed.
    commit_oks: u32,
    /// Next delivery tag.
    dtag: u64,
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

struct Conn {
    id: u64,
    outbox: Outbox,
    /// The client's end of the pipe the writer task writes to.
    client: DuplexStream,
    writer: Option<tokio::task::JoinHandle<()>>,
    /// Bytes read and not yet cut into frames.
    out: BytesMut,
    /// A deliver / get-ok / return whose content is being read.
    content: Option<ServerContent>,
    channels: HashMap<u16, Channel>,
    closing: HashSet<u16>,
    track: HashMap<u16, Track>,
}

/// Content the server is sending, as a client reads it.
#[derive(Debug)]
struct ServerContent {
    channel: u16,
    method: &'static str,
    exchange: String,
    key: String,
    header: Option<(u64, Bytes)>,
    body: Vec<u8>,
}

/// Queued after everything else to see when the writer is through: a
/// heartbeat, which the writer never sends itself with heartbeats off.
const MARKER: [u8; 8] = [8, 0, 0, 0, 0, 0, 0, 0xCE];

/// One runtime for all runs; the writer tasks run only inside `block_on`.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

type Assembling = (String, String, Option<(u64, Bytes)>, Vec<u8>);

struct Harness {
    io: SimIo,
    broker_cfg: BrokerConfig,
    server: ServerConfig,
    broker: Arc<Broker>,
    vhost: Arc<VHost>,
    conn: Conn,
    next_conn: u64,
    published: HashSet<u64>,
    /// Content being assembled per channel: exchange, key, header, body.
    assembling: HashMap<u16, Assembling>,
    /// A failure was injected and maybe not consumed yet.
    fault_pending: bool,
    /// Raw bytes are being sent (what they do is not modelled).
    raw: bool,
    /// What happened, for `FERRY_FUZZ_DEBUG` (how deep the fuzzer gets).
    stats: Stats,
}

#[derive(Debug, Default)]
struct Stats {
    deliveries: u32,
    gets: u32,
    returns: u32,
    acks: u32,
    nacks: u32,
    commit_oks: u32,
    channel_closes: u32,
    restarts: u32,
    crash_restarts: u32,
    reconnects: u32,
}

fn message_hash(exchange: &str, key: &str, props: &[u8], body: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    (exchange, key, props, body).hash(&mut h);
    h.finish()
}

fn short(s: &str) -> ShortString {
    s.into()
}

enum Step {
    Continue,
    /// The connection ended (client close or a hard error).
    ConnectionGone,
}

impl Harness {
    fn new(input: &Input) -> Option<Harness> {
        let io = SimIo::new();
        let broker_cfg = BrokerConfig {
            data_dir: PathBuf::from("/data"),
            log: LogConfig {
                segment_bytes: 4096,
                index_interval_bytes: 256,
                first_index: 0,
            },
            cache_bytes: 8192,
            sync_threads: 1,
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
        let conn = Conn::new(1, &server);
        Some(Harness {
            io,
            broker_cfg,
            server,
            broker,
            vhost,
            conn,
            next_conn: 2,
            published: HashSet::new(),
            assembling: HashMap::new(),
            fault_pending: false,
            raw: false,
            stats: Stats::default(),
        })
    }

    fn frame_max(&self) -> u32 {
        self.server.frame_max
    }

    /// Sends client frames (already encoded) through the server's framing
    /// loop and dispatch. Returns false once the connection is gone.
    fn send_bytes(&mut self, bytes: &[u8]) -> bool {
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

    fn send_method(&mut self, ch: u16, m: AMQPClass) -> bool {
        let mut buf = BytesMut::new();
        encode_method(&mut buf, ch, &m).expect("encoding a client method");
        self.send_bytes(&buf)
    }

    /// Notes the messages a client's frames make up (whatever the server
    /// decides about them), for `check_message`.
    fn note_content(&mut self, frame: &Frame) {
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
    fn dispatch(&mut self, frame: Frame) -> Step {
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
            config: &self.server,
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

    fn drop_channel(&mut self, ch: u16) {
        if let Some(mut c) = self.conn.channels.remove(&ch) {
            let ctx = ChannelCtx {
                vhost: &self.vhost,
                conn_id: self.conn.id,
                user: USER,
                config: &self.server,
            };
            c.cleanup(&ctx);
        }
    }

    fn close_connection(&mut self) {
        let chans: Vec<u16> = self.conn.channels.keys().copied().collect();
        for ch in chans {
            self.drop_channel(ch);
        }
        self.vhost.connection_closed(self.conn.id);
        self.drain();
        self.conn.finish();
    }

    fn reconnect(&mut self) {
        self.stats.reconnects += 1;
        self.close_connection();
        self.conn = Conn::new(self.next_conn, &self.server);
        self.next_conn += 1;
    }

    fn is_open(&self, ch: u16) -> bool {
        self.conn.channels.contains_key(&ch)
    }

    fn track(&mut self, ch: u16) -> Option<&mut Track> {
        self.conn.track.get_mut(&ch)
    }

    /// Runs the connection's real writer task until everything queued so
    /// far is on the "socket" (a marker frame queued last has come out),
    /// and checks what a client would read. Repeats while the writer's
    /// wake-ups (socket drained: queues dispatch again) queue more.
    fn drain(&mut self) {
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

    /// One frame the writer wrote, in order.
    fn check_server_frame(&mut self, raw: Bytes) {
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
        if let Some(c) = &self.conn.content {
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
            Frame::Method { method, .. } => self.check_server_method(ch, method),
            Frame::Header {
                body_size,
                raw_properties,
                ..
            } => {
                let Some(c) = self.conn.content.as_mut() else {
                    panic!("content header without a deliver / get-ok / return");
                };
                c.header = Some((body_size, raw_properties));
                self.finish_content_if_complete();
            }
            Frame::Body { payload, .. } => {
                let Some(c) = self.conn.content.as_mut() else {
                    panic!("content body without a deliver / get-ok / return");
                };
                c.body.extend_from_slice(&payload);
                self.finish_content_if_complete();
            }
            Frame::Heartbeat { .. } => panic!("heartbeat with heartbeats off"),
        }
    }

    fn check_server_method(&mut self, ch: u16, m: AMQPClass) {
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
                self.conn.content = content("deliver", &d.exchange, &d.routing_key);
            }
            AMQPClass::Basic(basic::AMQPMethod::GetOk(g)) => {
                self.stats.gets += 1;
                self.check_delivery_tag(ch, g.delivery_tag);
                self.conn.content = content("get-ok", &g.exchange, &g.routing_key);
            }
            AMQPClass::Basic(basic::AMQPMethod::Return(r)) => {
                self.stats.returns += 1;
                self.conn.content = content("return", &r.exchange, &r.routing_key);
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
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => self.stats.channel_closes += 1,
            _ => {}
        }
    }

    fn finish_content_if_complete(&mut self) {
        let Some(c) = &self.conn.content else { return };
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
            self.conn.content = None;
        }
    }

    fn check_delivery_tag(&mut self, ch: u16, tag: u64) {
        if let Some(t) = self.track(ch) {
            assert_eq!(tag, t.dtag, "delivery tags out of sequence on channel {ch}");
            t.dtag += 1;
        }
    }

    fn check_confirm(&mut self, ch: u16, ack: bool, tag: u64, multiple: bool) {
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
            // Covers every earlier publish; re-covering ones confirmed alone
            // before is allowed.
            t.resolved.extend(1..=tag);
        } else {
            assert!(
                t.resolved.insert(tag),
                "publish {tag} on channel {ch} confirmed twice (ack={ack})"
            );
        }
    }

    /// End of a step: sync every queue (releasing deferred confirms), drain
    /// the outbox, check what is owed was sent.
    fn settle(&mut self) {
        for q in self.vhost.queues() {
            q.sync_now();
        }
        self.drain();
        for (ch, t) in &self.conn.track {
            if !self.conn.channels.contains_key(ch) {
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

    /// Returns false if the broker cannot go on (an injected failure hit
    /// the restart).
    fn restart(&mut self, crash: Option<u64>) -> bool {
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
        self.conn = Conn::new(self.next_conn, &self.server);
        self.next_conn += 1;
        true
    }

    /// Opens `ch` first if it is not, as a client would (answering a
    /// pending channel.close first): otherwise most ops would only hit
    /// "expected 'channel.open'" and end the connection.
    fn ensure_open(&mut self, ch: u16) {
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

    /// Runs one op; false if the run cannot go on.
    fn run(&mut self, op: &Op) -> bool {
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
                let was_tx = self.is_open(ch)
                    && self.conn.track.get(&ch).is_some_and(|t| t.tx && !t.unknown);
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

    fn mark_unknown(&mut self, ch: u16) {
        if let Some(t) = self.track(ch) {
            t.unknown = true;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn publish(
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
                .conn
                .track
                .get(&ch)
                .is_some_and(|t| t.confirm && !t.tx && !t.unknown);
        self.send_bytes(&buf);
        if counted && self.is_open(ch) {
            if let Some(t) = self.track(ch) {
                t.expected += 1;
            }
        }
    }
}

fn delivery_tag(t: u8) -> u64 {
    match t {
        250 => u64::MAX,
        251 => 1 << 32,
        n => u64::from(n % 16),
    }
}

fn header_frame(buf: &mut BytesMut, ch: u16, body_size: u64, raw: &[u8]) {
    buf.put_u8(2);
    buf.put_u16(ch);
    buf.put_u32((12 + raw.len()) as u32);
    buf.put_u16(60);
    buf.put_u16(0);
    buf.put_u64(body_size);
    buf.put_slice(raw);
    buf.put_u8(0xCE);
}

fn body_frame(buf: &mut BytesMut, ch: u16, body: &[u8]) {
    buf.put_u8(3);
    buf.put_u16(ch);
    buf.put_u32(body.len() as u32);
    buf.put_slice(body);
    buf.put_u8(0xCE);
}

impl Conn {
    fn new(id: u64, server: &ServerConfig) -> Conn {
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
    fn read_until_marker(&mut self) -> Vec<Bytes> {
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
    fn finish(&mut self) {
        self.outbox.send(Outbound::Shutdown);
        if let Some(w) = self.writer.take() {
            let _ = runtime().block_on(w);
        }
    }
}

fuzz_target!(
    init: {
        ferry_fuzz::write_seeds_and_exit_if_asked(|| {
            let mut buf = bytes::BytesMut::new();
            ferry_fuzz::streams::session(&mut buf, 4096);
            let mut raw = vec![RAW_MODE];
            raw.extend_from_slice(&buf);
            vec![("session-stream".into(), raw)]
        });
    },
    |data: &[u8]| {
        let input = match data.split_first() {
            // A raw client stream (after the handshake) at frame_max 4096,
            // then a clean restart: whatever it declared must load again.
            Some((&RAW_MODE, rest)) => Input {
                big_frames: false,
                small_socket_buffer: false,
                ops: vec![Op::Raw(rest.to_vec()), Op::Restart(None)],
            },
            _ => match Input::arbitrary_take_rest(Unstructured::new(data)) {
                Ok(input) => input,
                Err(_) => return,
            },
        };
        if ferry_fuzz::debug() {
            eprintln!("{input:#?}");
        }
        let Some(mut h) = Harness::new(&input) else {
            return;
        };
        for op in input.ops.iter().take(200) {
            if !h.run(op) {
                break;
            }
            h.settle();
        }
        h.close_connection();
        h.broker.shutdown();
        if ferry_fuzz::debug() {
            eprintln!("stats: {:?}", h.stats);
        }
    }
);

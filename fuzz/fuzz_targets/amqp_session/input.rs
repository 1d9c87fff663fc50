//! The fuzz input: operations chosen with `arbitrary` and the small
//! vocabularies (names, keys, argument tables, properties) they draw from.

use super::*;

pub(crate) const USER: &str = "guest";
/// First byte of an input that is a raw client stream rather than ops.
pub(crate) const RAW_MODE: u8 = b'R';
pub(crate) const EXCHANGES: &[&str] = &[
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
pub(crate) const KINDS: &[&str] = &["direct", "fanout", "topic", "headers"];
/// Exchange types that do not exist (COMMAND_INVALID, closes the
/// connection), chosen rarely.
pub(crate) const BAD_KINDS: &[&str] = &["x-bogus", ""];

pub(crate) fn exchange_kind(k: u8) -> &'static str {
    if k >= 248 {
        pick(BAD_KINDS, k)
    } else {
        pick(KINDS, k)
    }
}
pub(crate) const QUEUES: &[&str] = &["", "q", "r", "s", "amq.q"];
pub(crate) const TAGS: &[&str] = &["", "c1", "c2"];
pub(crate) const ARG_KEYS: &[&str] = &[
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
pub(crate) const EXPIRATIONS: &[&str] =
    &["0", "100", "-1", "abc", "99999999999999999999999", "", "+5"];

pub(crate) fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

// ----- fuzz input ----------------------------------------------------------

#[derive(Debug, Arbitrary)]
pub(crate) struct Input {
    pub(crate) big_frames: bool,
    pub(crate) small_socket_buffer: bool,
    pub(crate) ops: Vec<Op>,
}

/// Channel 1..=3 mostly, sometimes 0 (the connection's).
#[derive(Debug, Clone, Copy, Arbitrary)]
pub(crate) struct Ch(pub(crate) u8);

impl Ch {
    pub(crate) fn get(self) -> u16 {
        match self.0 % 16 {
            15 => 0,
            n => 1 + u16::from(n % 3),
        }
    }
}

/// A routing or binding key over a tiny alphabet (topic patterns
/// included), up to the short-string limit.
#[derive(Debug, Clone)]
pub(crate) struct Key(pub(crate) String);

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
pub(crate) struct Args(pub(crate) FieldTable);

pub(crate) fn value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<AMQPValue> {
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

pub(crate) fn table(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<FieldTable> {
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
pub(crate) struct Props {
    pub(crate) content_type: bool,
    pub(crate) headers: Option<Args>,
    pub(crate) delivery_mode: Option<u8>,
    pub(crate) priority: Option<u8>,
    pub(crate) expiration: Option<u8>,
    pub(crate) user_id: Option<bool>,
    /// Pads the properties so the header frame's payload is exactly
    /// frame_max minus this many bytes (0..=15): the largest header frames
    /// `check_frame` lets in.
    pub(crate) pad_to_frame_max: Option<u8>,
}

impl Props {
    pub(crate) fn build(&self, frame_max: u32) -> BasicProperties {
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
pub(crate) enum Op {
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
    pub(crate) fn setup(ch: Ch, which: u8) -> Vec<Op> {
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
    pub(crate) fn channel(&self) -> Option<u16> {
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

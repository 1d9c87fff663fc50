//! Valid client byte streams, for seeds.

use bytes::{BufMut, BytesMut};
use ferry_amqp::amq_protocol::protocol::{
    basic, channel, confirm, connection, exchange, queue, tx, AMQPClass,
};
use ferry_amqp::{
    encode_content, encode_heartbeat, encode_method, encode_properties, AMQPValue, BasicProperties,
    FieldArray, FieldTable, LongString, PROTOCOL_HEADER,
};

fn method(buf: &mut BytesMut, ch: u16, m: AMQPClass) {
    encode_method(buf, ch, &m).expect("encode seed method");
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// A table nesting `depth` levels (the table itself is 1).
pub fn nested(depth: usize) -> FieldTable {
    let mut v = AMQPValue::Boolean(true);
    for i in 1..depth {
        v = if i % 2 == 0 {
            AMQPValue::FieldTable(table(&[("t", v)]))
        } else {
            AMQPValue::FieldArray(FieldArray::from(vec![v]))
        };
    }
    table(&[("deep", v)])
}

/// The handshake a client sends after the protocol header (start-ok,
/// tune-ok, open), asking for 60 s heartbeats.
pub fn handshake(buf: &mut BytesMut, frame_max: u32) {
    handshake_with(buf, frame_max, 60);
}

/// [`handshake`] with a heartbeat interval of `heartbeat` seconds (0: off).
pub fn handshake_with(buf: &mut BytesMut, frame_max: u32, heartbeat: u16) {
    let caps = table(&[
        ("publisher_confirms", AMQPValue::Boolean(true)),
        ("consumer_cancel_notify", AMQPValue::Boolean(true)),
        ("authentication_failure_close", AMQPValue::Boolean(true)),
    ]);
    method(
        buf,
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: table(&[
                ("product", AMQPValue::LongString("ferry-fuzz".into())),
                ("capabilities", AMQPValue::FieldTable(caps)),
            ]),
            mechanism: "PLAIN".into(),
            response: LongString::from("\0guest\0guest"),
            locale: "en_US".into(),
        })),
    );
    method(
        buf,
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 2047,
            frame_max,
            heartbeat,
        })),
    );
    method(
        buf,
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    );
}

fn publish(
    buf: &mut BytesMut,
    ch: u16,
    exchange: &str,
    key: &str,
    props: &BasicProperties,
    body: &[u8],
    frame_max: u32,
) {
    method(
        buf,
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: key.into(),
            mandatory: true,
            immediate: false,
        })),
    );
    let raw = encode_properties(props).expect("seed properties");
    encode_content(buf, ch, 60, &raw, body, frame_max).expect("seed content");
}

/// What a client does once connected: channels, declarations, confirmed
/// and transactional publishes, consumers, acks, and the way out.
pub fn session(buf: &mut BytesMut, frame_max: u32) {
    let open = |buf: &mut BytesMut, ch| {
        method(
            buf,
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
    };
    open(buf, 1);
    method(
        buf,
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    );
    method(
        buf,
        1,
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
            exchange: "x".into(),
            kind: "topic".into(),
            passive: false,
            durable: true,
            auto_delete: false,
            internal: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    );
    method(
        buf,
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "q".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: table(&[
                ("x-max-length", AMQPValue::LongInt(100)),
                ("x-message-ttl", AMQPValue::LongInt(60_000)),
            ]),
        })),
    );
    method(
        buf,
        1,
        AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
            queue: "q".into(),
            exchange: "x".into(),
            routing_key: "a.#".into(),
            nowait: false,
            arguments: FieldTable::default(),
        })),
    );
    method(
        buf,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 10,
            global: false,
        })),
    );
    let props = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_delivery_mode(2)
        .with_priority(1)
        .with_headers(table(&[("k", AMQPValue::LongString("v".into()))]));
    let body: Vec<u8> = (0..=255u8).cycle().take(300).collect();
    publish(buf, 1, "x", "a.b", &props, &body, frame_max.min(200));
    publish(buf, 1, "", "q", &BasicProperties::default(), b"", frame_max);
    publish(buf, 1, "amq.fanout", "", &props, b"unroutable", frame_max);
    method(
        buf,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "q".into(),
            consumer_tag: "c1".into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    );
    method(
        buf,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 1,
            multiple: false,
        })),
    );
    method(
        buf,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag: 2,
            multiple: false,
            requeue: true,
        })),
    );
    method(
        buf,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: "q".into(),
            no_ack: false,
        })),
    );
    method(
        buf,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: "c1".into(),
            nowait: false,
        })),
    );
    method(
        buf,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Recover(basic::Recover { requeue: true })),
    );
    open(buf, 2);
    method(buf, 2, AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})));
    publish(buf, 2, "", "q", &props, b"in a transaction", frame_max);
    method(
        buf,
        2,
        AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: "q".into(),
            no_ack: false,
        })),
    );
    method(
        buf,
        2,
        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 0,
            multiple: true,
        })),
    );
    method(buf, 2, AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {})));
    method(
        buf,
        2,
        AMQPClass::Tx(tx::AMQPMethod::Rollback(tx::Rollback {})),
    );
    encode_heartbeat(buf);
    method(
        buf,
        1,
        AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
            queue: "q".into(),
            nowait: false,
        })),
    );
    method(
        buf,
        1,
        AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: "q".into(),
            if_unused: false,
            if_empty: false,
            nowait: false,
        })),
    );
    method(
        buf,
        1,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    );
}

/// A whole client conversation, protocol header first.
pub fn client_stream(frame_max: u32) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_slice(PROTOCOL_HEADER);
    handshake(&mut buf, frame_max);
    session(&mut buf, frame_max);
    method(
        &mut buf,
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    );
    buf.to_vec()
}

/// Methods carrying tables nested to `depth`.
pub fn nested_methods(depth: usize) -> Vec<u8> {
    let mut buf = BytesMut::new();
    method(
        &mut buf,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "q".into(),
            consumer_tag: "".into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: nested(depth),
        })),
    );
    let props = BasicProperties::default()
        .with_content_type("a".into())
        .with_headers(nested(depth));
    publish(&mut buf, 1, "", "q", &props, b"x", 0);
    buf.to_vec()
}

//! Regression tests for nesting found by fuzzing (see `fuzz/`): a frame
//! of a few KB nesting arrays in a table overflowed the stack in
//! amq-protocol's recursive parser and aborted the broker; nested
//! arguments of a durable queue made the definitions file unreadable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amq_protocol::protocol::{basic, connection, exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use bytes::{BufMut, BytesMut};

use super::MAX_NESTING;
use crate::test_util::method_frame;
use crate::{
    encode_content, encode_method, encode_properties, parse_frame, parse_properties,
    BasicProperties, CodecError, Frame, ReplyCode,
};

/// A table nesting `depth` levels (the table itself is level 1), arrays
/// and tables alternating below it.
fn nested(depth: usize) -> FieldTable {
    let mut v = AMQPValue::Void;
    for i in 1..depth {
        v = if i % 2 == 0 {
            let mut t = FieldTable::default();
            t.insert("t".into(), v);
            AMQPValue::FieldTable(t)
        } else {
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongLongInt(7), v]))
        };
    }
    let mut t = FieldTable::default();
    t.insert("x-other".into(), AMQPValue::LongString("a".into()));
    t.insert("deep".into(), v);
    t
}

/// Every method whose arguments hold a field table, carrying `t`.
fn methods_with(t: FieldTable) -> Vec<AMQPClass> {
    use AMQPClass as C;
    vec![
        C::Connection(connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: t.clone(),
            mechanisms: LongString::from("PLAIN"),
            locales: LongString::from("en_US"),
        })),
        C::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: t.clone(),
            mechanism: "PLAIN".into(),
            response: LongString::from("\0guest\0guest"),
            locale: "en_US".into(),
        })),
        C::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
            exchange: "ex".into(),
            kind: "topic".into(),
            passive: false,
            durable: true,
            auto_delete: false,
            internal: false,
            nowait: false,
            arguments: t.clone(),
        })),
        C::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
            destination: "d".into(),
            source: "src".into(),
            routing_key: "a.b".into(),
            nowait: true,
            arguments: t.clone(),
        })),
        C::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
            destination: "d".into(),
            source: "src".into(),
            routing_key: "".into(),
            nowait: false,
            arguments: t.clone(),
        })),
        C::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "q".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: t.clone(),
        })),
        C::Queue(queue::AMQPMethod::Bind(queue::Bind {
            queue: "q".into(),
            exchange: "ex".into(),
            routing_key: "k".into(),
            nowait: false,
            arguments: t.clone(),
        })),
        C::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
            queue: "q".into(),
            exchange: "ex".into(),
            routing_key: "k".into(),
            arguments: t.clone(),
        })),
        C::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "q".into(),
            consumer_tag: "ctag".into(),
            no_local: false,
            no_ack: true,
            exclusive: false,
            nowait: false,
            arguments: t,
        })),
    ]
}

#[test]
fn tables_in_methods_nest_up_to_the_limit() {
    for method in methods_with(nested(MAX_NESTING)) {
        let mut buf = BytesMut::new();
        encode_method(&mut buf, 1, &method).unwrap();
        match parse_frame(buf.freeze()) {
            Ok(Frame::Method { method: m, .. }) => assert_eq!(m, method),
            other => panic!("{method:?}: {other:?}"),
        }
    }
    for method in methods_with(nested(MAX_NESTING + 1)) {
        let ids = (method.get_amqp_class_id(), method.get_amqp_method_id());
        let mut buf = BytesMut::new();
        encode_method(&mut buf, 1, &method).unwrap();
        let err = parse_frame(buf.freeze()).unwrap_err();
        assert!(
            matches!(err, CodecError::MalformedMethod { .. }),
            "{ids:?}: {err:?}"
        );
        assert_eq!(err.method_ids(), ids);
        assert_eq!(err.reply_code(), ReplyCode::FRAME_ERROR);
    }
}

#[test]
fn message_headers_nest_up_to_the_limit() {
    for (depth, ok) in [(MAX_NESTING, true), (MAX_NESTING + 1, false)] {
        // content-type and content-encoding come before the headers.
        let props = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_content_encoding("gzip".into())
            .with_headers(nested(depth))
            .with_priority(3);
        let raw = encode_properties(&props).unwrap();
        assert_eq!(parse_properties(&raw).is_ok(), ok, "depth {depth}");
        let mut buf = BytesMut::new();
        encode_content(&mut buf, 1, 60, &raw, b"", 0).unwrap();
        match parse_frame(buf.freeze()) {
            Ok(Frame::Header {
                props: blob,
                raw_properties,
                ..
            }) if ok => {
                assert_eq!(
                    crate::model::props_from_model(&blob).unwrap(),
                    raw_properties
                );
                assert_eq!(parse_properties(&raw_properties).unwrap(), props);
            }
            Err(CodecError::MalformedProperties) if !ok => {}
            other => panic!("depth {depth}: {other:?}"),
        }
    }
}

/// `depth` arrays inside each other, as raw bytes (building the value and
/// encoding it would recurse too).
fn raw_nested_arrays(depth: usize) -> Vec<u8> {
    let mut inner = vec![b'A', 0, 0, 0, 0];
    for _ in 0..depth {
        let mut next = Vec::with_capacity(inner.len() + 5);
        next.push(b'A');
        next.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        next.extend_from_slice(&inner);
        inner = next;
    }
    let mut table = vec![1, b'a'];
    table.extend_from_slice(&inner);
    let mut out = (table.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&table);
    out
}

/// The original crash: a 25 KB queue.declare (or a start-ok, before any
/// authentication) nesting 5,000 arrays aborted the process with a stack
/// overflow. Parsed here on a small stack, it must fail cleanly.
#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let table = raw_nested_arrays(5_000);
    let mut declare = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
    declare.extend_from_slice(&table);
    let mut start_ok = vec![0, 10, 0, 11];
    start_ok.extend_from_slice(&table);
    start_ok.extend_from_slice(&[5, b'P', b'L', b'A', b'I', b'N', 0, 0, 0, 0, 0]);
    let mut props = BytesMut::new();
    props.put_u16(1 << 13);
    props.put_slice(&table);
    let props = props.freeze();
    let worker = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            for payload in [declare, start_ok] {
                let err = parse_frame(method_frame(0, &payload)).unwrap_err();
                assert!(matches!(err, CodecError::MalformedMethod { .. }), "{err:?}");
            }
            assert_eq!(
                parse_properties(&props),
                Err(CodecError::MalformedProperties)
            );
        })
        .unwrap();
    worker.join().unwrap();
}

/// Nesting is measured through every value type the walker must skip.
#[test]
fn every_scalar_type_is_skipped_correctly() {
    // Each scalar type once, then a nested table: if any size were wrong
    // the walk would lose its place and see no nesting at all.
    let mut entries = BytesMut::new();
    let scalars: &[(u8, &[u8])] = &[
        (b't', &[1]),
        (b'b', &[1]),
        (b'B', &[1]),
        (b's', &[0, 1]),
        (b'u', &[0, 1]),
        (b'I', &[0, 0, 0, 1]),
        (b'i', &[0, 0, 0, 1]),
        (b'f', &[0, 0, 0, 0]),
        (b'D', &[2, 0, 0, 0, 1]),
        (b'L', &[0; 8]),
        (b'l', &[0; 8]),
        (b'd', &[0; 8]),
        (b'T', &[0; 8]),
        (b'V', &[]),
        (b'S', &[0, 0, 0, 2, b'h', b'i']),
        (b'x', &[0, 0, 0, 1, 0xFF]),
    ];
    for (i, (tag, bytes)) in scalars.iter().enumerate() {
        entries.put_u8(2);
        entries.put_slice(format!("{i:02}").as_bytes());
        entries.put_u8(*tag);
        entries.put_slice(bytes);
    }
    let deep = raw_nested_arrays(MAX_NESTING);
    entries.put_u8(1);
    entries.put_u8(b'z');
    entries.put_u8(b'F');
    entries.put_slice(&deep);
    let mut table = BytesMut::new();
    table.put_u32(entries.len() as u32);
    table.put_slice(&entries);
    let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
    payload.extend_from_slice(&table);
    let err = parse_frame(method_frame(1, &payload)).unwrap_err();
    assert!(matches!(err, CodecError::MalformedMethod { .. }), "{err:?}");
    // Without the deep entry the same table parses.
    let shallow = &entries[..entries.len() - 3 - deep.len()];
    let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
    payload.extend_from_slice(&(shallow.len() as u32).to_be_bytes());
    payload.extend_from_slice(shallow);
    assert!(parse_frame(method_frame(1, &payload)).is_ok());
}

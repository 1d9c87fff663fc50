#![allow(clippy::unwrap_used, clippy::expect_used)]

use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable};
use bytes::{BufMut, BytesMut};

use super::*;
use crate::{check_frame, parse_frame, Frame};

/// Splits `buf` into frames with `check_frame` (at the same frame_max the
/// encoder used, so any oversized frame fails) and parses them.
fn frames(buf: BytesMut, frame_max: u32) -> Vec<Frame> {
    let mut buf = buf.freeze();
    let mut out = Vec::new();
    while !buf.is_empty() {
        let len = check_frame(&buf, frame_max).unwrap().unwrap();
        if frame_max != 0 {
            assert!(len <= frame_max as usize, "frame of {len} > {frame_max}");
        }
        out.push(parse_frame(buf.split_to(len)).unwrap());
    }
    out
}

fn body_sizes(frames: &[Frame]) -> Vec<usize> {
    frames[1..]
        .iter()
        .map(|f| match f {
            Frame::Body { payload, .. } => payload.len(),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn reassemble(frames: &[Frame]) -> Vec<u8> {
    let mut body = Vec::new();
    for f in &frames[1..] {
        if let Frame::Body { payload, .. } = f {
            body.extend_from_slice(payload);
        }
    }
    body
}

#[test]
fn body_splitting_at_frame_max_boundaries() {
    let frame_max = 4096u32;
    let max = (frame_max - 8) as usize;
    let raw = [0u8, 0];
    for (len, sizes) in [
        (0, vec![]),
        (1, vec![1]),
        (max - 1, vec![max - 1]),
        (max, vec![max]),
        (max + 1, vec![max, 1]),
        (2 * max, vec![max, max]),
        (2 * max + 1, vec![max, max, 1]),
    ] {
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut buf = BytesMut::new();
        encode_content(&mut buf, 1, 60, &raw, &body, frame_max).unwrap();
        let frames = frames(buf, frame_max);
        match &frames[0] {
            Frame::Header { body_size, .. } => assert_eq!(*body_size, len as u64),
            other => panic!("{other:?}"),
        }
        assert_eq!(body_sizes(&frames), sizes, "body of {len}");
        assert_eq!(reassemble(&frames), body);
    }
}

#[test]
fn exactly_fitting_body_frame_is_frame_max_long() {
    let mut buf = BytesMut::new();
    encode_content(&mut buf, 1, 60, &[0, 0], &[9; 4088], 4096).unwrap();
    let header_len = 7 + 12 + 2 + 1;
    assert_eq!(buf.len(), header_len + 4096);
}

#[test]
fn no_frame_max_means_one_body_frame() {
    let mut buf = BytesMut::new();
    encode_content(&mut buf, 1, 60, &[0, 0], &[3; 100_000], 0).unwrap();
    assert_eq!(body_sizes(&frames(buf, 0)), vec![100_000]);
}

#[test]
fn tiny_frame_max() {
    let mut buf = BytesMut::from(&b"keep"[..]);
    assert_eq!(
        encode_content(&mut buf, 1, 60, &[0, 0], b"x", 8),
        Err(CodecError::FrameMaxTooSmall { frame_max: 8 })
    );
    // The header alone (12 + 2 bytes of payload) does not fit in 9.
    assert_eq!(
        encode_content(&mut buf, 1, 60, &[0, 0], b"x", 9),
        Err(CodecError::FrameTooLarge {
            size: 14,
            frame_max: 9
        })
    );
    assert_eq!(
        encode_content(&mut buf, 1, 60, &[], b"x", 0),
        Err(CodecError::MalformedProperties)
    );
    assert_eq!(&buf[..], b"keep");
    // 22 fits the header exactly; bodies go 14 bytes a frame.
    encode_content(&mut buf, 1, 60, &[0, 0], &[1; 30], 22).unwrap();
    let buf = buf.split_off(4);
    assert_eq!(body_sizes(&frames(buf, 22)), vec![14, 14, 2]);
}

#[test]
fn header_frame_matches_amq_protocol() {
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_headers(every_type_table())
        .with_delivery_mode(2)
        .with_priority(5)
        .with_correlation_id("corr".into())
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_expiration("60000".into())
        .with_message_id("id-1".into())
        .with_timestamp(1_700_000_000)
        .with_type("event".into())
        .with_user_id("guest".into())
        .with_app_id("app".into())
        .with_cluster_id("c".into());
    let raw = encode_properties(&props).unwrap();
    assert_eq!(parse_properties(&raw).unwrap(), props);
    let mut buf = BytesMut::new();
    encode_content(&mut buf, 3, 60, &raw, &[], 131_072).unwrap();
    let reference = AMQPFrame::Header(
        3,
        AMQPContentHeader {
            class_id: 60,
            body_size: 0,
            properties: props,
        },
    );
    let reference = gen_frame(&reference)(WriteContext::from(Vec::new()))
        .unwrap()
        .into_inner()
        .0;
    assert_eq!(&buf[..], &reference[..]);
}

#[test]
fn empty_properties() {
    let raw = encode_properties(&BasicProperties::default()).unwrap();
    assert_eq!(&raw[..], &[0, 0]);
    assert_eq!(parse_properties(&raw).unwrap(), BasicProperties::default());
    assert_eq!(
        parse_properties(&[0, 0, 1]),
        Err(CodecError::MalformedProperties)
    );
    assert_eq!(parse_properties(&[0]), Err(CodecError::MalformedProperties));
}

fn every_type_table() -> FieldTable {
    let mut nested = FieldTable::default();
    nested.insert("inner".into(), AMQPValue::LongString("v".into()));
    let mut t = FieldTable::default();
    t.insert("bool".into(), AMQPValue::Boolean(true));
    t.insert("i8".into(), AMQPValue::ShortShortInt(-8));
    t.insert("u8".into(), AMQPValue::ShortShortUInt(200));
    t.insert("i16".into(), AMQPValue::ShortInt(-16));
    t.insert("u16".into(), AMQPValue::ShortUInt(60_000));
    t.insert("i32".into(), AMQPValue::LongInt(-32));
    t.insert("u32".into(), AMQPValue::LongUInt(4_000_000_000));
    t.insert("i64".into(), AMQPValue::LongLongInt(i64::MIN));
    t.insert("f32".into(), AMQPValue::Float(1.5));
    t.insert("f64".into(), AMQPValue::Double(-2.25));
    t.insert(
        "dec".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 12345,
        }),
    );
    t.insert("str".into(), AMQPValue::LongString("long string".into()));
    t.insert(
        "bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0, 255])),
    );
    t.insert("ts".into(), AMQPValue::Timestamp(1_700_000_000));
    t.insert("table".into(), AMQPValue::FieldTable(nested));
    t.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongInt(1),
            AMQPValue::LongString("two".into()),
            AMQPValue::Void,
        ])),
    );
    t.insert("void".into(), AMQPValue::Void);
    t
}

/// Hand-built wire bytes for a table, to control what amq-protocol's
/// generator would not produce: key order, duplicate keys, the spec's 'U'
/// and 'L' tags next to RabbitMQ's 's' and 'l', non-canonical booleans,
/// -0.0 and NaN payloads.
struct RawTable(BytesMut);

impl RawTable {
    fn new() -> Self {
        RawTable(BytesMut::new())
    }
    fn key(&mut self, key: &str, tag: u8) -> &mut BytesMut {
        self.0.put_u8(key.len() as u8);
        self.0.put_slice(key.as_bytes());
        self.0.put_u8(tag);
        &mut self.0
    }
    fn finish(&self) -> Vec<u8> {
        let mut out = (self.0.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&self.0);
        out
    }
}

fn raw_headers() -> Vec<u8> {
    let mut nested = RawTable::new();
    nested.key("z", b'S').put_slice(&[0, 0, 0, 1, b'z']);
    nested.key("a", b't').put_u8(0);
    let mut array = BytesMut::new();
    for (tag, bytes) in [
        (b'I', &[0u8, 0, 0, 1][..]),
        (b'S', &[0, 0, 0, 2, b'h', b'i']),
        (b'V', &[]),
        (b'A', &[0, 0, 0, 0]),
    ] {
        array.put_u8(tag);
        array.put_slice(bytes);
    }
    let mut t = RawTable::new();
    t.key("zz-last-first", b't').put_u8(2); // non-canonical true
    t.key("i8", b'b').put_i8(-1);
    t.key("u8", b'B').put_u8(255);
    t.key("i16-rabbit", b's').put_i16(-300);
    t.key("i16-spec", b'U').put_i16(-301);
    t.key("u16", b'u').put_u16(65535);
    t.key("i32", b'I').put_i32(i32::MIN);
    t.key("u32", b'i').put_u32(u32::MAX);
    t.key("i64-rabbit", b'l').put_i64(-5);
    t.key("i64-spec", b'L').put_i64(-6);
    t.key("f32", b'f').put_u32((-0.0f32).to_bits());
    t.key("f32-nan", b'f').put_u32(0x7FC0_1234);
    t.key("f64", b'd').put_f64(1e300);
    let dec = t.key("decimal", b'D');
    dec.put_u8(3);
    dec.put_u32(1_234_567);
    t.key("long-string", b'S')
        .put_slice(&[0, 0, 0, 4, 0xFF, 0, b'a', 0x80]);
    t.key("byte-array", b'x').put_slice(&[0, 0, 0, 3, 1, 2, 3]);
    t.key("timestamp", b'T').put_u64(1_600_000_000);
    t.key("nested", b'F').put_slice(&nested.finish());
    let arr = t.key("array", b'A');
    arr.put_u32(array.len() as u32);
    arr.put_slice(&array);
    t.key("void", b'V');
    t.key("i8", b'b').put_i8(7); // duplicate key
    t.key("", b'V'); // empty key
    t.finish()
}

/// content-type, headers, delivery-mode, timestamp, app-id.
fn raw_properties() -> Vec<u8> {
    let flags: u16 = (1 << 15) | (1 << 13) | (1 << 12) | (1 << 6) | (1 << 3);
    let mut raw = flags.to_be_bytes().to_vec();
    raw.extend_from_slice(b"\x10application/json");
    raw.extend_from_slice(&raw_headers());
    raw.push(2);
    raw.extend_from_slice(&1_700_000_000u64.to_be_bytes());
    raw.extend_from_slice(b"\x06my-app");
    raw
}

#[test]
fn raw_properties_round_trip_exactly_with_every_field_type() {
    let raw = raw_properties();
    let body = b"payload";
    let mut published = BytesMut::new();
    encode_content(&mut published, 1, 60, &raw, body, 4096).unwrap();
    let published = published.freeze();
    let len = check_frame(&published, 4096).unwrap().unwrap();
    let Frame::Header {
        raw_properties,
        props,
        body_size,
        ..
    } = parse_frame(published.slice(..len)).unwrap()
    else {
        panic!("not a header");
    };
    assert_eq!(&raw_properties[..], &raw[..]);
    assert_eq!(body_size, 7);
    // Re-sending the stored raw bytes reproduces the publisher's frames.
    let mut delivered = BytesMut::new();
    encode_content(&mut delivered, 1, 60, &raw_properties, body, 4096).unwrap();
    assert_eq!(delivered.freeze(), published);
    let properties = crate::parse_properties(&raw_properties).unwrap();
    // The frame's props blob converts back to the same properties (the
    // same bytes but for the aliases `U` / `L`, written `s` / `l`).
    let back = crate::model::props_from_model(&props).unwrap();
    assert_eq!(back.len(), raw.len());
    // (Debug text: a NaN header is not equal to itself.)
    assert_eq!(
        format!("{:?}", crate::parse_properties(&back).unwrap()),
        format!("{properties:?}")
    );

    // The typed view decodes every type...
    assert_eq!(properties.delivery_mode(), &Some(2));
    assert_eq!(properties.app_id().as_ref().unwrap().as_str(), "my-app");
    let headers = properties.headers().as_ref().unwrap().inner();
    assert_eq!(headers["zz-last-first"], AMQPValue::Boolean(true));
    assert_eq!(headers["i16-spec"], AMQPValue::ShortInt(-301));
    assert_eq!(headers["i64-spec"], AMQPValue::LongLongInt(-6));
    assert_eq!(headers["u32"], AMQPValue::LongUInt(u32::MAX));
    assert_eq!(headers["i8"], AMQPValue::ShortShortInt(7)); // last one wins
    assert_eq!(
        headers["long-string"],
        AMQPValue::LongString(vec![0xFF, 0, b'a', 0x80].into())
    );
    assert_eq!(
        headers["decimal"],
        AMQPValue::DecimalValue(DecimalValue {
            scale: 3,
            value: 1_234_567
        })
    );
    assert!(matches!(headers["nested"], AMQPValue::FieldTable(_)));
    assert!(matches!(headers["array"], AMQPValue::FieldArray(_)));
    assert_eq!(headers.len(), 21);

    // ...but re-encoding the typed view is lossy (sorted keys, deduplicated,
    // 'U'/'L' become 's'/'l', booleans canonical): why raw bytes are kept.
    let re_encoded = encode_properties(&properties).unwrap();
    assert_ne!(&re_encoded[..], &raw[..]);
}

#[test]
fn typed_round_trip_is_stable_after_one_normalisation() {
    let props = BasicProperties::default().with_headers(every_type_table());
    let raw = encode_properties(&props).unwrap();
    let again = encode_properties(&parse_properties(&raw).unwrap()).unwrap();
    assert_eq!(raw, again);
    assert_eq!(parse_properties(&again).unwrap(), props);
}

/// Fuzz regression (amqp_session): `check_frame` accepts a header frame
/// whose payload is frame_max (RabbitMQ's 8-byte allowance), which
/// `encode_content` cannot re-send within frame_max, so the writer dropped
/// the delivery. The whole-header variant sends it as RabbitMQ does and
/// still splits bodies to frame_max.
#[test]
fn whole_header_variant_sends_headers_that_do_not_fit() {
    let frame_max = 4096u32;
    // A header payload of exactly frame_max: 12 fixed bytes + properties.
    // (Raw properties are opaque to the encoder.)
    let raw = vec![0u8; frame_max as usize - HEADER_FIXED_SIZE];
    let body = vec![5u8; 10_000];
    let mut strict = BytesMut::new();
    assert!(matches!(
        encode_content(&mut strict, 1, 60, &raw, &body, frame_max),
        Err(CodecError::FrameTooLarge { .. })
    ));
    assert!(strict.is_empty());

    let mut buf = BytesMut::new();
    encode_content_whole_header(&mut buf, 1, 60, &raw, &body, frame_max).unwrap();
    // The header frame is whole, 8 bytes over frame_max; every body frame fits.
    let header_len = 7 + frame_max as usize + 1;
    assert_eq!(check_frame(&buf, 0).unwrap(), Some(header_len));
    let mut at = header_len;
    let mut total = 0;
    while at < buf.len() {
        let len = check_frame(&buf[at..], 0).unwrap().unwrap();
        assert!(len <= frame_max as usize);
        total += len - 8;
        at += len;
    }
    assert_eq!(total, body.len());

    // Where the header fits, both variants write the same bytes.
    let raw = encode_properties(&BasicProperties::default().with_priority(1)).unwrap();
    let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
    encode_content(&mut a, 3, 60, &raw, &body, frame_max).unwrap();
    encode_content_whole_header(&mut b, 3, 60, &raw, &body, frame_max).unwrap();
    assert_eq!(a, b);
    // Nothing changes for frame_max values too small for any body byte.
    assert_eq!(
        encode_content_whole_header(&mut b, 3, 60, &raw, b"x", 8),
        Err(CodecError::FrameMaxTooSmall { frame_max: 8 })
    );
}

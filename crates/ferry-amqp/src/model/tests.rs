#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::content::{encode_properties, parse_properties};
use crate::BasicProperties;
use ferry_model::Properties;

fn every_header() -> FieldTable {
    let mut nested = FieldTable::default();
    nested.insert("deep".into(), AMQPValue::LongString("x".into()));
    let mut t = FieldTable::default();
    for (k, v) in [
        ("bool", AMQPValue::Boolean(true)),
        ("i8", AMQPValue::ShortShortInt(-8)),
        ("u8", AMQPValue::ShortShortUInt(8)),
        ("i16", AMQPValue::ShortInt(-16)),
        ("u16", AMQPValue::ShortUInt(16)),
        ("i32", AMQPValue::LongInt(-32)),
        ("u32", AMQPValue::LongUInt(32)),
        ("i64", AMQPValue::LongLongInt(i64::MIN)),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(-2.25)),
        (
            "dec",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 123,
            }),
        ),
        ("str", AMQPValue::LongString(b"\xff binary".to_vec().into())),
        ("ts", AMQPValue::Timestamp(1_765_000_000)),
        ("table", AMQPValue::FieldTable(nested)),
        (
            "array",
            AMQPValue::FieldArray(vec![AMQPValue::LongInt(1), AMQPValue::Void].into()),
        ),
        ("bytes", AMQPValue::ByteArray(vec![0u8, 1].into())),
        ("void", AMQPValue::Void),
    ] {
        t.insert(k.into(), v);
    }
    t
}

fn full() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_content_encoding("utf-8".into())
        .with_headers(every_header())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("c".into())
        .with_reply_to("r".into())
        .with_expiration("60000".into())
        .with_message_id("m".into())
        .with_timestamp(1_765_000_000)
        .with_type("greeting".into())
        .with_user_id("guest".into())
        .with_app_id("app".into())
        .with_cluster_id("cl".into())
}

#[test]
fn amqp_properties_survive_the_model_byte_for_byte() {
    for p in [
        BasicProperties::default(),
        full(),
        BasicProperties::default().with_delivery_mode(2),
    ] {
        let raw = encode_properties(&p).unwrap();
        let blob = props_to_model(&raw).unwrap();
        let back = props_from_model(&blob).unwrap();
        assert_eq!(back, raw);
        assert_eq!(parse_properties(&back).unwrap(), p);
    }
}

#[test]
fn the_model_sees_every_property_and_header_type() {
    let raw = encode_properties(&full()).unwrap();
    let p = Properties::decode(&props_to_model(&raw).unwrap()).unwrap();
    assert_eq!(p.content_type.as_deref(), Some(&b"text/plain"[..]));
    assert_eq!(
        (p.delivery_mode, p.priority, p.timestamp),
        (Some(2), Some(7), Some(1_765_000_000))
    );
    assert_eq!(p.kind.as_deref(), Some(&b"greeting"[..]));
    let h = p.headers.unwrap();
    assert_eq!(h, table_from_amqp(&every_header()));
    assert_eq!(
        h.get("str"),
        Some(&Value::Str(Bytes::from_static(b"\xff binary")))
    );
    assert_eq!(
        h.get("bytes"),
        Some(&Value::Bytes(Bytes::from_static(&[0, 1])))
    );
    assert_eq!(table_to_amqp(&h).unwrap(), every_header());
}

/// A header table as a publisher wrote it: keys out of order, one repeated.
fn raw_with_table(entries: &[u8]) -> Vec<u8> {
    let mut raw = vec![0x20, 0x00]; // headers only
    raw.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    raw.extend_from_slice(entries);
    raw
}

#[test]
fn publisher_order_and_repeated_keys_are_kept() {
    let mut e = Vec::new();
    for (k, v) in [(&b"zz"[..], 1u8), (b"aa", 2), (b"zz", 3)] {
        e.push(k.len() as u8);
        e.extend_from_slice(k);
        e.extend_from_slice(&[b'B', v]);
    }
    let raw = raw_with_table(&e);
    let blob = props_to_model(&raw).unwrap();
    assert_eq!(props_from_model(&blob).unwrap(), raw);
    let h = props::headers(&blob).unwrap().unwrap();
    assert_eq!(h.get("zz"), Some(&Value::U8(1)));
    assert_eq!(h.len(), 3);
}

#[test]
fn rabbitmq_type_aliases_read_as_rabbitmq_reads_them() {
    let mut e = vec![1, b'a', b'U', 0xff, 0xfe, 1, b'b', b'L'];
    e.extend_from_slice(&(-5i64).to_be_bytes());
    let blob = props_to_model(&raw_with_table(&e)).unwrap();
    let h = props::headers(&blob).unwrap().unwrap();
    assert_eq!(h.get("a"), Some(&Value::I16(-2)));
    assert_eq!(h.get("b"), Some(&Value::I64(-5)));
}

#[test]
fn damaged_properties_are_errors_never_panics() {
    let raw = encode_properties(&full()).unwrap();
    for n in 0..raw.len() {
        assert!(props_to_model(&raw[..n]).is_err(), "prefix {n}");
    }
    let mut extra = raw.to_vec();
    extra.push(0);
    assert!(props_to_model(&extra).is_err());
    assert!(props_to_model(&[0x00, 0x01]).is_err(), "a second flag word");
    assert!(
        props_to_model(&raw_with_table(&[1, b'k', b'?'])).is_err(),
        "unknown type"
    );
}

#[test]
fn nesting_is_bounded_as_at_the_codec() {
    // [[[ ... ]]] one level deeper than allowed, inside the headers table.
    let mut v = vec![b'V'];
    for _ in 0..MAX_NESTING {
        let mut a = vec![b'A'];
        a.extend_from_slice(&(v.len() as u32).to_be_bytes());
        a.extend_from_slice(&v);
        v = a;
    }
    let mut e = vec![1, b'k'];
    e.extend_from_slice(&v);
    assert!(props_to_model(&raw_with_table(&e)).is_err());
}

#[test]
fn fields_amqp_cannot_carry_are_left_out_or_refused() {
    let mut blob = Vec::new();
    props::put_field(&mut blob, tag::DELIVERY_MODE, &[2]);
    props::put_field(&mut blob, tag::KEY, b"kafka key");
    props::put_field(&mut blob, 40, b"newer field");
    let raw = props_from_model(&Bytes::from(blob)).unwrap();
    assert_eq!(
        parse_properties(&raw).unwrap(),
        BasicProperties::default().with_delivery_mode(2)
    );

    let mut long = Vec::new();
    props::put_field(&mut long, tag::MESSAGE_ID, &[b'x'; 256]);
    assert!(matches!(
        props_from_model(&Bytes::from(long)),
        Err(CodecError::ShortStringTooLong {
            field: "message_id",
            len: 256
        })
    ));
    let t: Table = [("k".repeat(256), Value::Void)].into_iter().collect();
    assert!(table_to_amqp(&t).is_err());
}

#[test]
fn keys_of_128_to_255_bytes_change_size_and_still_round_trip() {
    let key = "k".repeat(200);
    let mut e = vec![200];
    e.extend_from_slice(key.as_bytes());
    e.extend_from_slice(&[b'F', 0, 0, 0, 0]); // an empty nested table
    let raw = raw_with_table(&e);
    let blob = props_to_model(&raw).unwrap();
    assert_eq!(props_from_model(&blob).unwrap(), raw);
    let h = props::headers(&blob).unwrap().unwrap();
    assert_eq!(h.get(&key), Some(&Value::Table(Table::new())));
}

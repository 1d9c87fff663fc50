#![allow(clippy::unwrap_used, clippy::expect_used)]

use amq_protocol::protocol::{basic, parse_class, AMQPClass};
use bytes::BytesMut;

use super::*;
use crate::encode_method;
use crate::test_util::reference_frame;

/// Strings covering the edges: empty, UTF-8, exactly 255 bytes.
fn strings() -> Vec<String> {
    vec![
        String::new(),
        "amq.topic".into(),
        "clé.été".into(),
        "x".repeat(255),
    ]
}

fn generic(channel: u16, method: basic::AMQPMethod) -> Vec<u8> {
    let method = AMQPClass::Basic(method);
    let mut buf = BytesMut::new();
    encode_method(&mut buf, channel, &method).unwrap();
    assert_eq!(&buf[..], &reference_frame(channel, &method)[..]);
    buf.to_vec()
}

const TAGS: [u64; 4] = [0, 1, 1 << 33, u64::MAX];

#[test]
fn deliver_is_byte_identical() {
    for s in strings() {
        for tag in TAGS {
            for redelivered in [false, true] {
                let mut fast = BytesMut::new();
                encode_basic_deliver(&mut fast, 7, &s, tag, redelivered, "ex", &s).unwrap();
                let expected = generic(
                    7,
                    basic::AMQPMethod::Deliver(basic::Deliver {
                        consumer_tag: s.as_str().into(),
                        delivery_tag: tag,
                        redelivered,
                        exchange: "ex".into(),
                        routing_key: s.as_str().into(),
                    }),
                );
                assert_eq!(&fast[..], &expected[..]);
            }
        }
    }
}

#[test]
fn get_ok_is_byte_identical() {
    for s in strings() {
        for (tag, count) in TAGS.into_iter().zip([0, 1, 1000, u32::MAX]) {
            for redelivered in [false, true] {
                let mut fast = BytesMut::new();
                encode_basic_get_ok(&mut fast, 65535, tag, redelivered, &s, "rk", count).unwrap();
                let expected = generic(
                    65535,
                    basic::AMQPMethod::GetOk(basic::GetOk {
                        delivery_tag: tag,
                        redelivered,
                        exchange: s.as_str().into(),
                        routing_key: "rk".into(),
                        message_count: count,
                    }),
                );
                assert_eq!(&fast[..], &expected[..]);
            }
        }
    }
}

#[test]
fn return_is_byte_identical() {
    for s in strings() {
        for code in [312u16, 313] {
            let mut fast = BytesMut::new();
            encode_basic_return(&mut fast, 1, code, "NO_ROUTE", &s, &s).unwrap();
            let expected = generic(
                1,
                basic::AMQPMethod::Return(basic::Return {
                    reply_code: code,
                    reply_text: "NO_ROUTE".into(),
                    exchange: s.as_str().into(),
                    routing_key: s.as_str().into(),
                }),
            );
            assert_eq!(&fast[..], &expected[..]);
        }
    }
}

#[test]
fn ack_and_nack_are_byte_identical() {
    for tag in TAGS {
        for multiple in [false, true] {
            let mut fast = BytesMut::new();
            encode_basic_ack(&mut fast, 2, tag, multiple);
            let expected = generic(
                2,
                basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: tag,
                    multiple,
                }),
            );
            assert_eq!(&fast[..], &expected[..]);
            for requeue in [false, true] {
                let mut fast = BytesMut::new();
                encode_basic_nack(&mut fast, 2, tag, multiple, requeue);
                let expected = generic(
                    2,
                    basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: tag,
                        multiple,
                        requeue,
                    }),
                );
                assert_eq!(&fast[..], &expected[..]);
            }
        }
    }
}

#[test]
fn frames_append_to_one_buffer() {
    let mut buf = BytesMut::new();
    encode_basic_ack(&mut buf, 1, 1, false);
    encode_basic_deliver(&mut buf, 1, "c", 2, false, "", "q").unwrap();
    crate::encode_heartbeat(&mut buf);
    let mut expected = generic(
        1,
        basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 1,
            multiple: false,
        }),
    );
    expected.extend(generic(
        1,
        basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "c".into(),
            delivery_tag: 2,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
        }),
    ));
    expected.extend([8, 0, 0, 0, 0, 0, 0, 0xCE]);
    assert_eq!(&buf[..], &expected[..]);
}

#[test]
fn too_long_short_strings_fail_without_writing() {
    let long = "y".repeat(256);
    let mut buf = BytesMut::from(&b"prefix"[..]);
    let err = encode_basic_deliver(&mut buf, 1, "c", 1, false, "", &long).unwrap_err();
    assert_eq!(
        err,
        CodecError::ShortStringTooLong {
            field: "routing_key",
            len: 256
        }
    );
    assert!(encode_basic_get_ok(&mut buf, 1, 1, false, &long, "", 0).is_err());
    assert!(encode_basic_return(&mut buf, 1, 312, &long, "", "").is_err());
    assert_eq!(&buf[..], b"prefix");
}

/// What the generic path (amq-protocol) makes of a method payload.
fn reference_parse(payload: &[u8]) -> Option<AMQPClass> {
    match parse_class(payload) {
        Ok(([], m)) => Some(m),
        _ => None,
    }
}

fn check_same(payload: &[u8]) {
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    let fast = parse_fast(class_id, method_id, &payload[4..]).expect("fast path");
    assert_eq!(fast, reference_parse(payload), "payload {payload:?}");
}

/// Every flag octet, every truncation, trailing bytes, bad UTF-8: the fast
/// parsers agree with amq-protocol on the value or on the failure.
#[test]
fn fast_parsers_agree_with_amq_protocol() {
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    for flags in 0..=255u8 {
        for ids in [[0, 60, 0, 80], [0, 60, 0, 90], [0, 60, 0, 120]] {
            let mut p = ids.to_vec();
            p.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
            p.push(flags);
            payloads.push(p);
        }
        let mut p = vec![0, 60, 0, 40, 0, 0];
        p.extend_from_slice(b"\x09amq.topic\x05a.b.c");
        p.push(flags);
        payloads.push(p);
    }
    // Non-UTF-8 routing key, and a ticket value that must be ignored.
    payloads.push(vec![0, 60, 0, 40, 0, 7, 0, 1, 0xFF, 1]);
    payloads.push(vec![0, 60, 0, 40, 0, 7, 0, 2, 0xC3, 0xA9, 3]);
    let mut all = Vec::new();
    for p in &payloads {
        for cut in 4..=p.len() {
            all.push(p[..cut].to_vec());
        }
        let mut padded = p.clone();
        padded.push(0);
        all.push(padded);
    }
    for p in all {
        check_same(&p);
    }
}

#[test]
fn other_methods_take_the_generic_path() {
    assert!(parse_fast(60, 60, &[]).is_none());
    assert!(parse_fast(50, 40, &[]).is_none());
}

//! The client-side fast codecs agree with amq-protocol: the publish encoder
//! byte for byte, the parsers on every value and on every failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amq_protocol::protocol::{basic, parse_class, AMQPClass};
use bytes::BytesMut;

use super::*;
use crate::test_util::reference_frame;

fn strings() -> Vec<String> {
    vec![
        String::new(),
        "amq.topic".into(),
        "clé.été".into(),
        "x".repeat(255),
    ]
}

const TAGS: [u64; 4] = [0, 1, 1 << 33, u64::MAX];

#[test]
fn publish_is_byte_identical() {
    for s in strings() {
        for mandatory in [false, true] {
            for immediate in [false, true] {
                let mut fast = BytesMut::new();
                encode_basic_publish(&mut fast, 9, &s, "rk", mandatory, immediate).unwrap();
                encode_basic_publish(&mut fast, 9, "", &s, mandatory, immediate).unwrap();
                let mut expected = Vec::new();
                for (exchange, routing_key) in [(s.as_str(), "rk"), ("", s.as_str())] {
                    let method = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                        exchange: exchange.into(),
                        routing_key: routing_key.into(),
                        mandatory,
                        immediate,
                    }));
                    expected.extend(reference_frame(9, &method));
                }
                assert_eq!(&fast[..], &expected[..]);
            }
        }
    }
}

#[test]
fn publish_with_a_too_long_key_writes_nothing() {
    let mut buf = BytesMut::from(&b"prefix"[..]);
    assert!(encode_basic_publish(&mut buf, 1, "", &"k".repeat(256), false, false).is_err());
    assert_eq!(&buf[..], b"prefix");
}

/// The method payload (ids + arguments) of a reference frame.
fn payload(method: basic::AMQPMethod) -> Vec<u8> {
    let frame = reference_frame(1, &AMQPClass::Basic(method));
    frame[7..frame.len() - 1].to_vec()
}

fn reference_parse(payload: &[u8]) -> Option<AMQPClass> {
    match parse_class(payload) {
        Ok(([], m)) => Some(m),
        _ => None,
    }
}

#[test]
fn deliver_parser_reads_what_amq_protocol_writes() {
    for s in strings() {
        for tag in TAGS {
            for redelivered in [false, true] {
                let d = basic::Deliver {
                    consumer_tag: s.as_str().into(),
                    delivery_tag: tag,
                    redelivered,
                    exchange: "ex".into(),
                    routing_key: s.as_str().into(),
                };
                let p = payload(basic::AMQPMethod::Deliver(d.clone()));
                let fast = parse_basic_deliver(&p).unwrap();
                assert_eq!(fast.consumer_tag, d.consumer_tag.as_str().as_bytes());
                assert_eq!(fast.delivery_tag, tag);
                assert_eq!(fast.redelivered, redelivered);
                assert_eq!(fast.exchange, b"ex");
                assert_eq!(fast.routing_key, s.as_bytes());
            }
        }
    }
}

/// Truncations and trailing bytes fail exactly where amq-protocol fails
/// (it also rejects non-UTF-8 strings, which the borrowed view accepts on
/// purpose: those cases are left out).
#[test]
fn deliver_parser_fails_like_amq_protocol() {
    let p = payload(basic::AMQPMethod::Deliver(basic::Deliver {
        consumer_tag: "ctag".into(),
        delivery_tag: 42,
        redelivered: true,
        exchange: "".into(),
        routing_key: "q".into(),
    }));
    for cut in 0..=p.len() {
        let fast = parse_basic_deliver(&p[..cut]).is_some();
        let reference = cut >= 4 && reference_parse(&p[..cut]).is_some();
        assert_eq!(fast, reference, "cut at {cut}");
    }
    let mut padded = p.clone();
    padded.push(0);
    assert!(parse_basic_deliver(&padded).is_none());
    // Another method with the same argument layout is not a deliver.
    let mut other = p;
    other[3] = 71;
    assert!(parse_basic_deliver(&other).is_none());
}

#[test]
fn ack_and_nack_parsers_agree_with_amq_protocol() {
    for flags in 0..=255u8 {
        for method_id in [80u8, 120] {
            let mut p = vec![0, 60, 0, method_id];
            p.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
            p.push(flags);
            let mut cases: Vec<Vec<u8>> = (0..=p.len()).map(|cut| p[..cut].to_vec()).collect();
            let mut padded = p.clone();
            padded.push(0);
            cases.push(padded);
            for case in cases {
                let reference = if case.len() >= 4 {
                    reference_parse(&case)
                } else {
                    None
                };
                let fast = match method_id {
                    80 => parse_basic_ack(&case).map(basic::AMQPMethod::Ack),
                    _ => parse_basic_nack(&case).map(basic::AMQPMethod::Nack),
                };
                assert_eq!(fast.map(AMQPClass::Basic), reference, "payload {case:?}");
            }
        }
    }
}

#[test]
fn ack_and_nack_parsers_reject_other_methods() {
    let ack = payload(basic::AMQPMethod::Ack(basic::Ack {
        delivery_tag: 7,
        multiple: true,
    }));
    assert_eq!(
        parse_basic_ack(&ack),
        Some(basic::Ack {
            delivery_tag: 7,
            multiple: true
        })
    );
    assert!(parse_basic_nack(&ack).is_none());
    assert!(parse_basic_deliver(&ack).is_none());
    let reject = payload(basic::AMQPMethod::Reject(basic::Reject {
        delivery_tag: 7,
        requeue: true,
    }));
    assert!(parse_basic_ack(&reject).is_none());
    assert!(parse_basic_nack(&reject).is_none());
}

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use amq_protocol::protocol::{basic, AMQPClass};
use bytes::BytesMut;

use super::*;
use crate::test_util::{all_methods, method_frame, reference_frame};
use crate::{check_frame, parse_frame, Frame};

#[test]
fn every_method_round_trips_and_matches_amq_protocol() {
    let methods = all_methods();
    for (i, method) in methods.iter().enumerate() {
        let channel = i as u16;
        let mut buf = BytesMut::new();
        encode_method(&mut buf, channel, method).unwrap();
        assert_eq!(
            &buf[..],
            &reference_frame(channel, method)[..],
            "{method:?}"
        );
        assert_eq!(check_frame(&buf, 0).unwrap(), Some(buf.len()));
        match parse_frame(buf.freeze()).unwrap() {
            Frame::Method {
                channel: c,
                method: m,
            } => {
                assert_eq!(c, channel);
                assert_eq!(&m, method);
            }
            other => panic!("not a method: {other:?}"),
        }
    }
}

#[test]
fn method_name_table_is_exactly_the_known_methods() {
    let sampled: BTreeSet<(u16, u16)> = all_methods()
        .iter()
        .map(|m| (m.get_amqp_class_id(), m.get_amqp_method_id()))
        .collect();
    let named: BTreeSet<(u16, u16)> = (0..=200u16)
        .flat_map(|c| (0..=200u16).map(move |m| (c, m)))
        .filter(|&(c, m)| method_name(c, m).is_some())
        .collect();
    assert_eq!(sampled.len(), 66);
    assert_eq!(sampled, named);
    assert_eq!(method_name(60, 40), Some("basic.publish"));
    assert_eq!(method_name(40, 51), Some("exchange.unbind-ok"));
}

#[test]
fn unknown_methods_are_not_implemented() {
    for (class_id, method_id) in [(60u16, 99u16), (99, 10), (40, 50), (0, 0)] {
        let mut payload = class_id.to_be_bytes().to_vec();
        payload.extend_from_slice(&method_id.to_be_bytes());
        payload.extend_from_slice(&[0; 8]);
        let err = parse_frame(method_frame(1, &payload)).unwrap_err();
        assert_eq!(
            err,
            CodecError::UnknownMethod {
                class_id,
                method_id
            }
        );
        assert_eq!(err.reply_code(), crate::ReplyCode::NOT_IMPLEMENTED);
        assert_eq!(err.method_ids(), (class_id, method_id));
    }
}

#[test]
fn payload_shorter_than_ids_is_a_frame_error() {
    for payload in [&[][..], &[0, 60], &[0, 60, 0]] {
        let err = parse_frame(method_frame(1, payload)).unwrap_err();
        assert!(matches!(err, CodecError::MalformedFrame { .. }), "{err:?}");
        assert_eq!(err.reply_code(), crate::ReplyCode::FRAME_ERROR);
    }
}

#[test]
fn truncated_or_padded_arguments_are_malformed() {
    for method in all_methods() {
        let reference = reference_frame(3, &method);
        let payload = &reference[7..reference.len() - 1];
        let ids = (method.get_amqp_class_id(), method.get_amqp_method_id());
        let malformed = |e: CodecError| match e {
            CodecError::MalformedMethod {
                class_id,
                method_id,
                ..
            } => (class_id, method_id) == ids,
            _ => false,
        };
        // Every truncation that still holds the ids.
        for cut in 4..payload.len() {
            let err = parse_frame(method_frame(3, &payload[..cut])).unwrap_err();
            assert!(malformed(err), "{method:?} cut at {cut}");
        }
        let mut padded = payload.to_vec();
        padded.push(0);
        let err = parse_frame(method_frame(3, &padded)).unwrap_err();
        assert!(malformed(err), "{method:?} padded");
    }
}

#[test]
fn non_utf8_short_string_is_malformed() {
    // queue.declare with queue name 0xFF: RabbitMQ would take it, but
    // amq-protocol's ShortString is a String. Pin the behaviour.
    let payload = [0, 50, 0, 10, 0, 0, 1, 0xFF, 0, 0, 0, 0, 0];
    let err = parse_frame(method_frame(1, &payload)).unwrap_err();
    assert_eq!(
        err,
        CodecError::MalformedMethod {
            class_id: 50,
            method_id: 10,
            name: "queue.declare"
        }
    );
}

#[test]
fn qos_with_prefetch_size_is_refused() {
    // class 60, method 10, prefetch-size 1, prefetch-count 10, global 0
    let with_size = [0, 60, 0, 10, 0, 0, 0, 1, 0, 10, 0];
    let err = parse_frame(method_frame(1, &with_size)).unwrap_err();
    assert_eq!(
        err,
        CodecError::PrefetchSizeUnsupported { prefetch_size: 1 }
    );
    assert_eq!(err.reply_code(), crate::ReplyCode::NOT_IMPLEMENTED);
    assert_eq!(err.method_ids(), (60, 10));
    let without = [0, 60, 0, 10, 0, 0, 0, 0, 0, 10, 1];
    let frame = parse_frame(method_frame(1, &without)).unwrap();
    assert_eq!(
        frame,
        Frame::Method {
            channel: 1,
            method: AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: 10,
                global: true
            }))
        }
    );
}

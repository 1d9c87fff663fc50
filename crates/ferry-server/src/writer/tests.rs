#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use bytes::Bytes;
use ferry_amqp::{check_frame, parse_frame, Frame};

/// Fuzz regression (amqp_session, found within its first minute):
/// a client may send a content header whose payload is frame_max
/// (`check_frame` grants RabbitMQ's 8-byte allowance), or publish on a
/// connection with a larger frame_max than the consumer's. The writer could
/// not re-encode such a header and dropped the delivery, leaving the
/// message checked out to a consumer that never saw it.
#[test]
fn deliveries_with_headers_larger_than_frame_max_are_sent() {
    let frame_max = 4096u32;
    // A header payload of frame_max exactly, as the client was allowed to
    // send it: 12 fixed bytes + raw properties.
    let mut raw = vec![0x20, 0x00]; // flags: headers present
    let table_len = frame_max as usize - 12 - 2 - 4;
    raw.extend_from_slice(&(table_len as u32).to_be_bytes());
    raw.extend_from_slice(&[3, b'p', b'a', b'd', b'S']);
    let pad = table_len - 5 - 4;
    raw.extend_from_slice(&(pad as u32).to_be_bytes());
    raw.resize(frame_max as usize - 12, b'p');
    assert!(ferry_amqp::parse_properties(&raw).is_ok());
    let message = Arc::new(Message {
        exchange: Arc::from("amq.topic"),
        routing_key: Arc::from("k"),
        properties: ferry_amqp::model::props_to_model(&raw).unwrap(),
        body: Bytes::from(vec![7u8; 9000]),
        persistent: false,
        expiration_ms: None,
        bcc: Vec::new(),
    });
    for item in [
        Outbound::Deliver {
            channel: 1,
            consumer_tag: Arc::from("c"),
            delivery_tag: 1,
            redelivered: false,
            message: message.clone(),
        },
        Outbound::GetOk {
            channel: 1,
            delivery_tag: 2,
            redelivered: false,
            message_count: 0,
            message: message.clone(),
        },
        Outbound::Return {
            channel: 1,
            code: 312,
            text: "NO_ROUTE",
            message: message.clone(),
        },
    ] {
        let mut buf = BytesMut::new();
        let mut delivered = 0;
        assert!(!encode(&mut buf, item, frame_max, &mut delivered));
        // method, header, then bodies adding up to the message.
        let mut at = 0;
        let mut kinds = Vec::new();
        let mut body = 0;
        while at < buf.len() {
            let len = check_frame(&buf[at..], 0).unwrap().unwrap();
            match parse_frame(Bytes::copy_from_slice(&buf[at..at + len])).unwrap() {
                Frame::Method { .. } => kinds.push('m'),
                Frame::Header {
                    body_size,
                    raw_properties,
                    ..
                } => {
                    assert_eq!(body_size, 9000);
                    // Converted back from the blob byte for byte.
                    assert_eq!(raw_properties[..], raw[..]);
                    assert_eq!(len, frame_max as usize + 8);
                    kinds.push('h');
                }
                Frame::Body { payload, .. } => {
                    assert!(len <= frame_max as usize);
                    body += payload.len();
                    kinds.push('b');
                }
                Frame::Heartbeat { .. } => panic!("heartbeat"),
            }
            at += len;
        }
        assert_eq!(&kinds[..2], &['m', 'h'], "the message was dropped");
        assert_eq!(body, 9000);
    }
}

/// Deliveries in a row on one thread (one scratch buffer) each carry their
/// own message's properties: the same message twice, another message with
/// other properties of the same length, equal properties in another buffer,
/// an empty blob.
#[test]
fn converted_properties_follow_the_message_delivered() {
    let amqp = |p: &ferry_amqp::BasicProperties| ferry_amqp::encode_properties(p).unwrap();
    let msg = |raw: &[u8]| {
        Arc::new(Message {
            exchange: Arc::from(""),
            routing_key: Arc::from("q"),
            properties: ferry_amqp::model::props_to_model(raw).unwrap(),
            body: Bytes::from_static(b"b"),
            persistent: false,
            expiration_ms: None,
            bcc: Vec::new(),
        })
    };
    let a_raw = amqp(&ferry_amqp::BasicProperties::default().with_delivery_mode(2));
    let b_raw = amqp(&ferry_amqp::BasicProperties::default().with_priority(7));
    let (a, b) = (msg(&a_raw), msg(&b_raw));
    let a_again = msg(&a_raw);
    let empty = Arc::new(Message {
        properties: Bytes::new(),
        ..(*a).clone()
    });
    let empty_raw = amqp(&ferry_amqp::BasicProperties::default());
    for (m, want) in [
        (&a, &a_raw),
        (&a, &a_raw),
        (&b, &b_raw),
        (&a_again, &a_raw),
        (&empty, &empty_raw),
        (&a, &a_raw),
        (&empty, &empty_raw),
    ] {
        let mut buf = BytesMut::new();
        let item = Outbound::Deliver {
            channel: 1,
            consumer_tag: Arc::from("c"),
            delivery_tag: 1,
            redelivered: false,
            message: m.clone(),
        };
        assert!(!encode(&mut buf, item, 131_072, &mut 0));
        let mut at = 0;
        let mut headers = Vec::new();
        while at < buf.len() {
            let len = check_frame(&buf[at..], 0).unwrap().unwrap();
            let frame = parse_frame(Bytes::copy_from_slice(&buf[at..at + len])).unwrap();
            if let Frame::Header { raw_properties, .. } = frame {
                headers.push(raw_properties);
            }
            at += len;
        }
        assert_eq!(headers.len(), 1);
        assert_eq!(&headers[0][..], &want[..]);
    }
}

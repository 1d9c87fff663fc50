#![allow(clippy::unwrap_used, clippy::expect_used)]

use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, AMQPClass};
use bytes::{BufMut, Bytes, BytesMut};

use super::*;
use crate::test_util::{all_methods, method_frame};
use crate::{
    encode_basic_deliver, encode_content, encode_method, encode_properties, BasicProperties,
};

#[test]
fn protocol_header() {
    assert_eq!(check_protocol_header(PROTOCOL_HEADER), HeaderCheck::Ok);
    assert_eq!(
        check_protocol_header(b"AMQP\x00\x00\x09\x01more"),
        HeaderCheck::Ok
    );
    // 0-9, which RabbitMQ also treats as 0-9-1.
    assert_eq!(
        check_protocol_header(b"AMQP\x01\x01\x00\x09"),
        HeaderCheck::Ok
    );
    for n in 0..8 {
        assert_eq!(
            check_protocol_header(&PROTOCOL_HEADER[..n]),
            HeaderCheck::Incomplete,
            "{n}"
        );
    }
    for bad in [
        &b"AMQP\x00\x00\x09\x02"[..], // unknown revision
        b"AMQP\x00\x01\x00\x00",      // AMQP 1.0
        b"AMQP\x03\x01\x00\x00",      // AMQP 1.0 SASL
        b"GET / HTTP/1.1\r\n",
        b"G",            // known bad before 8 bytes
        b"\x16\x03\x01", // TLS client hello
        b"AMQX\x00\x00\x09\x01",
    ] {
        assert_eq!(check_protocol_header(bad), HeaderCheck::Bad, "{bad:?}");
    }
}

/// A stream of several frames of every type, and where each one ends.
fn stream() -> (Bytes, Vec<usize>) {
    let mut buf = BytesMut::new();
    let mut ends = Vec::new();
    for method in all_methods().iter().take(12) {
        encode_method(&mut buf, 1, method).unwrap();
        ends.push(buf.len());
    }
    encode_basic_deliver(&mut buf, 2, "ctag", 1, false, "amq.direct", "q").unwrap();
    ends.push(buf.len());
    encode_heartbeat(&mut buf);
    ends.push(buf.len());
    let raw = encode_properties(&BasicProperties::default().with_priority(3)).unwrap();
    let before = buf.len();
    encode_content(&mut buf, 2, 60, &raw, &[7u8; 50], 4096 + 8).unwrap();
    ends.push(before + 7 + 12 + raw.len() + 1);
    ends.push(buf.len());
    encode_content(&mut buf, 3, 60, &raw, &[1u8; 30], 8 + 16).unwrap();
    // header, then bodies of 16 and 14
    let header_end = ends[ends.len() - 1] + 7 + 12 + raw.len() + 1;
    ends.push(header_end);
    ends.push(header_end + 8 + 16);
    ends.push(buf.len());
    (buf.freeze(), ends)
}

/// Consumes whole frames from `buf` as a server would; returns where each
/// ended.
fn consume(buf: &[u8], frame_max: u32) -> Vec<usize> {
    let mut at = 0;
    let mut ends = Vec::new();
    while let Some(len) = check_frame(&buf[at..], frame_max).unwrap() {
        at += len;
        ends.push(at);
    }
    ends
}

#[test]
fn check_frame_at_every_split_point() {
    let (stream, ends) = stream();
    assert_eq!(consume(&stream, 4096 + 8), ends);
    for split in 0..=stream.len() {
        let expected: Vec<usize> = ends.iter().copied().filter(|&e| e <= split).collect();
        assert_eq!(
            consume(&stream[..split], 4096 + 8),
            expected,
            "split {split}"
        );
    }
    // And every frame parses.
    let mut start = 0;
    for end in ends {
        parse_frame(stream.slice(start..end)).unwrap();
        start = end;
    }
}

#[test]
fn check_frame_reads_one_byte_at_a_time() {
    let (stream, ends) = stream();
    let mut buf = BytesMut::new();
    let mut found = Vec::new();
    let mut consumed = 0;
    for &b in stream.iter() {
        buf.put_u8(b);
        if let Some(len) = check_frame(&buf, 0).unwrap() {
            let frame = buf.split_to(len).freeze();
            consumed += frame.len();
            found.push(consumed);
            parse_frame(frame).unwrap();
        }
    }
    assert_eq!(found, ends);
    assert!(buf.is_empty());
}

#[test]
fn frame_max_is_enforced_from_the_header_alone() {
    let header = |size: u32| {
        let mut h = vec![3, 0, 1];
        h.extend_from_slice(&size.to_be_bytes());
        h
    };
    // Only the 7 header bytes are there: the verdict does not wait for the
    // payload.
    assert_eq!(
        check_frame(&header(4097), 4096),
        Err(CodecError::FrameTooLarge {
            size: 4097,
            frame_max: 4096
        })
    );
    assert_eq!(
        check_frame(&header(u32::MAX), 131_072)
            .unwrap_err()
            .reply_code(),
        crate::ReplyCode::FRAME_ERROR
    );
    // Up to frame_max bytes of payload are tolerated, as in RabbitMQ.
    assert_eq!(check_frame(&header(4096), 4096), Ok(None));
    assert_eq!(check_frame(&header(4088), 4096), Ok(None));
    // 0: no limit.
    assert_eq!(check_frame(&header(u32::MAX), 0), Ok(None));
    // Fewer than 7 bytes: cannot know the size yet.
    assert_eq!(check_frame(&header(u32::MAX)[..6], 4096), Ok(None));
}

#[test]
fn unknown_frame_type_is_detected_from_the_first_byte() {
    for t in [0u8, 4, 9, b'A', 0xCE] {
        assert_eq!(
            check_frame(&[t], 4096),
            Err(CodecError::UnknownFrameType { frame_type: t })
        );
    }
    assert_eq!(check_frame(&[], 4096), Ok(None));
    for t in [1u8, 2, 3, 8] {
        assert_eq!(check_frame(&[t], 4096), Ok(None));
    }
    let mut f = method_frame(0, &[0, 10, 0, 51]).to_vec();
    f[0] = 4;
    assert_eq!(
        parse_frame(Bytes::from(f)),
        Err(CodecError::UnknownFrameType { frame_type: 4 })
    );
}

#[test]
fn bad_frame_end() {
    let mut f = method_frame(0, &[0, 10, 0, 51]).to_vec();
    *f.last_mut().unwrap() = 0xCD;
    let err = parse_frame(Bytes::from(f)).unwrap_err();
    assert_eq!(err, CodecError::BadFrameEnd { found: 0xCD });
    assert_eq!(err.reply_code(), crate::ReplyCode::FRAME_ERROR);
}

#[test]
fn trailing_and_missing_bytes() {
    let mut f = method_frame(0, &[0, 10, 0, 51]).to_vec();
    f.push(0xCE);
    assert_eq!(
        parse_frame(Bytes::from(f.clone())),
        Err(CodecError::TrailingBytes { extra: 1 })
    );
    f.truncate(f.len() - 2);
    assert_eq!(
        parse_frame(Bytes::from(f)),
        Err(CodecError::Truncated {
            expected: 12,
            actual: 11
        })
    );
    assert!(matches!(
        parse_frame(Bytes::from_static(&[8, 0, 0])),
        Err(CodecError::Truncated { .. })
    ));
}

#[test]
fn heartbeat() {
    let mut buf = BytesMut::new();
    encode_heartbeat(&mut buf);
    let reference = gen_frame(&AMQPFrame::Heartbeat)(WriteContext::from(Vec::new()))
        .unwrap()
        .into_inner()
        .0;
    assert_eq!(&buf[..], &reference[..]);
    assert_eq!(check_frame(&buf, 4096), Ok(Some(8)));
    assert_eq!(
        parse_frame(buf.freeze()),
        Ok(Frame::Heartbeat { channel: 0 })
    );
    // On another channel: decoded, for the server to reject.
    let f = Bytes::from_static(&[8, 0, 5, 0, 0, 0, 0, 0xCE]);
    let frame = parse_frame(f).unwrap();
    assert_eq!(frame, Frame::Heartbeat { channel: 5 });
    assert_eq!(frame.channel(), 5);
    let f = Bytes::from_static(&[8, 0, 0, 0, 0, 0, 1, 0, 0xCE]);
    assert!(matches!(
        parse_frame(f),
        Err(CodecError::MalformedFrame { frame_type: 8, .. })
    ));
}

#[test]
fn body_and_raw_properties_are_zero_copy() {
    let raw = encode_properties(
        &BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_delivery_mode(2),
    )
    .unwrap();
    let mut buf = BytesMut::new();
    encode_content(&mut buf, 4, 60, &raw, b"hello", 4096).unwrap();
    let all = buf.freeze();
    let header_len = check_frame(&all, 4096).unwrap().unwrap();
    let within = |b: &Bytes| {
        let p = b.as_ptr() as usize;
        let start = all.as_ptr() as usize;
        p >= start && p + b.len() <= start + all.len()
    };
    match parse_frame(all.slice(..header_len)).unwrap() {
        Frame::Header {
            channel,
            class_id,
            body_size,
            props,
            raw_properties,
        } => {
            assert_eq!((channel, class_id, body_size), (4, 60, 5));
            assert_eq!(
                ferry_model::Properties::decode(&props)
                    .unwrap()
                    .delivery_mode,
                Some(2)
            );
            assert_eq!(
                crate::model::props_from_model(&props).unwrap(),
                raw_properties
            );
            assert_eq!(raw_properties, raw);
            assert!(within(&raw_properties));
        }
        other => panic!("{other:?}"),
    }
    match parse_frame(all.slice(header_len..)).unwrap() {
        Frame::Body { channel, payload } => {
            assert_eq!(channel, 4);
            assert_eq!(&payload[..], b"hello");
            assert!(within(&payload));
        }
        other => panic!("{other:?}"),
    }
}

fn header_frame(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u8(2);
    buf.put_u16(1);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.put_u8(0xCE);
    buf.freeze()
}

#[test]
fn content_header_errors() {
    // Class 50 has no content.
    let mut p = vec![0, 50, 0, 0];
    p.extend_from_slice(&5u64.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    let err = parse_frame(header_frame(&p)).unwrap_err();
    assert_eq!(err, CodecError::UnexpectedContentClass { class_id: 50 });
    assert_eq!(err.reply_code(), crate::ReplyCode::UNEXPECTED_FRAME);
    // Too short for the fixed fields + flags.
    assert!(matches!(
        parse_frame(header_frame(&[0, 60, 0, 0, 0])),
        Err(CodecError::MalformedFrame { frame_type: 2, .. })
    ));
    // Flags announce a content-type that is not there.
    let mut p = vec![0, 60, 0, 0];
    p.extend_from_slice(&5u64.to_be_bytes());
    p.extend_from_slice(&[0x80, 0]);
    assert_eq!(
        parse_frame(header_frame(&p)),
        Err(CodecError::MalformedProperties)
    );
    // A non-zero weight is accepted.
    let mut p = vec![0, 60, 0, 9];
    p.extend_from_slice(&5u64.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    assert!(parse_frame(header_frame(&p)).is_ok());
}

#[test]
fn method_frames_decode_through_the_fast_path_too() {
    let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
        exchange: "x".into(),
        routing_key: "k".into(),
        mandatory: false,
        immediate: true,
    }));
    let mut buf = BytesMut::new();
    encode_method(&mut buf, 9, &publish).unwrap();
    assert_eq!(
        parse_frame(buf.freeze()),
        Ok(Frame::Method {
            channel: 9,
            method: publish
        })
    );
}

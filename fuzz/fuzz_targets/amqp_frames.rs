//! Arbitrary bytes through the server's two-step framing loop.
//!
//! Input: one selector byte (frame_max), one chunking byte, then the byte
//! stream a client sends (the protocol header, if there, is skipped as the
//! server does).
//!
//! - The stream is cut into frames exactly as `connection.rs` does it:
//!   `check_frame(buf, frame_max)` says how long the next whole frame is,
//!   then `parse_frame` gets exactly those bytes. "Need more" ends the
//!   stream; a frame that does not parse is skipped (the server would close
//!   the connection there, but the boundary is known, so going on explores
//!   more). `check_frame` must never return a length below 8 or beyond the
//!   buffer, nor one whose payload exceeds frame_max.
//! - The same stream is then revealed a few bytes at a time, as reads from a
//!   socket would: the frame boundaries and the final outcome must match.
//! - Every decoded method is re-encoded with `encode_method` and parsed
//!   again: that must succeed and re-encode to the same bytes; and it must
//!   agree with amq-protocol's own parser (the hot basic methods have
//!   hand-rolled parsers).
//! - Content headers: the frame's props blob converts back to properties
//!   that `parse_properties` reads as it reads `raw_properties` (when it
//!   can: the blob also carries short strings that are not UTF-8, which
//!   amq-protocol refuses); bodies must be the exact payload slice.

#![no_main]

use bytes::{Bytes, BytesMut};
use ferry_amqp::amq_protocol::protocol::basic::parse_properties as amqp_parse_properties;
use ferry_amqp::amq_protocol::protocol::parse_class;
use ferry_amqp::{
    check_frame, check_protocol_header, encode_method, encode_properties, parse_frame,
    parse_properties, AMQPClass, AMQPValue, CodecError, FieldTable, Frame, HeaderCheck,
};
use libfuzzer_sys::fuzz_target;

/// frame_max values a connection can run with: 0 (no limit, as before
/// tune if configured so), the spec minimum, the default, and odd small
/// ones that `check_frame` must still handle.
const FRAME_MAXES: [u32; 8] = [0, 4096, 131_072, 1, 8, 100, 65_535, u32::MAX];

/// What one pass over the stream saw: each frame's length, then how it
/// ended.
#[derive(Debug, PartialEq)]
struct Pass {
    frames: Vec<usize>,
    end: End,
}

#[derive(Debug, PartialEq)]
enum End {
    NeedMore,
    Error(CodecError),
}

fn check_len(buf: &[u8], frame_max: u32, len: usize) {
    assert!(len >= 8, "check_frame returned {len} < 8");
    assert!(
        len <= buf.len(),
        "check_frame returned {len} > buffer {}",
        buf.len()
    );
    if frame_max != 0 {
        assert!(
            (len - 8) as u64 <= u64::from(frame_max),
            "frame of payload {} accepted with frame_max {frame_max}",
            len - 8
        );
    }
    // The length is what the header declares.
    let declared = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
    assert_eq!(len as u64, u64::from(declared) + 8);
}

/// Cuts `stream` into frames; `inspect` gets every one that parses.
fn frames(stream: &Bytes, frame_max: u32, inspect: bool) -> Pass {
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        let rest = &stream[at..];
        match check_frame(rest, frame_max) {
            Ok(Some(len)) => {
                check_len(rest, frame_max, len);
                let frame = stream.slice(at..at + len);
                at += len;
                out.push(len);
                match parse_frame(frame.clone()) {
                    Ok(f) if inspect => check_frame_value(&frame, f),
                    Ok(_) => {}
                    Err(e) => {
                        // Every error must map to a reply code without
                        // panicking.
                        let _ = e.reply_code();
                        let _ = e.method_ids();
                        if inspect {
                            check_refusal(&frame, &e);
                        }
                    }
                }
            }
            Ok(None) => {
                // Incomplete: the header must really declare more than is
                // buffered (or be shorter than 7 bytes).
                if rest.len() >= 7 {
                    let declared = u32::from_be_bytes([rest[3], rest[4], rest[5], rest[6]]);
                    assert!(u64::from(declared) + 8 > rest.len() as u64);
                }
                return Pass {
                    frames: out,
                    end: End::NeedMore,
                };
            }
            Err(e) => {
                if let CodecError::FrameTooLarge { size, .. } = e {
                    assert!(frame_max != 0 && size > u64::from(frame_max));
                }
                let _ = e.reply_code();
                return Pass {
                    frames: out,
                    end: End::Error(e),
                };
            }
        }
    }
}

/// The same loop over a buffer that grows by `step`-sized reads, like the
/// server's read buffer.
fn frames_chunked(stream: &Bytes, frame_max: u32, steps: &[usize]) -> Pass {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        match check_frame(&buf, frame_max) {
            Ok(Some(len)) => {
                check_len(&buf, frame_max, len);
                let _ = buf.split_to(len);
                out.push(len);
            }
            Ok(None) if fed < stream.len() => {
                let step = steps[i % steps.len()];
                i += 1;
                let n = step.min(stream.len() - fed);
                buf.extend_from_slice(&stream[fed..fed + n]);
                fed += n;
            }
            Ok(None) => {
                return Pass {
                    frames: out,
                    end: End::NeedMore,
                }
            }
            Err(e) => {
                return Pass {
                    frames: out,
                    end: End::Error(e),
                }
            }
        }
    }
}

/// Nesting levels of a table (the table itself is 1); arrays count too.
fn table_depth(t: &FieldTable) -> usize {
    1 + t.inner().values().map(value_depth).max().unwrap_or(0)
}

fn value_depth(v: &AMQPValue) -> usize {
    match v {
        AMQPValue::FieldTable(t) => table_depth(t),
        AMQPValue::FieldArray(a) => 1 + a.as_slice().iter().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The field tables a method carries.
fn method_tables(m: &AMQPClass) -> Vec<&FieldTable> {
    use ferry_amqp::amq_protocol::protocol::{basic, connection, exchange, queue};
    match m {
        AMQPClass::Connection(connection::AMQPMethod::Start(x)) => vec![&x.server_properties],
        AMQPClass::Connection(connection::AMQPMethod::StartOk(x)) => vec![&x.client_properties],
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(x)) => vec![&x.arguments],
        AMQPClass::Exchange(exchange::AMQPMethod::Bind(x)) => vec![&x.arguments],
        AMQPClass::Exchange(exchange::AMQPMethod::Unbind(x)) => vec![&x.arguments],
        AMQPClass::Queue(queue::AMQPMethod::Declare(x)) => vec![&x.arguments],
        AMQPClass::Queue(queue::AMQPMethod::Bind(x)) => vec![&x.arguments],
        AMQPClass::Queue(queue::AMQPMethod::Unbind(x)) => vec![&x.arguments],
        AMQPClass::Basic(basic::AMQPMethod::Consume(x)) => vec![&x.arguments],
        _ => vec![],
    }
}

/// Deepest nesting ferry-amqp accepts (its `MAX_NESTING`).
const MAX_NESTING: usize = 32;

/// A frame ferry refused as malformed but amq-protocol parses must nest
/// deeper than ferry's limit: anything else would refuse a valid client.
fn check_refusal(raw: &Bytes, e: &CodecError) {
    let payload = &raw[7..raw.len() - 1];
    // amq-protocol recurses per level: ask it only where nesting cannot go
    // deeper than 200 (each level needs an 'A' or 'F' type byte).
    if payload.iter().filter(|b| matches!(b, b'A' | b'F')).count() > 200 {
        return;
    }
    match (raw[0], e) {
        (1, CodecError::MalformedMethod { .. }) => {
            if let Ok(([], m)) = parse_class(payload) {
                let depth = method_tables(&m).into_iter().map(table_depth).max();
                assert!(
                    depth.is_some_and(|d| d > MAX_NESTING),
                    "ferry refused {m:?} (depth {depth:?}) that amq-protocol accepts"
                );
            }
        }
        // Flag bits 0 and 1 (a continuation word, unused) with no
        // property: amq-protocol ignores them, the model converter refuses.
        (2, CodecError::MalformedProperties)
            if payload.len() >= 14 && payload[13] & 0b11 == 0 =>
        {
            if let Ok(([], p)) = amqp_parse_properties(&payload[12..]) {
                let depth = p.headers().as_ref().map(table_depth);
                assert!(
                    depth.is_some_and(|d| d > MAX_NESTING),
                    "ferry refused properties {p:?} (depth {depth:?}) that amq-protocol accepts"
                );
            }
        }
        _ => {}
    }
}

fn check_frame_value(raw: &Bytes, frame: Frame) {
    let channel = u16::from_be_bytes([raw[1], raw[2]]);
    assert_eq!(frame.channel(), channel);
    match frame {
        Frame::Method { channel, method } => {
            let payload = &raw[7..raw.len() - 1];
            // Differential: amq-protocol's parser must read the same method
            // from the same payload.
            match parse_class(payload) {
                Ok((rest, reference)) => {
                    assert!(rest.is_empty(), "ferry parsed a method with trailing bytes");
                    for t in method_tables(&reference) {
                        assert!(
                            table_depth(t) <= MAX_NESTING,
                            "accepted a table nesting too deep"
                        );
                    }
                    assert_eq!(
                        format!("{reference:?}"),
                        format!("{method:?}"),
                        "fast parser disagrees with amq-protocol"
                    );
                }
                Err(e) => panic!("ferry parsed {method:?}, amq-protocol did not: {e:?}"),
            }
            let mut enc = BytesMut::new();
            encode_method(&mut enc, channel, &method).expect("re-encoding a parsed method");
            let enc = enc.freeze();
            assert_eq!(check_frame(&enc, 0), Ok(Some(enc.len())));
            let again = parse_frame(enc.clone()).expect("re-encoded method does not parse");
            let Frame::Method {
                channel: c2,
                method: m2,
            } = again
            else {
                panic!("re-encoded method parsed as another frame type: {again:?}");
            };
            assert_eq!(c2, channel);
            let mut enc2 = BytesMut::new();
            encode_method(&mut enc2, channel, &m2).expect("re-encoding the round trip");
            assert_eq!(enc, enc2.freeze(), "encoding is not stable: {method:?}");
        }
        Frame::Header {
            class_id,
            body_size,
            props,
            raw_properties,
            ..
        } => {
            assert_eq!(class_id, 60);
            assert_eq!(
                body_size,
                u64::from_be_bytes(raw[11..19].try_into().expect("8 bytes"))
            );
            assert_eq!(&raw_properties[..], &raw[19..raw.len() - 1]);
            let back = ferry_amqp::model::props_from_model(&props).expect("the blob converts back");
            assert_eq!(back.len(), raw_properties.len());
            let Ok(properties) = parse_properties(&raw_properties) else {
                return;
            };
            let p = parse_properties(&back).expect("converted-back properties parse");
            assert_eq!(format!("{p:?}"), format!("{properties:?}"));
            // Typed properties re-encode and read back the same.
            let enc = encode_properties(&properties).expect("encoding parsed properties");
            let back = parse_properties(&enc).expect("re-encoded properties do not parse");
            assert_eq!(
                encode_properties(&back).expect("encoding the round trip"),
                enc
            );
        }
        Frame::Body { payload, .. } => {
            assert_eq!(&payload[..], &raw[7..raw.len() - 1]);
        }
        Frame::Heartbeat { .. } => assert_eq!(raw.len(), 8),
    }
}

fuzz_target!(
    init: {
        ferry_fuzz::write_seeds_and_exit_if_asked(|| {
            use ferry_fuzz::streams::{client_stream, nested_methods};
            let with = |select: u8, chunking: u8, bytes: Vec<u8>| {
                let mut v = vec![select, chunking];
                v.extend(bytes);
                v
            };
            vec![
                ("handshake-publish-131072".into(), with(2, 0, client_stream(131_072))),
                ("handshake-publish-4096".into(), with(1, 1, client_stream(4096))),
                ("nested-32".into(), with(0, 2, nested_methods(32))),
                ("nested-33".into(), with(0, 3, nested_methods(33))),
            ]
        });
    },
    |data: &[u8]| {
        let [select, chunking, stream @ ..] = data else {
            return;
        };
        // A stream may start with the protocol header, as a connection's does.
        let stream = match check_protocol_header(stream) {
            HeaderCheck::Ok => &stream[8..],
            HeaderCheck::Incomplete if stream.starts_with(b"AMQP") => return,
            _ => stream,
        };
        let stream = Bytes::copy_from_slice(stream);
        let frame_max = FRAME_MAXES[usize::from(select % FRAME_MAXES.len() as u8)];
        let whole = frames(&stream, frame_max, true);
        // Reads of 1..=64 bytes, or of 1, 7, 8 and bigger sizes.
        let steps: Vec<usize> = match chunking % 4 {
            0 => vec![usize::from(chunking >> 2) + 1],
            1 => vec![1, 7, 8, 4096],
            2 => vec![3, 64 * 1024],
            _ => vec![usize::from(chunking >> 2) + 1, 1],
        };
        let chunked = frames_chunked(&stream, frame_max, &steps);
        assert_eq!(whole, chunked, "frame boundaries depend on how bytes arrive");
        // Parsing properties of arbitrary bytes must not panic either.
        let _ = parse_properties(&stream);
    }
);

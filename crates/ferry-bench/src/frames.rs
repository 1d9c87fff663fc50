//! The publish hot path's bytes: a message's three (or more) frames encoded
//! once, then copied per message with a stamp patched into the body.
//!
//! The stamp is `run id, sequence number, send time` (three little-endian
//! u64s) at the start of the body. The send time is nanoseconds on this
//! process's monotonic clock ([`now_ns`]), which the consumers read too,
//! so publish→deliver latency needs no clock sync; the run id lets a
//! consumer ignore messages stamped by another process (a backlog left by
//! an earlier run) whose times mean nothing here.

use std::sync::OnceLock;
use std::time::Instant;

use bytes::BytesMut;
use ferry_amqp::basic::encode_basic_publish;
use ferry_amqp::{encode_content, encode_properties, BasicProperties, CodecError};

/// Bytes the stamp takes at the start of a body. Smaller bodies carry no
/// stamp (and give no latency).
pub const STAMP_LEN: usize = 24;

/// Nanoseconds since this process first asked: a monotonic clock shared by
/// producers and consumers.
#[must_use]
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // u64 nanoseconds last 584 years.
    epoch.elapsed().as_nanos() as u64
}

/// What a producer writes into each body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Identifies the process (run) that published.
    pub run_id: u64,
    /// The producer's sequence number (its publish delivery tag).
    pub seq: u64,
    /// [`now_ns`] when the message was handed to the socket.
    pub sent_ns: u64,
}

impl Stamp {
    /// Writes the stamp over the first [`STAMP_LEN`] bytes of `body`.
    pub fn write(&self, body: &mut [u8]) {
        if let Some(dst) = body.get_mut(..STAMP_LEN) {
            dst[..8].copy_from_slice(&self.run_id.to_le_bytes());
            dst[8..16].copy_from_slice(&self.seq.to_le_bytes());
            dst[16..].copy_from_slice(&self.sent_ns.to_le_bytes());
        }
    }

    /// Reads a stamp from the start of a body (or its first body frame).
    #[must_use]
    pub fn read(body: &[u8]) -> Option<Stamp> {
        let b = body.get(..STAMP_LEN)?;
        let u = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(w)
        };
        Some(Stamp {
            run_id: u(0),
            seq: u(8),
            sent_ns: u(16),
        })
    }
}

/// One message's frames, pre-encoded: basic.publish, content header, body
/// frame(s) split to frame_max.
#[derive(Clone, Debug)]
pub struct PublishTemplate {
    bytes: Vec<u8>,
    /// Offset of the body's first byte in `bytes`, when it has room for a
    /// stamp.
    stamp_at: Option<usize>,
}

impl PublishTemplate {
    /// Encodes the frames of a `size`-byte message for `channel`.
    /// Persistent messages carry delivery-mode 2; transient ones no
    /// properties at all (brokers treat that as transient, and it is the
    /// shortest header).
    pub fn new(
        channel: u16,
        exchange: &str,
        routing_key: &str,
        persistent: bool,
        size: usize,
        frame_max: u32,
    ) -> Result<Self, CodecError> {
        let props = if persistent {
            encode_properties(&BasicProperties::default().with_delivery_mode(2))?
        } else {
            encode_properties(&BasicProperties::default())?
        };
        let mut buf = BytesMut::new();
        encode_basic_publish(&mut buf, channel, exchange, routing_key, false, false)?;
        let header_at = buf.len();
        encode_content(&mut buf, channel, 60, &props, &vec![0u8; size], frame_max)?;
        // The header frame is 7 + 12 + props + 1 bytes; the first body
        // frame's payload starts 7 bytes after that.
        let body_at = header_at + 7 + 12 + props.len() + 1 + 7;
        let stamp_at = (size >= STAMP_LEN).then_some(body_at);
        Ok(PublishTemplate {
            bytes: buf.to_vec(),
            stamp_at,
        })
    }

    /// Bytes per message on the wire.
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends one message with `stamp` in its body.
    pub fn append(&self, out: &mut Vec<u8>, stamp: &Stamp) {
        let base = out.len();
        out.extend_from_slice(&self.bytes);
        if let Some(at) = self.stamp_at {
            stamp.write(&mut out[base + at..]);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use ferry_amqp::amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, WriteContext};
    use ferry_amqp::amq_protocol::protocol::{basic, AMQPClass};

    fn reference(frame: AMQPFrame) -> Vec<u8> {
        gen_frame(&frame)(WriteContext::from(Vec::new()))
            .unwrap()
            .into_inner()
            .0
    }

    /// What amq-protocol (hence lapin) puts on the wire for the same publish.
    fn reference_message(
        exchange: &str,
        key: &str,
        props: BasicProperties,
        body: &[u8],
        frame_max: usize,
    ) -> Vec<u8> {
        let mut out = reference(AMQPFrame::Method(
            3,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange.into(),
                routing_key: key.into(),
                mandatory: false,
                immediate: false,
            })),
        ));
        out.extend(reference(AMQPFrame::Header(
            3,
            AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties: props,
            },
        )));
        for chunk in body.chunks(frame_max - 8) {
            out.extend(reference(AMQPFrame::Body(3, chunk.to_vec())));
        }
        out
    }

    #[test]
    fn template_is_byte_identical_to_amq_protocol() {
        let stamp = Stamp {
            run_id: 0xDEAD_BEEF,
            seq: 77,
            sent_ns: 123_456_789,
        };
        for (persistent, size, frame_max) in [
            (true, 100, 131_072),
            (false, 100, 131_072),
            (false, 0, 131_072),
            (true, 10, 4096),
            (true, 4096, 4096),
            (false, 10_000, 4096),
        ] {
            let t =
                PublishTemplate::new(3, "bench.x", "bench.0", persistent, size, frame_max).unwrap();
            let mut out = vec![0xAA];
            t.append(&mut out, &stamp);
            assert_eq!(out.len(), 1 + t.len());
            let mut body = vec![0u8; size];
            stamp.write(&mut body);
            let props = if persistent {
                BasicProperties::default().with_delivery_mode(2)
            } else {
                BasicProperties::default()
            };
            let expected =
                reference_message("bench.x", "bench.0", props, &body, frame_max as usize);
            assert_eq!(
                &out[1..],
                &expected[..],
                "persistent {persistent} size {size}"
            );
        }
    }

    #[test]
    fn stamp_round_trips_through_a_body() {
        let t = PublishTemplate::new(1, "", "q", true, 100, 131_072).unwrap();
        let mut out = Vec::new();
        let s = Stamp {
            run_id: 1,
            seq: u64::MAX,
            sent_ns: now_ns(),
        };
        t.append(&mut out, &s);
        t.append(&mut out, &Stamp { seq: 2, ..s });
        // The body is the template's last 100 bytes before the frame end.
        let body = &out[t.len() - 101..t.len() - 1];
        assert_eq!(Stamp::read(body), Some(s));
        let body2 = &out[2 * t.len() - 101..2 * t.len() - 1];
        assert_eq!(Stamp::read(body2).unwrap().seq, 2);
        assert_eq!(Stamp::read(&body[..STAMP_LEN - 1]), None);
    }

    #[test]
    fn small_bodies_carry_no_stamp() {
        let t = PublishTemplate::new(1, "", "q", false, STAMP_LEN - 1, 131_072).unwrap();
        let mut out = Vec::new();
        let s = Stamp {
            run_id: 9,
            seq: 9,
            sent_ns: 9,
        };
        t.append(&mut out, &s);
        assert!(out[out.len() - STAMP_LEN..out.len() - 1]
            .iter()
            .all(|&b| b == 0));
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use ferry_amqp::amq_protocol::protocol::connection;
use ferry_amqp::basic::parse_basic_ack;
use ferry_amqp::{encode_basic_deliver, encode_content, encode_heartbeat};

const RUN: u64 = 0xB0B;

fn spec(auto_ack: bool, every: u32) -> ConsumerSpec {
    ConsumerSpec {
        index: 0,
        queue: "bench.0".into(),
        prefetch: 500,
        auto_ack,
        multi_ack_every: every,
        run_id: RUN,
    }
}

/// A delivery with `size` body bytes stamped by `run_id`, split to frame_max.
fn delivery(buf: &mut BytesMut, tag: u64, run_id: u64, sent_ns: u64, size: usize, frame_max: u32) {
    encode_basic_deliver(buf, CHANNEL, "bench-0", tag, false, "", "bench.0").unwrap();
    let mut body = vec![7u8; size];
    Stamp {
        run_id,
        seq: tag,
        sent_ns,
    }
    .write(&mut body);
    encode_content(buf, CHANNEL, 60, &[0, 0], &body, frame_max).unwrap();
}

/// Feeds `stream` in pieces of `chunk` bytes, like socket reads would.
fn feed(d: &mut Deliveries, stream: &[u8], chunk: usize, now: u64) -> BytesMut {
    let mut acks = BytesMut::new();
    let mut pending = Vec::new();
    for piece in stream.chunks(chunk) {
        pending.extend_from_slice(piece);
        let used = d.process(&pending, now, &mut acks).unwrap();
        pending.drain(..used);
    }
    assert!(pending.is_empty());
    acks
}

/// The (tag, multiple) of every basic.ack in `out`.
fn acks_in(out: &[u8]) -> Vec<(u64, bool)> {
    let mut v = Vec::new();
    let mut pos = 0;
    while let Some(len) = check_frame(&out[pos..], 0).unwrap() {
        let a = parse_basic_ack(&out[pos + 7..pos + len - 1]).unwrap();
        v.push((a.delivery_tag, a.multiple));
        pos += len;
    }
    assert_eq!(pos, out.len());
    v
}

fn stream() -> BytesMut {
    let mut s = BytesMut::new();
    // consume-ok first, as after basic.consume.
    encode_method(
        &mut s,
        CHANNEL,
        &AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
            consumer_tag: "bench-0".into(),
        })),
    )
    .unwrap();
    delivery(&mut s, 1, RUN, 1_000, 100, 131_072);
    // Another run's stamp: counted, no latency.
    delivery(&mut s, 2, 99, 1_000, 100, 131_072);
    encode_heartbeat(&mut s);
    // Empty body: no body frame at all.
    delivery(&mut s, 3, RUN, 1_000, 0, 131_072);
    // A body over three frames; the stamp is in the first.
    delivery(&mut s, 4, RUN, 2_000, 10_000, 4096);
    delivery(&mut s, 5, RUN, 3_000, 100, 131_072);
    s
}

#[test]
fn counts_deliveries_and_acks_in_batches_whatever_the_reads() {
    let s = stream();
    for chunk in [1, 7, 100, 4096, s.len()] {
        let mut d = Deliveries::new(spec(false, 2)).unwrap();
        let acks = feed(&mut d, &s, chunk, 11_000);
        assert_eq!(d.received, 5, "chunk {chunk}");
        assert_eq!(acks_in(&acks), [(2, true), (4, true)], "chunk {chunk}");
        // Tags 1, 4, 5 carry this run's stamp (3 has no body).
        assert_eq!(d.hist.len(), 3);
        assert_eq!(d.hist.max(), d.hist.highest_equivalent(10_000));
        assert_eq!(d.hist.min(), d.hist.lowest_equivalent(8_000));
        let mut tail = BytesMut::new();
        d.flush_acks(&mut tail);
        assert_eq!(acks_in(&tail), [(5, true)]);
        d.flush_acks(&mut tail);
        assert_eq!(acks_in(&tail).len(), 1);
    }
}

#[test]
fn single_acks_and_auto_ack() {
    let s = stream();
    let mut d = Deliveries::new(spec(false, 1)).unwrap();
    let acks = feed(&mut d, &s, 64, 5_000);
    let tags: Vec<(u64, bool)> = (1..=5).map(|t| (t, false)).collect();
    assert_eq!(acks_in(&acks), tags);
    let mut d = Deliveries::new(spec(true, 1)).unwrap();
    assert!(feed(&mut d, &s, 64, 5_000).is_empty());
    assert_eq!(d.received, 5);
}

#[test]
fn draining_counts_nothing_and_finds_close_ok() {
    let mut s = stream();
    encode_method(
        &mut s,
        0,
        &AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
    )
    .unwrap();
    let mut d = Deliveries::new(spec(false, 1)).unwrap();
    d.draining = true;
    let acks = feed(&mut d, &s, 333, 5_000);
    assert!(acks.is_empty());
    assert_eq!((d.received, d.hist.len()), (0, 0));
    assert!(d.closed);
}

#[test]
fn a_close_from_the_broker_is_an_error_with_code_and_text() {
    let mut s = BytesMut::new();
    encode_method(
        &mut s,
        0,
        &AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 320,
            reply_text: "CONNECTION_FORCED - broker shutdown".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
    .unwrap();
    let mut d = Deliveries::new(spec(false, 1)).unwrap();
    let err = d.process(&s, 0, &mut BytesMut::new()).unwrap_err();
    assert!(
        err.to_string()
            .contains("320 CONNECTION_FORCED - broker shutdown"),
        "{err}"
    );
}

#[test]
fn a_cancel_from_the_broker_is_an_error() {
    let mut s = BytesMut::new();
    encode_method(
        &mut s,
        CHANNEL,
        &AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: "bench-0".into(),
            nowait: true,
        })),
    )
    .unwrap();
    let mut d = Deliveries::new(spec(false, 1)).unwrap();
    let err = d.process(&s, 0, &mut BytesMut::new()).unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
}

#[test]
fn a_body_without_a_delivery_is_a_protocol_error() {
    let mut s = BytesMut::new();
    encode_content(&mut s, CHANNEL, 60, &[0, 0], b"stray", 131_072).unwrap();
    let mut d = Deliveries::new(spec(false, 1)).unwrap();
    assert!(matches!(
        d.process(&s, 0, &mut BytesMut::new()),
        Err(BenchError::Protocol(_))
    ));
}

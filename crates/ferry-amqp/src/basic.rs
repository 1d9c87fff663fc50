//! Hand-rolled codecs for the hot basic-class methods.
//!
//! Encoders: one deliver/get-ok/ack per message is the broker's hottest
//! output. amq-protocol's generator builds an `AMQPFlags` (a `Vec` of
//! `String` flag names) for every bit field and cannot write to `BytesMut`
//! directly; these write the exact same bytes (tested) straight into the
//! output buffer, with one size computation and no allocation beyond the
//! buffer's own growth.
//!
//! Parsers: basic.publish and basic.ack/nack/reject are the hottest input.
//! amq-protocol's parsers allocate a `Vec` and one `String` per flag name to
//! read a bit field; these produce equal `AMQPClass` values (tested) with
//! only the allocations the values themselves need.

use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::ShortString;
use bytes::{BufMut, BytesMut};

use crate::error::CodecError;
use crate::wire::{FRAME_END, FRAME_HEADER_SIZE, FRAME_METHOD};

const CLASS_BASIC: u16 = 60;
const METHOD_RETURN: u16 = 50;
const METHOD_DELIVER: u16 = 60;
const METHOD_GET_OK: u16 = 71;
const METHOD_ACK: u16 = 80;
const METHOD_NACK: u16 = 120;

/// Checks a short string field before anything is written, so a failing
/// encoder leaves the buffer untouched.
fn short_len(field: &'static str, value: &str) -> Result<usize, CodecError> {
    if value.len() > usize::from(u8::MAX) {
        return Err(CodecError::ShortStringTooLong {
            field,
            len: value.len(),
        });
    }
    Ok(1 + value.len())
}

/// Writes the frame header and method ids of a method frame whose payload
/// (ids included) is `payload` bytes, reserving room for the whole frame.
fn start_method(buf: &mut BytesMut, channel: u16, method_id: u16, payload: usize) {
    buf.reserve(FRAME_HEADER_SIZE + payload + 1);
    buf.put_u8(FRAME_METHOD);
    buf.put_u16(channel);
    // Payloads here are bounded by a few short strings: far below u32::MAX.
    buf.put_u32(payload as u32);
    buf.put_u16(CLASS_BASIC);
    buf.put_u16(method_id);
}

/// Lengths have been checked by `short_len`.
fn put_short(buf: &mut BytesMut, value: &str) {
    buf.put_u8(value.len() as u8);
    buf.put_slice(value.as_bytes());
}

/// Appends a `basic.deliver` method frame.
pub fn encode_basic_deliver(
    buf: &mut BytesMut,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
) -> Result<(), CodecError> {
    let payload = 4
        + short_len("consumer_tag", consumer_tag)?
        + 8
        + 1
        + short_len("exchange", exchange)?
        + short_len("routing_key", routing_key)?;
    start_method(buf, channel, METHOD_DELIVER, payload);
    put_short(buf, consumer_tag);
    buf.put_u64(delivery_tag);
    buf.put_u8(u8::from(redelivered));
    put_short(buf, exchange);
    put_short(buf, routing_key);
    buf.put_u8(FRAME_END);
    Ok(())
}

/// Appends a `basic.get-ok` method frame.
pub fn encode_basic_get_ok(
    buf: &mut BytesMut,
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
    message_count: u32,
) -> Result<(), CodecError> {
    let payload =
        4 + 8 + 1 + short_len("exchange", exchange)? + short_len("routing_key", routing_key)? + 4;
    start_method(buf, channel, METHOD_GET_OK, payload);
    buf.put_u64(delivery_tag);
    buf.put_u8(u8::from(redelivered));
    put_short(buf, exchange);
    put_short(buf, routing_key);
    buf.put_u32(message_count);
    buf.put_u8(FRAME_END);
    Ok(())
}

/// Appends a `basic.return` method frame. `reply_text` is usually built
/// with [`crate::reply_text`], which keeps it within 255 bytes.
pub fn encode_basic_return(
    buf: &mut BytesMut,
    channel: u16,
    reply_code: u16,
    reply_text: &str,
    exchange: &str,
    routing_key: &str,
) -> Result<(), CodecError> {
    let payload = 4
        + 2
        + short_len("reply_text", reply_text)?
        + short_len("exchange", exchange)?
        + short_len("routing_key", routing_key)?;
    start_method(buf, channel, METHOD_RETURN, payload);
    buf.put_u16(reply_code);
    put_short(buf, reply_text);
    put_short(buf, exchange);
    put_short(buf, routing_key);
    buf.put_u8(FRAME_END);
    Ok(())
}

/// Appends a `basic.ack` method frame (publisher confirms). Cannot fail.
pub fn encode_basic_ack(buf: &mut BytesMut, channel: u16, delivery_tag: u64, multiple: bool) {
    start_method(buf, channel, METHOD_ACK, 4 + 8 + 1);
    buf.put_u64(delivery_tag);
    buf.put_u8(u8::from(multiple));
    buf.put_u8(FRAME_END);
}

/// Appends a `basic.nack` method frame (publisher confirms). Cannot fail.
pub fn encode_basic_nack(
    buf: &mut BytesMut,
    channel: u16,
    delivery_tag: u64,
    multiple: bool,
    requeue: bool,
) {
    start_method(buf, channel, METHOD_NACK, 4 + 8 + 1);
    buf.put_u64(delivery_tag);
    // Consecutive bits pack into one octet, first bit lowest (spec §4.2.5.2).
    buf.put_u8(u8::from(multiple) | (u8::from(requeue) << 1));
    buf.put_u8(FRAME_END);
}

/// A cursor over method arguments; every read fails (None) past the end.
struct Args<'a>(&'a [u8]);

impl<'a> Args<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Some(u64::from_be_bytes(b))
    }

    /// Like amq-protocol, requires UTF-8 (ShortString wraps a `String`).
    fn short_string(&mut self) -> Option<ShortString> {
        let len = self.u8()?;
        let bytes = self.take(usize::from(len))?;
        let s = std::str::from_utf8(bytes).ok()?;
        ShortString::try_new(s).ok()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn bit(flags: u8, n: u8) -> bool {
    flags & (1 << n) != 0
}

/// Fast path for the hot client methods. `None`: not one of them, use the
/// generic parser. `Some(None)`: malformed. `Some(Some(m))`: decoded, equal
/// to what amq-protocol would produce.
pub(crate) fn parse_fast(class_id: u16, method_id: u16, args: &[u8]) -> Option<Option<AMQPClass>> {
    if class_id != CLASS_BASIC {
        return None;
    }
    let mut a = Args(args);
    let method = match method_id {
        40 => parse_publish(&mut a),
        80 => parse_ack(&mut a),
        90 => parse_reject(&mut a),
        120 => parse_nack(&mut a),
        _ => return None,
    };
    // Trailing bytes after the arguments make the method malformed, as in
    // the generic path.
    Some(method.filter(|_| a.is_empty()).map(AMQPClass::Basic))
}

fn parse_publish(a: &mut Args<'_>) -> Option<basic::AMQPMethod> {
    let _ticket = a.u16()?;
    let exchange = a.short_string()?;
    let routing_key = a.short_string()?;
    let flags = a.u8()?;
    Some(basic::AMQPMethod::Publish(basic::Publish {
        exchange,
        routing_key,
        mandatory: bit(flags, 0),
        immediate: bit(flags, 1),
    }))
}

fn parse_ack(a: &mut Args<'_>) -> Option<basic::AMQPMethod> {
    let delivery_tag = a.u64()?;
    let flags = a.u8()?;
    Some(basic::AMQPMethod::Ack(basic::Ack {
        delivery_tag,
        multiple: bit(flags, 0),
    }))
}

fn parse_reject(a: &mut Args<'_>) -> Option<basic::AMQPMethod> {
    let delivery_tag = a.u64()?;
    let flags = a.u8()?;
    Some(basic::AMQPMethod::Reject(basic::Reject {
        delivery_tag,
        requeue: bit(flags, 0),
    }))
}

fn parse_nack(a: &mut Args<'_>) -> Option<basic::AMQPMethod> {
    let delivery_tag = a.u64()?;
    let flags = a.u8()?;
    Some(basic::AMQPMethod::Nack(basic::Nack {
        delivery_tag,
        multiple: bit(flags, 0),
        requeue: bit(flags, 1),
    }))
}

// ---------------------------------------------------------------------------
// Client side: the hot path of a hand-framed client (the `ferry bench` load
// generator). Same idea as above, reversed: encode basic.publish without
// amq-protocol's per-flag allocations, and read basic.deliver / ack / nack
// without building an `AMQPClass` (a consumer only needs the delivery tag).

const METHOD_PUBLISH: u16 = 40;

/// Appends a `basic.publish` method frame (ticket 0), byte-identical to
/// amq-protocol's generator.
pub fn encode_basic_publish(
    buf: &mut BytesMut,
    channel: u16,
    exchange: &str,
    routing_key: &str,
    mandatory: bool,
    immediate: bool,
) -> Result<(), CodecError> {
    let payload =
        4 + 2 + short_len("exchange", exchange)? + short_len("routing_key", routing_key)? + 1;
    start_method(buf, channel, METHOD_PUBLISH, payload);
    buf.put_u16(0); // ticket: deprecated, always 0
    put_short(buf, exchange);
    put_short(buf, routing_key);
    buf.put_u8(u8::from(mandatory) | (u8::from(immediate) << 1));
    buf.put_u8(FRAME_END);
    Ok(())
}

/// A borrowed view of a `basic.deliver`'s arguments. The short strings are
/// the raw bytes as received: unlike amq-protocol, no UTF-8 check is made,
/// because a client that only wants the delivery tag should not pay for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliverRef<'a> {
    /// The consumer tag.
    pub consumer_tag: &'a [u8],
    /// The delivery tag, to ack with.
    pub delivery_tag: u64,
    /// Whether the message was delivered before.
    pub redelivered: bool,
    /// The exchange the message was published to.
    pub exchange: &'a [u8],
    /// The routing key it was published with.
    pub routing_key: &'a [u8],
}

/// Splits a method payload (class id, method id, arguments) into its
/// arguments if it is `class_id.method_id`.
fn method_args(payload: &[u8], method_id: u16) -> Option<Args<'_>> {
    let mut a = Args(payload);
    (a.u16()? == CLASS_BASIC && a.u16()? == method_id).then_some(a)
}

fn short_bytes<'a>(a: &mut Args<'a>) -> Option<&'a [u8]> {
    let len = a.u8()?;
    a.take(usize::from(len))
}

/// Reads a method-frame payload (starting at the class id) as a
/// `basic.deliver` without allocating. `None` if it is another method or
/// malformed (truncated, trailing bytes).
pub fn parse_basic_deliver(payload: &[u8]) -> Option<DeliverRef<'_>> {
    let mut a = method_args(payload, METHOD_DELIVER)?;
    let d = DeliverRef {
        consumer_tag: short_bytes(&mut a)?,
        delivery_tag: a.u64()?,
        redelivered: bit(a.u8()?, 0),
        exchange: short_bytes(&mut a)?,
        routing_key: short_bytes(&mut a)?,
    };
    a.is_empty().then_some(d)
}

/// Reads a method-frame payload as a `basic.ack` (a publisher confirm, on
/// the client side). `None` if it is another method or malformed.
pub fn parse_basic_ack(payload: &[u8]) -> Option<basic::Ack> {
    let mut a = method_args(payload, METHOD_ACK)?;
    let ack = basic::Ack {
        delivery_tag: a.u64()?,
        multiple: bit(a.u8()?, 0),
    };
    a.is_empty().then_some(ack)
}

/// Reads a method-frame payload as a `basic.nack`. `None` if it is another
/// method or malformed.
pub fn parse_basic_nack(payload: &[u8]) -> Option<basic::Nack> {
    let mut a = method_args(payload, METHOD_NACK)?;
    let delivery_tag = a.u64()?;
    let flags = a.u8()?;
    let nack = basic::Nack {
        delivery_tag,
        multiple: bit(flags, 0),
        requeue: bit(flags, 1),
    };
    a.is_empty().then_some(nack)
}

#[cfg(test)]
mod client_tests;

#[cfg(test)]
mod tests;

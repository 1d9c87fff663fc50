//! Method frames: decoding a method payload into amq-protocol's
//! [`AMQPClass`], and the generic encoder for any method.
//!
//! Decoding first reads the class and method ids itself so that an unknown
//! method (NOT_IMPLEMENTED) can be told apart from a known one with bad
//! arguments (FRAME_ERROR): amq-protocol's parser fails the same way for
//! both. The hottest client methods go through hand-rolled parsers in
//! [`crate::basic`]; the rest through amq-protocol's `parse_class`.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::{gen_class, parse_class, AMQPClass};
use bytes::BytesMut;

use crate::basic;
use crate::error::CodecError;
use crate::nesting;
use crate::wire::{be_u16, be_u32, begin_frame, finish_frame, FRAME_METHOD};

/// The `class.method` name of a method id pair, or `None` if AMQP 0-9-1
/// (with RabbitMQ's extensions: exchange bindings, confirms, nack,
/// connection.blocked, update-secret) has no such method. Useful in logs and
/// reply texts.
#[must_use]
pub fn method_name(class_id: u16, method_id: u16) -> Option<&'static str> {
    let name = match (class_id, method_id) {
        (10, 10) => "connection.start",
        (10, 11) => "connection.start-ok",
        (10, 20) => "connection.secure",
        (10, 21) => "connection.secure-ok",
        (10, 30) => "connection.tune",
        (10, 31) => "connection.tune-ok",
        (10, 40) => "connection.open",
        (10, 41) => "connection.open-ok",
        (10, 50) => "connection.close",
        (10, 51) => "connection.close-ok",
        (10, 60) => "connection.blocked",
        (10, 61) => "connection.unblocked",
        (10, 70) => "connection.update-secret",
        (10, 71) => "connection.update-secret-ok",
        (20, 10) => "channel.open",
        (20, 11) => "channel.open-ok",
        (20, 20) => "channel.flow",
        (20, 21) => "channel.flow-ok",
        (20, 40) => "channel.close",
        (20, 41) => "channel.close-ok",
        (30, 10) => "access.request",
        (30, 11) => "access.request-ok",
        (40, 10) => "exchange.declare",
        (40, 11) => "exchange.declare-ok",
        (40, 20) => "exchange.delete",
        (40, 21) => "exchange.delete-ok",
        (40, 30) => "exchange.bind",
        (40, 31) => "exchange.bind-ok",
        (40, 40) => "exchange.unbind",
        // Not a typo: RabbitMQ numbers exchange.unbind-ok 51.
        (40, 51) => "exchange.unbind-ok",
        (50, 10) => "queue.declare",
        (50, 11) => "queue.declare-ok",
        (50, 20) => "queue.bind",
        (50, 21) => "queue.bind-ok",
        (50, 30) => "queue.purge",
        (50, 31) => "queue.purge-ok",
        (50, 40) => "queue.delete",
        (50, 41) => "queue.delete-ok",
        (50, 50) => "queue.unbind",
        (50, 51) => "queue.unbind-ok",
        (60, 10) => "basic.qos",
        (60, 11) => "basic.qos-ok",
        (60, 20) => "basic.consume",
        (60, 21) => "basic.consume-ok",
        (60, 30) => "basic.cancel",
        (60, 31) => "basic.cancel-ok",
        (60, 40) => "basic.publish",
        (60, 50) => "basic.return",
        (60, 60) => "basic.deliver",
        (60, 70) => "basic.get",
        (60, 71) => "basic.get-ok",
        (60, 72) => "basic.get-empty",
        (60, 80) => "basic.ack",
        (60, 90) => "basic.reject",
        (60, 100) => "basic.recover-async",
        (60, 110) => "basic.recover",
        (60, 111) => "basic.recover-ok",
        (60, 120) => "basic.nack",
        (85, 10) => "confirm.select",
        (85, 11) => "confirm.select-ok",
        (90, 10) => "tx.select",
        (90, 11) => "tx.select-ok",
        (90, 20) => "tx.commit",
        (90, 21) => "tx.commit-ok",
        (90, 30) => "tx.rollback",
        (90, 31) => "tx.rollback-ok",
        _ => return None,
    };
    Some(name)
}

/// Decodes a whole method-frame payload (class id, method id, arguments).
pub(crate) fn parse_method(payload: &[u8]) -> Result<AMQPClass, CodecError> {
    if payload.len() < 4 {
        return Err(CodecError::MalformedFrame {
            frame_type: FRAME_METHOD,
            reason: "method payload shorter than its class and method ids",
        });
    }
    let class_id = be_u16(payload, 0);
    let method_id = be_u16(payload, 2);
    let Some(name) = method_name(class_id, method_id) else {
        return Err(CodecError::UnknownMethod {
            class_id,
            method_id,
        });
    };
    let malformed = || CodecError::MalformedMethod {
        class_id,
        method_id,
        name,
    };
    if let Some(fast) = basic::parse_fast(class_id, method_id, &payload[4..]) {
        return fast.ok_or_else(malformed);
    }
    // amq-protocol recurses per nesting level without a limit.
    if !nesting::method_ok(class_id, method_id, &payload[4..]) {
        return Err(malformed());
    }
    // amq-protocol's parsers are nom "streaming" parsers: on a truncated
    // payload they return Incomplete rather than an error, and they stop
    // without complaint before trailing bytes. We hold the whole payload, so
    // both mean the method is malformed (RabbitMQ: "cannot decode").
    let method = match parse_class(payload) {
        Ok(([], method)) => method,
        _ => return Err(malformed()),
    };
    if (class_id, method_id) == (60, 10) {
        // Qos has no prefetch_size field: amq-protocol reads and drops it.
        let prefetch_size = be_u32(payload, 4);
        if prefetch_size != 0 {
            return Err(CodecError::PrefetchSizeUnsupported { prefetch_size });
        }
    }
    Ok(method)
}

/// Appends one method frame for any method, through amq-protocol's
/// generator. The hot server-to-client methods have faster equivalents in
/// [`crate::basic`] that produce identical bytes.
///
/// amq-protocol's generator needs a writer it can seek back in (to patch
/// table lengths), which `BytesMut` is not, so the payload is built in a
/// scratch `Vec` and copied: fine for the non-hot methods this is for.
pub fn encode_method(
    buf: &mut BytesMut,
    channel: u16,
    method: &AMQPClass,
) -> Result<(), CodecError> {
    let ctx = gen_class(method)(WriteContext::from(Vec::with_capacity(64)))
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    let (payload, _) = ctx.into_inner();
    let start = begin_frame(buf, FRAME_METHOD, channel);
    buf.extend_from_slice(&payload);
    finish_frame(buf, start)
}

#[cfg(test)]
mod tests;

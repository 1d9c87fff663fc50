//! Content (spec §4.2.6): a content header frame, then body frames.
//!
//! The broker keeps message properties as raw bytes (flags + property list
//! exactly as published) and re-sends them as they came; the typed
//! [`BasicProperties`] are for reading (expiration, priority, ...) and for
//! messages the broker builds itself.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{gen_properties, parse_properties as amqp_parse_properties};
use amq_protocol::protocol::BasicProperties;
use bytes::{BufMut, Bytes, BytesMut};

use crate::error::CodecError;
use crate::frame::FRAME_OVERHEAD;
use crate::wire::{FRAME_BODY, FRAME_END, FRAME_HEADER};

/// The only class with content.
pub(crate) const CLASS_BASIC: u16 = 60;
/// class-id (2) + weight (2) + body-size (8), before the properties.
pub(crate) const HEADER_FIXED_SIZE: usize = 12;

/// Appends a content header frame carrying `raw_properties` verbatim, then
/// `body` split into body frames so that no frame (overhead included)
/// exceeds `frame_max` (0: no limit). An empty body gets no body frame.
///
/// Fails without writing anything if `raw_properties` is not at least a
/// flags word, if the header frame alone would exceed `frame_max`, or if
/// `frame_max` is too small to carry a body byte.
pub fn encode_content(
    buf: &mut BytesMut,
    channel: u16,
    class_id: u16,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: u32,
) -> Result<(), CodecError> {
    encode_content_frames(
        buf,
        channel,
        class_id,
        raw_properties,
        body,
        frame_max,
        false,
    )
}

/// Like [`encode_content`], except that a header frame too large for
/// `frame_max` is written whole instead of refused; body frames still fit.
///
/// For re-sending content as it was received: a header frame cannot be
/// split, and one may not fit this connection's frame_max although it was
/// accepted, because [`crate::check_frame`] lets payloads of up to
/// frame_max in (RabbitMQ's 8-byte allowance) or because the message came
/// over a connection with a larger frame_max. RabbitMQ sends such headers
/// whole too; refusing would lose the delivery.
pub fn encode_content_whole_header(
    buf: &mut BytesMut,
    channel: u16,
    class_id: u16,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: u32,
) -> Result<(), CodecError> {
    encode_content_frames(
        buf,
        channel,
        class_id,
        raw_properties,
        body,
        frame_max,
        true,
    )
}

fn encode_content_frames(
    buf: &mut BytesMut,
    channel: u16,
    class_id: u16,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: u32,
    whole_header: bool,
) -> Result<(), CodecError> {
    if raw_properties.len() < 2 {
        return Err(CodecError::MalformedProperties);
    }
    let max_payload = match frame_max {
        0 => u32::MAX as usize,
        m if m <= FRAME_OVERHEAD => return Err(CodecError::FrameMaxTooSmall { frame_max }),
        m => (m - FRAME_OVERHEAD) as usize,
    };
    let header_payload = HEADER_FIXED_SIZE + raw_properties.len();
    let header_limit = if whole_header {
        u32::MAX as usize
    } else {
        max_payload
    };
    if header_payload > header_limit {
        return Err(CodecError::FrameTooLarge {
            size: header_payload as u64,
            frame_max,
        });
    }
    let overhead = FRAME_OVERHEAD as usize;
    let body_frames = body.len().div_ceil(max_payload);
    buf.reserve(header_payload + body.len() + overhead * (1 + body_frames));

    buf.put_u8(FRAME_HEADER);
    buf.put_u16(channel);
    buf.put_u32(header_payload as u32);
    buf.put_u16(class_id);
    buf.put_u16(0); // weight: unused, always 0
    buf.put_u64(body.len() as u64);
    buf.put_slice(raw_properties);
    buf.put_u8(FRAME_END);

    for chunk in body.chunks(max_payload) {
        buf.put_u8(FRAME_BODY);
        buf.put_u16(channel);
        buf.put_u32(chunk.len() as u32);
        buf.put_slice(chunk);
        buf.put_u8(FRAME_END);
    }
    Ok(())
}

/// Encodes properties to raw bytes (flags + property list), for messages
/// the broker builds itself. Uses amq-protocol's generator, so header
/// tables come out with keys in sorted order.
///
/// Fallible only because the generator's API is; with an in-memory buffer
/// it does not fail in practice.
pub fn encode_properties(properties: &BasicProperties) -> Result<Bytes, CodecError> {
    let ctx = gen_properties(properties)(WriteContext::from(Vec::with_capacity(32)))
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(Bytes::from(ctx.into_inner().0))
}

/// Decodes raw property bytes (as found in [`crate::Frame::Header`]'s
/// `raw_properties`). All of `raw` must be consumed.
pub fn parse_properties(raw: &[u8]) -> Result<BasicProperties, CodecError> {
    // amq-protocol recurses per nesting level without a limit.
    if !crate::nesting::properties_ok(raw) {
        return Err(CodecError::MalformedProperties);
    }
    match amqp_parse_properties(raw) {
        Ok(([], properties)) => Ok(properties),
        _ => Err(CodecError::MalformedProperties),
    }
}

#[cfg(test)]
mod tests;

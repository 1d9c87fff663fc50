//! Framing (spec §2.3.5, §4.2.3): the protocol header, then frames of
//! `type:u8 channel:u16 size:u32 payload[size] 0xCE`.
//!
//! Reading is two steps so that the server never buffers more than it must:
//! [`check_frame`] looks at the 7-byte header alone and says "need more",
//! "a whole frame of N bytes is here" or "this is an error" (too large
//! before a byte of the payload is read); the server then splits exactly
//! those N bytes off its read buffer and gives them to [`parse_frame`].

use amq_protocol::protocol::AMQPClass;
use bytes::{BufMut, Bytes, BytesMut};

use crate::content;
use crate::error::CodecError;
use crate::method::parse_method;
use crate::wire::{
    be_u16, be_u32, be_u64, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEADER_SIZE,
    FRAME_HEARTBEAT, FRAME_METHOD,
};

/// What an AMQP 0-9-1 client sends first, and what the server sends back
/// before closing when the client's header is wrong.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// The 0-9 header. RabbitMQ treats it as 0-9-1 (the two are wire
/// compatible for what clients use), so we accept it too.
const PROTOCOL_HEADER_0_9: &[u8; 8] = b"AMQP\x01\x01\x00\x09";

/// Bytes a frame adds around its payload: 7 of header, 1 frame end.
pub const FRAME_OVERHEAD: u32 = 8;

/// The smallest frame_max a peer may impose (spec: frame-min-size). Use it
/// as the limit until `connection.tune-ok` has been received.
pub const FRAME_MIN_SIZE: u32 = 4096;

/// Result of [`check_protocol_header`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum HeaderCheck {
    /// Fewer than 8 bytes, all consistent with a valid header so far.
    Incomplete,
    /// A valid header occupies the first 8 bytes.
    Ok,
    /// Not AMQP 0-9-1: write [`PROTOCOL_HEADER`] back and close.
    Bad,
}

/// Checks the protocol header at the start of `buf`.
///
/// Besides `AMQP 0 0 9 1` this accepts the 0-9 header (`AMQP 1 1 0 9`) as
/// RabbitMQ does. A short buffer is `Bad` as soon as it can no longer become
/// a valid header (e.g. `GET /` or a TLS hello), so such peers are answered
/// at once instead of waiting for 8 bytes that may never come.
pub fn check_protocol_header(buf: &[u8]) -> HeaderCheck {
    let n = buf.len().min(8);
    let matches = |header: &[u8; 8]| buf[..n] == header[..n];
    if !matches(PROTOCOL_HEADER) && !matches(PROTOCOL_HEADER_0_9) {
        HeaderCheck::Bad
    } else if n < 8 {
        HeaderCheck::Incomplete
    } else {
        HeaderCheck::Ok
    }
}

/// Looks at the frame header at the start of `buf` (never at the payload).
///
/// - `Ok(None)`: not enough bytes yet for a whole frame. Normal.
/// - `Ok(Some(len))`: the first `len` bytes are one whole frame (header,
///   payload and frame end); hand exactly those to [`parse_frame`].
/// - `Err(UnknownFrameType)` as soon as the first byte is read.
/// - `Err(FrameTooLarge)` as soon as the 7-byte header is read, when the
///   declared payload size exceeds `frame_max` (0 means no limit).
///
/// The limit is on the payload size, not payload + 8: RabbitMQ allows that
/// fudge of 8 bytes because clients commonly get it wrong by up to the
/// frame overhead, and a client that works against RabbitMQ must work here.
/// Our own encoders keep whole frames within frame_max.
pub fn check_frame(buf: &[u8], frame_max: u32) -> Result<Option<usize>, CodecError> {
    let Some(&frame_type) = buf.first() else {
        return Ok(None);
    };
    if !matches!(
        frame_type,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(CodecError::UnknownFrameType { frame_type });
    }
    frame_extent(buf, frame_max)
}

/// [`check_frame`] without the frame-type check: delimits a frame of any
/// type by its header (`Err` only for [`CodecError::FrameTooLarge`]). For a
/// server that, like RabbitMQ, reads a frame of an unknown type whole
/// before refusing it and quoting its payload (see [`rabbit`]).
pub fn frame_extent(buf: &[u8], frame_max: u32) -> Result<Option<usize>, CodecError> {
    if buf.len() < FRAME_HEADER_SIZE {
        return Ok(None);
    }
    let size = be_u32(buf, 3);
    if frame_max != 0 && size > frame_max {
        return Err(CodecError::FrameTooLarge {
            size: u64::from(size),
            frame_max,
        });
    }
    // usize is at least 32 bits on every target std supports, but the +8
    // could overflow a 32-bit usize for a 4 GiB payload.
    let total = usize::try_from(size)
        .ok()
        .and_then(|s| s.checked_add(FRAME_OVERHEAD as usize))
        .ok_or(CodecError::FrameTooLarge {
            size: u64::from(size),
            frame_max,
        })?;
    Ok((buf.len() >= total).then_some(total))
}

/// One decoded frame.
///
/// Not boxed on purpose: a frame lives only from parsing to dispatch,
/// moving it is cheap, and a box would add an allocation per published
/// message.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Frame {
    /// A method. Not boxed: a frame is consumed right after parsing, and a
    /// box would cost an allocation per method on the publish path.
    Method {
        /// Channel number.
        channel: u16,
        /// The decoded method.
        method: AMQPClass,
    },
    /// A content header.
    Header {
        /// Channel number.
        channel: u16,
        /// Always 60 (basic): other classes are rejected.
        class_id: u16,
        /// Total size of the body frames that follow.
        body_size: u64,
        /// The properties as a `ferry-model` props blob
        /// ([`crate::model::props_to_model`]): what the broker stores, and
        /// reads the few fields it needs from. Converting it back gives
        /// `raw_properties` byte for byte.
        props: Bytes,
        /// The property flags and property list exactly as received (a
        /// zero-copy slice of the frame).
        raw_properties: Bytes,
    },
    /// A content body piece: a zero-copy slice of the frame.
    Body {
        /// Channel number.
        channel: u16,
        /// The bytes.
        payload: Bytes,
    },
    /// A heartbeat. The spec requires channel 0; the channel is kept so the
    /// server can reject others (RabbitMQ: UNEXPECTED_FRAME).
    Heartbeat {
        /// Channel number.
        channel: u16,
    },
}

impl Frame {
    /// The channel the frame was sent on.
    #[must_use]
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
            | Frame::Heartbeat { channel } => *channel,
        }
    }
}

/// Decodes exactly one whole frame, as delimited by [`check_frame`].
///
/// Checks the frame-end octet and that nothing follows it. Body payloads and
/// raw properties are slices of `frame`, not copies.
pub fn parse_frame(frame: Bytes) -> Result<Frame, CodecError> {
    if frame.len() < FRAME_OVERHEAD as usize {
        return Err(CodecError::Truncated {
            expected: FRAME_OVERHEAD as usize,
            actual: frame.len(),
        });
    }
    let frame_type = frame[0];
    let channel = be_u16(&frame, 1);
    let size = be_u32(&frame, 3) as usize;
    let total = size.saturating_add(FRAME_OVERHEAD as usize);
    if frame.len() < total {
        return Err(CodecError::Truncated {
            expected: total,
            actual: frame.len(),
        });
    }
    if frame.len() > total {
        return Err(CodecError::TrailingBytes {
            extra: frame.len() - total,
        });
    }
    // The frame end first, as RabbitMQ does: a bad one is fatal (the
    // framing is lost), whatever the type.
    let end = frame[total - 1];
    if end != FRAME_END {
        return Err(CodecError::BadFrameEnd { found: end });
    }
    if !matches!(
        frame_type,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(CodecError::UnknownFrameType { frame_type });
    }
    let payload = FRAME_HEADER_SIZE..FRAME_HEADER_SIZE + size;
    match frame_type {
        FRAME_METHOD => Ok(Frame::Method {
            channel,
            method: parse_method(&frame[payload])?,
        }),
        FRAME_HEADER => parse_content_header(channel, frame.slice(payload)),
        FRAME_BODY => Ok(Frame::Body {
            channel,
            payload: frame.slice(payload),
        }),
        _ if size != 0 => Err(CodecError::MalformedFrame {
            frame_type,
            reason: "heartbeat frame with a payload",
        }),
        _ => Ok(Frame::Heartbeat { channel }),
    }
}

/// class-id:u16 weight:u16 body-size:u64, then flags and property list.
fn parse_content_header(channel: u16, payload: Bytes) -> Result<Frame, CodecError> {
    if payload.len() < content::HEADER_FIXED_SIZE + 2 {
        return Err(CodecError::MalformedFrame {
            frame_type: FRAME_HEADER,
            reason: "content header shorter than its fixed fields",
        });
    }
    let class_id = be_u16(&payload, 0);
    if class_id != content::CLASS_BASIC {
        return Err(CodecError::UnexpectedContentClass { class_id });
    }
    // The weight (bytes 2..4) must be 0 per spec but is unused; like
    // RabbitMQ and amq-protocol we accept any value.
    let body_size = be_u64(&payload, 4);
    let raw_properties = payload.slice(content::HEADER_FIXED_SIZE..);
    // One pass: validated and converted (no amq-protocol decode here).
    let props = crate::model::props_to_model(&raw_properties)?;
    Ok(Frame::Header {
        channel,
        class_id,
        body_size,
        props,
        raw_properties,
    })
}

/// Appends a heartbeat frame (channel 0, empty payload).
pub fn encode_heartbeat(buf: &mut BytesMut) {
    buf.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

pub mod rabbit;

#[cfg(test)]
mod tests;

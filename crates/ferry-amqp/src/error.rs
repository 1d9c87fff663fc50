//! The codec's error type.
//!
//! Every variant knows the reply code the server must answer with, and for
//! method errors the class and method ids that `connection.close` carries, so
//! the server can turn any codec error into a spec-conformant close without
//! inspecting it further.

use crate::reply::ReplyCode;

/// Errors from framing, method/property decoding, encoding and SASL parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The frame-type octet is not 1, 2, 3 or 8.
    #[error("unknown frame type {frame_type}")]
    UnknownFrameType {
        /// The octet found.
        frame_type: u8,
    },
    /// The payload size declared in the frame header is over the limit.
    #[error("frame too large: payload of {size} bytes, frame_max is {frame_max}")]
    FrameTooLarge {
        /// Declared (or, when encoding, required) payload size.
        size: u64,
        /// The negotiated frame_max.
        frame_max: u32,
    },
    /// The octet after the payload is not 0xCE.
    #[error("invalid frame end marker 0x{found:02x}, expected 0xce")]
    BadFrameEnd {
        /// The octet found.
        found: u8,
    },
    /// `parse_frame` was given fewer bytes than the header declares.
    #[error("truncated frame: {actual} bytes, header declares {expected}")]
    Truncated {
        /// Whole-frame length the header declares (or 8 if no header).
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// `parse_frame` was given bytes after the frame end.
    #[error("{extra} trailing bytes after the frame end")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// A frame whose payload cannot be right for its type (e.g. a heartbeat
    /// with a payload, a method frame shorter than its ids).
    #[error("malformed frame of type {frame_type}: {reason}")]
    MalformedFrame {
        /// The frame type.
        frame_type: u8,
        /// What is wrong.
        reason: &'static str,
    },
    /// Class/method ids that AMQP 0-9-1 (with RabbitMQ extensions) lacks.
    #[error("unknown method {class_id}.{method_id}")]
    UnknownMethod {
        /// Class id.
        class_id: u16,
        /// Method id.
        method_id: u16,
    },
    /// A known method whose arguments cannot be decoded: truncated, extra
    /// bytes, a bad field table, or a short string that is not UTF-8.
    #[error("cannot decode {name} ({class_id}.{method_id})")]
    MalformedMethod {
        /// Class id.
        class_id: u16,
        /// Method id.
        method_id: u16,
        /// e.g. `"basic.publish"`.
        name: &'static str,
    },
    /// `basic.qos` with a non-zero prefetch-size. amq-protocol's `Qos` has
    /// no field for it, so we cannot pass it on; RabbitMQ refuses it with
    /// NOT_IMPLEMENTED too.
    #[error("prefetch_size!=0 ({prefetch_size})")]
    PrefetchSizeUnsupported {
        /// The value the client sent.
        prefetch_size: u32,
    },
    /// A content header for a class other than basic (the only one with
    /// content).
    #[error("content header for class {class_id}, only basic (60) has content")]
    UnexpectedContentClass {
        /// The class id in the header.
        class_id: u16,
    },
    /// Content properties that cannot be decoded.
    #[error("cannot decode content properties")]
    MalformedProperties,
    /// Encoding: a short string field over 255 bytes.
    #[error("short string field {field} is {len} bytes, longer than 255")]
    ShortStringTooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// Encoding: frame_max too small to carry any body byte.
    #[error("frame_max {frame_max} is too small to carry content")]
    FrameMaxTooSmall {
        /// The frame_max given.
        frame_max: u32,
    },
    /// Encoding through amq-protocol's generator failed.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// `connection.start-ok` named a mechanism we do not offer.
    #[error("unknown authentication mechanism '{0}'")]
    UnsupportedMechanism(String),
    /// A SASL response that does not parse.
    #[error("{mechanism} response invalid: {reason}")]
    MalformedSasl {
        /// `"PLAIN"` or `"AMQPLAIN"`.
        mechanism: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl CodecError {
    /// The reply code to close with. It follows RabbitMQ: undecodable frames
    /// and method arguments are FRAME_ERROR ("cannot decode"), malformed SASL
    /// responses SYNTAX_ERROR, unknown mechanisms COMMAND_INVALID. All codec
    /// errors on input are connection errors: after one the byte stream can
    /// no longer be trusted.
    #[must_use]
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            CodecError::UnknownFrameType { .. }
            | CodecError::FrameTooLarge { .. }
            | CodecError::BadFrameEnd { .. }
            | CodecError::Truncated { .. }
            | CodecError::TrailingBytes { .. }
            | CodecError::MalformedFrame { .. }
            | CodecError::MalformedMethod { .. }
            | CodecError::MalformedProperties => ReplyCode::FRAME_ERROR,
            CodecError::UnknownMethod { .. } | CodecError::PrefetchSizeUnsupported { .. } => {
                ReplyCode::NOT_IMPLEMENTED
            }
            CodecError::UnexpectedContentClass { .. } => ReplyCode::UNEXPECTED_FRAME,
            CodecError::MalformedSasl { .. } => ReplyCode::SYNTAX_ERROR,
            CodecError::UnsupportedMechanism(_) => ReplyCode::COMMAND_INVALID,
            CodecError::ShortStringTooLong { .. }
            | CodecError::FrameMaxTooSmall { .. }
            | CodecError::Encode(_) => ReplyCode::INTERNAL_ERROR,
        }
    }

    /// The `(class_id, method_id)` that `connection.close` should name as
    /// the cause, or `(0, 0)` when no method is involved.
    #[must_use]
    pub fn method_ids(&self) -> (u16, u16) {
        match self {
            CodecError::UnknownMethod {
                class_id,
                method_id,
            }
            | CodecError::MalformedMethod {
                class_id,
                method_id,
                ..
            } => (*class_id, *method_id),
            CodecError::PrefetchSizeUnsupported { .. } => (60, 10),
            CodecError::UnsupportedMechanism(_) | CodecError::MalformedSasl { .. } => (10, 11),
            _ => (0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors_close_the_connection() {
        let errors = [
            CodecError::UnknownFrameType { frame_type: 9 },
            CodecError::FrameTooLarge {
                size: 10,
                frame_max: 5,
            },
            CodecError::BadFrameEnd { found: 0 },
            CodecError::UnknownMethod {
                class_id: 60,
                method_id: 99,
            },
            CodecError::MalformedMethod {
                class_id: 60,
                method_id: 40,
                name: "basic.publish",
            },
            CodecError::MalformedSasl {
                mechanism: "PLAIN",
                reason: "x",
            },
            CodecError::UnsupportedMechanism("X".into()),
        ];
        for e in errors {
            assert!(e.reply_code().is_connection_error(), "{e}");
        }
    }

    #[test]
    fn codes_and_ids() {
        let e = CodecError::UnknownMethod {
            class_id: 60,
            method_id: 99,
        };
        assert_eq!(e.reply_code(), ReplyCode::NOT_IMPLEMENTED);
        assert_eq!(e.method_ids(), (60, 99));
        let e = CodecError::MalformedMethod {
            class_id: 50,
            method_id: 10,
            name: "queue.declare",
        };
        assert_eq!(e.reply_code(), ReplyCode::FRAME_ERROR);
        assert_eq!(e.to_string(), "cannot decode queue.declare (50.10)");
        assert_eq!(
            CodecError::UnsupportedMechanism("X".into()).reply_code(),
            ReplyCode::COMMAND_INVALID
        );
        assert_eq!(CodecError::BadFrameEnd { found: 1 }.method_ids(), (0, 0));
    }
}

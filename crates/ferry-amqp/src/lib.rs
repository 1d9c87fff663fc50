//! `ferry-amqp`: Ferry's pure AMQP 0-9-1 codec.
//!
//! # What it owns
//!
//! - **Framing**: the protocol header ([`check_protocol_header`]), finding
//!   whole frames in a byte stream from their header alone
//!   ([`check_frame`], which enforces frame_max before the payload is
//!   buffered), and decoding one frame ([`parse_frame`] into [`Frame`]),
//!   with body payloads and raw properties as zero-copy slices.
//! - **Encoding** into a caller's `BytesMut`, many frames to one buffer:
//!   any method ([`encode_method`], through amq-protocol), fast byte-identical
//!   encoders for the hot basic methods ([`encode_basic_deliver`], ...),
//!   content split to frame_max ([`encode_content`]), heartbeats.
//! - **Properties**: converted to and from `ferry-model` props blobs
//!   ([`model`]; a content header arrives with its blob, a delivery is
//!   written from one), plus typed decode/encode ([`parse_properties`],
//!   [`encode_properties`]) for the broker's own messages and the
//!   management API.
//! - **Reply codes** and RabbitMQ-style reply texts ([`ReplyCode`],
//!   [`reply_text`]); every [`CodecError`] knows its reply code.
//! - **Handshake helpers**: SASL PLAIN/AMQPLAIN parsing ([`parse_sasl_response`])
//!   and the `connection.start` server properties ([`server_properties()`]).
//!
//! Method and property types are amq-protocol's, re-exported here
//! ([`AMQPClass`], [`BasicProperties`], [`FieldTable`], ...) so users need
//! not depend on it.
//!
//! # What it must not touch
//!
//! No I/O, no async, no clocks, no threads: bytes in, values out, values in,
//! bytes out. No broker concepts either (queues, exchanges, channels' state,
//! which method is valid when, authentication against users): those belong
//! to the server and core crates, which this crate must not depend on.

pub mod basic;
pub mod content;
pub mod error;
pub mod frame;
pub mod method;
pub mod model;
mod nesting;
pub mod reply;
pub mod sasl;
pub mod server_properties;
mod wire;

#[cfg(test)]
mod test_util;

pub use amq_protocol;
pub use amq_protocol::protocol::{AMQPClass, BasicProperties};
pub use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};

pub use basic::{
    encode_basic_ack, encode_basic_deliver, encode_basic_get_ok, encode_basic_nack,
    encode_basic_return,
};
pub use content::{
    encode_content, encode_content_whole_header, encode_properties, parse_properties,
};
pub use error::CodecError;
pub use frame::{
    check_frame, check_protocol_header, encode_heartbeat, parse_frame, Frame, HeaderCheck,
    FRAME_MIN_SIZE, FRAME_OVERHEAD, PROTOCOL_HEADER,
};
pub use method::{encode_method, method_name};
pub use reply::{reply_text, ErrorScope, ReplyCode};
pub use sasl::{parse_amqplain, parse_plain, parse_sasl_response, Credentials};
pub use server_properties::{
    connection_start, server_properties, Capabilities, LOCALES, MECHANISMS,
};

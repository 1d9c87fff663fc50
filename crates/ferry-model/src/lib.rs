//! # ferry-model: the message vocabulary every protocol shares
//!
//! Owns the protocol-neutral [`Message`] (body, props blob, publish facts)
//! and the form of what it carries besides its body: typed values and tables ([`Value`], [`Table`]) for headers and
//! arguments, message [`Properties`], and their binary forms ([`wire`],
//! [`props`]) that stored records carry. AMQP 0-9-1 and Kafka front ends
//! convert to and from it at their edges (the mapping rules are in
//! docs/message-model.md), so one stored message can be delivered over
//! either protocol; and how x-arguments in those tables are read and
//! refused with RabbitMQ's texts ([`args`]), which every layer that takes
//! arguments shares; and server-generated names (`names`: `amq.gen-…`,
//! `amq.ctag-…`).
//!
//! Must not: know any wire protocol (no AMQP or Kafka types here), do I/O,
//! read clocks, or panic on any input (decoders are total: malformed bytes
//! are a [`ModelError`]).

pub mod args;
pub mod error;
pub mod message;
pub mod names;
pub mod props;
pub mod value;
pub mod wire;

pub use error::ModelError;
pub use message::Message;
pub use props::Properties;
pub use value::{Table, Value};

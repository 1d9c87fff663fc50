//! Exchanges and routing, with RabbitMQ's semantics (AMQP 0-9-1).
//!
//! Everything here is pure data and computation: no I/O, no clocks, no
//! locks. The vhost owns the exchanges (a name → [`Exchange`] map) and
//! calls into this module under its own locking.
//!
//! - [`ExchangeKind`]: the built-in types (and the plugin types Ferry has built in) and their wire names.
//! - [`Binding`] / [`Destination`]: a binding's identity is
//!   (destination, routing key, arguments), as in RabbitMQ, so binding twice
//!   is a no-op and unbinding something absent is not an error.
//! - [`Exchange`]: metadata plus its bindings, indexed per kind so routing
//!   does not scan every binding (direct: hash lookup; topic: a trie).
//! - [`route_all`]: follows exchange-to-exchange bindings and alternate
//!   exchanges, each exchange at most once, and returns the deduplicated
//!   set of queue names; [`route_all_keys`] does it for several keys (the
//!   publish key plus [`sender_selected_keys`], RabbitMQ's `CC` / `BCC`).
//! - [`TopicTrie`] / [`topic_matches`]: topic pattern matching.
//! - [`HeadersMatcher`]: headers-exchange matching (`x-match`).
//! - [`table_serde`]: a JSON-friendly, lossless serde format for
//!   [`FieldTable`](amq_protocol_types::FieldTable).
//!
//! - [`consistent_hash`]: the `x-consistent-hash` type's rules (weights as
//!   binding keys, `hash-header` / `hash-property`, the bucket ring).
//! - [`delayed`]: the `x-delayed-message` type's rules (`x-delayed-type`,
//!   `x-delay`); `delayed_store` holds its messages in hidden queues, the
//!   one part of this module that does I/O (through `queue::Queue`).
//!
//! Error texts are RabbitMQ's (without the reply-code prefix); which AMQP
//! code each maps to is documented where it is produced.

mod args;
pub(crate) mod args_model;
mod binding;
pub mod consistent_hash;
pub mod delayed;
mod delayed_store;
// The module is named after its main type like every other file here.
#[allow(clippy::module_inception)]
mod exchange;
mod headers;
mod index;
mod kind;
mod multiset;
mod router;
pub mod table_serde;
mod topic;

pub(crate) use args::type_name;
pub use args::{as_u64, describe_bare, describe_typed, equivalent_arg};
pub use binding::{Binding, Destination};
pub use delayed::delay_of;
pub use delayed_store::DelayedStore;
pub use exchange::Exchange;
pub use headers::{validate_binding_arguments, HeadersMatcher, InvalidBinding, XMatch};
pub use kind::{ExchangeKind, UnknownExchangeType};
pub use router::{
    bcc_keys, route_all, route_all_keys, route_all_message, sender_selected_keys,
    InvalidRoutingHeader, NameSet,
};
pub use topic::{topic_matches, TopicTrie};

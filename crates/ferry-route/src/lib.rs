//! # ferry-route: exchanges and routing, with RabbitMQ's semantics
//!
//! Owns exchange types, bindings, the topic trie, the headers matcher,
//! consistent hashing, the delayed-message type's rules, and following
//! exchange-to-exchange and alternate-exchange routes to the names of
//! queues. Pure data and computation: the vhost (ferry-broker) owns the
//! exchanges (a name → [`Exchange`] map) and calls in under its own locking.
//!
//! Must not: do I/O, read clocks, take locks, know queues or streams beyond
//! their names (a [`Destination`]), or know any wire protocol.
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
//!   argument tables ([`ferry_model::Table`]).
//!
//! Arguments (exchange, binding, queue, consumer) and the message headers
//! routing reads are `ferry_model` tables; binding identity and
//! redeclare checks see a table as RabbitMQ's sorted table (key order, the
//! first entry of a repeated key), whatever order it was given in.
//!
//! - [`consistent_hash`]: the `x-consistent-hash` type's rules (weights as
//!   binding keys, `hash-header` / `hash-property`, the bucket ring).
//! - [`delayed`]: the `x-delayed-message` type's rules (`x-delayed-type`,
//!   `x-delay`); ferry-broker's `vhost::delayed_store` holds the messages in
//!   hidden queues.
//!
//! Error texts are RabbitMQ's (without the reply-code prefix); which AMQP
//! code each maps to is documented where it is produced.

mod args;
mod binding;
pub mod consistent_hash;
pub mod delayed;
// The module is named after its main type like every other file here.
#[allow(clippy::module_inception)]
mod exchange;
mod headers;
mod index;
mod kind;
mod multiset;
mod router;
pub mod table_serde;
#[cfg(test)]
mod test_support;
mod topic;

pub use args::{as_u64, describe_bare, describe_typed, equivalent_arg};
pub use binding::{Binding, Destination};
pub use delayed::delay_of;
pub use exchange::Exchange;
pub use headers::{validate_binding_arguments, HeadersMatcher, InvalidBinding, XMatch};
pub use kind::{ExchangeKind, UnknownExchangeType};
pub use router::{
    bcc_keys, route_all, route_all_keys, route_all_message, sender_selected_keys,
    InvalidRoutingHeader, NameSet,
};
pub use topic::{topic_matches, TopicTrie};

//! # ferry-broker: vhosts, the registry, routing, and the node's broker
//!
//! Owns the [`Broker`] (its vhosts, users and permissions through
//! `ferry-auth`, policies and operator policies: validation with
//! RabbitMQ's texts, matching, precedence, the policy file; the access
//! file), each [`VHost`] (the exchange map, the one registry of queues and
//! streams, routing a publish through `ferry-route` to them, dead letters,
//! the delayed-message exchange's store), the definitions file, the
//! vhost lifecycle, and definition changes as commands ([`command`]: one
//! apply path, whether a change is applied here at once or comes through
//! a cluster's metadata group; [`applied`]: each such command once;
//! [`def_snapshot`]: all of them as one snapshot, and converging to one).
//! Queues and streams themselves are `ferry-queue`'s: the
//! broker opens them, hands them their effective arguments and a
//! dead-letter router, and calls them through `Source`.
//!
//! Must not: parse wire bytes or touch sockets (front ends call in with
//! plain values), know a wire protocol's message format, know AMQP reply
//! codes (errors carry an `ErrorKind`), read the clock (time comes in
//! through `ferry_queue::clock::Clock`), hold exchange rules (they are
//! `ferry-route`'s) or change a queue other than through its methods.
//!
//! ```text
//! front end ─ publish ─▶ VHost::route ─▶ [dyn Source] ─ append ─▶ ferry-log
//!     ▲                                   │  ▲  (Queue | Stream)    │ round (Syncer)
//!     └── ConsumerSink::deliver ◀─────────┘  └── ConfirmSink ◀──────┘
//! ```

pub mod applied;
pub mod broker;
pub mod command;
#[cfg(test)]
mod command_tests;
pub mod def_snapshot;
#[cfg(test)]
mod def_snapshot_tests;
pub mod definitions;
pub mod policy;
pub mod replicated;
pub mod shrink;
#[cfg(test)]
mod test_support;
pub mod vhost;

pub use broker::{Broker, BrokerConfig};
pub use command::{DefCommand, DefError};
pub use vhost::{ExchangeArgs, VHost};

//! # ferry-core: the broker's brain
//!
//! Owns vhosts (`vhost`: the exchange map, the one registry of queues and
//! streams, routing a publish through `ferry-route` to them, dead letters,
//! the delayed-message exchange's hidden queues), classic and quorum
//! queues as deterministic state machines over their command logs
//! (`queue`), streams as append-only logs read by offset (`stream`), the
//! [`source::Source`] seam a front end publishes to and consumes from
//! (either kind), consumers, delivery and acknowledgement, publisher
//! confirms and the node's durability rounds (`syncer`), round histograms
//! (`metrics`), users, permissions and the vhost lifecycle (`auth`, the
//! access file), policies and operator policies (`policy`: validation with
//! RabbitMQ's texts, matching, precedence; the policy file), the small
//! checksummed files definitions, access and policies are kept in
//! (`framed`), the length limits of names and keys checked where input
//! enters (`limits`: records never truncate), and reading and editing
//! message properties (`props`). Arguments, headers and properties are
//! `ferry_model` values, tables and props blobs; x-arguments are read with
//! `ferry_model::args` (one set of rules for queues, streams and exchanges).
//!
//! Must not: parse wire bytes or touch sockets (front ends do that and call
//! in with plain values), know a wire protocol's message format (the front
//! end converts at its edge and supplies the converter for properties
//! stored by v1 records), know AMQP reply codes (errors carry an
//! [`ErrorKind`]), read the clock (time comes in through [`clock::Clock`];
//! message deadlines are facts in the command log), or hold exchange rules
//! (they are `ferry-route`'s).
//!
//! ```text
//! front end ─ publish ─▶ VHost::route ─▶ [dyn Source] ─ append ─▶ ferry-log
//!     ▲                                   │  ▲  (Queue | Stream)    │ round (Syncer)
//!     └── ConsumerSink::deliver ◀─────────┘  └── ConfirmSink ◀──────┘
//! ```

pub mod broker;
pub mod clock;
pub mod definitions;
pub mod error;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod names;
pub mod policy;
pub mod props;
pub mod queue;
pub mod source;
pub mod stream;
pub mod syncer;
#[cfg(test)]
mod test_support;
pub mod vhost;

pub use broker::{Broker, BrokerConfig};
pub use error::{CoreError, ErrorKind, Result};
pub use message::Message;
pub use vhost::{ExchangeArgs, VHost};

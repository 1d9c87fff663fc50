//! # ferry-core: the broker's brain
//!
//! Owns vhosts, exchanges and routing, queues as deterministic state
//! machines over their command logs, consumers, delivery and
//! acknowledgement, publisher confirms, users, permissions and the vhost
//! lifecycle (`auth`, the access file).
//!
//! Must not: parse wire bytes or touch sockets (front ends do that and call
//! in with plain values), know AMQP reply codes (errors carry an
//! [`ErrorKind`]), or read the clock (time comes in through
//! [`clock::Clock`]; message deadlines are facts in the command log).
//!
//! ```text
//! front end ─ publish ─▶ VHost::route ─▶ [Queue] ─ append ─▶ ferry-log
//!     ▲                                   │  ▲                 │ fsync (Syncer)
//!     └── ConsumerSink::deliver ◀─────────┘  └── ConfirmSink ◀─┘
//! ```

pub mod auth;
pub mod broker;
pub mod clock;
pub mod definitions;
pub mod error;
pub mod exchange;
pub(crate) mod framed;
pub mod message;
pub mod metrics;
pub mod names;
pub mod queue;
pub mod source;
pub mod stream;
pub mod syncer;
pub mod vhost;

pub use broker::{Broker, BrokerConfig};
pub use error::{CoreError, ErrorKind, Result};
pub use message::Message;
pub use vhost::{ExchangeArgs, VHost};

//! Queues: a deterministic state machine (`state`) changed only by
//! `apply::apply` of a `command::Command` (one record of the queue's log,
//! `record`), which returns `effects::Effects`; wrapped by `queue::Queue`,
//! the shared handle, whose lock protects `inner::Inner`: there each
//! command is decided, logged and applied through the `journal`, and its
//! effects executed; `consumers` picks who gets a message, `body_cache`
//! accounts the bodies kept in memory, `deadlines` tells the broker's
//! sweep when to look again.

mod admission;
pub mod apply;
pub mod args;
mod body_cache;
pub mod command;
mod consumers;
pub mod dead_letter;
mod deadlines;
pub mod effects;
mod inner;
mod journal;
mod log_owner;
// Named after its main type, like every file here.
#[allow(clippy::module_inception)]
pub mod queue;
pub mod record;
mod remote;
pub mod replica;
pub mod retry;
pub mod sinks;
pub mod spec;
pub mod state;
pub mod stats;

pub use admission::{Admission, Ticket, REFUSED};
pub use args::{Overflow, QueueArgs, QUORUM_DELIVERY_LIMIT};
pub use dead_letter::{DeadLetter, DeadLetterRouter, Reason};
pub use queue::{Enqueued, Queue};
pub use remote::{Forward, LeaderPort, RemoteConsumer};
pub use replica::{Binding, CommandLog, ProposeDone, Proposer, Replica};
pub use sinks::{ConfirmSink, ConfirmToken, ConsumerSink, Delivery};
pub use spec::{QueueEnv, QueueSpec};
pub use stats::{Depth, QueueStats, StatsSnapshot};

#[cfg(test)]
mod admission_tests;
#[cfg(test)]
mod apply_tests;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod feature_tests;
#[cfg(test)]
mod priority_tests;
#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod replica_tests;
#[cfg(test)]
mod retry_tests;
#[cfg(test)]
mod tests;

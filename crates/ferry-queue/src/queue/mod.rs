//! Queues: a deterministic state machine (`state`) changed only by
//! `apply::apply` of a `command::Command` (one record of the queue's log,
//! `record`), which returns `effects::Effects`; wrapped with consumers,
//! dispatch and group commit (`queue`), which decides each command, logs
//! it, applies it and executes its effects.

pub mod apply;
pub mod args;
pub mod command;
pub mod dead_letter;
pub mod effects;
// Named after its main type, like every file here.
#[allow(clippy::module_inception)]
pub mod queue;
pub mod record;
pub mod retry;
pub mod sinks;
pub mod state;
pub mod stats;

pub use args::{Overflow, QueueArgs, QUORUM_DELIVERY_LIMIT};
pub use dead_letter::{DeadLetter, DeadLetterRouter, Reason};
pub use queue::{Enqueued, Queue, QueueEnv, QueueSpec};
pub use sinks::{ConfirmSink, ConfirmToken, ConsumerSink, Delivery};
pub use stats::{Depth, QueueStats, StatsSnapshot};

#[cfg(test)]
mod apply_tests;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod feature_tests;
#[cfg(test)]
mod priority_tests;
#[cfg(test)]
mod retry_tests;
#[cfg(test)]
mod tests;

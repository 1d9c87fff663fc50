//! Queues: a deterministic state machine (`state`) fed by a command log
//! (`record`), wrapped with consumers and group commit (`queue`).

pub mod args;
pub mod dead_letter;
// Named after its main type, like every file here.
#[allow(clippy::module_inception)]
pub mod queue;
pub mod record;
pub mod retry;
pub mod sinks;
pub mod state;
pub mod stats;

pub use args::{Overflow, QueueArgs, QUORUM_DELIVERY_LIMIT};
pub use dead_letter::{DeadLetter, DeadLetterRouter, HeaderEdit, PropertyCodec, Reason};
pub use queue::{Enqueued, Queue, QueueEnv, QueueSpec};
pub use sinks::{ConfirmSink, ConfirmToken, ConsumerSink, Delivery};
pub use stats::{Depth, QueueStats, StatsSnapshot};

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

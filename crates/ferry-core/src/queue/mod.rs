//! Queues: a deterministic state machine (`state`) fed by a command log
//! (`record`), wrapped with consumers and group commit (`queue`).

// Named after its main type, like every file here.
#[allow(clippy::module_inception)]
pub mod queue;
pub mod record;
pub mod sinks;
pub mod state;

pub use queue::{Enqueued, Queue, QueueEnv, QueueSpec};
pub use sinks::{ConfirmSink, ConfirmToken, ConsumerSink, Delivery};

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;

//! Streams (`x-queue-type: stream`): append-only logs of messages with
//! non-destructive reads, what RabbitMQ 3.10 offers over AMQP and what the
//! Kafka front end will serve.
//!
//! Owns the stream record format (`record`), its commands and their one
//! apply path (`command`, `apply`, `effects`, `state`; run by `commit`,
//! home of `Inner`, the state behind the stream's lock), its arguments and
//! their checks (`args`), consumer offsets (`offset`), push consumers and
//! their dispatch (`consumers`), the retention policy (`retention`), pull
//! reads (`pull`: the reader and waiters behind the Kafka pull API), a
//! replicated stream's differences (`replica`: propose, apply committed
//! records at the group's offsets; `remote`: consumers on a node outside
//! the group, fed through a member) and
//! the [`Stream`] itself, whose one `impl` is the public face over these. It reuses the queue's seams (`ConsumerSink`,
//! `ConfirmToken`, `QueueEnv`, the `Syncer`) and implements
//! [`crate::source::Source`], so channels treat it like a queue except for
//! consume. Must not: know AMQP reply codes or wire bytes (properties are
//! props blobs, edited through `crate::props`), read the clock except
//! through `QueueEnv`, or touch the classic queue's state machine.
//! Format and rules: `docs/streams.md`.

pub mod apply;
pub mod args;
pub mod command;
mod commit;
mod consumers;
pub mod effects;
pub mod offset;
mod pull;
pub mod record;
mod remote;
mod replica;
mod retention;
pub mod state;
// Named after its main type, like every file here.
#[allow(clippy::module_inception)]
mod stream;

pub use args::StreamArgs;
pub use offset::OffsetSpec;
pub use pull::{ReadBatch, ReadLimits, StreamRecord, WaitFor, WaitOutcome};
pub use remote::StreamPort;
pub use replica::Applied;
pub use state::StreamState;
pub use stream::{Stream, StreamConsume};

#[cfg(test)]
mod apply_tests;
#[cfg(test)]
mod pull_tests;
#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod replica_tests;
#[cfg(test)]
mod tests;

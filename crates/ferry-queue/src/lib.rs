//! # ferry-queue: queues and streams as state machines over their logs
//!
//! Owns classic and quorum queues as deterministic state machines over
//! their command logs (`queue`: decide, apply, effects; consumers,
//! delivery, acknowledgement, dead-lettering out, delayed retry), streams
//! as append-only logs read by offset (`stream`, with the pull API a Kafka
//! Fetch needs), the [`source::Source`] seam a front end publishes to and
//! consumes from (either kind), publisher confirms and the node's
//! durability rounds (`syncer`: one group commit for every log), round
//! histograms (`metrics`), time as the core sees it (`clock`), the length
//! limits of names and keys checked where input enters (`limits`: records
//! never truncate), reading and editing message properties (`props`), and
//! the error every core layer returns ([`CoreError`]).
//!
//! Must not: know exchanges, vhosts, users or policies (a queue receives
//! its effective arguments and a dead-letter router from `ferry-broker`
//! above it), parse wire bytes or touch sockets, know a wire protocol's
//! message format (properties are `ferry_model` props blobs; the front end
//! supplies the converter for v1 records), know AMQP reply codes (errors
//! carry an [`ErrorKind`]), or read the clock except through
//! [`clock::Clock`] (message deadlines are facts in the command log).
//!
//! ```text
//! ferry-broker ─ append ─▶ [dyn Source] ─▶ ferry-log ─ round (Syncer)
//!     (Queue | Stream) ─ ConsumerSink::deliver / ConfirmSink ─▶ front end
//! ```

pub mod clock;
pub mod error;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod props;
pub mod queue;
pub mod source;
pub mod stream;
pub mod syncer;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

pub use error::{CoreError, ErrorKind, Result};

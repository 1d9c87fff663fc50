//! The stream's commands: what its log says, as the input of
//! [`apply`](super::apply::apply). A live publish builds an [`Append`] from
//! the facts it decided (publish time, properties with `x-stream-offset`)
//! and encodes it; opening a stream (and later a Raft follower) decodes a
//! record and borrows one from it. Either way the same `apply` runs.
//!
//! Owns the mapping command ⇄ record; must not touch state, clocks or
//! files. The byte format is `record`'s (unchanged by this type).

use super::record;
use crate::error::Result;
use ferry_model::message::Message;

/// One message record, borrowed from the message being published or from
/// the decoded record.
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// Publish time (ms since the epoch), stamped once by the deciding
    /// side: the clock, never below the stream's newest record.
    pub ts: u64,
    /// The message (exchange, routing key, persistence, body).
    pub msg: &'a Message,
    /// The properties as stored: the message's, with `x-stream-offset`.
    pub properties: &'a [u8],
}

impl<'a> Append<'a> {
    /// The Append a decoded record (`record::decode`) holds.
    pub fn from_decoded(ts: u64, msg: &'a Message) -> Self {
        Append {
            ts,
            msg,
            properties: &msg.properties,
        }
    }

    /// Appends its record to `out` (refused, writing nothing, for a
    /// message whose fields do not fit a record: `record::encode`).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        record::encode(self.msg, self.properties, self.ts, out)
    }
}

/// One command of a stream.
#[derive(Debug, Clone, Copy)]
pub enum Command<'a> {
    /// A message record, where the log put it.
    Append {
        /// The record.
        rec: Append<'a>,
        /// Its log index: the message's offset.
        offset: u64,
        /// Base of the segment holding it.
        segment: u64,
    },
    /// Retention decided (by the leader: clock, limits, segment sizes) that
    /// offsets below `before`, a segment base, are gone. Not a record of
    /// today's single-node log (whose first index already says it after a
    /// restart); in a Raft group it becomes a log entry, so every replica
    /// drops the same offsets (docs/internals.md, "Streams: one apply path").
    Truncate {
        /// First offset kept.
        before: u64,
    },
}

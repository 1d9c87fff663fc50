//! The queue's commands: what one record of its log says, as the input of
//! [`apply`](super::apply::apply). A live operation builds one from the
//! facts it decided and encodes it; restart replay (and later a Raft
//! follower) decodes a record and borrows one from it. Either way the same
//! `apply` runs, so the two cannot drift apart.
//!
//! Owns the mapping command ⇄ record; must not touch state, clocks or
//! files. The byte format is `record`'s (unchanged by this type).

use super::dead_letter::Reason;
use super::record::{self, Record};
use crate::error::Result;
use ferry_model::message::Message;

/// What the deciding side stamped on a message before logging it: decided
/// once (from the clock, the queue's arguments and the message), written
/// into its Enqueue record, never recomputed by `apply`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// When it expires (ms since the Unix epoch).
    pub deadline: Option<u64>,
    /// Its level in a priority queue (already capped at the maximum).
    pub priority: Option<u8>,
    /// Invisible until then (a delayed exchange's hold).
    pub not_before: Option<u64>,
}

/// One command of a queue's log, borrowed from the message or the decoded
/// record it describes.
#[derive(Debug, Clone, Copy)]
pub enum Command<'a> {
    /// A message joins its level's tail (or waits, with `not_before`).
    Enqueue {
        /// The message.
        msg: &'a Message,
        /// Its deadline, level and hold.
        facts: Facts,
    },
    /// Messages leave for good (acked; delivered without ack).
    Settle(&'a [u64]),
    /// Messages return to their place, their delivery count bumped.
    Requeue(&'a [u64]),
    /// Messages leave because they died; dead-lettered with a DLX.
    Drop {
        /// Why.
        reason: Reason,
        /// Which.
        ids: &'a [u64],
    },
    /// Messages return like a Requeue but wait until their own time.
    Retry(&'a [(u64, u64)]),
    /// Every message below `upto` leaves, except the `keep` ones (sorted).
    Purge {
        /// Exclusive upper bound of the purged ids.
        upto: u64,
        /// Ids below `upto` that stay (checked out at the time).
        keep: &'a [u64],
    },
}

impl<'a> Command<'a> {
    /// The command a decoded record holds; None for a Mark (it numbers
    /// its entry's commands, see `state::marks`, and is none itself).
    pub fn from_record(r: &'a Record) -> Option<Self> {
        Some(match r {
            Record::Enqueue {
                msg,
                expires_at,
                priority,
                not_before,
            } => Command::Enqueue {
                msg,
                facts: Facts {
                    deadline: *expires_at,
                    priority: *priority,
                    not_before: *not_before,
                },
            },
            Record::Settle(ids) => Command::Settle(ids),
            Record::Requeue(ids) => Command::Requeue(ids),
            Record::Drop { reason, ids } => Command::Drop {
                reason: *reason,
                ids,
            },
            Record::Retry(items) => Command::Retry(items),
            Record::Purge { upto, keep } => Command::Purge { upto: *upto, keep },
            Record::Mark { .. } => return None,
        })
    }

    /// Appends its record to `out` (refused, writing nothing, for a message
    /// whose fields do not fit a record; see `record::check_fields`).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match *self {
            Command::Enqueue { msg, facts } => record::encode_enqueue_held(
                msg,
                facts.deadline,
                facts.priority,
                facts.not_before,
                out,
            )?,
            Command::Settle(ids) => record::encode_ids(false, ids, out),
            Command::Requeue(ids) => record::encode_ids(true, ids, out),
            Command::Drop { reason, ids } => record::encode_drop(reason, ids, out),
            Command::Retry(items) => record::encode_retry(items, out),
            Command::Purge { upto, keep } => record::encode_purge(upto, keep, out),
        }
        Ok(())
    }

    /// Whether it changes nothing (an empty id list): not worth a record.
    pub fn is_empty(&self) -> bool {
        match *self {
            Command::Settle(ids) | Command::Requeue(ids) | Command::Drop { ids, .. } => {
                ids.is_empty()
            }
            Command::Retry(items) => items.is_empty(),
            Command::Enqueue { .. } | Command::Purge { .. } => false,
        }
    }
}

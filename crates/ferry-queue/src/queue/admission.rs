//! A replicated queue's length limit with `x-overflow: reject-publish`
//! (or `reject-publish-dlx`), decided by its leader, exactly, for
//! publishes arriving through any node.
//!
//! A replica does not check the limit where a publish arrives: a
//! follower's copy lags (and counts as ready what the leader has handed
//! out), a node outside the group has no copy, and even the leader's
//! state counts only applied messages, not the enqueues still in flight.
//! Instead the Enqueue is proposed as any command, and the group's leader
//! decides each one when it hands it to its Raft — its own node's
//! proposals and those forwarded to it alike, in the order it proposes
//! them ([`Replica::admit`]): it counts the ready messages (RabbitMQ counts
//! ready messages only, not unacked ones) plus the enqueues it proposed
//! that are not applied yet ([`Pending`]). An admitted Enqueue counts as
//! pending until the leader applies it, or gives it back
//! ([`Replica::release`]) if its proposal fails; a refused one is not
//! proposed at all: its publisher's confirm fails (basic.nack) wherever it
//! was published, and with `reject-publish-dlx` the leader dead-letters it
//! (reason maxlen), as a local queue does.
//!
//! The count starts over at each change of leadership (a new epoch):
//! whatever the old leader had in flight is either in the log the new
//! leader applied before it began to serve, or lost. A leader admits only
//! while it serves (it has applied everything logged before its
//! leadership began), so every Enqueue it applies while serving is one it
//! counted. One approximation is left: a policy that gives the queue its
//! limit while enqueues are in flight starts counting from the next one
//! (those in flight were not counted), so the queue can go over by what
//! was in flight at that moment.

use super::args::{Overflow, QueueArgs};
use super::command::Command;
use super::dead_letter::Reason;
use super::inner::Inner;
use super::record::{self, Record};
use super::replica::Replica;
use bytes::Bytes;
use ferry_model::message::Message;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Why a refused Enqueue's proposal failed (its publisher gets a nack).
pub const REFUSED: &str = "refused: the queue is at its length limit (x-overflow reject-publish)";

/// The Enqueues a serving leader proposed and has not applied yet, and
/// their body bytes (on `Inner`; zero on a follower).
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Bumped at each change of leadership: a ticket of another epoch
    /// gives nothing back.
    epoch: u64,
    count: u64,
    bytes: u64,
}

impl Pending {
    /// The leadership changed: nothing is pending in the new epoch.
    pub(super) fn reset(&mut self) {
        self.epoch += 1;
        self.count = 0;
        self.bytes = 0;
    }

    /// The leader applied an Enqueue with `body` bytes: no longer pending
    /// (it is ready now, or was delivered at once).
    pub(super) fn applied(&mut self, body: usize) {
        self.count = self.count.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(body as u64);
    }
}

/// What admitted Enqueues count as pending: given back with
/// [`Replica::release`] if their proposal fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    count: u64,
    bytes: u64,
}

/// A leader's decision about records it is about to propose.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Propose the records marked true, in order; the others are refused
    /// (not proposed; their publishers' confirms fail with [`REFUSED`]).
    Decided {
        /// One per record.
        admitted: Vec<bool>,
        /// What the admitted ones count as pending.
        ticket: Ticket,
    },
    /// The queue has a reject-publish limit and this replica does not
    /// serve (not the leader, or still catching up): it cannot decide, so
    /// nothing may be proposed here now (the leader decides, or this
    /// replica once it serves).
    NotServing,
}

impl Admission {
    fn all(n: usize) -> Self {
        Admission::Decided {
            admitted: vec![true; n],
            ticket: Ticket::default(),
        }
    }
}

/// The arguments whose limit the leader decides: a length limit with a
/// reject-publish overflow (a delayed exchange's hidden queue has none).
fn rejecting(args: Option<&QueueArgs>) -> Option<&QueueArgs> {
    args.filter(|a| a.overflow != Overflow::DropHead && a.limited() && !a.hold)
}

impl Replica {
    /// The leader's decision about `records`, the queue records it is
    /// about to propose (its own node's, or a batch forwarded to it), in
    /// order: each Enqueue is admitted while the ready messages plus the
    /// enqueues pending (proposed, not applied) plus it stay within the
    /// limits, and then counts as pending; other records always go.
    /// Without a reject-publish limit everything goes, uncounted, whether
    /// this replica serves or not. A record that does not decode as a
    /// queue record is refused (no replica could apply it).
    pub fn admit(&self, records: &[Bytes]) -> Admission {
        let q = self.queue();
        if !q.has_args.load(Ordering::Acquire) {
            return Admission::all(records.len());
        }
        {
            let g = q.inner.lock();
            if rejecting(g.args.as_deref()).is_none() {
                return Admission::all(records.len());
            }
            if !g.leads {
                return Admission::NotServing;
            }
        }
        // Decoded without the queue's lock (the bodies stay slices of the
        // records): Some(message) for an Enqueue, None for other records,
        // Err for what is no queue record.
        let decoded: Vec<Result<Option<Message>, ()>> = records
            .iter()
            .map(|r| match record::decode(r.clone()) {
                Ok(Record::Enqueue { msg, .. }) => Ok(Some(msg)),
                Ok(_) => Ok(None),
                Err(_) => Err(()),
            })
            .collect();
        let mut letters = Vec::new();
        let decision = {
            let mut g = q.inner.lock();
            decide(&mut g, decoded, &mut letters)
        };
        q.route_letters(letters);
        decision
    }

    /// Gives back what a failed proposal's admitted Enqueues counted as
    /// pending (nothing if the leadership changed since: the count started
    /// over).
    pub fn release(&self, ticket: Ticket) {
        if ticket.count == 0 {
            return;
        }
        let mut g = self.queue().inner.lock();
        let p = &mut g.pending;
        if p.epoch == ticket.epoch {
            p.count = p.count.saturating_sub(ticket.count);
            p.bytes = p.bytes.saturating_sub(ticket.bytes);
        }
    }
}

/// `admit` under the queue's lock, once the records are decoded.
fn decide(
    inner: &mut Inner,
    decoded: Vec<Result<Option<Message>, ()>>,
    letters: &mut Vec<super::dead_letter::DeadLetter>,
) -> Admission {
    let n = decoded.len();
    // Looked at again: the lock was released while decoding.
    let Some(a) = inner.args.clone().filter(|a| rejecting(Some(a)).is_some()) else {
        return Admission::all(n);
    };
    if !inner.leads {
        return Admission::NotServing;
    }
    let (ready, ready_bytes) = (
        inner.state.ready_len() as u64,
        inner.state.ready_body_bytes(),
    );
    let mut ticket = Ticket {
        epoch: inner.pending.epoch,
        ..Ticket::default()
    };
    let mut admitted = Vec::with_capacity(n);
    for d in decoded {
        let msg = match d {
            Ok(Some(m)) => m,
            Ok(None) => {
                admitted.push(true);
                continue;
            }
            Err(()) => {
                admitted.push(false);
                continue;
            }
        };
        let body = msg.body.len() as u64;
        let p = &inner.pending;
        let over = a.over_limit(
            ready + p.count + 1,
            ready_bytes.saturating_add(p.bytes).saturating_add(body),
        );
        if over {
            if a.overflow == Overflow::RejectPublishDlx {
                letters.extend(inner.letter(Arc::new(msg), Reason::Maxlen));
            }
            admitted.push(false);
            continue;
        }
        let p = &mut inner.pending;
        p.count += 1;
        p.bytes = p.bytes.saturating_add(body);
        ticket.count += 1;
        ticket.bytes = ticket.bytes.saturating_add(body);
        admitted.push(true);
    }
    Admission::Decided { admitted, ticket }
}

/// Called for each command a replica applies: an Enqueue applied by the
/// serving leader is no longer pending.
pub(super) fn applied(inner: &mut Inner, cmd: &Command) {
    if let (true, Command::Enqueue { msg, .. }) = (inner.leads, cmd) {
        inner.pending.applied(msg.body.len());
    }
}

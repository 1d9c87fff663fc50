//! A replicated queue's follower serving its own node's clients through
//! the group's leader. Only the leader delivers (it alone knows what is
//! checked out), so a consumer registered on a follower replica stays
//! registered there and is fed by the leader: the crate that runs the
//! group implements [`LeaderPort`], asks the replica which consumers want
//! how many messages (`Replica::remote_consumers`), has the leader
//! deliver to stand-ins for them and hands what arrives to
//! `Replica::deliver_remote`. Acks, requeues, rejects, basic.get and
//! purges on a follower go to the leader through the port. A consumer survives a
//! change of leader: it is then fed by the new one (messages it held
//! unacked are delivered again, as after any failover).
//!
//! Prefetch holds end to end: a consumer asks the leader only for as many
//! messages as its channel would take now; what arrives while the channel
//! is full waits here (in order) until it has room.

use super::consumers::Consumers;
use super::inner::Inner;
use super::queue::Queue;
use super::sinks::Delivery;
use crate::error::Result;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// What a follower's client did with messages the leader delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// basic.ack.
    Ack(Vec<u64>),
    /// basic.nack / reject with requeue, recover, a closed channel.
    Requeue(Vec<u64>),
    /// basic.nack / reject without requeue.
    Reject(Vec<u64>),
}

/// The way from a follower replica to its group's leader.
pub trait LeaderPort: Send + Sync + std::fmt::Debug {
    /// The follower's consumers or their credit changed: ask the leader
    /// again. Never blocks and never calls into the queue (it may be
    /// called with the queue's lock held).
    fn wake(&self);
    /// Hands the leader what a client did, in order. Never blocks and
    /// never calls into the queue.
    fn forward(&self, op: Forward);
    /// basic.get through the leader: the message (checked out there for
    /// this node unless `no_ack`) and how many are left. Blocks: called
    /// on the blocking pool or inside `block_in_place`, without the
    /// queue's lock.
    fn get(&self, no_ack: bool) -> Result<Option<(Delivery, u32)>>;
    /// queue.purge through the leader: how many messages it took. Blocks
    /// as `get` does.
    fn purge(&self) -> Result<u32>;
}

/// A follower's consumer as the leader must know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConsumer {
    /// Its id on this replica (what its deliveries are addressed to).
    pub id: u64,
    /// Its consumer tag.
    pub tag: Arc<str>,
    /// Auto-ack.
    pub no_ack: bool,
    /// basic.consume `exclusive`.
    pub exclusive: bool,
    /// `x-priority`.
    pub priority: i64,
    /// How many more messages it would take now.
    pub want: u32,
}

/// A follower's side of serving through the leader (under the queue's
/// `inner` lock).
#[derive(Debug, Default)]
pub(super) struct Remote {
    port: Option<Arc<dyn LeaderPort>>,
    /// Delivered by the leader, waiting for their consumer's credit:
    /// (consumer id, delivery), in arrival order.
    inbox: VecDeque<(u64, Delivery)>,
}

impl Remote {
    /// The port, on a follower that has one.
    pub(super) fn port(&self) -> Option<&Arc<dyn LeaderPort>> {
        self.port.as_ref()
    }

    /// Hands waiting deliveries to consumers with credit (each consumer's
    /// in order), then asks the leader for more if anyone consumes here.
    pub(super) fn drain(&mut self, consumers: &Consumers) {
        if !self.inbox.is_empty() {
            let mut blocked: HashSet<u64> = HashSet::new();
            let mut kept = VecDeque::with_capacity(self.inbox.len());
            for (cid, d) in self.inbox.drain(..) {
                match consumers.find(cid) {
                    Some(c) if !blocked.contains(&cid) && c.sink.reserve() => {
                        c.sink.deliver(&c.tag, d)
                    }
                    Some(_) => {
                        blocked.insert(cid);
                        kept.push_back((cid, d));
                    }
                    // Cancelled meanwhile: `cancel` sent it back.
                    None => {}
                }
            }
            self.inbox = kept;
        }
        if let Some(p) = &self.port {
            if consumers.any_local() {
                p.wake();
            }
        }
    }

    /// Takes the waiting deliveries of consumer `cid` (it is cancelled):
    /// their ids, for the leader to requeue.
    pub(super) fn take_for(&mut self, cid: u64) -> Vec<u64> {
        let mut ids = Vec::new();
        self.inbox.retain(|(c, d)| {
            let mine = *c == cid;
            if mine {
                ids.push(d.msg_id);
            }
            !mine
        });
        ids
    }

    /// Takes the port (the first stays).
    pub(super) fn bind(&mut self, port: Arc<dyn LeaderPort>) {
        if self.port.is_none() {
            self.port = Some(port);
        }
    }

    /// How many deliveries wait for consumer `cid`.
    pub(super) fn waiting_for(&self, cid: u64) -> usize {
        self.inbox.iter().filter(|(id, _)| *id == cid).count()
    }

    /// A delivery for consumer `cid` joins the wait (in arrival order).
    pub(super) fn push(&mut self, cid: u64, d: Delivery) {
        self.inbox.push_back((cid, d));
    }

    /// Forgets what waits: the leader that delivered it is gone (its
    /// checkouts returned), or this replica leads now (those messages
    /// are ready in its own state).
    pub(super) fn clear(&mut self) {
        self.inbox.clear();
    }
}

/// A follower's ack, requeue or reject (under the queue's lock), handed
/// to its leader: false on a replica that serves, which settles them
/// itself. (Without a port yet, there is no leader to tell.) Then, as
/// after any settlement, what waits for credit is handed over.
pub(super) fn forward(inner: &mut Inner, op: impl FnOnce() -> Forward) -> bool {
    if inner.leads {
        return false;
    }
    if let Some(p) = inner.remote.port() {
        p.forward(op());
    }
    // The channel's credit came back: hand over what waits, ask for more.
    inner.remote.drain(&inner.consumers);
    true
}

/// basic.get on a follower, through its leader: None on a replica that
/// serves (or has no port).
pub(super) fn get(q: &Queue, no_ack: bool) -> Option<Result<Option<(Delivery, u32)>>> {
    let port = {
        let g = q.inner.lock();
        if g.leads {
            return None;
        }
        g.remote.port()?.clone()
    };
    Some(port.get(no_ack))
}

/// Consumer `cid` was cancelled on a follower (under the queue's lock):
/// what waits for it goes back to the leader, which learns of the
/// cancellation with the next request.
pub(super) fn cancelled(inner: &mut Inner, cid: u64) {
    if inner.leads {
        return;
    }
    let ids = inner.remote.take_for(cid);
    if let Some(port) = inner.remote.port() {
        if !ids.is_empty() {
            port.forward(Forward::Requeue(ids));
        }
        port.wake();
    }
}

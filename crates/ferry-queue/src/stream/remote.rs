//! A replicated stream on a node outside its group (a cluster larger than
//! the stream's replicas): the node holds no copy, yet its clients consume
//! it as on a member. The crate that runs the groups implements
//! [`StreamPort`]: a reader per consumer asks a member of the group for
//! the committed records from the consumer's offset, never more than the
//! consumer's credit takes now ([`Stream::remote_room`]), and hands them
//! over ([`Stream::deliver_remote`]); they reach the consumer's sink
//! through the same `Delivery` a member's consumer gets (the same offsets,
//! bytes and `x-stream-offset` header: every replica holds the same
//! records at the same offsets). What arrives while the channel is full
//! waits in the consumer's inbox, in order; an ack or a freed channel
//! dispatches it and wakes the reader for more.
//!
//! Where a consumer starts (`x-stream-offset`) is resolved on the member
//! ([`Stream::resolve_start`] there), which holds the log.
//!
//! Must not: know the cluster or wire bytes (the port does), or block or
//! call into a port while it could call back (ports never call into the
//! stream from `attach` / `wake`).

use super::consumers;
use super::offset::OffsetSpec;
use super::pull::StreamRecord;
use super::stream::Stream;
use crate::error::{CoreError, ErrorKind, Result};
use crate::queue::ConsumerSink;
use std::sync::Arc;

/// The way from a stream on a node outside its group to the group's
/// members: one reader per consumer.
pub trait StreamPort: Send + Sync + std::fmt::Debug {
    /// Consumer `id` attached, to read from `start` (its
    /// `x-stream-offset`, resolved by the member): its reader starts.
    /// Never blocks and never calls into the stream.
    fn attach(&self, id: u64, start: OffsetSpec);
    /// Consumer `id` may take more, or went away (cancelled, its channel
    /// closed, the stream deleted): its reader looks again
    /// ([`Stream::remote_room`] says which). Never blocks and never calls
    /// into the stream (it may be called with the stream's lock held).
    fn wake(&self, id: u64);
}

impl Stream {
    /// This node holds no copy of the stream (it is outside the group):
    /// publishes are forwarded (the proposer), consumers read through
    /// `port`. The first port stays.
    pub fn read_through(&self, port: Arc<dyn StreamPort>) {
        let _ = self.port.set(port);
    }

    /// Whether this node holds a copy of the stream's records.
    pub fn holds_copy(&self) -> bool {
        self.port.get().is_none()
    }

    /// Refuses a pull read where this node holds no copy (a Kafka fetch
    /// through an outside node is not built).
    pub(super) fn check_copy(&self) -> Result<()> {
        if self.holds_copy() {
            return Ok(());
        }
        Err(CoreError::request(
            ErrorKind::PreconditionFailed,
            format!(
                "stream '{}' in vhost '{}' has no replica on this node: read through one of its nodes",
                self.spec.name, self.vhost
            ),
        ))
    }

    /// A consumer on a node outside the group: registered like any other,
    /// its reader started through the port (after the lock is released).
    pub(super) fn consume_remote(
        &self,
        port: &Arc<dyn StreamPort>,
        tag: Arc<str>,
        sink: Arc<dyn ConsumerSink>,
        start: OffsetSpec,
    ) -> Result<u64> {
        let id = {
            let mut g = self.inner.lock();
            if g.deleted {
                return Err(self.not_found());
            }
            // Its offset is known once a member resolved `start`.
            g.consumers.add(tag, sink, 0)
        };
        port.attach(id, start);
        Ok(id)
    }

    /// Where a consumer asking for `start` begins on this replica (a
    /// member resolving an outside node's `x-stream-offset`). Blocking: a
    /// timestamp is looked up in the log.
    pub fn resolve_start(&self, start: OffsetSpec) -> Result<u64> {
        self.check_copy()?;
        let g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        consumers::start(&g.log, &g.state, start)
    }

    /// How many more records consumer `id` (of a node outside the group)
    /// takes now, at most `cap`: its credit less what waits for it. None
    /// once it is gone (cancelled, or the stream deleted): its reader
    /// stops.
    pub fn remote_room(&self, id: u64, cap: u32) -> Option<u32> {
        let g = self.inner.lock();
        if g.deleted {
            return None;
        }
        g.consumers.room(id, cap)
    }

    /// Records a member sent for consumer `id`, in offset order from where
    /// its reads were (or from the start the member resolved), with
    /// `next`, where its reads go on: handed to its sink as credit allows,
    /// the rest waits. False once the consumer is gone.
    pub fn deliver_remote(&self, id: u64, next: u64, records: Vec<StreamRecord>) -> bool {
        let mut g = self.inner.lock();
        if g.deleted || !g.consumers.push_inbox(id, next, records) {
            return false;
        }
        self.dispatch_locked(&mut g);
        true
    }

    /// Dispatch outside the group (under `inner`): what waits goes to the
    /// sinks with credit; the readers of consumers that take more ask
    /// again.
    pub(super) fn dispatch_remote(
        &self,
        port: &Arc<dyn StreamPort>,
        inner: &mut super::commit::Inner,
    ) {
        for id in inner.consumers.drain_inboxes(&self.spec.name, &self.stats) {
            port.wake(id);
        }
    }
}

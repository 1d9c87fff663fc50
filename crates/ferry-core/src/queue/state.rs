//! The queue as a deterministic state machine: which messages are ready (in
//! order) and which are checked out to a consumer. It knows nothing of files,
//! sockets or clocks; `Queue` drives it from the command log and from
//! consumers, and a replica (later, Raft) can drive it from the same log.

use crate::message::Message;
use ferry_log::RecordPos;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// One message in the queue: where its Enqueue record lives, plus the
/// little the dispatcher needs. The body stays on disk unless `cached`.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Log index of the Enqueue record; orders the queue.
    pub id: u64,
    /// Where to read the record back.
    pub pos: RecordPos,
    /// Approximate bytes (body + properties), for accounting.
    pub size: u32,
    /// How many times it was returned to the queue after a delivery.
    pub delivery_count: u32,
    /// Whether it was delivered before (AMQP `redelivered`).
    pub redelivered: bool,
    /// Whether it survives a restart.
    pub persistent: bool,
    /// The message itself while it is young enough to be kept in memory.
    pub cached: Option<Arc<Message>>,
}

/// Ready and checked-out messages.
#[derive(Debug, Default)]
pub struct QueueState {
    ready: VecDeque<Entry>,
    unacked: HashMap<u64, Entry>,
    ready_bytes: u64,
    unacked_bytes: u64,
}

impl QueueState {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of messages ready for delivery (AMQP message_count).
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Number of messages delivered and not yet settled.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Bytes of ready messages.
    pub fn ready_bytes(&self) -> u64 {
        self.ready_bytes
    }

    /// Bytes of checked-out messages.
    pub fn unacked_bytes(&self) -> u64 {
        self.unacked_bytes
    }

    /// Appends a new message at the tail. Ids grow with the log index.
    pub fn enqueue(&mut self, e: Entry) {
        self.ready_bytes += u64::from(e.size);
        match self.ready.back() {
            Some(last) if last.id > e.id => self.insert_ordered(e),
            _ => self.ready.push_back(e),
        }
    }

    /// The head of the queue, without removing it.
    pub fn peek_ready(&self) -> Option<&Entry> {
        self.ready.front()
    }

    /// Mutable head (to attach a freshly read message body).
    pub fn peek_ready_mut(&mut self) -> Option<&mut Entry> {
        self.ready.front_mut()
    }

    /// Takes the head of the queue.
    pub fn pop_ready(&mut self) -> Option<Entry> {
        let e = self.ready.pop_front()?;
        self.ready_bytes -= u64::from(e.size);
        Some(e)
    }

    /// Records that `e` (just popped) is now held by a consumer.
    pub fn check_out(&mut self, mut e: Entry) {
        // Memory holds an index, not bodies: a delivered message is read
        // back from the log if it ever returns.
        e.cached = None;
        self.unacked_bytes += u64::from(e.size);
        self.unacked.insert(e.id, e);
    }

    /// Removes a checked-out message for good. False if it is not checked out.
    pub fn settle(&mut self, id: u64) -> bool {
        match self.unacked.remove(&id) {
            Some(e) => {
                self.unacked_bytes -= u64::from(e.size);
                true
            }
            None => false,
        }
    }

    /// Returns a checked-out message to its original place in the queue.
    pub fn requeue(&mut self, id: u64) -> bool {
        match self.unacked.remove(&id) {
            Some(mut e) => {
                self.unacked_bytes -= u64::from(e.size);
                e.delivery_count = e.delivery_count.saturating_add(1);
                e.redelivered = true;
                self.ready_bytes += u64::from(e.size);
                self.insert_ordered(e);
                true
            }
            None => false,
        }
    }

    /// Drops every ready message; returns how many and the ids of the
    /// checked-out ones (which a purge does not touch).
    pub fn purge_ready(&mut self) -> (usize, Vec<u64>) {
        let n = self.ready.len();
        self.ready.clear();
        self.ready_bytes = 0;
        let mut keep: Vec<u64> = self.unacked.keys().copied().collect();
        keep.sort_unstable();
        (n, keep)
    }

    /// Smallest id still live (ready or checked out): log records below it
    /// are no longer needed.
    pub fn min_live_id(&self) -> Option<u64> {
        let r = self.ready.front().map(|e| e.id);
        let u = self.unacked.keys().min().copied();
        match (r, u) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ids of every checked-out message (to requeue them, e.g. at shutdown).
    pub fn unacked_ids(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.unacked.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn insert_ordered(&mut self, e: Entry) {
        let at = self.ready.partition_point(|x| x.id < e.id);
        self.ready.insert(at, e);
    }
}

/// Rebuilds a `QueueState` from the command log at startup. Every message
/// comes back ready (checkouts are not logged: an unacked message is
/// redelivered after a restart, as in RabbitMQ).
#[derive(Debug, Default)]
pub struct Replay {
    live: BTreeMap<u64, Entry>,
}

impl Replay {
    /// Starts an empty replay.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies an Enqueue record found at `pos`.
    pub fn enqueue(&mut self, pos: RecordPos, id: u64, msg: &Message) {
        if !msg.persistent {
            // Transient messages do not outlive the process.
            return;
        }
        let size = u32::try_from(msg.body.len() + msg.properties.len()).unwrap_or(u32::MAX);
        self.live.insert(
            id,
            Entry {
                id,
                pos,
                size,
                delivery_count: 0,
                redelivered: false,
                persistent: true,
                cached: None,
            },
        );
    }

    /// Applies a Settle record.
    pub fn settle(&mut self, ids: &[u64]) {
        for id in ids {
            self.live.remove(id);
        }
    }

    /// Applies a Requeue record.
    pub fn requeue(&mut self, ids: &[u64]) {
        for id in ids {
            if let Some(e) = self.live.get_mut(id) {
                e.delivery_count = e.delivery_count.saturating_add(1);
                e.redelivered = true;
            }
        }
    }

    /// Applies a Purge record.
    pub fn purge(&mut self, upto: u64, keep: &[u64]) {
        let kept: Vec<Entry> = keep.iter().filter_map(|id| self.live.remove(id)).collect();
        self.live = self.live.split_off(&upto);
        for e in kept {
            self.live.insert(e.id, e);
        }
    }

    /// The recovered state: every live message ready, in order.
    pub fn finish(self) -> QueueState {
        let mut st = QueueState::new();
        for (_, e) in self.live {
            st.ready_bytes += u64::from(e.size);
            st.ready.push_back(e);
        }
        st
    }
}

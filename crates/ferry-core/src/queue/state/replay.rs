//! Replay: the queue's state rebuilt from its command log at open.

use super::*;

/// Rebuilds a `QueueState` from the command log at startup. Every message
/// comes back ready (checkouts are not logged: an unacked message is
/// redelivered after a restart, as in RabbitMQ).
///
/// Enqueue ids only grow, so live messages are kept in one ordered
/// `VecDeque` (no per-message tree nodes: recovering a big backlog costs
/// what the backlog costs at run time). Settles of the head pop it; the
/// rare settle further in is remembered and filtered out at the end.
#[derive(Debug, Default)]
pub struct Replay {
    live: VecDeque<Entry>,
    gone: HashSet<u64>,
    meta: HashMap<u64, Meta>,
    track_body: bool,
    levels: usize,
    /// Messages waiting for a time of their own: id → when they are ready.
    due: HashMap<u64, u64>,
}

impl Replay {
    /// Starts an empty replay of a queue with `levels` priority levels,
    /// counting body bytes when `track_body`.
    pub fn new(levels: usize, track_body: bool) -> Self {
        Replay {
            track_body,
            levels,
            ..Self::default()
        }
    }

    /// Applies an Enqueue record found at `pos` (at level `priority`).
    pub fn enqueue(
        &mut self,
        pos: RecordPos,
        msg: &Message,
        expires_at: Option<u64>,
        priority: Option<u8>,
    ) {
        self.enqueue_held(pos, msg, expires_at, priority, None);
    }

    /// `enqueue` for a record that may hold its message until `not_before`.
    pub fn enqueue_held(
        &mut self,
        pos: RecordPos,
        msg: &Message,
        expires_at: Option<u64>,
        priority: Option<u8>,
        not_before: Option<u64>,
    ) {
        if !msg.persistent {
            // Transient messages do not outlive the process.
            return;
        }
        if let Some(at) = not_before {
            self.due.insert(pos.index, at);
        }
        if expires_at.is_some() || self.track_body {
            self.meta.insert(
                pos.index,
                Meta {
                    deadline: expires_at.unwrap_or(NEVER),
                    body: u32::try_from(msg.body.len()).unwrap_or(u32::MAX),
                },
            );
        }
        self.live
            .push_back(Entry::new(pos, true, None).with_priority(priority.unwrap_or(0)));
    }

    fn find(&self, id: u64) -> Option<usize> {
        self.live.binary_search_by_key(&id, |e| e.id).ok()
    }

    fn trim_front(&mut self) {
        while let Some(front) = self.live.front() {
            if !self.gone.remove(&front.id) {
                break;
            }
            self.live.pop_front();
        }
    }

    /// Applies a Settle record.
    pub fn settle(&mut self, ids: &[u64]) {
        for id in ids {
            if self.find(*id).is_some() {
                self.gone.insert(*id);
            }
        }
        self.trim_front();
    }

    /// Applies a Requeue record.
    pub fn requeue(&mut self, ids: &[u64]) {
        for id in ids {
            if let Some(i) = self.find(*id) {
                if let Some(e) = self.live.get_mut(i) {
                    e.returned();
                }
                if !self.due.is_empty() {
                    self.due.remove(id);
                }
            }
        }
    }

    /// Applies a Retry record: returns as a Requeue, then waits until
    /// each one's time (replay reads no clock: the queue makes the ones
    /// already due ready when it next looks).
    pub fn retry(&mut self, items: &[(u64, u64)]) {
        for (id, until) in items {
            if let Some(i) = self.find(*id) {
                if let Some(e) = self.live.get_mut(i) {
                    e.returned();
                }
                self.due.insert(*id, *until);
            }
        }
    }

    /// Applies a Purge record.
    pub fn purge(&mut self, upto: u64, keep: &[u64]) {
        let cut = self.live.partition_point(|e| e.id < upto);
        let kept: Vec<Entry> = self
            .live
            .drain(..cut)
            .filter(|e| keep.binary_search(&e.id).is_ok())
            .collect();
        for e in kept.into_iter().rev() {
            self.live.push_front(e);
        }
    }

    /// The recovered state: every live message ready, in order.
    pub fn finish(mut self) -> QueueState {
        if !self.gone.is_empty() {
            let gone = std::mem::take(&mut self.gone);
            self.live.retain(|e| !gone.contains(&e.id));
        }
        let mut waiting = Waiting::default();
        let mut waiting_ids = HashSet::new();
        if !self.due.is_empty() {
            let due = std::mem::take(&mut self.due);
            let mut ready = VecDeque::with_capacity(self.live.len());
            for e in self.live.drain(..) {
                match due.get(&e.id) {
                    Some(at) => {
                        waiting_ids.insert(e.id);
                        waiting.insert(*at, e);
                    }
                    None => ready.push_back(e),
                }
            }
            self.live = ready;
        }
        let mut st = QueueState::with_levels(self.levels, self.track_body);
        st.ready_bytes = self.live.iter().map(|e| u64::from(e.size())).sum();
        st.in_memory = self.live.len();
        if !self.meta.is_empty() {
            let live = &self.live;
            // Waiting messages keep their deadline and size for later.
            self.meta.retain(|id, _| {
                live.binary_search_by_key(id, |e| e.id).is_ok() || waiting_ids.contains(id)
            });
            if self.track_body {
                st.ready_body = live
                    .iter()
                    .filter_map(|e| self.meta.get(&e.id))
                    .map(|m| u64::from(m.body))
                    .sum();
            }
        }
        st.meta = self.meta;
        st.waiting = waiting;
        if st.levels.len() == 1 {
            st.levels[0].ready = self.live;
        } else {
            for e in self.live {
                let lvl = st.level_of(e.priority);
                st.levels[lvl].ready.push_back(e);
            }
        }
        st
    }
}

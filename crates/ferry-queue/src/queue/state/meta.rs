//! [`MetaTable`]: the side table of what a message needs beyond its index
//! entry — its deadline (TTL) and body size (`x-max-length-bytes`) — and
//! whether the queue counts body bytes at all. Filled only for messages
//! that have a deadline or in queues that count bytes: a plain queue pays
//! nothing for it.

use crate::clock::NEVER;
use crate::ids::IdMap;

/// What a message needs beyond its index entry, kept only when it has a
/// deadline or its queue counts body bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// When it expires (ms since the epoch); `NEVER` if it does not.
    pub deadline: u64,
    /// Body bytes (what `x-max-length-bytes` counts).
    pub body: u32,
}

/// Deadlines and body sizes of in-memory messages (ready, checked out or
/// waiting) that have one or whose queue counts bytes.
#[derive(Debug, Default)]
pub(super) struct MetaTable {
    map: IdMap<u64, Meta>,
    /// Whether body bytes are counted.
    track_body: bool,
}

impl MetaTable {
    /// Gives back the map's spare room.
    pub(super) fn shrink(&mut self) {
        if let Some(to) = super::ready::spare(self.map.len(), self.map.capacity()) {
            self.map.shrink_to(to);
        }
    }

    /// An empty table; body sizes are kept when `track_body`.
    pub(super) fn new(track_body: bool) -> Self {
        MetaTable {
            map: IdMap::default(),
            track_body,
        }
    }

    /// Whether body bytes are counted.
    pub(super) fn tracks_body(&self) -> bool {
        self.track_body
    }

    /// Starts counting body bytes; false if they were counted already.
    pub(super) fn start_tracking(&mut self) -> bool {
        !std::mem::replace(&mut self.track_body, true)
    }

    /// Whether any message has a deadline or a size recorded.
    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The body bytes a message of `body` bytes counts for (0 unless
    /// they are counted).
    pub(super) fn counted(&self, body: u32) -> u64 {
        if self.track_body {
            u64::from(body)
        } else {
            0
        }
    }

    /// The deadline of `id`, if it has one.
    pub(super) fn deadline(&self, id: u64) -> Option<u64> {
        match self.map.get(&id) {
            Some(m) if m.deadline != NEVER => Some(m.deadline),
            _ => None,
        }
    }

    /// The counted body bytes of `id` (0 unless they are counted).
    pub(super) fn body(&self, id: u64) -> u64 {
        if !self.track_body {
            return 0;
        }
        self.map.get(&id).map_or(0, |m| u64::from(m.body))
    }

    /// Records a new message's deadline and body size, if it has a
    /// deadline or bodies are counted.
    pub(super) fn note(&mut self, id: u64, deadline: Option<u64>, body: u32) {
        if deadline.is_some() || self.track_body {
            self.map.insert(
                id,
                Meta {
                    deadline: deadline.unwrap_or(NEVER),
                    body,
                },
            );
        }
    }

    /// Records the body size of a message whose body was not counted yet
    /// (bodies are counted, see [`MetaTable::start_tracking`]). Returns
    /// the bytes newly counted, None if it was counted already.
    pub(super) fn note_body(&mut self, id: u64, body: u32) -> Option<u64> {
        let m = self.map.entry(id).or_insert(Meta {
            deadline: NEVER,
            body: 0,
        });
        if m.body != 0 {
            return None;
        }
        m.body = body;
        Some(u64::from(body))
    }

    /// Forgets `id` (it left the queue).
    pub(super) fn remove(&mut self, id: u64) {
        if !self.map.is_empty() {
            self.map.remove(&id);
        }
    }
}

//! The vhost's one registry of queues and streams: one name space, one map,
//! one lock. Each name holds what it is (a running queue or stream, or a
//! stored one that crashed at open, `crashed.rs`) and the name of its
//! storage directory (random, so a deleted and redeclared queue never meets
//! its predecessor's files).
//!
//! Owns the map and the lookups by name; must not open, delete or persist
//! anything (the vhost does, under `defs_lock`). Lock order: the vhost's
//! `exchanges` → the registry → a queue's or stream's own lock.

use super::CrashedQueue;
use ferry_queue::queue::Queue;
use ferry_queue::source::{QueueRef, Source};
use ferry_queue::stream::Stream;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::collections::HashMap;
use std::sync::Arc;

/// What a name stands for.
#[derive(Debug, Clone)]
pub(super) enum Entry {
    /// A running queue or stream.
    Open(QueueRef),
    /// A stored queue or stream that could not be opened (or whose log
    /// broke while it ran): its definition, bindings and files are kept.
    Crashed(CrashedQueue),
}

/// One name's entry and its storage directory (below `queues/` of the
/// vhost's directory, or of the transient one for a queue that does not
/// outlive the process).
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) entry: Entry,
    pub(super) storage: String,
}

impl Slot {
    /// The running queue, if the name is one.
    pub(super) fn queue(&self) -> Option<&Arc<Queue>> {
        match &self.entry {
            Entry::Open(QueueRef::Queue(q)) => Some(q),
            _ => None,
        }
    }

    /// The running stream, if the name is one.
    pub(super) fn stream(&self) -> Option<&Arc<Stream>> {
        match &self.entry {
            Entry::Open(QueueRef::Stream(s)) => Some(s),
            _ => None,
        }
    }

    /// The running queue or stream, if the name is one.
    pub(super) fn open(&self) -> Option<&QueueRef> {
        match &self.entry {
            Entry::Open(r) => Some(r),
            Entry::Crashed(_) => None,
        }
    }

    /// The crashed entry, if the name is one.
    pub(super) fn crashed(&self) -> Option<&CrashedQueue> {
        match &self.entry {
            Entry::Crashed(c) => Some(c),
            Entry::Open(_) => None,
        }
    }

    /// Where publishes to it go (a crashed entry takes none).
    pub(super) fn source(&self) -> Option<Arc<dyn Source>> {
        self.open().map(QueueRef::source)
    }
}

/// The map from name to slot.
pub(super) type Names = HashMap<Arc<str>, Slot>;

/// The vhost's registry (see the module doc for the lock order).
#[derive(Debug, Default)]
pub(super) struct Registry {
    names: RwLock<Names>,
}

impl Registry {
    /// Read access (routing holds it across a whole publish).
    pub(super) fn read(&self) -> RwLockReadGuard<'_, Names> {
        self.names.read()
    }

    /// Write access.
    pub(super) fn write(&self) -> RwLockWriteGuard<'_, Names> {
        self.names.write()
    }

    /// A copy of `name`'s slot.
    pub(super) fn get(&self, name: &str) -> Option<Slot> {
        self.names.read().get(name).cloned()
    }

    /// The running queue called `name`.
    pub(super) fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.names.read().get(name)?.queue().cloned()
    }

    /// The running stream called `name`.
    pub(super) fn stream(&self, name: &str) -> Option<Arc<Stream>> {
        self.names.read().get(name)?.stream().cloned()
    }

    /// Whether `name` is a crashed entry.
    pub(super) fn is_crashed(&self, name: &str) -> bool {
        self.names
            .read()
            .get(name)
            .is_some_and(|s| s.crashed().is_some())
    }

    /// Adds a running queue or stream.
    pub(super) fn insert(&self, r: QueueRef, storage: String) {
        let name = r.name().clone();
        let slot = Slot {
            entry: Entry::Open(r),
            storage,
        };
        self.names.write().insert(name, slot);
    }

    /// Adds (or turns a running entry into) a crashed one.
    pub(super) fn insert_crashed(&self, c: CrashedQueue, storage: String) {
        let name = c.spec.name.clone();
        let slot = Slot {
            storage,
            entry: Entry::Crashed(c),
        };
        self.names.write().insert(name, slot);
    }

    /// Removes `name`.
    pub(super) fn remove(&self, name: &str) -> Option<Slot> {
        self.names.write().remove(name)
    }

    /// How many names are taken (queues, streams and crashed ones count
    /// against `max-queues`, as in RabbitMQ).
    pub(super) fn len(&self) -> usize {
        self.names.read().len()
    }

    /// Every running queue.
    pub(super) fn queues(&self) -> Vec<Arc<Queue>> {
        let names = self.names.read();
        names.values().filter_map(|s| s.queue().cloned()).collect()
    }

    /// Every running stream.
    pub(super) fn streams(&self) -> Vec<Arc<Stream>> {
        let names = self.names.read();
        names.values().filter_map(|s| s.stream().cloned()).collect()
    }

    /// Every running queue and stream.
    pub(super) fn open_refs(&self) -> Vec<QueueRef> {
        let names = self.names.read();
        names.values().filter_map(|s| s.open().cloned()).collect()
    }

    /// Every crashed entry.
    pub(super) fn crashed(&self) -> Vec<CrashedQueue> {
        let names = self.names.read();
        names
            .values()
            .filter_map(|s| s.crashed().cloned())
            .collect()
    }

    /// Empties the registry, returning what it held.
    pub(super) fn drain(&self) -> Vec<Slot> {
        self.names.write().drain().map(|(_, s)| s).collect()
    }
}

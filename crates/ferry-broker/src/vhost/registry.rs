//! The vhost's one registry of queues and streams: one name space, one map,
//! one lock. Each name holds what it is (a running queue or stream, or a
//! stored one that crashed at open, `crashed.rs`) and the name of its
//! storage directory (random, so a deleted and redeclared queue never meets
//! its predecessor's files).
//!
//! Owns the map (its `names` lock), the lookups by name with the
//! exclusive-owner rules and RabbitMQ's 404 / 405 texts, the crashed
//! entries (`crashed.rs` has what they do), the `max-queues` limit on the
//! name space, and the queue half of the definitions file. Must not open,
//! delete or persist anything (the vhost does, under `defs_lock`). Lock
//! order: the vhost's `exchanges` (`topology.rs`) → the registry → a
//! queue's or stream's own lock.

use super::{precondition, CrashedQueue};
use crate::definitions::QueueDef;
use ferry_queue::error::{CoreError, ErrorKind, Result};
use ferry_queue::queue::{Queue, QueueSpec};
use ferry_queue::source::{QueueRef, Source};
use ferry_queue::stream::Stream;
use parking_lot::{RwLock, RwLockReadGuard};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
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
    /// A replicated queue's nodes as its declaration chose them (empty:
    /// not replicated, or not recorded).
    pub(super) replicas: Arc<[u64]>,
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
#[derive(Debug)]
pub(super) struct Registry {
    /// The vhost's name (error texts).
    vhost: Arc<str>,
    names: RwLock<Names>,
    /// The `max-queues` vhost limit (negative: none), set by the broker
    /// from its access database.
    max_queues: AtomicI64,
}

impl Registry {
    /// An empty registry of vhost `vhost`, without a queue limit.
    pub(super) fn new(vhost: Arc<str>) -> Self {
        Registry {
            vhost,
            names: RwLock::new(Names::new()),
            max_queues: AtomicI64::new(-1),
        }
    }

    /// Read access (routing holds it across a whole publish).
    pub(super) fn read(&self) -> RwLockReadGuard<'_, Names> {
        self.names.read()
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
        self.insert_replicated(r, storage, Vec::new());
    }

    /// Records the nodes of `name`'s group `group`; false if `name` is
    /// not in that group or they are unchanged.
    pub(super) fn set_replicas(&self, name: &str, group: u64, replicas: &[u64]) -> bool {
        let mut names = self.names.write();
        match names.get_mut(name) {
            Some(slot)
                if crate::replicated::group_of(&slot.storage) == Some(group)
                    && *slot.replicas != *replicas =>
            {
                slot.replicas = replicas.into();
                true
            }
            _ => false,
        }
    }

    /// Adds a running queue or stream with the nodes it is replicated on.
    pub(super) fn insert_replicated(&self, r: QueueRef, storage: String, replicas: Vec<u64>) {
        let name = r.name().clone();
        let slot = Slot {
            entry: Entry::Open(r),
            storage,
            replicas: replicas.into(),
        };
        self.names.write().insert(name, slot);
    }

    /// Adds (or turns a running entry into) a crashed one.
    pub(super) fn insert_crashed(&self, c: CrashedQueue, storage: String) {
        let name = c.spec.name.clone();
        let slot = Slot {
            storage,
            entry: Entry::Crashed(c),
            replicas: Arc::from([]),
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

    /// Every running queue and stream, by name.
    pub(super) fn open_refs_sorted(&self) -> Vec<QueueRef> {
        let mut all = self.open_refs();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Every crashed entry, by name.
    pub(super) fn crashed_sorted(&self) -> Vec<CrashedQueue> {
        let mut all = self.crashed();
        all.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        all
    }

    /// The running queue or stream called `name`, whoever owns it.
    pub(super) fn open_ref(&self, name: &str) -> Option<QueueRef> {
        self.names.read().get(name)?.open().cloned()
    }

    /// The crashed entry called `name`.
    pub(super) fn crashed_entry(&self, name: &str) -> Option<CrashedQueue> {
        self.names.read().get(name)?.crashed().cloned()
    }

    /// The queue or stream called `name`, for use by connection `conn`.
    pub(super) fn lookup(&self, name: &str, conn: u64) -> Result<QueueRef> {
        let Some(slot) = self.get(name) else {
            return Err(CoreError::not_found("queue", name, &self.vhost));
        };
        match slot.open() {
            Some(QueueRef::Queue(q)) => {
                self.check_exclusive(q, conn)?;
                Ok(QueueRef::Queue(q.clone()))
            }
            Some(r) => Ok(r.clone()),
            None => Err(self.crashed_error(name)),
        }
    }

    /// RabbitMQ's 405 for a queue (or stream) held exclusively elsewhere.
    pub(super) fn locked(&self, queue: &str) -> CoreError {
        CoreError::request(
            ErrorKind::ResourceLocked,
            format!(
                "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                queue, self.vhost
            ),
        )
    }

    /// `Err(locked)` if `q` is exclusive to another connection than `conn`.
    pub(super) fn check_exclusive(&self, q: &Queue, conn: u64) -> Result<()> {
        match q.spec().exclusive_owner {
            Some(owner) if owner != conn => Err(self.locked(q.name())),
            _ => Ok(()),
        }
    }

    /// RabbitMQ's answer to any use of a crashed queue.
    pub(super) fn crashed_error(&self, name: &str) -> CoreError {
        CoreError::request(
            ErrorKind::NotFound,
            format!(
                "queue '{name}' in vhost '{}' has crashed and failed to restart",
                self.vhost
            ),
        )
    }

    /// `Err(crashed)` if `name` is a crashed queue.
    pub(super) fn check_not_crashed(&self, name: &str) -> Result<()> {
        match self.is_crashed(name) {
            true => Err(self.crashed_error(name)),
            false => Ok(()),
        }
    }

    /// Records a queue or stream that failed to open at boot (with its
    /// storage name, so the definition and files are kept).
    pub(super) fn note_crashed(&self, spec: QueueSpec, storage: String, e: &CoreError) {
        tracing::error!(
            vhost = %self.vhost,
            queue = %spec.name,
            error = %e,
            "queue crashed: its log cannot be recovered; the queue is unavailable \
             (state 'crashed') until it is deleted, the rest of the broker runs"
        );
        let c = CrashedQueue::new(spec, e.to_string());
        self.insert_crashed(c, storage);
    }

    /// A running stream stopped on a record it cannot read: if `name` is
    /// still that (deleted) stream, it becomes a crashed entry, keeping
    /// its storage. The caller holds the vhost's `defs_lock`.
    pub(super) fn stream_crashed(&self, name: &str, reason: String) {
        let mut names = self.names.write();
        let Some(slot) = names.get_mut(name) else {
            return;
        };
        if let Some(s) = slot.stream().filter(|s| s.is_deleted()) {
            let c = CrashedQueue::new(s.spec().clone(), reason);
            slot.entry = Entry::Crashed(c);
        }
    }

    /// Sets the `max-queues` limit (None or negative: no limit).
    pub(super) fn set_max_queues(&self, limit: Option<i64>) {
        self.max_queues
            .store(limit.unwrap_or(-1), Ordering::Release);
    }

    /// queue.declare's check of `max-queues` for a new queue (queues and
    /// streams count, as in RabbitMQ): 406 with RabbitMQ's text.
    pub(super) fn check_limit(&self, queue: &str) -> Result<()> {
        let limit = self.max_queues.load(Ordering::Acquire);
        let count = self.len();
        match ferry_auth::limits::is_reached(Some(limit), count) {
            Some(l) => Err(precondition(ferry_auth::limits::queues_text(
                queue,
                &self.vhost,
                l,
            ))),
            None => Ok(()),
        }
    }

    /// The definitions of the stored queues and streams (crashed ones
    /// too), sorted by name; durable, not exclusive.
    pub(super) fn queue_defs(names: &Names) -> Vec<QueueDef> {
        let mut defs = Vec::new();
        for slot in names.values() {
            let spec = match &slot.entry {
                Entry::Open(r) => r.spec(),
                Entry::Crashed(c) => &c.spec,
            };
            if spec.durable && spec.exclusive_owner.is_none() {
                defs.push(QueueDef {
                    spec: spec.clone(),
                    storage: slot.storage.clone(),
                    replicas: slot.replicas.to_vec(),
                });
            }
        }
        defs.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        defs
    }
}

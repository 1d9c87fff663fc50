//! The vhost's streams: in the one registry with the queues
//! (`registry.rs`), persisted in the same definitions file (a stream is a
//! `QueueDef` whose `x-queue-type` is `stream`), found by name as a
//! [`QueueRef`].

use super::{check_queue_equivalent, precondition, storage_name, VHost};
use ferry_queue::error::{CoreError, Result};
use ferry_queue::queue::QueueSpec;
use ferry_queue::source::{QueueRef, Source};
use ferry_queue::stream::{Stream, StreamArgs};
use ferry_route::Destination;
use std::sync::Arc;

impl VHost {
    /// Every stream (listings, retention timer, shutdown syncs).
    pub fn streams(&self) -> Vec<Arc<Stream>> {
        self.registry.streams()
    }

    /// Every queue and stream, by name (the management API's listings).
    pub fn queue_refs(&self) -> Vec<QueueRef> {
        let mut all = self.registry.open_refs();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Whether `name` is taken by a queue, a stream or a crashed one.
    pub fn has_queue_name(&self, name: &str) -> bool {
        self.registry.get(name).is_some()
    }

    /// How many queue names are taken (queues, streams and crashed ones:
    /// what `max-queues` counts).
    pub fn queue_name_count(&self) -> usize {
        self.registry.len()
    }

    /// The queue or stream called `name`, whoever owns it (the management
    /// API sees exclusive queues too).
    pub fn queue_ref(&self, name: &str) -> Option<QueueRef> {
        self.registry.get(name)?.open().cloned()
    }

    /// The queue or stream called `name`, for use by connection `conn`.
    pub fn lookup(&self, name: &str, conn: u64) -> Result<QueueRef> {
        let Some(slot) = self.registry.get(name) else {
            return Err(CoreError::not_found("queue", name, &self.name));
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

    /// queue.declare of an existing stream: equivalence, then the counts.
    pub(super) fn redeclare_stream(&self, s: &Stream, spec: &QueueSpec) -> Result<(u32, u32)> {
        if spec.exclusive_owner.is_some() {
            return Err(self.locked(s.name()));
        }
        check_queue_equivalent(s.spec(), spec, &self.name)?;
        Ok(s.counts())
    }

    /// Creates a stream (the caller holds `defs_lock`).
    pub(super) fn create_stream(&self, spec: QueueSpec) -> Result<(Arc<str>, u32, u32)> {
        StreamArgs::validate_declaration(&spec, &self.name).map_err(precondition)?;
        let storage = storage_name();
        let dir = self.dir.join("queues").join(&storage);
        let name = spec.name.clone();
        let args = self.stream_effective_args(&spec);
        let s = Stream::open_effective(spec, &args, self.name.clone(), dir, self.env.clone())?;
        self.registry.insert(QueueRef::Stream(s), storage);
        self.save()?;
        Ok((name, 0, 0))
    }

    /// queue.delete of a stream (the caller holds `defs_lock`); 0 if there
    /// is none. RabbitMQ reports 0 messages for a deleted stream.
    pub(super) fn delete_stream(&self, name: &str, if_unused: bool) -> Result<u32> {
        let Some(s) = self.registry.stream(name) else {
            return Ok(0);
        };
        if if_unused && s.consumer_count() > 0 {
            return Err(precondition(format!(
                "queue '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        self.registry.remove(name);
        {
            let mut exchanges = self.exchanges.write();
            super::remove_destination(&mut exchanges, &Destination::Queue(Arc::from(name)));
        }
        s.delete()?;
        self.save()?;
        Ok(0)
    }

    /// Deletes the queue behind a channel's `Source` without checks
    /// (auto-delete after the last consumer); streams are never deleted so.
    pub fn drop_source(&self, s: &Arc<dyn Source>) -> Result<()> {
        match self.registry.queue(s.name()) {
            Some(q) if std::ptr::addr_eq(Arc::as_ptr(&q), Arc::as_ptr(s)) => self.drop_queue(&q),
            _ => Ok(()),
        }
    }
}

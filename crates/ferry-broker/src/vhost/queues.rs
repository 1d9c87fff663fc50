//! queue.declare / queue.delete / queue.purge for classic queues, and the
//! exclusive-owner rules (RabbitMQ's 405 texts). Streams share the name
//! space (`registry.rs`) but are declared in `streams.rs`.

use super::{
    check_queue_equivalent, precondition, refused, remove_destination, storage_name, VHost,
};
use ferry_queue::error::{CoreError, ErrorKind, Result};
use ferry_queue::queue::{Queue, QueueArgs, QueueSpec};
use ferry_queue::source::QueueRef;
use ferry_queue::stream::StreamArgs;
use ferry_route::Destination;
use std::sync::Arc;

impl VHost {
    /// RabbitMQ's 405 for a queue (or stream) held exclusively elsewhere.
    pub(super) fn locked(&self, queue: &str) -> CoreError {
        CoreError::request(
            ErrorKind::ResourceLocked,
            format!(
                "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                queue, self.name
            ),
        )
    }

    pub(super) fn check_exclusive(&self, q: &Queue, conn: u64) -> Result<()> {
        match q.spec().exclusive_owner {
            Some(owner) if owner != conn => Err(self.locked(q.name())),
            _ => Ok(()),
        }
    }

    /// Looks a queue up for use by connection `conn` (consume, get, purge).
    /// A stream answers 540 (basic.get is the one such use left).
    pub fn queue_for(&self, name: &str, conn: u64) -> Result<Arc<Queue>> {
        self.lookup(name, conn)?.queue("basic.get")
    }

    /// queue.declare. Returns (name, ready messages, consumers).
    pub fn declare_queue(
        &self,
        mut spec: QueueSpec,
        passive: bool,
        conn: u64,
    ) -> Result<(Arc<str>, u32, u32)> {
        ferry_queue::limits::check_short("queue", &spec.name)?;
        if passive {
            if let Some(s) = self.registry.stream(&spec.name) {
                let (m, c) = s.counts();
                return Ok((s.name().clone(), m, c));
            }
            let q = self.queue_for(&spec.name, conn)?;
            q.touch();
            let (m, c) = q.counts();
            return Ok((q.name().clone(), m, c));
        }
        let generated = spec.name.is_empty();
        if generated {
            spec.name = Arc::from(ferry_model::names::server_named_queue().as_str());
        }
        let _d = self.defs_lock.lock();
        self.check_alive()?;
        if let Some(s) = self.registry.stream(&spec.name) {
            let (m, c) = self.redeclare_stream(&s, &spec)?;
            return Ok((s.name().clone(), m, c));
        }
        if let Some(q) = self.registry.queue(&spec.name) {
            // RabbitMQ's "strict" check: the declared exclusivity must match
            // exactly, even for the owner (405, not 406).
            if q.spec().exclusive_owner != spec.exclusive_owner {
                return Err(self.locked(q.name()));
            }
            check_queue_equivalent(q.spec(), &spec, &self.name)?;
            q.touch();
            let (m, c) = q.counts();
            return Ok((q.name().clone(), m, c));
        }
        self.check_not_crashed(&spec.name)?;
        if spec.name.starts_with("amq.") && !generated {
            return Err(refused(format!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                spec.name
            )));
        }
        if StreamArgs::is_stream(&spec.arguments) {
            self.check_queue_limit(&spec.name)?;
            return self.create_stream(spec);
        }
        QueueArgs::validate_declaration(&spec, &self.name).map_err(precondition)?;
        self.check_queue_limit(&spec.name)?;
        // An exclusive queue is deleted with its connection, so its messages
        // never outlive the process: keep it out of the durable storage.
        let persisted = spec.durable && spec.exclusive_owner.is_none();
        let storage = storage_name();
        let dir = if persisted {
            self.dir.join("queues").join(&storage)
        } else {
            self.transient_dir.join(&storage)
        };
        let args = self.queue_effective_args(&spec);
        let q = Queue::open_effective(
            spec.clone(),
            &args,
            self.name.clone(),
            dir,
            self.env.clone(),
        )?;
        let name = spec.name.clone();
        self.registry.insert(QueueRef::Queue(q), storage);
        if persisted {
            self.save()?;
        }
        Ok((name, 0, 0))
    }

    /// queue.delete. Returns the number of messages deleted.
    pub fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        conn: u64,
    ) -> Result<u32> {
        let _d = self.defs_lock.lock();
        let Some(q) = self.registry.queue(name) else {
            if let Some(r) = self.delete_crashed(name) {
                return r;
            }
            return self.delete_stream(name, if_unused);
        };
        self.check_exclusive(&q, conn)?;
        let (ready, consumers) = q.counts();
        if if_unused && consumers > 0 {
            return Err(precondition(format!(
                "queue '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        if if_empty && (ready > 0 || q.unacked_count() > 0 || q.delayed_count() > 0) {
            return Err(precondition(format!(
                "queue '{name}' in vhost '{}' not empty",
                self.name
            )));
        }
        self.remove_queue_locked(&q)
    }

    fn remove_queue_locked(&self, q: &Arc<Queue>) -> Result<u32> {
        let name = q.name().clone();
        self.registry.remove(&name);
        {
            let mut exchanges = self.exchanges.write();
            remove_destination(&mut exchanges, &Destination::Queue(name));
        }
        self.drop_orphan_delayed();
        let n = q.delete()?;
        if q.spec().durable {
            self.save()?;
        }
        Ok(n)
    }

    /// Deletes a queue without checks (auto-delete, exclusive owner gone).
    pub fn drop_queue(&self, q: &Arc<Queue>) -> Result<()> {
        let _d = self.defs_lock.lock();
        let current = self.registry.queue(q.name());
        if current.is_some_and(|c| Arc::ptr_eq(&c, q)) {
            self.remove_queue_locked(q)?;
        }
        Ok(())
    }

    /// Deletes every exclusive queue of a closed connection.
    pub fn connection_closed(&self, conn: u64) {
        let mut owned = self.registry.queues();
        owned.retain(|q| q.spec().exclusive_owner == Some(conn));
        for q in owned {
            if let Err(e) = self.drop_queue(&q) {
                tracing::warn!(queue = %q.name(), error = %e, "cannot delete exclusive queue");
            }
        }
    }

    /// queue.purge.
    pub fn purge_queue(&self, name: &str, conn: u64) -> Result<u32> {
        self.lookup(name, conn)?.queue("queue.purge")?.purge()
    }
}

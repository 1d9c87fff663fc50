//! A virtual host: its exchanges, queues and bindings, and the operations
//! AMQP's exchange.* / queue.* methods map to, with RabbitMQ's checks and
//! error texts. Durable changes are written to the vhost's definitions file
//! before the operation returns.
//!
//! This file holds the [`VHost`]: its parts, opening, the definitions
//! file, and the operations that span parts (declare, delete and purge of
//! queues and streams, vhost deletion, policy changes). The parts, each
//! owning its state:
//! - `topology` ([`Topology`](topology::Topology)): the exchange map and
//!   bindings, declare / delete / bind, auto-delete, routing through
//!   `ferry-route` (`routing` has the resolution over the locked maps);
//! - `registry` ([`Registry`](registry::Registry)): the one name space of
//!   queues and streams, lookups with the exclusive-owner rules, crashed
//!   entries (`crashed`), `max-queues`;
//! - `delayed_store` ([`DelayedStore`](delayed_store::DelayedStore)): the
//!   hidden queues of `x-delayed-message` exchanges;
//! - `dead_letters` ([`DeadLetters`](dead_letters::DeadLetters)):
//!   republishing dead letters;
//! - `policies` ([`PolicyCell`](policies::PolicyCell)): the vhost's
//!   policies and the effective arguments they give;
//! - `equivalence`: the redeclaration checks (pure functions).
//!
//! Lock order (callers may hold `Broker.access_write` → `policy_write`
//! first): `defs_lock` (the vhost's) → `exchanges` (the topology's) →
//! `registry` (the registry's) → the delayed store's map → a queue's or
//! stream's lock. The `policies` lock (the policy cell's) is a leaf
//! (`set_policies` swaps it under `defs_lock`).

use crate::definitions::{self, Definitions};
use crate::replicated::{self, ReplicaHub};
use ferry_model::message::Message;
use ferry_model::Table;
use ferry_queue::error::{CoreError, ErrorKind, Result};
use ferry_queue::queue::{DeadLetter, DeadLetterRouter, Queue, QueueArgs, QueueEnv, QueueSpec};
use ferry_queue::source::{QueueRef, Source};
use ferry_queue::stream::{Stream, StreamArgs};
use ferry_route::{Destination, Exchange};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

mod crashed;
#[cfg(test)]
mod dead_letter_tests;
mod dead_letters;
mod delayed_store;
#[cfg(test)]
mod delayed_tests;
mod equivalence;
#[cfg(test)]
mod expiry_tests;
mod policies;
mod registry;
mod replicas;
mod routing;
mod snapshot;
mod topology;

pub use crashed::CrashedQueue;
use dead_letters::DeadLetters;
use delayed_store::DelayedStore;
use equivalence::check_queue_equivalent;
use policies::PolicyCell;
use registry::Registry;
use topology::Topology;

/// Flags of exchange.declare.
#[derive(Debug, Clone, Default)]
pub struct ExchangeArgs {
    /// Survives restarts.
    pub durable: bool,
    /// Deleted with its last binding.
    pub auto_delete: bool,
    /// Clients cannot publish to it.
    pub internal: bool,
    /// x-arguments.
    pub arguments: Table,
}

/// A virtual host.
#[derive(Debug)]
pub struct VHost {
    name: Arc<str>,
    dir: PathBuf,
    transient_dir: PathBuf,
    env: QueueEnv,
    /// Exchanges and bindings (`vhost/topology.rs`).
    topology: Topology,
    /// Queues, streams and crashed ones, by name (`vhost/registry.rs`).
    registry: Registry,
    /// Serializes changes and the definitions file.
    defs_lock: Mutex<()>,
    /// Dead-letter republishing (`vhost/dead_letters.rs`).
    dead_letters: DeadLetters,
    /// Set by `delete_all`: a connection still holding this vhost must not
    /// write its directory back into existence.
    deleted: AtomicBool,
    /// The hidden queues of `x-delayed-message` exchanges.
    delayed: DelayedStore,
    /// Its policies and operator policies (`vhost/policies.rs`).
    policies: PolicyCell,
    /// Where its replicated queues' groups run (`crate::replicated`).
    hub: Arc<ReplicaHub>,
}

fn refused(text: String) -> CoreError {
    CoreError::request(ErrorKind::AccessRefused, text)
}

fn precondition(text: String) -> CoreError {
    CoreError::request(ErrorKind::PreconditionFailed, text)
}

fn storage_name() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn default_exchange_refused() -> CoreError {
    refused("operation not permitted on the default exchange".into())
}

impl VHost {
    /// Opens a vhost from its directory: definitions, then every durable
    /// queue's log (replayed). Non-durable queues do not survive.
    pub fn open(
        name: &str,
        dir: PathBuf,
        transient_dir: PathBuf,
        env: QueueEnv,
        policies: Arc<crate::policy::VhostPolicies>,
        hub: Arc<ReplicaHub>,
    ) -> Result<Arc<Self>> {
        let vh = Arc::new_cyclic(|me: &Weak<VHost>| {
            let mut env = env;
            // Every queue of this vhost dead-letters through it.
            let router: Weak<dyn DeadLetterRouter> = me.clone();
            env.dead_letters = Some(router);
            let name: Arc<str> = Arc::from(name);
            let delayed = DelayedStore::new(
                name.clone(),
                dir.clone(),
                transient_dir.clone(),
                env.clone(),
            );
            VHost {
                topology: Topology::new(name.clone()),
                registry: Registry::new(name.clone()),
                name,
                dir,
                transient_dir,
                env,
                defs_lock: Mutex::new(()),
                dead_letters: DeadLetters::default(),
                deleted: AtomicBool::new(false),
                delayed,
                policies: PolicyCell::new(policies),
                hub,
            }
        });
        vh.load()?;
        Ok(vh)
    }

    fn load(&self) -> Result<()> {
        let defs = definitions::load(self.env.io.as_ref(), &self.dir)?;
        self.topology
            .load(defs.exchanges, &self.policies, &self.delayed)?;
        for q in defs.queues {
            if let Some(group) = replicated::group_of(&q.storage) {
                // Its group starts once the node has joined its cluster.
                self.open_replica(q.spec, group, q.replicas, true)?;
                continue;
            }
            let dir = self.dir.join("queues").join(&q.storage);
            // One queue whose stored data is damaged (a record that does
            // not decode, a bad checksum in a sealed segment) must not
            // keep the node down: it is kept as `crashed`
            // (`vhost/crashed.rs`).
            let opened = if StreamArgs::is_stream(&q.spec.arguments) {
                let args = self.policies.stream_args(&q.spec);
                let (spec, vhost) = (q.spec.clone(), self.name.clone());
                Stream::open_effective(spec, &args, vhost, dir, self.env.clone())
                    .map(QueueRef::Stream)
            } else {
                let args = self.policies.queue_args(&q.spec);
                let (spec, vhost) = (q.spec.clone(), self.name.clone());
                Queue::open_effective(spec, &args, vhost, dir, self.env.clone())
                    .map(QueueRef::Queue)
            };
            match opened {
                Ok(r) => self.registry.insert(r, q.storage),
                Err(e) if e.is_corruption() => self.registry.note_crashed(q.spec, q.storage, &e),
                // A failing disk (I/O error, failed fsync) is the node's
                // problem, not one queue's: the open fails.
                Err(e) => return Err(e),
            }
        }
        self.topology.load_bindings(defs.bindings);
        Ok(())
    }

    /// Name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Sets the `max-queues` limit (None or negative: no limit).
    pub fn set_max_queues(&self, limit: Option<i64>) {
        self.registry.set_max_queues(limit);
    }

    /// Writes the durable definitions. Called with `defs_lock` held.
    fn save(&self) -> Result<()> {
        self.check_alive()?;
        let exchanges = self.topology.read();
        let names = self.registry.read();
        let (exchange_defs, bindings) = Topology::defs(&exchanges, &names);
        let defs = Definitions {
            version: 1,
            exchanges: exchange_defs,
            bindings,
            queues: Registry::queue_defs(&names),
        };
        definitions::save(self.env.io.as_ref(), &self.dir, &defs)
    }

    fn save_if(&self, durable: bool) -> Result<()> {
        if durable {
            self.save()?;
        }
        Ok(())
    }

    /// Every queue (for shutdown syncs and listings).
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.registry.queues()
    }

    /// A copy of every exchange with its bindings (management listings).
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.topology.list()
    }

    /// Whether an exchange exists.
    pub fn has_exchange(&self, name: &str) -> bool {
        self.topology.has(name)
    }

    /// Whether exchange `name` is durable (None: no such exchange).
    pub fn exchange_durable(&self, name: &str) -> Option<bool> {
        self.topology.durable(name)
    }

    // --- exchanges and bindings (`topology.rs`) ---

    /// exchange.declare.
    pub fn declare_exchange(
        &self,
        name: &str,
        kind: &str,
        passive: bool,
        a: ExchangeArgs,
    ) -> Result<()> {
        let Some(kind) = self.topology.check_declare(name, kind, passive, &a)? else {
            return Ok(());
        };
        let _d = self.defs_lock.lock();
        self.check_alive()?;
        let durable = a.durable;
        let created = self
            .topology
            .declare(name, kind, a, &self.policies, &self.delayed)?;
        self.save_if(created && durable)
    }

    /// exchange.delete.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<()> {
        self.topology.check_delete(name)?;
        let _d = self.defs_lock.lock();
        let Some(durable) = self.topology.delete(name, if_unused)? else {
            return Ok(());
        };
        self.drop_orphan_delayed();
        self.save_if(durable)
    }

    /// queue.bind / exchange.bind (`bind`=true) and their unbinds.
    pub fn binding(
        &self,
        bind: bool,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: Table,
        conn: u64,
    ) -> Result<()> {
        ferry_queue::limits::check_short("routing_key", routing_key)?;
        let _d = self.defs_lock.lock();
        let queue_durable = |q: &str| {
            let slot = self
                .registry
                .get(q)
                .ok_or_else(|| CoreError::not_found("queue", q, &self.name))?;
            // Streams are durable; as in RabbitMQ, a crashed
            // queue's record still exists (and is durable).
            match slot.queue() {
                Some(queue) => {
                    self.registry.check_exclusive(queue, conn)?;
                    Ok(queue.spec().durable)
                }
                None => Ok(true),
            }
        };
        let durable = self.topology.binding(
            bind,
            source,
            destination,
            routing_key,
            arguments,
            queue_durable,
        )?;
        self.drop_orphan_delayed();
        self.save_if(durable)
    }

    // --- routing (`topology.rs`, `routing.rs`) ---

    /// Routes a message published to `exchange` and returns the queues it
    /// goes to (deduplicated). `headers` are the parsed message headers,
    /// needed only by headers exchanges. A message whose exchange or
    /// routing key could not be stored is refused here (`ferry_queue::limits`).
    pub fn route(
        &self,
        exchange: &str,
        msg: &Message,
        headers: Option<&Table>,
        out: &mut Vec<Arc<dyn Source>>,
    ) -> Result<()> {
        self.topology
            .route(&self.registry, &self.delayed, exchange, msg, headers, out)
    }

    // --- queues and streams (`registry.rs`) ---

    /// Looks a queue up for use by connection `conn` (consume, get, purge).
    /// A stream answers 540 (basic.get is the one such use left).
    pub fn queue_for(&self, name: &str, conn: u64) -> Result<Arc<Queue>> {
        self.lookup(name, conn)?.queue("basic.get")
    }

    /// The queue or stream called `name`, for use by connection `conn`.
    pub fn lookup(&self, name: &str, conn: u64) -> Result<QueueRef> {
        self.registry.lookup(name, conn)
    }

    /// The queue or stream called `name`, whoever owns it (the management
    /// API sees exclusive queues too).
    pub fn queue_ref(&self, name: &str) -> Option<QueueRef> {
        self.registry.open_ref(name)
    }

    /// Every stream (listings, retention timer, shutdown syncs).
    pub fn streams(&self) -> Vec<Arc<Stream>> {
        self.registry.streams()
    }

    /// Every queue and stream, by name (the management API's listings).
    pub fn queue_refs(&self) -> Vec<QueueRef> {
        self.registry.open_refs_sorted()
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

    /// The crashed queues and streams, by name.
    pub fn crashed_queues(&self) -> Vec<CrashedQueue> {
        self.registry.crashed_sorted()
    }

    /// The crashed queue or stream called `name`.
    pub fn crashed_queue(&self, name: &str) -> Option<CrashedQueue> {
        self.registry.crashed_entry(name)
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
            // queue.declare of an existing stream: equivalence, then the
            // counts.
            if spec.exclusive_owner.is_some() {
                return Err(self.registry.locked(s.name()));
            }
            check_queue_equivalent(s.spec(), &spec, &self.name)?;
            let (m, c) = s.counts();
            return Ok((s.name().clone(), m, c));
        }
        if let Some(q) = self.registry.queue(&spec.name) {
            // RabbitMQ's "strict" check: the declared exclusivity must match
            // exactly, even for the owner (405, not 406).
            if q.spec().exclusive_owner != spec.exclusive_owner {
                return Err(self.registry.locked(q.name()));
            }
            check_queue_equivalent(q.spec(), &spec, &self.name)?;
            q.touch();
            let (m, c) = q.counts();
            return Ok((q.name().clone(), m, c));
        }
        self.registry.check_not_crashed(&spec.name)?;
        if spec.name.starts_with("amq.") && !generated {
            return Err(refused(format!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                spec.name
            )));
        }
        if StreamArgs::is_stream(&spec.arguments) {
            self.registry.check_limit(&spec.name)?;
            return self.create_stream(spec);
        }
        QueueArgs::validate_declaration(&spec, &self.name).map_err(precondition)?;
        self.registry.check_limit(&spec.name)?;
        // An exclusive queue is deleted with its connection, so its messages
        // never outlive the process: keep it out of the durable storage.
        let persisted = spec.durable && spec.exclusive_owner.is_none();
        let storage = storage_name();
        let dir = if persisted {
            self.dir.join("queues").join(&storage)
        } else {
            self.transient_dir.join(&storage)
        };
        let args = self.policies.queue_args(&spec);
        let q = Queue::open_effective(
            spec.clone(),
            &args,
            self.name.clone(),
            dir,
            self.env.clone(),
        )?;
        let name = spec.name.clone();
        self.registry.insert(QueueRef::Queue(q), storage);
        self.save_if(persisted)?;
        Ok((name, 0, 0))
    }

    /// Creates a stream (the caller holds `defs_lock`).
    fn create_stream(&self, spec: QueueSpec) -> Result<(Arc<str>, u32, u32)> {
        StreamArgs::validate_declaration(&spec, &self.name).map_err(precondition)?;
        let storage = storage_name();
        let dir = self.dir.join("queues").join(&storage);
        let name = spec.name.clone();
        let args = self.policies.stream_args(&spec);
        let s = Stream::open_effective(spec, &args, self.name.clone(), dir, self.env.clone())?;
        self.registry.insert(QueueRef::Stream(s), storage);
        self.save()?;
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
        self.check_deletable(&q, (if_unused, if_empty), conn)?;
        self.remove_queue_locked(&q)
    }

    /// queue.delete's checks of queue `q`: exclusive use, `if-unused`,
    /// `if-empty`.
    pub fn check_deletable(
        &self,
        q: &Queue,
        (if_unused, if_empty): (bool, bool),
        conn: u64,
    ) -> Result<()> {
        self.registry.check_exclusive(q, conn)?;
        let d = q.depth();
        let name = q.name();
        if if_unused && d.consumers > 0 {
            return Err(precondition(format!(
                "queue '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        if if_empty && (d.ready > 0 || d.unacked > 0 || d.delayed > 0) {
            return Err(precondition(format!(
                "queue '{name}' in vhost '{}' not empty",
                self.name
            )));
        }
        Ok(())
    }

    fn remove_queue_locked(&self, q: &Arc<Queue>) -> Result<u32> {
        let name = q.name().clone();
        self.registry.remove(&name);
        self.topology.remove_destination(&Destination::Queue(name));
        self.drop_orphan_delayed();
        let n = q.delete()?;
        self.save_if(q.spec().durable)?;
        Ok(n)
    }

    /// queue.delete of a stream (the caller holds `defs_lock`); 0 if there
    /// is none. RabbitMQ reports 0 messages for a deleted stream.
    fn delete_stream(&self, name: &str, if_unused: bool) -> Result<u32> {
        let Some(s) = self.registry.stream(name) else {
            return Ok(0);
        };
        self.check_stream_deletable(&s, if_unused)?;
        self.registry.remove(name);
        self.topology
            .remove_destination(&Destination::Queue(Arc::from(name)));
        s.delete()?;
        self.save()?;
        Ok(0)
    }

    /// queue.delete's `if-unused` check of stream `s`.
    pub fn check_stream_deletable(&self, s: &Stream, if_unused: bool) -> Result<()> {
        if if_unused && s.consumer_count() > 0 {
            return Err(precondition(format!(
                "queue '{}' in vhost '{}' in use",
                s.name(),
                self.name
            )));
        }
        Ok(())
    }

    /// queue.delete of a crashed queue (the caller holds `defs_lock`):
    /// removes its definition, bindings and files. `None` if `name` is not
    /// a crashed queue.
    fn delete_crashed(&self, name: &str) -> Option<Result<u32>> {
        let slot = self.registry.get(name)?;
        slot.crashed()?;
        self.registry.remove(name);
        self.topology
            .remove_destination(&Destination::Queue(Arc::from(name)));
        tracing::warn!(vhost = %self.name, queue = %name, "crashed queue deleted");
        let dir = self.dir.join("queues").join(&slot.storage);
        let removed = self
            .env
            .io
            .remove_dir_all(&dir)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(CoreError::from(e)),
            });
        Some(removed.and_then(|()| self.save()).map(|()| 0))
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

    /// Deletes the queue behind a channel's `Source` without checks
    /// (auto-delete after the last consumer); streams are never deleted so.
    pub fn drop_source(&self, s: &Arc<dyn Source>) -> Result<()> {
        match self.registry.queue(s.name()) {
            Some(q) if std::ptr::addr_eq(Arc::as_ptr(&q), Arc::as_ptr(s)) => self.drop_queue(&q),
            _ => Ok(()),
        }
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

    // --- delayed exchanges (`delayed_store.rs`) ---

    /// Deletes the hidden queues whose delayed exchange is gone.
    fn drop_orphan_delayed(&self) {
        self.delayed.drop_orphans(|n| self.topology.is_delayed(n));
    }

    /// Routes the held messages of every delayed exchange that are due at
    /// `now` (the broker's expiry sweep). Returns the earliest due time
    /// left (`NEVER` if none).
    pub fn release_delayed(&self, now: u64) -> u64 {
        self.delayed.release_due(now, |exchange, msg, headers| {
            self.topology
                .route_released(&self.registry, &self.delayed, exchange, msg, headers)
        })
    }

    /// The hidden queues of the delayed exchanges (shutdown syncs them).
    pub fn delayed_queues(&self) -> Vec<Arc<Queue>> {
        self.delayed.queues()
    }

    // --- policies (`policies.rs`) ---

    /// The vhost's policies and operator policies.
    pub fn policies(&self) -> Arc<crate::policy::VhostPolicies> {
        self.policies.get()
    }

    /// What applies to queue / exchange `name` of kind `t`.
    pub fn effective_policy(
        &self,
        name: &str,
        t: crate::policy::Target,
    ) -> crate::policy::Effective {
        self.policies.effective(name, t)
    }

    /// Replaces the vhost's policies and applies them to every queue and
    /// exchange (the broker persisted them first, holding
    /// `Broker.policy_write`). Holds `defs_lock` across the swap and the
    /// walk, so a concurrent declare (which computes its effective
    /// arguments under `defs_lock`) either comes first and is walked, or
    /// comes after and sees the new policies. Blocking: a new
    /// `max-length-bytes` reads message records (see
    /// `Queue::apply_arguments`); callers run off the async workers.
    pub fn set_policies(&self, p: Arc<crate::policy::VhostPolicies>) {
        let _d = self.defs_lock.lock();
        self.policies.set(p);
        self.topology.apply_policies(&self.policies);
        for r in self.registry.open_refs() {
            match r {
                QueueRef::Queue(q) => q.apply_arguments(&self.policies.queue_args(q.spec())),
                QueueRef::Stream(s) => s.apply_arguments(&self.policies.stream_args(s.spec())),
            }
        }
    }

    // --- the end of a vhost's life ---

    /// Deletes every queue (cancelling its consumers) and exchange with
    /// their data, for `Broker::delete_vhost`. Later declares fail: a
    /// connection still holding the vhost must fail cleanly instead of
    /// writing its directory back into existence.
    pub fn delete_all(&self) -> Result<()> {
        let _d = self.defs_lock.lock();
        self.deleted.store(true, Ordering::Release);
        let taken = self.registry.drain();
        self.topology.clear();
        let mut first_err = None;
        if let Err(e) = self.delayed.remove_all() {
            first_err.get_or_insert(e);
        }
        for r in taken.iter().filter_map(|slot| slot.open()) {
            let deleted = match r {
                QueueRef::Queue(q) => q.delete().map(drop),
                QueueRef::Stream(s) => s.delete().map(drop),
            };
            if let Err(e) = deleted {
                tracing::warn!(queue = %r.name(), error = %e, "cannot delete queue of deleted vhost");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn check_alive(&self) -> Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(CoreError::request(
                ErrorKind::NotAllowed,
                format!("vhost {} is being deleted", self.name),
            ));
        }
        Ok(())
    }
}

impl DeadLetterRouter for VHost {
    /// A running stream stopped on a record it cannot read
    /// (`Stream::crash_locked` logged it): it leaves the running streams
    /// and is kept as crashed, with its definition, bindings and files.
    fn stream_crashed(&self, name: &str, reason: String) {
        let _defs = self.defs_lock.lock();
        self.registry.stream_crashed(name, reason);
    }

    /// Dead letters arrive from queues that have released their lock; they
    /// are routed like publishes (exchanges, then queues, both released
    /// before any queue is called), `dead_letters.rs`.
    fn dead_letter(&self, letters: Vec<DeadLetter>) {
        let route = |exchange: &str, keys: &[&str], headers: Option<&Table>, props: &_| {
            self.topology
                .dead_letter_targets(&self.registry, exchange, keys, headers, props)
        };
        self.dead_letters
            .run(letters, self.env.clock.as_ref(), &route);
    }
}

//! A virtual host: its exchanges, queues and bindings, and the operations
//! AMQP's exchange.* / queue.* methods map to, with RabbitMQ's checks and
//! error texts. Durable changes are written to the vhost's definitions file
//! before the operation returns.
//!
//! This file holds the state, opening and the definitions file; each
//! family of operations has its own file: `exchanges` (declare, delete,
//! bindings), `queues` (declare, delete, purge, exclusive owners),
//! `routing` (publishes and dead letters), `streams`, `delayed`
//! (`x-delayed-message`), `lifecycle` (vhost deletion), `equivalence`
//! (redeclaration checks), `crashed` (queues whose log cannot be opened),
//! `registry` (the one name space of queues and streams).
//!
//! Lock order (callers may hold `Broker.access_write` → `policy_write`
//! first): `defs_lock` → `exchanges` → `registry` → a queue's or stream's
//! lock. The `policies` lock is a leaf (`set_policies` swaps it under
//! `defs_lock`).

use crate::definitions::{self, BindingDef, Definitions, ExchangeDef, QueueDef};
use ferry_model::Table;
use ferry_queue::error::{CoreError, ErrorKind, Result};
use ferry_queue::queue::dead_letter::CycleLog;
use ferry_queue::queue::{DeadLetterRouter, Queue, QueueEnv};
use ferry_queue::source::QueueRef;
use ferry_queue::stream::{Stream, StreamArgs};
use ferry_route::{Binding, Destination, Exchange, ExchangeKind};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

mod crashed;
#[cfg(test)]
mod dead_letter_tests;
mod delayed;
mod delayed_store;
#[cfg(test)]
mod delayed_tests;
mod equivalence;
mod exchanges;
#[cfg(test)]
mod expiry_tests;
mod lifecycle;
mod policies;
mod queues;
mod registry;
mod routing;
mod streams;

pub use crashed::CrashedQueue;
use equivalence::check_queue_equivalent;
use exchanges::remove_destination;
use registry::{Entry, Registry};

/// The predeclared exchanges every vhost has.
const STANDARD_EXCHANGES: &[(&str, ExchangeKind)] = &[
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

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
    exchanges: RwLock<HashMap<Arc<str>, Exchange>>,
    /// Queues, streams and crashed ones, by name (`vhost/registry.rs`).
    registry: Registry,
    defs_lock: Mutex<()>,
    cycles: CycleLog,
    /// Set by `delete_all`: a connection still holding this vhost must not
    /// write its directory back into existence.
    deleted: std::sync::atomic::AtomicBool,
    /// The hidden queues of `x-delayed-message` exchanges.
    delayed: delayed_store::DelayedStore,
    /// The `max-queues` vhost limit (negative: none), set by the broker
    /// from its access database.
    max_queues: std::sync::atomic::AtomicI64,
    /// Its policies and operator policies (`policies.rs`).
    policies: RwLock<Arc<crate::policy::VhostPolicies>>,
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
    ) -> Result<Arc<Self>> {
        let vh = Arc::new_cyclic(|me: &Weak<VHost>| {
            let mut env = env;
            // Every queue of this vhost dead-letters through it.
            let router: Weak<dyn DeadLetterRouter> = me.clone();
            env.dead_letters = Some(router);
            VHost {
                name: Arc::from(name),
                dir,
                transient_dir,
                env,
                exchanges: RwLock::new(HashMap::new()),
                registry: Registry::default(),
                defs_lock: Mutex::new(()),
                cycles: CycleLog::default(),
                deleted: std::sync::atomic::AtomicBool::new(false),
                max_queues: std::sync::atomic::AtomicI64::new(-1),
                delayed: Default::default(),
                policies: RwLock::new(policies),
            }
        });
        vh.load()?;
        Ok(vh)
    }

    fn load(&self) -> Result<()> {
        let defs = definitions::load(self.env.io.as_ref(), &self.dir)?;
        let mut exchanges = self.exchanges.write();
        for (n, k) in STANDARD_EXCHANGES {
            let mut x = Exchange::new(Arc::from(*n), *k, true, false, false, Table::new());
            self.apply_exchange_policy(&mut x);
            exchanges.insert(Arc::from(*n), x);
        }
        for x in defs.exchanges {
            let Some(kind) = ExchangeKind::parse(&x.kind) else {
                return Err(CoreError::Corrupt(format!("exchange type '{}'", x.kind)));
            };
            let name: Arc<str> = Arc::from(x.name.as_str());
            if kind == ExchangeKind::DelayedMessage {
                self.open_delayed(&name, true)?;
            }
            let mut ex = Exchange::new(
                name.clone(),
                kind,
                true,
                x.auto_delete,
                x.internal,
                x.arguments,
            );
            self.apply_exchange_policy(&mut ex);
            exchanges.insert(name, ex);
        }
        for q in defs.queues {
            let dir = self.dir.join("queues").join(&q.storage);
            // One queue whose stored data is damaged (a record that does
            // not decode, a bad checksum in a sealed segment) must not
            // keep the node down: it is kept as `crashed`
            // (`vhost/crashed.rs`).
            let opened = if StreamArgs::is_stream(&q.spec.arguments) {
                let args = self.stream_effective_args(&q.spec);
                let (spec, vhost) = (q.spec.clone(), self.name.clone());
                Stream::open_effective(spec, &args, vhost, dir, self.env.clone())
                    .map(QueueRef::Stream)
            } else {
                let args = self.queue_effective_args(&q.spec);
                let (spec, vhost) = (q.spec.clone(), self.name.clone());
                Queue::open_effective(spec, &args, vhost, dir, self.env.clone())
                    .map(QueueRef::Queue)
            };
            match opened {
                Ok(r) => self.registry.insert(r, q.storage),
                Err(e) if e.is_corruption() => self.note_crashed(q.spec, q.storage, &e),
                // A failing disk (I/O error, failed fsync) is the node's
                // problem, not one queue's: the open fails.
                Err(e) => return Err(e),
            }
        }
        for b in defs.bindings {
            if let Some(x) = exchanges.get_mut(b.source.as_str()) {
                x.bind(Binding {
                    destination: b.destination,
                    routing_key: b.routing_key,
                    arguments: b.arguments,
                });
            }
        }
        Ok(())
    }

    /// Name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Sets the `max-queues` limit (None or negative: no limit).
    pub fn set_max_queues(&self, limit: Option<i64>) {
        self.max_queues
            .store(limit.unwrap_or(-1), std::sync::atomic::Ordering::Release);
    }

    /// queue.declare's check of `max-queues` for a new queue (queues and
    /// streams count, as in RabbitMQ): 406 with RabbitMQ's text.
    fn check_queue_limit(&self, queue: &str) -> Result<()> {
        let limit = self.max_queues.load(std::sync::atomic::Ordering::Acquire);
        let count = self.registry.len();
        match ferry_auth::limits::is_reached(Some(limit), count) {
            Some(l) => Err(precondition(ferry_auth::limits::queues_text(
                queue, &self.name, l,
            ))),
            None => Ok(()),
        }
    }

    /// Writes the durable definitions. Called with `defs_lock` held.
    fn save(&self) -> Result<()> {
        self.check_alive()?;
        let exchanges = self.exchanges.read();
        let names = self.registry.read();
        let mut defs = Definitions {
            version: 1,
            ..Definitions::default()
        };
        let durable_queue = |n: &str| {
            names
                .get(n)
                .is_some_and(|s| s.queue().is_none_or(|q| q.spec().durable))
        };
        let durable_exchange = |n: &str| exchanges.get(n).is_some_and(|x| x.durable);
        for (name, x) in exchanges.iter() {
            if x.durable && !STANDARD_EXCHANGES.iter().any(|(n, _)| *n == &**name) {
                defs.exchanges.push(ExchangeDef {
                    name: name.to_string(),
                    kind: x.kind.as_str().to_string(),
                    auto_delete: x.auto_delete,
                    internal: x.internal,
                    arguments: x.arguments.clone(),
                });
            }
            if !x.durable {
                continue;
            }
            for b in x.bindings_to_store() {
                let ok = match &b.destination {
                    Destination::Queue(q) => durable_queue(q),
                    Destination::Exchange(e) => durable_exchange(e),
                };
                if ok {
                    defs.bindings.push(BindingDef {
                        source: name.to_string(),
                        destination: b.destination.clone(),
                        routing_key: b.routing_key.clone(),
                        arguments: b.arguments.clone(),
                    });
                }
            }
        }
        for slot in names.values() {
            let spec = match &slot.entry {
                Entry::Open(r) => r.spec(),
                Entry::Crashed(c) => &c.spec,
            };
            if spec.durable && spec.exclusive_owner.is_none() {
                defs.queues.push(QueueDef {
                    spec: spec.clone(),
                    storage: slot.storage.clone(),
                });
            }
        }
        defs.exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        defs.queues.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        definitions::save(self.env.io.as_ref(), &self.dir, &defs)
    }

    /// Every queue (for shutdown syncs and listings).
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.registry.queues()
    }

    /// A copy of every exchange with its bindings (management listings).
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges.read().values().cloned().collect()
    }

    /// Whether an exchange exists.
    pub fn has_exchange(&self, name: &str) -> bool {
        self.exchanges.read().contains_key(name)
    }
}

//! A virtual host: its exchanges, queues and bindings, and the operations
//! AMQP's exchange.* / queue.* methods map to, with RabbitMQ's checks and
//! error texts. Durable changes are written to the vhost's definitions file
//! before the operation returns.
//!
//! Lock order: `defs_lock` → `exchanges` → `queues` → a queue's lock.
//!
//! Dead letters (`DeadLetterRouter`) arrive from queues that have released
//! their lock; they are routed like publishes (exchanges, then queues, both
//! released before any queue is called), and what their delivery pushes
//! out of a full queue joins the same work list instead of recursing.

use crate::definitions::{self, BindingDef, Definitions, ExchangeDef, QueueDef};
use crate::error::{CoreError, ErrorKind, Result};
use crate::exchange::{
    describe_bare, describe_typed, equivalent_arg, route_all, route_all_keys, Binding, Destination,
    Exchange, ExchangeKind,
};
use crate::message::Message;
use crate::queue::dead_letter::{self, CycleLog, Death};
use crate::queue::{
    DeadLetter, DeadLetterRouter, HeaderEdit, PropertyCodec, Queue, QueueArgs, QueueEnv, QueueSpec,
    Reason,
};
use crate::source::Source;
use crate::stream::{Stream, StreamArgs};
use amq_protocol_types::FieldTable;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Weak};

mod delayed;
mod equivalence;
mod lifecycle;
mod streams;

use equivalence::check_queue_equivalent;

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
    pub arguments: FieldTable,
}

/// A virtual host.
#[derive(Debug)]
pub struct VHost {
    name: Arc<str>,
    dir: PathBuf,
    transient_dir: PathBuf,
    env: QueueEnv,
    exchanges: RwLock<HashMap<Arc<str>, Exchange>>,
    queues: RwLock<HashMap<Arc<str>, Arc<Queue>>>,
    /// Streams (`vhost/streams.rs`); lock order: `queues` → `streams`.
    streams: RwLock<HashMap<Arc<str>, Arc<Stream>>>,
    storage: Mutex<HashMap<Arc<str>, String>>,
    defs_lock: Mutex<()>,
    cycles: CycleLog,
    /// Set by `delete_all`: a connection still holding this vhost must not
    /// write its directory back into existence.
    deleted: std::sync::atomic::AtomicBool,
    /// The hidden queues of `x-delayed-message` exchanges.
    delayed: crate::exchange::DelayedStore,
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
                queues: RwLock::new(HashMap::new()),
                streams: RwLock::new(HashMap::new()),
                storage: Mutex::new(HashMap::new()),
                defs_lock: Mutex::new(()),
                cycles: CycleLog::default(),
                deleted: std::sync::atomic::AtomicBool::new(false),
                delayed: Default::default(),
            }
        });
        vh.load()?;
        Ok(vh)
    }

    fn load(&self) -> Result<()> {
        let defs = definitions::load(self.env.io.as_ref(), &self.dir)?;
        let mut exchanges = self.exchanges.write();
        for (n, k) in STANDARD_EXCHANGES {
            let x = Exchange::new(Arc::from(*n), *k, true, false, false, FieldTable::default());
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
            let ex = Exchange::new(
                name.clone(),
                kind,
                true,
                x.auto_delete,
                x.internal,
                x.arguments,
            );
            exchanges.insert(name, ex);
        }
        let mut queues = self.queues.write();
        let mut storage = self.storage.lock();
        for q in defs.queues {
            let dir = self.dir.join("queues").join(&q.storage);
            if self.open_stream(&q.spec, &dir)?.is_some() {
                storage.insert(q.spec.name.clone(), q.storage);
                continue;
            }
            let queue = Queue::open(q.spec.clone(), self.name.clone(), dir, self.env.clone())?;
            storage.insert(q.spec.name.clone(), q.storage);
            queues.insert(q.spec.name.clone(), queue);
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

    /// Writes the durable definitions. Called with `defs_lock` held.
    fn save(&self) -> Result<()> {
        self.check_alive()?;
        let exchanges = self.exchanges.read();
        let queues = self.queues.read();
        let storage = self.storage.lock();
        let mut defs = Definitions {
            version: 1,
            ..Definitions::default()
        };
        let streams = self.streams.read();
        let durable_queue =
            |n: &str| queues.get(n).is_some_and(|q| q.spec().durable) || streams.contains_key(n);
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
            for b in x.bindings() {
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
        let specs = queues.iter().map(|(n, q)| (n, q.spec()));
        for (name, spec) in specs.chain(streams.iter().map(|(n, s)| (n, s.spec()))) {
            if spec.durable && spec.exclusive_owner.is_none() {
                if let Some(s) = storage.get(name) {
                    defs.queues.push(QueueDef {
                        spec: spec.clone(),
                        storage: s.clone(),
                    });
                }
            }
        }
        defs.exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        defs.queues.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        definitions::save(self.env.io.as_ref(), &self.dir, &defs)
    }

    // ----- exchanges -------------------------------------------------------

    /// exchange.declare.
    pub fn declare_exchange(
        &self,
        name: &str,
        kind: &str,
        passive: bool,
        a: ExchangeArgs,
    ) -> Result<()> {
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        if passive {
            return match self.exchanges.read().contains_key(name) {
                true => Ok(()),
                false => Err(CoreError::not_found("exchange", name, &self.name)),
            };
        }
        let Some(kind) = ExchangeKind::parse(kind) else {
            return Err(CoreError::request(
                ErrorKind::CommandInvalid,
                format!("unknown exchange type '{kind}'"),
            ));
        };
        if kind == ExchangeKind::DelayedMessage {
            crate::exchange::delayed::delayed_type(&a.arguments)
                .map_err(|t| precondition(t.to_string()))?;
        }
        let _d = self.defs_lock.lock();
        self.check_alive()?;
        {
            let mut exchanges = self.exchanges.write();
            if let Some(x) = exchanges.get(name) {
                return x
                    .check_equivalent(
                        kind,
                        a.durable,
                        a.auto_delete,
                        a.internal,
                        &a.arguments,
                        &self.name,
                    )
                    .map_err(precondition);
            }
            if name.starts_with("amq.") {
                return Err(refused(format!(
                    "exchange name '{name}' contains reserved prefix 'amq.*'"
                )));
            }
            let n: Arc<str> = Arc::from(name);
            if kind == ExchangeKind::DelayedMessage {
                self.open_delayed(&n, a.durable)?;
            }
            let x = Exchange::new(
                n.clone(),
                kind,
                a.durable,
                a.auto_delete,
                a.internal,
                a.arguments,
            );
            exchanges.insert(n, x);
        }
        if a.durable {
            self.save()?;
        }
        Ok(())
    }

    /// exchange.delete.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<()> {
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        if STANDARD_EXCHANGES.iter().any(|(n, _)| *n == name) {
            return Err(refused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let _d = self.defs_lock.lock();
        let durable = {
            let mut exchanges = self.exchanges.write();
            let Some(x) = exchanges.get(name) else {
                return Ok(());
            };
            let dest = Destination::Exchange(Arc::from(name));
            // As in RabbitMQ, only bindings with this exchange as source count.
            if if_unused && x.has_bindings() {
                return Err(precondition(format!(
                    "exchange '{name}' in vhost '{}' in use",
                    self.name
                )));
            }
            let durable = x.durable;
            exchanges.remove(name);
            remove_destination(&mut exchanges, &dest);
            durable
        };
        self.drop_orphan_delayed();
        if durable {
            self.save()?;
        }
        Ok(())
    }

    fn check_bindable_source(
        &self,
        exchanges: &HashMap<Arc<str>, Exchange>,
        source: &str,
    ) -> Result<()> {
        if source.is_empty() {
            return Err(default_exchange_refused());
        }
        if !exchanges.contains_key(source) {
            return Err(CoreError::not_found("exchange", source, &self.name));
        }
        Ok(())
    }

    /// queue.bind / exchange.bind (`bind`=true) and their unbinds.
    pub fn binding(
        &self,
        bind: bool,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: FieldTable,
        conn: u64,
    ) -> Result<()> {
        let _d = self.defs_lock.lock();
        let durable = {
            let mut exchanges = self.exchanges.write();
            self.check_bindable_source(&exchanges, source)?;
            let dest_durable = match &destination {
                Destination::Queue(q) if self.streams.read().contains_key(&**q) => true,
                Destination::Queue(q) => {
                    let queues = self.queues.read();
                    let queue = queues
                        .get(q)
                        .ok_or_else(|| CoreError::not_found("queue", q, &self.name))?;
                    self.check_exclusive(queue, conn)?;
                    queue.spec().durable
                }
                Destination::Exchange(e) => {
                    if e.is_empty() {
                        return Err(default_exchange_refused());
                    }
                    exchanges
                        .get(&**e)
                        .ok_or_else(|| CoreError::not_found("exchange", e, &self.name))?
                        .durable
                }
            };
            let Some(x) = exchanges.get_mut(source) else {
                return Err(CoreError::not_found("exchange", source, &self.name));
            };
            let b = Binding {
                destination,
                routing_key: routing_key.to_string(),
                arguments,
            };
            if bind {
                x.validate_binding(&b)
                    .map_err(|e| precondition(e.to_string()))?;
            }
            let changed = if bind { x.bind(b) } else { x.unbind(&b) };
            let durable = changed && x.durable && dest_durable;
            let auto_deleted = !bind && changed && x.auto_delete && !x.has_bindings();
            let x_durable = x.durable;
            if auto_deleted {
                exchanges.remove(source);
                remove_destination(&mut exchanges, &Destination::Exchange(Arc::from(source)));
            }
            durable || (auto_deleted && x_durable)
        };
        self.drop_orphan_delayed();
        self.save_if(durable)
    }

    fn save_if(&self, durable: bool) -> Result<()> {
        if durable {
            self.save()?;
        }
        Ok(())
    }

    // ----- queues ----------------------------------------------------------

    fn locked(&self, q: &Queue) -> CoreError {
        CoreError::request(
            ErrorKind::ResourceLocked,
            format!(
                "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                q.name(),
                self.name
            ),
        )
    }

    fn check_exclusive(&self, q: &Queue, conn: u64) -> Result<()> {
        match q.spec().exclusive_owner {
            Some(owner) if owner != conn => Err(self.locked(q)),
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
        if passive {
            if let Some(s) = self.stream_named(&spec.name) {
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
            spec.name = Arc::from(crate::names::server_named_queue().as_str());
        }
        let _d = self.defs_lock.lock();
        self.check_alive()?;
        if let Some(s) = self.stream_named(&spec.name) {
            let (m, c) = self.redeclare_stream(&s, &spec)?;
            return Ok((s.name().clone(), m, c));
        }
        if let Some(q) = self.queues.read().get(&spec.name).cloned() {
            // RabbitMQ's "strict" check: the declared exclusivity must match
            // exactly, even for the owner (405, not 406).
            if q.spec().exclusive_owner != spec.exclusive_owner {
                return Err(self.locked(&q));
            }
            check_queue_equivalent(q.spec(), &spec, &self.name)?;
            q.touch();
            let (m, c) = q.counts();
            return Ok((q.name().clone(), m, c));
        }
        if spec.name.starts_with("amq.") && !generated {
            return Err(refused(format!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                spec.name
            )));
        }
        if StreamArgs::is_stream(&spec.arguments) {
            return self.create_stream(spec);
        }
        QueueArgs::validate_declaration(
            &spec.arguments,
            &spec.name,
            &self.name,
            spec.durable,
            spec.exclusive_owner.is_some(),
            spec.auto_delete,
        )
        .map_err(precondition)?;
        // An exclusive queue is deleted with its connection, so its messages
        // never outlive the process: keep it out of the durable storage.
        let persisted = spec.durable && spec.exclusive_owner.is_none();
        let storage = storage_name();
        let dir = if persisted {
            self.dir.join("queues").join(&storage)
        } else {
            self.transient_dir.join(&storage)
        };
        let q = Queue::open(spec.clone(), self.name.clone(), dir, self.env.clone())?;
        let name = spec.name.clone();
        self.storage.lock().insert(name.clone(), storage);
        self.queues.write().insert(name.clone(), q.clone());
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
        let Some(q) = self.queues.read().get(name).cloned() else {
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
        self.queues.write().remove(&name);
        self.storage.lock().remove(&name);
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
        let current = self.queues.read().get(q.name()).cloned();
        if current.is_some_and(|c| Arc::ptr_eq(&c, q)) {
            self.remove_queue_locked(q)?;
        }
        Ok(())
    }

    /// Deletes every exclusive queue of a closed connection.
    pub fn connection_closed(&self, conn: u64) {
        let owned: Vec<Arc<Queue>> = self
            .queues
            .read()
            .values()
            .filter(|q| q.spec().exclusive_owner == Some(conn))
            .cloned()
            .collect();
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

    // ----- publishing ------------------------------------------------------

    /// Routes a message published to `exchange` and returns the queues it
    /// goes to (deduplicated). `headers` are the parsed message headers,
    /// needed only by headers exchanges.
    pub fn route(
        &self,
        exchange: &str,
        msg: &Message,
        headers: Option<&FieldTable>,
        out: &mut Vec<Arc<dyn Source>>,
    ) -> Result<()> {
        if exchange.is_empty() {
            if let Some(q) = self.queues.read().get(&*msg.routing_key) {
                out.push(q.clone());
            } else if let Some(s) = self.streams.read().get(&*msg.routing_key) {
                out.push(s.clone());
            }
            return Ok(());
        }
        // The documented order (exchanges, then queues): a reader holding
        // `queues` while waiting for `exchanges` could deadlock with
        // `binding` (exchanges → queues) once a writer queues up on either.
        let exchanges = self.exchanges.read();
        let queues = self.queues.read();
        let Some(x) = exchanges.get(exchange) else {
            return Err(CoreError::not_found("exchange", exchange, &self.name));
        };
        if x.internal {
            return Err(refused(format!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                self.name
            )));
        }
        if x.kind == ExchangeKind::DelayedMessage {
            if let Some(q) = self.hold_target(exchange, headers) {
                out.push(q);
                return Ok(());
            }
        }
        let mut names: Vec<Arc<str>> = Vec::new();
        route_all(
            |n| exchanges.get(n),
            exchange,
            &msg.routing_key,
            headers,
            &mut names,
        );
        let streams = self.streams.read();
        out.extend(names.iter().filter_map(|n| -> Option<Arc<dyn Source>> {
            match queues.get(n) {
                Some(q) => Some(q.clone()),
                None => Some(streams.get(n)?.clone()),
            }
        }));
        Ok(())
    }

    /// The queues a dead letter published to `exchange` with `keys` reaches;
    /// None if the exchange does not exist (the letter is then dropped, as
    /// in RabbitMQ). Internal exchanges may be dead-letter exchanges.
    fn route_dead_letter(
        &self,
        exchange: &str,
        keys: &[&str],
        headers: Option<&FieldTable>,
    ) -> Option<Vec<Arc<Queue>>> {
        let exchanges = self.exchanges.read();
        let queues = self.queues.read();
        let mut out: Vec<Arc<Queue>> = Vec::new();
        if exchange.is_empty() {
            for k in keys {
                if let Some(q) = queues.get(*k) {
                    if !out.iter().any(|o| Arc::ptr_eq(o, q)) {
                        out.push(q.clone());
                    }
                }
            }
            return Some(out);
        }
        exchanges.get(exchange)?;
        let mut names: Vec<Arc<str>> = Vec::new();
        route_all_keys(|n| exchanges.get(n), exchange, keys, headers, &mut names);
        out.extend(names.iter().filter_map(|n| queues.get(n).cloned()));
        Some(out)
    }

    /// Republishes one dead letter (RabbitMQ's `rabbit_dead_letter:publish`):
    /// the original properties with x-death recorded and `expiration`
    /// removed, to the dead-letter exchange with the dead-letter routing
    /// key (dropping `CC`) or the message's own keys; queues the message
    /// already died in without a rejection since are skipped (cycles).
    fn dead_letter_one(
        &self,
        codec: &dyn PropertyCodec,
        dl: &DeadLetter,
        work: &mut VecDeque<DeadLetter>,
    ) {
        let old = match codec.read(&dl.message.properties) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(queue = %dl.queue, error = %e, "dead letter with unreadable properties dropped");
                return;
            }
        };
        let mut headers = old
            .headers
            .as_ref()
            .map(|h| h.inner().clone())
            .unwrap_or_default();
        // The publish key, then CC and BCC: the message's routing keys.
        let own_keys: Vec<String> = std::iter::once(dl.message.routing_key.to_string())
            .chain(
                dead_letter::header_routes(&headers)
                    .into_iter()
                    .map(String::from),
            )
            .collect();
        {
            let keys: Vec<&str> = own_keys.iter().map(String::as_str).collect();
            dead_letter::add_death(
                &mut headers,
                &Death {
                    reason: dl.reason,
                    queue: &dl.queue,
                    time: self.env.clock.now_ms() / 1000,
                    exchange: &dl.message.exchange,
                    routing_keys: &keys,
                    original_expiration: old.expiration.as_deref(),
                },
            );
        }
        let route_keys = match &dl.routing_key {
            Some(rk) => {
                headers.remove("CC");
                vec![rk.to_string()]
            }
            None => own_keys,
        };
        let table = FieldTable::from(headers);
        let edit = HeaderEdit {
            headers: Some(table.clone()),
            expiration: None,
        };
        let properties = match codec.write(&dl.message.properties, &edit) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(queue = %dl.queue, error = %e, "dead letter not re-encodable, dropped");
                return;
            }
        };
        let msg = Arc::new(Message {
            exchange: dl.exchange.clone(),
            routing_key: Arc::from(route_keys[0].as_str()),
            properties,
            body: dl.message.body.clone(),
            persistent: dl.message.persistent,
            expiration_ms: None,
        });
        let keys: Vec<&str> = route_keys.iter().map(String::as_str).collect();
        let Some(targets) = self.route_dead_letter(&dl.exchange, &keys, Some(&table)) else {
            tracing::debug!(
                queue = %dl.queue, exchange = %dl.exchange,
                "dead-letter exchange does not exist: message dropped"
            );
            return;
        };
        let deaths = dead_letter::deaths(table.inner());
        for q in targets {
            if dl.reason != Reason::Rejected && dead_letter::is_cycle(q.name(), deaths) {
                self.cycles.report(q.name(), deaths);
                continue;
            }
            let mut more = Vec::new();
            if let Err(e) = q.publish_collect(&msg, None, &mut more) {
                tracing::debug!(queue = %q.name(), error = %e, "dead letter not stored");
            }
            work.extend(more);
        }
    }

    /// Every queue (for shutdown syncs and listings).
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.read().values().cloned().collect()
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

impl DeadLetterRouter for VHost {
    fn dead_letter(&self, letters: Vec<DeadLetter>) {
        let Some(codec) = self.env.codec.get().cloned() else {
            tracing::warn!(
                count = letters.len(),
                "no property codec installed: dead letters dropped"
            );
            return;
        };
        let mut work: VecDeque<DeadLetter> = letters.into();
        // Each step either ends or stores a message that pushes out an
        // older one (reason maxlen, so cycles are cut): the list drains.
        // The bound only guards against a bug turning that into a hang.
        let mut steps = 0u64;
        while let Some(dl) = work.pop_front() {
            steps += 1;
            if steps > 10_000_000 {
                tracing::error!(
                    left = work.len() + 1,
                    "dead-letter loop did not end; dropping the rest"
                );
                return;
            }
            self.dead_letter_one(codec.as_ref(), &dl, &mut work);
        }
    }
}

fn remove_destination(exchanges: &mut HashMap<Arc<str>, Exchange>, dest: &Destination) {
    let mut emptied: Vec<Arc<str>> = Vec::new();
    for (name, x) in exchanges.iter_mut() {
        if x.unbind_destination(dest) > 0 && x.auto_delete && !x.has_bindings() {
            emptied.push(name.clone());
        }
    }
    for n in emptied {
        exchanges.remove(&n);
        remove_destination(exchanges, &Destination::Exchange(n));
    }
}

//! The vhost's exchanges and their bindings: exchange.declare /
//! exchange.delete, queue.bind / exchange.bind and their unbinds with
//! RabbitMQ's checks and texts, auto-delete cascades (removing a
//! destination can empty an auto-delete exchange, which is then removed as
//! a destination in turn), and resolving a publish, a dead letter or a
//! released delayed message through `ferry-route` to the queues and
//! streams of the registry (`routing.rs` has the resolution itself).
//!
//! Owns the `exchanges` lock. Lock order: the vhost's `defs_lock` (its
//! callers hold it for every change) → `exchanges` → the registry → the
//! delayed store's map. Routing read-locks `exchanges`, then the registry,
//! for a whole publish; the default exchange takes only the registry.
//! Must not persist anything: a change returns whether the definitions
//! file must be rewritten, and the vhost writes it before it returns.

use super::delayed_store::DelayedStore;
use super::policies::PolicyCell;
use super::registry::{Names, Registry, Slot};
use super::routing::{dead_letter_targets, route_through, sender_selected};
use super::{default_exchange_refused, precondition, refused, ExchangeArgs};
use crate::definitions::{BindingDef, ExchangeDef};
use ferry_model::message::Message;
use ferry_model::Table;
use ferry_queue::error::{CoreError, ErrorKind, Result};
use ferry_queue::queue::Queue;
use ferry_queue::source::Source;
use ferry_route::{sender_selected_keys, Binding, Destination, Exchange, ExchangeKind};
use parking_lot::{RwLock, RwLockReadGuard};
use std::collections::HashMap;
use std::sync::Arc;

/// The predeclared exchanges every vhost has.
const STANDARD_EXCHANGES: &[(&str, ExchangeKind)] = &[
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

/// The map from name to exchange (with its bindings).
pub(super) type Exchanges = HashMap<Arc<str>, Exchange>;

/// A vhost's exchanges (see the module doc for the lock order).
#[derive(Debug)]
pub(super) struct Topology {
    /// The vhost's name (error texts).
    vhost: Arc<str>,
    exchanges: RwLock<Exchanges>,
}

impl Topology {
    /// No exchanges yet (`load` adds the standard ones).
    pub(super) fn new(vhost: Arc<str>) -> Self {
        Topology {
            vhost,
            exchanges: RwLock::new(HashMap::new()),
        }
    }

    /// Read access (routing and the definitions file; take the registry
    /// after it, never before).
    pub(super) fn read(&self) -> RwLockReadGuard<'_, Exchanges> {
        self.exchanges.read()
    }

    /// At open: the standard exchanges, then the stored ones (a delayed
    /// exchange's hidden queue is opened with it).
    pub(super) fn load(
        &self,
        stored: Vec<ExchangeDef>,
        policies: &PolicyCell,
        delayed: &DelayedStore,
    ) -> Result<()> {
        let mut exchanges = self.exchanges.write();
        for (n, k) in STANDARD_EXCHANGES {
            let mut x = Exchange::new(Arc::from(*n), *k, true, false, false, Table::new());
            policies.apply_to_exchange(&mut x);
            exchanges.insert(Arc::from(*n), x);
        }
        for x in stored {
            let Some(kind) = ExchangeKind::parse(&x.kind) else {
                return Err(CoreError::Corrupt(format!("exchange type '{}'", x.kind)));
            };
            let name: Arc<str> = Arc::from(x.name.as_str());
            if kind == ExchangeKind::DelayedMessage {
                delayed.open(&name, true)?;
            }
            let mut ex = Exchange::new(
                name.clone(),
                kind,
                true,
                x.auto_delete,
                x.internal,
                x.arguments,
            );
            policies.apply_to_exchange(&mut ex);
            exchanges.insert(name, ex);
        }
        Ok(())
    }

    /// At open, after the queues: the stored bindings (those whose source
    /// is gone are dropped).
    pub(super) fn load_bindings(&self, stored: Vec<BindingDef>) {
        let mut exchanges = self.exchanges.write();
        for b in stored {
            if let Some(x) = exchanges.get_mut(b.source.as_str()) {
                x.bind(Binding {
                    destination: b.destination,
                    routing_key: b.routing_key,
                    arguments: b.arguments,
                });
            }
        }
    }

    /// The durable exchanges (sorted by name) and the bindings between
    /// durable ends, for the definitions file; `names` is the registry,
    /// read-locked by the caller after `exchanges`.
    pub(super) fn defs(
        exchanges: &Exchanges,
        names: &Names,
    ) -> (Vec<ExchangeDef>, Vec<BindingDef>) {
        let (mut out, mut bindings) = (Vec::new(), Vec::new());
        let durable_queue = |n: &str| {
            names
                .get(n)
                .is_some_and(|s| s.queue().is_none_or(|q| q.spec().durable))
        };
        let durable_exchange = |n: &str| exchanges.get(n).is_some_and(|x| x.durable);
        for (name, x) in exchanges.iter() {
            if x.durable && !STANDARD_EXCHANGES.iter().any(|(n, _)| *n == &**name) {
                out.push(ExchangeDef {
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
                    bindings.push(BindingDef {
                        source: name.to_string(),
                        destination: b.destination.clone(),
                        routing_key: b.routing_key.clone(),
                        arguments: b.arguments.clone(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        (out, bindings)
    }

    /// A copy of every exchange with its bindings (management listings).
    pub(super) fn list(&self) -> Vec<Exchange> {
        self.exchanges.read().values().cloned().collect()
    }

    /// Whether an exchange exists.
    pub(super) fn has(&self, name: &str) -> bool {
        self.exchanges.read().contains_key(name)
    }

    /// Whether exchange `name` is durable (None: no such exchange).
    pub(super) fn durable(&self, name: &str) -> Option<bool> {
        self.exchanges.read().get(name).map(|x| x.durable)
    }

    /// Whether `name` is a delayed exchange.
    pub(super) fn is_delayed(&self, name: &str) -> bool {
        self.exchanges
            .read()
            .get(name)
            .is_some_and(|x| x.kind == ExchangeKind::DelayedMessage)
    }

    /// Sets every exchange's policy-given alternate exchange.
    pub(super) fn apply_policies(&self, policies: &PolicyCell) {
        let mut exchanges = self.exchanges.write();
        for x in exchanges.values_mut() {
            policies.apply_to_exchange(x);
        }
    }

    /// Forgets every exchange (the vhost is deleted).
    pub(super) fn clear(&self) {
        self.exchanges.write().clear();
    }

    /// exchange.declare's checks before any lock: the name, and a passive
    /// declare answered. Returns the kind to declare, None if passive.
    pub(super) fn check_declare(
        &self,
        name: &str,
        kind: &str,
        passive: bool,
        a: &ExchangeArgs,
    ) -> Result<Option<ExchangeKind>> {
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        ferry_queue::limits::check_short("exchange", name)?;
        if passive {
            return match self.exchanges.read().contains_key(name) {
                true => Ok(None),
                false => Err(CoreError::not_found("exchange", name, &self.vhost)),
            };
        }
        let Some(kind) = ExchangeKind::parse(kind) else {
            return Err(CoreError::request(
                ErrorKind::CommandInvalid,
                format!("unknown exchange type '{kind}'"),
            ));
        };
        if kind == ExchangeKind::DelayedMessage {
            ferry_route::delayed::delayed_type(&a.arguments)
                .map_err(|t| precondition(t.to_string()))?;
        }
        Ok(Some(kind))
    }

    /// exchange.declare after `check_declare` (the caller holds
    /// `defs_lock`): checks an existing exchange's equivalence or creates
    /// it. Returns whether it was created.
    pub(super) fn declare(
        &self,
        name: &str,
        kind: ExchangeKind,
        a: ExchangeArgs,
        policies: &PolicyCell,
        delayed: &DelayedStore,
    ) -> Result<bool> {
        let mut exchanges = self.exchanges.write();
        if let Some(x) = exchanges.get(name) {
            return x
                .check_equivalent(
                    kind,
                    a.durable,
                    a.auto_delete,
                    a.internal,
                    &a.arguments,
                    &self.vhost,
                )
                .map_err(precondition)
                .map(|()| false);
        }
        if name.starts_with("amq.") {
            return Err(refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        if ferry_route::delayed::routing_kind(kind, &a.arguments) == ExchangeKind::ConsistentHash {
            consistent_hash_args(&a.arguments)?;
        }
        let n: Arc<str> = Arc::from(name);
        if kind == ExchangeKind::DelayedMessage {
            delayed.open(&n, a.durable)?;
        }
        let mut x = Exchange::new(
            n.clone(),
            kind,
            a.durable,
            a.auto_delete,
            a.internal,
            a.arguments,
        );
        policies.apply_to_exchange(&mut x);
        exchanges.insert(n, x);
        Ok(true)
    }

    /// exchange.delete's checks before any lock: neither the default nor
    /// a standard exchange.
    pub(super) fn check_delete(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        if STANDARD_EXCHANGES.iter().any(|(n, _)| *n == name) {
            return Err(refused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.vhost
            )));
        }
        Ok(())
    }

    /// exchange.delete after `check_delete` (the caller holds
    /// `defs_lock`). Returns whether it was durable, None if there is none.
    pub(super) fn delete(&self, name: &str, if_unused: bool) -> Result<Option<bool>> {
        let mut exchanges = self.exchanges.write();
        let Some(x) = exchanges.get(name) else {
            return Ok(None);
        };
        let dest = Destination::Exchange(Arc::from(name));
        // As in RabbitMQ, only bindings with this exchange as source count.
        if if_unused && x.has_bindings() {
            return Err(precondition(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.vhost
            )));
        }
        let durable = x.durable;
        exchanges.remove(name);
        remove_destination(&mut exchanges, &dest);
        Ok(Some(durable))
    }

    /// queue.bind / exchange.bind (`bind`=true) and their unbinds (the
    /// caller holds `defs_lock`). `queue_durable` answers for a queue
    /// destination (404 / 405 as it finds it), called under `exchanges`.
    /// Returns whether the definitions file must be rewritten.
    pub(super) fn binding(
        &self,
        bind: bool,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: Table,
        queue_durable: impl FnOnce(&str) -> Result<bool>,
    ) -> Result<bool> {
        let mut exchanges = self.exchanges.write();
        self.check_bindable_source(&exchanges, source)?;
        let dest_durable = match &destination {
            Destination::Queue(q) => queue_durable(q)?,
            Destination::Exchange(e) => {
                if e.is_empty() {
                    return Err(default_exchange_refused());
                }
                exchanges
                    .get(&**e)
                    .ok_or_else(|| CoreError::not_found("exchange", e, &self.vhost))?
                    .durable
            }
        };
        let Some(x) = exchanges.get_mut(source) else {
            return Err(CoreError::not_found("exchange", source, &self.vhost));
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
        Ok(durable || (auto_deleted && x_durable))
    }

    fn check_bindable_source(&self, exchanges: &Exchanges, source: &str) -> Result<()> {
        if source.is_empty() {
            return Err(default_exchange_refused());
        }
        if !exchanges.contains_key(source) {
            return Err(CoreError::not_found("exchange", source, &self.vhost));
        }
        Ok(())
    }

    /// Removes every binding to `dest`, with the auto-delete cascade.
    pub(super) fn remove_destination(&self, dest: &Destination) {
        let mut exchanges = self.exchanges.write();
        remove_destination(&mut exchanges, dest);
    }

    /// Routes a message published to `exchange` (see `VHost::route`).
    pub(super) fn route(
        &self,
        registry: &Registry,
        delayed: &DelayedStore,
        exchange: &str,
        msg: &Message,
        headers: Option<&Table>,
        out: &mut Vec<Arc<dyn Source>>,
    ) -> Result<()> {
        ferry_queue::queue::record::check_fields(msg)?;
        if exchange.is_empty() {
            let extra = sender_selected(headers)?;
            let names = registry.read();
            // Distinct keys name distinct queues: past a few keys (a CC
            // header may hold thousands) repeats are skipped by key in
            // O(1) instead of by scanning what was found.
            let mut seen = (extra.len() > 16).then(ferry_route::NameSet::default);
            for key in std::iter::once(&*msg.routing_key).chain(extra) {
                if let Some(seen) = &mut seen {
                    if !seen.first(key) {
                        continue;
                    }
                }
                let Some(found) = names.get(key).and_then(Slot::source) else {
                    continue;
                };
                if seen.is_some() || !out.iter().any(|o| Arc::ptr_eq(o, &found)) {
                    out.push(found);
                }
            }
            return Ok(());
        }
        // The documented order (exchanges, then the registry): a reader
        // holding `registry` while waiting for `exchanges` could deadlock
        // with `binding` (exchanges → registry) once a writer queues up on
        // either.
        let exchanges = self.exchanges.read();
        let names = registry.read();
        let Some(x) = exchanges.get(exchange) else {
            return Err(CoreError::not_found("exchange", exchange, &self.vhost));
        };
        if x.internal {
            return Err(refused(format!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                self.vhost
            )));
        }
        let extra = sender_selected(headers)?;
        if x.kind == ExchangeKind::DelayedMessage {
            if let Some(q) = delayed.hold_target(exchange, headers) {
                out.push(q);
                return Ok(());
            }
        }
        let key = [&*msg.routing_key];
        let all: Vec<&str>;
        // No allocation for the common publish without CC / BCC.
        let keys: &[&str] = if extra.is_empty() {
            &key
        } else {
            all = key.into_iter().chain(extra).collect();
            &all
        };
        route_through(
            &exchanges,
            &names,
            delayed,
            exchange,
            (keys, &msg.properties),
            headers,
            out,
        );
        Ok(())
    }

    /// Where a held message of delayed exchange `exchange` goes now that
    /// it is due (none if the exchange is gone).
    pub(super) fn route_released(
        &self,
        registry: &Registry,
        delayed: &DelayedStore,
        exchange: &str,
        msg: &Message,
        headers: Option<&Table>,
    ) -> Vec<Arc<dyn Source>> {
        let exchanges = self.exchanges.read();
        let names = registry.read();
        let mut out = Vec::new();
        if exchanges.contains_key(exchange) {
            // Its publish key, CC keys (a stored header is an
            // array, or the publish failed) and the BCC keys kept
            // with it: RabbitMQ's delayed-message plugin stores the
            // whole message record (its `routing_keys` hold all
            // three) and routes it by them on release.
            let mut keys = vec![&*msg.routing_key];
            keys.extend(sender_selected_keys(headers).unwrap_or_default());
            keys.extend(msg.bcc.iter().map(|k| &**k));
            let routed = (keys.as_slice(), &msg.properties);
            route_through(
                &exchanges, &names, delayed, exchange, routed, headers, &mut out,
            );
        }
        out
    }

    /// The queues a dead letter published to `exchange` with `keys`
    /// reaches; None if the exchange does not exist.
    pub(super) fn dead_letter_targets(
        &self,
        registry: &Registry,
        exchange: &str,
        keys: &[&str],
        headers: Option<&Table>,
        properties: &bytes::Bytes,
    ) -> Option<Vec<Arc<Queue>>> {
        let exchanges = self.exchanges.read();
        let names = registry.read();
        dead_letter_targets(&exchanges, &names, exchange, keys, headers, properties)
    }
}

/// The plugin's `validate` of a new consistent-hash exchange (RabbitMQ
/// runs it only when the exchange is created, not on a redeclare).
fn consistent_hash_args(arguments: &Table) -> Result<()> {
    use ferry_route::consistent_hash::{hash_on, HashArgError};
    match hash_on(arguments) {
        Ok(_) => Ok(()),
        Err(HashArgError::NotALongString) => {
            Err(CoreError::request(ErrorKind::InputCrash, String::new()))
        }
        Err(e) => Err(precondition(e.to_string())),
    }
}

/// Removes every binding to `dest`; an auto-delete exchange left without
/// bindings is removed as a destination in turn.
fn remove_destination(exchanges: &mut Exchanges, dest: &Destination) {
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

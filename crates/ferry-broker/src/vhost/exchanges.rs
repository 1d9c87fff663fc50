//! exchange.declare / exchange.delete and the bindings (queue.bind,
//! exchange.bind and their unbinds), with RabbitMQ's checks and texts.
//! Auto-delete cascades live here too: removing a destination can empty an
//! auto-delete exchange, which is then removed as a destination in turn.

use super::{
    default_exchange_refused, precondition, refused, ExchangeArgs, VHost, STANDARD_EXCHANGES,
};
use ferry_model::Table;
use ferry_queue::error::{CoreError, ErrorKind, Result};
use ferry_route::{Binding, Destination, Exchange, ExchangeKind};
use std::collections::HashMap;
use std::sync::Arc;

impl VHost {
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
        ferry_queue::limits::check_short("exchange", name)?;
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
            ferry_route::delayed::delayed_type(&a.arguments)
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
            if ferry_route::delayed::routing_kind(kind, &a.arguments)
                == ExchangeKind::ConsistentHash
            {
                consistent_hash_args(&a.arguments)?;
            }
            let n: Arc<str> = Arc::from(name);
            if kind == ExchangeKind::DelayedMessage {
                self.open_delayed(&n, a.durable)?;
            }
            let mut x = Exchange::new(
                n.clone(),
                kind,
                a.durable,
                a.auto_delete,
                a.internal,
                a.arguments,
            );
            self.apply_exchange_policy(&mut x);
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
        arguments: Table,
        conn: u64,
    ) -> Result<()> {
        ferry_queue::limits::check_short("routing_key", routing_key)?;
        let _d = self.defs_lock.lock();
        let durable = {
            let mut exchanges = self.exchanges.write();
            self.check_bindable_source(&exchanges, source)?;
            let dest_durable = match &destination {
                Destination::Queue(q) => {
                    let slot = self
                        .registry
                        .get(q)
                        .ok_or_else(|| CoreError::not_found("queue", q, &self.name))?;
                    // Streams are durable; as in RabbitMQ, a crashed
                    // queue's record still exists (and is durable).
                    match slot.queue() {
                        Some(queue) => {
                            self.check_exclusive(queue, conn)?;
                            queue.spec().durable
                        }
                        None => true,
                    }
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

pub(super) fn remove_destination(exchanges: &mut HashMap<Arc<str>, Exchange>, dest: &Destination) {
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

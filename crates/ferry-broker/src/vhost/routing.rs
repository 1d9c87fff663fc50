//! Resolving routes: given the vhost's exchanges and registry, read-locked
//! by the caller in that order (`Topology` takes them), where a publish,
//! a released delayed message or a dead letter goes. Pure functions over
//! the locked maps: no lock of their own, no queue called.

use super::delayed_store::DelayedStore;
use super::registry::{Names, Slot};
use super::topology::Exchanges;
use bytes::Bytes;
use ferry_model::Table;
use ferry_queue::error::Result;
use ferry_queue::queue::Queue;
use ferry_queue::source::Source;
use ferry_route::consistent_hash::HashProperty;
use ferry_route::{delay_of, route_all_message, sender_selected_keys, ExchangeKind};
use std::cell::RefCell;
use std::sync::Arc;

/// Where `exchange`'s bindings send a message with routing `keys`
/// (its publish key, then its `CC` / `BCC` keys) and raw `properties`
/// (which a consistent-hash exchange may hash on): queues and streams, given
/// the vhost's exchanges and registry, read-locked by the caller in that
/// order.
///
/// A delayed exchange reached through an exchange-to-exchange binding
/// holds a message with a valid `x-delay` as a publish to it would (the
/// plugin's type `route` runs for every exchange on the way): its
/// hidden queue is the destination and its bindings wait for the due
/// time. `exchange` itself is routed through (the caller decided).
pub(super) fn route_through(
    exchanges: &Exchanges,
    names: &Names,
    delayed: &DelayedStore,
    exchange: &str,
    (keys, properties): (&[&str], &Bytes),
    headers: Option<&Table>,
    out: &mut Vec<Arc<dyn Source>>,
) {
    let mut found: Vec<Arc<str>> = Vec::new();
    let holdable = headers.and_then(delay_of).is_some();
    let held: RefCell<Vec<Arc<str>>> = RefCell::new(Vec::new());
    let props = |p: HashProperty| hash_property(properties, p);
    route_all_message(
        |n| {
            let x = exchanges.get(n)?;
            if holdable && x.kind == ExchangeKind::DelayedMessage && n != exchange {
                let mut h = held.borrow_mut();
                if !h.contains(&x.name) {
                    h.push(x.name.clone());
                }
                return None;
            }
            Some(x)
        },
        exchange,
        keys,
        headers,
        Some(&props),
        &mut found,
    );
    out.extend(found.iter().filter_map(|n| names.get(n)?.source()));
    for x in held.into_inner() {
        if let Some(q) = delayed.queue(&x) {
            out.push(q);
        }
    }
}

/// The queues a dead letter published to `exchange` with `keys` reaches;
/// None if the exchange does not exist (the letter is then dropped, as
/// in RabbitMQ). Internal exchanges may be dead-letter exchanges.
pub(super) fn dead_letter_targets(
    exchanges: &Exchanges,
    names: &Names,
    exchange: &str,
    keys: &[&str],
    headers: Option<&Table>,
    properties: &Bytes,
) -> Option<Vec<Arc<Queue>>> {
    let queue = |n: &str| names.get(n).and_then(Slot::queue);
    let mut out: Vec<Arc<Queue>> = Vec::new();
    if exchange.is_empty() {
        let mut seen = (keys.len() > 16).then(ferry_route::NameSet::default);
        for k in keys {
            if let Some(seen) = &mut seen {
                if !seen.first(k) {
                    continue;
                }
            }
            if let Some(q) = queue(k) {
                if seen.is_some() || !out.iter().any(|o| Arc::ptr_eq(o, q)) {
                    out.push(q.clone());
                }
            }
        }
        return Some(out);
    }
    exchanges.get(exchange)?;
    let mut found: Vec<Arc<str>> = Vec::new();
    let props = |p: HashProperty| hash_property(properties, p);
    route_all_message(
        |n| exchanges.get(n),
        exchange,
        keys,
        headers,
        Some(&props),
        &mut found,
    );
    out.extend(found.iter().filter_map(|n| queue(n).cloned()));
    Some(out)
}

/// A property of a message, for consistent-hash exchanges.
fn hash_property(blob: &Bytes, p: HashProperty) -> Option<Vec<u8>> {
    ferry_queue::props::hash_property(blob, p)
}

/// The `CC` and `BCC` keys of a publish; a header of another type than an
/// array is RabbitMQ's 406 (`rabbit_basic:header_routes/1` throwing, the
/// channel answering "invalid message: ~p").
pub(super) fn sender_selected(headers: Option<&Table>) -> Result<Vec<&str>> {
    sender_selected_keys(headers).map_err(|e| super::precondition(e.to_string()))
}

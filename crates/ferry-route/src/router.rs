//! Routing through exchange graphs: exchange-to-exchange bindings and
//! alternate exchanges, as RabbitMQ's `rabbit_exchange:route/2` does it.
//!
//! Semantics:
//! - Starting from one exchange, each exchange routes the message by its
//!   own bindings; queue destinations are collected, exchange destinations
//!   are routed in turn.
//! - Every exchange is routed at most once per message, the start included,
//!   so cycles (legal in RabbitMQ: `a → b → a`, or an exchange bound to
//!   itself) end, and diamond-shaped graphs do not deliver twice.
//! - An exchange whose own bindings give no destination at all uses its
//!   alternate exchange (the `alternate-exchange` argument), which is then
//!   routed like any other exchange: its own AE applies in turn, and the
//!   visited-once rule makes AE cycles end. "No destination" is about the
//!   exchange's bindings only: an exchange that routes only to exchanges
//!   (even ones already visited, or ones that find no queue) did route, and
//!   its AE is not used — exactly RabbitMQ's behaviour.
//! - Destinations naming exchanges or queues that no longer exist are
//!   skipped (the caller resolves queue names; a missing one is dropped).
//! - Internal exchanges can be routed through and used as AEs; refusing a
//!   client publish to one is the caller's check. The default exchange
//!   (`""`, queue name = routing key) is the caller's too: this module
//!   knows no implicit bindings.
//! - The result is a set: each queue name once, in discovery order.

use super::binding::Destination;
use super::consistent_hash::PropertyLookup;
use super::exchange::Exchange;
use ferry_model::{Table, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// Up to this many entries a linear scan beats hashing.
const SMALL: usize = 16;

/// Routes a message published to exchange `start` with `key` and
/// `headers`, appending every queue it reaches to `out_queues` (skipping
/// names already there). `lookup` resolves exchange names; an unknown
/// `start` routes nowhere. See the module doc for the semantics.
pub fn route_all<'x>(
    lookup: impl Fn(&str) -> Option<&'x Exchange>,
    start: &str,
    key: &str,
    headers: Option<&Table>,
    out_queues: &mut Vec<Arc<str>>,
) {
    route_all_keys(lookup, start, &[key], headers, out_queues);
}

/// [`route_all`] for a message with several routing keys (the publish key
/// plus [`sender_selected_keys`]); every exchange on the way routes by all
/// of them, as in RabbitMQ.
pub fn route_all_keys<'x>(
    lookup: impl Fn(&str) -> Option<&'x Exchange>,
    start: &str,
    keys: &[&str],
    headers: Option<&Table>,
    out_queues: &mut Vec<Arc<str>>,
) {
    route_all_message(lookup, start, keys, headers, None, out_queues);
}

/// [`route_all_keys`] with access to the message's properties (which a
/// consistent-hash exchange with `hash-property` hashes on).
pub fn route_all_message<'x>(
    lookup: impl Fn(&str) -> Option<&'x Exchange>,
    start: &str,
    keys: &[&str],
    headers: Option<&Table>,
    properties: Option<PropertyLookup<'_>>,
    out_queues: &mut Vec<Arc<str>>,
) {
    let Some(first) = lookup(start) else {
        return;
    };
    let mut seen = NameSet::default();
    seen.insert(&first.name);
    let mut queues = QueueSink::new(out_queues);
    let mut work = vec![first];
    let mut dests = Vec::new();
    while let Some(x) = work.pop() {
        dests.clear();
        x.route_message(keys, headers, properties, &mut dests);
        if dests.is_empty() {
            if let Some(ae) = x.alternate_exchange() {
                visit_exchange(&lookup, ae, &mut seen, &mut work);
            }
        }
        for d in &dests {
            match d {
                Destination::Queue(q) => queues.push(q),
                Destination::Exchange(e) => visit_exchange(&lookup, e, &mut seen, &mut work),
            }
        }
    }
}

fn visit_exchange<'x>(
    lookup: &impl Fn(&str) -> Option<&'x Exchange>,
    name: &str,
    seen: &mut NameSet<'x>,
    work: &mut Vec<&'x Exchange>,
) {
    if seen.contains(name) {
        return;
    }
    if let Some(x) = lookup(name) {
        // Keyed by the exchange's own name: it lives as long as the graph.
        seen.insert(&x.name);
        work.push(x);
    }
}

/// A set of names that stays a short list while small (no hashing, and no
/// allocation until the first insert) and becomes a hash set past 16
/// names, so that thousands of names (CC keys) cost O(n), not O(n²).
#[derive(Debug, Default)]
pub struct NameSet<'x> {
    small: Vec<&'x str>,
    big: Option<HashSet<&'x str>>,
}

impl<'x> NameSet<'x> {
    /// Whether `name` was inserted.
    pub fn contains(&self, name: &str) -> bool {
        match &self.big {
            Some(set) => set.contains(name),
            None => self.small.contains(&name),
        }
    }

    /// Inserts `name`; true if it was not there yet.
    pub fn first(&mut self, name: &'x str) -> bool {
        if self.contains(name) {
            return false;
        }
        self.insert(name);
        true
    }

    fn insert(&mut self, name: &'x str) {
        match &mut self.big {
            Some(set) => {
                set.insert(name);
            }
            None => {
                self.small.push(name);
                if self.small.len() > SMALL {
                    self.big = Some(self.small.drain(..).collect());
                }
            }
        }
    }
}

/// Appends queue names to the caller's vector without repeats.
struct QueueSink<'o> {
    out: &'o mut Vec<Arc<str>>,
    index: Option<HashSet<Arc<str>>>,
}

impl<'o> QueueSink<'o> {
    fn new(out: &'o mut Vec<Arc<str>>) -> Self {
        let index = (out.len() > SMALL).then(|| out.iter().cloned().collect());
        Self { out, index }
    }

    fn push(&mut self, q: &Arc<str>) {
        match &mut self.index {
            Some(set) => {
                if set.insert(q.clone()) {
                    self.out.push(q.clone());
                }
            }
            None => {
                if self.out.iter().all(|x| **x != **q) {
                    self.out.push(q.clone());
                    if self.out.len() > SMALL {
                        self.index = Some(self.out.iter().cloned().collect());
                    }
                }
            }
        }
    }
}

/// A `CC` or `BCC` header that is not an array. RabbitMQ refuses such a
/// publish with a channel error 406 PRECONDITION_FAILED and this text
/// (its `{unacceptable_type_in_header, Header, Type}` printed with `~p`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid message: {{unacceptable_type_in_header,\"{header}\",{type_name}}}")]
pub struct InvalidRoutingHeader {
    /// "CC" or "BCC".
    pub header: &'static str,
    /// RabbitMQ's name of the field type found.
    pub type_name: &'static str,
}

/// The extra routing keys of RabbitMQ's sender-selected distribution: the
/// long strings in the `CC` and `BCC` array headers (other elements are
/// ignored, as in RabbitMQ). Route with `[key] + these` via
/// [`route_all_keys`]; the caller must strip `BCC` before delivery. Keys
/// that are not UTF-8 are skipped: no binding key (a `String`) could match
/// them.
pub fn sender_selected_keys(headers: Option<&Table>) -> Result<Vec<&str>, InvalidRoutingHeader> {
    let mut keys = Vec::new();
    let Some(h) = headers else {
        return Ok(keys);
    };
    for header in ["CC", "BCC"] {
        match h.get(header) {
            None => {}
            Some(Value::Array(a)) => keys.extend(a.iter().filter_map(Value::as_text)),
            Some(other) => {
                return Err(InvalidRoutingHeader {
                    header,
                    type_name: ferry_model::args::type_name(other),
                })
            }
        }
    }
    Ok(keys)
}

/// The keys of the `BCC` header alone (its UTF-8 long strings), kept with
/// the stored message ([`Message::bcc`](crate::Message::bcc)) once the
/// header is stripped. Empty without a `BCC` array.
pub fn bcc_keys(headers: Option<&Table>) -> Vec<Arc<str>> {
    match headers.and_then(|h| h.get("BCC")) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_text).map(Arc::from).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;

#[cfg(test)]
mod name_set_tests {
    use super::NameSet;

    #[test]
    fn first_is_true_once_per_name_small_and_big() {
        let names: Vec<String> = (0..100).map(|i| format!("k{}", i % 40)).collect();
        let mut set = NameSet::default();
        let firsts: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| set.first(n))
            .collect();
        assert_eq!(firsts.len(), 40);
        assert_eq!(firsts[39], "k39");
        assert!(set.contains("k0") && !set.contains("k40"));
    }
}

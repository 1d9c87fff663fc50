//! Per-kind routing indexes over an exchange's bindings.
//!
//! The exchange keeps the canonical binding set; the index holds only what
//! routing needs, shaped so routing does not look at unrelated bindings:
//! - direct: key → destinations (one hash lookup per key);
//! - fanout: the destinations;
//! - topic: a trie of patterns;
//! - headers: every binding's compiled matcher (each must be tried);
//! - x-consistent-hash: the ring of weighted buckets in binding order.
//!
//! Slots count destinations: two bindings that differ only in a part the
//! kind ignores (arguments on a direct exchange, say) share a slot, and the
//! destination stays until both are gone.

use super::binding::{Binding, Destination};
use super::consistent_hash::{self, HashOn, PropertyLookup, Ring};
use super::headers::HeadersMatcher;
use super::kind::ExchangeKind;
use super::multiset::Multiset;
use super::topic::TopicTrie;
use ferry_model::Table;
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub(crate) enum RouteIndex {
    Direct(HashMap<Box<str>, Multiset<Destination>>),
    Fanout(Multiset<Destination>),
    Topic(TopicTrie<Destination>),
    Headers(Vec<(Destination, HeadersMatcher)>),
    ConsistentHash(Ring, HashOn),
}

impl RouteIndex {
    /// The index for `kind`; `arguments` matter to consistent-hash
    /// exchanges only (what they hash by; a validated declaration never
    /// has bad ones, the routing key is the fallback).
    pub(crate) fn new(kind: ExchangeKind, arguments: &Table) -> Self {
        match kind {
            // A delayed exchange is indexed for its x-delayed-type (the
            // exchange resolves it); direct is only the fallback.
            ExchangeKind::Direct | ExchangeKind::DelayedMessage => Self::Direct(HashMap::new()),
            ExchangeKind::Fanout => Self::Fanout(Multiset::default()),
            ExchangeKind::Topic => Self::Topic(TopicTrie::new()),
            ExchangeKind::Headers => Self::Headers(Vec::new()),
            ExchangeKind::ConsistentHash => Self::ConsistentHash(
                Ring::default(),
                consistent_hash::hash_on(arguments).unwrap_or(HashOn::RoutingKey),
            ),
        }
    }

    /// Adds a binding (not already in the exchange's set).
    pub(crate) fn insert(&mut self, b: &Binding) {
        let d = b.destination.clone();
        match self {
            Self::Direct(map) => match map.get_mut(b.routing_key.as_str()) {
                Some(set) => set.insert(d),
                None => {
                    let mut set = Multiset::default();
                    set.insert(d);
                    map.insert(b.routing_key.as_str().into(), set);
                }
            },
            Self::Fanout(set) => set.insert(d),
            Self::Topic(trie) => trie.insert(&b.routing_key, d),
            Self::Headers(list) => list.push((d, HeadersMatcher::new(&b.arguments))),
            Self::ConsistentHash(ring, _) => ring.insert(b),
        }
    }

    /// Removes a binding (that was in the exchange's set).
    pub(crate) fn remove(&mut self, b: &Binding) {
        let d = &b.destination;
        match self {
            Self::Direct(map) => {
                if let Some(set) = map.get_mut(b.routing_key.as_str()) {
                    set.remove(d);
                    if set.is_empty() {
                        map.remove(b.routing_key.as_str());
                    }
                }
            }
            Self::Fanout(set) => {
                set.remove(d);
            }
            Self::Topic(trie) => {
                trie.remove(&b.routing_key, d);
            }
            Self::Headers(list) => {
                // Entries with equal (destination, matcher) route the same,
                // so dropping any one of them is exact.
                let m = HeadersMatcher::new(&b.arguments);
                if let Some(i) = list.iter().position(|(ld, lm)| ld == d && *lm == m) {
                    list.swap_remove(i);
                }
            }
            Self::ConsistentHash(ring, _) => ring.remove(b),
        }
    }

    /// Appends the destinations for a message with these routing keys and
    /// headers. May append duplicates (several topic patterns or headers
    /// bindings, several keys); the exchange deduplicates. `properties`
    /// reads the message's properties (consistent-hash `hash-property`).
    pub(crate) fn route(
        &self,
        keys: &[&str],
        headers: Option<&Table>,
        properties: Option<PropertyLookup<'_>>,
        out: &mut Vec<Destination>,
    ) {
        match self {
            Self::Direct(map) => {
                for k in keys {
                    if let Some(set) = map.get(*k) {
                        out.extend(set.iter().cloned());
                    }
                }
            }
            Self::Fanout(set) => out.extend(set.iter().cloned()),
            Self::Topic(trie) => {
                for k in keys {
                    trie.matches(k, out);
                }
            }
            Self::Headers(list) => out.extend(
                list.iter()
                    .filter(|(_, m)| m.matches(headers))
                    .map(|(d, _)| d.clone()),
            ),
            // One destination per message, chosen by the first routing
            // key (CC/BCC keys do not count, as in the plugin).
            Self::ConsistentHash(ring, on) => {
                let key = keys.first().copied().unwrap_or("");
                let h = consistent_hash::message_hash(on, key, headers, properties);
                if let Some(d) = ring.pick(h) {
                    out.push(d.clone());
                }
            }
        }
    }

    /// The bindings in the order routing depends on, for the kinds where
    /// it does (consistent hash); None for the others.
    pub(crate) fn binding_order(&self) -> Option<Vec<&Binding>> {
        match self {
            Self::ConsistentHash(ring, _) => Some(ring.bindings()),
            _ => None,
        }
    }

    /// Whether [`route`](Self::route) may append a destination twice.
    pub(crate) fn may_repeat(&self, keys: usize) -> bool {
        match self {
            Self::Direct(_) => keys > 1,
            Self::Fanout(_) | Self::ConsistentHash(..) => false,
            Self::Topic(_) | Self::Headers(_) => true,
        }
    }
}

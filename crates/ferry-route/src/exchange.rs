//! An exchange: its declared shape and its bindings.

use super::args;
use super::binding::{Binding, Destination};
use super::consistent_hash::PropertyLookup;
use super::headers::{validate_binding_arguments, InvalidBinding};
use super::index::RouteIndex;
use super::kind::ExchangeKind;
use super::table_serde::{self, TableRef};
use ferry_model::Table;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The argument that names an exchange's alternate exchange.
const ALTERNATE_EXCHANGE: &str = "alternate-exchange";

/// An exchange and the bindings it is the source of.
///
/// The declared fields are public; `kind` is fixed at construction (the
/// binding index is built for it: changing the field would not re-index).
/// Bindings are kept as a set ordered by destination (so listing is
/// deterministic) next to a per-kind index used for routing.
///
/// Serialized (for durable definitions) as `name`, `kind`, `durable`,
/// `auto_delete`, `internal`, `arguments` (in [`table_serde`] format) and
/// every binding; deserializing rebuilds the index. Which bindings are
/// worth persisting (durable destinations only) is the caller's call:
/// see [`retain_bindings`](Self::retain_bindings).
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "ExchangeDef")]
pub struct Exchange {
    /// Name (unique in its vhost).
    pub name: Arc<str>,
    /// Type.
    pub kind: ExchangeKind,
    /// Survives a restart.
    pub durable: bool,
    /// Deleted when its last binding (as source) goes.
    pub auto_delete: bool,
    /// Clients may not publish to it directly (it can still be routed to).
    pub internal: bool,
    /// Declared arguments (`alternate-exchange`, ...).
    pub arguments: Table,
    bindings: BTreeSet<Binding>,
    index: RouteIndex,
    /// The policy applying to it, if any.
    policy: Option<Arc<str>>,
    /// The alternate exchange a policy names (the argument wins).
    policy_alternate: Option<Arc<str>>,
}

impl Exchange {
    /// A new exchange with no bindings.
    pub fn new(
        name: impl Into<Arc<str>>,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: Table,
    ) -> Self {
        let index = RouteIndex::new(super::delayed::routing_kind(kind, &arguments), &arguments);
        Self {
            name: name.into(),
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            bindings: BTreeSet::new(),
            index,
            policy: None,
            policy_alternate: None,
        }
    }

    /// Checks a binding the way RabbitMQ's exchange type does before it is
    /// created: headers exchanges check `x-match`, consistent-hash ones
    /// that the key is a weight. The error is a 406 PRECONDITION_FAILED.
    pub fn validate_binding(&self, binding: &Binding) -> Result<(), InvalidBinding> {
        match super::delayed::routing_kind(self.kind, &self.arguments) {
            ExchangeKind::Headers => validate_binding_arguments(&binding.arguments),
            ExchangeKind::ConsistentHash => super::consistent_hash::weight(&binding.routing_key)
                .map(|_| ())
                .map_err(InvalidBinding::Weight),
            _ => Ok(()),
        }
    }

    /// Adds a binding; false if it already existed (binding twice is
    /// a no-op, as in RabbitMQ).
    pub fn bind(&mut self, binding: Binding) -> bool {
        if self.bindings.contains(&binding) {
            return false;
        }
        self.index.insert(&binding);
        self.bindings.insert(binding);
        true
    }

    /// Removes a binding; false if there was no such binding (not an
    /// error in RabbitMQ).
    pub fn unbind(&mut self, binding: &Binding) -> bool {
        match self.bindings.take(binding) {
            Some(b) => {
                self.index.remove(&b);
                true
            }
            None => false,
        }
    }

    /// Removes every binding to `destination` (the queue or exchange was
    /// deleted). Returns how many went.
    pub fn unbind_destination(&mut self, destination: &Destination) -> usize {
        let doomed: Vec<Binding> = self
            .bindings
            .range(Binding::first_for(destination.clone())..)
            .take_while(|b| b.destination == *destination)
            .cloned()
            .collect();
        for b in &doomed {
            self.bindings.remove(b);
            self.index.remove(b);
        }
        doomed.len()
    }

    /// Keeps only the bindings `keep` accepts (e.g. at recovery, dropping
    /// bindings to queues that did not survive). Returns how many went.
    pub fn retain_bindings(&mut self, mut keep: impl FnMut(&Binding) -> bool) -> usize {
        let doomed: Vec<Binding> = self.bindings.iter().filter(|b| !keep(b)).cloned().collect();
        for b in &doomed {
            self.bindings.remove(b);
            self.index.remove(b);
        }
        doomed.len()
    }

    /// The bindings, ordered by destination, then key, then arguments.
    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.iter()
    }

    /// The bindings in the order to store them: the order they were made
    /// for a consistent-hash exchange (its buckets follow that order, so
    /// binding them again in it rebuilds the same ring after a restart),
    /// [`bindings`](Self::bindings)' order for the other kinds.
    pub fn bindings_to_store(&self) -> Vec<&Binding> {
        self.index
            .binding_order()
            .unwrap_or_else(|| self.bindings.iter().collect())
    }

    /// Number of bindings.
    pub fn binding_count(&self) -> usize {
        self.bindings.len()
    }

    /// Whether it is the source of any binding (auto-delete checks this).
    pub fn has_bindings(&self) -> bool {
        !self.bindings.is_empty()
    }

    /// Whether this exact binding exists.
    pub fn has_binding(&self, binding: &Binding) -> bool {
        self.bindings.contains(binding)
    }

    /// Whether any binding leads to `destination` (O(log n)).
    pub fn has_bindings_to(&self, destination: &Destination) -> bool {
        self.bindings
            .range(Binding::first_for(destination.clone())..)
            .next()
            .is_some_and(|b| b.destination == *destination)
    }

    /// The alternate exchange named by the `alternate-exchange` argument
    /// (a long or short string), if any.
    pub fn alternate_exchange(&self) -> Option<&str> {
        self.arguments
            .get(ALTERNATE_EXCHANGE)
            .and_then(ferry_model::args::text)
            .or(self.policy_alternate.as_deref())
    }

    /// Sets the policy applying to the exchange and the alternate
    /// exchange it names (used when the exchange has no
    /// `alternate-exchange` argument, RabbitMQ's precedence).
    pub fn set_policy(&mut self, policy: Option<Arc<str>>, ae: Option<Arc<str>>) {
        self.policy = policy;
        self.policy_alternate = ae;
    }

    /// The name of the policy applying to the exchange.
    pub fn policy(&self) -> Option<&str> {
        self.policy.as_deref()
    }

    /// Appends to `out` where this exchange alone sends a message with this
    /// routing key and headers (headers matter only to headers exchanges).
    /// Exchange destinations are not followed and the alternate exchange is
    /// not applied: that is [`route_all`](super::route_all)'s job. What is
    /// appended has no duplicates (it may repeat what `out` already held).
    pub fn route(&self, routing_key: &str, headers: Option<&Table>, out: &mut Vec<Destination>) {
        self.route_keys(&[routing_key], headers, out);
    }

    /// Like [`route`](Self::route) for a message with several routing keys
    /// (RabbitMQ's CC/BCC headers add keys: see
    /// [`sender_selected_keys`](super::sender_selected_keys)).
    pub fn route_keys(&self, keys: &[&str], headers: Option<&Table>, out: &mut Vec<Destination>) {
        self.route_message(keys, headers, None, out);
    }

    /// Like [`route_keys`](Self::route_keys) with access to the message's
    /// properties (a consistent-hash exchange's `hash-property`; without
    /// `properties` the property counts as absent).
    pub fn route_message(
        &self,
        keys: &[&str],
        headers: Option<&Table>,
        properties: Option<PropertyLookup<'_>>,
        out: &mut Vec<Destination>,
    ) {
        let start = out.len();
        self.index.route(keys, headers, properties, out);
        if self.index.may_repeat(keys.len()) {
            dedup_tail(out, start);
        }
    }

    /// Whether a redeclare with these properties is equivalent (see
    /// [`check_equivalent`](Self::check_equivalent)).
    pub fn equivalent(
        &self,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: &Table,
    ) -> bool {
        self.check_equivalent(kind, durable, auto_delete, internal, arguments, "")
            .is_ok()
    }

    /// RabbitMQ's check for `exchange.declare` of an existing exchange:
    /// type, durable, auto_delete and internal must be equal, and of the
    /// arguments only `alternate-exchange` is compared (by type class and
    /// value; other arguments may differ freely, as in RabbitMQ). The error
    /// (a 406 PRECONDITION_FAILED) names the first mismatch, e.g.
    /// `inequivalent arg 'durable' for exchange 'x' in vhost '/': received
    /// 'false' but current is 'true'`.
    pub fn check_equivalent(
        &self,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: &Table,
        vhost: &str,
    ) -> Result<(), String> {
        let fail = |field: &str, received: String, current: String| {
            Err(format!(
                "inequivalent arg '{field}' for exchange '{}' in vhost '{vhost}': received {received} but current is {current}",
                self.name
            ))
        };
        let quoted = |v: &dyn std::fmt::Display| format!("'{v}'");
        if kind != self.kind {
            return fail("type", quoted(&kind), quoted(&self.kind));
        }
        for (field, req, cur) in [
            ("durable", durable, self.durable),
            ("auto_delete", auto_delete, self.auto_delete),
            ("internal", internal, self.internal),
        ] {
            if req != cur {
                return fail(field, quoted(&req), quoted(&cur));
            }
        }
        let cur = self.arguments.get(ALTERNATE_EXCHANGE);
        let req = arguments.get(ALTERNATE_EXCHANGE);
        match (cur, req) {
            (None, None) => Ok(()),
            (Some(c), Some(r)) if args::equivalent_arg(c, r) => Ok(()),
            (Some(c), Some(r)) => fail(
                ALTERNATE_EXCHANGE,
                args::describe_bare(r),
                args::describe_bare(c),
            ),
            (c, r) => {
                let describe =
                    |v: Option<&_>| v.map_or_else(|| "none".to_string(), args::describe_typed);
                fail(ALTERNATE_EXCHANGE, describe(r), describe(c))
            }
        }
    }
}

/// Sorts `out[start..]` and drops its duplicates.
fn dedup_tail(out: &mut Vec<Destination>, start: usize) {
    if out.len() - start < 2 {
        return;
    }
    out[start..].sort_unstable();
    let mut w = start + 1;
    for r in start + 1..out.len() {
        if out[r] != out[w - 1] {
            out.swap(r, w);
            w += 1;
        }
    }
    out.truncate(w);
}

impl Serialize for Exchange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Exchange", 7)?;
        st.serialize_field("name", &*self.name)?;
        st.serialize_field("kind", &self.kind)?;
        st.serialize_field("durable", &self.durable)?;
        st.serialize_field("auto_delete", &self.auto_delete)?;
        st.serialize_field("internal", &self.internal)?;
        st.serialize_field("arguments", &TableRef(&self.arguments))?;
        st.serialize_field("bindings", &self.bindings_to_store())?;
        st.end()
    }
}

/// The serialized form, read back.
#[derive(Deserialize)]
struct ExchangeDef {
    name: String,
    kind: ExchangeKind,
    durable: bool,
    auto_delete: bool,
    internal: bool,
    #[serde(with = "table_serde", default)]
    arguments: Table,
    #[serde(default)]
    bindings: Vec<Binding>,
}

impl From<ExchangeDef> for Exchange {
    fn from(d: ExchangeDef) -> Self {
        let mut x = Exchange::new(
            d.name,
            d.kind,
            d.durable,
            d.auto_delete,
            d.internal,
            d.arguments,
        );
        for b in d.bindings {
            x.bind(b);
        }
        x
    }
}

#[cfg(test)]
#[path = "exchange_tests.rs"]
mod tests;

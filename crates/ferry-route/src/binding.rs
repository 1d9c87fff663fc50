//! Bindings and what they point at.

use super::args;
use ferry_model::Table;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Where a binding routes to.
///
/// Serialized as `{"type": "queue", "name": "q1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "name", rename_all = "lowercase")]
pub enum Destination {
    /// A queue, by name.
    #[serde(with = "arc_str")]
    Queue(Arc<str>),
    /// An exchange (exchange-to-exchange binding), by name.
    #[serde(with = "arc_str")]
    Exchange(Arc<str>),
}

impl Destination {
    /// A queue destination.
    pub fn queue(name: impl Into<Arc<str>>) -> Self {
        Self::Queue(name.into())
    }

    /// An exchange destination.
    pub fn exchange(name: impl Into<Arc<str>>) -> Self {
        Self::Exchange(name.into())
    }

    /// The queue's or exchange's name.
    pub fn name(&self) -> &Arc<str> {
        match self {
            Self::Queue(n) | Self::Exchange(n) => n,
        }
    }
}

/// A binding of some source exchange (which owns it) to a destination.
///
/// Identity is the whole (destination, routing key, arguments) triple, as in
/// RabbitMQ: the same queue bound with the same key but different arguments
/// is two bindings. Arguments compare exactly, field types included (`long
/// 1` and `signedint 1` differ, as they do in RabbitMQ), and floats by bit
/// pattern, so `Eq`, `Ord` and `Hash` are total and consistent with each
/// other. Ordered by destination first, so one destination's bindings are
/// contiguous in an ordered set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Binding {
    /// Where matching messages go.
    pub destination: Destination,
    /// The binding key (a pattern for topic exchanges; ignored by fanout
    /// and headers exchanges, but still part of the identity).
    pub routing_key: String,
    /// Binding arguments (the match spec for headers exchanges).
    #[serde(with = "super::table_serde", default)]
    pub arguments: Table,
}

impl Binding {
    /// Builds a binding.
    pub fn new(destination: Destination, routing_key: impl Into<String>, arguments: Table) -> Self {
        Self {
            destination,
            routing_key: routing_key.into(),
            arguments,
        }
    }

    /// The smallest binding to `destination` in [`Ord`] order: the start of
    /// a range scan over that destination's bindings.
    pub(crate) fn first_for(destination: Destination) -> Self {
        Self::new(destination, String::new(), Table::new())
    }
}

impl PartialEq for Binding {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Binding {}

impl PartialOrd for Binding {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Binding {
    fn cmp(&self, other: &Self) -> Ordering {
        self.destination
            .cmp(&other.destination)
            .then_with(|| self.routing_key.cmp(&other.routing_key))
            .then_with(|| args::cmp_table(&self.arguments, &other.arguments))
    }
}

impl Hash for Binding {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.destination.hash(h);
        self.routing_key.hash(h);
        args::hash_table(&self.arguments, h);
    }
}

/// serde for `Arc<str>` without serde's `rc` feature.
mod arc_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::sync::Arc;

    pub(super) fn serialize<S: Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        Ok(Arc::from(String::deserialize(d)?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::test_support::mtable as args;
    use ferry_model::Value;
    use std::collections::{BTreeSet, HashSet};

    #[test]
    fn identity_is_destination_key_and_arguments() {
        let q = Destination::queue("q");
        let a = Binding::new(q.clone(), "k", args(&[("x", Value::I64(1))]));
        let same = Binding::new(q.clone(), "k", args(&[("x", Value::I64(1))]));
        let other_type = Binding::new(q.clone(), "k", args(&[("x", Value::I32(1))]));
        let other_key = Binding::new(q.clone(), "k2", a.arguments.clone());
        let other_dest = Binding::new(Destination::exchange("q"), "k", a.arguments.clone());
        assert_eq!(a, same);
        for b in [&other_type, &other_key, &other_dest] {
            assert_ne!(&a, b);
        }
        let hs: HashSet<Binding> = [a.clone(), same, other_type, other_key, other_dest]
            .into_iter()
            .collect();
        assert_eq!(hs.len(), 4);
    }

    #[test]
    fn nan_arguments_are_still_one_binding() {
        let b = Binding::new(
            Destination::queue("q"),
            "",
            args(&[("f", Value::F64(f64::NAN))]),
        );
        assert_eq!(b, b.clone());
        let set: BTreeSet<Binding> = [b.clone(), b].into_iter().collect();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn first_for_is_the_minimum_of_its_destination() {
        let q = Destination::queue("q");
        let lo = Binding::first_for(q.clone());
        for b in [
            Binding::new(q.clone(), "", Table::new()),
            Binding::new(q.clone(), "", args(&[("", Value::Void)])),
            Binding::new(q.clone(), "a", Table::new()),
        ] {
            assert!(lo <= b);
        }
        assert!(Binding::first_for(Destination::queue("p")) < lo);
    }

    #[test]
    fn serde_round_trip() {
        let b = Binding::new(
            Destination::exchange("e2"),
            "a.#",
            args(&[("x-match", Value::str("any"))]),
        );
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(
            json,
            r#"{"destination":{"type":"exchange","name":"e2"},"routing_key":"a.#","arguments":{"x-match":{"longstr":"any"}}}"#
        );
        let back: Binding = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
        let no_args: Binding =
            serde_json::from_str(r#"{"destination":{"type":"queue","name":"q"},"routing_key":""}"#)
                .unwrap();
        assert_eq!(
            no_args,
            Binding::new(Destination::queue("q"), "", Table::new())
        );
    }
}

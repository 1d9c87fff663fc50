//! Policies and operator policies, RabbitMQ 3.10's model.
//!
//! A policy (per vhost: name, pattern, apply-to, priority, definition)
//! configures every queue or exchange whose name its pattern matches. Of
//! the policies matching an object the one with the highest priority
//! applies (RabbitMQ leaves ties undefined; Ferry picks the smallest name,
//! so the choice is stable across restarts). Operator policies are chosen
//! the same way, separately, and cap the numeric keys of the policy (the
//! lower value wins, [`merge`]). The effective definition then combines
//! with the queue's own x-arguments by RabbitMQ's per-key rules
//! ([`effective_queue_args`]).
//!
//! This module is pure: validation ([`validate`]), matching and merging.
//! The [`Broker`](crate::Broker) keeps the [`PolicySet`], persists it
//! (`DATA/policies`, see `docs/storage.md`) and hands each vhost its part,
//! which the vhost applies to its queues and exchanges at once.

mod apply;
mod mirroring;
mod pattern;
pub(crate) mod store;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests_broker;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests_races;
pub mod validate;

pub use apply::{effective_queue_args, effective_stream_args, policy_alternate_exchange};
pub use pattern::Pattern;
pub use validate::{validate, PolicyError};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Which objects a policy applies to (`apply-to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    /// Every queue and stream.
    Queues,
    /// Exchanges.
    Exchanges,
    /// Queues and exchanges.
    All,
    /// Classic queues only (RabbitMQ 4).
    ClassicQueues,
    /// Quorum queues only (RabbitMQ 4).
    QuorumQueues,
    /// Streams only (RabbitMQ 4).
    Streams,
}

impl ApplyTo {
    /// Parses an `apply-to` value.
    pub fn parse(s: &str) -> Option<ApplyTo> {
        Some(match s {
            "queues" => ApplyTo::Queues,
            "exchanges" => ApplyTo::Exchanges,
            "all" => ApplyTo::All,
            "classic_queues" => ApplyTo::ClassicQueues,
            "quorum_queues" => ApplyTo::QuorumQueues,
            "streams" => ApplyTo::Streams,
            _ => return None,
        })
    }

    /// Whether a policy with this `apply-to` may apply to `t`.
    pub fn covers(self, t: Target) -> bool {
        match (self, t) {
            (ApplyTo::All, _) => true,
            (ApplyTo::Exchanges, t) => t == Target::Exchange,
            (ApplyTo::Queues, t) => t != Target::Exchange,
            (ApplyTo::ClassicQueues, t) => t == Target::ClassicQueue,
            (ApplyTo::QuorumQueues, t) => t == Target::QuorumQueue,
            (ApplyTo::Streams, t) => t == Target::Stream,
        }
    }
}

/// The kind of object a policy is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A classic queue.
    ClassicQueue,
    /// A quorum queue.
    QuorumQueue,
    /// A stream.
    Stream,
    /// An exchange.
    Exchange,
}

impl Target {
    /// The target of a queue of type `kind` (`classic`, `quorum`, `stream`).
    pub fn of_queue_kind(kind: &str) -> Target {
        match kind {
            "quorum" => Target::QuorumQueue,
            "stream" => Target::Stream,
            _ => Target::ClassicQueue,
        }
    }
}

/// Policies or operator policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyKind {
    /// `/api/policies`, `rabbitmqctl set_policy`.
    Policy,
    /// `/api/operator-policies`, `set_operator_policy`.
    Operator,
}

/// A policy as RabbitMQ shows, exports and imports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyDef {
    /// Its vhost.
    pub vhost: String,
    /// Its name (unique per vhost and kind).
    pub name: String,
    /// Regular expression matched against object names.
    pub pattern: String,
    /// `queues`, `exchanges`, `all`, ...
    #[serde(rename = "apply-to", default = "all")]
    pub apply_to: String,
    /// The keys it sets (validated).
    pub definition: Map<String, Value>,
    /// Higher wins; any JSON number, as RabbitMQ accepts.
    #[serde(default = "zero")]
    pub priority: serde_json::Number,
}

fn all() -> String {
    "all".into()
}

fn zero() -> serde_json::Number {
    serde_json::Number::from(0)
}

/// A validated policy with its compiled pattern.
#[derive(Debug, Clone)]
pub struct Policy {
    def: PolicyDef,
    regex: Pattern,
    apply_to: ApplyTo,
    priority: f64,
}

impl Policy {
    /// Compiles a definition already checked by [`validate`].
    pub fn compile(def: PolicyDef) -> Result<Policy, String> {
        let regex = Pattern::new(&def.pattern).map_err(|e| e.to_string())?;
        let apply_to = ApplyTo::parse(&def.apply_to)
            .ok_or_else(|| format!("apply-to '{}' unrecognised", def.apply_to))?;
        let priority = def.priority.as_f64().unwrap_or(0.0);
        Ok(Policy {
            def,
            regex,
            apply_to,
            priority,
        })
    }

    /// The definition as shown.
    pub fn def(&self) -> &PolicyDef {
        &self.def
    }

    /// Whether it applies to object `name` of kind `t`.
    pub fn matches(&self, name: &str, t: Target) -> bool {
        self.apply_to.covers(t) && self.regex.is_match(name)
    }
}

/// What applies to one object: the winning policy and operator policy
/// and their merged definition (RabbitMQ's `effective_policy_definition`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effective {
    /// The policy's name.
    pub policy: Option<String>,
    /// The operator policy's name.
    pub operator_policy: Option<String>,
    /// The merged definition (empty without either).
    pub definition: Map<String, Value>,
}

impl Effective {
    /// Whether nothing applies.
    pub fn is_empty(&self) -> bool {
        self.policy.is_none() && self.operator_policy.is_none()
    }
}

/// Every policy of one vhost (both kinds), sorted by name.
#[derive(Debug, Clone, Default)]
pub struct VhostPolicies {
    policies: BTreeMap<String, Arc<Policy>>,
    operator: BTreeMap<String, Arc<Policy>>,
}

/// The highest-priority policy of `list` matching (ties: the first name).
fn best<'a>(
    list: &'a BTreeMap<String, Arc<Policy>>,
    name: &str,
    t: Target,
) -> Option<&'a Arc<Policy>> {
    list.values().filter(|p| p.matches(name, t)).fold(
        None,
        |acc: Option<&Arc<Policy>>, p| match acc {
            Some(a) if a.priority >= p.priority => Some(a),
            _ => Some(p),
        },
    )
}

impl VhostPolicies {
    fn map(&self, kind: PolicyKind) -> &BTreeMap<String, Arc<Policy>> {
        match kind {
            PolicyKind::Policy => &self.policies,
            PolicyKind::Operator => &self.operator,
        }
    }

    fn map_mut(&mut self, kind: PolicyKind) -> &mut BTreeMap<String, Arc<Policy>> {
        match kind {
            PolicyKind::Policy => &mut self.policies,
            PolicyKind::Operator => &mut self.operator,
        }
    }

    /// Whether the vhost has no policy of either kind.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty() && self.operator.is_empty()
    }

    /// The policies of one kind, by name.
    pub fn list(&self, kind: PolicyKind) -> Vec<PolicyDef> {
        self.map(kind).values().map(|p| p.def.clone()).collect()
    }

    /// One policy.
    pub fn get(&self, kind: PolicyKind, name: &str) -> Option<&PolicyDef> {
        self.map(kind).get(name).map(|p| &p.def)
    }

    /// Adds or replaces a policy; true if it replaced one.
    pub fn put(&mut self, kind: PolicyKind, p: Policy) -> bool {
        self.map_mut(kind)
            .insert(p.def.name.clone(), Arc::new(p))
            .is_some()
    }

    /// Removes a policy; false if absent.
    pub fn remove(&mut self, kind: PolicyKind, name: &str) -> bool {
        self.map_mut(kind).remove(name).is_some()
    }

    /// What applies to object `name` of kind `t`.
    pub fn effective(&self, name: &str, t: Target) -> Effective {
        if self.is_empty() {
            return Effective::default();
        }
        let p = best(&self.policies, name, t);
        let op = best(&self.operator, name, t);
        Effective {
            policy: p.map(|p| p.def.name.clone()),
            operator_policy: op.map(|p| p.def.name.clone()),
            definition: merge(p.map(|p| &p.def.definition), op.map(|p| &p.def.definition)),
        }
    }
}

/// The keys where an operator policy caps the policy: the lower value
/// wins (`rabbit_policies:merge_policy_value/3`).
const CAPPED: [&str; 7] = [
    "expires",
    "message-ttl",
    "max-length",
    "max-length-bytes",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "delivery-limit",
];

/// Merges a policy's definition with an operator policy's: keys of either,
/// and for keys in both the lower value of [`CAPPED`] keys.
pub fn merge(
    policy: Option<&Map<String, Value>>,
    op: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut out = policy.cloned().unwrap_or_default();
    for (k, v) in op.into_iter().flatten() {
        let merged = match out.get(k) {
            Some(mine) if CAPPED.contains(&k.as_str()) => match (mine.as_i64(), v.as_i64()) {
                (Some(a), Some(b)) if a <= b => mine.clone(),
                _ => v.clone(),
            },
            // Validation admits only capped keys in operator policies.
            Some(mine) => mine.clone(),
            None => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    out
}

/// Every vhost's policies.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    vhosts: BTreeMap<String, Arc<VhostPolicies>>,
}

impl PolicySet {
    /// A vhost's policies (empty if it has none).
    pub fn vhost(&self, vhost: &str) -> Arc<VhostPolicies> {
        self.vhosts.get(vhost).cloned().unwrap_or_default()
    }

    /// Every policy of one kind, by vhost then name.
    pub fn list(&self, kind: PolicyKind) -> Vec<PolicyDef> {
        self.vhosts.values().flat_map(|v| v.list(kind)).collect()
    }

    /// Changes one vhost's policies through `f`.
    pub fn update<T>(&mut self, vhost: &str, f: impl FnOnce(&mut VhostPolicies) -> T) -> T {
        let mut v = (*self.vhost(vhost)).clone();
        let out = f(&mut v);
        if v.is_empty() {
            self.vhosts.remove(vhost);
        } else {
            self.vhosts.insert(vhost.to_string(), Arc::new(v));
        }
        out
    }

    /// Drops a deleted vhost's policies.
    pub fn remove_vhost(&mut self, vhost: &str) {
        self.vhosts.remove(vhost);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pol(name: &str, pattern: &str, apply_to: &str, prio: i64, def: Value) -> Policy {
        Policy::compile(PolicyDef {
            vhost: "/".into(),
            name: name.into(),
            pattern: pattern.into(),
            apply_to: apply_to.into(),
            definition: def.as_object().cloned().unwrap(),
            priority: prio.into(),
        })
        .unwrap()
    }

    #[test]
    fn the_highest_priority_match_wins_and_ties_go_to_the_first_name() {
        let mut v = VhostPolicies::default();
        v.put(
            PolicyKind::Policy,
            pol("low", "^q", "all", 1, json!({"max-length": 1})),
        );
        v.put(
            PolicyKind::Policy,
            pol("high", "^q", "queues", 5, json!({"max-length": 5})),
        );
        v.put(
            PolicyKind::Policy,
            pol("other", "^x", "all", 9, json!({"max-length": 9})),
        );
        let e = v.effective("q1", Target::ClassicQueue);
        assert_eq!(e.policy.as_deref(), Some("high"));
        assert_eq!(
            e.definition,
            json!({"max-length": 5}).as_object().cloned().unwrap()
        );
        // apply-to queues does not cover an exchange.
        assert_eq!(
            v.effective("q1", Target::Exchange).policy.as_deref(),
            Some("low")
        );
        assert!(v.effective("z", Target::ClassicQueue).is_empty());
        v.put(
            PolicyKind::Policy,
            pol("a-tie", "^q", "all", 5, json!({"max-length": 7})),
        );
        assert_eq!(
            v.effective("q1", Target::ClassicQueue).policy.as_deref(),
            Some("a-tie")
        );
    }

    #[test]
    fn apply_to_kinds() {
        let c = |a: &str, t| ApplyTo::parse(a).unwrap().covers(t);
        assert!(c("queues", Target::Stream) && c("queues", Target::QuorumQueue));
        assert!(!c("queues", Target::Exchange) && c("exchanges", Target::Exchange));
        assert!(c("classic_queues", Target::ClassicQueue) && !c("classic_queues", Target::Stream));
        assert!(c("quorum_queues", Target::QuorumQueue) && !c("streams", Target::QuorumQueue));
        assert!(ApplyTo::parse("bogus").is_none());
    }

    #[test]
    fn operator_policies_cap_numeric_keys_with_the_lower_value() {
        let p = json!({"max-length": 10, "message-ttl": 100, "dead-letter-exchange": "dlx"});
        let op = json!({"max-length": 20, "message-ttl": 50, "expires": 1000});
        let m = merge(p.as_object(), op.as_object());
        assert_eq!(
            Value::Object(m),
            json!({"max-length": 10, "message-ttl": 50, "expires": 1000, "dead-letter-exchange": "dlx"})
        );
        let only_op = merge(None, op.as_object());
        assert_eq!(Value::Object(only_op), op);
        let mut v = VhostPolicies::default();
        v.put(PolicyKind::Policy, pol("p", ".*", "all", 0, p.clone()));
        v.put(PolicyKind::Operator, pol("o", "^q", "queues", 0, op));
        let e = v.effective("q", Target::ClassicQueue);
        assert_eq!(
            (e.policy.as_deref(), e.operator_policy.as_deref()),
            (Some("p"), Some("o"))
        );
        assert_eq!(e.definition.get("message-ttl"), Some(&json!(50)));
        let x = v.effective("q", Target::Exchange);
        assert_eq!(x.operator_policy, None);
        assert_eq!(Value::Object(x.definition), p);
    }
}

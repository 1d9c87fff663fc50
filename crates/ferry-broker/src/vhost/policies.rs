//! The vhost's policies at work: queues open with their effective
//! arguments (declared ones combined with the winning policy and operator
//! policy), exchanges take a policy's `alternate-exchange`, and a change
//! of policies reaches every existing queue and exchange at once
//! (`VHost::set_policies` walks them). Streams take a policy's retention
//! (`max-age`, `max-length-bytes`) at once and its
//! `stream-max-segment-size-bytes` when they open.
//!
//! Owns the vhost's `policies` lock, a leaf: held only to read or swap the
//! set (`VHost::set_policies` swaps it under `defs_lock`).

use crate::policy::{
    effective_queue_args, effective_stream_args, policy_alternate_exchange, Effective, Target,
    VhostPolicies,
};
use ferry_model::Table;
use ferry_queue::queue::QueueSpec;
use ferry_route::Exchange;
use parking_lot::RwLock;
use std::sync::Arc;

/// The policy target of a queue declared with these arguments.
pub(crate) fn queue_target(args: &Table) -> Target {
    let kind = args
        .get("x-queue-type")
        .and_then(ferry_model::args::text)
        .unwrap_or("classic");
    Target::of_queue_kind(kind)
}

/// A vhost's current policies and operator policies.
#[derive(Debug)]
pub(super) struct PolicyCell {
    policies: RwLock<Arc<VhostPolicies>>,
}

impl PolicyCell {
    /// Starts with `p`.
    pub(super) fn new(p: Arc<VhostPolicies>) -> Self {
        PolicyCell {
            policies: RwLock::new(p),
        }
    }

    /// The current set.
    pub(super) fn get(&self) -> Arc<VhostPolicies> {
        self.policies.read().clone()
    }

    /// Replaces the set (the caller holds the vhost's `defs_lock`).
    pub(super) fn set(&self, p: Arc<VhostPolicies>) {
        *self.policies.write() = p;
    }

    /// What applies to queue / exchange `name` of kind `t`.
    pub(super) fn effective(&self, name: &str, t: Target) -> Effective {
        self.policies.read().effective(name, t)
    }

    /// The arguments a queue with this declaration acts on now.
    pub(super) fn queue_args(&self, spec: &QueueSpec) -> Table {
        let e = self.effective(&spec.name, queue_target(&spec.arguments));
        if e.is_empty() {
            return spec.arguments.clone();
        }
        effective_queue_args(&spec.arguments, &e.definition)
    }

    /// The arguments a stream with this declaration acts on now.
    pub(super) fn stream_args(&self, spec: &QueueSpec) -> Table {
        let e = self.effective(&spec.name, Target::Stream);
        if e.is_empty() {
            return spec.arguments.clone();
        }
        effective_stream_args(&spec.arguments, &e.definition)
    }

    /// Sets the policy-given alternate exchange of `x`.
    pub(super) fn apply_to_exchange(&self, x: &mut Exchange) {
        let e = self.effective(&x.name, Target::Exchange);
        let ae = policy_alternate_exchange(&e.definition).map(Arc::from);
        x.set_policy(e.policy.as_deref().map(Arc::from), ae);
    }
}

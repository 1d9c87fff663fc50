//! The vhost's policies at work: queues open with their effective
//! arguments (declared ones combined with the winning policy and operator
//! policy), exchanges take a policy's `alternate-exchange`, and a change
//! of policies reaches every existing queue and exchange at once.
//! Streams take a policy's retention (`max-age`, `max-length-bytes`) at
//! once and its `stream-max-segment-size-bytes` when they open.

use super::VHost;
use crate::policy::{
    effective_queue_args, effective_stream_args, policy_alternate_exchange, Effective, Target,
    VhostPolicies,
};
use ferry_model::Table;
use ferry_queue::queue::QueueSpec;
use ferry_queue::source::QueueRef;
use ferry_route::Exchange;
use std::sync::Arc;

/// The policy target of a queue declared with these arguments.
pub(crate) fn queue_target(args: &Table) -> Target {
    let kind = args
        .get("x-queue-type")
        .and_then(ferry_model::args::text)
        .unwrap_or("classic");
    Target::of_queue_kind(kind)
}

impl VHost {
    /// The vhost's policies and operator policies.
    pub fn policies(&self) -> Arc<VhostPolicies> {
        self.policies.read().clone()
    }

    /// What applies to queue / exchange `name` of kind `t`.
    pub fn effective_policy(&self, name: &str, t: Target) -> Effective {
        self.policies.read().effective(name, t)
    }

    /// The arguments a queue with this declaration acts on now.
    pub(super) fn queue_effective_args(&self, spec: &QueueSpec) -> Table {
        let e = self.effective_policy(&spec.name, queue_target(&spec.arguments));
        if e.is_empty() {
            return spec.arguments.clone();
        }
        effective_queue_args(&spec.arguments, &e.definition)
    }

    /// The arguments a stream with this declaration acts on now.
    pub(super) fn stream_effective_args(&self, spec: &QueueSpec) -> Table {
        let e = self.effective_policy(&spec.name, Target::Stream);
        if e.is_empty() {
            return spec.arguments.clone();
        }
        effective_stream_args(&spec.arguments, &e.definition)
    }

    /// Sets the policy-given alternate exchange of `x`.
    pub(super) fn apply_exchange_policy(&self, x: &mut Exchange) {
        let e = self.effective_policy(&x.name, Target::Exchange);
        let ae = policy_alternate_exchange(&e.definition).map(Arc::from);
        x.set_policy(e.policy.as_deref().map(Arc::from), ae);
    }

    /// Replaces the vhost's policies and applies them to every queue and
    /// exchange (the broker persisted them first, holding
    /// `Broker.policy_write`). Holds `defs_lock` across the swap and the
    /// walk, so a concurrent declare (which computes its effective
    /// arguments under `defs_lock`) either comes first and is walked, or
    /// comes after and sees the new policies. Blocking: a new
    /// `max-length-bytes` reads message records (see
    /// `Queue::apply_arguments`); callers run off the async workers.
    pub fn set_policies(&self, p: Arc<VhostPolicies>) {
        let _d = self.defs_lock.lock();
        *self.policies.write() = p;
        {
            let mut exchanges = self.exchanges.write();
            for x in exchanges.values_mut() {
                self.apply_exchange_policy(x);
            }
        }
        for r in self.registry.open_refs() {
            match r {
                QueueRef::Queue(q) => q.apply_arguments(&self.queue_effective_args(q.spec())),
                QueueRef::Stream(s) => s.apply_arguments(&self.stream_effective_args(s.spec())),
            }
        }
    }
}

//! A vhost's part of the cluster's replicated definitions, read at one
//! instant for `crate::def_snapshot`: its durable exchanges (not the
//! predeclared ones), its replicated queues and streams, and the bindings
//! between those (from a durable exchange to a durable exchange or a
//! replicated queue).
//!
//! Reads only (under `defs_lock`, then `exchanges`, then the registry, as
//! the definitions file is written); must not change anything: changes go
//! through `crate::command::apply`. Node-local things (transient
//! exchanges, non-replicated queues and their bindings) are left out.

use super::registry::Registry;
use super::topology::Topology;
use super::VHost;
use crate::definitions::{BindingDef, ExchangeDef};
use crate::replicated;
use ferry_queue::queue::QueueSpec;
use ferry_route::Destination;

/// A replicated queue or stream as its declaration carried it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReplicatedQueueDef {
    /// Its declaration.
    pub(crate) spec: QueueSpec,
    /// Its group's id.
    pub(crate) group: u64,
    /// The nodes its declaration chose (empty: not recorded).
    pub(crate) replicas: Vec<u64>,
}

/// A vhost's replicated definitions.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplicatedDefs {
    /// Durable exchanges other than `""` and `amq.*`, by name.
    pub(crate) exchanges: Vec<ExchangeDef>,
    /// Replicated queues and streams (crashed ones too), by name.
    pub(crate) queues: Vec<ReplicatedQueueDef>,
    /// Bindings from a durable exchange to a durable exchange or a
    /// replicated queue: by source exchange, each source's in the order
    /// it stores them (a consistent-hash ring's order is its binding
    /// order, which rebuilding must repeat).
    pub(crate) bindings: Vec<BindingDef>,
}

impl VHost {
    /// This vhost's replicated definitions (see the module docs).
    pub(crate) fn replicated_definitions(&self) -> ReplicatedDefs {
        let _d = self.defs_lock.lock();
        let exchanges = self.topology.read();
        let names = self.registry.read();
        let (mut xs, mut bindings) = Topology::defs(&exchanges, &names);
        // `Topology::defs` leaves out the predeclared exchanges; no other
        // `amq.*` exchange can be declared (reserved prefix).
        xs.retain(|x| !x.name.starts_with("amq."));
        let queues: Vec<ReplicatedQueueDef> = Registry::queue_defs(&names)
            .into_iter()
            .filter_map(|q| {
                Some(ReplicatedQueueDef {
                    group: replicated::group_of(&q.storage)?,
                    spec: q.spec,
                    replicas: q.replicas,
                })
            })
            .collect();
        bindings.retain(|b| match &b.destination {
            // Both ends durable already (`Topology::defs`).
            Destination::Exchange(_) => true,
            Destination::Queue(q) => names
                .get(&**q)
                .is_some_and(|s| replicated::group_of(&s.storage).is_some()),
        });
        // Stable: each source keeps its own order.
        bindings.sort_by(|a, b| a.source.cmp(&b.source));
        ReplicatedDefs {
            exchanges: xs,
            queues,
            bindings,
        }
    }
}

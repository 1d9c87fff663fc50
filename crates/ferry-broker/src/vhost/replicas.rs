//! A vhost's replicated queues and streams: opening this node's replica
//! of one (declared through the definitions on every node, or reopened
//! at start) and handing it to the hub, which starts its group once the
//! node has joined its cluster.

use super::equivalence::check_queue_equivalent;
use super::{precondition, VHost};
use crate::replicated::{self, PendingReplica, Replicated};
use ferry_queue::error::Result;
use ferry_queue::queue::{Binding, QueueArgs, QueueSpec, Replica};
use ferry_queue::source::QueueRef;
use ferry_queue::stream::{Stream, StreamArgs};

impl VHost {
    /// Opens this node's replica of a replicated queue or stream,
    /// registers it with `replicas` (the members its declaration chose,
    /// recorded in the definitions) and hands it to the hub to start its
    /// group (formed with those members for a new declaration; joined as
    /// it is, or served from outside it, when `reopened` at start). A
    /// stream's own log is in `queues/group-<id>`.
    pub(super) fn open_replica(
        &self,
        spec: QueueSpec,
        group: u64,
        replicas: Vec<u64>,
        reopened: bool,
    ) -> Result<()> {
        let storage = replicated::storage_of(group);
        let recorded = replicas.clone();
        let (binding, log, proposer) = Binding::new();
        let kind = if StreamArgs::is_stream(&spec.arguments) {
            let args = self.policies.stream_args(&spec);
            let dir = self.dir.join("queues").join(&storage);
            let s = Stream::open_replica(
                spec,
                &args,
                self.name.clone(),
                dir,
                self.env.clone(),
                proposer,
            )?;
            self.registry
                .insert_replicated(QueueRef::Stream(s.clone()), storage, recorded);
            Replicated::Stream(s)
        } else {
            let args = self.policies.queue_args(&spec);
            let replica = Replica::open(
                spec,
                &args,
                self.name.clone(),
                self.env.clone(),
                log,
                proposer,
            );
            let q = QueueRef::Queue(replica.queue().clone());
            self.registry.insert_replicated(q, storage, recorded);
            Replicated::Queue(replica)
        };
        self.hub.start(PendingReplica {
            vhost: self.name.clone(),
            group,
            replicas,
            reopened,
            kind,
            binding,
        })
    }

    /// Declares a replicated queue or stream (`crate::command`: the same
    /// on every node): nothing if it exists and is equivalent.
    pub fn declare_replicated(
        &self,
        spec: QueueSpec,
        group: u64,
        replicas: Vec<u64>,
    ) -> Result<()> {
        ferry_queue::limits::check_short("queue", &spec.name)?;
        let _d = self.defs_lock.lock();
        self.check_alive()?;
        let stream = StreamArgs::is_stream(&spec.arguments);
        if let Some(existing) = self.registry.get(&spec.name) {
            let same_kind = match (existing.queue(), existing.stream(), stream) {
                (Some(q), _, false) => Some(q.spec().clone()),
                (_, Some(s), true) => Some(s.spec().clone()),
                _ => None,
            };
            return match same_kind {
                Some(have) => check_queue_equivalent(&have, &spec, &self.name),
                None => Err(precondition(format!(
                    "queue '{}' in vhost '{}' exists with another type",
                    spec.name, self.name
                ))),
            };
        }
        if stream {
            StreamArgs::validate_declaration(&spec, &self.name).map_err(precondition)?;
        } else {
            QueueArgs::validate_declaration(&spec, &self.name).map_err(precondition)?;
        }
        self.registry.check_limit(&spec.name)?;
        self.open_replica(spec, group, replicas, false)?;
        self.save()
    }

    /// The group of replicated queue or stream `name` (None: not
    /// replicated).
    pub fn replicated_group(&self, name: &str) -> Option<u64> {
        self.registry
            .get(name)
            .and_then(|s| replicated::group_of(&s.storage))
    }

    /// Records the nodes of replicated queue or stream `name`'s group
    /// `group` (nothing if `name` is not in that group).
    /// Unless this node stays a member, its replica is opened again with
    /// them: as a member when it joins (a learner of the group, catching
    /// up from the leader), as a node outside the group when it leaves or
    /// stays outside (whose guesses of the leader go to those nodes).
    pub fn set_replicas(&self, name: &str, group: u64, replicas: &[u64]) -> Result<()> {
        let _d = self.defs_lock.lock();
        if !self.registry.set_replicas(name, group, replicas) {
            return Ok(());
        }
        self.save()?;
        let Some(me) = self.hub.node_id() else {
            return Ok(());
        };
        let member_here = self.hub.status(group).is_some();
        if replicas.contains(&me) && member_here {
            // Its group's Raft knows the members itself.
            return Ok(());
        }
        let Some(slot) = self.registry.get(name) else {
            return Ok(());
        };
        let spec = match (slot.queue(), slot.stream()) {
            (Some(q), _) => q.spec().clone(),
            (_, Some(s)) => s.spec().clone(),
            _ => return Ok(()),
        };
        // Its member (and the member's Raft log) or its outside tasks go;
        // the replica opens anew with the group's nodes.
        self.hub.remove(group);
        self.registry.remove(name);
        self.open_replica(spec, group, replicas.to_vec(), true)
    }

    /// The nodes the definitions record for replicated queue or stream
    /// `name` (empty: not replicated, or not recorded).
    pub fn recorded_replicas(&self, name: &str) -> Vec<u64> {
        self.registry
            .get(name)
            .map(|s| s.replicas.to_vec())
            .unwrap_or_default()
    }

    /// This vhost's replicated queues and streams: name, group, the nodes
    /// its definitions record.
    pub fn replicated_members(&self) -> Vec<(String, u64, Vec<u64>)> {
        let names = self.registry.read();
        names
            .iter()
            .filter_map(|(name, slot)| {
                let group = replicated::group_of(&slot.storage)?;
                Some((name.to_string(), group, slot.replicas.to_vec()))
            })
            .collect()
    }
}

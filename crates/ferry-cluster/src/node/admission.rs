//! Which peers this node talks Raft with. A node whose data directory was
//! wiped (or replaced) comes back with its old id — derived from its
//! address — but without the votes and entries it acknowledged, and
//! letting it vote or count towards a commit again could lose committed
//! entries. Its new incarnation gives it away: as long as the metadata
//! group records another incarnation for its id, no node sends it a Raft
//! request or serves one from it. It may still ask to join, and the
//! leader then rebuilds it: out of the voters, its new incarnation
//! recorded, added back as a learner that catches up from the others, then
//! a voter again (`rpc::join`).

use super::machine::MetaMachine;
use crate::link::Admission;
use ferry_raft::NodeId;
use std::sync::Arc;

/// The check for this node's links, over the metadata it has applied.
pub(crate) fn admission(sm: MetaMachine) -> Admission {
    Arc::new(move |id, inc| check(&sm, id, inc))
}

/// None if node `id` of incarnation `inc` may take part in Raft; why not
/// otherwise.
pub(crate) fn check(sm: &MetaMachine, id: NodeId, inc: u64) -> Option<String> {
    sm.read(|s| match s.nodes.get(&id) {
        Some(m) if m.incarnation != 0 && m.incarnation != inc => Some(format!(
            "node {} ({}) came back with another data directory (incarnation {inc:016x}, the \
             cluster knows {:016x}): it takes no part in Raft until it has joined again and \
             caught up",
            m.name, m.advertise, m.incarnation
        )),
        _ => None,
    })
}

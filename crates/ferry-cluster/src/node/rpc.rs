//! The requests a node serves on its cluster port besides Raft's own:
//! joining, forwarded proposals and pings.

use super::meta::MetaCommand;
use super::{admission, NodeInner};
use crate::handshake::Identity;
use crate::listener::{Answer, Handler};
use crate::network::{answer, RaftGroups};
use crate::wire::{Frame, KIND_FORGET, KIND_JOIN, KIND_PING};
use bytes::{Buf, Bytes};
use ferry_raft::{Batch, NodeId};
use openraft::{BasicNode, ChangeMembers};
use std::collections::BTreeSet;
use std::sync::{Arc, Weak};

pub(crate) use crate::network::REDIRECT;

/// How the leader's refusal of a join starts when the joining node's name
/// is another member's: the joining node gives up (it does not start).
pub(crate) const NAME_TAKEN: &str = "node name taken: ";

/// Dispatches the frames that arrive on the cluster port.
pub(crate) struct NodeHandler {
    groups: Arc<RaftGroups>,
    node: Weak<NodeInner>,
}

impl NodeHandler {
    pub(crate) fn new(groups: Arc<RaftGroups>, node: Weak<NodeInner>) -> Self {
        NodeHandler { groups, node }
    }
}

/// A join request: `id u64 | u16 len name | u16 len advertise`.
pub(crate) fn encode_join(me: &Identity) -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&me.id.to_le_bytes());
    for t in [&me.name, &me.advertise] {
        crate::wire::put_text(&mut b, t, u16::MAX as usize);
    }
    Bytes::from(b)
}

fn decode_join(mut b: Bytes) -> Result<(NodeId, String), String> {
    if b.len() < 8 {
        return Err("truncated join".into());
    }
    let id = b.get_u64_le();
    let _name = crate::wire::take_text(&mut b).map_err(|e| e.to_string())?;
    let advertise = crate::wire::take_text(&mut b).map_err(|e| e.to_string())?;
    if super::identity::node_id(&advertise) != id {
        return Err(format!(
            "node id {id} does not belong to address {advertise}"
        ));
    }
    Ok((id, advertise))
}

/// The leader's address as an error answer, or "no leader".
/// Whether a metadata request's refusal only means the leader is
/// elsewhere or not elected yet (worth retrying), as `not_leader` words it.
pub(crate) fn leader_moved(reason: &str) -> bool {
    reason.starts_with(REDIRECT) || reason == NO_LEADER_YET
}

const NO_LEADER_YET: &str = "no metadata leader yet";

fn not_leader(node: &NodeInner) -> String {
    let m = node.meta.metrics().borrow().clone();
    match m.current_leader.and_then(|l| {
        m.membership_config
            .membership()
            .get_node(&l)
            .map(|n| n.addr.clone())
    }) {
        Some(addr) if m.current_leader != Some(node.me.id) => format!("{REDIRECT}{addr}"),
        _ => NO_LEADER_YET.into(),
    }
}

fn is_leader(node: &NodeInner) -> bool {
    node.meta.metrics().borrow().current_leader == Some(node.me.id)
}

async fn join(node: Arc<NodeInner>, from: Identity, body: Bytes) -> Result<Bytes, String> {
    let (id, addr) = decode_join(body)?;
    if id != from.id {
        return Err(format!("node {} asked to join as node {id}", from.id));
    }
    if !is_leader(&node) {
        return Err(not_leader(&node));
    }
    let m = node.meta.metrics().borrow().clone();
    let voter = m
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == id);
    // A node's name is unique in its cluster (a member that left, or was
    // forgotten, frees its name).
    let membership = m.membership_config.membership();
    let taken = node.sm.read(|s| {
        s.nodes
            .iter()
            .find(|(other, info)| {
                **other != id && info.name == from.name && membership.get_node(other).is_some()
            })
            .map(|(other, info)| (*other, info.advertise.clone()))
    });
    if let Some((other, at)) = taken {
        return Err(format!(
            "{NAME_TAKEN}{} is the name of node {other:016x} ({at}); start this node with \
             another --node-name, or forget that node first (ferry ctl cluster forget)",
            from.name
        ));
    }
    let stale = admission::check(&node.sm, id, from.incarnation).is_some();
    if voter && !stale {
        return Ok(Bytes::new());
    }
    if stale {
        // Its Raft state is gone: out of the voters (retain = false: not a
        // learner either), its new incarnation recorded, then back in below
        // as a learner that catches up from the others.
        tracing::warn!(node = id, %addr, "node came back with a new data directory; rebuilding it");
        if m.membership_config.membership().get_node(&id).is_some() {
            let change = match voter {
                true => ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                false => ChangeMembers::RemoveNodes(BTreeSet::from([id])),
            };
            node.meta
                .change_membership(change, false)
                .await
                .map_err(|e| e.to_string())?;
        }
        let info = MetaCommand::NodeInfo {
            id,
            name: from.name.clone(),
            advertise: addr.clone(),
            incarnation: from.incarnation,
        };
        node.meta
            .client_write(Batch::new(vec![info.encode()]))
            .await
            .map_err(|e| e.to_string())?;
    }
    // Add, then promote, each relative to the membership of the moment:
    // concurrent joins and forgets never undo each other.
    node.meta
        .add_learner(id, BasicNode { addr: addr.clone() }, false)
        .await
        .map_err(|e| e.to_string())?;
    node.meta
        .wait(Some(std::time::Duration::from_secs(10)))
        .metrics(
            |m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id))
                    .is_some_and(|matched| matched.is_some())
            },
            "the joining node caught up",
        )
        .await
        .map_err(|e| e.to_string())?;
    node.meta
        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(node = id, %addr, "node joined the cluster");
    Ok(Bytes::new())
}

/// Removes node `id` from the metadata group's voters and learners.
pub(crate) async fn forget(node: Arc<NodeInner>, body: Bytes) -> Result<Bytes, String> {
    let id = match <[u8; 8]>::try_from(&body[..]) {
        Ok(b) => NodeId::from_le_bytes(b),
        Err(_) => return Err("bad forget request".into()),
    };
    if !is_leader(&node) {
        return Err(not_leader(&node));
    }
    let m = node.meta.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    if membership.get_node(&id).is_none() {
        return Err(format!("node {id} is not a member"));
    }
    let is_voter = membership.voter_ids().any(|v| v == id);
    if is_voter && membership.voter_ids().count() == 1 {
        return Err("the last voter cannot be removed".into());
    }
    let change = if is_voter {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    // retain = false: a removed voter does not stay on as a learner.
    node.meta
        .change_membership(change, false)
        .await
        .map_err(|e| match e.forward_to_leader() {
            Some(_) => not_leader(&node),
            None => e.to_string(),
        })?;
    tracing::info!(node = id, "node removed from the cluster");
    Ok(Bytes::new())
}

/// A forwarded proposal's answer: `index u64 | the applied result`.
pub(crate) fn decode_proposed(mut b: Bytes) -> Result<(u64, Bytes), String> {
    if b.len() < 8 {
        return Err("truncated proposal answer".into());
    }
    Ok((b.get_u64_le(), b))
}

/// A ping's answer: 1 if this node knows a metadata leader (the cluster
/// formed), else 0; then this node's figures (`ClusterNode::set_stats`).
fn pong(node: &NodeInner) -> Bytes {
    let formed = node.meta.metrics().borrow().current_leader.is_some();
    let stats = node.stats.read().clone();
    let mut b = vec![u8::from(formed)];
    if let Some(f) = stats {
        b.extend_from_slice(&f());
    }
    Bytes::from(b)
}

impl Handler for NodeHandler {
    fn handle(&self, from: &Identity, frame: Frame) -> Answer {
        let node = self.node.upgrade();
        let from = from.clone();
        let groups = self.groups.clone();
        Box::pin(async move {
            let result = match (frame.kind, node) {
                (KIND_PING, n) => Ok(n.map_or_else(|| Bytes::from_static(&[0]), |n| pong(&n))),
                (KIND_JOIN, Some(n)) => join(n, from, frame.body.clone()).await,
                (_, Some(n)) if admission::check(&n.sm, from.id, from.incarnation).is_some() => {
                    Err(admission::check(&n.sm, from.id, from.incarnation).unwrap_or_default())
                }
                (KIND_FORGET, Some(n)) => forget(n, frame.body.clone()).await,
                (KIND_JOIN | KIND_FORGET, None) => Err("node stopping".into()),
                _ => groups.serve_frame(from.id, &frame).await,
            };
            answer(&frame, result)
        })
    }
}

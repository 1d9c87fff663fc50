//! Changing a replicated queue's or stream's members (RabbitMQ's
//! `delete_member` / `add_member`, `rabbitmq-queues shrink | grow`): the
//! group's leader changes the membership, any node asks through the
//! members. Taking a node out (`KIND_SHRINK`, what `forget_cluster_node`
//! does to every quorum queue of the forgotten node) is one joint-consensus
//! change: the remaining members must hold a majority of the old
//! membership. Adding one (`KIND_GROW`) makes it a learner that catches up
//! (entries, or the leader's snapshot) and a voter once it has what was
//! logged when it was added (`rebuild::promote`).
//!
//! Owns the requests (Shrink: the node id u64 LE; Grow: the node id u64 LE,
//! u16 LE length, its cluster address) and their answers; must not decide
//! which groups change (the broker does, from the replicas its definitions
//! record) nor touch the definitions.

use crate::link::Links;
use crate::network::FerryRaft;
use crate::slot::RaftSlot;
use crate::wire::{KIND_GROW, KIND_SHRINK};
use bytes::Bytes;
use ferry_raft::NodeId;
use openraft::ChangeMembers;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const NOT_LEADER: &str = "not the group's leader";
/// The answer of a leader asked to remove itself: another member must
/// lead first (a quiescent group's leader that removed itself would not
/// step down: it has no tick).
const LEADS_ITSELF: &str = "the group's leader cannot remove itself";

/// On the group's leader: removes node `who` (a voter or a learner) from
/// the group. Done when it is not a member (again).
pub(crate) async fn serve_shrink(raft: &FerryRaft, body: &[u8]) -> Result<Bytes, String> {
    let who = match <[u8; 8]>::try_from(body) {
        Ok(b) => NodeId::from_le_bytes(b),
        Err(_) => return Err("bad shrink request".into()),
    };
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(m.id) {
        return Err(NOT_LEADER.into());
    }
    let membership = m.membership_config.membership().clone();
    if membership.get_node(&who).is_none() {
        return Ok(Bytes::new());
    }
    if who == m.id {
        return Err(LEADS_ITSELF.into());
    }
    let voter = membership.voter_ids().any(|v| v == who);
    if voter && membership.voter_ids().count() == 1 {
        return Err("the group's last member cannot be removed".into());
    }
    let change = match voter {
        true => ChangeMembers::RemoveVoters(BTreeSet::from([who])),
        false => ChangeMembers::RemoveNodes(BTreeSet::from([who])),
    };
    raft.change_membership(change, false)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(node = who, "a node left a replicated group's members");
    Ok(Bytes::new())
}

/// One group's leader, to be asked through its members.
pub struct GroupAsk {
    /// The node's links.
    pub links: Arc<Links>,
    /// This node's own Raft of the group, if it is a member.
    pub local: Option<(NodeId, Arc<RaftSlot>)>,
    /// The group.
    pub group: u64,
    /// Its members (id, cluster address).
    pub members: Vec<(NodeId, String)>,
    /// How long to keep asking (an election may come first).
    pub timeout: Duration,
}

/// Removes node `who` from the group through its leader: each member is
/// asked in turn until the leader answers — after an election when `who`
/// was dead and led, or after another member stood for election when
/// `who` leads. Gives up after the timeout with the last refusal (e.g.
/// the others hold no majority of the group).
pub async fn remove_member(ask: GroupAsk, who: NodeId) -> Result<(), String> {
    let body = Bytes::copy_from_slice(&who.to_le_bytes());
    ask_leader(ask, who, KIND_SHRINK, body).await
}

/// Adds node `who` (cluster address `addr`) to the group through its
/// leader, asked as [`remove_member`] does; returns once the leader took
/// it as a learner (it becomes a voter when caught up).
pub async fn add_member(ask: GroupAsk, who: NodeId, addr: &str) -> Result<(), String> {
    ask_leader(ask, who, KIND_GROW, encode_grow(who, addr)).await
}

async fn ask_leader(ask: GroupAsk, who: NodeId, kind: u8, body: Bytes) -> Result<(), String> {
    let deadline = Instant::now() + ask.timeout;
    let mut last = String::from("no member to ask");
    loop {
        for (id, addr) in &ask.members {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = match &ask.local {
                Some((me, slot)) if me == id => match slot.raft().await {
                    Some(raft) if kind == KIND_SHRINK => serve_shrink(&raft, &body).await,
                    Some(raft) => serve_grow(&raft, &body).await,
                    None => Err("the group stopped on this node".into()),
                },
                _ => ask
                    .links
                    .link(*id, addr)
                    .request(
                        kind,
                        ask.group,
                        body.clone(),
                        left.max(Duration::from_millis(100)),
                    )
                    .await
                    .map(|_| Bytes::new())
                    .map_err(|e| e.to_string()),
            };
            match r {
                Ok(_) => return Ok(()),
                Err(e) if e.contains(LEADS_ITSELF) => {
                    // `who` leads: another member stands for election.
                    if let Some((other, a)) = ask.members.iter().find(|(id, _)| *id != who) {
                        stand_by(&ask, *other, a).await;
                    }
                    last = e;
                }
                Err(e) => last = e,
            }
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        // No leader among them yet (an election after a member's death,
        // or the one just asked for).
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks member `id` of the group to stand for election (at once if it is
/// this node's own member).
async fn stand_by(ask: &GroupAsk, id: NodeId, addr: &str) {
    let r = match &ask.local {
        Some((me, slot)) if *me == id => match slot.raft().await {
            Some(raft) => crate::network::stand(&raft).await.map(|_| ()),
            None => Err("the group stopped on this node".into()),
        },
        _ => ask
            .links
            .link(id, addr)
            .request(
                crate::wire::KIND_STAND,
                ask.group,
                Bytes::new(),
                Duration::from_secs(5),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    if let Err(e) = r {
        tracing::debug!(group = ask.group, node = id, error = %e, "a member did not stand");
    }
}

/// On the group's leader: adds node `who` (at the body's address) as a
/// learner, made a voter once caught up. Done when it is a member already.
pub(crate) async fn serve_grow(raft: &FerryRaft, body: &[u8]) -> Result<Bytes, String> {
    let (who, addr) = decode_grow(body).ok_or("bad grow request")?;
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(m.id) {
        return Err(NOT_LEADER.into());
    }
    let membership = m.membership_config.membership().clone();
    if membership.voter_ids().any(|v| v == who) {
        return Ok(Bytes::new());
    }
    if membership.get_node(&who).is_none() {
        raft.add_learner(who, openraft::BasicNode { addr }, false)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            node = who,
            "a node joins a replicated group's members (a learner first)"
        );
    }
    tokio::spawn(crate::rebuild::promote(raft.clone(), who));
    Ok(Bytes::new())
}

fn encode_grow(who: NodeId, addr: &str) -> Bytes {
    let mut b = Vec::with_capacity(10 + addr.len());
    b.extend_from_slice(&who.to_le_bytes());
    crate::wire::put_text(&mut b, addr, u16::MAX as usize);
    Bytes::from(b)
}

fn decode_grow(body: &[u8]) -> Option<(NodeId, String)> {
    let mut b = Bytes::copy_from_slice(body);
    if b.len() < 8 {
        return None;
    }
    let who = NodeId::from_le_bytes(b.split_to(8)[..].try_into().ok()?);
    let addr = crate::wire::take_text(&mut b).ok()?;
    b.is_empty().then_some((who, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grow_request_round_trips_and_refuses_bad_bytes() {
        let b = encode_grow(7, "10.0.0.7:25672");
        assert_eq!(decode_grow(&b), Some((7, "10.0.0.7:25672".to_string())));
        assert_eq!(decode_grow(&b[..b.len() - 1]), None);
        assert_eq!(decode_grow(&[1, 2, 3]), None);
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(decode_grow(&long), None);
    }
}

//! Taking a node out of a replicated queue's or stream's group (RabbitMQ's
//! `delete_member`, what `forget_cluster_node` does to every quorum queue
//! of the forgotten node): the group's leader changes the membership
//! (openraft's joint consensus: the remaining members must hold a majority
//! of the old membership), any node asks through the members.
//!
//! Owns the request (`KIND_SHRINK`, body: the node id u64 LE) and its
//! answer; must not decide which groups to shrink (the broker does, from
//! the replicas its definitions record) nor touch the definitions.

use crate::link::Links;
use crate::network::FerryRaft;
use crate::wire::KIND_SHRINK;
use bytes::Bytes;
use ferry_raft::NodeId;
use openraft::ChangeMembers;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const NOT_LEADER: &str = "not the group's leader";

/// On the group's leader: removes node `who` (a voter or a learner) from
/// the group. Done when it is not a member (again).
pub(crate) async fn serve(raft: &FerryRaft, body: &[u8]) -> Result<Bytes, String> {
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
        return Err("the group's leader cannot remove itself: move the leadership first".into());
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

/// Removes node `who` from `group` through its leader, asked through
/// `members` (id, cluster address; this node's own Raft as `local` if it
/// is a member): each is tried in turn until the leader answers — after
/// an election when `who` led. Gives up after `timeout` with the last
/// refusal (e.g. the others hold no majority of the group).
pub async fn remove_member(
    links: Arc<Links>,
    local: Option<(NodeId, FerryRaft)>,
    group: u64,
    members: &[(NodeId, String)],
    who: NodeId,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let body = Bytes::copy_from_slice(&who.to_le_bytes());
    let mut last = String::from("no member to ask");
    loop {
        for (id, addr) in members.iter().filter(|(id, _)| *id != who) {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = match &local {
                Some((me, raft)) if me == id => serve(raft, &body).await.map(|_| ()),
                _ => links
                    .link(*id, addr)
                    .request(
                        KIND_SHRINK,
                        group,
                        body.clone(),
                        left.max(Duration::from_millis(100)),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            match r {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        // No leader among them yet (an election after `who`'s death).
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

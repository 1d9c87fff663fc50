//! A member that lost its data comes back into its group (a wiped node's
//! replica): it asks the leader to take it back as a learner, catches
//! up, and is made a voter again once it has what was logged when it
//! asked.

use crate::link::Links;
use crate::network::FerryRaft;
use crate::wire::KIND_REBUILD;
use bytes::Bytes;
use ferry_raft::NodeId;
use std::sync::Arc;
use std::time::Duration;

/// A wiped node's member of a group lost the votes and entries it
/// acknowledged: `from` asks this node, the group's leader, to take it
/// back. It leaves the group and comes back as a learner (so it can vote
/// in no election with its empty log), catches up, and is made a voter
/// again once it has everything logged now ([`promote`]).
pub(crate) async fn rebuild(raft: FerryRaft, from: NodeId) -> Result<Bytes, String> {
    use openraft::ChangeMembers;
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(m.id) {
        if m.current_leader == Some(from) {
            // The node this one takes for the leader lost its data: it
            // leads no more, and its node answers pings again, so the
            // elector would not see it go. A voter stands (the asker
            // retries until some member leads).
            let _ = raft.trigger().elect().await;
        }
        return Err("not the group's leader".into());
    }
    let membership = m.membership_config.membership().clone();
    let Some(node) = membership.get_node(&from).cloned() else {
        return Err(format!("node {from} is not a member of this group"));
    };
    if membership.voter_ids().any(|v| v == from) {
        // Out of the group altogether, then back as a new learner: the
        // leader forgets how far the old member's log went (it is empty
        // now; openraft refuses a follower's log going back).
        raft.change_membership(ChangeMembers::RemoveVoters([from].into()), false)
            .await
            .map_err(|e| e.to_string())?;
        raft.add_learner(from, node, false)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            node = from,
            "a wiped member left the group's voters; it catches up as a learner"
        );
    }
    tokio::spawn(promote(raft, from));
    Ok(Bytes::new())
}

/// Makes learner `who` a voter again once it has what was logged when
/// it asked (for up to 30 minutes; it asks again if it stays a learner).
pub(crate) async fn promote(raft: FerryRaft, who: NodeId) {
    use openraft::ChangeMembers;
    let target = raft.metrics().borrow().last_log_index.unwrap_or(0);
    let mut rx = raft.metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30 * 60);
    loop {
        let m = rx.borrow().clone();
        if m.current_leader != Some(m.id)
            || m.membership_config
                .membership()
                .voter_ids()
                .any(|v| v == who)
        {
            return;
        }
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&who).copied().flatten())
            .map(|l| l.index);
        if matched.is_some_and(|i| i >= target) {
            break;
        }
        // Out of time, or the instance stopped.
        if !matches!(
            tokio::time::timeout_at(deadline, rx.changed()).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
    match raft
        .change_membership(ChangeMembers::AddVoterIds([who].into()), false)
        .await
    {
        Ok(_) => tracing::info!(node = who, "a rebuilt member is a voter of the group again"),
        Err(e) => tracing::warn!(node = who, error = %e, "cannot make a rebuilt member a voter"),
    }
}

/// Asks the group's leader, through any of `members` (id, cluster
/// address), to take this wiped node back as a learner; returns once
/// one did. Then this node's member may start (as a learner, with an
/// empty log).
pub async fn ask_rebuild(links: Arc<Links>, group: u64, members: Vec<(NodeId, String)>) {
    loop {
        for (id, addr) in &members {
            let r = links
                .link(*id, addr)
                .request(KIND_REBUILD, group, Bytes::new(), Duration::from_secs(10))
                .await;
            if r.is_ok_and(|f| f.kind == KIND_REBUILD | crate::wire::KIND_REPLY) {
                return;
            }
        }
        // No leader among them yet (an election, the others restarting).
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// While this node's member is a learner (rebuilt after a wipe), asks the
/// leader now and then to finish the rebuild (a leader that changed
/// meanwhile did not promote it).
pub(crate) async fn watch_learner(raft: FerryRaft, links: Arc<Links>, group: u64, me: NodeId) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let ask = {
            let m = raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            if membership.voter_ids().any(|v| v == me) {
                // A voter: only a wiped node's member (started anew) is ever
                // a learner, so this one never needs to ask: no timer left.
                return;
            }
            let learner = membership.get_node(&me).is_some();
            m.current_leader
                .filter(|l| learner && *l != me)
                .and_then(|l| membership.get_node(&l).map(|n| (l, n.addr.clone())))
        };
        if let Some((leader, addr)) = ask {
            let _ = links
                .link(leader, &addr)
                .request(KIND_REBUILD, group, Bytes::new(), Duration::from_secs(5))
                .await;
        }
    }
}

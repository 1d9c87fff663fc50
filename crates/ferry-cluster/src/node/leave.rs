//! Leaving the metadata group: a stopped member forgotten by another node
//! (RabbitMQ's `forget_cluster_node`) or a running node leaving by itself
//! (`ferry ctl cluster leave`, RabbitMQ's `stop_app` + `reset`). Either
//! way the metadata leader removes the node from the voters (or learners);
//! the stopped node may have been that leader, so the change waits for
//! the others to elect one.
//!
//! Must not touch the queue and stream groups: the broker takes the node
//! out of those first (`ferry_broker::shrink`).

use super::status::ForgetError;
use super::{rpc, ClusterNode};
use crate::error::LinkError;
use crate::wire::KIND_FORGET;
use bytes::Bytes;
use ferry_raft::NodeId;
use std::time::{Duration, Instant};

/// How long a removal waits for a metadata leader.
const LEADER_WAIT: Duration = Duration::from_secs(20);

impl ClusterNode {
    /// Removes a stopped member, named by its node name or cluster address,
    /// from the cluster (RabbitMQ's `forget_cluster_node`); returns its id.
    /// Refuses this node itself and a member that still answers.
    pub async fn forget(&self, who: &str) -> Result<NodeId, ForgetError> {
        let st = self.status().await;
        let member = st
            .members
            .iter()
            .find(|m| m.name == who || m.addr == who)
            .ok_or(ForgetError::NotAMember)?;
        if member.id == self.id() {
            return Err(ForgetError::Refused(
                "a node cannot forget itself: run this on another member (or leave)".into(),
            ));
        }
        if member.running {
            return Err(ForgetError::Refused(format!(
                "node {who} is running: stop it first (only a stopped node can be forgotten)"
            )));
        }
        self.remove_from_meta(member.id).await?;
        Ok(member.id)
    }

    /// Takes this running node out of the cluster's metadata group; then
    /// [`Self::exit`] resolves (the process stops: its data directory
    /// belongs to no cluster any more). The broker takes it out of its
    /// queue and stream groups first. Refuses the last voter.
    pub async fn leave(&self) -> Result<(), ForgetError> {
        let voters = self.voters();
        if !voters.contains_key(&self.id()) {
            return Err(ForgetError::NotAMember);
        }
        if voters.len() == 1 {
            return Err(ForgetError::Refused(
                "the cluster's last member cannot leave it".into(),
            ));
        }
        self.remove_from_meta(self.id()).await?;
        tracing::info!("this node left the cluster");
        self.inner.exit.send_replace(Some(super::NodeExit::Left));
        Ok(())
    }

    /// Has the metadata leader remove node `id`; waits up to 20 s for one.
    async fn remove_from_meta(&self, id: NodeId) -> Result<(), ForgetError> {
        let body = Bytes::copy_from_slice(&id.to_le_bytes());
        let deadline = Instant::now() + LEADER_WAIT;
        let mut metrics = self.inner.meta.metrics();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let why = match self.meta_leader() {
                Err(e) => e,
                Ok(None) => match rpc::forget(self.inner.clone(), body.clone()).await {
                    Ok(_) => return Ok(()),
                    Err(e) if rpc::leader_moved(&e) => e,
                    Err(e) => return Err(ForgetError::Refused(e)),
                },
                Ok(Some(link)) => {
                    match link
                        .request(KIND_FORGET, super::META_GROUP, body.clone(), left)
                        .await
                    {
                        Ok(_) => return Ok(()),
                        Err(LinkError::Remote { reason, .. }) if !rpc::leader_moved(&reason) => {
                            return Err(ForgetError::Refused(reason))
                        }
                        Err(e) => e.to_string(),
                    }
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ForgetError::NoLeader(why));
            }
            // A leader change wakes the retry; the cap retries a leader
            // that could not be reached a moment ago.
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(200)), metrics.changed()).await;
        }
    }
}

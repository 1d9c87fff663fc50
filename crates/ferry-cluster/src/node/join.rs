//! Joining another cluster on an operator's request (`ferry ctl cluster
//! join HOST:PORT`, RabbitMQ's `join_cluster`): only a node that is a
//! cluster of one may, and only towards a running cluster that answers
//! with the same secret. The node does not switch clusters in place: it
//! says it wants to start over ([`NodeExit::Join`]); the process resets
//! its data directory (as RabbitMQ's join resets the node) and starts
//! again with that cluster's address as its seed, then joins through the
//! seeds like any node started later.
//!
//! Must not touch the data directory: the process does the reset.

use super::status::ForgetError;
use super::{identity::node_id, ClusterNode, META_GROUP};
use crate::wire::KIND_PING;
use bytes::Bytes;
use std::time::Duration;

/// How long the running cluster has to answer the check.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a node's cluster side ends while the process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeExit {
    /// It left its cluster (`leave`): the process stops.
    Left,
    /// It is to join the cluster at this address: the process resets its
    /// data directory and starts again with it as its seed.
    Join(String),
    /// The cluster refused it (its node name is another member's): the
    /// process stops with this reason.
    Refused(String),
}

impl ClusterNode {
    /// Checks that this node may join the cluster one of whose nodes
    /// listens at `addr` — this node is the only member of its own
    /// cluster, and `addr` is another node that answers with the same
    /// secret and knows a metadata leader — then has [`Self::exit`]
    /// resolve with [`NodeExit::Join`]. Changes nothing when refused.
    pub async fn join_other(&self, addr: &str) -> Result<(), ForgetError> {
        let addr = addr.trim();
        if addr.is_empty() || !addr.contains(':') {
            return Err(ForgetError::Refused(format!(
                "'{addr}' is not a cluster address (HOST:PORT of a node's cluster_listen)"
            )));
        }
        let id = node_id(addr);
        if id == self.id() || addr == self.inner.cfg.listen {
            return Err(ForgetError::Refused(
                "that is this node's own cluster address".into(),
            ));
        }
        let voters = self.voters();
        if voters.len() > 1 || voters.keys().any(|v| *v != self.id()) {
            return Err(ForgetError::Refused(format!(
                "this node is a member of a cluster of {} nodes: `ferry ctl cluster leave` it \
                 first (and wipe its data directory), or join the other nodes to this cluster",
                voters.len()
            )));
        }
        // Asked over links of their own that present no cluster id: this
        // node's (its own cluster's) would be refused by the other cluster.
        let me = crate::handshake::Identity {
            cluster: crate::handshake::ClusterTag::default(),
            ..self.inner.me.clone()
        };
        let links = crate::link::Links::new(
            me,
            self.inner.cfg.secret.clone(),
            self.inner.cfg.tls.clone(),
        );
        let answer = links
            .link(id, addr)
            .request(KIND_PING, META_GROUP, Bytes::new(), ASK_TIMEOUT)
            .await;
        links.close();
        let answer = answer.map_err(|e| {
            ForgetError::Refused(format!("cluster node {addr} did not answer: {e}"))
        })?;
        if answer.body.first() != Some(&1) {
            return Err(ForgetError::Refused(format!(
                "cluster node {addr} answers but its cluster has no leader now: try again later"
            )));
        }
        tracing::warn!(
            cluster = %addr,
            "joining another cluster: this node resets its data directory and starts again"
        );
        self.inner
            .exit
            .send_replace(Some(NodeExit::Join(addr.to_owned())));
        Ok(())
    }

    /// Resolves once this node's cluster side has ended while the process
    /// runs: it left the cluster, or is to join another.
    pub async fn exit(&self) -> NodeExit {
        let mut rx = self.inner.exit.subscribe();
        let exit = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        match exit {
            Some(e) => e,
            // The sender lives as long as the node: never dropped first.
            None => std::future::pending().await,
        }
    }
}

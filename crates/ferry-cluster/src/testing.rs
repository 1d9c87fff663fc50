//! Nodes in one process for tests and measurements (feature
//! `test-support`): each with its cluster port on loopback serving its own
//! Raft groups, its links to the others, authenticated with one secret,
//! and its elector (which elects the leaders of quiescent groups).

use crate::handshake::{Identity, Secret};
use crate::link::Links;
use crate::listener::Listener;
use crate::network::RaftGroups;
use ferry_raft::NodeId;
use openraft::{BasicNode, Config};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One node: id, links, port, groups.
pub struct LocalNode {
    /// Its Raft node id (1, 2, ...).
    pub id: NodeId,
    /// Its links to the others.
    pub links: Arc<Links>,
    /// Its cluster port.
    pub listener: Listener,
    /// The Raft groups its port serves.
    pub groups: Arc<RaftGroups>,
}

impl std::fmt::Debug for LocalNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNode")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// `n` nodes (ids 1..=n) and the membership naming them all. Panics if a
/// port cannot be bound (a test's set-up).
pub async fn local_nodes(n: u64, secret: &Secret) -> (Vec<LocalNode>, BTreeMap<NodeId, BasicNode>) {
    let mut bound = Vec::new();
    for id in 1..=n {
        let groups = RaftGroups::new();
        let me = identity(id, String::new());
        let l = match Listener::bind(
            "127.0.0.1:0",
            me,
            (secret.clone(), None),
            Arc::new(groups.clone()),
        )
        .await
        {
            Ok(l) => l,
            Err(e) => panic!("bind a cluster port: {e}"),
        };
        bound.push((id, l, groups));
    }
    let members: BTreeMap<NodeId, BasicNode> = bound
        .iter()
        .map(|(id, l, _)| {
            let addr = l.local_addr().to_string();
            (*id, BasicNode { addr })
        })
        .collect();
    let peers: Vec<(NodeId, String)> = members
        .iter()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    let nodes = bound
        .into_iter()
        .map(|(id, listener, groups)| {
            let links = Links::new(
                identity(id, members[&id].addr.clone()),
                secret.clone(),
                None,
            );
            let peers = peers.clone();
            crate::elector::spawn(id, &links, groups.clone(), Arc::new(move || peers.clone()));
            LocalNode {
                id,
                links,
                listener,
                groups,
            }
        })
        .collect();
    (nodes, members)
}

fn identity(id: NodeId, advertise: String) -> Identity {
    Identity {
        id,
        name: format!("n{id}"),
        advertise,
        incarnation: 1,
        cluster: crate::handshake::ClusterTag::default(),
    }
}

/// Raft timers for tests: heartbeat 100 ms, election timeout 400–800 ms.
pub fn test_config() -> Arc<Config> {
    match (Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        ..Config::default()
    })
    .validate()
    {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("test config: {e}"),
    }
}

/// A queue group's settings for tests: a snapshot once `snapshot_bytes`
/// of records were applied; no hibernation.
pub fn test_group_config(snapshot_bytes: u64) -> crate::group::GroupConfig {
    match crate::group::queue_raft_config(Config::default()) {
        Ok(raft) => crate::group::GroupConfig {
            raft,
            snapshot_bytes,
            hibernate_after: None,
        },
        Err(e) => panic!("test group config: {e}"),
    }
}

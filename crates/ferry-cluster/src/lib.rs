//! # ferry-cluster: the links between Ferry nodes
//!
//! Owns the cluster port and the connections between nodes: the mutual
//! handshake with the cluster's shared secret (`handshake`), one
//! authenticated, multiplexed connection per peer for this node's requests
//! (`link`: frames tagged with a group id, answers matched by correlation
//! id, queued writes coalesced), the accepting side (`listener`), the frame
//! and Raft message codecs (`wire`, `docs/cluster-wire.md`) and openraft's
//! network over all of it (`network`: a client per group and target, and
//! the node's Raft instances answering their requests).
//!
//! It also owns a clustered node's runtime (`node`): identity in the data
//! directory, the metadata Raft group and how the cluster forms and grows;
//! and a replicated queue's group on a node (`group`: the proposer that
//! keeps a queue's proposals in order, batches and forwards them, and the
//! watch that makes the replica serve while this node leads; `admission`:
//! the leader passes every batch it proposes, its own or forwarded,
//! through its replica's decision, a reject-publish length limit), and how a
//! follower's consumers are served by the leader (`served` on the
//! leader, `port` on the follower: sessions, credit, pulls), and a queue
//! on a node outside its group (`outside`, `leadership`: the leader
//! guessed among the members), and a replicated stream's group
//! (`stream_group`: its proposer; every replica serves its own copy) and
//! its consumers on a node outside the group (`stream_port` there, a
//! reader per consumer; `stream_served` on the member it reads from).
//! Queue and stream groups are quiescent: a node-wide failure detector
//! elects their leaders (`elector`). An idle queue group hibernates: its
//! Raft instance stops and starts again from its kept log and state
//! machine when something needs it (`slot`). A wiped member comes back
//! as a learner (`rebuild`).
//!
//! Must not: know AMQP or what a Raft command means (a queue's commands
//! stay opaque bytes here), or let a connection that failed the handshake
//! reach Raft.

mod admission;
pub mod elector;
mod error;
pub mod group;
pub mod handshake;
pub mod leadership;
mod link;
mod listener;
pub mod membership;
mod network;
pub mod node;
pub mod outside;
mod port;
pub mod proposer;
pub mod rebuild;
mod served;
pub mod slot;
pub mod stream_group;
pub mod stream_port;
mod stream_served;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod tls;
pub mod wire;

pub use error::{LinkError, NodeError, WireError};
pub use handshake::{ClusterTag, Identity, Secret};
pub use link::{Admission, Links, PeerLink};
pub use listener::{Answer, Handler, Listener};
pub use network::{stand, FerryRaft, GroupClient, GroupNetwork, RaftGroups};
pub use tls::LinkTls;

/// Runs futures concurrently and collects their outputs in order.
pub(crate) async fn join_all<F>(fs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

//! Three nodes in one process, each with its own cluster port, links and
//! on-disk Raft log, form one Raft group over real TCP: they elect a
//! leader, replicate a write to everyone, and when the leader's node goes
//! away (its Raft, links and port all stop) the other two elect a new
//! leader that accepts writes. A dialer without the secret never reaches
//! Raft.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use ferry_cluster::testing::{local_nodes, test_config, LocalNode};
use ferry_cluster::{GroupNetwork, Identity, Links, Listener, Secret};
use ferry_log::{LogConfig, RoundPolicy, StdIo};
use ferry_queue::syncer::Syncer;
use ferry_raft::testing::Recorder;
use ferry_raft::{Batch, NodeId, RaftLog};
use openraft::Raft;
use std::sync::Arc;
use std::time::{Duration, Instant};

const GROUP: u64 = 7;

struct Node {
    id: NodeId,
    raft: Raft<ferry_raft::TypeConfig>,
    links: Arc<Links>,
    listener: Listener,
    sm: Recorder,
    _dir: tempfile::TempDir,
}

async fn start(n: usize, secret: &Secret) -> Vec<Node> {
    let syncer = Syncer::start(RoundPolicy::per_file()).expect("syncer");
    // Ports first: every node must know every address before it starts.
    let (local, members) = local_nodes(n as u64, secret).await;
    let mut nodes = Vec::new();
    for LocalNode {
        id,
        links,
        listener,
        groups,
    } in local
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = RaftLog::open(
            Arc::new(StdIo),
            dir.path(),
            LogConfig::default(),
            syncer.clone(),
        )
        .expect("log");
        let sm = Recorder::default();
        let raft = Raft::new(
            id,
            test_config(),
            GroupNetwork::new(GROUP, links.clone()),
            log,
            sm.clone(),
        )
        .await
        .expect("raft");
        groups.insert(GROUP, raft.clone());
        nodes.push(Node {
            id,
            raft,
            links,
            listener,
            sm,
            _dir: dir,
        });
    }
    // Every node starts from the same configuration (safe to do on all).
    // A node that already voted for another's first election refuses
    // (NotAllowed): it learns the configuration from that leader.
    for node in &nodes {
        match node.raft.initialize(members.clone()).await {
            Ok(()) => {}
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_),
            )) => {}
            Err(e) => panic!("initialize node {}: {e}", node.id),
        }
    }
    nodes
}

async fn leader_of(nodes: &[&Node], timeout: Duration) -> NodeId {
    let deadline = Instant::now() + timeout;
    loop {
        for n in nodes {
            let m = n.raft.metrics().borrow().clone();
            if m.current_leader == Some(n.id) {
                return n.id;
            }
        }
        assert!(Instant::now() < deadline, "no leader within {timeout:?}");
        // Woken by any metrics change of the first node, bounded by a tick.
        let mut rx = nodes[0].raft.metrics();
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
    }
}

async fn wait_applied(node: &Node, index: u64) {
    node.raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(index), "applied")
        .await
        .expect("applied in time");
}

/// Writes `cmd` through whichever of `nodes` leads, following
/// ForwardToLeader while the first elections settle (every node starts one).
/// Returns the leader that took it and the entry's index.
async fn write(nodes: &[&Node], cmd: &'static [u8]) -> (NodeId, u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let id = leader_of(nodes, deadline.saturating_duration_since(Instant::now())).await;
        let n = nodes.iter().find(|n| n.id == id).expect("leader node");
        match n
            .raft
            .client_write(Batch::new(vec![Bytes::from_static(cmd)]))
            .await
        {
            Ok(w) => return (id, w.log_id.index),
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(_),
            )) => assert!(Instant::now() < deadline, "no stable leader took the write"),
            Err(e) => panic!("write: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_fail_over_over_tcp() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let secret = Secret::new(b"test secret");
    let nodes = start(3, &secret).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let (first, index) = write(&all, b"m1").await;
    let leader = nodes.iter().find(|n| n.id == first).expect("leader node");
    for n in &nodes {
        wait_applied(n, index).await;
        assert_eq!(
            n.sm.read(|r| r.commands.clone()),
            vec![Bytes::from_static(b"m1")],
            "node {}",
            n.id
        );
    }

    // The leader's node goes away: Raft, links and cluster port.
    let killed_at = Instant::now();
    leader.raft.shutdown().await.expect("shutdown");
    leader.links.close();
    leader.listener.close();
    let rest: Vec<&Node> = nodes.iter().filter(|n| n.id != first).collect();
    let (second, index) = write(&rest, b"m2").await;
    assert_ne!(second, first);
    eprintln!(
        "failover: first committed write {:?} after the leader stopped",
        killed_at.elapsed()
    );
    for n in &rest {
        wait_applied(n, index).await;
        assert_eq!(
            n.sm.read(|r| r.commands.clone()),
            vec![Bytes::from_static(b"m1"), Bytes::from_static(b"m2")],
            "node {}",
            n.id
        );
    }
    for n in &rest {
        n.raft.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_without_the_secret_never_reaches_raft() {
    let secret = Secret::new(b"right");
    let nodes = start(1, &secret).await;
    let n = &nodes[0];
    leader_of(&[n], Duration::from_secs(10)).await;
    let intruder = Links::new(
        Identity {
            id: 99,
            name: "x".into(),
            advertise: String::new(),
            incarnation: 1,
            cluster: ferry_cluster::ClusterTag::default(),
        },
        Secret::new(b"wrong"),
        None,
    );
    let link = intruder.link(1, &n.listener.local_addr().to_string());
    let body = ferry_cluster::wire::encode_vote_req(&openraft::raft::VoteRequest {
        vote: ferry_raft::Vote::new(1_000, 99),
        last_log_id: None,
    });
    let err = link
        .request(
            ferry_cluster::wire::KIND_VOTE,
            GROUP,
            body,
            Duration::from_secs(5),
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(err, ferry_cluster::LinkError::Handshake { .. }),
        "{err}"
    );
    // The node kept its leadership: the forged vote never reached it.
    let m = n.raft.metrics().borrow().clone();
    assert_eq!(m.current_leader, Some(1));
    assert!(m.current_term < 1_000);
    n.raft.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_checked_both_ways_in_the_handshake() {
    let secret = Secret::new(b"right");
    let nodes = start(1, &secret).await;
    let n = &nodes[0];
    leader_of(&[n], Duration::from_secs(10)).await;
    let addr = n.listener.local_addr().to_string();
    let ping = |links: &std::sync::Arc<Links>, expect: u64| {
        let link = links.link(expect, &addr);
        async move {
            link.request(
                ferry_cluster::wire::KIND_VOTE,
                GROUP,
                bytes::Bytes::new(),
                Duration::from_secs(5),
            )
            .await
        }
    };
    // The dialer expected another node at that address: refused before it proves itself.
    let other = Links::new(
        Identity {
            id: 50,
            name: "x".into(),
            advertise: String::new(),
            incarnation: 1,
            cluster: ferry_cluster::ClusterTag::default(),
        },
        secret.clone(),
        None,
    );
    let err = ping(&other, 99).await.expect_err("wrong peer id");
    assert!(err.to_string().contains("not node 99"), "{err}");
    // A dialer claiming the node's own id (a reflection) is refused by the node.
    let mirror = Links::new(
        Identity {
            id: 1,
            name: "x".into(),
            advertise: String::new(),
            incarnation: 1,
            cluster: ferry_cluster::ClusterTag::default(),
        },
        secret.clone(),
        None,
    );
    let err = ping(&mirror, 1).await.expect_err("own id");
    assert!(
        matches!(err, ferry_cluster::LinkError::Handshake { .. }),
        "{err}"
    );
    n.raft.shutdown().await.expect("shutdown");
}

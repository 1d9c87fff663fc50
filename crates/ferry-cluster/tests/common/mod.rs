//! Three nodes in one process, each with its replica of one replicated
//! queue's group, over real TCP links and real openraft.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use ferry_cluster::group::{GroupConfig, QueueGroup};
use ferry_cluster::testing::{local_nodes, test_group_config, LocalNode};
use ferry_cluster::{Links, Listener, Secret};
use ferry_log::{LogConfig, RoundPolicy, StdIo};
use ferry_queue::queue::{ConfirmToken, Replica};
use ferry_queue::syncer::Syncer;
use ferry_queue::test_support::{message, mtable, spec, Confirms, Fixture, Taker};
use ferry_raft::{NodeId, RaftLog};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const GROUP: u64 = 9;

pub struct Node {
    pub id: NodeId,
    pub group: QueueGroup,
    pub links: Arc<Links>,
    pub listener: Listener,
    pub dir: tempfile::TempDir,
}

pub async fn start(fx: &Fixture) -> Vec<Node> {
    start_with(fx, 64 << 20).await
}

/// Three nodes whose groups snapshot every `snapshot_bytes` of records.
pub async fn start_with(fx: &Fixture, snapshot_bytes: u64) -> Vec<Node> {
    start_args(fx, snapshot_bytes, &[]).await
}

/// Three nodes of a queue declared with `args`.
pub async fn start_args(
    fx: &Fixture,
    snapshot_bytes: u64,
    args: &[(&str, ferry_model::Value)],
) -> Vec<Node> {
    start_opts(fx, snapshot_bytes, args, None).await
}

/// Three nodes of a queue declared with `args`, whose groups hibernate
/// after `hibernate` unused.
pub async fn start_opts(
    fx: &Fixture,
    snapshot_bytes: u64,
    args: &[(&str, ferry_model::Value)],
    hibernate: Option<Duration>,
) -> Vec<Node> {
    let syncer = Syncer::start(RoundPolicy::per_file()).expect("syncer");
    let (local, members) = local_nodes(3, &Secret::new(b"s")).await;
    let mut nodes = Vec::new();
    for LocalNode {
        id,
        links,
        listener,
        groups,
    } in local
    {
        let dir = tempfile::tempdir().expect("tempdir");
        // Small groups get small segments (a purge removes whole ones).
        let cfg = match snapshot_bytes < 1 << 20 {
            true => LogConfig {
                segment_bytes: 32 << 10,
                ..LogConfig::default()
            },
            false => LogConfig::default(),
        };
        let log = RaftLog::open(Arc::new(StdIo), dir.path(), cfg, syncer.clone()).expect("log");
        let env = fx.env();
        let group = QueueGroup::start(
            GROUP,
            id,
            &GroupConfig {
                hibernate_after: hibernate,
                ..test_group_config(snapshot_bytes)
            },
            links.clone(),
            groups,
            log,
            |l, p| {
                Replica::open(
                    spec("rq", true, mtable(args)),
                    &mtable(args),
                    Arc::from("/"),
                    env,
                    l,
                    p,
                )
            },
        )
        .await
        .expect("group");
        nodes.push(Node {
            id,
            group,
            links,
            listener,
            dir,
        });
    }
    for n in &nodes {
        let _ = n
            .group
            .raft()
            .await
            .expect("started")
            .initialize(members.clone())
            .await;
    }
    nodes
}

/// Polls `ok` (a state that changes on its own: elections, replication)
/// until it holds.
pub async fn until(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The node whose replica serves (leads and caught up).
pub async fn serving(nodes: &[&Node]) -> NodeId {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for n in nodes {
            let m = n.group.slot().with_metrics(Clone::clone);
            if m.current_leader == Some(n.id) && n.group.replica().serves() {
                return n.id;
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The node that serves (its id) and one that does not.
pub async fn roles(nodes: &[Node]) -> (&Node, &Node) {
    let all: Vec<&Node> = nodes.iter().collect();
    let l = serving(&all).await;
    let leader = nodes.iter().find(|n| n.id == l).unwrap();
    let follower = nodes.iter().find(|n| n.id != l).unwrap();
    (leader, follower)
}

/// The node goes away: its group, its links, its port.
pub async fn go_away(n: &Node) {
    n.group.shutdown().await;
    n.links.close();
    n.listener.close();
}

pub fn publish(n: &Node, body: &str, confirms: &Arc<Confirms>, seq: u64) {
    let t = ConfirmToken {
        sink: confirms.clone(),
        seq,
    };
    n.group
        .replica()
        .queue()
        .publish(&Arc::new(message(body, true)), Some(t))
        .unwrap();
}

/// A consumer `tag` on `n`'s replica, taking up to `credit` unacked.
pub fn consumer(n: &Node, tag: &str, credit: u32) -> Arc<Taker> {
    let taker = Taker::new(credit);
    let q = n.group.replica().queue();
    q.consume(Arc::from(tag), taker.clone(), false, false)
        .unwrap();
    q.dispatch();
    taker
}

/// `m{from}` .. `m{to}`.
pub fn want_in_order(from: u64, to: u64) -> Vec<String> {
    (from..=to).map(|i| format!("m{i}")).collect()
}

//! A replicated stream read through a node outside its group, in one
//! process over real TCP links and real openraft: a stream group on three
//! of four nodes, the fourth holding no copy. Its consumer gets the
//! committed records from the offset it asked for, within its credit,
//! with the same offsets and messages (the `x-stream-offset` header
//! included) as a member's own reads; it follows the tail; when the member
//! it reads from goes away it reads on from another, nothing skipped or
//! doubled; cancelled, its reader ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_cluster::leadership::{Guess, Leadership};
use ferry_cluster::stream_group::StreamGroup;
use ferry_cluster::stream_port::StreamReaders;
use ferry_cluster::testing::{local_nodes, test_group_config, LocalNode};
use ferry_cluster::{Links, Listener, Secret};
use ferry_log::{LogConfig, RoundPolicy, StdIo};
use ferry_queue::queue::{Binding, ConfirmToken, Proposer};
use ferry_queue::stream::{ReadBatch, ReadLimits, Stream, StreamConsume};
use ferry_queue::syncer::Syncer;
use ferry_queue::test_support::{body_of, message, ms, mtable, spec, Confirms, Fixture, Taker};
use ferry_raft::RaftLog;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const GROUP: u64 = 21;

struct Member {
    id: u64,
    group: StreamGroup,
    stream: Arc<Stream>,
    links: Arc<Links>,
    listener: Listener,
    _dir: tempfile::TempDir,
    _fx: Fixture,
}

/// Opens this node's copy of stream `s` (its publishes go to `proposer`).
fn open_stream(fx: &Fixture, proposer: Arc<dyn Proposer>) -> Arc<Stream> {
    let sp = spec("s", true, mtable(&[("x-queue-type", ms("stream"))]));
    let args = sp.arguments.clone();
    Stream::open_replica(
        sp,
        &args,
        Arc::from("/"),
        PathBuf::from("/data/s"),
        fx.env(),
        proposer,
    )
    .expect("open the stream")
}

/// Nodes 1..=3 run the stream's group; node 4 is outside it: its stream
/// reads through them.
async fn start() -> (Vec<Member>, LocalNode, Vec<(u64, String)>) {
    let syncer = Syncer::start(RoundPolicy::per_file()).expect("syncer");
    let (mut local, all) = local_nodes(4, &Secret::new(b"s")).await;
    let outside = local.pop().expect("node 4");
    let members: BTreeMap<u64, openraft::BasicNode> = all
        .into_iter()
        .filter(|(id, _)| *id != outside.id)
        .collect();
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
        .expect("raft log");
        let fx = Fixture::new();
        let (binding, _, proposer) = Binding::new();
        let stream = open_stream(&fx, proposer);
        let (group, p) = StreamGroup::start(
            GROUP,
            id,
            &test_group_config(64 << 20),
            links.clone(),
            groups,
            log,
            stream.clone(),
        )
        .await
        .expect("stream group");
        binding.bind_proposer(p);
        nodes.push(Member {
            id,
            group,
            stream,
            links,
            listener,
            _dir: dir,
            _fx: fx,
        });
    }
    for n in &nodes {
        let _ = n.group.raft().initialize(members.clone()).await;
    }
    until("the group elected a leader", || {
        nodes
            .iter()
            .all(|n| n.group.raft().metrics().borrow().current_leader.is_some())
    })
    .await;
    let addrs = members
        .iter()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    (nodes, outside, addrs)
}

/// Polls `ok` (replication, elections, reads over the links) until it
/// holds.
async fn until(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `bodies` through `s` and waits for their confirms.
async fn publish(s: &Stream, bodies: &[String]) {
    let confirms = Arc::new(Confirms::default());
    for (i, b) in bodies.iter().enumerate() {
        let t = ConfirmToken {
            sink: confirms.clone(),
            seq: i as u64,
        };
        s.publish(&Arc::new(message(b, true)), Some(t)).unwrap();
    }
    until("every publish answered", || {
        confirms.ok.lock().len() + confirms.failed.lock().len() == bodies.len()
    })
    .await;
    assert!(
        confirms.failed.lock().is_empty(),
        "nacked: {:?}",
        confirms.failed.lock()
    );
}

/// A member's own reads from offset 0: (offset, message).
async fn on_member(s: &Arc<Stream>) -> Vec<(u64, ferry_model::message::Message)> {
    let s = s.clone();
    tokio::task::spawn_blocking(
        move || match s.read(0, ReadLimits::bytes(1 << 30)).unwrap() {
            ReadBatch::Records { records, .. } => {
                records.into_iter().map(|r| (r.offset, r.message)).collect()
            }
            other => panic!("{other:?}"),
        },
    )
    .await
    .unwrap()
}

fn consume(s: &Stream, taker: &Arc<Taker>, offset: ferry_model::Value) -> u64 {
    let args = mtable(&[("x-stream-offset", offset)]);
    let id = s
        .consume(
            Arc::from("c"),
            taker.clone(),
            StreamConsume {
                no_ack: false,
                prefetch: 5,
                arguments: &args,
            },
        )
        .expect("consume outside the group");
    s.dispatch();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_outside_the_group_reads_through_the_members_and_moves_on() {
    let (nodes, outside, members) = start().await;
    let bodies: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    publish(&nodes[1].stream, &bodies).await;

    // Node 4's copy of the stream holds nothing; it reads through the group.
    let fx = Fixture::new();
    let (_binding, _, proposer) = Binding::new();
    let stream = open_stream(&fx, proposer);
    let lead = Leadership::Outside(Guess::new(members.clone()));
    let readers = StreamReaders::new(lead, outside.links.clone(), GROUP, &stream);
    stream.read_through(Arc::new(readers.clone()));
    assert!(!stream.holds_copy());

    // Within its credit: 5, then nothing until credit comes back.
    let taker = Taker::new(5);
    let id = consume(&stream, &taker, ms("first"));
    until("the first window", || taker.got.lock().len() == 5).await;
    assert_eq!(taker.offsets(), (0..5).collect::<Vec<u64>>());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(taker.got.lock().len(), 5, "nothing beyond the credit");
    assert_eq!(stream.remote_room(id, 256), Some(0));
    taker.grant(1000);
    stream.settle(&[0, 1, 2, 3, 4]).unwrap();
    until("every committed record", || taker.got.lock().len() == 30).await;
    let member = on_member(&nodes[0].stream).await;
    let got: Vec<(u64, ferry_model::message::Message)> = taker
        .got
        .lock()
        .iter()
        .map(|d| (d.msg_id, (*d.message).clone()))
        .collect();
    assert_eq!(
        got, member,
        "the member's offsets and messages, headers included"
    );
    assert_eq!(taker.bodies(), bodies, "in publish order");

    // A second consumer from offset 20.
    let t2 = Taker::new(1000);
    let id2 = consume(&stream, &t2, ferry_model::Value::I64(20));
    until("from offset 20", || t2.got.lock().len() == 10).await;
    assert_eq!(t2.offsets(), (20..30).collect::<Vec<u64>>());

    // The member it reads from (the first guessed) goes away; the tail
    // published meanwhile comes through another member.
    let first = nodes.iter().find(|n| n.id == members[0].0).unwrap();
    first.group.shutdown().await;
    first.links.close();
    first.listener.close();
    let more: Vec<String> = (30..40).map(|i| format!("m{i}")).collect();
    let survivor = nodes.iter().find(|n| n.id != first.id).unwrap();
    until("a leader among the survivors", || {
        let l = survivor.group.raft().metrics().borrow().current_leader;
        l.is_some_and(|l| l != first.id)
    })
    .await;
    publish(&survivor.stream, &more).await;
    until("the tail through another member", || {
        taker.got.lock().len() == 40 && t2.got.lock().len() == 20
    })
    .await;
    assert_eq!(taker.offsets(), (0..40).collect::<Vec<u64>>());
    assert_eq!(t2.offsets(), (20..40).collect::<Vec<u64>>());
    assert_eq!(body_of(&taker.got.lock()[39].message), "m39");

    // Cancelled, their readers end.
    assert_eq!(readers.len(), 2);
    stream.cancel(id);
    stream.cancel(id2);
    until("the readers ended", || readers.is_empty()).await;
}

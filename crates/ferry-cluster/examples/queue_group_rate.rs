//! How fast one replicated queue's group confirms and delivers: three
//! nodes in one process over loopback TCP (real links, openraft, Raft logs
//! on disk with the node's durability rounds), a publisher on the leader
//! keeping a window of unconfirmed messages, a consumer acking everything
//! it gets. Prints one line of figures.
//!
//! `cargo run --release -p ferry-cluster --example queue_group_rate -- [MESSAGES] [WINDOW] [BYTES]`

#![allow(clippy::expect_used, clippy::unwrap_used)]

use ferry_cluster::group::{queue_raft_config, GroupConfig, QueueGroup};
use ferry_cluster::testing::{local_nodes, LocalNode};
use ferry_cluster::Secret;
use ferry_log::{LogConfig, RoundPolicy, StdIo};
use ferry_queue::clock::SystemClock;
use ferry_queue::queue::{
    ConfirmSink, ConfirmToken, ConsumerSink, Delivery, QueueEnv, QueueSpec, Replica,
};
use ferry_queue::syncer::Syncer;
use ferry_raft::RaftLog;
use openraft::Config;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Count {
    confirmed: AtomicU64,
    failed: AtomicU64,
}

impl ConfirmSink for Count {
    fn confirmed(&self, seqs: &[u64]) {
        self.confirmed
            .fetch_add(seqs.len() as u64, Ordering::Relaxed);
    }
    fn failed(&self, seqs: &[u64]) {
        self.failed.fetch_add(seqs.len() as u64, Ordering::Relaxed);
    }
}

/// Takes everything; the main loop acks what arrived.
#[derive(Debug, Default)]
struct Sink {
    got: Mutex<Vec<u64>>,
    delivered: AtomicU64,
}

impl ConsumerSink for Sink {
    fn reserve(&self) -> bool {
        true
    }
    fn unreserve(&self) {}
    fn deliver(&self, _tag: &Arc<str>, d: Delivery) {
        self.got.lock().push(d.msg_id);
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }
    fn cancelled(&self, _tag: &Arc<str>) {}
}

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total = arg(1, 100_000);
    let window = arg(2, 5_000);
    let size = arg(3, 100) as usize;
    let secret = Secret::new(b"rate");
    let syncer = Syncer::start(RoundPolicy::per_file()).expect("syncer");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (local, members) = local_nodes(3, &secret).await;
    let config = GroupConfig {
        raft: queue_raft_config(Config {
            heartbeat_interval: 250,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            max_payload_entries: 1024,
            ..Config::default()
        })
        .expect("config"),
        snapshot_bytes: 64 << 20,
        hibernate_after: None,
    };
    let mut nodes = Vec::new();
    let mut listeners = Vec::new();
    for (
        LocalNode {
            id,
            links,
            listener,
            groups,
        },
        dir,
    ) in local.into_iter().zip(&dirs)
    {
        let log = RaftLog::open(
            Arc::new(StdIo),
            dir.path(),
            LogConfig::default(),
            syncer.clone(),
        )
        .expect("log");
        let env = QueueEnv::new(
            Arc::new(StdIo),
            syncer.clone(),
            LogConfig::default(),
            64 << 20,
        )
        .with_clock(Arc::new(SystemClock));
        let spec = QueueSpec {
            name: Arc::from("rate"),
            durable: true,
            exclusive_owner: None,
            auto_delete: false,
            arguments: Default::default(),
        };
        let g = QueueGroup::start(9, id, &config, links, groups, log, move |l, p| {
            Replica::open(spec, &Default::default(), Arc::from("/"), env, l, p)
        })
        .await
        .expect("group");
        nodes.push((id, g));
        listeners.push(listener);
    }
    for (_, g) in &nodes {
        let _ = g
            .raft()
            .await
            .expect("started")
            .initialize(members.clone())
            .await;
    }
    // The leader, once it serves.
    let leader = loop {
        let found = nodes
            .iter()
            .find(|(id, g)| g.slot().with_metrics(|m| m.current_leader) == Some(*id));
        if let Some((_, g)) = found {
            break g;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let q = leader.replica().queue().clone();
    let sink = Arc::new(Sink::default());
    q.consume(Arc::from("c"), sink.clone(), false, false)
        .expect("consume");
    q.dispatch();
    let count = Arc::new(Count::default());
    let template = ferry_queue::test_support::message(&"x".repeat(size), true);
    let start = Instant::now();
    let mut sent = 0u64;
    while count.confirmed.load(Ordering::Relaxed) < total
        || sink.delivered.load(Ordering::Relaxed) < total
    {
        let confirmed = count.confirmed.load(Ordering::Relaxed);
        while sent < total && sent - confirmed < window {
            sent += 1;
            let m = Arc::new(template.clone());
            let t = ConfirmToken {
                sink: count.clone(),
                seq: sent,
            };
            q.publish(&m, Some(t)).expect("publish");
        }
        let acks: Vec<u64> = std::mem::take(&mut *sink.got.lock());
        if !acks.is_empty() {
            q.settle(&acks).expect("ack");
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
        if start.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "queue group, 3 nodes in-process over loopback: {total} msgs of {size} B, window {window}: \
         {:.0} msg/s confirmed+delivered+acked ({:.2} s), failed {}",
        total as f64 / secs,
        secs,
        count.failed.load(Ordering::Relaxed)
    );
    for (_, g) in &nodes {
        g.shutdown().await;
    }
    drop(listeners);
}

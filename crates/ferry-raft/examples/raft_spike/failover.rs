//! `failover`: mark the node leading ~1/3 of the groups down; for each group
//! it led, time until a new leader is elected and a `client_write` to it
//! commits.
//!
//! With `--quiescent`, groups never tick; a node-level failure detector (one
//! task per node, the stand-in for pings over the node link) declares a peer
//! dead after `--fd-timeout-ms` of unreachability, and the lowest-id live node
//! then calls `trigger().elect()` on every group whose leader was that peer.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_raft::{Batch, NodeId};
use openraft::ServerState;

use crate::cluster::{node_index, Cluster, FlushSpec, TimerArgs, Timers, NODES};
use crate::procstat::{loadavg, quantile};
use crate::report::Row;
use crate::SpikeError;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Raft groups (each has 3 replicas).
    #[arg(long, default_value_t = 100)]
    groups: u64,
    #[command(flatten)]
    timers: TimerArgs,
    /// The node to take down.
    #[arg(long, default_value_t = 1)]
    victim: NodeId,
    /// Idle time between the warm-up writes and the kill, ms.
    #[arg(long, default_value_t = 5000)]
    settle_ms: u64,
    /// Give up on a group after this long, seconds.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
    /// Failure detector period (quiescent mode), ms.
    #[arg(long, default_value_t = 250)]
    fd_interval_ms: u64,
    /// Unreachable this long = dead (quiescent mode), ms.
    #[arg(long, default_value_t = 1000)]
    fd_timeout_ms: u64,
}

/// Per affected group: first live leader seen, first committed write.
type Outcome = (Option<Duration>, Option<Duration>);

pub async fn run(args: Args) -> Result<Row, SpikeError> {
    let timers = Timers::from_args(&args.timers)?;
    let load = loadavg();
    let cluster = Arc::new(Cluster::start(args.groups, timers, FlushSpec::Immediate).await?);
    cluster.initialize().await?;
    cluster.wait_leaders(Duration::from_secs(600)).await?;
    for group in &cluster.groups {
        let (_, leader) = cluster
            .live_leader(group)
            .ok_or_else(|| SpikeError::Timeout(format!("group {} has no leader", group.id)))?;
        leader.client_write(request()).await?;
    }
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;

    let stop = Arc::new(AtomicBool::new(false));
    if timers.quiescent {
        for node in NODES {
            let fd = Detector {
                cluster: cluster.clone(),
                me: node,
                interval: Duration::from_millis(args.fd_interval_ms),
                timeout: Duration::from_millis(args.fd_timeout_ms),
                stop: stop.clone(),
            };
            tokio::spawn(fd.run());
        }
    }

    let affected: Vec<usize> = (0..cluster.groups.len())
        .filter(|i| {
            cluster
                .live_leader(&cluster.groups[*i])
                .is_some_and(|(n, _)| n == args.victim)
        })
        .collect();
    eprintln!(
        "failover {}: node {} leads {} of {} groups; marking it down",
        timers.label(),
        args.victim,
        affected.len(),
        cluster.groups.len()
    );
    let t0 = Instant::now();
    cluster.router.set_down(args.victim, true)?;
    let mut probes = Vec::new();
    for i in affected.iter().copied() {
        let cluster = cluster.clone();
        let timeout = Duration::from_secs(args.timeout_s);
        probes.push(tokio::spawn(probe(cluster, i, t0, timeout)));
    }
    let mut leader_times = Vec::new();
    let mut write_times = Vec::new();
    let mut failed = 0;
    for probe in probes {
        match probe.await {
            Ok((leader, Some(write))) => {
                leader_times.extend(leader);
                write_times.push(write);
            }
            _ => failed += 1,
        }
    }
    stop.store(true, Ordering::SeqCst);
    leader_times.sort_unstable();
    write_times.sort_unstable();

    let mut row = Row::new();
    row.add("measurement", "failover")
        .add("groups", args.groups)
        .add("hb / election ms", timers.label())
        .add("quiescent + FD", timers.quiescent);
    if timers.quiescent {
        row.add(
            "FD interval / timeout ms",
            format!("{} / {}", args.fd_interval_ms, args.fd_timeout_ms),
        );
    }
    row.add("groups led by victim", affected.len())
        .ms("new leader p50 ms", quantile(&leader_times, 0.5))
        .ms("first write p50 ms", quantile(&write_times, 0.5))
        .ms("first write p99 ms", quantile(&write_times, 0.99))
        .ms("first write max ms", write_times.last().copied())
        .ms("first write min ms", write_times.first().copied())
        .add("failed", failed)
        .add("loadavg before", load);
    cluster.stop_rounds();
    Ok(row)
}

/// One 100-byte command.
fn request() -> Batch {
    Batch::new(vec![Bytes::from_static(&[0u8; 100])])
}

/// Poll group `i` every 10 ms for a live leader; write to it until a write
/// commits.
async fn probe(cluster: Arc<Cluster>, i: usize, t0: Instant, timeout: Duration) -> Outcome {
    let group = &cluster.groups[i];
    let mut first_leader = None;
    while t0.elapsed() < timeout {
        if let Some((_, raft)) = cluster.live_leader(group) {
            first_leader.get_or_insert_with(|| t0.elapsed());
            let write = tokio::time::timeout(Duration::from_secs(2), raft.client_write(request()));
            if let Ok(Ok(_)) = write.await {
                return (first_leader, Some(t0.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (first_leader, None)
}

/// The node-level failure detector of one node (quiescent mode).
struct Detector {
    cluster: Arc<Cluster>,
    me: NodeId,
    interval: Duration,
    timeout: Duration,
    stop: Arc<AtomicBool>,
}

impl Detector {
    async fn run(self) {
        let router = &self.cluster.router;
        let mut unreachable_since: HashMap<NodeId, Instant> = HashMap::new();
        while !self.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(self.interval).await;
            if router.is_down(self.me) {
                continue; // a dead node detects nothing
            }
            let now = Instant::now();
            let mut dead = BTreeSet::new();
            for peer in NODES.into_iter().filter(|p| *p != self.me) {
                if router.is_down(peer) {
                    let since = *unreachable_since.entry(peer).or_insert(now);
                    if now.duration_since(since) >= self.timeout {
                        dead.insert(peer);
                    }
                } else {
                    unreachable_since.remove(&peer);
                }
            }
            // Only the lowest-id live node campaigns, so votes do not split.
            let lowest_live = NODES.into_iter().find(|n| !dead.contains(n));
            if dead.is_empty() || lowest_live != Some(self.me) {
                continue;
            }
            for group in &self.cluster.groups {
                let raft = &group.rafts[node_index(self.me)];
                let (state, leader) = {
                    let m = raft.metrics();
                    let m = m.borrow();
                    (m.state, m.current_leader)
                };
                let orphaned = leader.is_none_or(|l| dead.contains(&l));
                if state != ServerState::Leader && orphaned {
                    let _ = raft.trigger().elect().await;
                }
            }
        }
    }
}

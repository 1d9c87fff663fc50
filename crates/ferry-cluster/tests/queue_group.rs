//! A replicated queue's group on three nodes in one process, over real TCP
//! links and real openraft: publishes with confirms on the leader are
//! confirmed once committed and delivered to its consumer, a publish made
//! through a follower is forwarded, acks reach every replica, and when the
//! leader's node goes away the new leader delivers every unacked message —
//! nothing confirmed is lost. A consumer on a follower is fed by the
//! leader within its credit, its acks and basic.get go to the leader, and
//! it keeps consuming when the leader's node goes away. Every replica
//! snapshots and cuts its log as the queue drains, and a new leader serves
//! the messages its snapshot holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_queue::test_support::{body_of, ms, Confirms, Fixture, Taker};
use std::sync::Arc;

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_group_confirms_after_commit_forwards_and_fails_over() {
    let fx = Fixture::new();
    let nodes = start(&fx).await;
    let (leader, follower) = roles(&nodes).await;
    let l = leader.id;
    let taker = consumer(leader, "c", 1000);
    let q = leader.group.replica().queue();
    let confirms = Arc::new(Confirms::default());
    for i in 1..=20 {
        publish(leader, &format!("m{i}"), &confirms, i);
    }
    // Through a follower: forwarded to the leader.
    for i in 21..=25 {
        publish(follower, &format!("m{i}"), &confirms, i);
    }
    until("every publish confirmed", || confirms.ok.lock().len() == 25).await;
    assert!(confirms.failed.lock().is_empty());
    until("every message delivered", || taker.got.lock().len() == 25).await;
    let mut got = taker.bodies();
    got.sort();
    let mut want: Vec<String> = (1..=25).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    // Each publisher's messages in its order (the two publishers interleave).
    let num = |b: &String| b[1..].parse::<u64>().unwrap();
    let mine: Vec<String> = taker
        .bodies()
        .into_iter()
        .filter(|b| num(b) <= 20)
        .collect();
    assert_eq!(mine, want_in_order(1, 20));
    let forwarded: Vec<String> = taker.bodies().into_iter().filter(|b| num(b) > 20).collect();
    assert_eq!(forwarded, want_in_order(21, 25));
    for n in nodes.iter().filter(|n| n.id != l) {
        until("followers hold every message", || {
            n.group.replica().queue().depth().ready == 25
        })
        .await;
    }

    // Ack the first ten: every replica drops them.
    let ids = taker.offsets();
    q.settle(&ids[..10]).unwrap();
    for n in nodes.iter().filter(|n| n.id != l) {
        until("followers applied the acks", || {
            n.group.replica().queue().depth().ready == 15
        })
        .await;
    }

    // The leader's node goes away.
    go_away(leader).await;
    let rest: Vec<&Node> = nodes.iter().filter(|n| n.id != l).collect();
    let l2 = serving(&rest).await;
    assert_ne!(l2, l);
    let new = rest.iter().find(|n| n.id == l2).unwrap();
    until("the new leader serves", || new.group.replica().serves()).await;
    let t2 = consumer(new, "c2", 1000);
    until("the unacked ones delivered again", || {
        t2.got.lock().len() == 15
    })
    .await;
    let mut left = t2.bodies();
    left.sort();
    let mut want: Vec<String> = ids[10..]
        .iter()
        .map(|id| {
            taker
                .got
                .lock()
                .iter()
                .find(|d| d.msg_id == *id)
                .map(|d| body_of(&d.message))
                .unwrap()
        })
        .collect();
    want.sort();
    assert_eq!(left, want, "every unacked message, none of the acked ones");
    // Publishing goes on with the new leader.
    publish(new, "after", &confirms, 26);
    until("confirmed by the new leader", || {
        confirms.ok.lock().len() == 26
    })
    .await;
}

/// `x-max-length` 10 with `reject-publish`: 15 publishes on the leader
/// and 15 through a follower, pipelined (nothing waits for a confirm).
/// The leader decides each one as it proposes it, counting what is in
/// flight and what the follower forwards: exactly 10 confirmed, 20
/// nacked, 10 on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_decides_a_reject_publish_limit_for_every_node() {
    let fx = Fixture::new();
    let args = [
        ("x-max-length", ferry_model::Value::I32(10)),
        ("x-overflow", ms("reject-publish")),
    ];
    let nodes = start_args(&fx, 64 << 20, &args).await;
    let (leader, follower) = roles(&nodes).await;
    let confirms = Arc::new(Confirms::default());
    for i in 1..=15 {
        publish(leader, &format!("m{i}"), &confirms, i);
        publish(follower, &format!("m{}", i + 15), &confirms, i + 15);
    }
    until("every publish answered", || {
        confirms.ok.lock().len() + confirms.failed.lock().len() == 30
    })
    .await;
    assert_eq!(confirms.ok.lock().len(), 10, "exactly the limit confirmed");
    assert_eq!(confirms.failed.lock().len(), 20, "the rest nacked");
    for n in &nodes {
        until("every replica holds the ten", || {
            n.group.replica().queue().depth().ready == 10
        })
        .await;
    }
    // Consumed and acked, room again: through the follower too.
    let taker = Taker::new(4);
    let q = leader.group.replica().queue();
    q.consume(Arc::from("c"), taker.clone(), false, false)
        .unwrap();
    q.dispatch();
    until("four delivered", || taker.got.lock().len() == 4).await;
    q.settle(&taker.offsets()).unwrap();
    for i in 31..=36 {
        publish(follower, &format!("m{i}"), &confirms, i);
    }
    until("every publish answered", || {
        confirms.ok.lock().len() + confirms.failed.lock().len() == 36
    })
    .await;
    assert_eq!(confirms.ok.lock().len(), 14, "four more fit");
    assert_eq!(&confirms.ok.lock()[10..], [31, 32, 33, 34]);
}

/// The leader's node goes away while a publisher on another node keeps
/// publishing (its proposals forwarded to the leader): every publish it
/// saw confirmed is on the new leader, none twice, in publish order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_goes_away_under_load_and_nothing_confirmed_is_lost() {
    let fx = Fixture::new();
    let nodes = start(&fx).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let l = serving(&all).await;
    let leader = nodes.iter().find(|n| n.id == l).unwrap();
    let publisher = nodes.iter().find(|n| n.id != l).unwrap();
    let confirms = Arc::new(Confirms::default());
    let mut seq = 0u64;
    // Load before the kill, then the kill while proposals are in flight.
    for _ in 0..300 {
        seq += 1;
        publish(publisher, &format!("m{seq}"), &confirms, seq);
    }
    until("some confirmed", || !confirms.ok.lock().is_empty()).await;
    for _ in 0..200 {
        seq += 1;
        publish(publisher, &format!("m{seq}"), &confirms, seq);
    }
    go_away(leader).await;
    for _ in 0..300 {
        seq += 1;
        publish(publisher, &format!("m{seq}"), &confirms, seq);
    }
    // Every publish is confirmed: a batch in doubt (forwarded to the
    // leader that went away) is sent again to the new one, numbered, so
    // it is applied once (publisher deduplication).
    until("every publish answered", || {
        confirms.ok.lock().len() + confirms.failed.lock().len() == seq as usize
    })
    .await;
    assert!(
        confirms.failed.lock().is_empty(),
        "nacked: {:?}",
        confirms.failed.lock()
    );
    let rest: Vec<&Node> = nodes.iter().filter(|n| n.id != l).collect();
    let l2 = serving(&rest).await;
    let new = rest.iter().find(|n| n.id == l2).unwrap();
    let q = new.group.replica().queue();
    let t = Taker::new(u32::MAX);
    until("the new leader serves", || new.group.replica().serves()).await;
    q.consume(Arc::from("c"), t.clone(), false, false).unwrap();
    q.dispatch();
    until("the new leader delivered what it holds", || {
        q.depth().ready == 0
    })
    .await;
    let got: Vec<u64> = t.bodies().iter().map(|b| b[1..].parse().unwrap()).collect();
    let mut seen = std::collections::BTreeSet::new();
    for s in &got {
        assert!(seen.insert(*s), "m{s} delivered twice");
    }
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(got, sorted, "in publish order");
    let ok = confirms.ok.lock().clone();
    let lost: Vec<u64> = ok.iter().copied().filter(|s| !seen.contains(s)).collect();
    assert!(lost.is_empty(), "confirmed and lost: {lost:?}");
    assert_eq!(got.len(), seq as usize, "each message once");
    eprintln!(
        "{} published, {} confirmed, {} on the new leader",
        seq,
        ok.len(),
        got.len()
    );
}

/// A consumer on a follower: the leader delivers to it no more than its
/// credit allows, its acks settle the messages on every replica, a
/// basic.get through the follower takes the next message from the leader,
/// a purge through it takes what is ready and leaves what is out,
/// and when the leader's node goes away the consumer stays and gets what
/// is published next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_consumer_is_fed_by_the_leader_within_its_credit() {
    let fx = Fixture::new();
    let nodes = start(&fx).await;
    let (leader, follower) = roles(&nodes).await;
    let lq = leader.group.replica().queue();
    let fq = follower.group.replica().queue();
    let taker = Taker::new(3);
    let cid = fq
        .consume(Arc::from("f"), taker.clone(), false, false)
        .unwrap();
    fq.dispatch();
    let confirms = Arc::new(Confirms::default());
    for i in 1..=10 {
        publish(leader, &format!("m{i}"), &confirms, i);
    }
    until("every publish confirmed", || confirms.ok.lock().len() == 10).await;
    until("the follower's consumer got its credit's worth", || {
        taker.got.lock().len() == 3
    })
    .await;
    assert_eq!(taker.bodies(), want_in_order(1, 3));
    // The leader checked out exactly what the credit allowed.
    assert_eq!(lq.depth().unacked, 3);

    // Acks through the follower settle on the leader (and everywhere).
    fq.settle(&taker.offsets()).unwrap();
    taker.grant(3);
    fq.dispatch();
    until("three more", || taker.got.lock().len() == 6).await;
    assert_eq!(taker.bodies(), want_in_order(1, 6));
    until("the acks reached the leader", || {
        lq.depth().ready + lq.depth().unacked == 7
    })
    .await;

    // basic.get through the follower: the next message, from the leader.
    let (got, left) = tokio::task::block_in_place(|| fq.get(false))
        .unwrap()
        .expect("a message");
    assert_eq!(body_of(&got.message), "m7");
    assert_eq!(left, 3);
    fq.settle(&[got.msg_id]).unwrap();

    // queue.purge through the follower: the leader takes what is ready
    // (m8..m10), not what it has out (m4..m6, with the consumer).
    let purged = tokio::task::block_in_place(|| fq.purge()).unwrap();
    assert_eq!(purged, 3);
    taker.grant(100);
    fq.dispatch();
    assert_eq!(taker.bodies(), want_in_order(1, 6));
    fq.settle(&taker.offsets()).unwrap();
    for n in &nodes {
        let q = n.group.replica().queue();
        until("every replica settled everything", || {
            let d = q.depth();
            d.ready + d.unacked == 0
        })
        .await;
    }

    // The leader's node goes away: the consumer stays and is fed by the
    // next leader (or serves itself, if its node leads now).
    go_away(leader).await;
    for i in 11..=15 {
        publish(follower, &format!("m{i}"), &confirms, i);
    }
    until("publishes after the failover confirmed", || {
        confirms.ok.lock().len() + confirms.failed.lock().len() == 15
    })
    .await;
    let confirmed: Vec<String> = confirms
        .ok
        .lock()
        .iter()
        .filter(|s| **s > 10)
        .map(|s| format!("m{s}"))
        .collect();
    until("the follower's consumer got every confirmed one", || {
        let got = taker.bodies();
        confirmed.iter().all(|b| got.contains(b))
    })
    .await;
    assert!(!*taker.cancelled.lock(), "the consumer was never cancelled");
    fq.cancel(cid);
}

/// With a small snapshot threshold every replica snapshots while messages
/// flow and are acked, and cuts its log below the snapshot: its disk use
/// stays bounded by what the queue holds, not by what went through it.
/// The messages still held are then read from the snapshot: the new
/// leader, after the old one goes away, delivers each of them, body
/// intact, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_snapshot_and_cut_their_logs_and_serve_from_the_snapshot() {
    let fx = Fixture::new();
    let nodes = start_with(&fx, 8 << 10).await;
    let (leader, _) = roles(&nodes).await;
    let l = leader.id;
    let q = leader.group.replica().queue();
    let confirms = Arc::new(Confirms::default());
    let body = |i: u64| format!("m{i}-{}", "x".repeat(100));
    for i in 1..=2000 {
        publish(leader, &body(i), &confirms, i);
    }
    until("every publish confirmed", || {
        confirms.ok.lock().len() == 2000
    })
    .await;
    // Ack the first 1,900 (100 stay).
    let taker = Taker::new(1900);
    q.consume(Arc::from("c"), taker.clone(), false, false)
        .unwrap();
    q.dispatch();
    until("1,900 delivered", || taker.got.lock().len() == 1900).await;
    q.settle(&taker.offsets()).unwrap();
    // More traffic after the acks, so a snapshot comes after them.
    for i in 2001..=2200 {
        publish(leader, &body(i), &confirms, i);
    }
    until("every publish confirmed", || {
        confirms.ok.lock().len() == 2200
    })
    .await;
    let written = 2200 * 100;
    for n in &nodes {
        until("the replica holds the rest", || {
            let d = n.group.replica().queue().depth();
            d.ready + d.unacked == 300
        })
        .await;
        until(
            "the replica snapshotted after the acks and cut its log",
            || {
                let m = n.group.slot().with_metrics(Clone::clone);
                let snap = m.snapshot.map_or(0, |s| s.index);
                let purged = m.purged.map_or(0, |p| p.index);
                snap > 0 && purged == snap && dir_bytes(n.dir.path()) < written / 2
            },
        )
        .await;
        let files: Vec<String> = std::fs::read_dir(n.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.starts_with("snapshot-"))
            .collect();
        assert_eq!(files.len(), 1, "one snapshot file: {files:?}");
        eprintln!(
            "node {}: {} bytes on disk after {written} bytes of bodies",
            n.id,
            dir_bytes(n.dir.path())
        );
    }
    go_away(leader).await;
    let rest: Vec<&Node> = nodes.iter().filter(|n| n.id != l).collect();
    let l2 = serving(&rest).await;
    let new = rest.iter().find(|n| n.id == l2).unwrap();
    let t2 = Taker::new(u32::MAX);
    let q2 = new.group.replica().queue();
    q2.consume(Arc::from("c2"), t2.clone(), false, false)
        .unwrap();
    q2.dispatch();
    until("the new leader delivered the 300 left", || {
        t2.got.lock().len() == 300
    })
    .await;
    let want: Vec<String> = (1901..=2200).map(body).collect();
    assert_eq!(t2.bodies(), want);
}

/// Bytes of the files under `dir` (the log's segments are in `log/`).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

/// A leader cut off from both followers (their nodes gone: dials refused)
/// stops serving within about a second — the node-wide failure detector
/// fences it — so it never hands out messages the others' new leader may
/// deliver; messages published before stay on it, unserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_majority_stops_serving() {
    let fx = Fixture::new();
    let nodes = start(&fx).await;
    let (leader, _) = roles(&nodes).await;
    let confirms = Arc::new(Confirms::default());
    for i in 1..=5 {
        publish(leader, &format!("m{i}"), &confirms, i);
    }
    until("every publish confirmed", || confirms.ok.lock().len() == 5).await;
    assert!(leader.group.replica().serves());
    for n in nodes.iter().filter(|n| n.id != leader.id) {
        go_away(n).await;
    }
    until("the cut-off leader stops serving", || {
        !leader.group.replica().serves()
    })
    .await;
    let taker = Taker::new(100);
    let q = leader.group.replica().queue();
    q.consume(Arc::from("c"), taker.clone(), false, false)
        .unwrap();
    q.dispatch();
    assert!(
        taker.got.lock().is_empty(),
        "a fenced leader delivers nothing"
    );
    assert_eq!(q.depth().ready, 5, "its messages stay");
}

/// A consumer stays fed while the leadership moves around the group, its
/// own node leading a third of the time: after every move, the message
/// published next reaches it, and its ack settles it on every replica:
/// a deposed leader's consumer is fed by the new leader, and serves
/// itself again when its node leads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_follows_the_leadership_around_the_group() {
    let fx = Fixture::new();
    let nodes = start(&fx).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let home = &nodes[0];
    let taker = consumer(home, "c", 1000);
    let confirms = Arc::new(Confirms::default());
    const ROUNDS: u64 = 18;
    for round in 1..=ROUNDS {
        let l = serving(&all).await;
        let at = nodes.iter().position(|n| n.id == l).unwrap();
        let next = &nodes[(at + 1) % nodes.len()];
        lead_on(next).await;
        let body = format!("m{round}");
        publish(next, &body, &confirms, round);
        until(&format!("{body} reached the consumer"), || {
            taker.bodies().contains(&body)
        })
        .await;
        let got = taker.got.lock().last().map(|d| d.msg_id).unwrap();
        home.group.replica().queue().settle(&[got]).unwrap();
        for n in &nodes {
            until(&format!("every replica settled {body}"), || {
                let d = n.group.replica().queue().depth();
                d.ready + d.unacked == 0
            })
            .await;
        }
    }
    assert_eq!(confirms.ok.lock().len() as u64, ROUNDS);
    assert!(!*taker.cancelled.lock(), "the consumer was never cancelled");
}

/// Has `n` stand for election until its replica serves (the voters refuse
/// while they heard from the leader within its lease).
async fn lead_on(n: &Node) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !n.group.replica().serves() {
        assert!(std::time::Instant::now() < deadline, "{} never led", n.id);
        let raft = n.group.slot().raft().await.expect("the group runs");
        let _ = raft.trigger().elect().await;
        let wait = std::time::Instant::now() + std::time::Duration::from_millis(500);
        while !n.group.replica().serves() && std::time::Instant::now() < wait {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

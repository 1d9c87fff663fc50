//! Idle queue groups hibernate (their Raft instances stop, their replicas
//! stay) and wake for what needs them: a publish through a follower, an
//! ack on the leader, and the election after the leader's node went away
//! while every replica slept. Nothing confirmed is lost, nothing acked
//! comes back, and the leader's replica keeps serving its consumer while
//! its group sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_queue::test_support::{Confirms, Fixture};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::*;

const IDLE: Duration = Duration::from_millis(300);

fn all_asleep(nodes: &[&Node]) -> bool {
    nodes.iter().all(|n| !n.group.slot().is_awake())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_groups_hibernate_and_wake_for_publishes_acks_and_elections() {
    let fx = Fixture::new();
    let nodes = start_opts(&fx, 64 << 20, &[], Some(IDLE)).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let (leader, follower) = roles(&nodes).await;
    let taker = consumer(leader, "c", 1000);
    let q = leader.group.replica().queue();
    let confirms = Arc::new(Confirms::default());
    for i in 1..=10 {
        publish(leader, &format!("m{i}"), &confirms, i);
    }
    until("ten confirmed", || confirms.ok.lock().len() == 10).await;

    // Idle: every replica's instance stops; the leader still serves.
    until("every replica hibernates", || all_asleep(&all)).await;
    assert!(leader.group.replica().serves(), "the leader serves asleep");
    assert!(nodes.iter().all(|n| n.group.slot().sleeps() >= 1));
    let term = leader.group.slot().with_metrics(|m| m.current_term);

    // A publish through a follower wakes it and the leader, which leads
    // again in the same term.
    for i in 11..=15 {
        publish(follower, &format!("m{i}"), &confirms, i);
    }
    until("confirmed after waking", || confirms.ok.lock().len() == 15).await;
    assert!(confirms.failed.lock().is_empty(), "{:?}", confirms.failed);
    until("all fifteen delivered", || taker.got.lock().len() == 15).await;
    assert_eq!(taker.bodies(), want_in_order(1, 15));
    assert_eq!(
        leader.group.slot().with_metrics(|m| m.current_term),
        term,
        "no election to wake"
    );

    // Asleep again, an ack of the first twelve wakes the group; every
    // replica applies it.
    until("asleep again", || all_asleep(&all)).await;
    let ids = taker.offsets();
    q.settle(&ids[..12]).unwrap();
    for n in &nodes {
        until("every replica applied the acks", || {
            let d = n.group.replica().queue().depth();
            d.ready + d.unacked == 3
        })
        .await;
    }

    // Asleep once more, the leader's node goes away: the others wake,
    // elect a leader, and it serves exactly the three unacked messages.
    until("asleep before the failover", || all_asleep(&all)).await;
    let gone = leader.id;
    go_away(leader).await;
    let started = Instant::now();
    let rest: Vec<&Node> = nodes.iter().filter(|n| n.id != gone).collect();
    let l2 = serving(&rest).await;
    let failover = started.elapsed();
    assert_ne!(l2, gone);
    let new = rest.iter().find(|n| n.id == l2).unwrap();
    let t2 = consumer(new, "c2", 1000);
    until("the unacked three delivered again", || {
        t2.got.lock().len() == 3
    })
    .await;
    assert_eq!(t2.bodies(), want_in_order(13, 15));
    // And it takes publishes through the other survivor.
    let other = rest.iter().find(|n| n.id != l2).unwrap();
    publish(other, "m16", &confirms, 16);
    until("confirmed by the new leader", || {
        confirms.ok.lock().len() == 16
    })
    .await;
    until("delivered by the new leader", || t2.got.lock().len() == 4).await;
    eprintln!("failover of a hibernating group: {failover:?}");
}

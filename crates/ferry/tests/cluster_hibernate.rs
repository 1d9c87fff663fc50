//! Hibernation on three real `ferry` processes (`queue_hibernate_after_ms`
//! 300): an idle quorum queue's Raft instances stop on every node
//! (`ferry_raft_awake` 0, `ferry_raft_hibernations_total` counting), its
//! consumer attached through another node stays attached, a publish
//! through a third node wakes the group and reaches that consumer, and
//! after the leader's node is killed (every replica asleep) the others
//! elect a leader that takes confirmed publishes and still holds the
//! unacked messages.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::cluster::{free_ports, poll_until, publish_confirmed, skip_external, three_seeds_with};
use common::http::Http;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use std::time::Duration;

/// The queue's figure `family` on node `b` (None without a sample).
fn figure(b: &common::Broker, family: &str) -> Option<u64> {
    let text = Http::new(&b.endpoint("metrics").expect("metrics")).text("/metrics");
    text.lines()
        .find(|l| l.starts_with(&format!("{family}{{")) && l.contains("queue=\"hq\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn asleep_everywhere(nodes: &[&common::Broker]) -> bool {
    nodes
        .iter()
        .all(|n| figure(n, "ferry_raft_awake") == Some(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_quorum_queue_hibernates_and_wakes_for_publishes_and_failover() {
    if skip_external("an_idle_quorum_queue_hibernates_and_wakes_for_publishes_and_failover") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds_with(
        &ports,
        &[
            ("FERRY_QUEUE_HIBERNATE_AFTER_MS", "300"),
            ("FERRY_LOG_LEVEL", "ferry_cluster=debug,info"),
        ],
    )
    .await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let (c0, ch0) = common::connect_channel(&nodes[0].amqp_url()).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch0.queue_declare("hq".into(), durable, args)
        .await
        .expect("declare");
    let _ = c0.close(200, "bye".into()).await;
    let first: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[1], "hq", &first).await, first);

    // A consumer through node 2 takes the five and acks them.
    let (c2, ch2) = common::connect_channel(&nodes[2].amqp_url()).await;
    let mut consumer = common::consume(&ch2, "hq", BasicConsumeOptions::default()).await;
    let got = common::recv_n(&mut consumer, 5, Duration::from_secs(20)).await;
    assert_eq!(common::bodies(&got), first);
    for d in &got {
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }

    let all: Vec<&common::Broker> = nodes.iter().collect();
    poll_until("every replica hibernates", || asleep_everywhere(&all)).await;
    for n in &nodes {
        assert!(figure(n, "ferry_raft_hibernations_total").unwrap_or(0) >= 1);
    }

    // A publish through node 1 wakes the group; node 2's consumer gets it.
    let more: Vec<String> = (5..8).map(|i| format!("m{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[1], "hq", &more).await, more);
    let got = common::recv_n(&mut consumer, 3, Duration::from_secs(20)).await;
    assert_eq!(common::bodies(&got), more, "delivered after the wake");
    let _ = c2.close(200, "bye".into()).await;

    // Asleep again (the three unacked went back to the queue), the
    // leader's node dies: the others elect a leader that holds them and
    // takes a confirmed publish.
    poll_until("asleep again", || asleep_everywhere(&all)).await;
    let leader = nodes
        .iter()
        .position(|n| figure(n, "ferry_raft_leader") == Some(1))
        .expect("a leader");
    nodes[leader].kill9().await;
    let rest: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let after = vec!["after".to_string()];
    let t0 = std::time::Instant::now();
    let got = publish_confirmed(&nodes[rest[0]], "hq", &after).await;
    if got != after {
        for r in &rest {
            eprintln!(
                "=== node {r} after {:?}\n{}",
                t0.elapsed(),
                nodes[*r].stderr()
            );
        }
    }
    assert_eq!(got, after);
    let (c, ch) = common::connect_channel(&nodes[rest[1]].amqp_url()).await;
    let mut left = common::drain_get(&ch, "hq").await;
    left.sort();
    assert_eq!(left, ["after", "m5", "m6", "m7"]);
    let _ = c.close(200, "bye".into()).await;
}

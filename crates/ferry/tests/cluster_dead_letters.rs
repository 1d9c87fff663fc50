//! Dead-lettering from a replicated queue is a replicated command: the
//! leader rejects (a Drop record every replica applies) and routes the dead
//! letter to another replicated queue. Across the kill -9 of the node that
//! led both queues, nothing rejected comes back, nothing dead-lettered is
//! lost, and the new leader dead-letters what is rejected next.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::cluster::poll_until as until;
use common::cluster::{free_ports, skip_external, three_seeds};
use common::http::Http;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    QueueDeclareOptions,
};
use lapin::types::AMQPValue;
use lapin::BasicProperties;
use std::time::Duration;

/// Receives `n` deliveries of `queue` through `url` (prefetch `n`) and
/// rejects each without requeue; returns their bodies.
async fn reject_n(url: &str, queue: &str, n: usize) -> Vec<String> {
    let (conn, ch) = common::connect_channel(url).await;
    ch.basic_qos(n as u16, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut c = common::consume(&ch, queue, BasicConsumeOptions::default()).await;
    let got = common::recv_n(&mut c, n, Duration::from_secs(30)).await;
    for d in &got {
        d.reject(BasicRejectOptions { requeue: false })
            .await
            .expect("reject");
    }
    let bodies = common::bodies(&got);
    let _ = conn.close(200, "bye".into()).await;
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_messages_are_dead_lettered_across_a_failover() {
    if skip_external("rejected_messages_are_dead_lettered_across_a_failover") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds(&ports).await;
    let http: Vec<Http> = nodes
        .iter()
        .map(|n| Http::new(&n.endpoint("http").expect("http")))
        .collect();
    let quorum = ("x-queue-type", AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let (c1, ch1) = common::connect_channel(&nodes[0].amqp_url()).await;
    ch1.queue_declare(
        "dlq".into(),
        durable,
        common::table(std::slice::from_ref(&quorum)),
    )
    .await
    .expect("declare dlq");
    let src_args = common::table(&[
        quorum,
        ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
        (
            "x-dead-letter-routing-key",
            AMQPValue::LongString("dlq".into()),
        ),
    ]);
    ch1.queue_declare("src".into(), durable, src_args)
        .await
        .expect("declare src");
    let _ = c1.close(200, "bye".into()).await;
    for q in ["src", "dlq"] {
        for h in &http {
            until("replicated, seen from every node", || {
                let (_, v) = h.req("GET", &format!("/api/queues/%2F/{q}"), None);
                v["leader"].is_string() && v["members"].as_array().map_or(0, Vec::len) == 3
            })
            .await;
        }
    }

    // 20 confirmed publishes through n2.
    let conn2 = common::connect(&nodes[1].amqp_url()).await;
    let ch2 = common::confirm_channel(&conn2).await;
    let sent: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for body in &sent {
        let c = ch2
            .basic_publish(
                "".into(),
                "src".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish");
        assert!(c.await.expect("confirm").is_ack());
    }
    let _ = conn2.close(200, "bye".into()).await;

    // The first ten, rejected through n3: dead-lettered into dlq.
    let first = reject_n(&nodes[2].amqp_url(), "src", 10).await;
    assert_eq!(first, sent[..10].to_vec());
    let count = |h: &Http, q: &str| {
        let (_, v) = h.req("GET", &format!("/api/queues/%2F/{q}"), None);
        (
            v["messages_ready"].as_u64(),
            v["leader"].as_str().map(str::to_owned),
        )
    };
    until("ten dead letters in dlq", || {
        count(&http[2], "dlq").0 == Some(10)
    })
    .await;
    until("ten left in src", || count(&http[2], "src").0 == Some(10)).await;

    // The node that leads src dies.
    let leader = match count(&http[2], "src").1.as_deref() {
        Some("n1") => 0,
        Some("n2") => 1,
        Some("n3") => 2,
        other => panic!("leader {other:?}"),
    };
    nodes[leader].kill9().await;
    let survivor = (leader + 1) % 3;
    for q in ["src", "dlq"] {
        until("a survivor leads", || {
            count(&http[survivor], q)
                .1
                .is_some_and(|l| l != format!("n{}", leader + 1))
        })
        .await;
    }

    // The rejected ten do not come back; the other ten are rejected
    // through the survivor and dead-lettered by the new leader.
    let rest = reject_n(&nodes[survivor].amqp_url(), "src", 10).await;
    let mut rest_sorted = rest.clone();
    rest_sorted.sort_by_key(|b| b[1..].parse::<u32>().unwrap());
    assert_eq!(
        rest_sorted,
        sent[10..].to_vec(),
        "none of the rejected came back"
    );
    until("src empty", || count(&http[survivor], "src").0 == Some(0)).await;

    // dlq holds all twenty, once each, with their death.
    let (conn, ch) = common::connect_channel(&nodes[survivor].amqp_url()).await;
    let mut c = common::consume(
        &ch,
        "dlq",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    let dead = common::recv_n(&mut c, 20, Duration::from_secs(30)).await;
    let mut bodies = common::bodies(&dead);
    bodies.sort_by_key(|b| b[1..].parse::<u32>().unwrap());
    assert_eq!(bodies, sent, "every rejected message dead-lettered once");
    for d in &dead {
        assert_eq!(
            common::header(d, "x-first-death-reason"),
            Some(AMQPValue::LongString("rejected".into()))
        );
        assert_eq!(
            common::header(d, "x-first-death-queue"),
            Some(AMQPValue::LongString("src".into()))
        );
    }
    common::assert_no_delivery(&mut c, Duration::from_millis(500)).await;
    let _ = conn.close(200, "bye".into()).await;
}

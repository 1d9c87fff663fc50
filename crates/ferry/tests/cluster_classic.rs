//! Classic durable queues in a cluster are replicated like quorum queues
//! (a Raft group each) and keep their classic features — here priorities,
//! across the kill -9 of the node that led the queue; non-durable,
//! exclusive and auto-delete queues stay on their node; a replicated
//! queue's `x-expires` deletes it on every node.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::cluster::{free_ports, skip_external, three_seeds};
use common::http::Http;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use std::time::Duration;

use common::cluster::poll_until as until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_durable_queues_are_replicated_and_keep_their_features() {
    if skip_external("classic_durable_queues_are_replicated_and_keep_their_features") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds(&ports).await;
    let http: Vec<Http> = nodes
        .iter()
        .map(|n| Http::new(&n.endpoint("http").expect("http")))
        .collect();
    let (c1, ch1) = common::connect_channel(&nodes[0].amqp_url()).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let priority = common::table(&[("x-max-priority", AMQPValue::ShortShortInt(5))]);
    ch1.queue_declare("pq".into(), durable, priority)
        .await
        .expect("declare a durable priority queue");
    // What stays on its node: non-durable, exclusive, auto-delete.
    ch1.queue_declare(
        "tq".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("transient");
    let auto = QueueDeclareOptions {
        durable: true,
        auto_delete: true,
        ..Default::default()
    };
    ch1.queue_declare("aq".into(), auto, FieldTable::default())
        .await
        .expect("auto-delete");

    // Replicated: every node shows it, classic, with a leader and three
    // members; the others exist only on n1.
    for h in &http {
        until("pq replicated, seen from every node", || {
            let (_, v) = h.req("GET", "/api/queues/%2F/pq", None);
            v["type"] == "classic"
                && v["leader"].is_string()
                && v["members"].as_array().map_or(0, Vec::len) == 3
        })
        .await;
    }
    for name in ["tq", "aq"] {
        let (st, _) = http[1].req("GET", &format!("/api/queues/%2F/{name}"), None);
        assert_eq!(st, 404, "{name} stays on the node it was declared on");
        let (st, v) = http[0].req("GET", &format!("/api/queues/%2F/{name}"), None);
        assert_eq!(st, 200, "{v}");
        assert!(v["leader"].is_null(), "{name} has no group: {v}");
    }

    // Published through n2 with priorities, every publish confirmed.
    let conn2 = common::connect(&nodes[1].amqp_url()).await;
    let ch2 = common::confirm_channel(&conn2).await;
    let sent: Vec<(u8, String)> = (0..30).map(|i| ((i % 5) as u8, format!("m{i}"))).collect();
    let mut pending = Vec::new();
    for (p, body) in &sent {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_priority(*p);
        let c = ch2
            .basic_publish(
                "".into(),
                "pq".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await
            .expect("publish");
        pending.push(c);
    }
    for c in pending {
        assert!(c.await.expect("confirm").is_ack(), "confirmed");
    }
    let _ = conn2.close(200, "bye".into()).await;
    let _ = c1.close(200, "bye".into()).await;

    // The leader's process dies; a survivor's consumer gets every message,
    // highest priority first, publish order within a priority.
    let (_, v) = http[1].req("GET", "/api/queues/%2F/pq", None);
    let leader = match v["leader"].as_str() {
        Some("n1") => 0,
        Some("n2") => 1,
        Some("n3") => 2,
        other => panic!("leader {other:?}"),
    };
    nodes[leader].kill9().await;
    let survivor = (leader + 1) % 3;
    until("a survivor leads pq", || {
        let (_, v) = http[survivor].req("GET", "/api/queues/%2F/pq", None);
        v["leader"].is_string() && v["leader"] != format!("n{}", leader + 1)
    })
    .await;
    let (conn, ch) = common::connect_channel(&nodes[survivor].amqp_url()).await;
    let mut consumer = common::consume(
        &ch,
        "pq",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    let got =
        common::bodies(&common::recv_n(&mut consumer, sent.len(), Duration::from_secs(20)).await);
    let mut want = sent.clone();
    // Stable: publish order within a priority.
    want.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
    let want: Vec<String> = want.into_iter().map(|(_, b)| b).collect();
    assert_eq!(got, want, "every message, by priority");
    let _ = conn.close(200, "bye".into()).await;

    // x-expires of a replicated queue: its leader deletes it, everywhere.
    let other = (survivor + 1) % 3;
    let live = if other == leader { survivor } else { other };
    let (c, ch) = common::connect_channel(&nodes[live].amqp_url()).await;
    let expiring = common::table(&[("x-expires", AMQPValue::LongInt(1500))]);
    ch.queue_declare("eq".into(), durable, expiring)
        .await
        .expect("declare an expiring durable queue");
    let _ = c.close(200, "bye".into()).await;
    for i in [survivor, live] {
        until("eq gone from every live node", || {
            let (st, _) = http[i].req("GET", "/api/queues/%2F/eq", None);
            st == 404
        })
        .await;
    }
    nodes[leader].start_again().await;
    let restarted = Http::new(&nodes[leader].endpoint("http").expect("http"));
    until("eq gone from the restarted node too", || {
        let (st, _) = restarted.req("GET", "/api/queues/%2F/eq", None);
        st == 404
    })
    .await;
}

//! `/api/health/checks/node-is-quorum-critical` (RabbitMQ's) and `ferry ctl
//! health` on three real `ferry` processes: with every node up no node is
//! critical; with one killed, each of the two left is (without it, a queue
//! of three replicas would have one member up), and says which queues and
//! streams; a queue with its own two replicas on the survivors says so too.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::cluster::{free_ports, poll_until, skip_external, three_seeds};
use common::http::Http;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;

fn args(kind: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
    t
}

/// Each node's management API (a restarted node listens on a new port).
fn apis(nodes: &[common::Broker]) -> Vec<Http> {
    nodes
        .iter()
        .map(|b| Http::new(&b.endpoint("http").expect("http")))
        .collect()
}

fn critical(http: &Http) -> (u16, Value) {
    http.req("GET", "/api/health/checks/node-is-quorum-critical", None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_quorum_critical_once_another_member_is_down() {
    if skip_external("a_node_is_quorum_critical_once_another_member_is_down") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds(&ports).await;
    let (c, ch) = common::connect_channel(&nodes[0].amqp_url()).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare("hq".into(), durable, args("quorum"))
        .await
        .expect("declare hq");
    ch.queue_declare("hs".into(), durable, args("stream"))
        .await
        .expect("declare hs");
    let _ = c.close(200, "bye".into()).await;
    let http = apis(&nodes);
    // Every member up (as each node's failure detector sees it): none critical.
    for h in &http {
        poll_until("no node is quorum critical", || critical(h).0 == 200).await;
    }
    let urls: Vec<String> = nodes
        .iter()
        .map(|b| format!("http://{}", b.endpoint("http").expect("http")))
        .collect();
    let url = |i: usize| urls[i].clone();
    let out = common::ctl::ctl(&url(1), &["health", "node-is-quorum-critical"]);
    assert!(out.status.success(), "{}", common::ctl::text(&out.stderr));

    nodes[2].kill9().await;
    for h in &http[..2] {
        poll_until("a survivor is quorum critical", || critical(h).0 == 503).await;
        let (_, v) = critical(h);
        assert_eq!(v["status"], "failed", "{v}");
        let mut names: Vec<(String, String)> = v["queues"]
            .as_array()
            .expect("queues")
            .iter()
            .map(|q| {
                (
                    q["name"].as_str().unwrap_or_default().to_string(),
                    q["type"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ("hq".into(), "quorum".into()),
                ("hs".into(), "stream".into())
            ],
            "{v}"
        );
    }
    let out = common::ctl::ctl(&url(0), &["health", "node-is-quorum-critical"]);
    assert_eq!(out.status.code(), Some(1), "a failed check exits 1");
    let said = common::ctl::text(&out.stderr);
    assert!(said.contains("would lose their quorum"), "{said}");
    let out = common::ctl::ctl(&url(0), &["health"]);
    assert!(
        out.status.success(),
        "no alarms: {}",
        common::ctl::text(&out.stderr)
    );

    // Back: nobody critical again.
    nodes[2].start_again().await;
    let http = apis(&nodes);
    for h in &http {
        poll_until("no node is quorum critical again", || critical(h).0 == 200).await;
    }
}

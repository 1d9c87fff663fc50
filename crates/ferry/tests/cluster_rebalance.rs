//! `ferry ctl cluster rebalance` (`POST /api/rebalance/queues`) on three
//! real `ferry` processes: quorum queues and a stream declared through one
//! node (so that node leads most of them: client-local placement) end
//! with their leaders spread evenly, and every queue still takes confirmed
//! publishes and delivers them after its leader moved.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::cluster::{free_ports, poll_until, publish_confirmed, skip_external, three_seeds};
use common::http::Http;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use std::collections::BTreeMap;

const QUEUES: usize = 6;

fn args(kind: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
    t
}

/// Leader name → how many of the queues it leads (None until all have one).
fn leaders(http: &Http) -> Option<BTreeMap<String, usize>> {
    let mut out = BTreeMap::new();
    for i in 0..=QUEUES {
        let name = if i == QUEUES {
            "rs".to_string()
        } else {
            format!("q{i}")
        };
        let (_, v) = http.req("GET", &format!("/api/queues/%2F/{name}"), None);
        *out.entry(v["leader"].as_str()?.to_string()).or_insert(0) += 1;
    }
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_spreads_queue_leaders_over_the_nodes() {
    if skip_external("rebalance_spreads_queue_leaders_over_the_nodes") {
        return;
    }
    let ports = free_ports(3);
    let (nodes, _) = three_seeds(&ports).await;
    let (c, ch) = common::connect_channel(&nodes[0].amqp_url()).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for i in 0..QUEUES {
        ch.queue_declare(format!("q{i}").as_str().into(), durable, args("quorum"))
            .await
            .expect("declare");
    }
    ch.queue_declare("rs".into(), durable, args("stream"))
        .await
        .expect("declare the stream");
    let _ = c.close(200, "bye".into()).await;
    let http = Http::new(&nodes[1].endpoint("http").expect("http"));
    let mut before = BTreeMap::new();
    poll_until("every queue has a leader", || match leaders(&http) {
        Some(l) => {
            before = l;
            true
        }
        None => false,
    })
    .await;

    let url = format!("http://{}", nodes[1].endpoint("http").expect("http"));
    let out = common::ctl::ctl(&url, &["cluster", "rebalance"]);
    let text = common::ctl::text(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        common::ctl::text(&out.stderr)
    );
    assert!(
        text.contains("queue and stream leaders asked to move"),
        "{text}"
    );

    // 7 groups over 3 nodes: at most 3 each, and every node leads some.
    let mut after = BTreeMap::new();
    poll_until("the leaders are spread", || match leaders(&http) {
        Some(l) => {
            after = l;
            after.len() == 3 && after.values().all(|n| *n <= 3)
        }
        None => false,
    })
    .await;
    eprintln!("leaders before {before:?}, after {after:?}");

    for i in 0..QUEUES {
        let q = format!("q{i}");
        let ok = publish_confirmed(&nodes[2], &q, &["after".to_string()]).await;
        assert_eq!(ok.len(), 1, "{q} takes publishes after the rebalance");
        let (c, ch) = common::connect_channel(&nodes[0].amqp_url()).await;
        assert_eq!(common::get_acked(&ch, &q).await, "after");
        let _ = c.close(200, "bye".into()).await;
    }
}

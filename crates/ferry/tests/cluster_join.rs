//! `ferry ctl cluster join HOST:PORT` (RabbitMQ's `join_cluster`): a node
//! that is a cluster of one resets its data directory, starts over in
//! place and joins the running cluster at that address; refused, with
//! nothing changed, for a member of a larger cluster, an address nobody
//! answers at, and a node without a cluster port.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::cluster::{free_ports, node_env, skip_external, start_node, until};
use common::ctl::{ctl, text};
use common::http::Http;
use common::Broker;
use serde_json::json;

fn http(b: &Broker) -> Http {
    Http::new(&b.endpoint("http").expect("http"))
}

fn url(b: &Broker) -> String {
    format!("http://{}", b.endpoint("http").expect("http"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_one_resets_and_joins_a_running_cluster() {
    if skip_external("a_cluster_of_one_resets_and_joins_a_running_cluster") {
        return;
    }
    // Cluster ports of n1, n2 (the running cluster) and n3; n3's HTTP port
    // is fixed so that it is the same after it starts over.
    let ports = free_ports(4);
    let seeds = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let (n1, n2) = tokio::join!(
        start_node(node_env(1, &ports, &seeds, "s3cret")),
        start_node(node_env(2, &ports, &seeds, "s3cret"))
    );
    let mut env3 = node_env(3, &ports, "", "s3cret");
    env3.push((
        "FERRY_HTTP_LISTEN".into(),
        format!("127.0.0.1:{}", ports[3]),
    ));
    let n3 = start_node(env3).await;
    let n1_addr = format!("127.0.0.1:{}", ports[0]);

    // n3 is a cluster of one with a queue of its own.
    let (code, _) = http(&n3).req(
        "PUT",
        "/api/queues/%2F/mine",
        Some(json!({"durable": true})),
    );
    assert!(code < 300, "declare on n3: {code}");
    // A user made on the running cluster before the join.
    let (code, _) = http(&n1).req(
        "PUT",
        "/api/users/alice",
        Some(json!({"password": "pw", "tags": ""})),
    );
    assert!(code < 300, "user on n1: {code}");

    // Refused, nothing changed: a member of a two-node cluster; an
    // address nobody answers at; n3's own address.
    let out = ctl(&url(&n2), &["cluster", "join", &n1_addr]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("member of a cluster of 2 nodes"),
        "{}",
        text(&out.stderr)
    );
    let nobody = format!("127.0.0.1:{}", free_ports(1)[0]);
    let (code, v) = http(&n3).req("POST", "/api/cluster/join", Some(json!({"node": nobody})));
    assert_eq!(code, 400, "{v}");
    let own = format!("127.0.0.1:{}", ports[2]);
    let (code, v) = http(&n3).req("POST", "/api/cluster/join", Some(json!({"node": own})));
    assert_eq!(code, 400, "{v}");
    let (code, _) = http(&n3).req("GET", "/api/queues/%2F/mine", None);
    assert_eq!(code, 200, "n3 still holds its queue after the refusals");

    // The join: ctl waits until n3, started over, lists n1.
    let out = ctl(&url(&n3), &["cluster", "join", &n1_addr, "--timeout", "25"]);
    assert!(
        out.status.success(),
        "{}\n--- n3 ---\n{}",
        text(&out.stderr),
        n3.stderr()
    );
    assert!(
        text(&out.stdout).contains("3 members"),
        "{}",
        text(&out.stdout)
    );
    until(&n1, "n3 running in n1's cluster", |v| {
        v.len() == 3 && v.iter().any(|n| n["name"] == "n3" && n["running"] == true)
    })
    .await;
    // Reset: its own queue is gone; the cluster's definitions are there.
    let (code, _) = http(&n3).req("GET", "/api/queues/%2F/mine", None);
    assert_eq!(code, 404, "n3's old queue must be gone after the reset");
    let (code, _) = http(&n3).req("GET", "/api/users/alice", None);
    assert_eq!(code, 200, "the cluster's user on n3");
    // And what n3 declares now is the cluster's.
    let (code, _) = http(&n3).req(
        "PUT",
        "/api/exchanges/%2F/joined.x",
        Some(json!({"type": "fanout", "durable": true})),
    );
    assert!(code < 300, "exchange through n3: {code}");
    common::cluster::poll_until("n3's exchange on n1", || {
        http(&n1).req("GET", "/api/exchanges/%2F/joined.x", None).0 == 200
    })
    .await;
    assert!(
        n3.stderr()
            .contains("data directory reset to join another cluster"),
        "{}",
        n3.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_cluster_port_cannot_join() {
    let Some(b) = Broker::start_owned("a_node_without_a_cluster_port_cannot_join").await else {
        return;
    };
    let (code, v) = http(&b).req(
        "POST",
        "/api/cluster/join",
        Some(json!({"node": "127.0.0.1:1"})),
    );
    assert_eq!(code, 400, "{v}");
    assert!(v.to_string().contains("not clustered"), "{v}");
}

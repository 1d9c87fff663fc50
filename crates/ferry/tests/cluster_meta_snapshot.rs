//! The metadata group's snapshots on real `ferry` processes: with a short
//! snapshot interval the group cuts its log; a node stopped before a run of
//! definition changes (deletes among them) comes back behind the cut,
//! installs the snapshot and ends up with exactly the cluster's
//! definitions — including a replicated queue declared while it was away,
//! which it then holds a working replica of; and a cluster whose logs were
//! cut restarts from its snapshots with every definition.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::cluster::{
    free_ports, poll_until as until, publish_confirmed, skip_external, three_seeds_with,
};
use common::http::Http;
use common::Broker;
use serde_json::{json, Value};

fn http(b: &Broker) -> Http {
    Http::new(&b.endpoint("http").expect("http endpoint"))
}

/// The metadata group's `name` gauge on `b`.
fn meta_metric(b: &Broker, name: &str) -> Option<u64> {
    let text = Http::new(&b.endpoint("metrics").expect("metrics")).text("/metrics");
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains("group=\"meta\""))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn put(b: &Broker, path: &str, body: Value) {
    let (st, v) = http(b).req("PUT", path, Some(body));
    assert!(st == 201 || st == 204, "PUT {path}: {st} {v}");
}

fn delete(b: &Broker, path: &str) {
    let (st, v) = http(b).req("DELETE", path, None);
    assert_eq!(st, 204, "DELETE {path}: {v}");
}

fn status(b: &Broker, path: &str) -> u16 {
    http(b).req("GET", path, None).0
}

fn names(b: &Broker, path: &str) -> Vec<String> {
    let (_, v) = http(b).req("GET", path, None);
    let mut n: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    n.sort();
    n
}

/// What differs on `b` from what every node must show after the changes
/// made while n3 was away (None: nothing).
fn differs(b: &Broker) -> Option<String> {
    let check = |ok: bool, what: &str| (!ok).then(|| what.to_string());
    let vhosts = names(b, "/api/vhosts");
    let (_, carol) = http(b).req("GET", "/api/users/carol", None);
    let (_, ex) = http(b).req("GET", "/api/exchanges/new/ex", None);
    let (_, bindings) = http(b).req("GET", "/api/exchanges/new/ex/bindings/source", None);
    let (_, q) = http(b).req("GET", "/api/queues/%2F/q2", None);
    let (_, qb) = http(b).req("GET", "/api/queues/%2F/q2/bindings", None);
    check(
        vhosts == ["/", "new"],
        &format!("vhosts {vhosts:?}: the churned and deleted ones gone"),
    )
    .or_else(|| check(status(b, "/api/users/bob") == 404, "bob deleted"))
    .or_else(|| {
        check(
            carol["tags"] == json!(["monitoring"]),
            &format!("carol: {carol}"),
        )
    })
    .or_else(|| {
        check(
            status(b, "/api/permissions/new/carol") == 200,
            "carol's permissions",
        )
    })
    .or_else(|| check(names(b, "/api/policies/new") == ["ttl"], "the policy"))
    .or_else(|| check(ex["type"] == "topic", &format!("exchange ex: {ex}")))
    .or_else(|| {
        check(
            bindings.as_array().map(Vec::len) == Some(1),
            &format!("ex's binding: {bindings}"),
        )
    })
    .or_else(|| check(q["type"] == "quorum", &format!("q2: {q}")))
    .or_else(|| {
        check(
            qb.as_array()
                .is_some_and(|a| a.iter().any(|x| x["source"] == "amq.topic")),
            &format!("q2's binding from amq.topic: {qb}"),
        )
    })
}

/// Waits until `b` shows the cluster's definitions (a node applies the log
/// after a snapshot a moment after installing it).
async fn assert_definitions(b: &Broker) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while let Some(what) = differs(b) {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_metadata_log_cut_installs_the_snapshot() {
    if skip_external("a_node_behind_the_metadata_log_cut_installs_the_snapshot") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds_with(&ports, &[("FERRY_META_SNAPSHOT_INTERVAL", "16")]).await;
    let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
    put(&nodes[0], "/api/vhosts/old", json!({}));
    put(&nodes[0], "/api/permissions/old/guest", all.clone());
    put(
        &nodes[0],
        "/api/exchanges/old/gone",
        json!({"type": "fanout", "durable": true}),
    );
    put(
        &nodes[0],
        "/api/users/bob",
        json!({"password": "pw", "tags": ""}),
    );
    until("n3 has bob", || status(&nodes[2], "/api/users/bob") == 200).await;
    let behind = meta_metric(&nodes[2], "ferry_raft_last_log_index").expect("n3's last index");
    nodes[2].kill9().await;

    // While n3 is away: deletes, new definitions of every kind, and a run
    // of changes long enough for the others to snapshot and cut past it.
    delete(&nodes[0], "/api/vhosts/old");
    delete(&nodes[1], "/api/users/bob");
    put(
        &nodes[1],
        "/api/users/carol",
        json!({"password": "pw", "tags": "monitoring"}),
    );
    put(&nodes[0], "/api/vhosts/new", json!({}));
    put(&nodes[0], "/api/permissions/new/carol", all.clone());
    put(&nodes[0], "/api/permissions/new/guest", all);
    put(
        &nodes[1],
        "/api/policies/new/ttl",
        json!({"pattern": ".*", "definition": {"message-ttl": 60000}, "apply-to": "queues"}),
    );
    put(
        &nodes[0],
        "/api/exchanges/new/ex",
        json!({"type": "topic", "durable": true}),
    );
    put(
        &nodes[0],
        "/api/exchanges/new/ex2",
        json!({"type": "fanout", "durable": true}),
    );
    let (st, v) = http(&nodes[0]).req(
        "POST",
        "/api/bindings/new/e/ex/e/ex2",
        Some(json!({"routing_key": "k.#"})),
    );
    assert_eq!(st, 201, "{v}");
    put(
        &nodes[0],
        "/api/queues/%2F/q2",
        json!({"durable": true, "arguments": {"x-queue-type": "quorum"}}),
    );
    let (st, v) = http(&nodes[1]).req(
        "POST",
        "/api/bindings/%2F/e/amq.topic/q/q2",
        Some(json!({"routing_key": "q2.#"})),
    );
    assert_eq!(st, 201, "{v}");
    for i in 0..24 {
        put(&nodes[i % 2], &format!("/api/vhosts/churn{i}"), json!({}));
        delete(&nodes[(i + 1) % 2], &format!("/api/vhosts/churn{i}"));
    }
    until("n1 and n2 cut the metadata log past n3's", || {
        nodes[..2]
            .iter()
            .all(|n| meta_metric(n, "ferry_raft_purged_index").is_some_and(|p| p > behind))
    })
    .await;

    nodes[2].start_again().await;
    nodes[2]
        .wait_stderr_line(|l| l.contains("installed the metadata group's snapshot"))
        .await;
    for b in &nodes {
        assert_definitions(b).await;
    }
    // n3 holds a working replica of the queue declared while it was away:
    // a message confirmed through it is delivered.
    until("q2 lists n3 among its members", || {
        let (_, q) = http(&nodes[2]).req("GET", "/api/queues/%2F/q2", None);
        q["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x == "n3"))
    })
    .await;
    let sent: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[2], "q2", &sent).await.len(), 20);
    let (_, ch) = common::connect_channel(&nodes[2].amqp_url()).await;
    assert_eq!(common::drain_get(&ch, "q2").await, sent);

    // Every node restarts from its snapshot and the log after it.
    for n in nodes.iter_mut() {
        n.kill9().await;
    }
    let (a, b) = nodes.split_at_mut(1);
    let (b, c) = b.split_at_mut(1);
    tokio::join!(a[0].start_again(), b[0].start_again(), c[0].start_again());
    for b in &nodes {
        assert_definitions(b).await;
        assert!(
            meta_metric(b, "ferry_raft_snapshot_index").is_some_and(|i| i > behind),
            "restarted from a snapshot"
        );
    }
}

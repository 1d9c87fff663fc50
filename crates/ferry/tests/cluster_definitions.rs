//! Cluster-wide definitions on real `ferry` processes: a user, vhost,
//! permission, policy or durable exchange made through any node exists on
//! every node (the metadata group carries it), a refusal comes back from
//! the cluster with its AMQP code, transient exchanges stay on their node,
//! and a restarted node neither loses a definition nor applies an old one
//! again (a vhost deleted and re-created before the restart keeps what
//! was declared in it after).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::cluster::{free_ports, skip_external, three_seeds};
use common::http::Http;
use common::Broker;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn http(b: &Broker) -> Http {
    Http::new(&b.endpoint("http").expect("http endpoint"))
}

/// Polls `GET path` on `b` until `ok` holds for (status, body). A node
/// applies a change a moment after the node that made it answered.
async fn until_http(b: &Broker, path: &str, what: &str, ok: impl Fn(u16, &Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, v) = http(b).req("GET", path, None);
        if ok(st, &v) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last GET {path}: {st} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn url(b: &Broker, user: &str, pass: &str, vhost: &str) -> String {
    format!("amqp://{user}:{pass}@{}/{vhost}", b.amqp_addr())
}

fn durable() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_made_on_any_node_hold_on_every_node() {
    if skip_external("definitions_made_on_any_node_hold_on_every_node") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds(&ports).await;

    // A user on n1, a vhost on n2, the permission on n3: each through a
    // different node, and each answered only once it is applied there.
    let (st, v) = http(&nodes[0]).req(
        "PUT",
        "/api/users/alice",
        Some(json!({"password": "pw", "tags": "administrator"})),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = http(&nodes[1]).req("PUT", "/api/vhosts/prod", Some(json!({})));
    assert_eq!(st, 201, "{v}");
    let (st, v) = http(&nodes[2]).req(
        "PUT",
        "/api/permissions/prod/alice",
        Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
    );
    assert_eq!(st, 201, "{v}");
    // alice logs in on every node: the password was hashed once, on n1.
    for b in &nodes {
        until_http(
            b,
            "/api/permissions/prod/alice",
            "the permission",
            |st, _| st == 200,
        )
        .await;
        let conn = common::connect(&url(b, "alice", "pw", "prod")).await;
        conn.close(200, "bye".into()).await.expect("close");
    }

    // Durable exchanges and the binding between them, over AMQP on n2.
    let (conn, ch) = common::connect_channel(&url(&nodes[1], "alice", "pw", "prod")).await;
    for (x, kind) in [
        ("orders", ExchangeKind::Topic),
        ("audit", ExchangeKind::Fanout),
    ] {
        ch.exchange_declare(x.into(), kind, durable(), FieldTable::default())
            .await
            .expect("exchange.declare");
    }
    ch.exchange_bind(
        "audit".into(),
        "orders".into(),
        "eu.#".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.bind");
    // A transient exchange stays on n2.
    ch.exchange_declare(
        "scratch".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("transient exchange.declare");
    conn.close(200, "bye".into()).await.expect("close");
    for b in [&nodes[0], &nodes[2]] {
        until_http(
            b,
            "/api/bindings/prod/e/orders/e/audit",
            "the e2e binding",
            |st, v| {
                st == 200
                    && v.as_array()
                        .is_some_and(|a| a.len() == 1 && a[0]["routing_key"] == "eu.#")
            },
        )
        .await;
        let (_, v) = http(b).req("GET", "/api/exchanges/prod", None);
        let n = names(&v);
        assert!(
            n.contains(&"orders".into()) && n.contains(&"audit".into()),
            "{n:?}"
        );
        assert!(
            !n.contains(&"scratch".into()),
            "a transient exchange is n2's: {n:?}"
        );
    }

    // A refusal decided by the cluster comes back with its code: "orders"
    // is a topic exchange everywhere, so declaring it fanout on n3 fails.
    let (conn, ch) = common::connect_channel(&url(&nodes[2], "alice", "pw", "prod")).await;
    let (code, text) = common::expect_amqp_err(
        ch.exchange_declare(
            "orders".into(),
            ExchangeKind::Fanout,
            durable(),
            FieldTable::default(),
        )
        .await,
        "inequivalent exchange.declare",
    );
    assert_eq!(code, 406, "{text}");
    assert!(text.contains("inequivalent arg 'type'"), "{text}");
    drop(conn);

    // A policy made on n3 applies on n1.
    let (st, v) = http(&nodes[2]).req(
        "PUT",
        "/api/policies/prod/ttl",
        Some(json!({"pattern": "^t", "definition": {"message-ttl": 60000}})),
    );
    assert_eq!(st, 201, "{v}");
    until_http(&nodes[0], "/api/policies/prod", "the policy", |_, v| {
        names(v) == ["ttl"]
    })
    .await;

    // Deleted, then made again, before anything is declared in it: the
    // queue declared after must survive n2's restart (an old delete
    // applied again at restart would take it).
    for (method, code) in [("PUT", 201), ("DELETE", 204), ("PUT", 201)] {
        let (st, v) = http(&nodes[0]).req(method, "/api/vhosts/v2", Some(json!({})));
        assert_eq!(st, code, "{method} /api/vhosts/v2: {v}");
    }
    until_http(&nodes[1], "/api/vhosts/v2", "v2 on n2", |st, _| st == 200).await;
    let (st, v) = http(&nodes[0]).req(
        "PUT",
        "/api/permissions/v2/guest",
        Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
    );
    assert_eq!(st, 201, "{v}");
    until_http(
        &nodes[1],
        "/api/permissions/v2/guest",
        "guest on v2",
        |st, _| st == 200,
    )
    .await;
    let (conn, ch) = common::connect_channel(&url(&nodes[1], "guest", "guest", "v2")).await;
    common::declare_durable(&ch, "kept", FieldTable::default()).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let confirm = ch
        .basic_publish(
            "".into(),
            "kept".into(),
            BasicPublishOptions::default(),
            b"survivor",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack());
    drop(conn);
    nodes[1].kill9().await;
    nodes[1].start_again().await;
    let (_, ch) = common::connect_channel(&url(&nodes[1], "guest", "guest", "v2")).await;
    assert_eq!(common::drain_get(&ch, "kept").await, ["survivor"]);
    // And it still has everything made before.
    let (_, v) = http(&nodes[1]).req("GET", "/api/exchanges/prod", None);
    assert!(names(&v).contains(&"orders".into()), "{v}");
    let conn = common::connect(&url(&nodes[1], "alice", "pw", "prod")).await;
    drop(conn);

    // Deletes travel too: the exchange through n1, the user through n3.
    let (st, v) = http(&nodes[2]).req(
        "PUT",
        "/api/permissions/prod/guest",
        Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
    );
    assert_eq!(st, 201, "{v}");
    until_http(
        &nodes[0],
        "/api/permissions/prod/guest",
        "guest on prod",
        |st, _| st == 200,
    )
    .await;
    let (st, v) = http(&nodes[0]).req("DELETE", "/api/exchanges/prod/audit", None);
    assert_eq!(st, 204, "{v}");
    let (st, v) = http(&nodes[2]).req("DELETE", "/api/users/alice", None);
    assert_eq!(st, 204, "{v}");
    for b in &nodes {
        until_http(b, "/api/users/alice", "alice gone", |st, _| st == 404).await;
        until_http(b, "/api/exchanges/prod/audit", "audit gone", |st, _| {
            st == 404
        })
        .await;
    }
}

//! Forgetting a stopped node takes it out of every replicated queue's and
//! stream's group too (as RabbitMQ's `forget_cluster_node` does to quorum
//! queues): the groups' members no longer count it, and the queues go on
//! with the nodes left, their messages intact. A running node leaves by
//! itself (`ferry ctl cluster leave`) the same way, handing over the
//! leaderships it holds, then stops. `ferry ctl queues grow | shrink` add a
//! node's replica to every group (it catches up: a stream consumer there
//! reads every record from its own copy) and take it away again.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::cluster::{
    free_ports, node_env, poll_until, publish_confirmed, read_while, skip_external, start_node,
    three_seeds, until,
};
use common::http::Http;
use common::Broker;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};

fn members(b: &Broker, queue: &str) -> Vec<String> {
    let http = Http::new(&b.endpoint("http").expect("http"));
    let (_, v) = http.req("GET", &format!("/api/queues/%2F/{queue}"), None);
    let mut m: Vec<String> = v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    m.sort();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_node_leaves_its_queues_and_streams_groups() {
    if skip_external("a_forgotten_node_leaves_its_queues_and_streams_groups") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds(&ports).await;
    declare(&nodes[0], "rq", "quorum", &[]).await;
    declare(&nodes[0], "rs", "stream", &[]).await;
    let all = ["n1", "n2", "n3"];
    for q in ["rq", "rs"] {
        poll_until(&format!("{q} on the three nodes"), || {
            members(&nodes[0], q) == all
        })
        .await;
    }
    let first: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[1], "rq", &first).await, first);

    nodes[2].kill9().await;
    until(&nodes[0], "n3 reported down", |v| {
        v.iter().any(|n| n["name"] == "n3" && n["running"] == false)
    })
    .await;
    let url = format!("http://{}", nodes[0].endpoint("http").expect("http"));
    let out = common::ctl::ctl(&url, &["cluster", "forget", "n3"]);
    assert!(out.status.success(), "{}", common::ctl::text(&out.stderr));
    for b in &nodes[..2] {
        for q in ["rq", "rs"] {
            poll_until(&format!("{q}'s members without n3"), || {
                members(b, q) == ["n1", "n2"]
            })
            .await;
        }
    }
    // The queue goes on with the two left, nothing lost.
    let second: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[0], "rq", &second).await, second);
    let (_, ch) = common::connect_channel(&nodes[1].amqp_url()).await;
    let want: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(common::drain_get(&ch, "rq").await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_leaves_the_cluster_and_its_groups_by_itself() {
    if skip_external("a_node_leaves_the_cluster_and_its_groups_by_itself") {
        return;
    }
    let ports = free_ports(4);
    let (nodes, seeds) = three_seeds(&ports[..3]).await;
    let mut fourth = start_node(node_env(4, &ports, &seeds, "s3cret")).await;
    until(&fourth, "four voting members", |v| {
        v.len() == 4 && v.iter().all(|n| n["running"] == true && n["voter"] == true)
    })
    .await;
    // Declared through n4: it is one of their nodes and (client-local)
    // most likely their leader.
    declare(&fourth, "lq", "quorum", &[]).await;
    declare(&fourth, "ls", "stream", &[]).await;
    for q in ["lq", "ls"] {
        poll_until(&format!("{q} on three nodes, n4 among them"), || {
            let m = members(&fourth, q);
            m.len() == 3 && m.contains(&"n4".to_string())
        })
        .await;
    }
    let first: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[0], "lq", &first).await, first);

    let url = format!("http://{}", fourth.endpoint("http").expect("http"));
    let out = common::ctl::ctl(&url, &["cluster", "leave"]);
    assert!(out.status.success(), "{}", common::ctl::text(&out.stderr));
    let status = fourth.wait_exited().await;
    assert!(status.success(), "the node stops after leaving: {status:?}");

    for b in &nodes {
        until(b, "three members, all running", |v| {
            v.len() == 3 && v.iter().all(|n| n["running"] == true)
        })
        .await;
        for q in ["lq", "ls"] {
            poll_until(&format!("{q}'s two members left"), || {
                let m = members(b, q);
                m.len() == 2 && !m.contains(&"n4".to_string())
            })
            .await;
        }
    }
    let second: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[1], "lq", &second).await, second);
    let (_, ch) = common::connect_channel(&nodes[0].amqp_url()).await;
    let want: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(common::drain_get(&ch, "lq").await, want);
}

/// Declares durable `name` of `kind` through `b` with `args` added.
async fn declare(b: &Broker, name: &str, kind: &str, args: &[(&str, i32)]) {
    let (c, ch) = common::connect_channel(&b.amqp_url()).await;
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
    for (k, v) in args {
        t.insert((*k).into(), AMQPValue::LongInt(*v));
    }
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(name.into(), durable, t)
        .await
        .expect("declare");
    let _ = c.close(200, "bye".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_and_streams_grow_onto_a_node_and_shrink_off_it() {
    if skip_external("queues_and_streams_grow_onto_a_node_and_shrink_off_it") {
        return;
    }
    let ports = free_ports(3);
    let (nodes, _) = three_seeds(&ports).await;
    declare(
        &nodes[0],
        "gq",
        "quorum",
        &[("x-quorum-initial-group-size", 2)],
    )
    .await;
    declare(&nodes[0], "gs", "stream", &[("x-initial-cluster-size", 2)]).await;
    for q in ["gq", "gs"] {
        poll_until(&format!("{q} on two nodes"), || {
            members(&nodes[0], q).len() == 2
        })
        .await;
    }
    let two = members(&nodes[0], "gq");
    assert_eq!(members(&nodes[0], "gs"), two, "the same placement");
    let o = (0..3)
        .find(|i| !two.contains(&format!("n{}", i + 1)))
        .expect("a node without them");
    let name = format!("n{}", o + 1);
    let msgs: Vec<String> = (0..10).map(|i| format!("q{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[0], "gq", &msgs).await, msgs);
    let recs: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[0], "gs", &recs).await, recs);

    let url = format!("http://{}", nodes[0].endpoint("http").expect("http"));
    let out = common::ctl::ctl(&url, &["queues", "grow", &name]);
    assert!(out.status.success(), "{}", common::ctl::text(&out.stderr));
    for b in &nodes {
        for q in ["gq", "gs"] {
            poll_until(&format!("{q} on three nodes, {name} a voter"), || {
                let m = members(b, q);
                m.len() == 3 && m.contains(&name)
            })
            .await;
        }
    }
    // The grown node's own copy of the stream holds every record.
    let got = read_while(&nodes[o], "gs", |got| got.len() < 5).await;
    assert_eq!(got.into_iter().map(|(_, b)| b).collect::<Vec<_>>(), recs);

    let out = common::ctl::ctl(&url, &["queues", "shrink", &name]);
    assert!(out.status.success(), "{}", common::ctl::text(&out.stderr));
    for b in &nodes {
        for q in ["gq", "gs"] {
            poll_until(&format!("{q} back on two nodes"), || members(b, q) == two).await;
        }
    }
    // The node serves the queue from outside its group again.
    let more: Vec<String> = (10..15).map(|i| format!("q{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[o], "gq", &more).await, more);
    let (_, ch) = common::connect_channel(&nodes[o].amqp_url()).await;
    let want: Vec<String> = msgs.iter().chain(&more).cloned().collect();
    assert_eq!(common::drain_get(&ch, "gq").await, want);
}

/// A node outside a queue's group guesses its leader among the nodes the
/// definitions record: when they change (grow, shrink) its guesses follow,
/// even when none of the nodes it knew is a member any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_node_follows_the_groups_new_members() {
    if skip_external("an_outside_node_follows_the_groups_new_members") {
        return;
    }
    let ports = free_ports(4);
    let (mut nodes, seeds) = three_seeds(&ports[..3]).await;
    nodes.push(start_node(node_env(4, &ports, &seeds, "s3cret")).await);
    until(&nodes[0], "four voting members", |v| {
        v.len() == 4 && v.iter().all(|n| n["running"] == true && n["voter"] == true)
    })
    .await;
    declare(
        &nodes[0],
        "oq",
        "quorum",
        &[("x-quorum-initial-group-size", 2)],
    )
    .await;
    poll_until("oq on two nodes", || members(&nodes[0], "oq").len() == 2).await;
    let first = members(&nodes[0], "oq");
    let outside: Vec<usize> = (0..4)
        .filter(|i| !first.contains(&format!("n{}", i + 1)))
        .collect();
    let (grown, watcher) = (outside[0], outside[1]);
    let url = format!("http://{}", nodes[0].endpoint("http").expect("http"));
    let ctl = |args: &[&str]| {
        let out = common::ctl::ctl(&url, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            common::ctl::text(&out.stderr)
        );
    };
    // The group moves to a node the watcher never knew as a member.
    let new = format!("n{}", grown + 1);
    ctl(&["queues", "grow", &new]);
    poll_until("oq grown", || members(&nodes[0], "oq").len() == 3).await;
    for old in &first {
        ctl(&["queues", "shrink", old]);
    }
    poll_until("oq on the new node only", || {
        members(&nodes[0], "oq") == [new.clone()]
    })
    .await;
    let msgs: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    assert_eq!(
        publish_confirmed(&nodes[watcher], "oq", &msgs).await,
        msgs,
        "publishes through the outside node reach the new leader"
    );
    let (_, ch) = common::connect_channel(&nodes[watcher].amqp_url()).await;
    assert_eq!(common::drain_get(&ch, "oq").await, msgs);
}

//! Replicated (quorum) queues on three real `ferry` processes: declared
//! through one node, the queue exists on every node; publishes through
//! any node are confirmed once committed on a majority; only the leader
//! delivers — to consumers on any node, within their prefetch; when the
//! leader's process is killed with -9, a consumer on a surviving node
//! gets every unacked message — nothing confirmed is lost. Replicas
//! snapshot and cut their logs; a follower that was down past the cut
//! catches up from the leader's snapshot, and a whole-cluster restart
//! serves every message from the snapshots. A reject-publish length
//! limit is the leader's to decide, exactly, whichever node a publish
//! arrives through.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::cluster::{free_ports, skip_external, three_seeds, three_seeds_with};
use common::http::Http;
use common::Broker;
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    t
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Publishes `bodies` to `rq` through `b` and returns those confirmed.
async fn publish_confirmed(b: &Broker, bodies: &[String]) -> Vec<String> {
    common::cluster::publish_confirmed(b, "rq", bodies).await
}

/// A consumer on `b` that records what it gets (acking it if `ack`).
async fn collect(b: &Broker, ack: bool) -> (lapin::Connection, Arc<Mutex<Vec<String>>>) {
    let conn = common::connect(&b.amqp_url()).await;
    let ch = conn.create_channel().await.expect("channel");
    let mut consumer = common::consume(&ch, "rq", BasicConsumeOptions::default()).await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            g.lock().push(String::from_utf8_lossy(&d.data).into_owned());
            if ack {
                let _ = d.ack(BasicAckOptions::default()).await;
            }
        }
    });
    (conn, got)
}

/// The index of node `n1`..`n3` named by `v`.
fn name_index(v: &serde_json::Value) -> usize {
    match v.as_str() {
        Some("n1") => 0,
        Some("n2") => 1,
        Some("n3") => 2,
        other => panic!("node {other:?}"),
    }
}

use common::cluster::poll_until as until;

/// Queue `rq`'s group figure `name` on a node's Prometheus endpoint.
fn rq_metric(metrics: &Http, name: &str) -> Option<u64> {
    let text = metrics.text("/metrics");
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains("queue=\"rq\""))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Receives `n` deliveries, acking each as it comes (the prefetch window
/// moves on only with the acks).
async fn recv_acking(consumer: &mut lapin::Consumer, n: usize) -> Vec<lapin::message::Delivery> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let d = common::recv_one(consumer, Duration::from_secs(20)).await;
        d.ack(BasicAckOptions::default()).await.expect("ack");
        got.push(d);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_is_replicated_and_survives_its_leaders_kill() {
    if skip_external("a_quorum_queue_is_replicated_and_survives_its_leaders_kill") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds(&ports).await;
    let (c1, ch1) = common::connect_channel(&nodes[0].amqp_url()).await;
    ch1.queue_declare("rq".into(), durable(), quorum())
        .await
        .expect("declare the quorum queue");
    for b in &nodes[1..] {
        let (c, ch) = common::connect_channel(&b.amqp_url()).await;
        let passive = QueueDeclareOptions {
            passive: true,
            ..durable()
        };
        ch.queue_declare("rq".into(), passive, FieldTable::default())
            .await
            .expect("the queue exists on every node");
        let _ = c.close(200, "bye".into()).await;
    }
    drop((c1, ch1));

    // `x-quorum-initial-group-size` picks how many nodes hold a queue.
    let mut two = quorum();
    two.insert("x-quorum-initial-group-size".into(), AMQPValue::LongInt(2));
    let (c2, ch2) = common::connect_channel(&nodes[0].amqp_url()).await;
    ch2.queue_declare("rq2".into(), durable(), two)
        .await
        .expect("declare a two-node quorum queue");
    let _ = c2.close(200, "bye".into()).await;
    let http0 = common::http::Http::new(&nodes[0].endpoint("http").expect("http"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = http0.req("GET", "/api/queues/%2F/rq2", None);
        let members = v["members"].as_array().map_or(0, Vec::len);
        if members == 2 && v["leader"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "two members and a leader: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Published through another node than the one that declared it.
    let first: Vec<String> = (0..50).map(|i| format!("a{i}")).collect();
    let ok = publish_confirmed(&nodes[1], &first).await;
    assert_eq!(ok.len(), 50, "every publish confirmed");

    // Every node's API shows its leader and its three nodes.
    for b in &nodes {
        let http = common::http::Http::new(&b.endpoint("http").expect("http"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (st, v) = http.req("GET", "/api/queues/%2F/rq", None);
            assert_eq!(st, 200, "{v}");
            let mut members: Vec<String> = v["members"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            members.sort();
            if v["leader"].is_string() && members == ["n1", "n2", "n3"] {
                assert_eq!(
                    v["node"], v["leader"],
                    "node is the leader's, as in RabbitMQ"
                );
                assert_eq!(v["type"], "quorum");
                break;
            }
            assert!(Instant::now() < deadline, "leader and members: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // A consumer on every node: the leader delivers to each (to the
    // followers' through their nodes), every message once.
    let mut consumers = Vec::new();
    for b in &nodes {
        consumers.push(collect(b, true).await);
    }
    let total = |cs: &[(lapin::Connection, Arc<Mutex<Vec<String>>>)]| -> usize {
        cs.iter().map(|(_, g)| g.lock().len()).sum()
    };
    until("all 50 delivered", || total(&consumers) >= 50).await;
    let all: Vec<String> = consumers
        .iter()
        .flat_map(|(_, g)| g.lock().clone())
        .collect();
    assert_eq!(all.len(), 50, "each message once");
    let delivered: BTreeSet<String> = all.into_iter().collect();
    assert_eq!(delivered, first.iter().cloned().collect());
    let (_, v) = http0.req("GET", "/api/queues/%2F/rq", None);
    let leader_http = common::http::Http::new(
        &nodes[name_index(&v["leader"])]
            .endpoint("http")
            .expect("http"),
    );
    // Once the leader knows all three consumers, new messages go round.
    until("the leader knows every node's consumer", || {
        let (_, v) = leader_http.req("GET", "/api/queues/%2F/rq", None);
        v["consumers"] == 3
    })
    .await;
    let round: Vec<String> = (0..30).map(|i| format!("r{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[2], &round).await.len(), 30);
    until("all 80 delivered", || total(&consumers) >= 80).await;
    for (i, (_, g)) in consumers.iter().enumerate() {
        assert!(
            g.lock().iter().any(|b| b.starts_with('r')),
            "node {i}'s consumer got its share"
        );
    }
    let leader = name_index(&v["leader"]);
    // Every ack applied before the consumers go (an unacked message would
    // be requeued when its channel closes).
    let http = common::http::Http::new(&nodes[leader].endpoint("http").expect("http"));
    until("every ack applied on the leader", || {
        let (_, v) = http.req("GET", "/api/queues/%2F/rq", None);
        v["messages"] == 0
    })
    .await;
    for (c, _) in consumers {
        let _ = c.close(200, "bye".into()).await;
    }

    // More messages; a consumer on the leader takes them without acking.
    let (holder, held) = collect(&nodes[leader], false).await;
    let second: Vec<String> = (0..20).map(|i| format!("b{i}")).collect();
    let other = (leader + 1) % 3;
    let ok = publish_confirmed(&nodes[other], &second).await;
    assert_eq!(ok.len(), 20);
    until("held unacked by the leader's consumer", || {
        held.lock().len() == 20
    })
    .await;

    // The leader's process dies: a survivor's consumer gets them all.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut after = Vec::new();
    for i in &survivors {
        after.push(collect(&nodes[*i], true).await);
    }
    let (_, v) = http0.req("GET", "/api/queues/%2F/rq", None);
    assert_eq!(v["online"].as_array().map_or(0, Vec::len), 3, "{v}");
    nodes[leader].kill9().await;
    drop(holder);
    let dead = format!("n{}", leader + 1);
    let watcher = Http::new(&nodes[survivors[0]].endpoint("http").expect("http"));
    until("a survivor shows the killed node not online", || {
        let (_, v) = watcher.req("GET", "/api/queues/%2F/rq", None);
        let online: Vec<&str> = v["online"]
            .as_array()
            .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
            .unwrap_or_default();
        online.len() == 2 && !online.contains(&dead.as_str())
    })
    .await;
    until("every unacked message redelivered on a survivor", || {
        let got: BTreeSet<String> = after.iter().flat_map(|(_, g)| g.lock().clone()).collect();
        second.iter().all(|b| got.contains(b))
    })
    .await;
    let got: Vec<String> = after.iter().flat_map(|(_, g)| g.lock().clone()).collect();
    assert!(
        got.iter().all(|b| b.starts_with('b')),
        "nothing acked came back: {got:?}"
    );

    // The killed node comes back: its replica reopens from its group's
    // log and takes publishes again (forwarded to the new leader).
    nodes[leader].start_again().await;
    let third: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let ok = publish_confirmed(&nodes[leader], &third).await;
    assert_eq!(
        ok.len(),
        10,
        "publishes through the restarted node confirmed"
    );
    until("delivered by the new leader", || {
        let got: BTreeSet<String> = after.iter().flat_map(|(_, g)| g.lock().clone()).collect();
        third.iter().all(|b| got.contains(b))
    })
    .await;
}

/// A node whose data directory is wiped does not come back into its
/// quorum queues' groups as a voter with an empty log (it could elect a
/// member that lacks committed messages): the leader takes it out of the
/// voters, it catches up as a learner, and it becomes a voter again —
/// holding every message — while the queue goes on with the other two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_rebuilt_into_its_queues_groups() {
    if skip_external("a_wiped_node_is_rebuilt_into_its_queues_groups") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds(&ports).await;
    let (c, ch) = common::connect_channel(&nodes[0].amqp_url()).await;
    ch.queue_declare("rq".into(), durable(), quorum())
        .await
        .expect("declare");
    let _ = c.close(200, "bye".into()).await;
    let first: Vec<String> = (0..20).map(|i| format!("a{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[0], &first).await.len(), 20);

    nodes[2].kill9().await;
    nodes[2].wipe_data_dir();
    nodes[2].start_again().await;
    nodes[2]
        .wait_stderr_line(|l| l.contains("lost its data; it is rebuilt from the others"))
        .await;
    // The queue goes on with the other two nodes meanwhile, once one of
    // them leads it (if the wiped node led, an election follows its kill).
    let http = common::http::Http::new(&nodes[1].endpoint("http").expect("http"));
    until("n1 or n2 leads the queue", || {
        let (_, v) = http.req("GET", "/api/queues/%2F/rq", None);
        v["leader"] == "n1" || v["leader"] == "n2"
    })
    .await;
    let second: Vec<String> = (0..20).map(|i| format!("b{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[1], &second).await.len(), 20);

    // Rebuilt: a voter of the group again, its replica holding all 40.
    let wiped = common::http::Http::new(&nodes[2].endpoint("http").expect("http"));
    until(
        "the wiped node is a voter again, with every message",
        || {
            let (_, v) = wiped.req("GET", "/api/queues/%2F/rq", None);
            let voters = v["members"].as_array().map_or(0, Vec::len);
            voters == 3 && v["messages"] == 40
        },
    )
    .await;
    let (_, v) = http.req("GET", "/api/queues/%2F/rq", None);
    assert_eq!(v["members"].as_array().map_or(0, Vec::len), 3, "{v}");

    let (conn, got) = collect(&nodes[0], true).await;
    let (conn2, got2) = collect(&nodes[2], true).await;
    until("every message delivered", || {
        got.lock().len() + got2.lock().len() == 40
    })
    .await;
    let all: BTreeSet<String> = got
        .lock()
        .iter()
        .chain(got2.lock().iter())
        .cloned()
        .collect();
    assert_eq!(all.len(), 40);
    drop((conn, conn2));
}

/// A consumer connected to a node that does not lead the queue is fed by
/// the leader within its prefetch; its acks settle the messages on the
/// leader; basic.get through a third node takes the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_and_gets_on_other_nodes_are_served_by_the_leader() {
    if skip_external("consumers_and_gets_on_other_nodes_are_served_by_the_leader") {
        return;
    }
    let ports = free_ports(3);
    let (nodes, _) = three_seeds(&ports).await;
    let (c, ch) = common::connect_channel(&nodes[0].amqp_url()).await;
    ch.queue_declare("rq".into(), durable(), quorum())
        .await
        .expect("declare");
    let _ = c.close(200, "bye".into()).await;
    // The leader (n1 usually: client-local placement) and the two others:
    // a consumer on one, a publisher and a basic.get on the other.
    let http0 = common::http::Http::new(&nodes[0].endpoint("http").expect("http"));
    until("the queue has a leader", || {
        let (_, v) = http0.req("GET", "/api/queues/%2F/rq", None);
        v["leader"].is_string()
    })
    .await;
    let (_, v) = http0.req("GET", "/api/queues/%2F/rq", None);
    let l = name_index(&v["leader"]);
    let (a, b) = ((l + 1) % 3, (l + 2) % 3);
    let http = common::http::Http::new(&nodes[l].endpoint("http").expect("http"));
    let bodies: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[b], &bodies).await.len(), 10);
    // Prometheus: the queue's group on its leader, labelled with the queue,
    // a lag sample per follower.
    let text = Http::new(&nodes[l].endpoint("metrics").expect("metrics")).text("/metrics");
    let mine = |family: &str| -> Vec<String> {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("{family}{{")) && l.contains("vhost=\"/\",queue=\"rq\"")
            })
            .map(str::to_owned)
            .collect()
    };
    let leads = mine("ferry_raft_leader");
    assert!(leads.len() == 1 && leads[0].ends_with(" 1"), "{text}");
    assert_eq!(
        mine("ferry_raft_replication_lag_entries").len(),
        2,
        "{text}"
    );
    assert_eq!(mine("ferry_raft_elections_total").len(), 1, "{text}");

    let (conn, ch) = common::connect_channel(&nodes[a].amqp_url()).await;
    ch.basic_qos(2, Default::default()).await.expect("qos");
    let mut consumer = common::consume(&ch, "rq", BasicConsumeOptions::default()).await;
    let mut got = common::recv_n(&mut consumer, 2, Duration::from_secs(20)).await;
    // The leader holds exactly the prefetch out for this consumer.
    until("two unacked on the leader, eight ready", || {
        let (_, v) = http.req("GET", "/api/queues/%2F/rq", None);
        v["messages_unacknowledged"] == 2 && v["messages_ready"] == 8
    })
    .await;
    assert_eq!(common::bodies(&got), ["m0", "m1"]);
    for d in &got {
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    got.extend(common::recv_n(&mut consumer, 2, Duration::from_secs(20)).await);
    assert_eq!(common::bodies(&got[2..]), ["m2", "m3"]);
    until("the acks settled on the leader", || {
        let (_, v) = http.req("GET", "/api/queues/%2F/rq", None);
        v["messages"] == 8
    })
    .await;

    // basic.get through the third node: the next ready message.
    let (c3, ch3) = common::connect_channel(&nodes[b].amqp_url()).await;
    assert_eq!(common::get_acked(&ch3, "rq").await, "m4");
    for d in &got[2..] {
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let rest = recv_acking(&mut consumer, 5).await;
    assert_eq!(common::bodies(&rest), ["m5", "m6", "m7", "m8", "m9"]);
    until("everything settled on the leader", || {
        let (_, v) = http.req("GET", "/api/queues/%2F/rq", None);
        v["messages"] == 0
    })
    .await;
    let _ = c3.close(200, "bye".into()).await;
    let _ = conn.close(200, "bye".into()).await;
}

/// A node outside a queue's group (here a two-replica queue on three
/// nodes) holds no copy, but its clients publish, consume and get as
/// anywhere: through the group's leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_a_queues_group_serves_it_through_the_leader() {
    if skip_external("a_node_outside_a_queues_group_serves_it_through_the_leader") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds(&ports).await;
    let mut two = quorum();
    two.insert("x-quorum-initial-group-size".into(), AMQPValue::LongInt(2));
    let (c, ch) = common::connect_channel(&nodes[0].amqp_url()).await;
    ch.queue_declare("rq".into(), durable(), two)
        .await
        .expect("declare a two-node quorum queue");
    let _ = c.close(200, "bye".into()).await;
    let http = common::http::Http::new(&nodes[0].endpoint("http").expect("http"));
    let members = || -> Vec<String> {
        let (_, v) = http.req("GET", "/api/queues/%2F/rq", None);
        match v["leader"].is_string() {
            true => v["members"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            false => Vec::new(),
        }
    };
    until("two members and a leader", || members().len() == 2).await;
    let members = members();
    let outside = (0..3)
        .find(|i| !members.contains(&format!("n{}", i + 1)))
        .expect("a node outside the group");

    let bodies: Vec<String> = (0..30).map(|i| format!("o{i}")).collect();
    let ok = publish_confirmed(&nodes[outside], &bodies).await;
    assert_eq!(
        ok, bodies,
        "every publish through the outside node confirmed"
    );

    let (conn, ch) = common::connect_channel(&nodes[outside].amqp_url()).await;
    assert_eq!(common::get_acked(&ch, "rq").await, "o0");
    ch.basic_qos(5, Default::default()).await.expect("qos");
    let mut consumer = common::consume(&ch, "rq", BasicConsumeOptions::default()).await;
    let got = recv_acking(&mut consumer, 29).await;
    assert_eq!(
        common::bodies(&got),
        bodies[1..],
        "in order, through the outside node"
    );
    until("everything settled on the leader's side", || {
        let (_, v) = http.req("GET", "/api/queues/%2F/rq", None);
        let leader_http = common::http::Http::new(
            &nodes[name_index(&v["leader"])]
                .endpoint("http")
                .expect("http"),
        );
        let (_, v) = leader_http.req("GET", "/api/queues/%2F/rq", None);
        v["messages"] == 0
    })
    .await;
    let _ = conn.close(200, "bye".into()).await;

    // The outside node shows the leader's figures (it holds no copy).
    let more: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[0], &more).await.len(), 7);
    let out_http = common::http::Http::new(&nodes[outside].endpoint("http").expect("http"));
    until("the leader's figures on the outside node", || {
        let (_, v) = out_http.req("GET", "/api/queues/%2F/rq", None);
        v["messages"] == 7 && v["messages_ready"] == 7
    })
    .await;
    // Restarted, it still serves the queue through the group (it does not
    // take itself for a member).
    nodes[outside].kill9().await;
    nodes[outside].start_again().await;
    let ok = publish_confirmed(&nodes[outside], &bodies[..3]).await;
    assert_eq!(
        ok.len(),
        3,
        "publishes through the restarted outside node confirmed"
    );
    let (_, ch) = common::connect_channel(&nodes[outside].amqp_url()).await;
    let mut want = more.clone();
    want.extend_from_slice(&bodies[..3]);
    assert_eq!(common::drain_get(&ch, "rq").await, want);
}

/// Small snapshots: while a follower is down, the leader's log is cut
/// below what the follower has; restarted, it catches up by installing
/// the leader's snapshot (the records of the 200 messages the queue
/// holds) and holds every message. Then every node is killed (-9) and
/// restarted: each rebuilds the queue from its snapshot and log, and all
/// 200 messages are delivered, bodies intact, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_cut_log_installs_the_leaders_snapshot() {
    if skip_external("a_follower_behind_the_cut_log_installs_the_leaders_snapshot") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds_with(&ports, &[("FERRY_QUEUE_SNAPSHOT_BYTES", "4096")]).await;
    let (c, ch) = common::connect_channel(&nodes[0].amqp_url()).await;
    ch.queue_declare("rq".into(), durable(), quorum())
        .await
        .expect("declare");
    let _ = c.close(200, "bye".into()).await;
    let http = common::http::Http::new(&nodes[0].endpoint("http").expect("http"));
    let mut leader = None;
    until("the queue has a leader", || {
        let (_, v) = http.req("GET", "/api/queues/%2F/rq", None);
        leader = v["leader"].is_string().then(|| name_index(&v["leader"]));
        leader.is_some()
    })
    .await;
    let l = leader.unwrap();
    let f = (l + 1) % 3;
    // How far the follower's log goes when it stops.
    let f_metrics = Http::new(&nodes[f].endpoint("metrics").expect("metrics"));
    let f_last = rq_metric(&f_metrics, "ferry_raft_last_log_index").expect("its last index");
    nodes[f].kill9().await;

    let pad = "x".repeat(200);
    let first: Vec<String> = (0..300).map(|i| format!("a{i}-{pad}")).collect();
    assert_eq!(publish_confirmed(&nodes[l], &first).await.len(), 300);
    let (c, ch) = common::connect_channel(&nodes[l].amqp_url()).await;
    let mut consumer = common::consume(&ch, "rq", BasicConsumeOptions::default()).await;
    let acked = recv_acking(&mut consumer, 200).await;
    assert_eq!(acked.len(), 200);
    let _ = c.close(200, "bye".into()).await;
    let second: Vec<String> = (0..100).map(|i| format!("b{i}-{pad}")).collect();
    assert_eq!(publish_confirmed(&nodes[l], &second).await.len(), 100);
    // The leader cut its log past what the stopped follower has (openraft
    // defers a cut while entries to be cut are being sent).
    let metrics = Http::new(&nodes[l].endpoint("metrics").expect("metrics"));
    until("the leader cut its log past the stopped follower's", || {
        rq_metric(&metrics, "ferry_raft_purged_index").is_some_and(|i| i > f_last)
    })
    .await;

    nodes[f].start_again().await;
    nodes[f]
        .wait_stderr_line(|line| line.contains("queue snapshot installed"))
        .await;
    let back = common::http::Http::new(&nodes[f].endpoint("http").expect("http"));
    until("the restarted follower holds the 200 left", || {
        let (_, v) = back.req("GET", "/api/queues/%2F/rq", None);
        v["messages"] == 200
    })
    .await;

    for n in nodes.iter_mut() {
        n.kill9().await;
    }
    let [a, b, c] = &mut nodes[..] else {
        panic!("three nodes")
    };
    tokio::join!(a.start_again(), b.start_again(), c.start_again());
    let (conn, got) = collect(&nodes[f], true).await;
    until("all 200 delivered after the restart", || {
        got.lock().len() >= 200
    })
    .await;
    let got: BTreeSet<String> = got.lock().iter().cloned().collect();
    let want: BTreeSet<String> = first[200..].iter().chain(&second).cloned().collect();
    assert_eq!(got, want);
    let _ = conn.close(200, "bye".into()).await;
}

/// `/api/queues` on every node shows the leader's figures of a replicated
/// queue (ready, unacknowledged, consumers), as RabbitMQ does: a follower's
/// own replica holds every message but knows nothing of deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_shows_the_leaders_figures_of_a_queue() {
    if skip_external("every_node_shows_the_leaders_figures_of_a_queue") {
        return;
    }
    let ports = free_ports(3);
    let (nodes, _) = three_seeds(&ports).await;
    let (c, ch) = common::connect_channel(&nodes[0].amqp_url()).await;
    ch.queue_declare("rq".into(), durable(), quorum())
        .await
        .expect("declare");
    let _ = c.close(200, "bye".into()).await;
    let bodies: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(publish_confirmed(&nodes[1], &bodies).await.len(), 10);
    // A consumer on node 3 holds 3 unacked (prefetch 3, no acks).
    let (c3, ch3) = common::connect_channel(&nodes[2].amqp_url()).await;
    ch3.basic_qos(3, lapin::options::BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = common::consume(&ch3, "rq", BasicConsumeOptions::default()).await;
    let held = common::recv_n(&mut consumer, 3, Duration::from_secs(20)).await;
    assert_eq!(held.len(), 3);
    for b in &nodes {
        let http = Http::new(&b.endpoint("http").expect("http"));
        until("the leader's figures on every node", || {
            let (_, one) = http.req("GET", "/api/queues/%2F/rq", None);
            let (_, all) = http.req("GET", "/api/queues/%2F", None);
            let listed = all
                .as_array()
                .and_then(|a| a.iter().find(|q| q["name"] == "rq").cloned())
                .unwrap_or_default();
            [one, listed].iter().all(|v| {
                v["messages_ready"] == 7
                    && v["messages_unacknowledged"] == 3
                    && v["messages"] == 10
                    && v["consumers"] == 1
            })
        })
        .await;
    }
    let _ = c3.close(200, "bye".into()).await;
}

/// Publishes `bodies` to `rq` through `b`, pipelined (every publish sent
/// before any confirm is awaited): (the acked bodies, how many nacked).
async fn publish_counted(b: &Broker, bodies: &[String]) -> (Vec<String>, usize) {
    let (mut acked, mut nacked) = (Vec::new(), 0);
    for (body, conf) in common::cluster::publish_each(b, "rq", bodies).await {
        match conf.expect("a confirm within 20 s") {
            true => acked.push(body),
            false => nacked += 1,
        }
    }
    (acked, nacked)
}

/// `x-max-length` 10 with `x-overflow: reject-publish` on a two-replica
/// queue of three nodes: the group's leader decides every publish, also
/// those arriving through the node outside the group (which has no copy)
/// and through the follower (whose copy lags), counting what is in
/// flight: 30 pipelined through the outside node → exactly 10 acked, 20
/// nacked, 10 in the queue; then none through the follower while full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_decides_reject_publish_for_publishes_through_any_node() {
    if skip_external("the_leader_decides_reject_publish_for_publishes_through_any_node") {
        return;
    }
    let ports = free_ports(3);
    let (nodes, _) = three_seeds(&ports).await;
    let mut args = quorum();
    args.insert("x-quorum-initial-group-size".into(), AMQPValue::LongInt(2));
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let (c, ch) = common::connect_channel(&nodes[0].amqp_url()).await;
    ch.queue_declare("rq".into(), durable(), args)
        .await
        .expect("declare a limited two-node quorum queue");
    let _ = c.close(200, "bye".into()).await;
    let http = Http::new(&nodes[0].endpoint("http").expect("http"));
    let roles = || -> Option<(usize, Vec<String>)> {
        let (_, v) = http.req("GET", "/api/queues/%2F/rq", None);
        let members: Vec<String> = v["members"]
            .as_array()?
            .iter()
            .filter_map(|m| m.as_str().map(str::to_string))
            .collect();
        (v["leader"].is_string() && members.len() == 2).then(|| (name_index(&v["leader"]), members))
    };
    until("two members and a leader", || roles().is_some()).await;
    let (leader, members) = roles().expect("roles");
    let member = |i: usize| members.contains(&format!("n{}", i + 1));
    let outside = (0..3).find(|i| !member(*i)).expect("a node outside");
    let follower = (0..3)
        .find(|i| member(*i) && *i != leader)
        .expect("a follower");

    let bodies: Vec<String> = (0..30).map(|i| format!("o{i}")).collect();
    let (acked, nacked) = publish_counted(&nodes[outside], &bodies).await;
    assert_eq!(acked, bodies[..10], "the first ten acked, in order");
    assert_eq!(nacked, 20, "the other twenty nacked");
    let leader_http = Http::new(&nodes[leader].endpoint("http").expect("http"));
    let (_, v) = leader_http.req("GET", "/api/queues/%2F/rq", None);
    assert_eq!(v["messages"], 10, "the leader holds exactly ten");

    // Full: a follower's publishes are refused too.
    let more: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
    let (acked, nacked) = publish_counted(&nodes[follower], &more).await;
    assert!(acked.is_empty(), "none through the follower: {acked:?}");
    assert_eq!(nacked, 5);

    // Emptied through the outside node: exactly the ten; room again.
    let (_, ch) = common::connect_channel(&nodes[outside].amqp_url()).await;
    assert_eq!(common::drain_get(&ch, "rq").await, bodies[..10]);
    let again: Vec<String> = (0..12).map(|i| format!("g{i}")).collect();
    let (acked, nacked) = publish_counted(&nodes[follower], &again).await;
    assert_eq!(acked, again[..10]);
    assert_eq!(nacked, 2);
}

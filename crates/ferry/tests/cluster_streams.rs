//! Replicated streams on three real `ferry` processes: a stream declared
//! through one node is a Raft group on its nodes (`x-initial-cluster-size`,
//! default: every node up to `default_replicas`); publishes through any
//! node are confirmed once committed on a majority; every replica serves
//! its consumers from its own copy, and a message has the same offset and
//! bytes on every node — also after the leader is killed with -9 and
//! after the killed node comes back and catches up. A node outside a
//! stream's group (a two-replica stream on three nodes) serves its
//! consumers by reading through a member: the same offsets, bodies and
//! properties, within the prefetch, from any `x-stream-offset`, following
//! the tail.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::cluster::{
    free_ports, offset_of, poll_until, publish_confirmed, read_while, skip_external, three_seeds,
    three_seeds_with,
};
use common::http::Http;
use common::Broker;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn stream_args(size: Option<i32>) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    if let Some(n) = size {
        t.insert("x-initial-cluster-size".into(), AMQPValue::LongInt(n));
    }
    t
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Publishes until every one of `bodies` is confirmed (a nack is
/// republished: in doubt, it may be stored twice).
async fn publish_all(b: &Broker, s: &str, bodies: &[String]) {
    let mut left: Vec<String> = bodies.to_vec();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !left.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} publishes never confirmed",
            left.len()
        );
        let ok: BTreeSet<String> = publish_confirmed(b, s, &left).await.into_iter().collect();
        left.retain(|x| !ok.contains(x));
    }
}

/// Reads stream `s` through `b` from its first offset until `n`
/// messages: (offset, body) in order.
async fn read_from_first(b: &Broker, s: &str, n: usize) -> Vec<(u64, String)> {
    read_while(b, s, |got| got.len() < n).await
}

/// The stream's queue object on `http`, once it shows `members` members
/// and a leader.
async fn settled(http: &Http, s: &str, members: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = http.req("GET", &format!("/api/queues/%2F/{s}"), None);
        if v["members"].as_array().map_or(0, Vec::len) == members && v["leader"].is_string() {
            return v;
        }
        assert!(Instant::now() < deadline, "members and a leader: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn index_of(name: &serde_json::Value) -> usize {
    match name.as_str() {
        Some("n1") => 0,
        Some("n2") => 1,
        Some("n3") => 2,
        other => panic!("node {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_has_the_same_offsets_on_every_node_across_a_leader_kill() {
    if skip_external("a_stream_has_the_same_offsets_on_every_node_across_a_leader_kill") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds(&ports).await;
    let (c, ch) = common::connect_channel(&nodes[0].amqp_url()).await;
    ch.queue_declare("rs".into(), durable(), stream_args(None))
        .await
        .expect("declare the stream");
    let _ = c.close(200, "bye".into()).await;
    let http0 = Http::new(&nodes[0].endpoint("http").expect("http"));
    let v = settled(&http0, "rs", 3).await;
    assert_eq!(v["type"], "stream", "{v}");

    // Published through another node than the one that declared it.
    let first: Vec<String> = (0..300).map(|i| format!("a{i}")).collect();
    let ok = publish_confirmed(&nodes[1], "rs", &first).await;
    assert_eq!(ok.len(), 300, "every publish confirmed");

    // Every node serves the same messages at the same offsets 0..300.
    let expected: Vec<(u64, String)> = first
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, b)| (i as u64, b))
        .collect();
    for b in &nodes {
        let got = read_from_first(b, "rs", 300).await;
        assert_eq!(got, expected, "node {}", b.amqp_url());
    }

    // Kill the leader; publish more through a survivor.
    let leader = index_of(&settled(&http0, "rs", 3).await["leader"]);
    nodes[leader].kill9().await;
    let survivor = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let more: Vec<String> = (0..100).map(|i| format!("b{i}")).collect();
    publish_all(&nodes[survivor], "rs", &more).await;

    // The survivors agree offset by offset, hold the first 300 where they
    // were and every confirmed message after them.
    let count = |b: &Broker| {
        let http = Http::new(&b.endpoint("http").expect("http"));
        let (_, v) = http.req("GET", "/api/queues/%2F/rs", None);
        v["messages"].as_u64().unwrap_or(0)
    };
    let mut total = 0;
    poll_until("the survivors hold every confirmed message", || {
        total = count(&nodes[survivor]);
        total >= 400 && count(&nodes[other]) == total
    })
    .await;
    let a = read_from_first(&nodes[survivor], "rs", total as usize).await;
    let b = read_from_first(&nodes[other], "rs", total as usize).await;
    assert_eq!(a, b, "the same offsets on both survivors");
    assert_eq!(a[..300], expected[..], "the first 300 unchanged");
    let after: BTreeSet<&str> = a[300..].iter().map(|(_, s)| s.as_str()).collect();
    for m in &more {
        assert!(after.contains(m.as_str()), "confirmed {m} is in the stream");
    }
    let offsets: Vec<u64> = a.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (0..total).collect::<Vec<_>>(), "dense offsets");

    // The killed node comes back and catches up: the same log.
    nodes[leader].start_again().await;
    poll_until("the restarted node caught up", || {
        count(&nodes[leader]) == total
    })
    .await;
    let c = read_from_first(&nodes[leader], "rs", total as usize).await;
    assert_eq!(c, a, "the restarted node has the same offsets");

    // Every node killed at once and restarted: each replica rebuilds from
    // its own log and checkpoint (the group's log applied again from
    // there, offsets it holds skipped): the same stream, nothing doubled.
    for b in nodes.iter_mut() {
        b.kill9().await;
    }
    let (x, y, z) = {
        let [x, y, z] = &mut nodes[..] else {
            unreachable!()
        };
        (x, y, z)
    };
    tokio::join!(x.start_again(), y.start_again(), z.start_again());
    for b in &nodes {
        poll_until("a restarted node holds its stream", || count(b) == total).await;
        let got = read_from_first(b, "rs", total as usize).await;
        assert_eq!(got, a, "node {} after the restart of all", b.amqp_url());
        assert!(!b.stderr().contains("a gap"), "no replica found a gap");
    }
    let more = publish_confirmed(&nodes[0], "rs", &["after".to_string()]).await;
    assert_eq!(
        more.len(),
        1,
        "the stream takes publishes after the restart"
    );
    poll_until("every node holds the new message", || {
        nodes.iter().all(|b| count(b) == total + 1)
    })
    .await;
}

/// A consumer of stream `s` on `b` from `x-stream-offset` = `offset`,
/// on a channel of its own with a per-consumer prefetch of `prefetch`.
async fn stream_consumer(
    b: &Broker,
    s: &str,
    offset: AMQPValue,
    prefetch: u16,
) -> (lapin::Connection, lapin::Consumer) {
    let (c, ch) = common::connect_channel(&b.amqp_url()).await;
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), offset);
    let consumer = ch
        .basic_consume(s.into(), "".into(), BasicConsumeOptions::default(), args)
        .await
        .expect("consume the stream");
    (c, consumer)
}

/// What a stream delivery carries: offset, body, properties (headers
/// included).
type Got = (u64, String, lapin::BasicProperties);

fn got(d: &lapin::message::Delivery) -> Got {
    (
        offset_of(d),
        String::from_utf8_lossy(&d.data).into_owned(),
        d.properties.clone(),
    )
}

/// Takes `n` deliveries of `consumer`, acking each (which gives its
/// credit back).
async fn take_acked(consumer: &mut lapin::Consumer, n: usize) -> Vec<Got> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let d = common::recv_one(consumer, Duration::from_secs(30)).await;
        assert!(!d.redelivered, "stream deliveries are never redelivered");
        d.ack(BasicAckOptions::default()).await.expect("ack");
        out.push(got(&d));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_replica_stream_is_published_and_consumed_through_the_third_node() {
    if skip_external("a_two_replica_stream_is_published_and_consumed_through_the_third_node") {
        return;
    }
    let ports = free_ports(3);
    let (nodes, _) = three_seeds(&ports).await;
    let (c, ch) = common::connect_channel(&nodes[0].amqp_url()).await;
    ch.queue_declare("rs2".into(), durable(), stream_args(Some(2)))
        .await
        .expect("declare a two-node stream");
    let _ = c.close(200, "bye".into()).await;
    let http0 = Http::new(&nodes[0].endpoint("http").expect("http"));
    let v = settled(&http0, "rs2", 2).await;
    let members: BTreeSet<usize> = v["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(index_of)
        .collect();
    let outside = (0..3)
        .find(|i| !members.contains(i))
        .expect("a node outside");
    let member = *members.iter().next().expect("a member");

    let bodies: Vec<String> = (0..300).map(|i| format!("o{i}")).collect();
    let ok = publish_confirmed(&nodes[outside], "rs2", &bodies).await;
    assert_eq!(
        ok.len(),
        300,
        "publishes through a node outside the group are confirmed"
    );
    let want: Vec<(u64, String)> = bodies
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, b)| (i as u64, b))
        .collect();
    for m in &members {
        let got = read_from_first(&nodes[*m], "rs2", 300).await;
        assert_eq!(got, want);
    }

    // The outside node holds no copy: its consumer reads the group's
    // committed records through a member, within its prefetch.
    let (c1, mut first) = stream_consumer(
        &nodes[outside],
        "rs2",
        AMQPValue::LongString("first".into()),
        10,
    )
    .await;
    let window = common::recv_n(&mut first, 10, Duration::from_secs(30)).await;
    let offsets: Vec<u64> = window.iter().map(offset_of).collect();
    assert_eq!(offsets, (0..10).collect::<Vec<u64>>());
    // Bounded negative check: nothing beyond the prefetch while unacked.
    common::assert_no_delivery(&mut first, Duration::from_millis(500)).await;
    let mut through_outside: Vec<Got> = window.iter().map(got).collect();
    for d in &window {
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    through_outside.extend(take_acked(&mut first, 290).await);
    let plain: Vec<(u64, String)> = through_outside
        .iter()
        .map(|(o, b, _)| (*o, b.clone()))
        .collect();
    assert_eq!(plain, want, "offsets 0..300 in order with their bodies");

    // The same offsets, bodies and properties (x-stream-offset among the
    // headers) as a member's own consumer gets.
    let (c2, mut on_member) = stream_consumer(
        &nodes[member],
        "rs2",
        AMQPValue::LongString("first".into()),
        50,
    )
    .await;
    let from_member = take_acked(&mut on_member, 300).await;
    assert_eq!(through_outside, from_member, "as a member delivers them");
    let _ = c2.close(200, "bye".into()).await;

    // A second consumer from offset 150 starts there.
    let (c3, mut middle) =
        stream_consumer(&nodes[outside], "rs2", AMQPValue::LongLongInt(150), 7).await;
    let got_middle = take_acked(&mut middle, 150).await;
    let plain: Vec<(u64, String)> = got_middle.iter().map(|(o, b, _)| (*o, b.clone())).collect();
    assert_eq!(plain, want[150..], "from offset 150 on");

    // Both follow the tail: messages published after they caught up
    // arrive too (through a member, and through the outside node).
    let more: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    assert_eq!(
        publish_confirmed(&nodes[member], "rs2", &more[..10])
            .await
            .len(),
        10
    );
    assert_eq!(
        publish_confirmed(&nodes[outside], "rs2", &more[10..])
            .await
            .len(),
        10
    );
    let tail: Vec<(u64, String)> = more
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, b)| (300 + i as u64, b))
        .collect();
    for consumer in [&mut first, &mut middle] {
        let got = take_acked(consumer, 20).await;
        let plain: Vec<(u64, String)> = got.iter().map(|(o, b, _)| (*o, b.clone())).collect();
        assert_eq!(plain, tail, "the tail followed");
    }

    // "last" resolves on the member: the newest message.
    let (c4, mut last) = stream_consumer(
        &nodes[outside],
        "rs2",
        AMQPValue::LongString("last".into()),
        10,
    )
    .await;
    let got_last = take_acked(&mut last, 1).await;
    assert_eq!((got_last[0].0, got_last[0].1.as_str()), (319, "t19"));
    for c in [c1, c3, c4] {
        let _ = c.close(200, "bye".into()).await;
    }

    // Deleted through one node, gone on every node.
    let (c, ch) = common::connect_channel(&nodes[1].amqp_url()).await;
    ch.queue_delete("rs2".into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
    let _ = c.close(200, "bye".into()).await;
    for b in &nodes {
        let http = Http::new(&b.endpoint("http").expect("http"));
        poll_until("the stream is gone everywhere", || {
            http.req("GET", "/api/queues/%2F/rs2", None).0 == 404
        })
        .await;
    }
}

/// Reads stream `s` through `b` from its first retained offset until the
/// record at `end - 1`: (offset, body) in order.
async fn read_until(b: &Broker, s: &str, end: u64) -> Vec<(u64, String)> {
    read_while(b, s, |got| got.last().is_none_or(|(o, _)| *o + 1 < end)).await
}

/// Stream `s`'s group figure `name` on a node's Prometheus endpoint.
fn metric(metrics: &Http, s: &str, name: &str) -> Option<u64> {
    let text = metrics.text("/metrics");
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&format!("queue=\"{s}\"")))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_cut_log_installs_the_leaders_stream() {
    if skip_external("a_replica_behind_the_cut_log_installs_the_leaders_stream") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds_with(&ports, &[("FERRY_QUEUE_SNAPSHOT_BYTES", "8192")]).await;
    // Small segments and a byte limit: the leader's retention drops what
    // the stopped replica never got, so it must take the leader's log.
    let mut args = stream_args(None);
    args.insert(
        "x-stream-max-segment-size-bytes".into(),
        AMQPValue::LongInt(8192),
    );
    args.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(40_000));
    let (c, ch) = common::connect_channel(&nodes[0].amqp_url()).await;
    ch.queue_declare("rs3".into(), durable(), args)
        .await
        .expect("declare the stream");
    let _ = c.close(200, "bye".into()).await;
    let http0 = Http::new(&nodes[0].endpoint("http").expect("http"));
    let l = index_of(&settled(&http0, "rs3", 3).await["leader"]);
    let f = (l + 1) % 3;
    let pad = "x".repeat(200);
    let early: Vec<String> = (0..20).map(|i| format!("e{i}-{pad}")).collect();
    assert_eq!(publish_confirmed(&nodes[l], "rs3", &early).await.len(), 20);
    let f_metrics = Http::new(&nodes[f].endpoint("metrics").expect("metrics"));
    poll_until("the follower applied the first 20", || {
        count_of(&nodes[f], "rs3") == 20
    })
    .await;
    let f_last = metric(&f_metrics, "rs3", "ferry_raft_last_log_index").expect("its last index");
    nodes[f].kill9().await;

    let late: Vec<String> = (0..400).map(|i| format!("l{i}-{pad}")).collect();
    assert_eq!(publish_confirmed(&nodes[l], "rs3", &late).await.len(), 400);
    let metrics = Http::new(&nodes[l].endpoint("metrics").expect("metrics"));
    poll_until("the leader cut its log past the stopped replica's", || {
        metric(&metrics, "rs3", "ferry_raft_purged_index").is_some_and(|i| i > f_last)
    })
    .await;

    nodes[f].start_again().await;
    nodes[f]
        .wait_stderr_line(|line| line.contains("stream snapshot installed"))
        .await;
    // The same records at the same offsets on both, up to offset 420.
    let on_leader = read_until(&nodes[l], "rs3", 420).await;
    let on_follower = read_until(&nodes[f], "rs3", 420).await;
    assert!(
        on_follower[0].0 > 20,
        "retention removed the early ones: {:?}",
        on_follower[0]
    );
    assert!(
        nodes[f].stderr().contains("stream log replaced"),
        "the replica's log starts where the leader's does"
    );
    eprintln!(
        "leader from {}, follower from {}",
        on_leader[0].0, on_follower[0].0
    );
    let from = on_follower[0].0.max(on_leader[0].0);
    let pick = |v: &[(u64, String)]| -> Vec<(u64, String)> {
        v.iter().filter(|(o, _)| *o >= from).cloned().collect()
    };
    assert_eq!(pick(&on_follower), pick(&on_leader));
    assert_eq!(
        on_follower.last().map(|x| x.1.clone()),
        late.last().cloned()
    );

    // Everything killed and restarted: each replica from its checkpoint and
    // its cut log: the same stream, and it takes publishes.
    for n in nodes.iter_mut() {
        n.kill9().await;
    }
    let [a, b, c] = &mut nodes[..] else {
        panic!("three nodes")
    };
    tokio::join!(a.start_again(), b.start_again(), c.start_again());
    let more = publish_confirmed(&nodes[f], "rs3", &["after".to_string()]).await;
    assert_eq!(more.len(), 1);
    for n in &nodes {
        let got = read_until(n, "rs3", 421).await;
        assert_eq!(
            got.last().map(|x| (x.0, x.1.as_str())),
            Some((420, "after"))
        );
        let mine: Vec<(u64, String)> = got
            .iter()
            .filter(|(o, _)| *o >= from && *o < 420)
            .cloned()
            .collect();
        assert_eq!(mine, pick(&on_leader), "node {}", n.amqp_url());
    }
}

fn count_of(b: &Broker, s: &str) -> u64 {
    let http = Http::new(&b.endpoint("http").expect("http"));
    let (_, v) = http.req("GET", &format!("/api/queues/%2F/{s}"), None);
    v["messages"].as_u64().unwrap_or(0)
}

//! Starting clusters of `ferry` processes on loopback, and watching
//! `/api/nodes` settle.

use super::http::Http;
use super::Broker;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Free ports for listeners a test must name in advance (bound, read,
/// released). Taken below the kernel's ephemeral range: a port the kernel
/// handed out for `:0` is free again once released, and another process's
/// `127.0.0.1:0` listener (every test node's AMQP port) or outgoing
/// connection could get it before the node that was meant to (CI saw a
/// node's fixed HTTP port taken by another node's AMQP listener).
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::hash::{BuildHasher, Hasher};
    let low = ephemeral_low().clamp(12_000, 32_768);
    let span = u64::from(low - 10_000);
    let mut ls: Vec<std::net::TcpListener> = Vec::with_capacity(n);
    let mut tries = 0u32;
    while ls.len() < n {
        tries += 1;
        assert!(tries < 10_000, "no free port below {low}");
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(tries);
        let port = 10_000 + u16::try_from(h.finish() % span).expect("below the range");
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            ls.push(l);
        }
    }
    ls.iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// The first port of the kernel's ephemeral range (32768 if unknown).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

pub fn node_env(i: usize, ports: &[u16], seeds: &str, secret: &str) -> Vec<(String, String)> {
    vec![
        ("FERRY_NODE_NAME".into(), format!("n{i}")),
        (
            "FERRY_CLUSTER_LISTEN".into(),
            format!("127.0.0.1:{}", ports[i - 1]),
        ),
        ("FERRY_CLUSTER_SEEDS".into(), seeds.into()),
        ("FERRY_CLUSTER_SECRET".into(), secret.into()),
        ("FERRY_WORKER_THREADS".into(), "1".into()),
    ]
}

pub async fn start_node(env: Vec<(String, String)>) -> Broker {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Broker::start_with_env("cluster", &env)
        .await
        .expect("owned broker")
}

/// These tests start ferry processes of their own (none against RabbitMQ).
pub fn skip_external(test: &str) -> bool {
    let ext = super::external_url().is_some();
    if ext {
        eprintln!("SKIP {test}: starts a cluster of ferry processes");
    }
    ext
}

/// The three seeds, started together (each prints READY only once the
/// cluster formed, which needs a majority of them).
pub async fn three_seeds(ports: &[u16]) -> (Vec<Broker>, String) {
    three_seeds_with(ports, &[]).await
}

/// [`three_seeds`] with `extra` settings (`FERRY_*` variables) on each.
pub async fn three_seeds_with(ports: &[u16], extra: &[(&str, &str)]) -> (Vec<Broker>, String) {
    let seeds = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let env = |i| {
        let mut e = node_env(i, ports, &seeds, "s3cret");
        e.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        e
    };
    let (a, b, c) = tokio::join!(start_node(env(1)), start_node(env(2)), start_node(env(3)));
    (vec![a, b, c], seeds)
}

pub fn nodes_of(b: &Broker) -> Vec<Value> {
    let http = Http::new(&b.endpoint("http").expect("http endpoint"));
    let (st, v) = http.req("GET", "/api/nodes", None);
    assert_eq!(st, 200, "{v}");
    v.as_array().cloned().expect("array")
}

/// Polls `/api/nodes` of `b` until `ok` holds (the view changes as
/// elections and pings settle; each poll is one HTTP round).
pub async fn until(b: &Broker, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = nodes_of(b);
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: last /api/nodes {v:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn leader(v: &[Value]) -> Option<String> {
    let ls: Vec<&Value> = v.iter().filter(|n| n["metadata_leader"] == true).collect();
    (ls.len() == 1).then(|| ls[0]["name"].as_str().unwrap_or_default().to_string())
}

/// Polls `ok` (a state that settles on its own: elections, replication,
/// a sweep) every 50 ms until it holds, for up to 30 s.
pub async fn poll_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes `bodies` (persistent) to `queue` through `b` on one confirm
/// channel, pipelined (every publish sent before any confirm is awaited);
/// returns each body with its confirm: acked (true), nacked (false), or
/// none within 20 s (None).
pub async fn publish_each(
    b: &Broker,
    queue: &str,
    bodies: &[String],
) -> Vec<(String, Option<bool>)> {
    use lapin::options::BasicPublishOptions;
    let conn = super::connect(&b.amqp_url()).await;
    let ch = super::confirm_channel(&conn).await;
    let mut pending = Vec::new();
    for body in bodies {
        let c = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish");
        pending.push((body.clone(), c));
    }
    let mut out = Vec::new();
    for (body, c) in pending {
        let conf = match tokio::time::timeout(Duration::from_secs(20), c).await {
            Ok(Ok(conf)) => Some(conf.is_ack()),
            _ => None,
        };
        out.push((body, conf));
    }
    let _ = conn.close(200, "bye".into()).await;
    out
}

/// Publishes `bodies` (persistent) to `queue` through `b` on one confirm
/// channel; returns those confirmed (acked within 20 s).
pub async fn publish_confirmed(b: &Broker, queue: &str, bodies: &[String]) -> Vec<String> {
    publish_each(b, queue, bodies)
        .await
        .into_iter()
        .filter(|(_, c)| *c == Some(true))
        .map(|(body, _)| body)
        .collect()
}

/// The `x-stream-offset` of a stream delivery.
pub fn offset_of(d: &lapin::message::Delivery) -> u64 {
    let headers = d.properties.headers().as_ref().expect("headers");
    match headers.inner().get("x-stream-offset") {
        Some(AMQPValue::LongLongInt(n)) => u64::try_from(*n).expect("offset >= 0"),
        other => panic!("x-stream-offset header: {other:?}"),
    }
}

/// Reads stream `s` through `b` from its first retained offset, in order,
/// while `more` says the records so far are not enough: (offset, body).
pub async fn read_while(
    b: &Broker,
    s: &str,
    more: impl Fn(&[(u64, String)]) -> bool,
) -> Vec<(u64, String)> {
    let conn = super::connect(&b.amqp_url()).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(200, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString(LongString::from("first")),
    );
    let mut consumer = ch
        .basic_consume(s.into(), "".into(), BasicConsumeOptions::default(), args)
        .await
        .expect("consume the stream");
    let mut got = Vec::new();
    while more(&got) {
        let d = super::recv_one(&mut consumer, Duration::from_secs(30)).await;
        d.ack(BasicAckOptions::default()).await.expect("ack");
        got.push((offset_of(&d), String::from_utf8_lossy(&d.data).into_owned()));
    }
    let _ = conn.close(200, "bye".into()).await;
    got
}

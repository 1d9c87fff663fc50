//! Stored records and their limits (issue 10, section 1), on the real binary:
//! - names and keys longer than an AMQP short string (255 bytes) are refused at every entry
//!   point before anything is stored (x-arguments over AMQP, the management API, definitions
//!   import), so no record is ever truncated and a restart always finds what was stored;
//! - a record that does not decode (valid CRC, bad payload) makes only its queue or stream
//!   `crashed`: the node starts and serves, the API and metrics report it, an ERROR is logged,
//!   clients get RabbitMQ's 404, and deleting it recovers.
//!
//! Ferry-only (they restart the broker or read its `http=` endpoint); the scenarios RabbitMQ
//! answers the same way run against both brokers in tests/python/test_records.py.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ferry_log::{Log, LogConfig, StdIo};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, BasicRejectOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// 200 × "é": 400 bytes, 200 characters. Cut at 255 bytes it ends inside a character.
fn long_key() -> String {
    "é".repeat(200)
}

/// The longest key that fits: 127 × "é" + "a" = 255 bytes.
fn longest_key() -> String {
    format!("{}a", "é".repeat(127))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Publishes a persistent `body` to `queue` (default exchange) and waits for the
/// publish to settle (its confirm, on a confirm channel).
async fn publish_persistent(ch: &lapin::Channel, queue: &str, body: &[u8]) {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        persistent(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// The reproduction: a 400-byte x-dead-letter-routing-key is refused at the
/// declaration (RabbitMQ accepts it and then fails every delivery of the dead letter with
/// 541); the longest key that fits is dead-lettered, stored and read back intact after a
/// restart.
#[tokio::test]
async fn dead_letter_keys_are_checked_at_declaration_and_survive_a_restart() {
    let Some(mut broker) =
        Broker::start_owned("dead_letter_keys_are_checked_at_declaration_and_survive_a_restart")
            .await
    else {
        return;
    };
    let (conn, ch) = connect_channel(&broker.amqp_url()).await;
    let dlx = |key: &str| {
        table(&[
            ("x-dead-letter-exchange", s("amq.fanout")),
            ("x-dead-letter-routing-key", s(key)),
        ])
    };
    let res = ch
        .queue_declare("src".into(), durable(), dlx(&long_key()))
        .await;
    assert_eq!(
        expect_amqp_err(res, "a 400-byte dead-letter routing key"),
        (
            406,
            "PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue 'src' in vhost '/': {value_too_long,400}".into()
        )
    );
    let ch = conn.create_channel().await.unwrap();
    let res = ch
        .queue_declare(
            "src".into(),
            durable(),
            table(&[("x-dead-letter-exchange", s(&"x".repeat(256)))]),
        )
        .await;
    assert_eq!(expect_amqp_err(res, "a 256-byte DLX").0, 406);
    let ch = confirm_channel(&conn).await;
    ch.queue_declare("src".into(), durable(), dlx(&longest_key()))
        .await
        .unwrap();
    declare_durable(&ch, "dead", FieldTable::default()).await;
    ch.queue_bind(
        "dead".into(),
        "amq.fanout".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish_persistent(&ch, "src", b"m").await;
    let m = ch
        .basic_get("src".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("a message in src");
    ch.basic_reject(
        m.delivery.delivery_tag,
        BasicRejectOptions { requeue: false },
    )
    .await
    .unwrap();
    let start = Instant::now();
    while message_count(&ch, "dead").await != 1 {
        assert!(start.elapsed() < STEP, "not dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(conn);
    broker.restart().await;
    let (_conn, ch) = connect_channel(&broker.amqp_url()).await;
    let m = ch
        .basic_get("dead".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the dead letter survived the restart");
    assert_eq!(m.delivery.routing_key.as_str(), longest_key());
    assert_eq!(m.delivery.exchange.as_str(), "amq.fanout");
}

/// Every management API entry point refuses names and keys over 255 bytes with a 400 and
/// stores nothing (queue names: RabbitMQ's own text; RabbitMQ accepts the others and
/// breaks later, see docs/queue-records.md).
#[tokio::test]
async fn the_management_api_refuses_over_long_names_and_keys() {
    let Some(broker) =
        Broker::start_owned("the_management_api_refuses_over_long_names_and_keys").await
    else {
        return;
    };
    let api = Http::new(&broker.endpoint("http").expect("READY line has http="));
    let long = long_key();
    let reason = |what: &str, n: usize| {
        json!({
            "error": "bad_request",
            "reason": format!("{what} should be less than 255 bytes, actually was {n}\n"),
        })
    };
    let q = format!("/api/queues/%2F/{}", enc(&long));
    assert_eq!(
        api.req("PUT", &q, Some(json!({"durable": true}))),
        (400, reason("queue", 400))
    );
    let x = format!("/api/exchanges/%2F/{}", enc(&long));
    assert_eq!(
        api.req("PUT", &x, Some(json!({"type": "fanout"}))),
        (400, reason("exchange", 400))
    );
    assert_eq!(
        api.req(
            "PUT",
            "/api/queues/%2F/target",
            Some(json!({"durable": true}))
        )
        .0,
        201
    );
    let publish = json!({
        "routing_key": long, "payload": "x", "payload_encoding": "string", "properties": {},
    });
    assert_eq!(
        api.req(
            "POST",
            "/api/exchanges/%2F/amq.fanout/publish",
            Some(publish)
        ),
        (400, reason("routing_key", 400))
    );
    assert_eq!(
        api.req(
            "POST",
            "/api/bindings/%2F/e/amq.direct/q/target",
            Some(json!({"routing_key": long}))
        ),
        (400, reason("routing_key", 400))
    );
    let (status, body) = api.req(
        "PUT",
        "/api/queues/%2F/dl",
        Some(json!({"durable": true, "arguments": {
            "x-dead-letter-exchange": "amq.fanout", "x-dead-letter-routing-key": long,
        }})),
    );
    assert_eq!(status, 400);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("{value_too_long,400}"),
        "{body}"
    );
    for defs in [
        json!({"queues": [{"name": long, "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}]}),
        json!({"exchanges": [{"name": long, "vhost": "/", "type": "direct", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}]}),
        json!({"bindings": [{"source": "amq.direct", "vhost": "/", "destination": "target", "destination_type": "queue", "routing_key": long, "arguments": {}}]}),
    ] {
        let (status, body) = api.req("POST", "/api/definitions", Some(defs));
        assert_eq!(status, 400, "{body}");
        assert!(
            body["reason"]
                .as_str()
                .unwrap()
                .contains("should be less than 255 bytes"),
            "{body}"
        );
    }
    // Nothing of it was stored; the longest name that fits works.
    let (_, queues) = api.req("GET", "/api/queues/%2F", None);
    let names: Vec<&str> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["target"]);
    let (_, bindings) = api.req("GET", "/api/queues/%2F/target/bindings", None);
    assert_eq!(
        bindings.as_array().unwrap().len(),
        1,
        "default binding only"
    );
    let fits = format!("/api/queues/%2F/{}", enc(&longest_key()));
    assert_eq!(api.req("PUT", &fits, Some(json!({}))).0, 201);
}

/// The directories under `queues/` of the default vhost's data.
fn storage_dirs(data: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(data.join("vhosts/2f/queues"))
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    all.sort();
    all
}

/// Appends one record with a valid CRC and `payload` to the log in `dir`.
fn append_record(dir: &Path, payload: &[u8]) {
    let (mut log, _) = Log::open(Arc::new(StdIo), dir, LogConfig::default()).unwrap();
    log.append(payload).unwrap();
    log.flush().unwrap();
}

/// A queue Enqueue record whose routing key is not UTF-8 (what cutting 200 × "é" at 255
/// bytes produced before the limits).
const BAD_ENQUEUE: &[u8] = &[1, 1, 1, b'x', 2, 0xC3, 0x28, 0, 0, 0, 0, b'b'];

/// A stream record (tag, timestamp, flags) whose routing key is not UTF-8.
fn bad_stream_record() -> Vec<u8> {
    let mut r = vec![b'S'];
    r.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    r.extend_from_slice(&[1, 0, 2, 0xC3, 0x28, 0, 0, 0, 0]);
    r
}

/// Decode faults inside otherwise valid (CRC-checked) records: only that queue and that
/// stream are `crashed`; the node starts, other queues serve, the API, the metrics and the
/// log report it, clients get RabbitMQ's 404, and deleting the crashed ones recovers.
#[tokio::test]
async fn an_undecodable_record_crashes_its_queue_not_the_node() {
    let Some(mut broker) =
        Broker::start_owned("an_undecodable_record_crashes_its_queue_not_the_node").await
    else {
        return;
    };
    let data = broker.data_dir().to_path_buf();
    let (conn, ch) = connect_channel(&broker.amqp_url()).await;
    ch.confirm_select(Default::default()).await.unwrap();
    let stream = table(&[("x-queue-type", s("stream"))]);
    let mut dirs = Vec::new();
    for (name, args) in [
        ("bad", FieldTable::default()),
        ("bad-stream", stream.clone()),
    ] {
        let before = storage_dirs(&data);
        ch.queue_declare(name.into(), durable(), args)
            .await
            .unwrap();
        let new: Vec<PathBuf> = storage_dirs(&data)
            .into_iter()
            .filter(|d| !before.contains(d))
            .collect();
        assert_eq!(new.len(), 1, "one storage dir for {name}");
        dirs.push(new[0].clone());
    }
    declare_durable(&ch, "good", FieldTable::default()).await;
    ch.queue_bind(
        "bad".into(),
        "amq.fanout".into(),
        "f".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for q in ["bad", "bad-stream", "good"] {
        publish_persistent(&ch, q, b"m").await;
    }
    drop(conn);
    let status = broker.terminate().await;
    assert!(status.success(), "{status}");
    append_record(&dirs[0], BAD_ENQUEUE);
    append_record(&dirs[1], &bad_stream_record());

    broker.start_again().await;
    broker
        .wait_stderr_line(|l| {
            l.contains("ERROR") && l.contains("queue crashed") && l.contains("bad")
        })
        .await;
    let (conn, ch) = connect_channel(&broker.amqp_url()).await;
    assert_eq!(
        message_count(&ch, "good").await,
        1,
        "the other queue serves"
    );
    for (name, passive) in [("bad", true), ("bad", false), ("bad-stream", true)] {
        let opts = QueueDeclareOptions {
            passive,
            ..durable()
        };
        let args = if name == "bad" {
            FieldTable::default()
        } else {
            stream.clone()
        };
        // A 404 closes the channel: one channel per try.
        let c = conn.create_channel().await.unwrap();
        let res = c.queue_declare(name.into(), opts, args).await;
        assert_eq!(
            expect_amqp_err(res, "declare of a crashed queue"),
            (
                404,
                format!(
                    "NOT_FOUND - queue '{name}' in vhost '/' has crashed and failed to restart"
                )
            )
        );
    }
    let c = conn.create_channel().await.unwrap();
    let res = c
        .basic_get("bad".into(), BasicGetOptions { no_ack: true })
        .await;
    assert_eq!(expect_amqp_err(res, "basic.get of a crashed queue").0, 404);
    let ch = conn.create_channel().await.unwrap();
    let got = ch
        .basic_get("good".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(got.is_some());

    let api = Http::new(&broker.endpoint("http").expect("READY line has http="));
    let (_, queues) = api.req("GET", "/api/queues/%2F", None);
    let states: Vec<(String, String, String)> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            let f = |k: &str| q[k].as_str().unwrap_or_default().to_string();
            (f("name"), f("type"), f("state"))
        })
        .collect();
    let row = |n: &str, t: &str, s: &str| (n.to_string(), t.to_string(), s.to_string());
    assert_eq!(
        states,
        [
            row("bad", "classic", "crashed"),
            row("bad-stream", "stream", "crashed"),
            row("good", "classic", "running"),
        ]
    );
    let (status, one) = api.req("GET", "/api/queues/%2F/bad", None);
    assert_eq!((status, one["state"].as_str()), (200, Some("crashed")));
    // Its bindings are kept and listed, as RabbitMQ lists them.
    let (status, b) = api.req("GET", "/api/queues/%2F/bad/bindings", None);
    let keys: Vec<(&str, &str)> = b
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    let f = |k: &str| x[k].as_str().unwrap_or_default();
                    (f("source"), f("routing_key"))
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        (status, keys),
        (200, vec![("", "bad"), ("amq.fanout", "f")]),
        "{b}"
    );
    assert_eq!(api.req("GET", "/api/queues/%2F/nope/bindings", None).0, 404);
    // The overview counts crashed queues as objects (RabbitMQ counts queue records), their
    // messages not at all (no stats; good's message was taken above).
    let (_, o) = api.req("GET", "/api/overview", None);
    assert_eq!(o["object_totals"]["queues"], 3, "{o}");
    assert_eq!(o["queue_totals"]["messages"], 0, "{o}");
    let metrics = Http::new(&broker.endpoint("metrics").expect("metrics="));
    let text = metrics.text("/metrics");
    assert!(
        text.lines().any(|l| l == "ferry_queues_crashed 2"),
        "{text}"
    );

    // The operator's way out: delete (HTTP and AMQP), then the names are free again.
    assert_eq!(api.req("DELETE", "/api/queues/%2F/bad", None).0, 204);
    let deleted = ch
        .queue_delete("bad-stream".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(deleted, 0);
    assert!(dirs.iter().all(|d| !d.exists()), "crashed data removed");
    declare_durable(&ch, "bad", FieldTable::default()).await;
    assert_eq!(message_count(&ch, "bad").await, 0);
    let text = metrics.text("/metrics");
    assert!(
        text.lines().any(|l| l == "ferry_queues_crashed 0"),
        "{text}"
    );
    drop(conn);
    let crashes = |b: &Broker| b.stderr().matches("queue crashed").count();
    let before = crashes(&broker);
    broker.restart().await;
    assert_eq!(
        crashes(&broker),
        before,
        "nothing crashed at the next start"
    );
}

/// A valid stream record (tag, timestamp, persistent, no exchange, key "k", empty properties)
/// with `body`.
fn good_stream_record(body: &[u8]) -> Vec<u8> {
    let mut r = vec![b'S'];
    r.extend_from_slice(&1_700_000_000_001u64.to_le_bytes());
    r.extend_from_slice(&[1, 0, 1, b'k', 2, 0, 0, 0, 0, 0]);
    r.extend_from_slice(body);
    r
}

/// Polls `f` until it holds (the crash is reported from a thread of its own).
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {STEP:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stream whose log has an undecodable record in the middle (valid CRC, good records on
/// both sides) opens, serves the records before it, and when a consumer reaches it the stream
/// becomes `crashed`: the consumer gets basic.cancel (consumer_cancel_notify, as for a deleted
/// queue), the bad record and those after it are never delivered, one ERROR is logged, the
/// API and metrics report it, and deleting it recovers.
#[tokio::test]
async fn a_corrupt_record_inside_a_stream_crashes_it_at_runtime() {
    let Some(mut broker) = Broker::start_owned("a_corrupt_record_inside_a_stream").await else {
        return;
    };
    let data = broker.data_dir().to_path_buf();
    let (conn, ch) = connect_channel(&broker.amqp_url()).await;
    ch.confirm_select(Default::default()).await.unwrap();
    let stream = table(&[("x-queue-type", s("stream"))]);
    ch.queue_declare("mid".into(), durable(), stream.clone())
        .await
        .unwrap();
    let dirs = storage_dirs(&data);
    assert_eq!(dirs.len(), 1);
    publish_persistent(&ch, "mid", b"before").await;
    drop(conn);
    assert!(broker.terminate().await.success());
    append_record(&dirs[0], &bad_stream_record());
    append_record(&dirs[0], &good_stream_record(b"after"));

    broker.start_again().await;
    let crashes = |b: &Broker| {
        b.stderr()
            .lines()
            .filter(|l| l.contains("ERROR") && l.contains("queue crashed"))
            .count()
    };
    assert_eq!(
        crashes(&broker),
        0,
        "the stream opens: its last record is good"
    );
    let (conn, ch) = connect_channel(&broker.amqp_url()).await;
    ch.basic_qos(10, Default::default()).await.unwrap();
    let mut c = ch
        .basic_consume(
            "mid".into(),
            "c1".into(),
            Default::default(),
            table(&[("x-stream-offset", s("first"))]),
        )
        .await
        .unwrap();
    let d = recv_one(&mut c, STEP).await;
    assert_eq!(body_str(&d), "before");
    d.ack(Default::default()).await.unwrap();
    expect_consumer_end(&mut c, STEP).await;

    let api = Http::new(&broker.endpoint("http").expect("READY line has http="));
    until("state crashed", || {
        api.req("GET", "/api/queues/%2F/mid", None).1["state"] == "crashed"
    })
    .await;
    let metrics = Http::new(&broker.endpoint("metrics").expect("metrics="));
    assert!(metrics
        .text("/metrics")
        .lines()
        .any(|l| l == "ferry_queues_crashed 1"));
    // A new consumer gets RabbitMQ's 404; the channel still serves other queues.
    let c2 = conn.create_channel().await.unwrap();
    c2.basic_qos(10, Default::default()).await.unwrap();
    let res = c2
        .basic_consume(
            "mid".into(),
            "c2".into(),
            Default::default(),
            table(&[("x-stream-offset", s("first"))]),
        )
        .await;
    assert_eq!(
        expect_amqp_err(res, "consume of a crashed stream"),
        (
            404,
            "NOT_FOUND - queue 'mid' in vhost '/' has crashed and failed to restart".into()
        )
    );
    broker
        .wait_stderr_line(|l| l.contains("ERROR") && l.contains("queue crashed"))
        .await;
    assert_eq!(crashes(&broker), 1, "one ERROR line:\n{}", broker.stderr());
    assert!(!broker.stderr().contains("stream read failed"));

    assert_eq!(api.req("DELETE", "/api/queues/%2F/mid", None).0, 204);
    assert!(!dirs[0].exists(), "crashed data removed");
    ch.queue_declare("mid".into(), durable(), stream)
        .await
        .unwrap();
    drop(conn);
}

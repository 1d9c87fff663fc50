//! The management HTTP API and the Prometheus endpoint of the real binary, driven with an
//! HTTP client (ureq) and checked against what lapin does on the AMQP side. Ferry-only
//! (they read the `http=` / `metrics=` endpoints of a spawned broker); the same scenarios
//! run against RabbitMQ's management plugin in tests/python/test_management_api.py.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{confirm_channel, connect, connect_channel, publish_settled, unique, Broker, Http};
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

async fn start(test: &str) -> Option<(Broker, Http)> {
    let broker = Broker::start_owned(test).await?;
    let http = Http::new(&broker.endpoint("http").expect("READY line has http="));
    Some((broker, http))
}

#[tokio::test]
async fn queue_lifecycle_stats_and_errors() {
    let Some((broker, api)) = start("queue_lifecycle_stats_and_errors").await else {
        return;
    };
    let q = unique("httpq");
    let path = format!("/api/queues/%2F/{q}");
    assert_eq!(api.req("PUT", &path, Some(json!({"durable": true}))).0, 201);
    assert_eq!(api.req("PUT", &path, Some(json!({"durable": true}))).0, 204);
    let (st, err) = api.req("PUT", &path, Some(json!({"durable": false})));
    assert_eq!(st, 400);
    assert_eq!(err["error"], "bad_request");

    // Two confirmed AMQP publishes, then the API's view.
    let (_conn, ch) = connect_confirming(&broker.amqp_url()).await;
    publish_settled(&ch, &q, &["a", "bb"]).await;
    let (st, info) = api.req("GET", &path, None);
    assert_eq!(st, 200);
    assert_eq!(info["messages_ready"], 2);
    assert_eq!(info["messages"], 2);
    assert_eq!(info["message_stats"]["publish"], 2);
    assert!(info["message_bytes_ready"].as_u64().unwrap() > 3);

    // get with ack removes one; purge the other.
    let get = json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"});
    let (st, got) = api.req("POST", &format!("{path}/get"), Some(get));
    assert_eq!(st, 200);
    assert_eq!(got[0]["payload"], "a");
    assert_eq!(got[0]["message_count"], 1);
    assert_eq!(api.req("DELETE", &format!("{path}/contents"), None).0, 204);
    let (_, info) = api.req("GET", &path, None);
    assert_eq!(info["messages"], 0);
    assert_eq!(info["message_stats"]["get"], 1);
    assert_eq!(info["message_stats"]["ack"], 1);

    // Errors: JSON bodies, never a 500.
    let (st, err) = api.call("PUT", &path, Some(b"{oops"), Some("guest:guest"));
    assert_eq!((st, err["reason"].as_str()), (400, Some("not_json")));
    let (st, err) = api.call("GET", "/api/overview", None, None);
    assert_eq!((st, err["error"].as_str()), (401, Some("not_authorized")));
    let (st, _) = api.call("GET", "/api/overview", None, Some("guest:nope"));
    assert_eq!(st, 401);
    let missing = api.req("GET", "/api/queues/%2F/no-such-queue", None);
    assert_eq!(
        missing,
        (
            404,
            json!({"error": "Object Not Found", "reason": "Not Found"})
        )
    );
    assert_eq!(api.req("GET", "/api/queues/no-such-vhost", None).0, 404);
    let (st, _) = api.req(
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        Some(
            json!({"routing_key": q, "payload": "x", "payload_encoding": "nope", "properties": {}}),
        ),
    );
    assert_eq!(st, 400);
    let (st, _) = api.req("GET", "/api/queues?page=zero", None);
    assert_eq!(st, 400);
    // Not UTF-8 after percent-decoding: axum's rejection, still JSON.
    let (st, err) = api.req("GET", "/api/queues/%FF/x", None);
    assert_eq!((st, err["error"].as_str()), (400, Some("bad_request")));
    assert_eq!(api.req("DELETE", &path, None).0, 204);
    assert_eq!(api.req("GET", &path, None).0, 404);
}

#[tokio::test]
async fn connections_are_listed_and_force_closed() {
    let Some((broker, api)) = start("connections_are_listed_and_force_closed").await else {
        return;
    };
    let (conn, ch) = connect_channel(&broker.amqp_url()).await;
    let q = unique("consq");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_qos(9, BasicQosOptions::default()).await.unwrap();
    let _consumer = ch
        .basic_consume(
            q.as_str().into(),
            "tag-http".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (_, conns) = api.req("GET", "/api/connections", None);
    let conns = conns.as_array().unwrap();
    assert_eq!(conns.len(), 1, "{conns:?}");
    let c = &conns[0];
    assert_eq!(c["user"], "guest");
    assert_eq!(c["vhost"], "/");
    assert_eq!(c["channels"], 1);
    assert!(c["recv_oct"].as_u64().unwrap() > 0);
    let name = c["name"].as_str().unwrap().to_string();
    assert!(name.contains(" -> "), "{name}");
    let (_, chans) = api.req("GET", "/api/channels", None);
    assert_eq!(chans[0]["prefetch_count"], 9);
    assert_eq!(chans[0]["consumer_count"], 1);
    let (_, cons) = api.req("GET", "/api/consumers", None);
    assert_eq!(cons[0]["consumer_tag"], "tag-http");
    assert_eq!(cons[0]["queue"]["name"], q.as_str());
    let (_, ov) = api.req("GET", "/api/overview", None);
    assert_eq!(ov["object_totals"]["connections"], 1);
    assert_eq!(ov["object_totals"]["consumers"], 1);

    // Close it from outside: lapin's connection goes away...
    assert_eq!(
        api.req("DELETE", &format!("/api/connections/{}", enc(&name)), None)
            .0,
        204
    );
    let after = tokio::time::timeout(
        Duration::from_secs(10),
        ch.basic_qos(1, BasicQosOptions::default()),
    )
    .await
    .expect("lapin hung on a force-closed connection");
    assert!(after.is_err());
    assert!(!conn.status().connected());
    wait_for_connections(&api, 0).await;
    assert_eq!(
        api.req("DELETE", &format!("/api/connections/{}", enc(&name)), None)
            .0,
        404
    );
    // ... and on the wire it is RabbitMQ's 320 with its text.
    let mut raw = common::raw::RawConn::open(&broker.amqp_addr()).await;
    raw.open_channel(1).await;
    let (_, conns) = api.req("GET", "/api/connections", None);
    let raw_name = conns[0]["name"].as_str().unwrap().to_string();
    assert_ne!(raw_name, name);
    let reader = tokio::spawn(async move { raw.expect_connection_close_no_eof().await });
    assert_eq!(
        api.req(
            "DELETE",
            &format!("/api/connections/{}", enc(&raw_name)),
            None
        )
        .0,
        204
    );
    let close = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("no connection.close")
        .unwrap();
    assert_eq!(close.code, 320);
    assert_eq!(
        close.text,
        "CONNECTION_FORCED - Closed via management plugin"
    );
}

/// Waits (bounded) until the API lists `n` connections and returns the list. A
/// force-closed connection stays listed until the client's close-ok has arrived
/// and the connection is torn down (as in RabbitMQ), a moment after the client
/// saw the close.
async fn wait_for_connections(api: &Http, n: usize) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, conns) = api.req("GET", "/api/connections", None);
        if conns.as_array().is_some_and(|c| c.len() == n) {
            return conns;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {n} connections listed: {conns}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Percent-encodes a path segment.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A strict reading of the text exposition format: every sample belongs to a family
/// declared by HELP and TYPE before it, names and label syntax are valid, values parse,
/// histogram buckets are cumulative and end with +Inf = _count.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: Vec<String> = Vec::new();
    let mut samples = HashMap::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut last_bucket: Option<f64> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "{line}");
            helped.push(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                helped.last().is_some_and(|h| h == name),
                "TYPE without HELP: {line}"
            );
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "twice: {line}"
            );
            last_bucket = None;
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "undeclared family: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}'));
                let inner = inner.unwrap_or_else(|| panic!("labels in {line}"));
                for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                    assert!(valid_name(k), "label name in {line}");
                    assert!(!v.trim_end_matches('"').contains('\n'), "{line}");
                }
            }
        }
        if name.ends_with("_bucket") {
            if let Some(prev) = last_bucket {
                assert!(value >= prev, "buckets not cumulative: {line}");
            }
            last_bucket = Some(value);
        }
        samples.insert(series.to_string(), value);
    }
    samples
}

#[tokio::test]
async fn prometheus_metrics_are_valid_and_count() {
    let Some((broker, _api)) = start("prometheus_metrics_are_valid_and_count").await else {
        return;
    };
    let metrics = Http::new(&broker.endpoint("metrics").expect("metrics="));
    let (conn, ch) = connect_channel(&broker.amqp_url()).await;
    let q = unique("metq");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    // Persistent publishes to a durable queue: each confirm waits for an fsync.
    let cch = common::confirm_channel(&conn).await;
    for b in ["1", "22", "333"] {
        common::publish_props(
            &cch,
            "",
            &q,
            b.as_bytes(),
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await;
    }
    common::settle(&cch).await;
    let mut resp = metrics
        .agent
        .get(format!("{}/metrics", metrics.base))
        .call()
        .unwrap();
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = resp.body_mut().read_to_string().unwrap();
    let s = parse_exposition(&text);
    let label = format!("{{vhost=\"/\",queue=\"{q}\"}}");
    assert_eq!(s[&format!("ferry_queue_messages_ready{label}")], 3.0);
    assert_eq!(
        s[&format!("ferry_queue_messages_published_total{label}")],
        3.0
    );
    assert_eq!(s["ferry_connections"], 1.0);
    assert_eq!(s["ferry_channels"], 2.0);
    assert!(s["ferry_fsync_duration_seconds_count"] >= 1.0);
    assert_eq!(
        s["ferry_fsync_duration_seconds_count"],
        s["ferry_fsync_duration_seconds_bucket{le=\"+Inf\"}"]
    );
    assert_eq!(s["ferry_alarms_memory_used_watermark"], 0.0);
    assert!(s["ferry_process_resident_memory_bytes"] > 0.0);
}

#[tokio::test]
async fn listeners_can_be_switched_off() {
    let Some(broker) = Broker::start_with_env(
        "listeners_can_be_switched_off",
        &[("FERRY_HTTP_LISTEN", "off"), ("FERRY_METRICS_LISTEN", "")],
    )
    .await
    else {
        return;
    };
    assert_eq!(broker.endpoint("http"), None);
    assert_eq!(broker.endpoint("metrics"), None);
}

#[tokio::test]
async fn rates_come_from_the_sampler() {
    let Some((broker, api)) = start("rates_come_from_the_sampler").await else {
        return;
    };
    let q = unique("rateq");
    let path = format!("/api/queues/%2F/{q}");
    assert_eq!(api.req("PUT", &path, Some(json!({}))).0, 201);
    let (_conn, ch) = connect_confirming(&broker.amqp_url()).await;
    let bodies: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    publish_settled(&ch, &q, &refs).await;
    // The sampler reads every 5 s; the rate is the last period's. Wait for the first
    // period that saw the publishes (bounded), then check its value.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let info = loop {
        let (_, info) = api.req("GET", &path, None);
        if info["message_stats"]["publish_details"]["rate"].as_f64() > Some(0.0) {
            break info;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no publish rate: {info}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rate = info["message_stats"]["publish_details"]["rate"]
        .as_f64()
        .unwrap();
    // Up to 50 messages over one period of ~5 s (fewer if the publishes straddled two).
    assert!(rate > 0.0 && rate <= 50.0, "{rate}");
    assert!(info["messages_ready_details"]["rate"].as_f64().unwrap() > 0.0);
    let (_, ov) = api.req("GET", "/api/overview", None);
    assert!(
        ov["message_stats"]["publish_details"]["rate"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

impl Http {
    /// The metrics listener's samples.
    fn samples(&self) -> HashMap<String, f64> {
        let mut resp = self
            .agent
            .get(format!("{}/metrics", self.base))
            .call()
            .unwrap();
        parse_exposition(&resp.body_mut().read_to_string().unwrap())
    }
}

#[tokio::test]
async fn streams_are_queues_to_the_api_metrics_and_definitions() {
    let Some((broker, api)) = start("streams_are_queues_to_the_api").await else {
        return;
    };
    let s = unique("http-stream");
    let path = format!("/api/queues/%2F/{s}");
    let decl = json!({"durable": true, "arguments": {"x-queue-type": "stream"}});
    assert_eq!(api.req("PUT", &path, Some(decl.clone())).0, 201);
    assert_eq!(api.req("PUT", &path, Some(decl)).0, 204);
    let (_conn, ch) = connect_confirming(&broker.amqp_url()).await;
    publish_settled(&ch, &s, &["a", "b", "c"]).await;
    let (st, info) = api.req("GET", &path, None);
    assert_eq!(st, 200);
    assert_eq!(info["type"], "stream");
    assert_eq!(info["arguments"], json!({"x-queue-type": "stream"}));
    assert_eq!(
        (&info["messages"], &info["messages_ready"]),
        (&json!(3), &json!(3))
    );
    assert_eq!(info["messages_unacknowledged"], 0);
    assert_eq!(info["consumers"], 0);
    let (_, all) = api.req("GET", "/api/queues/%2F", None);
    let listed: Vec<&Value> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["name"] == s.as_str())
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["type"], "stream");
    let (_, binds) = api.req("GET", &format!("{path}/bindings"), None);
    assert_eq!(binds[0]["source"], "");
    assert_eq!(binds[0]["routing_key"], s.as_str());

    // basic.get and purge: RabbitMQ's 400s.
    let get = json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"});
    let (st, err) = api.req("POST", &format!("{path}/get"), Some(get));
    assert_eq!(st, 400);
    let want = format!("540 basic.get not supported by stream queues queue '{s}' in vhost '/'");
    assert_eq!(err["reason"], want.as_str());
    let (st, err) = api.req("DELETE", &format!("{path}/contents"), None);
    assert_eq!(st, 400);
    assert!(err["reason"]
        .as_str()
        .unwrap()
        .starts_with("queue.purge not supported by stream queues"));

    let m = Http::new(&broker.endpoint("metrics").unwrap()).samples();
    let label = format!("{{vhost=\"/\",queue=\"{s}\"}}");
    assert_eq!(m[&format!("ferry_queue_messages{label}")], 3.0);
    assert_eq!(
        m[&format!("ferry_queue_messages_published_total{label}")],
        3.0
    );

    let (_, defs) = api.req("GET", "/api/definitions", None);
    let exported: Vec<&Value> = defs["queues"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["name"] == s.as_str())
        .collect();
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0]["arguments"]["x-queue-type"], "stream");

    // Deleted, then imported back from the definitions: a stream again.
    assert_eq!(api.req("DELETE", &path, None).0, 204);
    assert_eq!(api.req("GET", &path, None).0, 404);
    let doc = json!({"queues": [{"name": s, "vhost": "/", "durable": true, "auto_delete": false,
        "arguments": {"x-queue-type": "stream", "x-max-age": "1D"}}]});
    assert_eq!(api.req("POST", "/api/definitions", Some(doc)).0, 204);
    let (_, info) = api.req("GET", &path, None);
    assert_eq!(
        (&info["type"], &info["messages"]),
        (&json!("stream"), &json!(0))
    );
    assert_eq!(info["arguments"]["x-max-age"], "1D");
}

#[tokio::test]
async fn delayed_retries_count_in_messages_not_ready() {
    let Some((broker, api)) = start("delayed_retries_count_in_messages_not_ready").await else {
        return;
    };
    let q = unique("retryq");
    let path = format!("/api/queues/%2F/{q}");
    let decl = json!({"arguments": {"x-retry-delay": 60_000}});
    assert_eq!(api.req("PUT", &path, Some(decl)).0, 201);
    let (_conn, ch) = connect_confirming(&broker.amqp_url()).await;
    publish_settled(&ch, &q, &["late", "now"]).await;
    let got = ch
        .basic_get(
            q.as_str().into(),
            lapin::options::BasicGetOptions::default(),
        )
        .await
        .unwrap()
        .expect("a message");
    got.delivery
        .acker
        .nack(lapin::options::BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    // The nack is processed before the next method on the channel answers.
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let (_, info) = api.req("GET", &path, None);
    assert_eq!(info["messages"], 2, "{info}");
    assert_eq!(info["messages_ready"], 1);
    assert_eq!(info["messages_unacknowledged"], 0);
    assert_eq!(info["messages_delayed"], 1);
    let (_, ov) = api.req("GET", "/api/overview", None);
    assert!(ov["queue_totals"]["messages_delayed"].as_u64().unwrap() >= 1);
    let m = Http::new(&broker.endpoint("metrics").unwrap()).samples();
    let label = format!("{{vhost=\"/\",queue=\"{q}\"}}");
    assert_eq!(m[&format!("ferry_queue_messages_delayed{label}")], 1.0);
    assert_eq!(m[&format!("ferry_queue_messages{label}")], 2.0);
    assert_eq!(m[&format!("ferry_queue_messages_ready{label}")], 1.0);
}

#[tokio::test]
async fn memory_is_the_alarm_measure_against_its_limit() {
    let limit = "3000000000";
    let Some(broker) = Broker::start_with_env(
        "memory_is_the_alarm_measure",
        &[("FERRY_MEMORY_LIMIT", limit)],
    )
    .await
    else {
        return;
    };
    let api = Http::new(&broker.endpoint("http").unwrap());
    let (_, nodes) = api.req("GET", "/api/nodes", None);
    let n = &nodes[0];
    assert_eq!(n["mem_limit"].as_u64(), limit.parse().ok());
    let (used, rss) = (
        n["mem_used"].as_u64().unwrap(),
        n["mem_rss"].as_u64().unwrap(),
    );
    assert!(used > 0 && rss > 0, "{n}");
    let m = Http::new(&broker.endpoint("metrics").unwrap()).samples();
    assert_eq!(m["ferry_resident_memory_limit_bytes"], 3e9);
    assert!(m["ferry_memory_used_bytes"] > 0.0);
}

#[tokio::test]
async fn load_definitions_imports_the_whole_topology() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("definitions.json");
    let defs = json!({
        "rabbit_version": "3.10.8",
        "users": [{"name": "loader", "password_hash": "", "hashing_algorithm":
            "rabbit_password_hashing_sha256", "tags": ["management"], "limits": {}}],
        "vhosts": [{"name": "defs-vh", "limits": [], "metadata": {"description": ""}}],
        "permissions": [{"user": "guest", "vhost": "defs-vh", "configure": ".*", "write": ".*", "read": ".*"},
            {"user": "loader", "vhost": "defs-vh", "configure": "", "write": "", "read": "^orders$"}],
        "topic_permissions": [], "parameters": [], "global_parameters": [], "policies": [],
        "exchanges": [{"name": "ingress", "vhost": "defs-vh", "type": "topic", "durable": true,
            "auto_delete": false, "internal": false, "arguments": {}}],
        "queues": [{"name": "orders", "vhost": "defs-vh", "durable": true, "auto_delete": false,
                "arguments": {"x-max-length": 100}},
            {"name": "audit", "vhost": "defs-vh", "durable": true, "auto_delete": false,
                "arguments": {"x-queue-type": "stream"}}],
        "bindings": [{"source": "ingress", "vhost": "defs-vh", "destination": "orders",
            "destination_type": "queue", "routing_key": "order.*", "arguments": {}},
            {"source": "ingress", "vhost": "defs-vh", "destination": "audit",
            "destination_type": "queue", "routing_key": "#", "arguments": {}}]
    });
    std::fs::write(&file, defs.to_string()).unwrap();
    let Some(broker) = Broker::start_with_env(
        "load_definitions_imports_the_whole_topology",
        &[("FERRY_LOAD_DEFINITIONS", file.to_str().unwrap())],
    )
    .await
    else {
        return;
    };
    let api = Http::new(&broker.endpoint("http").unwrap());
    let (_, user) = api.req("GET", "/api/users/loader", None);
    assert_eq!(user["tags"], json!(["management"]));
    let (_, perm) = api.req("GET", "/api/permissions/defs-vh/loader", None);
    assert_eq!(perm["read"], "^orders$");
    let (_, x) = api.req("GET", "/api/exchanges/defs-vh/ingress", None);
    assert_eq!(x["type"], "topic");
    let (_, audit) = api.req("GET", "/api/queues/defs-vh/audit", None);
    assert_eq!(audit["type"], "stream");
    // The binding routes: an AMQP publish to the exchange lands in the queue.
    let url = broker.amqp_url().replace("/%2f", "/defs-vh");
    let (_conn, ch) = connect_channel(&url).await;
    common::publish(&ch, "ingress", "order.new", b"o1").await;
    common::publish(&ch, "ingress", "other", b"o2").await;
    assert_eq!(
        common::drain_get(&ch, "orders").await,
        vec!["o1".to_string()]
    );
    let (_, orders) = api.req("GET", "/api/queues/defs-vh/orders", None);
    assert_eq!(orders["arguments"]["x-max-length"], 100);
    let (_, audit) = api.req("GET", "/api/queues/defs-vh/audit", None);
    assert_eq!(audit["messages"], 2);
}

#[tokio::test]
async fn deleting_a_user_closes_its_connections() {
    let Some((broker, api)) = start("deleting_a_user_closes_its_connections").await else {
        return;
    };
    let user = json!({"password": "pw", "tags": ""});
    assert_eq!(api.req("PUT", "/api/users/doomed", Some(user)).0, 201);
    let perm = json!({"configure": ".*", "write": ".*", "read": ".*"});
    assert_eq!(
        api.req("PUT", "/api/permissions/%2F/doomed", Some(perm)).0,
        201
    );
    let url = broker.amqp_url().replace("guest:guest", "doomed:pw");
    let (conn, ch) = connect_channel(&url).await;
    let (_guest, _gch) = connect_channel(&broker.amqp_url()).await;
    assert_eq!(api.req("DELETE", "/api/users/doomed", None).0, 204);
    let err = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Err(e) = ch.basic_qos(1, BasicQosOptions::default()).await {
                return e;
            }
        }
    })
    .await
    .expect("the deleted user's connection stayed open");
    assert_eq!(
        common::amqp_error(&err),
        (
            320,
            "CONNECTION_FORCED - user 'doomed' is deleted".to_string()
        )
    );
    assert!(!conn.status().connected());
    // Other users' connections stay.
    let conns = wait_for_connections(&api, 1).await;
    assert_eq!(conns[0]["user"], "guest");
}

/// A connection and a channel in confirm mode, for tests that publish and then read
/// counts through the API (`publish_settled` waits for the confirms).
async fn connect_confirming(url: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = connect(url).await;
    let ch = confirm_channel(&conn).await;
    (conn, ch)
}

/// A management API publish to the default exchange with a direct reply-to name as routing
/// key reaches the lapin reply consumer (`routed: false`, as RabbitMQ answers). Both brokers:
/// tests/python/test_direct_reply_to.py.
#[tokio::test]
async fn http_publish_reaches_a_direct_reply_consumer() {
    let Some((broker, api)) = start("http_publish_reaches_a_direct_reply_consumer").await else {
        return;
    };
    let conn = connect(&broker.amqp_url()).await;
    let server = confirm_channel(&conn).await;
    let q = unique("rpc");
    server
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let client = confirm_channel(&conn).await;
    let opts = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut replies = common::consume(&client, "amq.rabbitmq.reply-to", opts).await;
    common::publish_props(
        &client,
        "",
        &q,
        b"req",
        lapin::BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
    )
    .await;
    common::settle(&client).await;
    let req = server
        .basic_get(
            q.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the confirmed request");
    let name = req
        .delivery
        .properties
        .reply_to()
        .clone()
        .unwrap()
        .to_string();
    let publish = |body: &str| {
        let msg = json!({"properties": {"correlation_id": "h1"}, "routing_key": name,
                         "payload": body, "payload_encoding": "string"});
        api.req("POST", "/api/exchanges/%2F/amq.default/publish", Some(msg))
    };
    assert_eq!(publish("via-http"), (200, json!({"routed": false})));
    let d = common::recv_one(&mut replies, Duration::from_secs(20)).await;
    assert_eq!(d.data, b"via-http");
    assert_eq!(d.routing_key.as_str(), name);
    assert_eq!(
        d.properties.correlation_id().as_ref().map(|c| c.as_str()),
        Some("h1")
    );
    conn.close(200, "bye".into()).await.ok();
    // The connection (and its reply consumer) is gone: the name reaches nothing, same answer.
    assert_eq!(publish("late"), (200, json!({"routed": false})));
}

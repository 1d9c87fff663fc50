//! `ferry ctl set|clear|list policy / operator-policy` as a subprocess of the real binary
//! against the real broker's management API, the effect checked from the AMQP side with
//! lapin. Same differential switches as `ctl.rs` (FERRY_TEST_HTTP_URL for RabbitMQ).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::ctl::{api, ctl, text};
use common::{connect_channel, unique, Broker};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use serde_json::Value;
use std::time::{Duration, Instant};

fn run(url: &str, args: &[&str], code: i32) -> (String, String) {
    let out = ctl(url, args);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "ferry ctl {args:?}\nstdout: {o}\nstderr: {e}"
    );
    (o, e)
}

fn listing(url: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (o, _) = run(url, &all, 0);
    serde_json::from_str(&o).unwrap_or_else(|e| panic!("bad JSON ({e}): {o}"))
}

#[tokio::test]
async fn set_list_clear_policies_and_their_effect() {
    let broker = Broker::start().await;
    let Some(url) = api(&broker, "set_list_clear_policies_and_their_effect") else {
        return;
    };
    let (_conn, ch) = connect_channel(&broker.amqp_url()).await;
    let queue = unique("ctl-pol-q");
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let pol = unique("ctl-pol");
    let pattern = format!("^{}$", queue.replace('.', "\\."));
    let (o, _) = run(
        &url,
        &[
            "set",
            "policy",
            &pol,
            &pattern,
            r#"{"max-length":1}"#,
            "--priority",
            "3",
            "--apply-to",
            "queues",
        ],
        0,
    );
    assert!(o.contains(&format!("set policy '{pol}'")), "{o}");
    let rows = listing(&url, &["list", "policies", "--vhost", "/"]);
    let mine = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == pol.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{pol} not listed: {rows}"));
    assert_eq!(mine["definition"], serde_json::json!({"max-length": 1}));
    assert_eq!(
        (mine["priority"].as_i64(), mine["apply-to"].as_str()),
        (Some(3), Some("queues"))
    );
    let (table, _) = run(&url, &["list", "policies"], 0);
    assert!(
        table.contains("apply-to") && table.contains(&pol),
        "{table}"
    );

    // The policy caps the existing queue: publish until the cap shows.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        ch.basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"m",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = ch
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
            .unwrap();
        if q.message_count() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the policy never applied: {} messages",
            q.message_count()
        );
    }

    // RabbitMQ's validation text, unescaped for the terminal; exit 1.
    let (_, e) = run(
        &url,
        &["set", "policy", &pol, ".*", r#"{"message-ttl":"x"}"#],
        1,
    );
    assert!(e.contains(r#"<<"x">> is not a valid message TTL"#), "{e}");
    // Not JSON: a usage error, nothing sent.
    run(&url, &["set", "policy", &pol, ".*", "{nope"], 2);
    // A dead-letter key no record can hold (Ferry refuses; RabbitMQ 3.10 accepts).
    let long = serde_json::json!({ "dead-letter-routing-key": "é".repeat(150) }).to_string();
    let (_, e) = run(&url, &["set", "policy", &pol, "^never$", &long], 1);
    assert!(
        e.contains("dead-letter-routing-key should be less than 255 bytes, actually was 300"),
        "{e}"
    );

    let op = unique("ctl-op");
    run(
        &url,
        &[
            "set",
            "operator-policy",
            &op,
            "^never$",
            r#"{"max-length":5}"#,
        ],
        0,
    );
    let ops = listing(&url, &["list", "operator-policies"]);
    assert!(
        ops.as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == op.as_str()),
        "{ops}"
    );
    run(&url, &["clear", "operator-policy", &op], 0);

    let (o, _) = run(&url, &["clear", "policy", &pol], 0);
    assert!(o.contains(&format!("cleared policy '{pol}'")), "{o}");
    let (_, e) = run(&url, &["clear", "policy", &pol], 1);
    assert!(e.contains("not found"), "{e}");
    let rows = listing(&url, &["list", "policies"]);
    assert!(!rows
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == pol.as_str()));
}

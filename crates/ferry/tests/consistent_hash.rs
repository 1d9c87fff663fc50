//! The x-consistent-hash exchange through lapin: weights spread messages, a
//! key sticks to its queue, bad weights and arguments get the plugin's
//! answers. Broker-agnostic: scripts/lapin-oracle runs it against RabbitMQ
//! 3.10 with rabbitmq_consistent_hash_exchange in CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lapin::options::QueueBindOptions;
use lapin::types::FieldTable;
use lapin::ExchangeKind;
use std::collections::HashMap;

fn chx() -> ExchangeKind {
    ExchangeKind::Custom("x-consistent-hash".into())
}

#[tokio::test]
async fn weights_spread_and_keys_stick() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("chx");
    declare_exchange(&ch, &ex, chx(), FieldTable::default()).await;
    let mut qs = Vec::new();
    for w in ["1", "1", "2"] {
        let q = declare_queue(&ch, "chq").await;
        bind(&ch, &q, &ex, w, FieldTable::default()).await;
        qs.push(q);
    }
    let n = 1200;
    let mut first: Option<HashMap<String, usize>> = None;
    for round in 0..2 {
        for i in 0..n {
            publish(&ch, &ex, &format!("k{i}"), format!("k{i}").as_bytes()).await;
        }
        settle(&ch).await;
        let mut home: HashMap<String, usize> = HashMap::new();
        let mut per = [0usize; 3];
        for (qi, q) in qs.iter().enumerate() {
            for body in drain_get(&ch, q).await {
                assert!(
                    home.insert(body, qi).is_none(),
                    "a message reached two queues"
                );
                per[qi] += 1;
            }
        }
        assert_eq!(home.len(), n, "round {round}: every message routed once");
        for (qi, share) in [(0, 0.25), (1, 0.25), (2, 0.5)] {
            let got = per[qi] as f64 / n as f64;
            assert!((got - share).abs() < 0.06, "queue {qi}: {got}");
        }
        // Same keys again: every one lands where it did.
        match &first {
            None => first = Some(home),
            Some(f) => assert_eq!(f, &home, "a key changed queue"),
        }
    }
}

#[tokio::test]
async fn bad_weights_and_arguments_get_the_plugins_answers() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("chx");
    declare_exchange(&ch, &ex, chx(), FieldTable::default()).await;
    let q = declare_queue(&ch, "chq").await;
    let res = ch
        .queue_bind(
            q.as_str().into(),
            ex.as_str().into(),
            "zero".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        expect_amqp_err(res, "bind"),
        (
            406,
            "PRECONDITION_FAILED - The binding key must be an integer: <<\"zero\">>".into()
        )
    );
    let ch = confirm_channel(&conn).await;
    let args = table(&[("hash-header", s("h")), ("hash-property", s("message_id"))]);
    let res = ch
        .exchange_declare(
            unique("chx").as_str().into(),
            chx(),
            Default::default(),
            args,
        )
        .await;
    assert_eq!(
        expect_amqp_err(res, "declare"),
        (
            406,
            "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive".into()
        )
    );
}

//! Priorities, consumer priorities, queue expiry and the delivery limit
//! through lapin, with kill -9 restarts where the log must carry the facts
//! (priority levels, spilled backlogs, delivery counts). The pika suite
//! (tests/python/test_queue_features2.py) checks the rest against RabbitMQ.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use std::time::{Duration, Instant};

fn persistent(priority: u8) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_priority(priority)
}

const PRIOS: [u8; 3] = [0, 5, 9];

/// Publishes `n` messages `tag-i` cycling over PRIOS, waiting for confirms.
async fn publish_cycle(ch: &lapin::Channel, q: &str, tag: &str, n: usize) {
    for i in 0..n {
        let p = PRIOS[i % 3];
        publish_props(
            ch,
            "",
            q,
            format!("{tag}-{p}-{i}").as_bytes(),
            persistent(p),
        )
        .await;
    }
    settle(ch).await;
}

fn expected(batches: &[(&str, usize)]) -> Vec<String> {
    let mut out = Vec::new();
    for p in PRIOS.iter().rev() {
        for (tag, n) in batches {
            for i in (0..*n).filter(|i| PRIOS[i % 3] == *p) {
                out.push(format!("{tag}-{p}-{i}"));
            }
        }
    }
    out
}

/// A backlog far past the in-memory window of each priority level survives
/// kill -9 in priority order; after the restart new messages of each level
/// spill behind the replayed ones and still come out in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spilled_priority_backlog_survives_kill9_in_order() {
    let Some(mut broker) = Broker::start_owned("a_spilled_priority_backlog_survives_kill9").await
    else {
        return;
    };
    let q = "prio-backlog";
    let a = table(&[("x-max-priority", AMQPValue::ShortShortUInt(9))]);
    let n = 12_000;
    {
        let conn = connect(&broker.amqp_url()).await;
        let ch = confirm_channel(&conn).await;
        declare_durable(&ch, q, a.clone()).await;
        publish_cycle(&ch, q, "a", n).await;
    }
    broker.kill9().await;
    broker.start_again().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    declare_durable(&ch, q, a).await;
    publish_cycle(&ch, q, "b", n).await;
    assert_eq!(message_count(&ch, q).await as usize, 2 * n);
    let mut c = consume(
        &ch,
        q,
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    let got = bodies(&recv_n(&mut c, 2 * n, Duration::from_secs(40)).await);
    let want = expected(&[("a", n), ("b", n)]);
    assert_eq!(got.len(), want.len());
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!("order broken at {i}: got {} want {}", got[i], want[i]);
    }
}

/// x-delivery-count is a signed 64-bit header ('l'); a consumer's first
/// delivery has none (RabbitMQ 3.10.8's quorum queue adds it to a consumer
/// delivery once the message was returned; basic.get has it from 0); a
/// consumer with a higher x-priority gets messages first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_count_header_type_and_consumer_priority_through_lapin() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let q = unique("limited");
    declare_durable(
        &ch,
        &q,
        table(&[
            (
                "x-queue-type",
                AMQPValue::LongString(LongString::from("quorum")),
            ),
            ("x-delivery-limit", AMQPValue::LongInt(5)),
        ]),
    )
    .await;
    let low_ch = conn.create_channel().await.unwrap();
    let high_ch = conn.create_channel().await.unwrap();
    let mut low = consume(&low_ch, &q, BasicConsumeOptions::default()).await;
    let mut high = high_ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            table(&[("x-priority", AMQPValue::LongInt(3))]),
        )
        .await
        .unwrap();
    publish_settled(&ch, &q, &["x"]).await;
    let d = recv_one(&mut high, STEP).await;
    let count = |d: &lapin::message::Delivery| header(d, "x-delivery-count");
    assert_eq!(count(&d), None);
    d.nack(BasicNackOptions {
        requeue: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let d = recv_one(&mut high, STEP).await;
    assert!(d.redelivered);
    assert_eq!(count(&d), Some(AMQPValue::LongLongInt(1)));
    d.ack(BasicAckOptions::default()).await.unwrap();
    assert_no_delivery(&mut low, Duration::from_millis(200)).await;
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
}

/// Whether `q` exists, asked without counting as a use of it (a passive
/// declare would restart its x-expires countdown; a binding does not).
async fn exists(url: &str, q: &str) -> bool {
    let conn = connect(url).await;
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .queue_bind(
            q.into(),
            "amq.fanout".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    match r {
        Ok(()) => true,
        Err(e) => {
            assert_eq!(amqp_error(&e).0, 404);
            false
        }
    }
}

/// x-expires counts from the restart (as RabbitMQ): time before a kill -9
/// and time spent down do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_queue_gets_its_full_x_expires_after_a_kill9() {
    let Some(mut broker) = Broker::start_owned("an_expiring_queue_gets_its_full_x_expires").await
    else {
        return;
    };
    let q = "expiring";
    {
        let conn = connect(&broker.amqp_url()).await;
        let ch = conn.create_channel().await.unwrap();
        declare_durable(&ch, q, table(&[("x-expires", AMQPValue::LongInt(1500))])).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    broker.kill9().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    broker.start_again().await;
    let restarted = Instant::now();
    assert!(
        exists(&broker.amqp_url(), q).await,
        "expired across the kill"
    );
    while exists(&broker.amqp_url(), q).await {
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = restarted.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "expired after {took:?}"
    );
    // The deletion is durable.
    broker.restart().await;
    assert!(!exists(&broker.amqp_url(), q).await);
}

/// Gets `q`'s message and returns it to the queue until it is gone (or 30
/// deliveries); returns the x-delivery-count of each delivery.
async fn get_and_return_until_gone(ch: &lapin::Channel, q: &str) -> Vec<AMQPValue> {
    let mut counts = Vec::new();
    while counts.len() < 30 {
        let Some(m) = ch
            .basic_get(q.into(), BasicGetOptions::default())
            .await
            .unwrap()
        else {
            break;
        };
        counts.push(header(&m.delivery, "x-delivery-count").unwrap());
        m.delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    counts
}

/// The broker's `quorum_delivery_limit` is the limit of quorum queues
/// declared without x-delivery-limit: at 2 the third return dead-letters
/// (three deliveries); at -1 thirty returns never do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quorum_delivery_limit_setting_is_the_quorum_default() {
    for (setting, deliveries) in [("2", 3), ("-1", 30)] {
        let Some(broker) = Broker::start_with_env(
            "the_quorum_delivery_limit_setting_is_the_quorum_default",
            &[("FERRY_QUORUM_DELIVERY_LIMIT", setting)],
        )
        .await
        else {
            return;
        };
        let conn = connect(&broker.amqp_url()).await;
        let ch = confirm_channel(&conn).await;
        let (q, dead) = (unique("quorum"), unique("dead"));
        declare_durable(&ch, &dead, FieldTable::default()).await;
        declare_durable(
            &ch,
            &q,
            table(&[
                ("x-queue-type", s("quorum")),
                ("x-dead-letter-exchange", s("")),
                ("x-dead-letter-routing-key", s(&dead)),
            ]),
        )
        .await;
        publish_settled(&ch, &q, &["x"]).await;
        let counts = get_and_return_until_gone(&ch, &q).await;
        let want: Vec<AMQPValue> = (0..deliveries).map(AMQPValue::LongLongInt).collect();
        assert_eq!(counts, want, "setting {setting}");
        // The dead letter is routed after the queue lock is released: wait
        // for it rather than assume the nack's round trip covered it.
        let dead_count = if deliveries == 3 { 1 } else { 0 };
        let start = Instant::now();
        while message_count(&ch, &dead).await != dead_count {
            assert!(start.elapsed() < STEP, "setting {setting}: no dead letter");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = if deliveries == 3 { 0 } else { 1 };
        assert_eq!(message_count(&ch, &q).await, left, "setting {setting}");
    }
}

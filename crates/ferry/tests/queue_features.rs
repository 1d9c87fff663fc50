//! Queue TTL, length limits and dead-lettering through lapin (typed
//! headers, pipelined confirms, transactions, timer precision). The pika
//! suite (tests/python/test_queue_features.py) covers the rest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Confirmation};
use std::time::{Duration, Instant};

async fn declare(ch: &lapin::Channel, prefix: &str, a: FieldTable) -> String {
    let q = unique(prefix);
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        a,
    )
    .await
    .expect("queue.declare");
    q
}

async fn publish(ch: &lapin::Channel, q: &str, body: &[u8], p: BasicProperties) -> Confirmation {
    ch.basic_publish("".into(), q.into(), BasicPublishOptions::default(), body, p)
        .await
        .unwrap()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_confirms_nack_exactly_what_a_full_queue_refused() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let q = declare(
        &ch,
        "reject-publish",
        table(&[
            ("x-max-length", AMQPValue::LongInt(3)),
            ("x-overflow", s("reject-publish")),
        ]),
    )
    .await;
    let mut pending = Vec::new();
    for i in 0..6u8 {
        pending.push(
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                &[i],
                BasicProperties::default(),
            )
            .await
            .unwrap(),
        );
    }
    let mut got = Vec::new();
    for p in pending {
        got.push(matches!(p.await.unwrap(), Confirmation::Ack(_)));
    }
    assert_eq!(got, [true, true, true, false, false, false]);
    assert_eq!(message_count(&ch, &q).await, 3);
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.data, vec![0]);
    assert!(matches!(
        publish(&ch, &q, b"room again", BasicProperties::default()).await,
        Confirmation::Ack(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_headers_carry_rabbitmq_field_types() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let dead = declare(&ch, "dead", FieldTable::default()).await;
    let src = declare(
        &ch,
        "src",
        table(&[
            ("x-dead-letter-exchange", s("")),
            ("x-dead-letter-routing-key", s(&dead)),
        ]),
    )
    .await;
    let mut h = FieldTable::default();
    h.insert("h".into(), AMQPValue::LongInt(1));
    for body in [b"one", b"two"] {
        publish(
            &ch,
            &src,
            body,
            BasicProperties::default()
                .with_expiration("60000".into())
                .with_headers(h.clone()),
        )
        .await;
    }
    let mut c = consume(&ch, &src, BasicConsumeOptions::default()).await;
    let got = recv_n(&mut c, 2, Duration::from_secs(5)).await;
    ch.basic_nack(
        got[1].delivery_tag,
        BasicNackOptions {
            multiple: true,
            requeue: false,
        },
    )
    .await
    .unwrap();
    let mut d = consume(
        &ch,
        &dead,
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    let got = recv_n(&mut d, 2, Duration::from_secs(5)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(body_str(&got[0]), "one");
    for m in &got {
        assert_eq!(m.properties.expiration(), &None);
        let h = m.properties.headers().clone().unwrap();
        let h = h.inner();
        assert_eq!(h["h"], AMQPValue::LongInt(1));
        assert_eq!(h["x-first-death-reason"], s("rejected"));
        assert_eq!(h["x-first-death-queue"], s(&src));
        assert_eq!(h["x-first-death-exchange"], s(""));
        let AMQPValue::FieldArray(deaths) = &h["x-death"] else {
            panic!("x-death is {:?}", h["x-death"])
        };
        let [AMQPValue::FieldTable(d)] = deaths.as_slice() else {
            panic!("x-death: {deaths:?}")
        };
        let d = d.inner();
        assert_eq!(d["count"], AMQPValue::LongLongInt(1));
        assert_eq!(d["reason"], s("rejected"));
        assert_eq!(d["queue"], s(&src));
        assert_eq!(d["exchange"], s(""));
        assert_eq!(
            d["routing-keys"],
            AMQPValue::FieldArray(FieldArray::from(vec![s(&src)]))
        );
        assert_eq!(d["original-expiration"], s("60000"));
        let AMQPValue::Timestamp(t) = d["time"] else {
            panic!("time is {:?}", d["time"])
        };
        assert!(t + 60 >= now && t <= now + 60, "time {t}, now {now}");
        assert_eq!(d.len(), 7);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_in_a_transaction_dead_letters_at_commit_only() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let dead = declare(&ch, "dead", FieldTable::default()).await;
    let src = declare(
        &ch,
        "src",
        table(&[
            ("x-dead-letter-exchange", s("")),
            ("x-dead-letter-routing-key", s(&dead)),
        ]),
    )
    .await;
    publish(&ch, &src, b"x", BasicProperties::default()).await;
    let tx = conn.create_channel().await.unwrap();
    tx.tx_select().await.unwrap();
    let m = tx
        .basic_get(src.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    let tag = m.delivery.delivery_tag;
    tx.basic_reject(tag, BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    tx.tx_rollback().await.unwrap();
    assert_eq!(message_count(&ch, &dead).await, 0);
    tx.basic_reject(tag, BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    assert_eq!(message_count(&ch, &dead).await, 0);
    tx.tx_commit().await.unwrap();
    let start = Instant::now();
    while message_count(&ch, &dead).await != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(message_count(&ch, &src).await, 0);
}

/// The delayed-retry pattern (a TTL queue dead-lettering into the work
/// queue): the message arrives at its deadline, not on a coarse tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_queue_delays_a_message_until_its_deadline() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let work = declare(&ch, "work", FieldTable::default()).await;
    let wait = declare(
        &ch,
        "wait",
        table(&[
            ("x-message-ttl", AMQPValue::LongInt(300)),
            ("x-dead-letter-exchange", s("")),
            ("x-dead-letter-routing-key", s(&work)),
        ]),
    )
    .await;
    let mut c = consume(
        &ch,
        &work,
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    for round in 0..3 {
        let sent = Instant::now();
        publish(&ch, &wait, b"later", BasicProperties::default()).await;
        let m = recv_one(&mut c, Duration::from_secs(5)).await;
        let took = sent.elapsed();
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(800),
            "round {round}: arrived after {took:?}"
        );
        let h = m.properties.headers().clone().unwrap();
        let AMQPValue::FieldArray(deaths) = &h.inner()["x-death"] else {
            panic!()
        };
        let AMQPValue::FieldTable(d) = &deaths.as_slice()[0] else {
            panic!()
        };
        assert_eq!(d.inner()["reason"], s("expired"));
    }
}

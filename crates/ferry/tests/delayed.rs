//! Delayed retry (`x-retry-*` queue arguments) and `x-delayed-message`
//! exchanges through lapin, across kill -9: messages waiting for a retry
//! and messages held by a delayed exchange all come back after the restart,
//! none before its time. Ferry-only (RabbitMQ has no retry arguments, and
//! the oracle has no delayed-message plugin); the pika suite
//! (tests/python/test_delayed.py) covers the protocol-level details.
//!
//! Timing: the broker fixes each due time as (its clock when it handled the
//! nack or publish) + delay, in whole ms, and the client starts its stopwatch
//! before sending, so a message must never arrive earlier than delay - 1 ms
//! after the stopwatch started (the 1 ms is the broker's truncation to whole
//! ms). Upper bounds are generous: the machine is shared and noisy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use std::time::{Duration, Instant};

async fn declare_delayed(ch: &lapin::Channel, x: &str, kind: &str) -> lapin::Result<()> {
    ch.exchange_declare(
        x.into(),
        lapin::ExchangeKind::Custom("x-delayed-message".into()),
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        table(&[("x-delayed-type", s(kind))]),
    )
    .await
}

fn persistent_with_delay(ms: i64) -> BasicProperties {
    let mut h = FieldTable::default();
    h.insert("x-delay".into(), AMQPValue::LongLongInt(ms));
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(h)
}

/// Asserts `elapsed` is not earlier than `delay` (minus the broker's 1 ms
/// truncation) and not absurdly late.
fn assert_on_time(what: &str, elapsed: Duration, delay: Duration) {
    assert!(
        elapsed + Duration::from_millis(1) >= delay,
        "{what}: came back after {elapsed:?}, before its delay {delay:?}"
    );
    assert!(
        elapsed <= delay + Duration::from_secs(10),
        "{what}: came back only after {elapsed:?} (delay {delay:?})"
    );
}

/// Messages waiting for a retry and messages held by a durable delayed
/// exchange survive kill -9; each comes back no earlier than its due time
/// (fixed before the crash), and with what the consumer should see:
/// redelivered and x-delivery-count for the retry, x-delay negated for the
/// held one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_and_held_messages_come_back_on_time_after_kill9() {
    let Some(mut broker) = Broker::start_owned("waiting_and_held_messages_after_kill9").await
    else {
        return;
    };
    let retry_q = "retry-q";
    let held_q = "held-q";
    let x = "delayed-x";
    let retry_delay = Duration::from_millis(2500);
    let retry_args = table(&[(
        "x-retry-delay",
        AMQPValue::LongInt(retry_delay.as_millis() as i32),
    )]);
    let delays = [Duration::from_millis(3000), Duration::from_millis(1500)];
    let (nacked_at, published_at) = {
        let conn = connect(&broker.amqp_url()).await;
        let ch = confirm_channel(&conn).await;
        declare_durable(&ch, retry_q, retry_args.clone()).await;
        declare_durable(&ch, held_q, FieldTable::default()).await;
        declare_delayed(&ch, x, "direct")
            .await
            .expect("declare delayed exchange");
        bind(&ch, held_q, x, "k", FieldTable::default()).await;
        publish_props(
            &ch,
            "",
            retry_q,
            b"retry-me",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await;
        settle(&ch).await;
        let mut published_at = Vec::new();
        for (i, d) in delays.iter().enumerate() {
            published_at.push(Instant::now());
            publish_props(
                &ch,
                x,
                "k",
                format!("held-{i}").as_bytes(),
                persistent_with_delay(d.as_millis() as i64),
            )
            .await;
        }
        // Confirmed: the holds are fsynced in the exchange's hidden queue.
        settle(&ch).await;
        assert_eq!(message_count(&ch, held_q).await, 0, "held, not routed yet");
        let mut c = consume(&ch, retry_q, BasicConsumeOptions::default()).await;
        let d = recv_one(&mut c, STEP).await;
        let nacked_at = Instant::now();
        d.nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .expect("nack");
        // The Retry record is in the log once a later fsync covers it: a
        // confirmed publish to the same queue is such an fsync.
        publish_props(
            &ch,
            "",
            retry_q,
            b"marker",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await;
        settle(&ch).await;
        (nacked_at, published_at)
    };
    broker.kill9().await;
    broker.start_again().await;

    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    declare_durable(&ch, retry_q, retry_args).await;
    let mut retry = consume(&ch, retry_q, BasicConsumeOptions::default()).await;
    let mut held = consume(&ch, held_q, BasicConsumeOptions::default()).await;

    // The marker was never delivered: ready at once. The retried message
    // waits for its time, fixed before the crash.
    let first = recv_one(&mut retry, STEP).await;
    assert_eq!(body_str(&first), "marker");
    first.ack(BasicAckOptions::default()).await.unwrap();
    let back = recv_one(&mut retry, retry_delay + STEP).await;
    assert_on_time("retried message", nacked_at.elapsed(), retry_delay);
    assert_eq!(body_str(&back), "retry-me");
    assert!(back.redelivered, "a retried message is redelivered");
    assert_eq!(
        header(&back, "x-delivery-count"),
        Some(AMQPValue::LongLongInt(1))
    );
    back.ack(BasicAckOptions::default()).await.unwrap();

    // Held messages come out in due order (1.5 s before 3 s), each on time.
    let mut order = Vec::new();
    for _ in 0..delays.len() {
        let d = recv_one(&mut held, delays[0] + STEP).await;
        let i: usize = body_str(&d)
            .strip_prefix("held-")
            .and_then(|n| n.parse().ok())
            .expect("a held-i body");
        assert_on_time(&body_str(&d), published_at[i].elapsed(), delays[i]);
        assert_eq!(
            header(&d, "x-delay"),
            Some(AMQPValue::LongInt(-(delays[i].as_millis() as i32))),
            "routed with x-delay negated, as the plugin does"
        );
        order.push(i);
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(order, [1, 0]);
    assert_no_delivery(&mut held, Duration::from_millis(300)).await;
}

/// A publish to a delayed exchange that asks for a hold is not returned
/// even with mandatory (the plugin's documented behaviour: nothing is
/// routed at publish time), is confirmed, and is dropped when due if
/// nothing is bound; one without x-delay is routed (and returned) at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_holds_are_not_returned_and_bad_declares_are_refused() {
    let Some(broker) = Broker::start_owned("mandatory_holds_are_not_returned").await else {
        return;
    };
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let x = unique("dx");
    declare_delayed(&ch, &x, "fanout").await.expect("declare");
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let held = ch
        .basic_publish(
            x.as_str().into(),
            "k".into(),
            mandatory,
            b"held",
            persistent_with_delay(100),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(held.is_ack(), "held and confirmed");
    assert!(held.take_message().is_none(), "no basic.return for a hold");
    let now = ch
        .basic_publish(
            x.as_str().into(),
            "k".into(),
            mandatory,
            b"now",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        now.take_message().is_some(),
        "no x-delay: routed at once, so unroutable is returned"
    );
    // Missing x-delayed-type: 406 with the plugin's text.
    let ch2 = conn.create_channel().await.unwrap();
    let err = ch2
        .exchange_declare(
            unique("bad").as_str().into(),
            lapin::ExchangeKind::Custom("x-delayed-message".into()),
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    let (code, text) = amqp_error(&err);
    assert_eq!(code, 406);
    assert!(
        text.contains("Invalid argument, 'x-delayed-type' must be an existing exchange type"),
        "{text}"
    );
}

fn bcc(keys: &[&str]) -> AMQPValue {
    AMQPValue::FieldArray(keys.iter().map(|k| s(k)).collect::<Vec<_>>().into())
}

/// The BCC keys stay with a held message, in its stored record: after a
/// restart the release routes it by them too (RabbitMQ's delayed-message
/// plugin keeps the whole message record, `routing_keys` with the BCC keys,
/// and routes it by them on release), and the BCC header is gone. A dead
/// letter without a dead-letter routing key is routed by them after a
/// restart as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bcc_keys_survive_a_restart_for_releases_and_dead_letters() {
    let Some(mut broker) = Broker::start_owned("bcc_keys_survive_a_restart").await else {
        return;
    };
    let (x, by_bcc, src, dlx, dead) = (
        unique("dx"),
        unique("by-bcc"),
        unique("src"),
        unique("dlx"),
        unique("dead"),
    );
    {
        let conn = connect(&broker.amqp_url()).await;
        let ch = confirm_channel(&conn).await;
        declare_delayed(&ch, &x, "direct").await.expect("declare");
        declare_durable(&ch, &by_bcc, FieldTable::default()).await;
        bind(&ch, &by_bcc, &x, "hidden", FieldTable::default()).await;
        ch.exchange_declare(
            dlx.as_str().into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare dlx");
        declare_durable(&ch, &dead, FieldTable::default()).await;
        bind(&ch, &dead, &dlx, "hidden", FieldTable::default()).await;
        declare_durable(&ch, &src, table(&[("x-dead-letter-exchange", s(&dlx))])).await;
        let mut h = FieldTable::default();
        h.insert("x-delay".into(), AMQPValue::LongLongInt(1500));
        h.insert("BCC".into(), bcc(&["hidden"]));
        let props = BasicProperties::default().with_delivery_mode(2);
        publish_props(&ch, &x, "k", b"held", props.clone().with_headers(h)).await;
        let mut h = FieldTable::default();
        h.insert("BCC".into(), bcc(&["hidden"]));
        publish_props(&ch, "", &src, b"doomed", props.with_headers(h)).await;
        settle(&ch).await;
    }
    broker.restart().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    let mut released = consume(&ch, &by_bcc, BasicConsumeOptions::default()).await;
    let d = recv_one(&mut released, STEP + Duration::from_millis(1500)).await;
    assert_eq!((body_str(&d), d.routing_key.as_str()), ("held".into(), "k"));
    assert!(header(&d, "BCC").is_none(), "BCC stays stripped");
    let got = ch
        .basic_get(src.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("the doomed message survived the restart");
    got.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let mut dead_c = consume(&ch, &dead, BasicConsumeOptions::default()).await;
    let d = recv_one(&mut dead_c, STEP).await;
    assert_eq!(body_str(&d), "doomed");
    assert!(header(&d, "BCC").is_none());
}

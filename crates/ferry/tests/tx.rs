//! AMQP transactions (tx.select / tx.commit / tx.rollback). Broker-agnostic:
//! scripts/lapin-oracle runs it against RabbitMQ 3.10 in CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lapin::options::*;
use std::time::Duration;

#[tokio::test]
async fn tx_commit_publishes_atomically_and_rollback_discards() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    let q = declare_queue(&ch, "tx-pub").await;
    let tx = conn.create_channel().await.unwrap();
    tx.tx_select().await.unwrap();
    tx.tx_select().await.unwrap(); // idempotent

    for b in ["a", "b", "c"] {
        publish(&tx, "", &q, b.as_bytes()).await;
    }
    // Nothing is routed before the commit. (tx.select-ok round trip above + a second RPC
    // on the tx channel make sure the publishes reached the broker.)
    tx.basic_qos(0, BasicQosOptions::default()).await.unwrap();
    assert_eq!(message_count(&ch, &q).await, 0);
    tx.tx_commit().await.unwrap();

    // Observe via a consumer (not via counts, which RabbitMQ may answer ahead of routing).
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let got = recv_n(&mut consumer, 3, STEP).await;
    assert_eq!(bodies(&got), ["a", "b", "c"]);

    for b in ["x", "y"] {
        publish(&tx, "", &q, b.as_bytes()).await;
    }
    tx.tx_rollback().await.unwrap();
    publish(&tx, "", &q, b"z").await;
    tx.tx_commit().await.unwrap();
    let got = recv_one(&mut consumer, STEP).await;
    assert_eq!(
        body_str(&got),
        "z",
        "rolled-back publishes must never arrive"
    );
    assert_no_delivery(&mut consumer, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn tx_acks_take_effect_only_on_commit() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let pch = confirm_channel(&conn).await;
    let q = declare_queue(&pch, "tx-ack").await;
    publish_settled(&pch, &q, &["one", "two"]).await;

    let tx = conn.create_channel().await.unwrap();
    tx.tx_select().await.unwrap();
    let m1 = tx
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    let m2 = tx
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    // Ack "one" then roll back: the ack is discarded, "one" stays unacked.
    m1.delivery.ack(BasicAckOptions::default()).await.unwrap();
    tx.tx_rollback().await.unwrap();
    // Ack "two" and commit: "two" is gone for good.
    m2.delivery.ack(BasicAckOptions::default()).await.unwrap();
    tx.tx_commit().await.unwrap();
    // Closing the channel requeues what is still unacked: only "one".
    tx.close(200, "bye".into()).await.unwrap();

    let ch = conn.create_channel().await.unwrap();
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let back = recv_one(&mut consumer, STEP).await;
    assert_eq!(body_str(&back), "one");
    assert!(back.redelivered);
    assert_no_delivery(&mut consumer, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn tx_commit_and_rollback_without_select_are_406() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    let (code, text) = expect_amqp_err(ch.tx_commit().await, "tx.commit without select");
    assert_eq!(code, 406);
    assert_eq!(text, "PRECONDITION_FAILED - channel is not transactional");
    let ch = conn.create_channel().await.unwrap();
    let (code, text) = expect_amqp_err(ch.tx_rollback().await, "tx.rollback without select");
    assert_eq!(code, 406);
    assert_eq!(text, "PRECONDITION_FAILED - channel is not transactional");
}

// ---------------------------------------------------------------------------
// An open transaction is discarded when its channel or connection goes away
// (RabbitMQ: publishes never routed; acks, nacks and rejects not applied, so
// the messages they named return to the queue, redelivered).

/// Publishes "one" and "two" (confirmed) to a fresh queue that outlives
/// the connections under test. Returns the queue.
async fn queue_with_two(observer: &lapin::Connection) -> String {
    let pch = confirm_channel(observer).await;
    let q = declare_queue(&pch, "tx-close").await;
    publish_settled(&pch, &q, &["one", "two"]).await;
    q
}

/// On `tx` (already in tx mode): gets both messages, acks "one",
/// rejects "two" without requeue, publishes "uncommitted"; all held by
/// the transaction. A round trip (basic.qos) makes sure the broker has
/// read all of it before the close under test.
async fn open_transaction(tx: &lapin::Channel, q: &str) {
    tx.tx_select().await.unwrap();
    let m1 = tx
        .basic_get(q.into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("one");
    let m2 = tx
        .basic_get(q.into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("two");
    assert_eq!(
        (body_str(&m1.delivery), body_str(&m2.delivery)),
        ("one".into(), "two".into())
    );
    m1.delivery.ack(BasicAckOptions::default()).await.unwrap();
    m2.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    publish(tx, "", q, b"uncommitted").await;
    tx.basic_qos(0, BasicQosOptions::default()).await.unwrap();
}

/// A broker; an observer connection with a queue holding "one" and
/// "two"; and a second connection whose channel `tx` holds an open
/// transaction over that queue (see `open_transaction`).
struct OpenTx {
    _broker: Broker,
    observer: lapin::Connection,
    q: String,
    conn: lapin::Connection,
    tx: lapin::Channel,
}

impl OpenTx {
    async fn start() -> Self {
        let broker = Broker::start().await;
        let observer = connect(&broker.amqp_url()).await;
        let q = queue_with_two(&observer).await;
        let conn = connect(&broker.amqp_url()).await;
        let tx = conn.create_channel().await.unwrap();
        open_transaction(&tx, &q).await;
        OpenTx {
            _broker: broker,
            observer,
            q,
            conn,
            tx,
        }
    }
}

/// Both messages come back redelivered; the uncommitted publish never
/// arrives.
async fn expect_transaction_discarded(observer: &lapin::Connection, q: &str) {
    let ch = observer.create_channel().await.unwrap();
    let mut consumer = consume(&ch, q, BasicConsumeOptions::default()).await;
    let back = recv_n(&mut consumer, 2, STEP).await;
    let mut got = bodies(&back);
    got.sort();
    assert_eq!(
        got,
        ["one", "two"],
        "the tx's ack and reject must not apply"
    );
    assert!(
        back.iter().all(|d| d.redelivered),
        "returned messages are redelivered"
    );
    assert_no_delivery(&mut consumer, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn channel_close_discards_the_open_transaction() {
    let t = OpenTx::start().await;
    t.tx.close(200, "bye".into()).await.unwrap();
    expect_transaction_discarded(&t.observer, &t.q).await;
}

#[tokio::test]
async fn connection_close_discards_the_open_transaction() {
    let t = OpenTx::start().await;
    t.conn.close(200, "bye".into()).await.unwrap();
    expect_transaction_discarded(&t.observer, &t.q).await;
}

#[tokio::test]
async fn channel_error_discards_the_open_transaction() {
    let t = OpenTx::start().await;
    let missing = unique("tx-missing");
    let err =
        t.tx.queue_declare(
            missing.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await;
    assert_eq!(expect_amqp_err(err, "passive declare").0, 404);
    expect_transaction_discarded(&t.observer, &t.q).await;
}

#[tokio::test]
async fn dropped_socket_discards_the_open_transaction() {
    use common::raw::{Args, RawConn};
    let broker = Broker::start().await;
    let observer = connect(&broker.amqp_url()).await;
    let q = queue_with_two(&observer).await;
    let mut raw = RawConn::open(&broker.amqp_addr()).await;
    raw.open_channel(1).await;
    raw.send_method(1, 90, 10, Args::new()).await; // tx.select
    raw.expect_method(1, 90, 11).await;
    let mut tags = Vec::new();
    for _ in 0..2 {
        raw.send_method(1, 60, 70, Args::new().u16(0).shortstr(&q).u8(0))
            .await; // basic.get
        let ok = raw.expect_method(1, 60, 71).await;
        tags.push(ok.args().u64());
        raw.next_frame().await; // header
        raw.next_frame().await; // body
    }
    raw.send_method(1, 60, 80, Args::new().u64(tags[0]).u8(0))
        .await; // basic.ack
    raw.send_method(1, 60, 90, Args::new().u64(tags[1]).u8(0))
        .await; // basic.reject requeue=false
    raw.publish(1, "", &q, b"uncommitted", 0).await;
    raw.send_method(1, 60, 10, Args::new().u32(0).u16(0).u8(0))
        .await; // basic.qos: a round trip
    raw.expect_method(1, 60, 11).await;
    drop(raw); // no close: the socket just goes away
    expect_transaction_discarded(&observer, &q).await;
}

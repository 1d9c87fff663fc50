//! AMQP transactions (tx.select / tx.commit / tx.rollback).
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

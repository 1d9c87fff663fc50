//! Consumer acknowledgements and flow control: prefetch (per consumer and global), multiple
//! ack, nack/reject with and without requeue, redelivery order, recover, bad delivery tags.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lapin::options::*;
use std::time::Duration;

/// How long we watch for a delivery that must not come.
const QUIET: Duration = Duration::from_millis(300);

fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i}")).collect()
}

async fn fill(ch: &lapin::Channel, q: &str, n: usize) {
    let bodies = numbered(n);
    let refs: Vec<&str> = bodies.iter().map(|s| s.as_str()).collect();
    publish_settled(ch, q, &refs).await;
}

#[tokio::test]
async fn prefetch_limits_unacked_deliveries_and_ack_releases_one_more() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let pch = confirm_channel(&conn).await;
    let q = declare_queue(&pch, "prefetch").await;
    fill(&pch, &q, 10).await;

    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(3, BasicQosOptions::default()).await.unwrap();
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let first = recv_n(&mut consumer, 3, STEP).await;
    assert_eq!(bodies(&first), ["m0", "m1", "m2"]);
    assert_no_delivery(&mut consumer, QUIET).await;

    first[0].ack(BasicAckOptions::default()).await.unwrap();
    let next = recv_one(&mut consumer, STEP).await;
    assert_eq!(body_str(&next), "m3");
    assert_no_delivery(&mut consumer, QUIET).await;

    // Acking two more releases exactly two more.
    first[1].ack(BasicAckOptions::default()).await.unwrap();
    first[2].ack(BasicAckOptions::default()).await.unwrap();
    let more = recv_n(&mut consumer, 2, STEP).await;
    assert_eq!(bodies(&more), ["m4", "m5"]);
    assert_no_delivery(&mut consumer, QUIET).await;

    // Raising the prefetch on the fly lets more through.
    ch.basic_qos(5, BasicQosOptions::default()).await.unwrap();
    // New per-consumer prefetch applies to consumers created afterwards; the existing
    // consumer keeps 3. A second consumer on the same channel gets up to 5.
    let mut consumer2 = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let c2 = recv_n(&mut consumer2, 4, STEP).await;
    assert_eq!(bodies(&c2), ["m6", "m7", "m8", "m9"]);
    assert_no_delivery(&mut consumer, QUIET).await;
}

#[tokio::test]
async fn prefetch_zero_means_unlimited() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let pch = confirm_channel(&conn).await;
    let q = declare_queue(&pch, "unlimited").await;
    fill(&pch, &q, 200).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(0, BasicQosOptions::default()).await.unwrap();
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let got = recv_n(&mut consumer, 200, STEP).await;
    assert_eq!(body_str(&got[199]), "m199");
}

#[tokio::test]
async fn global_qos_is_shared_by_all_consumers_on_the_channel() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let pch = confirm_channel(&conn).await;
    let qa = declare_queue(&pch, "global-a").await;
    let qb = declare_queue(&pch, "global-b").await;
    fill(&pch, &qa, 5).await;
    fill(&pch, &qb, 5).await;

    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(4, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut ca = consume(&ch, &qa, BasicConsumeOptions::default()).await;
    let got_a = recv_n(&mut ca, 4, STEP).await;
    // The channel-wide budget is used up by consumer A.
    let mut cb = consume(&ch, &qb, BasicConsumeOptions::default()).await;
    assert_no_delivery(&mut cb, QUIET).await;
    assert_no_delivery(&mut ca, Duration::from_millis(1)).await;
    // Free two slots: exactly two more deliveries arrive on the channel (either consumer).
    got_a[0].ack(BasicAckOptions::default()).await.unwrap();
    got_a[1].ack(BasicAckOptions::default()).await.unwrap();
    let mut extra = 0;
    let deadline = tokio::time::Instant::now() + STEP;
    while extra < 2 {
        tokio::select! {
            Some(Ok(_)) = futures_lite::StreamExt::next(&mut ca) => extra += 1,
            Some(Ok(_)) = futures_lite::StreamExt::next(&mut cb) => extra += 1,
            _ = tokio::time::sleep_until(deadline) => panic!("only {extra} of 2 deliveries"),
        }
    }
    assert_no_delivery(&mut ca, QUIET).await;
    assert_no_delivery(&mut cb, Duration::from_millis(1)).await;
}

#[tokio::test]
async fn per_consumer_and_global_limits_combine() {
    // RabbitMQ: with both a per-consumer (global=false) and a channel (global=true) limit,
    // each consumer gets at most its own prefetch and the channel at most the global one.
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let pch = confirm_channel(&conn).await;
    let qa = declare_queue(&pch, "combo-a").await;
    let qb = declare_queue(&pch, "combo-b").await;
    fill(&pch, &qa, 10).await;
    fill(&pch, &qb, 10).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(3, BasicQosOptions { global: false })
        .await
        .unwrap();
    ch.basic_qos(5, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut ca = consume(&ch, &qa, BasicConsumeOptions::default()).await;
    let _a = recv_n(&mut ca, 3, STEP).await;
    assert_no_delivery(&mut ca, QUIET).await;
    let mut cb = consume(&ch, &qb, BasicConsumeOptions::default()).await;
    let _b = recv_n(&mut cb, 2, STEP).await;
    assert_no_delivery(&mut cb, QUIET).await;
    assert_no_delivery(&mut ca, Duration::from_millis(1)).await;
}

#[tokio::test]
async fn multiple_ack_acks_everything_up_to_the_tag() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let pch = confirm_channel(&conn).await;
    let q = declare_queue(&pch, "multi-ack").await;
    fill(&pch, &q, 10).await;
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let got = recv_n(&mut consumer, 10, STEP).await;
    got[6]
        .ack(BasicAckOptions { multiple: true })
        .await
        .unwrap();
    // Close the channel: only the 3 not covered by the multiple ack come back.
    ch.close(200, "bye".into()).await.unwrap();
    let ch2 = conn.create_channel().await.unwrap();
    let mut c2 = consume(&ch2, &q, BasicConsumeOptions::default()).await;
    let back = recv_n(&mut c2, 3, STEP).await;
    assert_eq!(bodies(&back), ["m7", "m8", "m9"]);
    assert!(back.iter().all(|d| d.redelivered));
    assert_no_delivery(&mut c2, QUIET).await;
    // delivery tags are per channel: the new channel starts at 1 again
    assert_eq!(
        back.iter().map(|d| d.delivery_tag).collect::<Vec<_>>(),
        [1, 2, 3]
    );
}

#[tokio::test]
async fn ack_multiple_with_tag_zero_acks_all_outstanding() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let pch = confirm_channel(&conn).await;
    let q = declare_queue(&pch, "ack-zero").await;
    fill(&pch, &q, 5).await;
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let _got = recv_n(&mut consumer, 5, STEP).await;
    ch.basic_ack(0, BasicAckOptions { multiple: true })
        .await
        .unwrap();
    ch.close(200, "bye".into()).await.unwrap();
    let ch2 = conn.create_channel().await.unwrap();
    assert_eq!(message_count(&ch2, &q).await, 0);
}

#[tokio::test]
async fn nack_requeue_redelivers_in_original_order() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let pch = confirm_channel(&conn).await;
    let q = declare_queue(&pch, "nack-order").await;
    fill(&pch, &q, 10).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(5, BasicQosOptions::default()).await.unwrap();
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let got = recv_n(&mut consumer, 5, STEP).await;
    assert_eq!(bodies(&got), ["m0", "m1", "m2", "m3", "m4"]);

    // Nack a single message in the middle: it goes back to its original position (the
    // head, ahead of m5..m9) and is redelivered next.
    got[2]
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .unwrap();
    let again = recv_one(&mut consumer, STEP).await;
    assert_eq!(body_str(&again), "m2");
    assert!(again.redelivered);
    assert_eq!(again.delivery_tag, 6, "redelivery gets a new delivery tag");

    // Nack everything outstanding (multiple): redelivered in original order, before m5.
    again
        .nack(BasicNackOptions {
            requeue: true,
            multiple: true,
        })
        .await
        .unwrap();
    let back = recv_n(&mut consumer, 5, STEP).await;
    assert_eq!(bodies(&back), ["m0", "m1", "m2", "m3", "m4"]);
    assert!(back.iter().all(|d| d.redelivered));
    back[4]
        .ack(BasicAckOptions { multiple: true })
        .await
        .unwrap();
    let rest = recv_n(&mut consumer, 5, STEP).await;
    assert_eq!(bodies(&rest), ["m5", "m6", "m7", "m8", "m9"]);
    assert!(rest.iter().all(|d| !d.redelivered));
}

#[tokio::test]
async fn nack_and_reject_without_requeue_drop_the_message() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let pch = confirm_channel(&conn).await;
    let q = declare_queue(&pch, "drop").await;
    fill(&pch, &q, 4).await;
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let got = recv_n(&mut consumer, 4, STEP).await;
    got[0]
        .nack(BasicNackOptions {
            requeue: false,
            multiple: false,
        })
        .await
        .unwrap();
    got[1]
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    got[2]
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    let again = recv_one(&mut consumer, STEP).await;
    assert_eq!(body_str(&again), "m2");
    assert!(again.redelivered);
    again.ack(BasicAckOptions::default()).await.unwrap();
    got[3].ack(BasicAckOptions::default()).await.unwrap();
    ch.close(200, "bye".into()).await.unwrap();
    let ch2 = conn.create_channel().await.unwrap();
    assert_eq!(message_count(&ch2, &q).await, 0);
}

#[tokio::test]
async fn basic_recover_requeue_redelivers_unacked() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let pch = confirm_channel(&conn).await;
    let q = declare_queue(&pch, "recover").await;
    fill(&pch, &q, 3).await;
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let got = recv_n(&mut consumer, 3, STEP).await;
    got[0].ack(BasicAckOptions::default()).await.unwrap();
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
    let back = recv_n(&mut consumer, 2, STEP).await;
    assert_eq!(bodies(&back), ["m1", "m2"]);
    assert!(back.iter().all(|d| d.redelivered));
}

#[tokio::test]
async fn ack_of_unknown_delivery_tag_is_a_406_channel_error() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let pch = confirm_channel(&conn).await;
    let q = declare_queue(&pch, "badtag").await;
    fill(&pch, &q, 1).await;

    let ch = conn.create_channel().await.unwrap();
    let mut watch = watch_channel(&ch).await;
    ch.basic_ack(99, BasicAckOptions::default()).await.unwrap();
    // The error arrives asynchronously as channel.close.
    let (code, text) = expect_channel_error(&mut watch).await;
    assert_eq!(code, 406);
    assert_eq!(text, "PRECONDITION_FAILED - unknown delivery tag 99");

    // Double ack: the second one is an unknown tag too.
    let ch = conn.create_channel().await.unwrap();
    let mut watch = watch_channel(&ch).await;
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    let tag = m.delivery.delivery_tag;
    ch.basic_ack(tag, BasicAckOptions::default()).await.unwrap();
    ch.basic_ack(tag, BasicAckOptions::default()).await.unwrap();
    let (code, text) = expect_channel_error(&mut watch).await;
    assert_eq!(code, 406);
    assert_eq!(
        text,
        format!("PRECONDITION_FAILED - unknown delivery tag {tag}")
    );

    // The connection survives (soft error).
    let ch3 = conn.create_channel().await.unwrap();
    assert_eq!(message_count(&ch3, &q).await, 0);
}

#[tokio::test]
async fn cancel_keeps_unacked_messages_until_acked() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let pch = confirm_channel(&conn).await;
    let q = declare_queue(&pch, "cancel-unacked").await;
    fill(&pch, &q, 2).await;
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let got = recv_n(&mut consumer, 2, STEP).await;
    ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
        .unwrap();
    // Still acknowledgeable after cancel (RabbitMQ keeps them unacked on the channel).
    got[0].ack(BasicAckOptions::default()).await.unwrap();
    got[1]
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .unwrap();
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("nacked message back in the queue");
    assert_eq!(body_str(&m.delivery), "m1");
    assert!(m.delivery.redelivered);
    assert_eq!(m.message_count, 0);
}

#[tokio::test]
async fn competing_consumers_round_robin() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let pch = confirm_channel(&conn).await;
    let q = declare_queue(&pch, "rr").await;
    let ch1 = conn.create_channel().await.unwrap();
    let ch2 = conn.create_channel().await.unwrap();
    let mut c1 = consume(&ch1, &q, BasicConsumeOptions::default()).await;
    let mut c2 = consume(&ch2, &q, BasicConsumeOptions::default()).await;
    fill(&pch, &q, 10).await;
    let a = recv_n(&mut c1, 5, STEP).await;
    let b = recv_n(&mut c2, 5, STEP).await;
    assert_eq!(bodies(&a), ["m0", "m2", "m4", "m6", "m8"]);
    assert_eq!(bodies(&b), ["m1", "m3", "m5", "m7", "m9"]);
}

#[tokio::test]
async fn per_consumer_qos_after_global_qos_clears_the_global_limit_like_rabbitmq() {
    // RabbitMQ quirk (rabbit_channel: basic.qos global=false calls
    // rabbit_limiter:unlimit_prefetch): a per-consumer basic.qos issued *after* a global one
    // removes the channel-wide limit.
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let pch = confirm_channel(&conn).await;
    let qa = declare_queue(&pch, "quirk-a").await;
    let qb = declare_queue(&pch, "quirk-b").await;
    fill(&pch, &qa, 10).await;
    fill(&pch, &qb, 10).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(5, BasicQosOptions { global: true })
        .await
        .unwrap();
    ch.basic_qos(3, BasicQosOptions { global: false })
        .await
        .unwrap();
    let mut ca = consume(&ch, &qa, BasicConsumeOptions::default()).await;
    let mut cb = consume(&ch, &qb, BasicConsumeOptions::default()).await;
    let _a = recv_n(&mut ca, 3, STEP).await;
    let _b = recv_n(&mut cb, 3, STEP).await; // 6 > 5: the global limit is gone
    assert_no_delivery(&mut ca, QUIET).await;
    assert_no_delivery(&mut cb, Duration::from_millis(1)).await;
}

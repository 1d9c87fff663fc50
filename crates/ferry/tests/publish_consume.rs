//! Publish/consume round trips: properties, every header field type, body sizes around
//! frame boundaries, ordering, basic.get, counts reported by declare/purge/delete.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};
use lapin::BasicProperties;
use std::time::Duration;

fn all_types_headers() -> FieldTable {
    let mut nested = FieldTable::default();
    nested.insert("inner-str".into(), AMQPValue::LongString("deep".into()));
    nested.insert("inner-i32".into(), AMQPValue::LongInt(-7));
    let mut deeper = FieldTable::default();
    deeper.insert("level".into(), AMQPValue::ShortShortUInt(3));
    deeper.insert(
        "arr".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(false)])),
    );
    nested.insert("deeper".into(), AMQPValue::FieldTable(deeper.clone()));

    let array = FieldArray::from(vec![
        AMQPValue::LongInt(1),
        AMQPValue::LongString("two".into()),
        AMQPValue::Double(3.5),
        AMQPValue::FieldTable(deeper),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::ShortShortInt(-1),
            AMQPValue::Void,
        ])),
        AMQPValue::FieldArray(FieldArray::from(vec![])),
    ]);

    let mut h = FieldTable::default();
    h.insert("bool-true".into(), AMQPValue::Boolean(true));
    h.insert("bool-false".into(), AMQPValue::Boolean(false));
    h.insert("i8-min".into(), AMQPValue::ShortShortInt(i8::MIN));
    h.insert("i8-max".into(), AMQPValue::ShortShortInt(i8::MAX));
    h.insert("u8-max".into(), AMQPValue::ShortShortUInt(u8::MAX));
    h.insert("i16-min".into(), AMQPValue::ShortInt(i16::MIN));
    h.insert("i16-max".into(), AMQPValue::ShortInt(i16::MAX));
    h.insert("u16-max".into(), AMQPValue::ShortUInt(u16::MAX));
    h.insert("i32-min".into(), AMQPValue::LongInt(i32::MIN));
    h.insert("i32-max".into(), AMQPValue::LongInt(i32::MAX));
    h.insert("u32-max".into(), AMQPValue::LongUInt(u32::MAX));
    h.insert("i64-min".into(), AMQPValue::LongLongInt(i64::MIN));
    h.insert("i64-max".into(), AMQPValue::LongLongInt(i64::MAX));
    h.insert("f32".into(), AMQPValue::Float(-1.5e-3));
    h.insert("f64".into(), AMQPValue::Double(std::f64::consts::PI));
    h.insert(
        "decimal".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 123_456,
        }),
    );
    h.insert("timestamp".into(), AMQPValue::Timestamp(1_700_000_000));
    h.insert(
        "bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 2, 0xCE, 0xFF, 0])),
    );
    h.insert(
        "empty-bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![])),
    );
    h.insert("utf8".into(), AMQPValue::LongString("héllo wörld ✓".into()));
    h.insert(
        "binary-longstr".into(),
        AMQPValue::LongString(LongString::from(vec![0u8, 0xFF, 0xCE, 10, 13])),
    );
    h.insert("empty-str".into(), AMQPValue::LongString("".into()));
    h.insert("void".into(), AMQPValue::Void);
    h.insert("nested".into(), AMQPValue::FieldTable(nested));
    h.insert("array".into(), AMQPValue::FieldArray(array));
    h.insert(
        "empty-table".into(),
        AMQPValue::FieldTable(FieldTable::default()),
    );
    h
}

fn all_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/x-ferry-test".into())
        .with_content_encoding("identity".into())
        .with_headers(all_types_headers())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-ü-1".into())
        .with_reply_to("reply.queue".into())
        .with_expiration("3600000".into())
        .with_message_id("msg-42".into())
        .with_timestamp(1_234_567_890)
        .with_type("test.type".into())
        // RabbitMQ validates user-id against the authenticated user.
        .with_user_id("guest".into())
        .with_app_id("ferry-tests".into())
        .with_cluster_id("cluster-x".into())
}

#[tokio::test]
async fn properties_and_all_header_field_types_round_trip_exactly() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "props").await;
    let props = all_properties();
    let body = b"\x00binary\xCE\xFFbody".to_vec();

    // Once through basic.consume ...
    publish_props(&ch, "", &q, &body, props.clone()).await;
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let d = recv_one(&mut consumer, STEP).await;
    assert_eq!(d.data, body);
    assert_eq!(d.exchange.as_str(), "");
    assert_eq!(d.routing_key.as_str(), q);
    assert!(!d.redelivered);
    assert_eq!(
        d.properties, props,
        "properties changed in transit (consume)"
    );
    assert_eq!(
        d.properties.headers().as_ref().unwrap().inner(),
        all_types_headers().inner()
    );
    d.ack(BasicAckOptions::default()).await.unwrap();
    ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
        .unwrap();

    // ... and once through basic.get.
    publish_props(&ch, "", &q, &body, props.clone()).await;
    settle(&ch).await;
    let got = ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("message via basic.get");
    assert_eq!(got.message_count, 0);
    assert_eq!(got.delivery.data, body);
    assert_eq!(got.delivery.properties, props, "properties changed (get)");
    got.delivery.ack(BasicAckOptions::default()).await.unwrap();
}

#[tokio::test]
async fn empty_properties_stay_empty() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "noprops").await;
    publish_settled(&ch, &q, &["x"]).await;
    let got = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.delivery.properties, BasicProperties::default());
}

#[tokio::test]
async fn body_sizes_around_frame_boundaries_and_5mib_round_trip() {
    let broker = Broker::start().await;
    let (_conn, ch) = connect_channel(&broker.amqp_url()).await;
    let q = declare_queue(&ch, "sizes").await;
    // frame_max is negotiated (RabbitMQ: 131072); a body frame carries frame_max - 8 bytes.
    let fm = 131072usize - 8;
    let sizes = [0usize, 1, fm - 1, fm, fm + 1, 2 * fm, 5 * 1024 * 1024];
    let bodies: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| pseudo_random_bytes(n, i as u64 + 11))
        .collect();
    for b in &bodies {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b,
            BasicProperties::default().with_message_id(b.len().to_string().into()),
        )
        .await
        .unwrap();
    }
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let got = recv_n(&mut consumer, bodies.len(), Duration::from_secs(30)).await;
    for (d, expected) in got.iter().zip(&bodies) {
        assert_eq!(d.data.len(), expected.len(), "body length");
        assert!(
            d.data == *expected,
            "body of {} bytes corrupted",
            expected.len()
        );
        assert_eq!(
            d.properties.message_id().as_ref().unwrap().as_str(),
            expected.len().to_string()
        );
    }
    got.last()
        .unwrap()
        .ack(BasicAckOptions { multiple: true })
        .await
        .unwrap();
}

#[tokio::test]
async fn fifo_order_and_consecutive_delivery_tags() {
    let broker = Broker::start().await;
    let (_conn, ch) = connect_channel(&broker.amqp_url()).await;
    let q = declare_queue(&ch, "fifo").await;
    let n = 2000;
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            i.to_string().as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let got = recv_n(&mut consumer, n, Duration::from_secs(20)).await;
    for (i, d) in got.iter().enumerate() {
        assert_eq!(body_str(d), i.to_string(), "out of order at {i}");
        assert_eq!(
            d.delivery_tag,
            i as u64 + 1,
            "delivery tags start at 1, no gaps"
        );
        assert!(!d.redelivered);
    }
    got.last()
        .unwrap()
        .ack(BasicAckOptions { multiple: true })
        .await
        .unwrap();
    assert_eq!(message_count(&ch, &q).await, 0);
}

#[tokio::test]
async fn no_ack_consumer_drains_queue() {
    let broker = Broker::start().await;
    let (_conn, ch) = connect_channel(&broker.amqp_url()).await;
    let q = declare_queue(&ch, "noack").await;
    // prefetch does not apply to no-ack consumers
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    for i in 0..50 {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let mut consumer = consume(
        &ch,
        &q,
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    let got = recv_n(&mut consumer, 50, STEP).await;
    assert_eq!(body_str(&got[49]), "m49");
    assert_eq!(message_count(&ch, &q).await, 0);
}

#[tokio::test]
async fn basic_get_reports_remaining_message_count() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "get").await;
    assert!(ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());
    publish_settled(&ch, &q, &["g0", "g1", "g2", "g3", "g4"]).await;
    let mut tags = Vec::new();
    for i in 0..5u32 {
        let m = ch
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
            .expect("message");
        assert_eq!(
            m.message_count,
            4 - i,
            "message_count excludes the fetched one"
        );
        assert_eq!(body_str(&m.delivery), format!("g{i}"));
        assert!(!m.delivery.redelivered);
        assert_eq!(m.delivery.routing_key.as_str(), q);
        tags.push(m.delivery.delivery_tag);
    }
    assert_eq!(tags, vec![1, 2, 3, 4, 5]);
    assert!(ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());
    // Unacked gets come back (redelivered) when the channel goes away.
    ch.close(200, "bye".into()).await.unwrap();
    let ch2 = conn.create_channel().await.unwrap();
    let mut c = consume(&ch2, &q, BasicConsumeOptions::default()).await;
    let back = recv_n(&mut c, 5, STEP).await;
    assert_eq!(bodies(&back), ["g0", "g1", "g2", "g3", "g4"]);
    assert!(back.iter().all(|d| d.redelivered));
}

#[tokio::test]
async fn queue_declare_reports_ready_messages_and_consumers() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let name = unique("counts");
    let q = ch
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.name().as_str(), name);
    assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
    publish_settled(&ch, &name, &["0", "1", "2"]).await;
    // Re-declare (non-passive, same args) also reports counts.
    let q = ch
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!((q.message_count(), q.consumer_count()), (3, 0));

    // One consumer holding one unacked message: message_count counts only ready messages.
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut c1 = consume(&cch, &name, BasicConsumeOptions::default()).await;
    let _held = recv_one(&mut c1, STEP).await;
    let cch2 = conn.create_channel().await.unwrap();
    cch2.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut c2 = consume(&cch2, &name, BasicConsumeOptions::default()).await;
    let _held2 = recv_one(&mut c2, STEP).await;
    let q = ch
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!((q.message_count(), q.consumer_count()), (1, 2));
}

#[tokio::test]
async fn purge_counts_only_ready_messages_and_keeps_unacked() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "purge").await;
    publish_settled(&ch, &q, &["p0", "p1", "p2", "p3", "p4", "p5", "p6"]).await;
    // Hold one message unacked on another channel.
    let holder = conn.create_channel().await.unwrap();
    let held = holder
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body_str(&held.delivery), "p0");
    let purged = ch
        .queue_purge(q.as_str().into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    assert_eq!(purged, 6);
    assert_eq!(message_count(&ch, &q).await, 0);
    assert_eq!(
        ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
            .await
            .unwrap(),
        0
    );
    // The unacked message survives the purge and comes back on requeue.
    let mut c = consume(&ch, &q, BasicConsumeOptions::default()).await;
    held.delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let again = recv_one(&mut c, STEP).await;
    assert_eq!(body_str(&again), "p0");
    assert!(again.redelivered);
}

#[tokio::test]
async fn queue_delete_returns_message_count() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "delcount").await;
    publish_settled(&ch, &q, &["d", "d", "d", "d"]).await;
    let n = ch
        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(n, 4);
    // Deleting a queue that does not exist is not an error in RabbitMQ: delete-ok, count 0.
    let n = ch
        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn server_named_queue_and_generated_consumer_tag() {
    let broker = Broker::start().await;
    let (_conn, ch) = connect_channel(&broker.amqp_url()).await;
    let q = common::server_named_queue(&ch).await;
    let name = q.name().to_string();
    assert!(name.starts_with("amq.gen-"), "server-named queue: {name}");
    assert!(name.len() > "amq.gen-".len() + 8, "name too short: {name}");
    assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
    // A second server-named queue gets a different name.
    let q2 = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_ne!(q2.name().as_str(), name);

    ch.basic_publish(
        "".into(),
        name.as_str().into(),
        BasicPublishOptions::default(),
        b"to server-named",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(
            name.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let tag = consumer.tag().to_string();
    assert!(
        tag.starts_with("amq.ctag-"),
        "generated consumer tag: {tag}"
    );
    let d = recv_one(&mut consumer, STEP).await;
    assert_eq!(body_str(&d), "to server-named");
    assert_eq!(d.routing_key.as_str(), name);
}

#[tokio::test]
async fn explicit_consumer_tag_and_cancel_ends_stream() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "cancel").await;
    let tag = unique("ctag");
    let mut consumer = ch
        .basic_consume(
            q.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(consumer.tag().as_str(), tag);
    ch.basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await
        .unwrap();
    expect_consumer_end(&mut consumer, STEP).await;
    // After cancel, messages stay in the queue.
    publish_settled(&ch, &q, &["after-cancel"]).await;
    let q2 = ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!((q2.message_count(), q2.consumer_count()), (1, 0));
}

#[tokio::test]
async fn queue_delete_notifies_consumer_with_basic_cancel() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    let q = declare_queue(&ch, "delnotify").await;
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let other = conn.create_channel().await.unwrap();
    other
        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    // The broker sends basic.cancel (consumer_cancel_notify); lapin ends the stream.
    expect_consumer_end(&mut consumer, STEP).await;
    // The consumer's channel stays open.
    let q2 = declare_queue(&ch, "delnotify-after").await;
    assert_eq!(message_count(&ch, &q2).await, 0);
}

#[tokio::test]
async fn channel_close_requeues_unacked_in_order_as_redelivered() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    let q = declare_queue(&ch, "closerequeue").await;
    for i in 0..10 {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            format!("{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(4, BasicQosOptions::default()).await.unwrap();
    let mut consumer = consume(&cch, &q, BasicConsumeOptions::default()).await;
    let got = recv_n(&mut consumer, 4, STEP).await;
    assert_eq!(bodies(&got), ["0", "1", "2", "3"]);
    got[1].ack(BasicAckOptions::default()).await.unwrap(); // "1" is done
                                                           // The freed prefetch slot is refilled with "4"; wait for it so the state is known.
    let four = recv_one(&mut consumer, STEP).await;
    assert_eq!(body_str(&four), "4");
    cch.close(200, "done".into()).await.unwrap();

    let mut c2 = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let rest = recv_n(&mut c2, 9, STEP).await;
    assert_eq!(bodies(&rest), ["0", "2", "3", "4", "5", "6", "7", "8", "9"]);
    let redelivered: Vec<bool> = rest.iter().map(|d| d.redelivered).collect();
    assert_eq!(
        redelivered,
        [true, true, true, true, false, false, false, false, false]
    );
}

//! Channel-level (soft) errors: 404 / 403 / 405 / 406 close only their channel, with
//! RabbitMQ's exact code and text, and the connection's other channels keep working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};

/// The other channel on the same connection keeps working after a channel error.
async fn assert_still_works(conn: &Connection, ch: &Channel) {
    assert!(
        conn.status().connected(),
        "connection must survive a channel error"
    );
    let q = declare_queue(ch, "survivor").await;
    publish(ch, "", &q, b"alive").await;
    let mut c = consume(
        ch,
        &q,
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(body_str(&recv_one(&mut c, STEP).await), "alive");
    ch.basic_cancel(c.tag(), BasicCancelOptions::default())
        .await
        .unwrap();
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn consume_from_missing_queue_is_404_and_closes_only_that_channel() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let good = conn.create_channel().await.unwrap();
    let bad = conn.create_channel().await.unwrap();
    let missing = unique("missing");
    let res = bad
        .basic_consume(
            missing.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    let err = res.expect_err("consume from a missing queue");
    assert!(!is_hard(&err), "must be a channel-level error: {err}");
    assert_eq!(
        amqp_error(&err),
        (
            404,
            format!("NOT_FOUND - no queue '{missing}' in vhost '/'")
        )
    );
    assert!(!bad.status().connected(), "the failed channel is closed");
    // Further use of the closed channel fails client-side without touching the connection.
    assert!(bad.basic_qos(1, BasicQosOptions::default()).await.is_err());
    assert_still_works(&conn, &good).await;
    // New channels can still be opened.
    let fresh = conn.create_channel().await.unwrap();
    assert_still_works(&conn, &fresh).await;
}

#[tokio::test]
async fn passive_declares_and_get_on_missing_entities_are_404() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let good = conn.create_channel().await.unwrap();
    let q = unique("nope-q");
    let x = unique("nope-x");

    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .queue_declare(q.as_str().into(), passive(), FieldTable::default())
        .await;
    assert_eq!(
        expect_amqp_err(r, "passive queue"),
        (404, format!("NOT_FOUND - no queue '{q}' in vhost '/'"))
    );

    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .exchange_declare(
            x.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        expect_amqp_err(r, "passive exchange"),
        (404, format!("NOT_FOUND - no exchange '{x}' in vhost '/'"))
    );

    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await;
    assert_eq!(
        expect_amqp_err(r, "get"),
        (404, format!("NOT_FOUND - no queue '{q}' in vhost '/'"))
    );

    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .queue_purge(q.as_str().into(), QueuePurgeOptions::default())
        .await;
    assert_eq!(
        expect_amqp_err(r, "purge"),
        (404, format!("NOT_FOUND - no queue '{q}' in vhost '/'"))
    );

    // Binding: the exchange is checked first, then the queue.
    let existing_q = declare_queue(&good, "bind-target").await;
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .queue_bind(
            existing_q.as_str().into(),
            x.as_str().into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        expect_amqp_err(r, "bind to missing exchange"),
        (404, format!("NOT_FOUND - no exchange '{x}' in vhost '/'"))
    );
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .queue_bind(
            q.as_str().into(),
            "amq.direct".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        expect_amqp_err(r, "bind missing queue"),
        (404, format!("NOT_FOUND - no queue '{q}' in vhost '/'"))
    );
    assert_still_works(&conn, &good).await;
}

#[tokio::test]
async fn queue_redeclare_with_different_properties_is_406() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let good = conn.create_channel().await.unwrap();
    let q = declare_queue(&good, "mismatch").await; // non-durable, no args

    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await;
    let err = r.expect_err("durable mismatch");
    assert!(!is_hard(&err));
    assert_eq!(
        amqp_error(&err),
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' but current is 'false'"
            )
        )
    );
    assert!(!ch.status().connected());

    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default().auto_delete(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        expect_amqp_err(r, "auto_delete mismatch"),
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{q}' in vhost '/': received 'true' but current is 'false'"
            )
        )
    );

    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    let r = ch
        .queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
        .await;
    assert_eq!(
        expect_amqp_err(r, "x-max-length mismatch"),
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': received the value '10' of type 'signedint' but current is none"
            )
        )
    );

    // A passive declare ignores the other flags entirely.
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            passive: true,
            durable: true,
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    assert_still_works(&conn, &good).await;
}

#[tokio::test]
async fn exchange_redeclare_with_different_type_or_durability_is_406() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let good = conn.create_channel().await.unwrap();
    let x = unique("xmismatch");
    declare_exchange(&good, &x, ExchangeKind::Direct, FieldTable::default()).await;

    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .exchange_declare(
            x.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        expect_amqp_err(r, "type mismatch"),
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '/': received 'fanout' but current is 'direct'"
            )
        )
    );
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .exchange_declare(
            x.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        expect_amqp_err(r, "durable mismatch"),
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{x}' in vhost '/': received 'true' but current is 'false'"
            )
        )
    );
    assert_still_works(&conn, &good).await;
}

#[tokio::test]
async fn exclusive_queue_is_locked_to_its_connection_405() {
    let broker = Broker::start().await;
    let owner = connect(&broker.amqp_url()).await;
    let och = owner.create_channel().await.unwrap();
    let q = unique("exclusive");
    och.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::exclusive(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let locked = format!(
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
    );

    let other = connect(&broker.amqp_url()).await;
    let ch = other.create_channel().await.unwrap();
    let r = ch
        .queue_declare(q.as_str().into(), passive(), FieldTable::default())
        .await;
    assert_eq!(expect_amqp_err(r, "passive"), (405, locked.clone()));
    let ch = other.create_channel().await.unwrap();
    let r = ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(expect_amqp_err(r, "consume"), (405, locked.clone()));
    let ch = other.create_channel().await.unwrap();
    let r = ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await;
    assert_eq!(expect_amqp_err(r, "get"), (405, locked.clone()));
    let ch = other.create_channel().await.unwrap();
    let r = ch
        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await;
    assert_eq!(expect_amqp_err(r, "delete"), (405, locked.clone()));

    // Publishing into it from another connection is allowed.
    let pch = confirm_channel(&other).await;
    publish(&pch, "", &q, b"from-outside").await;
    settle(&pch).await;
    let m = och
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("message published by another connection");
    assert_eq!(body_str(&m.delivery), "from-outside");

    // The owner closing its connection deletes the queue. (RabbitMQ deletes it
    // asynchronously after close-ok, so poll, bounded.)
    owner.close(200, "bye".into()).await.unwrap();
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let ch = other.create_channel().await.unwrap();
        let r = ch
            .queue_declare(q.as_str().into(), passive(), FieldTable::default())
            .await;
        let (code, text) = expect_amqp_err(r, "passive declare of another's exclusive queue");
        if code == 404 {
            assert_eq!(text, format!("NOT_FOUND - no queue '{q}' in vhost '/'"));
            break;
        }
        assert_eq!(
            (code, &text),
            (405, &locked),
            "while the queue still exists"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "exclusive queue outlived its connection"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn exclusive_consumer_refuses_other_consumers_403() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    let q = declare_queue(&ch, "excl-consumer").await;
    let _c = consume(
        &ch,
        &q,
        BasicConsumeOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    let ch2 = conn.create_channel().await.unwrap();
    let r = ch2
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        expect_amqp_err(r, "second consumer"),
        (
            403,
            format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use")
        )
    );

    // And an exclusive consumer cannot join a queue that already has consumers.
    let q2 = declare_queue(&ch, "excl-consumer-2").await;
    let _plain = consume(&ch, &q2, BasicConsumeOptions::default()).await;
    let ch3 = conn.create_channel().await.unwrap();
    let r = ch3
        .basic_consume(
            q2.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        expect_amqp_err(r, "exclusive consume on busy queue"),
        (
            403,
            format!("ACCESS_REFUSED - queue '{q2}' in vhost '/' in exclusive use")
        )
    );
    let good = conn.create_channel().await.unwrap();
    assert_still_works(&conn, &good).await;
}

#[tokio::test]
async fn reserved_names_and_default_exchange_are_403() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let good = conn.create_channel().await.unwrap();
    let q = declare_queue(&good, "dflt-bind").await;

    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .queue_declare(
            "amq.ferry-test".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        expect_amqp_err(r, "amq. queue"),
        (
            403,
            "ACCESS_REFUSED - queue name 'amq.ferry-test' contains reserved prefix 'amq.*'"
                .to_string()
        )
    );
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .exchange_declare(
            "amq.ferry-test".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        expect_amqp_err(r, "amq. exchange"),
        (
            403,
            "ACCESS_REFUSED - exchange name 'amq.ferry-test' contains reserved prefix 'amq.*'"
                .to_string()
        )
    );
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .queue_bind(
            q.as_str().into(),
            "".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        expect_amqp_err(r, "bind to default exchange"),
        (
            403,
            "ACCESS_REFUSED - operation not permitted on the default exchange".to_string()
        )
    );
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .exchange_delete("".into(), ExchangeDeleteOptions::default())
        .await;
    assert_eq!(
        expect_amqp_err(r, "delete default exchange"),
        (
            403,
            "ACCESS_REFUSED - operation not permitted on the default exchange".to_string()
        )
    );
    assert_still_works(&conn, &good).await;
}

#[tokio::test]
async fn publish_to_internal_exchange_is_403() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let good = conn.create_channel().await.unwrap();
    let x = unique("internal");
    good.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            internal: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut watch = watch_channel(&ch).await;
    publish(&ch, &x, "", b"nope").await;
    assert_eq!(
        expect_channel_error(&mut watch).await,
        (
            403,
            format!("ACCESS_REFUSED - cannot publish to internal exchange '{x}' in vhost '/'")
        )
    );
    assert_still_works(&conn, &good).await;
}

#[tokio::test]
async fn conditional_deletes_are_406() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let good = confirm_channel(&conn).await;
    let q = declare_queue(&good, "cond-del").await;
    publish_settled(&good, &q, &["keep"]).await;

    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .queue_delete(
            q.as_str().into(),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        expect_amqp_err(r, "if_empty"),
        (
            406,
            format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty")
        )
    );
    let _c = consume(&good, &q, BasicConsumeOptions::default()).await;
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .queue_delete(
            q.as_str().into(),
            QueueDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        expect_amqp_err(r, "if_unused"),
        (
            406,
            format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' in use")
        )
    );

    let x = unique("cond-del-x");
    declare_exchange(&good, &x, ExchangeKind::Fanout, FieldTable::default()).await;
    bind(&good, &q, &x, "", FieldTable::default()).await;
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .exchange_delete(
            x.as_str().into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        expect_amqp_err(r, "exchange if_unused"),
        (
            406,
            format!("PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use")
        )
    );
    // Deleting a missing exchange is not an error.
    good.exchange_delete(
        unique("never-existed").as_str().into(),
        ExchangeDeleteOptions::default(),
    )
    .await
    .unwrap();
}

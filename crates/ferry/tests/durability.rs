//! Durability across clean restarts (SIGTERM) and crashes (SIGKILL). These tests own the
//! broker process, so they skip themselves when FERRY_TEST_AMQP_URL points at an external
//! broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::raw::RawConn;
use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn declare_durable_queue(ch: &Channel, name: &str) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await
    .expect("durable queue.declare");
}

async fn expect_queue_missing(conn: &Connection, q: &str) {
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .queue_declare(
            q.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    let (code, _) = expect_amqp_err(r, &format!("queue {q} should be gone"));
    assert_eq!(code, 404);
}

async fn expect_exchange_missing(conn: &Connection, x: &str) {
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .exchange_declare(
            x.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    let (code, _) = expect_amqp_err(r, &format!("exchange {x} should be gone"));
    assert_eq!(code, 404);
}

/// Consume everything in `q` (manual ack) and return the deliveries.
async fn drain_all(ch: &Channel, q: &str) -> Vec<lapin::message::Delivery> {
    let n = message_count(ch, q).await as usize;
    if n == 0 {
        return Vec::new();
    }
    let mut c = consume(ch, q, BasicConsumeOptions::default()).await;
    let got = recv_n(&mut c, n, STEP).await;
    got.last()
        .unwrap()
        .ack(BasicAckOptions { multiple: true })
        .await
        .unwrap();
    ch.basic_cancel(c.tag(), BasicCancelOptions::default())
        .await
        .unwrap();
    got
}

fn rich_props(i: usize) -> BasicProperties {
    let mut h = FieldTable::default();
    h.insert("i".into(), AMQPValue::LongLongInt(i as i64));
    h.insert("s".into(), AMQPValue::LongString(format!("v{i}").into()));
    let mut nested = FieldTable::default();
    nested.insert("f".into(), AMQPValue::Double(0.5));
    h.insert("n".into(), AMQPValue::FieldTable(nested));
    persistent()
        .with_headers(h)
        .with_message_id(format!("id-{i}").into())
        .with_content_type("text/plain".into())
        .with_priority(3)
        .with_timestamp(1_600_000_000 + i as u64)
}

#[tokio::test]
async fn persistent_messages_in_durable_queues_survive_restart_transient_ones_do_not() {
    let Some(mut broker) = Broker::start_owned("durability::restart").await else {
        return;
    };
    let durable_q = unique("durable");
    let transient_q = unique("transient");
    {
        let conn = connect(&broker.amqp_url()).await;
        let ch = confirm_channel(&conn).await;
        declare_durable_queue(&ch, &durable_q).await;
        ch.queue_declare(
            transient_q.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        for i in 0..100 {
            // Every third message is transient (delivery-mode 1 / absent).
            let props = if i % 3 == 0 {
                BasicProperties::default().with_message_id(format!("id-{i}").into())
            } else {
                rich_props(i)
            };
            publish_props(&ch, "", &durable_q, format!("m{i}").as_bytes(), props).await;
            publish_props(&ch, "", &transient_q, b"t", persistent()).await;
        }
        // A large persistent message too.
        let big = pseudo_random_bytes(3 * 1024 * 1024, 7);
        publish_props(&ch, "", &durable_q, &big, rich_props(1000)).await;
        settle(&ch).await;
        conn.close(200, "bye".into()).await.unwrap();
    }

    broker.restart().await;

    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    let got = drain_all(&ch, &durable_q).await;
    let expected: Vec<String> = (0..100)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("m{i}"))
        .collect();
    assert_eq!(
        got.len(),
        expected.len() + 1,
        "persistent messages after restart"
    );
    for (d, (exp, i)) in got
        .iter()
        .zip(expected.iter().zip((0..100).filter(|i| i % 3 != 0)))
    {
        assert_eq!(body_str(d), *exp, "order after restart");
        assert_eq!(d.properties, rich_props(i), "properties after restart");
    }
    let big = got.last().unwrap();
    assert!(
        big.data == pseudo_random_bytes(3 * 1024 * 1024, 7),
        "3 MiB body"
    );
    assert_eq!(big.properties, rich_props(1000));
    expect_queue_missing(&conn, &transient_q).await;
}

#[tokio::test]
async fn confirmed_persistent_messages_survive_kill9() {
    let Some(mut broker) = Broker::start_owned("durability::kill9").await else {
        return;
    };
    let q = unique("kill9");
    let n = 2000;
    {
        let conn = connect(&broker.amqp_url()).await;
        let ch = confirm_channel(&conn).await;
        declare_durable_queue(&ch, &q).await;
        for i in 0..n {
            publish_props(&ch, "", &q, format!("{i}").as_bytes(), persistent()).await;
        }
        settle(&ch).await;
        // No clean close: the broker dies with the connection open.
        broker.kill9().await;
    }
    broker.start_again().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    let got = drain_all(&ch, &q).await;
    let bodies: Vec<String> = got.iter().map(body_str).collect();
    let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(
        bodies, expected,
        "all confirmed messages, in order, after kill -9"
    );
}

#[tokio::test]
async fn durable_exchanges_and_bindings_survive_restart_and_kill9() {
    let Some(mut broker) = Broker::start_owned("durability::topology").await else {
        return;
    };
    let topic = unique("dx-topic");
    let fan = unique("dx-fanout");
    let ae = unique("dx-ae");
    let transient_x = unique("tx-x");
    let q_topic = unique("dq-topic");
    let q_fan = unique("dq-fan");
    let q_ae = unique("dq-ae");
    let q_transient = unique("tq");
    {
        let conn = connect(&broker.amqp_url()).await;
        let ch = conn.create_channel().await.unwrap();
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            ae.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "alternate-exchange".into(),
            AMQPValue::LongString(ae.as_str().into()),
        );
        ch.exchange_declare(topic.as_str().into(), ExchangeKind::Topic, durable, args)
            .await
            .unwrap();
        ch.exchange_declare(
            fan.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.exchange_declare(
            transient_x.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        for q in [&q_topic, &q_fan, &q_ae] {
            declare_durable_queue(&ch, q).await;
        }
        ch.queue_declare(
            q_transient.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        bind(&ch, &q_topic, &topic, "orders.*", FieldTable::default()).await;
        bind(&ch, &q_ae, &ae, "", FieldTable::default()).await;
        bind(&ch, &q_fan, &fan, "", FieldTable::default()).await;
        // transient queue bound to a durable exchange: binding must vanish with the queue
        bind(&ch, &q_transient, &topic, "#", FieldTable::default()).await;
        ch.exchange_bind(
            fan.as_str().into(),
            topic.as_str().into(),
            "orders.eu".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        conn.close(200, "bye".into()).await.unwrap();
    }

    for crash in [false, true] {
        if crash {
            broker.kill9().await;
            broker.start_again().await;
        } else {
            broker.restart().await;
        }
        let conn = connect(&broker.amqp_url()).await;
        let ch = confirm_channel(&conn).await;
        let after = if crash { "kill -9" } else { "restart" };
        for (key, body) in [
            ("orders.us", "us"),
            ("orders.eu", "eu"),
            ("invoices.x", "unroutable"),
        ] {
            let body = format!("{after}:{body}");
            publish_props(&ch, &topic, key, body.as_bytes(), persistent()).await;
        }
        settle(&ch).await;
        // Acks of the previous round (no-ack gets) need not survive kill -9: ignore leftovers.
        let this_round = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
                .filter(|b| b.starts_with(&format!("{after}:")))
                .map(|b| b[after.len() + 1..].to_string())
                .collect()
        };
        assert_eq!(
            this_round(drain_get(&ch, &q_topic).await),
            ["us", "eu"],
            "queue binding after {after}"
        );
        assert_eq!(
            this_round(drain_get(&ch, &q_fan).await),
            ["eu"],
            "exchange-to-exchange binding after {after}"
        );
        assert_eq!(
            this_round(drain_get(&ch, &q_ae).await),
            ["unroutable"],
            "alternate-exchange argument after {after}"
        );
        expect_exchange_missing(&conn, &transient_x).await;
        expect_queue_missing(&conn, &q_transient).await;
    }
}

#[tokio::test]
async fn acks_purges_and_deletes_are_durable_across_restart() {
    let Some(mut broker) = Broker::start_owned("durability::acks").await else {
        return;
    };
    let q = unique("acked");
    let purged = unique("purged");
    let deleted = unique("deleted");
    {
        let conn = connect(&broker.amqp_url()).await;
        let ch = confirm_channel(&conn).await;
        for name in [&q, &purged, &deleted] {
            declare_durable_queue(&ch, name).await;
        }
        for i in 0..10 {
            publish_props(&ch, "", &q, format!("m{i}").as_bytes(), persistent()).await;
            publish_props(&ch, "", &purged, b"p", persistent()).await;
            publish_props(&ch, "", &deleted, b"d", persistent()).await;
        }
        settle(&ch).await;
        assert_eq!(
            ch.queue_purge(purged.as_str().into(), QueuePurgeOptions::default())
                .await
                .unwrap(),
            10
        );
        ch.queue_delete(deleted.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();

        let cch = conn.create_channel().await.unwrap();
        cch.basic_qos(6, BasicQosOptions::default()).await.unwrap();
        let mut c = consume(&cch, &q, BasicConsumeOptions::default()).await;
        let got = recv_n(&mut c, 6, STEP).await;
        // ack m0..m3 (multiple), m5 singly; m4 stays unacked and is requeued on close.
        got[3]
            .ack(BasicAckOptions { multiple: true })
            .await
            .unwrap();
        got[5].ack(BasicAckOptions::default()).await.unwrap();
        cch.close(200, "bye".into()).await.unwrap();
        conn.close(200, "bye".into()).await.unwrap();
    }
    broker.restart().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    let got = drain_all(&ch, &q).await;
    assert_eq!(bodies(&got), ["m4", "m6", "m7", "m8", "m9"]);
    assert_eq!(message_count(&ch, &purged).await, 0, "purge is durable");
    expect_queue_missing(&conn, &deleted).await;
}

#[tokio::test]
async fn exclusive_and_server_named_queues_are_gone_after_restart() {
    let Some(mut broker) = Broker::start_owned("durability::exclusive").await else {
        return;
    };
    let named;
    let excl_durable = unique("excl-durable");
    {
        let conn = connect(&broker.amqp_url()).await;
        let ch = conn.create_channel().await.unwrap();
        named = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions::exclusive(),
                FieldTable::default(),
            )
            .await
            .unwrap()
            .name()
            .to_string();
        ch.queue_declare(
            excl_durable.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        // The connection is still open when the broker goes down.
        broker.restart().await;
    }
    let conn = connect(&broker.amqp_url()).await;
    expect_queue_missing(&conn, &named).await;
    expect_queue_missing(&conn, &excl_durable).await;
}

#[tokio::test]
async fn sigterm_closes_clients_with_320_connection_forced_and_exits_0() {
    let Some(mut broker) = Broker::start_owned("durability::sigterm").await else {
        return;
    };
    let mut raw = RawConn::open(&broker.amqp_addr()).await;
    raw.open_channel(1).await;
    let lapin_conn = connect(&broker.amqp_url()).await;
    let lapin_ch = lapin_conn.create_channel().await.unwrap();

    // Terminate concurrently with reading: the broker may wait for close-ok.
    let reader = tokio::spawn(async move {
        let close = raw.expect_connection_close_no_eof().await;
        raw.expect_eof().await;
        close
    });
    let status = broker.terminate().await;
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{}",
        broker.stderr()
    );
    let close = tokio::time::timeout(STEP, reader)
        .await
        .expect("no connection.close")
        .unwrap();
    assert_eq!(close.code, 320);
    assert_eq!(
        close.text,
        "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
    );
    assert_eq!((close.class_id, close.method_id), (0, 0));
    // lapin sees the connection go away.
    let after = tokio::time::timeout(STEP, lapin_ch.basic_qos(1, BasicQosOptions::default()))
        .await
        .expect("lapin hung on a closed connection");
    assert!(after.is_err());
    assert!(!lapin_conn.status().connected());

    // And the broker comes back on the same data dir.
    broker.start_again().await;
    let (_c, ch) = connect_channel(&broker.amqp_url()).await;
    declare_queue(&ch, "after-sigterm").await;
}

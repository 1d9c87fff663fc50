//! Connection handshake (server properties, capabilities, tune) and heartbeats,
//! observed on the wire. Broker-agnostic: scripts/lapin-oracle runs it against
//! RabbitMQ 3.10 in CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::raw::{lookup, Args, Event, RawConn, Value, FRAME_HEARTBEAT, PROTOCOL_HEADER};
use common::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn handshake_advertises_rabbitmq_compatible_start_and_tune() {
    let broker = Broker::start().await;
    let mut c = RawConn::tcp(&broker.amqp_addr()).await;
    c.send_bytes(PROTOCOL_HEADER).await;
    let start = c.expect_method(0, 10, 10).await;
    let mut a = start.args();
    assert_eq!((a.u8(), a.u8()), (0, 9), "version-major/minor");
    let props = a.table();
    let mechanisms = String::from_utf8(a.longstr()).unwrap();
    let locales = String::from_utf8(a.longstr()).unwrap();
    assert!(
        mechanisms.split(' ').any(|m| m == "PLAIN"),
        "mechanisms: {mechanisms}"
    );
    assert!(
        locales.split(' ').any(|l| l == "en_US"),
        "locales: {locales}"
    );
    let Some(Value::Table(caps)) = lookup(&props, "capabilities") else {
        panic!("server-properties without a capabilities table: {props:?}");
    };
    // Capabilities clients (lapin, pika, the Java client) look for.
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
        "consumer_priorities",
    ] {
        assert_eq!(
            lookup(caps, cap),
            Some(&Value::Bool(true)),
            "capability {cap}: {caps:?}"
        );
    }
    for key in ["product", "version", "platform"] {
        assert!(
            matches!(lookup(&props, key), Some(Value::Str(_))),
            "server-property {key} (long string) missing: {props:?}"
        );
    }

    c.send_method(
        0,
        10,
        11,
        Args::new()
            .empty_table()
            .shortstr("PLAIN")
            .longstr(b"\0guest\0guest")
            .shortstr("en_US"),
    )
    .await;
    let tune = c.expect_method(0, 10, 30).await;
    let mut a = tune.args();
    // RabbitMQ's defaults: channel_max 2047, frame_max 131072, heartbeat 60.
    assert_eq!(a.u16(), 2047, "channel-max");
    assert_eq!(a.u32(), 131072, "frame-max");
    assert_eq!(a.u16(), 60, "heartbeat");
}

#[tokio::test]
async fn server_sends_heartbeats_at_the_negotiated_interval() {
    let broker = Broker::start().await;
    let mut c = RawConn::open_with_heartbeat(&broker.amqp_addr(), 1).await;
    let started = Instant::now();
    let mut beats = 0;
    while beats < 2 {
        // Keep our side alive too.
        c.send_frame(FRAME_HEARTBEAT, 0, b"").await;
        match c.next_event(Duration::from_millis(1500)).await {
            Event::Frame(f) if f.kind == FRAME_HEARTBEAT => {
                assert_eq!(f.channel, 0, "heartbeats travel on channel 0");
                assert!(f.payload.is_empty());
                beats += 1;
            }
            Event::Frame(f) => panic!("unexpected frame {f:?}"),
            Event::Eof => panic!("connection closed although we sent heartbeats"),
            Event::Timeout => panic!("no heartbeat within 1.5 s at a 1 s interval"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn silent_client_is_disconnected_after_missed_heartbeats() {
    let broker = Broker::start().await;
    let mut c = RawConn::open_with_heartbeat(&broker.amqp_addr(), 1).await;
    let started = Instant::now();
    // We never send anything: after ~2 missed intervals the broker drops us.
    loop {
        match c.next_event(Duration::from_secs(6)).await {
            Event::Frame(f) if f.kind == FRAME_HEARTBEAT => continue,
            Event::Frame(f) => {
                // A connection.close (e.g. 501 / 320) before the socket closes is acceptable.
                assert!(
                    f.is_method(10, 50),
                    "unexpected frame while idle: {:?}",
                    f.method_id()
                );
            }
            Event::Eof => break,
            Event::Timeout => panic!("broker kept a silent connection for 6 s at heartbeat=1"),
        }
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "disconnected too early ({waited:?}): heartbeat timeout is 2 intervals"
    );
}

#[tokio::test]
async fn lapin_connection_close_is_clean() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "clean-close").await;
    ch.close(200, "bye".into()).await.unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    assert!(!conn.status().connected());
}

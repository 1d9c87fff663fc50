//! Connection-level (hard) errors close the whole connection with RabbitMQ's code (530, 503,
//! 403 at open; 504 / 505 / 501 and unknown methods from protocol violations, driven with a
//! raw socket client, `common::raw`), and a client's own close is answered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::raw::{encode_frame, method_payload, Args, Event, RawConn};
use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};

#[tokio::test]
async fn reusing_a_consumer_tag_on_a_channel_is_a_530_connection_error() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let other = conn.create_channel().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = declare_queue(&ch, "dup-tag").await;
    let tag = unique("tag");
    let _c = ch
        .basic_consume(
            q.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let r = ch
        .basic_consume(
            q.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    let err = r.expect_err("duplicate consumer tag");
    assert!(is_hard(&err), "connection-level error expected: {err}");
    assert_eq!(
        amqp_error(&err),
        (
            530,
            format!("NOT_ALLOWED - attempt to reuse consumer tag '{tag}'")
        )
    );
    // The whole connection is gone, including the other channel.
    assert!(other
        .basic_qos(1, BasicQosOptions::default())
        .await
        .is_err());
    assert!(!conn.status().connected());
}

#[tokio::test]
async fn unknown_exchange_type_is_a_503_connection_error() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .exchange_declare(
            unique("weird").as_str().into(),
            ExchangeKind::Custom("x-no-such-type".into()),
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    let err = r.expect_err("unknown exchange type");
    assert!(is_hard(&err), "connection-level error expected: {err}");
    assert_eq!(
        amqp_error(&err),
        (
            503,
            "COMMAND_INVALID - unknown exchange type 'x-no-such-type'".to_string()
        )
    );
}

#[tokio::test]
async fn bad_credentials_and_unknown_vhost_are_refused() {
    let broker = Broker::start().await;
    let url = broker.amqp_url();
    let bad_pw = url.replacen("guest:guest@", "guest:wrong@", 1);
    assert_ne!(bad_pw, url);
    let r = tokio::time::timeout(
        STEP,
        Connection::connect(&bad_pw, lapin::ConnectionProperties::default()),
    )
    .await
    .expect("connect with bad password hung");
    let err = r.expect_err("bad password");
    assert_eq!(
        amqp_error(&err),
        (
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.".to_string()
        )
    );

    let base = url.rsplit_once('/').unwrap().0;
    let no_vhost = format!("{base}/no-such-vhost");
    let r = tokio::time::timeout(
        STEP,
        Connection::connect(&no_vhost, lapin::ConnectionProperties::default()),
    )
    .await
    .expect("connect to a missing vhost hung");
    let err = r.expect_err("missing vhost");
    assert_eq!(
        amqp_error(&err),
        (
            530,
            "NOT_ALLOWED - vhost no-such-vhost not found".to_string()
        )
    );
}

// ---------------------------------------------------------------------------
// Raw protocol violations

fn qos_args() -> Args {
    Args::new().u32(0).u16(1).u8(0)
}

#[tokio::test]
async fn method_on_a_never_opened_channel_is_504() {
    let broker = Broker::start().await;
    let mut c = RawConn::open(&broker.amqp_addr()).await;
    // queue.declare on channel 7 without channel.open
    c.send_method(
        7,
        50,
        10,
        Args::new().u16(0).shortstr("x").u8(0).empty_table(),
    )
    .await;
    let close = c.expect_connection_close().await;
    assert_eq!(close.code, 504);
    assert_eq!(close.text, "CHANNEL_ERROR - expected 'channel.open'");
    assert_eq!((close.class_id, close.method_id), (50, 10));
}

#[tokio::test]
async fn method_on_a_closed_channel_is_504() {
    let broker = Broker::start().await;
    let mut c = RawConn::open(&broker.amqp_addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        20,
        40,
        Args::new().u16(200).shortstr("bye").u16(0).u16(0),
    )
    .await;
    c.expect_method(1, 20, 41).await;
    c.send_method(1, 60, 10, qos_args()).await; // basic.qos on the closed channel
    let close = c.expect_connection_close().await;
    assert_eq!(close.code, 504);
    assert_eq!(close.text, "CHANNEL_ERROR - expected 'channel.open'");
    assert_eq!((close.class_id, close.method_id), (60, 10));
}

#[tokio::test]
async fn second_channel_open_is_504() {
    let broker = Broker::start().await;
    let mut c = RawConn::open(&broker.amqp_addr()).await;
    c.open_channel(1).await;
    c.send_method(1, 20, 10, Args::new().shortstr("")).await;
    let close = c.expect_connection_close().await;
    assert_eq!(close.code, 504);
    assert_eq!(close.text, "CHANNEL_ERROR - second 'channel.open' seen");
    assert_eq!((close.class_id, close.method_id), (20, 10));
}

#[tokio::test]
async fn content_frames_out_of_sequence_are_505_unexpected_frame() {
    let broker = Broker::start().await;
    // A body frame with no publish/header before it.
    let mut c = RawConn::open(&broker.amqp_addr()).await;
    c.open_channel(1).await;
    c.send_frame(3, 1, b"body").await;
    let close = c.expect_connection_close().await;
    assert_eq!(close.code, 505);
    assert_eq!(
        close.text,
        "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
    );

    // A content header with no publish before it.
    let mut c = RawConn::open(&broker.amqp_addr()).await;
    c.open_channel(1).await;
    c.send_frame(2, 1, &Args::new().u16(60).u16(0).u64(4).u16(0).0)
        .await;
    let close = c.expect_connection_close().await;
    assert_eq!(close.code, 505);
    assert_eq!(
        close.text,
        "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
    );

    // basic.publish followed by a method instead of the content header.
    let mut c = RawConn::open(&broker.amqp_addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        60,
        40,
        Args::new().u16(0).shortstr("").shortstr("x").u8(0),
    )
    .await;
    c.send_method(1, 60, 10, qos_args()).await;
    let close = c.expect_connection_close().await;
    assert_eq!(close.code, 505);
    assert_eq!(
        close.text,
        "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead"
    );
    assert_eq!((close.class_id, close.method_id), (60, 40));

    // A heartbeat frame must use channel 0.
    let mut c = RawConn::open(&broker.amqp_addr()).await;
    c.send_frame(8, 1, b"").await;
    let close = c.expect_connection_close().await;
    assert_eq!(close.code, 505);
    assert!(close.text.starts_with("UNEXPECTED_FRAME"), "{}", close.text);
}

#[tokio::test]
async fn malformed_frames_are_501_frame_error() {
    let broker = Broker::start().await;
    // Wrong frame-end octet.
    let mut c = RawConn::open(&broker.amqp_addr()).await;
    c.open_channel(1).await;
    let mut f = encode_frame(1, 1, &method_payload(60, 10, qos_args()));
    *f.last_mut().unwrap() = 0x00;
    c.send_bytes(&f).await;
    let close = c.expect_connection_close_no_eof().await;
    assert_eq!(close.code, 501);
    assert!(close.text.starts_with("FRAME_ERROR - "), "{}", close.text);

    // Unknown frame type.
    let mut c = RawConn::open(&broker.amqp_addr()).await;
    c.open_channel(1).await;
    c.send_frame(9, 1, b"x").await;
    let close = c.expect_connection_close_no_eof().await;
    assert_eq!(close.code, 501);
    assert!(close.text.starts_with("FRAME_ERROR - "), "{}", close.text);

    // A frame larger than the negotiated frame_max.
    let mut c = RawConn::open(&broker.amqp_addr()).await;
    c.open_channel(1).await;
    let big = vec![0u8; c.frame_max as usize + 100];
    c.send_method(
        1,
        60,
        40,
        Args::new().u16(0).shortstr("").shortstr("x").u8(0),
    )
    .await;
    c.send_frame(
        2,
        1,
        &Args::new().u16(60).u16(0).u64(big.len() as u64).u16(0).0,
    )
    .await;
    c.send_frame(3, 1, &big).await;
    let close = c.expect_connection_close_no_eof().await;
    assert_eq!(close.code, 501);
    assert!(close.text.starts_with("FRAME_ERROR - "), "{}", close.text);
}

#[tokio::test]
async fn unknown_method_terminates_the_connection() {
    let broker = Broker::start().await;
    for (class, method) in [(60u16, 999u16), (999, 10)] {
        let mut c = RawConn::open(&broker.amqp_addr()).await;
        c.open_channel(1).await;
        c.send_method(1, class, method, Args::new()).await;
        // RabbitMQ 3.10 drops the socket without a connection.close; a connection.close
        // with a hard error code (503 COMMAND_INVALID / 540 NOT_IMPLEMENTED) is also fine.
        match c.next_event(STEP).await {
            Event::Eof => {}
            Event::Frame(f) => {
                let close = common::raw::parse_close(&f)
                    .unwrap_or_else(|| panic!("expected connection.close, got {f:?}"));
                assert_eq!(f.channel, 0, "must be connection.close, not channel.close");
                assert!(
                    close.code == 503 || close.code == 540,
                    "unexpected close {close:?}"
                );
            }
            Event::Timeout => panic!("{class}.{method}: broker kept the connection open"),
        }
    }
}

#[tokio::test]
async fn frames_after_a_channel_error_are_discarded_until_close_ok_then_channel_reopens() {
    let broker = Broker::start().await;
    let mut c = RawConn::open(&broker.amqp_addr()).await;
    c.open_channel(1).await;
    let missing = unique("raw-missing");
    // passive queue.declare of a missing queue
    c.send_method(
        1,
        50,
        10,
        Args::new().u16(0).shortstr(&missing).u8(1).empty_table(),
    )
    .await;
    let f = c.expect_method(1, 20, 40).await;
    let close = common::raw::parse_close(&f).unwrap();
    assert_eq!(close.code, 404);
    assert_eq!(
        close.text,
        format!("NOT_FOUND - no queue '{missing}' in vhost '/'")
    );
    assert_eq!((close.class_id, close.method_id), (50, 10));
    // The client has not yet answered close-ok: these are silently dropped.
    c.send_method(1, 60, 10, qos_args()).await;
    c.publish(1, "", &missing, b"dropped", 1).await;
    c.send_method(1, 20, 41, Args::new()).await; // channel.close-ok
                                                 // Channel 1 can be opened again and works.
    c.open_channel(1).await;
    c.send_method(1, 60, 10, qos_args()).await;
    c.expect_method(1, 60, 11).await;
}

#[tokio::test]
async fn bad_protocol_header_gets_the_supported_header_back() {
    let broker = Broker::start().await;
    for header in [
        &b"AMQP\x00\x00\x09\x00"[..],
        &b"AMQP\x01\x01\x00\x0a"[..],
        &b"GET / HTTP/1.1\r\n\r\n"[..],
    ] {
        let mut c = RawConn::tcp(&broker.amqp_addr()).await;
        c.send_bytes(header).await;
        let (bytes, closed) = c.read_raw(STEP).await;
        assert_eq!(bytes, b"AMQP\x00\x00\x09\x01", "reply to {header:?}");
        assert!(closed, "connection must be closed after a bad header");
    }
}

#[tokio::test]
async fn connection_close_from_client_is_answered_with_close_ok() {
    let broker = Broker::start().await;
    let mut c = RawConn::open(&broker.amqp_addr()).await;
    c.open_channel(1).await;
    c.send_method(
        0,
        10,
        50,
        Args::new().u16(200).shortstr("Goodbye").u16(0).u16(0),
    )
    .await;
    c.expect_method(0, 10, 51).await;
    // After close-ok the client closes the socket (the broker may close it first).
}

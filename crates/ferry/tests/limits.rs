//! Configured limits are enforced with the protocol's own answer (before
//! buffering where the limit is a size) and disturb nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;

#[tokio::test]
async fn message_over_max_size_is_a_406_channel_error_and_the_connection_lives_on() {
    let Some(broker) =
        Broker::start_with_env("max_message_size", &[("FERRY_MAX_MESSAGE_SIZE", "1024")]).await
    else {
        return;
    };
    let conn = connect(&broker.amqp_url()).await;
    let ok = confirm_channel(&conn).await;
    let q = declare_queue(&ok, "limits").await;

    // Exactly at the limit is accepted.
    let at_limit = vec![b'a'; 1024];
    publish(&ok, "", &q, &at_limit).await;
    assert_eq!(message_count(&ok, &q).await, 1);

    // One byte more closes that channel with 406, after the header alone.
    let bad = conn.create_channel().await.unwrap();
    let mut watch = watch_channel(&bad).await;
    let _ = bad
        .basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            &[b'b'; 1025],
            BasicProperties::default(),
        )
        .await;
    let (code, text) = expect_channel_error(&mut watch).await;
    assert_eq!(code, 406);
    assert_eq!(
        text,
        "PRECONDITION_FAILED - message size 1025 is larger than configured max size 1024"
    );

    // The connection and its other channel are unaffected; nothing was queued.
    assert_eq!(message_count(&ok, &q).await, 1);
    publish(&ok, "", &q, b"after").await;
    assert_eq!(message_count(&ok, &q).await, 2);
}

#[tokio::test]
async fn unacked_delivery_past_the_consumer_timeout_closes_the_channel_with_406() {
    let Some(broker) =
        Broker::start_with_env("consumer_timeout", &[("FERRY_CONSUMER_TIMEOUT_MS", "1000")]).await
    else {
        return;
    };
    let conn = connect(&broker.amqp_url()).await;
    let pch = confirm_channel(&conn).await;
    let q = declare_queue(&pch, "timeout").await;
    publish(&pch, "", &q, b"never acked").await;
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = consume(&ch, &q, lapin::options::BasicConsumeOptions::default()).await;
    let d = recv_one(&mut consumer, STEP).await;
    assert_eq!(body_str(&d), "never acked");
    // No ack: within a few check periods the broker closes the channel.
    match tokio::time::timeout(STEP, futures_lite::StreamExt::next(&mut consumer)).await {
        Ok(Some(Err(e))) => {
            let (code, text) = amqp_error(&e);
            assert_eq!(code, 406);
            assert_eq!(
                text,
                "PRECONDITION_FAILED - delivery acknowledgement on channel 2 timed out. Timeout value used: 1000 ms. This timeout value can be configured, see consumers doc guide to learn more"
            );
        }
        other => panic!("expected the channel to be closed, got {other:?}"),
    }
    // The message went back to the queue; the connection still works.
    assert_eq!(message_count(&pch, &q).await, 1);
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_with_530() {
    let Some(broker) =
        Broker::start_with_env("max_connections", &[("FERRY_MAX_CONNECTIONS", "2")]).await
    else {
        return;
    };
    let a = connect(&broker.amqp_url()).await;
    let b = connect(&broker.amqp_url()).await;
    let err =
        lapin::Connection::connect(&broker.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .expect_err("third connection must be refused");
    let (code, text) = amqp_error(&err);
    assert_eq!(code, 530, "{err}");
    assert_eq!(
        text,
        "NOT_ALLOWED - connection refused: node connection limit (2) is reached"
    );
    // Closing one makes room again (once the broker has finished with it:
    // its count drops when the connection's task ends, a moment after the
    // close-ok; until then a try is refused with the same 530).
    a.close(200, "bye".into()).await.unwrap();
    drop(b);
    let deadline = std::time::Instant::now() + STEP;
    let c = loop {
        match lapin::Connection::connect(&broker.amqp_url(), lapin::ConnectionProperties::default())
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert_eq!(amqp_error(&e).0, 530, "{e}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "no room after a close: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    assert!(c.status().connected());
}

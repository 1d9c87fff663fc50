//! Configured limits are enforced before buffering, with the protocol's own
//! answer, and disturb nothing else. Runs in its own process because it
//! configures the broker through the environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;

#[tokio::test]
async fn message_over_max_size_is_a_406_channel_error_and_the_connection_lives_on() {
    // Before any broker starts; this test binary holds only this test.
    std::env::set_var("FERRY_MAX_MESSAGE_SIZE", "1024");
    let Some(broker) = Broker::start_owned("limits").await else {
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

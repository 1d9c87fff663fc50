//! A vhost's `max-connections` holds under concurrent connection.opens:
//! slots are reserved at connection.open, not counted after the handshake,
//! so many clients opening at once cannot all pass; slots come back when
//! connections close (and refused ones take none).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Broker, STEP};
use lapin::{Connection, ConnectionProperties};
use std::time::Duration;

const LIMIT: usize = 3;
const CLIENTS: usize = 40;

/// PUT `body` to the management API as guest; the status.
fn put(http: &str, path: &str, body: &str) -> u16 {
    use base64::Engine;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let token = base64::engine::general_purpose::STANDARD.encode("guest:guest");
    agent
        .put(&format!("http://{http}{path}"))
        .header("Authorization", &format!("Basic {token}"))
        .header("content-type", "application/json")
        .send(body.as_bytes())
        .unwrap()
        .status()
        .as_u16()
}

fn set_vhost_limit(http: &str) {
    let limit = format!("{{\"value\": {LIMIT}}}");
    assert_eq!(
        put(http, "/api/vhost-limits/%2F/max-connections", &limit),
        204
    );
}

/// Opens `n` connections at once; the ones that succeeded.
async fn open_many(url: &str, n: usize) -> (Vec<Connection>, Vec<String>) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move {
                tokio::time::timeout(
                    STEP,
                    Connection::connect(&url, ConnectionProperties::default()),
                )
                .await
            })
        })
        .collect();
    let (mut ok, mut refused) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(Ok(c)) => ok.push(c),
            Ok(Err(e)) => refused.push(e.to_string()),
            Err(_) => panic!("a connection attempt timed out"),
        }
    }
    (ok, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_against_max_connections_let_exactly_the_limit_through() {
    let Some(broker) = Broker::start_owned("concurrent_max_connections").await else {
        return;
    };
    set_vhost_limit(&broker.endpoint("http").expect("http endpoint"));
    let url = broker.amqp_url();
    for round in 0..3 {
        let (ok, refused) = open_many(&url, CLIENTS).await;
        assert_eq!(ok.len(), LIMIT, "round {round}: refusals {refused:?}");
        assert!(
            refused
                .iter()
                .all(|e| e.contains("connection limit (3) is reached")),
            "{refused:?}"
        );
        // Closed connections give their slots back for the next round.
        for c in ok {
            c.close(200, "bye".into()).await.unwrap();
        }
    }
}

#[tokio::test]
async fn an_open_refused_after_the_limit_check_gives_its_slot_back() {
    let Some(broker) = Broker::start_owned("refused_open_gives_slot_back").await else {
        return;
    };
    let http = broker.endpoint("http").expect("http endpoint");
    set_vhost_limit(&http);
    // A user without permissions on '/': its opens pass the limit check,
    // then are refused (vhost access).
    let user = r#"{"password": "np-pass", "tags": ""}"#;
    assert_eq!(put(&http, "/api/users/noperm", user), 201);
    let url = broker.amqp_url().replace("guest:guest", "noperm:np-pass");
    let (ok, refused) = open_many(&url, LIMIT * 3).await;
    assert!(ok.is_empty());
    assert!(
        refused
            .iter()
            .all(|e| e.contains("access to vhost '/' refused")),
        "{refused:?}"
    );
    let (ok, refused) = open_many(&broker.amqp_url(), LIMIT).await;
    assert_eq!(ok.len(), LIMIT, "{refused:?}");
}

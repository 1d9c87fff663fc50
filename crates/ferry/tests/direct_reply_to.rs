//! Direct reply-to (`amq.rabbitmq.reply-to`) with lapin: many concurrent RPC callers, and
//! replies to reply consumers that are gone (channel closed by the client or by an error, a
//! channel number reused). Broker-agnostic (scripts/lapin-oracle runs it against RabbitMQ
//! 3.10 in CI) except the last test, which reads Ferry's metrics and skips there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use std::collections::BTreeSet;
use std::time::Duration;

const RT: &str = "amq.rabbitmq.reply-to";
const WAIT: Duration = Duration::from_secs(20);

/// A reply consumer on a fresh channel of `conn` (in confirm mode: a confirmed request is
/// in its queue).
async fn reply_consumer(conn: &Connection) -> (Channel, lapin::Consumer) {
    let ch = confirm_channel(conn).await;
    let consumer = consume(
        &ch,
        RT,
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    (ch, consumer)
}

/// Sends a request asking for a direct reply to `queue` and returns the rewritten
/// `reply_to` the server side sees (read back with basic.get on `server`).
async fn reply_name(client: &Channel, server: &Channel, queue: &str) -> String {
    publish_props(
        client,
        "",
        queue,
        b"req",
        BasicProperties::default().with_reply_to(RT.into()),
    )
    .await;
    settle(client).await;
    let m = server
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the confirmed request");
    let name = m.delivery.properties.reply_to().clone().unwrap();
    name.as_str().to_string()
}

/// Publishes a mandatory reply on a confirm channel; true if it came back as 312 NO_ROUTE.
/// RabbitMQ returns every mandatory direct reply, delivered or not, so this tells nothing
/// about delivery; callers check the reply consumer for that.
async fn mandatory_reply(server: &Channel, name: &str, body: &[u8]) -> bool {
    let confirm = server
        .basic_publish(
            "".into(),
            name.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "{confirm:?}");
    match confirm.take_message() {
        Some(ret) => {
            assert_eq!((ret.reply_code, ret.reply_text.as_str()), (312, "NO_ROUTE"));
            true
        }
        None => false,
    }
}

#[tokio::test]
async fn many_concurrent_rpc_callers_each_get_their_own_replies() {
    const CALLERS: usize = 16;
    const CALLS: usize = 25;
    let broker = Broker::start().await;
    let url = broker.amqp_url();
    let server_conn = connect(&url).await;
    let sch = server_conn.create_channel().await.unwrap();
    let rpc = declare_queue(&sch, "rpc").await;
    let mut requests = consume(&sch, &rpc, BasicConsumeOptions::default()).await;
    let server = tokio::spawn(async move {
        let mut served = 0;
        while served < CALLERS * CALLS {
            let d = requests.next().await.unwrap().unwrap();
            let p = &d.properties;
            let to = p.reply_to().clone().unwrap();
            assert!(to.as_str().starts_with("amq.rabbitmq.reply-to."), "{to}");
            let mut reply = d.data.clone();
            reply.extend_from_slice(b"!");
            publish_props(
                &sch,
                "",
                to.as_str(),
                &reply,
                BasicProperties::default().with_correlation_id(p.correlation_id().clone().unwrap()),
            )
            .await;
            d.ack(BasicAckOptions::default()).await.unwrap();
            served += 1;
        }
    });
    // Callers on their own connections and on shared ones (one reply consumer per channel).
    let shared = std::sync::Arc::new(connect(&url).await);
    let mut tasks = Vec::new();
    for i in 0..CALLERS {
        let conn = if i % 2 == 0 {
            None
        } else {
            Some(shared.clone())
        };
        let (url, rpc) = (url.clone(), rpc.clone());
        tasks.push(tokio::spawn(async move {
            let conn = match conn {
                Some(c) => c,
                None => std::sync::Arc::new(connect(&url).await),
            };
            let (ch, mut replies) = reply_consumer(&conn).await;
            let mut want = BTreeSet::new();
            for j in 0..CALLS {
                let corr = format!("caller-{i}-call-{j}");
                publish_props(
                    &ch,
                    "",
                    &rpc,
                    corr.as_bytes(),
                    BasicProperties::default()
                        .with_reply_to(RT.into())
                        .with_correlation_id(corr.as_str().into()),
                )
                .await;
                want.insert(corr);
            }
            let got: BTreeSet<String> = recv_n(&mut replies, CALLS, WAIT)
                .await
                .iter()
                .map(|d| {
                    let corr = d.properties.correlation_id().clone().unwrap();
                    assert_eq!(body_str(d), format!("{corr}!"));
                    assert!(!d.redelivered);
                    corr.as_str().to_string()
                })
                .collect();
            assert_eq!(got, want, "caller {i}");
            assert_no_delivery(&mut replies, Duration::from_millis(100)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn replies_to_a_closed_reply_channel_go_nowhere() {
    let broker = Broker::start().await;
    let url = broker.amqp_url();
    let server_conn = connect(&url).await;
    let sch = confirm_channel(&server_conn).await;
    let rpc = declare_queue(&sch, "rpc-closed").await;
    let client = connect(&url).await;

    // Closed by the client.
    let (ch, mut replies) = reply_consumer(&client).await;
    let name = reply_name(&ch, &sch, &rpc).await;
    assert!(mandatory_reply(&sch, &name, b"while open").await);
    assert_eq!(body_str(&recv_one(&mut replies, WAIT).await), "while open");
    ch.close(200, "bye".into()).await.unwrap();
    assert!(mandatory_reply(&sch, &name, b"after close").await);

    // Closed by a channel error.
    let (ch, _replies) = reply_consumer(&client).await;
    let name2 = reply_name(&ch, &sch, &rpc).await;
    assert_ne!(name, name2);
    let err = ch
        .basic_get(
            unique("missing").as_str().into(),
            BasicGetOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(amqp_error(&err).0, 404);
    assert!(mandatory_reply(&sch, &name2, b"after error").await);

    // Neither name is a queue any more.
    for n in [&name, &name2] {
        let probe = server_conn.create_channel().await.unwrap();
        let err = probe
            .queue_declare(
                n.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            amqp_error(&err),
            (404, format!("NOT_FOUND - no queue '{n}' in vhost '/'"))
        );
    }
}

#[tokio::test]
async fn a_new_reply_consumer_does_not_receive_replies_for_an_old_name() {
    let broker = Broker::start().await;
    let url = broker.amqp_url();
    let server_conn = connect(&url).await;
    let sch = confirm_channel(&server_conn).await;
    let rpc = declare_queue(&sch, "rpc-reuse").await;
    let client = connect(&url).await;

    let (ch, _old) = reply_consumer(&client).await;
    let old_name = reply_name(&ch, &sch, &rpc).await;
    let number = ch.id();
    ch.close(200, "bye".into()).await.unwrap();
    // The same connection, very likely the same channel number again.
    let (ch, mut replies) = reply_consumer(&client).await;
    println!("channel {number} closed, new channel {}", ch.id());
    let new_name = reply_name(&ch, &sch, &rpc).await;
    assert_ne!(old_name, new_name);

    mandatory_reply(&sch, &old_name, b"for the old one").await;
    mandatory_reply(&sch, &new_name, b"for the new one").await;
    let d = recv_one(&mut replies, WAIT).await;
    assert_eq!(body_str(&d), "for the new one");
    assert_eq!(d.routing_key.as_str(), new_name);
    assert_no_delivery(&mut replies, Duration::from_millis(200)).await;
}

/// Whether `name` answers a passive queue.declare (a fresh channel each time: a 404 closes it).
async fn declares(conn: &Connection, name: &str) -> bool {
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    match r {
        Ok(ok) => {
            assert_eq!((ok.message_count(), ok.consumer_count()), (0, 1));
            ch.close(200, "ok".into()).await.unwrap();
            true
        }
        Err(e) => {
            assert_eq!(amqp_error(&e).0, 404, "{e}");
            false
        }
    }
}

/// A raw client with a reply consumer, which reads nothing unless told:
/// it and its reply name (from a request it sent to `rpc`).
async fn raw_reply_client(
    broker: &Broker,
    sch: &Channel,
    rpc: &str,
) -> (common::raw::RawConn, String) {
    use common::raw::{Args, RawConn};
    // A raw client: reply consumer, confirm mode, one request with reply_to.
    let mut raw = RawConn::open(&broker.amqp_addr()).await;
    raw.open_channel(1).await;
    let no_ack = 2;
    let consume = Args::new().u16(0).shortstr(RT).shortstr("").u8(no_ack);
    raw.send_method(1, 60, 20, consume.empty_table()).await;
    raw.expect_method(1, 60, 21).await;
    raw.send_method(1, 85, 10, Args::new().u8(0)).await;
    raw.expect_method(1, 85, 11).await;
    let publish = Args::new().u16(0).shortstr("").shortstr(rpc).u8(0);
    raw.send_method(1, 60, 40, publish).await;
    let reply_to_flag = 0x0200;
    let header = Args::new()
        .u16(60)
        .u16(0)
        .u64(3)
        .u16(reply_to_flag)
        .shortstr(RT);
    raw.send_frame(2, 1, &header.0).await;
    raw.send_frame(3, 1, b"req").await;
    raw.expect_method(1, 60, 80).await;
    let m = sch
        .basic_get(rpc.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the confirmed request");
    let name = m.delivery.properties.reply_to().clone().unwrap();
    let name = name.as_str().to_string();
    (raw, name)
}

#[tokio::test]
async fn a_dropped_connection_takes_its_reply_name_with_it() {
    let broker = Broker::start().await;
    let server_conn = connect(&broker.amqp_url()).await;
    let sch = confirm_channel(&server_conn).await;
    let rpc = declare_queue(&sch, "rpc-drop").await;

    let (raw, name) = raw_reply_client(&broker, &sch, &rpc).await;
    assert!(declares(&server_conn, &name).await);

    // The socket goes away without connection.close.
    drop(raw);
    let deadline = tokio::time::Instant::now() + WAIT;
    while declares(&server_conn, &name).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} still declares {WAIT:?} after the connection dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(mandatory_reply(&sch, &name, b"to nobody").await);
}

/// A sample of the broker's Prometheus exposition.
fn metric(addr: &str, name: &str) -> u64 {
    let text = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn replies_to_a_consumer_that_does_not_read_are_dropped_not_held() {
    let Some(broker) = Broker::start_ferry_only(
        "replies_not_read",
        "reads Ferry's /metrics (ferry_memory_used_bytes, ferry_direct_replies_dropped_total)",
    )
    .await
    else {
        return;
    };
    let metrics = broker.endpoint("metrics").expect("metrics=");
    let server_conn = connect(&broker.amqp_url()).await;
    let sch = confirm_channel(&server_conn).await;
    let rpc = declare_queue(&sch, "rpc-slow").await;
    // The raw client never reads its socket from here on.
    let (_raw, name) = raw_reply_client(&broker, &sch, &rpc).await;
    let before = metric(&metrics, "ferry_memory_used_bytes");
    // 64 MiB of replies, far over the 4 MiB socket buffer limit.
    let body = vec![b'r'; 256 * 1024];
    for _ in 0..256 {
        sch.basic_publish(
            "".into(),
            name.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let after = metric(&metrics, "ferry_memory_used_bytes");
    let grown = after.saturating_sub(before);
    assert!(
        grown < 16 << 20,
        "memory grew by {grown} bytes for replies nobody reads"
    );
    assert!(metric(&metrics, "ferry_direct_replies_dropped_total") > 0);
    // The replier's connection works, and the reply consumer is still there.
    assert!(declares(&server_conn, &name).await);
}

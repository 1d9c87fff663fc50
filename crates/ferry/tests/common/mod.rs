//! Shared black-box test harness for the `ferry` binary.
//!
//! * [`Broker::start`] spawns the real binary (`ferry server --data-dir DIR --amqp-listen
//!   127.0.0.1:0`) on a fresh temporary data dir and waits for the single
//!   `FERRY_READY amqp=127.0.0.1:PORT` line on stdout.
//! * If `FERRY_TEST_AMQP_URL` is set (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`), no
//!   process is spawned: the handle points at that external broker (a RabbitMQ used as the
//!   reference implementation). Tests that need to restart or kill the broker call
//!   [`Broker::start_owned`], which returns `None` (after printing why) in that mode.
//! * `FERRY_TEST_BIN` overrides the binary path (default: `CARGO_BIN_EXE_ferry`), e.g. to run
//!   the restart/crash scenarios against a wrapper script around another broker.
//! * `FERRY_TEST_ECHO_STDERR=1` copies the broker's stderr to the test's stderr live.
//! * `FERRY_TEST_TIMEOUT_SECS` (default 60): a watchdog SIGKILLs a spawned broker that is
//!   still running after that long, so a hung call fails its test instead of the suite.
//! * [`ctl`] runs `ferry ctl` as a subprocess and finds the management API it talks to.
//! * [`Http`] talks to a spawned broker's management API and metrics endpoint.
//! * When a test panics, the broker's stderr (last 64 KiB) is printed with its output.
//!
//! Each test binary compiles this module separately and uses a different subset of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

mod broker;
pub mod cluster;
pub mod ctl;
pub mod http;
pub mod pki;
mod process;
pub mod raw;

// Each test binary uses a different subset of these.
#[allow(unused_imports)]
pub use broker::{external_url, Broker, READY_TIMEOUT, SHUTDOWN_TIMEOUT};
#[allow(unused_imports)]
pub use http::Http;
#[allow(unused_imports)]
pub use process::test_budget;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::protocol::AMQPErrorKind;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, Consumer, ErrorKind};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default bound for "this should happen promptly" waits.
pub const STEP: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// lapin helpers

/// A field table (x-arguments, headers) from pairs.
pub fn table(items: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in items {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// A long-string field value.
pub fn s(x: &str) -> AMQPValue {
    AMQPValue::LongString(x.into())
}

/// One header of a delivery, if it has it.
pub fn header(d: &Delivery, key: &str) -> Option<AMQPValue> {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(key).cloned())
}

/// Declares durable queue `q` with these arguments.
pub async fn declare_durable(ch: &Channel, q: &str, args: FieldTable) {
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("queue.declare");
}

/// Connect with lapin (tokio), failing with a clear message after a deadline.
pub async fn connect(url: &str) -> Connection {
    match tokio::time::timeout(
        STEP,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("cannot connect to {url}: {e}"),
        Err(_) => panic!("connecting to {url} timed out"),
    }
}

/// A connection plus one channel.
pub async fn connect_channel(url: &str) -> (Connection, Channel) {
    let conn = connect(url).await;
    let ch = conn.create_channel().await.expect("create channel");
    (conn, ch)
}

/// A name unique across test processes and runs (safe on a shared external broker).
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("ferry-test.{prefix}.{}.{nanos:x}.{n}", std::process::id())
}

/// Declare a plain (non-durable, non-exclusive) queue with a unique name.
pub async fn declare_queue(ch: &Channel, prefix: &str) -> String {
    let name = unique(prefix);
    ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("queue.declare");
    name
}

/// Ready message count of a queue (passive declare).
/// An exclusive queue the server names (`amq.gen-…`).
pub async fn server_named_queue(ch: &Channel) -> lapin::Queue {
    ch.queue_declare(
        "".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
}

pub async fn message_count(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("passive queue.declare")
    .message_count()
}

pub async fn consume(ch: &Channel, queue: &str, options: BasicConsumeOptions) -> Consumer {
    ch.basic_consume(queue.into(), "".into(), options, FieldTable::default())
        .await
        .expect("basic.consume")
}

/// Receive exactly `n` deliveries within `timeout` (panics with the count so far otherwise).
pub async fn recv_n(consumer: &mut Consumer, n: usize, timeout: Duration) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(Ok(d))) => out.push(d),
            Ok(Some(Err(e))) => panic!("consumer error after {} of {n} deliveries: {e}", out.len()),
            Ok(None) => panic!("consumer ended after {} of {n} deliveries", out.len()),
            Err(_) => panic!(
                "timed out after {timeout:?} with {} of {n} deliveries",
                out.len()
            ),
        }
    }
    out
}

/// Receive one delivery within `timeout`.
pub async fn recv_one(consumer: &mut Consumer, timeout: Duration) -> Delivery {
    recv_n(consumer, 1, timeout).await.pop().unwrap()
}

/// Assert that nothing is delivered for `quiet` (a bounded negative check).
pub async fn assert_no_delivery(consumer: &mut Consumer, quiet: Duration) {
    if let Ok(item) = tokio::time::timeout(quiet, consumer.next()).await {
        match item {
            Some(Ok(d)) => panic!(
                "unexpected delivery (tag {}, body {:?})",
                d.delivery_tag,
                String::from_utf8_lossy(&d.data)
            ),
            Some(Err(e)) => panic!("unexpected consumer error: {e}"),
            None => panic!("consumer unexpectedly ended"),
        }
    }
}

/// Wait (bounded) for the consumer stream to end, skipping nothing: any delivery is an error.
pub async fn expect_consumer_end(consumer: &mut Consumer, timeout: Duration) {
    match tokio::time::timeout(timeout, consumer.next()).await {
        Ok(None) => {}
        Ok(Some(Ok(d))) => panic!("expected consumer end, got delivery {}", d.delivery_tag),
        Ok(Some(Err(e))) => panic!("expected a clean consumer end, got error {e}"),
        Err(_) => panic!("consumer did not end within {timeout:?}"),
    }
}

/// The (reply code, reply text) of an AMQP error returned by lapin; panics otherwise.
pub fn amqp_error(err: &lapin::Error) -> (u16, String) {
    match err.kind() {
        ErrorKind::ProtocolError(e) => (e.get_id(), e.get_message().to_string()),
        other => panic!("expected an AMQP protocol error, got {other:?} ({err})"),
    }
}

/// Whether the AMQP error is connection-level (hard).
pub fn is_hard(err: &lapin::Error) -> bool {
    match err.kind() {
        ErrorKind::ProtocolError(e) => matches!(e.kind(), AMQPErrorKind::Hard(_)),
        _ => false,
    }
}

/// Unwrap an expected AMQP error from a lapin result and return (code, text).
pub fn expect_amqp_err<T: std::fmt::Debug>(res: lapin::Result<T>, what: &str) -> (u16, String) {
    match res {
        Ok(v) => panic!("{what}: expected an AMQP error, got Ok({v:?})"),
        Err(e) => amqp_error(&e),
    }
}

/// Deterministic pseudo-random bytes (xorshift), for large bodies.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn body_str(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

pub fn bodies(ds: &[Delivery]) -> Vec<String> {
    ds.iter().map(body_str).collect()
}

// ---------------------------------------------------------------------------
// publishing helpers
//
// NOTE (RabbitMQ behaviour the tests must tolerate): a publish is routed to the queue
// asynchronously, and RabbitMQ answers queue.declare(passive)/basic.get/queue.purge from the
// queue process with *priority* over pending deliveries, so a count taken right after a
// plain publish on the same channel may not include it yet. Tests that count therefore
// publish on a confirm-mode channel and wait for the confirms first (`settle`).

/// A new channel in confirm mode.
pub async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.expect("create channel");
    ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    ch
}

/// Publish with default properties (does not wait for a confirm).
pub async fn publish(ch: &Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    publish_props(
        ch,
        exchange,
        routing_key,
        body,
        lapin::BasicProperties::default(),
    )
    .await;
}

pub async fn publish_props(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: lapin::BasicProperties,
) {
    let _confirm = ch
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            lapin::options::BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .expect("basic.publish");
}

/// Wait for every outstanding confirm on a confirm-mode channel; panics on a nack or return.
pub async fn settle(ch: &Channel) {
    // lapin's wait_for_confirms returns at once on a channel without confirms, which
    // would let a test read the broker's state before the publishes reached it.
    assert!(
        ch.status().confirm(),
        "settle needs a channel in confirm mode (confirm_select first)"
    );
    let returned = tokio::time::timeout(Duration::from_secs(30), ch.wait_for_confirms())
        .await
        .expect("confirms did not arrive in time")
        .expect("wait_for_confirms");
    assert!(
        returned.is_empty(),
        "unexpected returned messages: {returned:?}"
    );
}

/// Publish `bodies` to a queue via the default exchange on a confirm channel and settle.
pub async fn publish_settled(ch: &Channel, queue: &str, bodies: &[&str]) {
    for b in bodies {
        publish(ch, "", queue, b.as_bytes()).await;
    }
    settle(ch).await;
}

/// basic.get of one message, acked; its body (panics if the queue is empty).
pub async fn get_acked(ch: &Channel, queue: &str) -> String {
    let m = ch
        .basic_get(queue.into(), Default::default())
        .await
        .expect("basic.get")
        .expect("a message");
    m.delivery
        .ack(lapin::options::BasicAckOptions::default())
        .await
        .expect("ack");
    body_str(&m.delivery)
}

/// Drain a queue with basic.get (no-ack) and return the bodies in order.
pub async fn drain_get(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get")
    {
        out.push(body_str(&m.delivery));
        assert!(out.len() < 1_000_000, "queue never drains");
    }
    out
}

/// Declare an exchange (non-durable unless `durable`).
pub async fn declare_exchange(
    ch: &Channel,
    name: &str,
    kind: lapin::ExchangeKind,
    args: FieldTable,
) {
    ch.exchange_declare(
        name.into(),
        kind,
        lapin::options::ExchangeDeclareOptions::default(),
        args,
    )
    .await
    .expect("exchange.declare");
}

pub async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        lapin::options::QueueBindOptions::default(),
        args,
    )
    .await
    .expect("queue.bind");
}

/// Watch a channel for a server-initiated channel.close.
///
/// lapin quirk: after an asynchronous channel error (e.g. a bad ack or a publish to a missing
/// exchange) the *next* RPC on that channel may fail client-side with
/// `InvalidChannelState(Closing)` instead of the broker's error, depending on timing. The
/// reliable way to read the broker's code/text is a consumer on the channel: lapin hands the
/// close error to every consumer of the channel.
pub async fn watch_channel(ch: &Channel) -> Consumer {
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("watch queue.declare");
    consume(
        ch,
        q.name().as_str(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await
}

/// The (code, text) of the channel.close observed by a `watch_channel` consumer.
pub async fn expect_channel_error(watch: &mut Consumer) -> (u16, String) {
    match tokio::time::timeout(STEP, watch.next()).await {
        Ok(Some(Err(e))) => amqp_error(&e),
        Ok(Some(Ok(d))) => panic!("expected a channel error, got delivery {}", d.delivery_tag),
        Ok(None) => panic!("expected a channel error, the consumer just ended"),
        Err(_) => panic!("no channel error within {STEP:?}"),
    }
}

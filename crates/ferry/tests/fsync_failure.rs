//! A failed fsync, seen from an AMQP publisher.
//!
//! The broker runs in process over `SimIo` (the only way to make an fsync
//! fail on demand) with the real `ferry-server` front end, driven by lapin
//! over TCP. After the failure the queue's log is poisoned: the publish the
//! fsync covered is nacked, later publishes to that queue are nacked, none
//! is ever confirmed, the connection stays usable, other queues keep
//! confirming, and an ERROR-level alarm naming the queue is logged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_broker::broker::BrokerConfig;
use ferry_broker::Broker;
use ferry_log::SimIo;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Every event of the process as (level, fields): the alarm is logged on a
/// sync thread, so the capture must be global (this file has one test).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        eprintln!("[{}] {}", event.metadata().level(), f.0);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), f.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c = Capture::default();
        tracing::subscriber::set_global_default(c.clone()).expect("one global subscriber");
        c
    })
}

const STEP: Duration = Duration::from_secs(10);

async fn declare(ch: &Channel, q: &str) {
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

async fn publish(ch: &Channel, q: &str, body: &[u8]) -> Confirmation {
    let confirm = ch
        .basic_publish(
            "".into(),
            q.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("basic.publish");
    tokio::time::timeout(STEP, confirm)
        .await
        .expect("no confirm or nack in time")
        .expect("connection lost")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_nacks_publishers_and_raises_an_alarm() {
    let capture = capture();
    let tmp = tempfile::tempdir().unwrap();
    let sim = SimIo::new();
    let broker = {
        let sim = sim.clone();
        let cfg = BrokerConfig::new(tmp.path().to_path_buf());
        tokio::task::spawn_blocking(move || Broker::open(cfg, sim.shared()))
            .await
            .unwrap()
            .unwrap()
    };
    let server = ferry_server::Server::start(
        broker,
        ferry_server::ServerConfig {
            amqp_listen: "127.0.0.1:0".parse().unwrap(),
            ..ferry_server::ServerConfig::default()
        },
    )
    .await
    .unwrap();
    let url = format!("amqp://guest:guest@{}/%2f", server.local_addr());
    let conn = tokio::time::timeout(
        STEP,
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .unwrap()
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare(&ch, "doomed").await;
    declare(&ch, "healthy").await;
    assert!(publish(&ch, "doomed", b"before").await.is_ack());
    assert!(publish(&ch, "healthy", b"before").await.is_ack());

    sim.fail_next_sync();
    let failed = publish(&ch, "doomed", b"covered by the failed fsync").await;
    assert!(failed.is_nack(), "{failed:?}");
    for i in 0..5 {
        let c = publish(&ch, "doomed", format!("after {i}").as_bytes()).await;
        assert!(c.is_nack(), "publish {i} after the failure: {c:?}");
    }
    // The channel and the other queues are unaffected.
    assert!(publish(&ch, "healthy", b"after").await.is_ack());

    let events = capture.0.lock().unwrap().clone();
    let alarm = events.iter().find(|(level, text)| {
        *level == tracing::Level::ERROR && text.contains("ALARM") && text.contains("doomed")
    });
    assert!(alarm.is_some(), "no alarm logged: {events:?}");
    assert!(
        !events
            .iter()
            .any(|(l, t)| *l == tracing::Level::ERROR && t.contains("healthy")),
        "{events:?}"
    );
    conn.close(200, "bye".into()).await.unwrap();
    server.shutdown().await;
}

//! Issue 4: acking more than 4,096 messages after `Broker::shutdown` made
//! the queue schedule a sync while holding its lock, and the stopped
//! Syncer ran that sync inline on the same thread: a deadlock. The acks
//! must go through and the late sync must still happen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use ferry_broker::{Broker, BrokerConfig};
use ferry_log::SimIo;
use ferry_model::Message;
use ferry_queue::queue::QueueSpec;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Duration;

const N: u64 = 4_100;

fn msg(i: u64) -> Arc<Message> {
    Arc::new(Message {
        exchange: Arc::from(""),
        routing_key: Arc::from("q"),
        properties: Bytes::from_static(&[0x10, 0, 2]),
        body: Bytes::from(format!("m{i}")),
        persistent: true,
        expiration_ms: None,
        bcc: Vec::new(),
    })
}

#[test]
fn acking_thousands_after_shutdown_does_not_deadlock() {
    let io = SimIo::new();
    let broker = Broker::open(BrokerConfig::new(PathBuf::from("/data")), io.shared()).unwrap();
    let vhost = broker.vhost("/").unwrap();
    let spec = QueueSpec {
        name: Arc::from("q"),
        durable: true,
        exclusive_owner: None,
        auto_delete: false,
        arguments: Default::default(),
    };
    vhost.declare_queue(spec, false, 1).unwrap();
    let q = vhost.queue_for("q", 1).unwrap();
    let mut ids = Vec::new();
    for i in 0..N {
        q.publish(&msg(i), None).unwrap();
        let (d, _) = q.get(false).unwrap().expect("a message");
        ids.push(d.msg_id);
    }
    broker.shutdown();

    // The client acks after shutdown began; on a thread, so a deadlock
    // fails the test instead of hanging it.
    let (done_tx, done_rx) = mpsc::channel();
    let acker = {
        let q = q.clone();
        std::thread::spawn(move || {
            for id in ids {
                q.settle(&[id]).unwrap();
            }
            let _ = done_tx.send(());
        })
    };
    assert!(
        done_rx.recv_timeout(Duration::from_secs(30)).is_ok(),
        "acks after shutdown deadlocked"
    );
    acker.join().unwrap();
    assert_eq!(q.counts().0, 0);
}

//! Fuzz regression (amqp_session under LeakSanitizer,
//! `fuzz/regressions/amqp_session/failed-restart-leaks-sync-threads`):
//! when `Broker::open` failed after starting its fsync threads (here:
//! recovering a queue log hits a failing fsync), nothing ever stopped
//! them, and each failed open left threads blocked forever.
//! Its own test binary, so no other test's broker owns sync threads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_broker::{Broker, BrokerConfig};
use ferry_log::SimIo;
use ferry_queue::queue::QueueSpec;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Threads of this process named `ferry-sync-*`.
fn sync_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("ferry-sync"))
                .count()
        })
        .unwrap_or(0)
}

fn wait_for_sync_threads(n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = sync_threads();
        if now == n || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_failed_open_stops_its_sync_threads() {
    if !std::path::Path::new("/proc/self/task").exists() {
        return; // not Linux: nothing to count with
    }
    let io = SimIo::new();
    let cfg = BrokerConfig::new(PathBuf::from("/data"));
    let broker = Broker::open(cfg.clone(), io.shared()).unwrap();
    let spec = QueueSpec {
        name: Arc::from("q"),
        durable: true,
        exclusive_owner: None,
        auto_delete: false,
        arguments: Default::default(),
    };
    broker
        .vhost("/")
        .unwrap()
        .declare_queue(spec, false, 1)
        .unwrap();
    assert_eq!(wait_for_sync_threads(1), 1, "one durability round thread");
    broker.shutdown();
    drop(broker);
    assert_eq!(wait_for_sync_threads(0), 0);

    // Recovering the queue's log syncs it; make that fsync fail.
    for _ in 0..3 {
        io.fail_next_sync();
        assert!(Broker::open(cfg.clone(), io.shared()).is_err());
    }
    assert_eq!(
        wait_for_sync_threads(0),
        0,
        "a failed open left sync threads"
    );

    // And the broker still opens once the disk behaves.
    let broker = Broker::open(cfg, io.shared()).unwrap();
    assert!(broker.vhost("/").unwrap().queue_for("q", 1).is_ok());
    broker.shutdown();
}

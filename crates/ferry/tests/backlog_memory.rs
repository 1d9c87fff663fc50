//! Slow suite (ignored by default): a backlog of N persistent messages must
//! not hold their bodies in RAM. Publishes N × 1 KiB persistent messages with
//! confirms into a durable queue, then reads the broker's peak RSS
//! (VmHWM) from /proc and checks it stays well below the bytes stored.
//! Then restarts the broker and checks the backlog is all there.
//!
//! Run: `cargo test --release -p ferry --test backlog_memory -- --ignored --nocapture`
//! (`FERRY_BACKLOG_N` sets N, default 1,000,000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use std::collections::VecDeque;
use std::time::Instant;

fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("status field")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: publishes a large backlog; run with --ignored"]
async fn backlog_of_persistent_messages_keeps_bodies_on_disk() {
    let Some(mut broker) = Broker::start_owned("backlog_memory").await else {
        return;
    };
    let n: usize = std::env::var("FERRY_BACKLOG_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (conn, ch) = connect_channel(&broker.amqp_url()).await;
    let q = unique("backlog");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let body = pseudo_random_bytes(1024, 7);
    let props = BasicProperties::default().with_delivery_mode(2);
    let started = Instant::now();
    let mut inflight = VecDeque::new();
    for _ in 0..n {
        let c = ch
            .basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props.clone(),
            )
            .await
            .unwrap();
        inflight.push_back(c);
        if inflight.len() >= 1024 {
            let c = inflight.pop_front().unwrap();
            assert!(c.await.unwrap().is_ack());
        }
    }
    for c in inflight {
        assert!(c.await.unwrap().is_ack());
    }
    let secs = started.elapsed().as_secs_f64();
    let pid = broker.pid();
    let hwm = status_kib(pid, "VmHWM:");
    let rss = status_kib(pid, "VmRSS:");
    let stored_kib = (n * 1024 / 1024) as u64;
    println!(
        "backlog: {n} x 1 KiB persistent confirmed in {secs:.1} s ({:.0} msg/s); broker VmHWM {} MiB, VmRSS {} MiB; bodies {} MiB",
        n as f64 / secs,
        hwm / 1024,
        rss / 1024,
        stored_kib / 1024
    );
    assert_eq!(message_count(&ch, &q).await as usize, n);
    // The index costs well under 200 bytes a message; bodies are 1 KiB.
    assert!(
        hwm < stored_kib / 2 + 64 * 1024,
        "peak RSS {hwm} KiB suggests bodies are held in memory ({stored_kib} KiB stored)"
    );
    drop(ch);
    let _ = conn.close(200, "bye".into()).await;
    let t = Instant::now();
    broker.restart().await;
    let (_c2, ch2) = connect_channel(&broker.amqp_url()).await;
    assert_eq!(message_count(&ch2, &q).await as usize, n);
    let hwm2 = status_kib(broker.pid(), "VmHWM:");
    println!(
        "restart with backlog: {:.1} s to ready and counted; broker VmHWM after recovery {} MiB",
        t.elapsed().as_secs_f64(),
        hwm2 / 1024
    );
}

//! Streams across kill -9: a confirming publisher appends to a stream while a consumer
//! follows its tail; the broker is killed mid-stream and restarted; a consumer reading from
//! "first" must find every confirmed message, in publish order, at consecutive offsets, and
//! every offset the live consumer saw before the kill must still name the same message.
//!
//! Owns the broker process: skipped when FERRY_TEST_AMQP_URL is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const IN_FLIGHT: usize = 256;
const KILL_AFTER_CONFIRMED: usize = 3000;

fn stream_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    t
}

fn offset_arg(v: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString(LongString::from(v)),
    );
    t
}

fn offset_of(d: &lapin::message::Delivery) -> u64 {
    let headers = d.properties.headers().as_ref().expect("headers");
    match headers.inner().get("x-stream-offset") {
        Some(AMQPValue::LongLongInt(n)) => u64::try_from(*n).expect("offset >= 0"),
        other => panic!("x-stream-offset header: {other:?}"),
    }
}

fn seq_of(body: &[u8]) -> u64 {
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.strip_prefix("seq="))
        .and_then(|s| s.parse().ok())
        .expect("seq=N body")
}

#[derive(Default)]
struct Ledger {
    confirmed: BTreeSet<u64>,
    /// What the tail-following consumer saw: offset → seq.
    seen: BTreeMap<u64, u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_confirmed_publishing_keeps_every_confirmed_message_at_its_offset() {
    let Some(mut broker) = Broker::start_owned("streams::kill9").await else {
        return;
    };
    let url = broker.amqp_url();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(0usize);

    let pub_conn = connect(&url).await;
    let pub_ch = confirm_channel(&pub_conn).await;
    pub_ch
        .queue_declare("st".into(), QueueDeclareOptions::durable(), stream_args())
        .await
        .unwrap();
    let con_conn = connect(&url).await;
    let con_ch = con_conn.create_channel().await.unwrap();
    con_ch
        .basic_qos(100, BasicQosOptions::default())
        .await
        .unwrap();
    let mut tail = con_ch
        .basic_consume(
            "st".into(),
            "tail".into(),
            BasicConsumeOptions::default(),
            offset_arg("next"),
        )
        .await
        .unwrap();

    let (conf_tx, mut conf_rx) =
        tokio::sync::mpsc::channel::<(u64, lapin::PublisherConfirm)>(IN_FLIGHT);
    let publisher = tokio::spawn(async move {
        for seq in 1u64.. {
            let res = pub_ch
                .basic_publish(
                    "".into(),
                    "st".into(),
                    BasicPublishOptions::default(),
                    format!("seq={seq}").as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await;
            let Ok(confirm) = res else { break };
            if conf_tx.send((seq, confirm)).await.is_err() {
                break;
            }
        }
        drop(pub_conn);
    });
    let collector = {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            while let Some((seq, confirm)) = conf_rx.recv().await {
                match confirm.await {
                    Ok(Confirmation::Ack(_)) => {
                        let n = {
                            let mut l = ledger.lock().unwrap();
                            l.confirmed.insert(seq);
                            l.confirmed.len()
                        };
                        progress_tx.send_replace(n);
                    }
                    Ok(other) => panic!("seq {seq}: {other:?}"),
                    Err(_) => {}
                }
            }
        })
    };
    let follower = {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = tail.next().await {
                ledger
                    .lock()
                    .unwrap()
                    .seen
                    .insert(offset_of(&d), seq_of(&d.data));
                if d.ack(BasicAckOptions::default()).await.is_err() {
                    break;
                }
            }
            drop(con_conn);
        })
    };

    // `matches!` drops the watch guard at once (held, it would block the collector).
    let reached = matches!(
        tokio::time::timeout(
            Duration::from_secs(30),
            progress_rx.wait_for(|n| *n >= KILL_AFTER_CONFIRMED),
        )
        .await,
        Ok(Ok(_))
    );
    assert!(
        reached,
        "kill point not reached; broker stderr:\n{}",
        broker.stderr()
    );
    broker.kill9().await;
    for (name, task) in [
        ("publisher", publisher),
        ("collector", collector),
        ("follower", follower),
    ] {
        // What the ledger holds came from the broker before it died, so a client task that is
        // slow to notice the dead socket (a loaded machine) may be stopped here instead.
        let abort = task.abort_handle();
        match tokio::time::timeout(STEP, task).await {
            Ok(r) => r.unwrap_or_else(|e| panic!("{name} panicked: {e}")),
            Err(_) => {
                eprintln!("{name} still running {STEP:?} after the kill: aborted");
                abort.abort();
            }
        }
    }
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let max_confirmed = *ledger.confirmed.last().expect("confirms");
    assert!(
        !ledger.seen.is_empty(),
        "the tail follower received nothing before the kill"
    );

    broker.start_again().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    let count = message_count(&ch, "st").await as u64;
    assert!(
        count >= max_confirmed,
        "{count} messages after restart, {max_confirmed} confirmed"
    );
    ch.basic_qos(500, BasicQosOptions::default()).await.unwrap();
    let mut reader = ch
        .basic_consume(
            "st".into(),
            "reader".into(),
            BasicConsumeOptions::default(),
            offset_arg("first"),
        )
        .await
        .unwrap();
    let mut got = 0u64;
    while got < count {
        let batch = recv_n(&mut reader, (count - got).min(500) as usize, STEP).await;
        for d in &batch {
            // Publish order, consecutive offsets from 0: offset n holds seq n + 1.
            assert_eq!((offset_of(d), seq_of(&d.data)), (got, got + 1));
            got += 1;
        }
        batch
            .last()
            .unwrap()
            .ack(BasicAckOptions { multiple: true })
            .await
            .unwrap();
    }
    for (offset, seq) in &ledger.seen {
        assert_eq!(*seq, offset + 1, "offset {offset} changed its message");
    }
    assert!(got >= max_confirmed);
    println!(
        "stream crash test: {} confirmed before the kill, {got} in the stream after it, \
         the tail follower had read {}",
        ledger.confirmed.len(),
        ledger.seen.len()
    );
    // Appends continue at the next offset.
    let pub_ch = confirm_channel(&conn).await;
    let confirm = pub_ch
        .basic_publish(
            "".into(),
            "st".into(),
            BasicPublishOptions::default(),
            format!("seq={}", got + 1).as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(matches!(confirm, Confirmation::Ack(_)));
    let d = recv_one(&mut reader, STEP).await;
    assert_eq!((offset_of(&d), seq_of(&d.data)), (got, got + 1));
}

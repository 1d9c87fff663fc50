//! The crash test: a confirming publisher and an acking consumer run concurrently against a
//! durable queue, the broker is killed with SIGKILL mid-stream, restarted, and the queue is
//! drained. Every message that was confirmed and whose ack had not been sent before the kill
//! must be there (lost = 0). Messages whose ack was sent but perhaps not persisted may come
//! back (duplicates): allowed, counted and printed.
//!
//! Owns the broker process: skipped when FERRY_TEST_AMQP_URL is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const IN_FLIGHT: usize = 256;
const PREFETCH: u16 = 50;
const BODY_PAD: usize = 200;

#[derive(Default)]
struct Ledger {
    published: BTreeSet<u64>,
    confirmed: BTreeSet<u64>,
    nacked: BTreeSet<u64>,
    /// Recorded *before* the ack is sent: a superset of the acks the broker may have seen.
    ack_intent: BTreeSet<u64>,
    delivered: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    confirmed: usize,
    acked: usize,
}

fn body_for(seq: u64) -> Vec<u8> {
    let mut b = format!("seq={seq:010};").into_bytes();
    b.resize(b.len() + BODY_PAD, b'.');
    b
}

fn seq_of(body: &[u8]) -> u64 {
    let s = std::str::from_utf8(&body[4..14]).expect("utf8 seq");
    assert!(
        body.starts_with(b"seq="),
        "foreign message in the crash queue"
    );
    s.parse().expect("numeric seq")
}

struct Round {
    kill_after_confirmed: usize,
    kill_after_acked: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_stream_loses_no_confirmed_unacked_message() {
    let Some(mut broker) = Broker::start_owned("crash::kill9_mid_stream").await else {
        return;
    };
    let rounds = [
        Round {
            kill_after_confirmed: 2000,
            kill_after_acked: 500,
        },
        Round {
            kill_after_confirmed: 3500,
            kill_after_acked: 1500,
        },
        Round {
            kill_after_confirmed: 2700,
            kill_after_acked: 2000,
        },
    ];
    let started = Instant::now();
    let mut totals = (0usize, 0usize);
    for (r, round) in rounds.iter().enumerate() {
        let (lost, dup) = run_round(&mut broker, r, round).await;
        totals.0 += lost;
        totals.1 += dup;
    }
    println!(
        "crash test: {} rounds in {:.1}s, lost={} duplicated={}",
        rounds.len(),
        started.elapsed().as_secs_f64(),
        totals.0,
        totals.1
    );
    assert_eq!(totals.0, 0, "confirmed, un-acked messages were lost");
}

async fn run_round(broker: &mut Broker, round: usize, cfg: &Round) -> (usize, usize) {
    let q = unique(&format!("crash-r{round}"));
    let url = broker.amqp_url();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(Progress::default());
    let progress_tx = Arc::new(progress_tx);
    let freeze_acks = Arc::new(AtomicBool::new(false));

    let pub_conn = connect(&url).await;
    let pub_ch = confirm_channel(&pub_conn).await;
    pub_ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let con_conn = connect(&url).await;
    let con_ch = con_conn.create_channel().await.unwrap();
    con_ch
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = consume(&con_ch, &q, BasicConsumeOptions::default()).await;

    // Publisher: keeps IN_FLIGHT unconfirmed publishes outstanding (bounded channel to the
    // confirm collector), until the connection dies.
    let (conf_tx, mut conf_rx) =
        tokio::sync::mpsc::channel::<(u64, lapin::PublisherConfirm)>(IN_FLIGHT);
    let publisher = {
        let ledger = ledger.clone();
        let q = q.clone();
        tokio::spawn(async move {
            let mut seq = 0u64;
            loop {
                seq += 1;
                ledger.lock().unwrap().published.insert(seq);
                let res = pub_ch
                    .basic_publish(
                        "".into(),
                        q.as_str().into(),
                        BasicPublishOptions::default(),
                        &body_for(seq),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await;
                let Ok(confirm) = res else { break };
                if conf_tx.send((seq, confirm)).await.is_err() {
                    break;
                }
            }
            drop(pub_conn);
        })
    };
    let collector = {
        let ledger = ledger.clone();
        let progress_tx = progress_tx.clone();
        tokio::spawn(async move {
            while let Some((seq, confirm)) = conf_rx.recv().await {
                match confirm.await {
                    Ok(Confirmation::Ack(_)) => {
                        let n = {
                            let mut l = ledger.lock().unwrap();
                            l.confirmed.insert(seq);
                            l.confirmed.len()
                        };
                        progress_tx.send_modify(|p| p.confirmed = n);
                    }
                    Ok(Confirmation::Nack(_)) => {
                        ledger.lock().unwrap().nacked.insert(seq);
                    }
                    Ok(Confirmation::NotRequested) => panic!("confirms not enabled"),
                    // Connection died: this one (and the rest) are unconfirmed.
                    Err(_) => {}
                }
            }
        })
    };
    let consumer_task = {
        let ledger = ledger.clone();
        let progress_tx = progress_tx.clone();
        let freeze = freeze_acks.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let seq = seq_of(&d.data);
                ledger.lock().unwrap().delivered += 1;
                if freeze.load(Ordering::SeqCst) {
                    // From here on no ack leaves this process (the kill is imminent).
                    continue;
                }
                let n = {
                    let mut l = ledger.lock().unwrap();
                    l.ack_intent.insert(seq);
                    l.ack_intent.len()
                };
                if d.ack(BasicAckOptions::default()).await.is_err() {
                    break;
                }
                progress_tx.send_modify(|p| p.acked = n);
            }
            drop(con_conn);
        })
    };

    // Wait (event-driven, bounded) for the kill point.
    let reached = matches!(
        tokio::time::timeout(
            Duration::from_secs(20),
            progress_rx.wait_for(|p| {
                p.confirmed >= cfg.kill_after_confirmed && p.acked >= cfg.kill_after_acked
            }),
        )
        .await,
        Ok(Ok(_))
    );
    if !reached {
        let p = *progress_rx.borrow();
        panic!(
            "round {round}: kill point not reached in 20s (confirmed {}, acked {}); broker stderr:\n{}",
            p.confirmed,
            p.acked,
            broker.stderr()
        );
    }
    freeze_acks.store(true, Ordering::SeqCst);
    broker.kill9().await;
    // Snapshot the ack intents now: nothing recorded later was sent (acks are frozen).
    let ack_intent = ledger.lock().unwrap().ack_intent.clone();

    // The clients notice the dead broker and stop.
    for (name, task) in [
        ("publisher", publisher),
        ("confirm collector", collector),
        ("consumer", consumer_task),
    ] {
        tokio::time::timeout(STEP, task)
            .await
            .unwrap_or_else(|_| panic!("round {round}: {name} did not stop after the kill"))
            .unwrap_or_else(|e| panic!("round {round}: {name} panicked: {e}"));
    }

    broker.start_again().await;

    // Drain the queue after the restart.
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    let count = message_count(&ch, &q).await as usize;
    let mut present: HashMap<u64, usize> = HashMap::new();
    if count > 0 {
        ch.basic_qos(1000, BasicQosOptions::default())
            .await
            .unwrap();
        let mut c = consume(&ch, &q, BasicConsumeOptions::default()).await;
        let mut got = 0;
        while got < count {
            let batch = recv_n(&mut c, (count - got).min(500), STEP).await;
            got += batch.len();
            for d in &batch {
                *present.entry(seq_of(&d.data)).or_default() += 1;
            }
            batch
                .last()
                .unwrap()
                .ack(BasicAckOptions { multiple: true })
                .await
                .unwrap();
        }
        assert_no_delivery(&mut c, Duration::from_millis(200)).await;
    }
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();

    let l = ledger.lock().unwrap();
    let required: BTreeSet<u64> = l.confirmed.difference(&ack_intent).copied().collect();
    let lost: Vec<u64> = required
        .iter()
        .filter(|s| !present.contains_key(s))
        .copied()
        .collect();
    let duplicated = present.keys().filter(|s| ack_intent.contains(s)).count();
    let doubled_in_queue = present.values().filter(|&&n| n > 1).count();
    let unconfirmed_survivors = present.keys().filter(|s| !l.confirmed.contains(s)).count();
    let foreign = present.keys().filter(|s| !l.published.contains(s)).count();
    println!(
        "round {round}: published={} confirmed={} nacked={} delivered={} acked(sent)={} \
         after-restart={} required={} lost={} duplicated={} (twice in queue: {}) \
         unconfirmed-but-present={}",
        l.published.len(),
        l.confirmed.len(),
        l.nacked.len(),
        l.delivered,
        ack_intent.len(),
        count,
        required.len(),
        lost.len(),
        duplicated,
        doubled_in_queue,
        unconfirmed_survivors,
    );
    assert_eq!(
        foreign, 0,
        "round {round}: messages that were never published"
    );
    assert!(
        lost.is_empty(),
        "round {round}: {} confirmed un-acked messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    (lost.len(), duplicated + doubled_in_queue)
}

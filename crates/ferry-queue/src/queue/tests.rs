//! Queue behaviour over the crash-simulating I/O backend: what a confirm
//! promises survives a crash; what was settled stays settled; transient
//! messages vanish; requeued messages keep their place.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::syncer::Syncer;
use crate::test_support::{message, Confirms, Taker};
use ferry_log::{LogConfig, SimIo};
use ferry_model::message::Message;
use std::path::PathBuf;
use std::sync::Arc;

fn env(io: &SimIo, cache: i64) -> QueueEnv {
    env_with(
        io,
        cache,
        Syncer::start(ferry_log::RoundPolicy::per_file()).unwrap(),
    )
}

/// `env` whose durability rounds run only when a test asks (`sync_now`):
/// no background round holds some confirms while `sync_now` completes
/// others.
fn env_manual(io: &SimIo, cache: i64) -> QueueEnv {
    env_with(
        io,
        cache,
        Syncer::manual(ferry_log::RoundPolicy::per_file()),
    )
}

fn env_with(io: &SimIo, cache: i64, syncer: Arc<Syncer>) -> QueueEnv {
    QueueEnv::new(
        io.shared(),
        syncer,
        LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        },
        cache,
    )
}

fn spec(durable: bool) -> QueueSpec {
    crate::test_support::spec("q", durable, Default::default())
}

fn msg(body: &str, persistent: bool) -> Arc<Message> {
    Arc::new(message(body, persistent))
}

fn open(io: &SimIo, durable: bool, cache: i64) -> Arc<Queue> {
    open_in(env(io, cache), durable)
}

fn open_in(env: QueueEnv, durable: bool) -> Arc<Queue> {
    Queue::open(spec(durable), Arc::from("/"), PathBuf::from("/data/q"), env).unwrap()
}

use crate::test_support::drain;

#[test]
fn confirmed_messages_survive_a_crash_and_unsynced_ones_may_not() {
    // Manual rounds: a background round could take m0..m8's confirms and
    // complete them after `sync_now` returned (seen once in CI: only m9
    // confirmed at the check below).
    for seed in 0..50 {
        let io = SimIo::new();
        let q = open_in(env_manual(&io, 1 << 20), true);
        let sink = Arc::new(Confirms::default());
        for i in 0..20u64 {
            let token = ConfirmToken {
                sink: sink.clone(),
                seq: i,
            };
            assert_eq!(
                q.publish(&msg(&format!("m{i}"), true), Some(token))
                    .unwrap(),
                Enqueued::Deferred
            );
            if i == 9 {
                q.sync_now();
            }
        }
        let confirmed: Vec<u64> = sink.ok.lock().clone();
        assert!(confirmed.len() >= 10, "seed {seed}: {confirmed:?}");
        drop(q);
        io.crash(seed);
        let q = open(&io, true, 1 << 20);
        let got = drain(&q);
        for s in &confirmed {
            assert!(
                got.contains(&format!("m{s}")),
                "seed {seed}: confirmed m{s} lost; got {got:?}"
            );
        }
        // Whatever survived is a prefix, in order.
        let expect: Vec<String> = (0..got.len()).map(|i| format!("m{i}")).collect();
        assert_eq!(got, expect, "seed {seed}");
    }
}

#[test]
fn transient_messages_and_settled_ones_do_not_come_back() {
    let io = SimIo::new();
    let q = open(&io, true, 1 << 20);
    q.publish(&msg("keep", true), None).unwrap();
    q.publish(&msg("transient", false), None).unwrap();
    q.publish(&msg("acked", true), None).unwrap();
    let taker = Taker::new(3);
    q.consume(Arc::from("t"), taker.clone(), false, false)
        .unwrap();
    q.dispatch();
    assert_eq!(taker.bodies(), vec!["keep", "transient", "acked"]);
    let acked = taker.got.lock()[2].msg_id;
    q.settle(&[acked]).unwrap();
    q.sync_now();
    drop(q);
    let q = open(&io, true, 1 << 20);
    let (ready, _) = q.counts();
    assert_eq!(ready, 1);
    let (d, _) = q.get(false).unwrap().unwrap();
    assert_eq!(&d.message.body[..], b"keep");
    assert!(!d.redelivered);
}

#[test]
fn an_ack_settles_each_checked_out_id_once_and_skips_the_rest() {
    // The ids of an ack: ascending with one not checked out (owned copy),
    // then repeats out of order (deduplicated), then a clean ascending run
    // (borrowed): each checked-out message settles once, nothing else.
    let io = SimIo::new();
    let q = open(&io, true, 1 << 20);
    for b in ["a", "b", "c", "d", "e", "f"] {
        q.publish(&msg(b, true), None).unwrap();
    }
    let ids: Vec<u64> = (0..5)
        .map(|_| q.get(false).unwrap().unwrap().0.msg_id)
        .collect();
    let ready_one = ids[4] + 1; // "f": ready, never checked out
    q.settle(&[ids[0], ids[1] + 1000, ids[1]]).unwrap();
    assert_eq!(q.stats().snapshot().ack, 2);
    q.settle(&[ids[3], ids[2], ids[3], ids[0]]).unwrap();
    assert_eq!(q.stats().snapshot().ack, 4);
    q.settle(&[ids[4], ready_one]).unwrap();
    assert_eq!(q.stats().snapshot().ack, 5);
    assert_eq!(q.counts().0, 1, "the ready one stays");
    q.sync_now();
    drop(q);
    let q = open(&io, true, 1 << 20);
    let (d, _) = q.get(true).unwrap().unwrap();
    assert_eq!(&d.message.body[..], b"f");
    assert!(q.get(true).unwrap().is_none());
}

#[test]
fn requeued_messages_return_to_their_place_marked_redelivered() {
    let io = SimIo::new();
    let q = open(&io, true, 0);
    for b in ["a", "b", "c", "d"] {
        q.publish(&msg(b, true), None).unwrap();
    }
    let (a, _) = q.get(false).unwrap().unwrap();
    let (b, _) = q.get(false).unwrap().unwrap();
    q.requeue(&[b.msg_id, a.msg_id]).unwrap();
    let again: Vec<(String, bool, u32)> = (0..4)
        .map(|_| {
            let (d, _) = q.get(false).unwrap().unwrap();
            (
                String::from_utf8_lossy(&d.message.body).into_owned(),
                d.redelivered,
                d.delivery_count,
            )
        })
        .collect();
    assert_eq!(
        again,
        vec![
            ("a".into(), true, 1),
            ("b".into(), true, 1),
            ("c".into(), false, 0),
            ("d".into(), false, 0)
        ]
    );
    // The requeue is in the log: after a restart the counts are kept.
    q.sync_now();
    drop(q);
    let q = open(&io, true, 0);
    let (d, _) = q.get(true).unwrap().unwrap();
    assert_eq!(
        (&d.message.body[..], d.redelivered, d.delivery_count),
        (&b"a"[..], true, 1)
    );
}

#[test]
fn purge_drops_ready_messages_but_not_checked_out_ones_across_restart() {
    let io = SimIo::new();
    let q = open(&io, true, 1 << 20);
    for b in ["x", "y", "z"] {
        q.publish(&msg(b, true), None).unwrap();
    }
    let (held, _) = q.get(false).unwrap().unwrap();
    assert_eq!(q.purge().unwrap(), 2);
    q.publish(&msg("after", true), None).unwrap();
    q.sync_now();
    drop(q);
    let q = open(&io, true, 1 << 20);
    assert_eq!(drain(&q), vec!["x", "after"]);
    let _ = held;
}

#[test]
fn a_failed_fsync_nacks_waiting_publishes_and_refuses_more() {
    let io = SimIo::new();
    // Rounds only when the test runs them: a background round could take
    // the failing fsync and complete after `sync_now` returned.
    let mut env = env(&io, 1 << 20);
    env.syncer = Syncer::manual(ferry_log::RoundPolicy::per_file());
    let q = Queue::open(spec(true), Arc::from("/"), PathBuf::from("/data/q"), env).unwrap();
    let sink = Arc::new(Confirms::default());
    io.fail_next_sync();
    q.publish(
        &msg("m", true),
        Some(ConfirmToken {
            sink: sink.clone(),
            seq: 1,
        }),
    )
    .unwrap();
    q.sync_now();
    assert_eq!(*sink.failed.lock(), vec![1]);
    assert!(sink.ok.lock().is_empty());
    assert!(q.publish(&msg("n", true), None).is_err());
    // A no-ack get needs a Settle record: refused, the message stays ready.
    assert!(q.get(true).is_err());
    assert_eq!(q.counts().0, 1);
    assert_eq!(q.depth().unacked, 0);
}

#[test]
fn prefetch_credit_bounds_deliveries_and_dispatch_resumes() {
    let io = SimIo::new();
    let q = open(&io, false, 0);
    for i in 0..5 {
        q.publish(&msg(&format!("{i}"), false), None).unwrap();
    }
    let t = Taker::new(2);
    q.consume(Arc::from("t"), t.clone(), false, false).unwrap();
    q.dispatch();
    assert_eq!(t.bodies(), vec!["0", "1"]);
    t.grant(1);
    q.dispatch();
    assert_eq!(t.bodies(), vec!["0", "1", "2"]);
    assert_eq!(q.counts(), (2, 1));
}

#[test]
fn settled_segments_are_removed() {
    let io = SimIo::new();
    let q = open(&io, true, 0);
    let body = "x".repeat(500);
    let t = Taker::new(u32::MAX);
    q.consume(Arc::from("t"), t.clone(), true, false).unwrap();
    let rounds = 3;
    for _ in 0..rounds {
        // Each round settles 4096 messages, which triggers a cleanup of
        // the segments synced by the previous round.
        for _ in 0..4096 {
            q.publish(&msg(&body, true), None).unwrap();
        }
        q.sync_now();
    }
    let files = io.shared().list(&PathBuf::from("/data/q")).unwrap().len();
    // Without cleanup: two records (enqueue + settle) per message, ~7
    // records per 4 KiB segment, two files per segment.
    let without = rounds * 4096 * 2 / 7 * 2;
    assert!(
        files < without / 3,
        "{files} files left of ~{without}: segments not removed"
    );
}

#[test]
fn an_index_entry_costs_32_bytes() {
    // The per-message memory budget behind "bounded by disk, not memory".
    assert_eq!(std::mem::size_of::<super::state::Entry>(), 32);
}

#[test]
fn replay_handles_out_of_order_settles_requeues_and_purges() {
    let io = SimIo::new();
    let q = open(&io, true, 0);
    for b in ["a", "b", "c", "d", "e"] {
        q.publish(&msg(b, true), None).unwrap();
    }
    let got: Vec<Delivery> = (0..4).map(|_| q.get(false).unwrap().unwrap().0).collect();
    // Settle c (not the head), requeue b, leave a and d unacked.
    q.settle(&[got[2].msg_id]).unwrap();
    q.requeue(&[got[1].msg_id]).unwrap();
    q.sync_now();
    drop(q);
    let q = open(&io, true, 0);
    let back: Vec<(String, bool)> = std::iter::from_fn(|| q.get(true).unwrap())
        .map(|(d, _)| {
            (
                String::from_utf8_lossy(&d.message.body).into_owned(),
                d.redelivered,
            )
        })
        .collect();
    assert_eq!(
        back,
        vec![
            ("a".into(), false),
            ("b".into(), true),
            ("d".into(), false),
            ("e".into(), false)
        ]
    );
}

#[test]
fn a_long_backlog_spills_to_the_log_and_comes_back_in_order() {
    use super::state::WINDOW;
    let io = SimIo::new();
    let q = open(&io, true, 1 << 20);
    let n = WINDOW * 2 + 123;
    for i in 0..n {
        q.publish(&msg(&format!("m{i}"), i % 2 == 0), None).unwrap();
    }
    assert_eq!(q.counts().0 as usize, n);
    // Take a few, requeue one: it goes back to its place ahead of the spill.
    let (first, left) = q.get(false).unwrap().unwrap();
    assert_eq!(left as usize, n - 1);
    q.requeue(&[first.msg_id]).unwrap();
    let mut seen = Vec::new();
    while let Some((d, _)) = q.get(true).unwrap() {
        seen.push(String::from_utf8_lossy(&d.message.body).into_owned());
    }
    let expect: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    assert_eq!(seen.len(), expect.len());
    assert!(seen == expect, "order broken across the spill");
    assert_eq!(q.counts().0, 0);
}

#[test]
fn purge_and_consumers_work_across_a_spilled_backlog() {
    use super::state::WINDOW;
    let io = SimIo::new();
    let q = open(&io, true, 1 << 20);
    for i in 0..WINDOW + 10 {
        q.publish(&msg(&format!("a{i}"), true), None).unwrap();
    }
    assert_eq!(q.purge().unwrap() as usize, WINDOW + 10);
    assert_eq!(q.counts().0, 0);
    let n = WINDOW * 2;
    for i in 0..n {
        q.publish(&msg(&format!("b{i}"), true), None).unwrap();
    }
    let t = Taker::new(u32::MAX);
    q.consume(Arc::from("t"), t.clone(), true, false).unwrap();
    q.dispatch();
    let got = t.bodies();
    assert_eq!(got.len(), n);
    assert!(got.iter().enumerate().all(|(i, b)| *b == format!("b{i}")));
    // After a restart nothing purged or consumed comes back.
    q.sync_now();
    drop(q);
    let q = open(&io, true, 1 << 20);
    assert_eq!(q.counts().0, 0);
}

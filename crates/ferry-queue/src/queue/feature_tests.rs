//! TTL, length limits and dead-lettering, driven by a `ManualClock` over
//! SimIo: deadlines in the log, head-only expiry, overflow behaviours, what
//! survives a restart, and (through a whole broker) x-death and cycles.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::dead_letter::Reason;
use super::record::{self, Record};
use super::*;
use crate::clock::{Clock, NEVER};
use crate::test_support::ms;
use crate::test_support::{drain as bodies, message, mtable as args, spec, Fixture, Taker, T0};
use ferry_log::{Log, LogConfig};
use ferry_model::message::Message;
use ferry_model::Value;
use std::path::PathBuf;
use std::sync::Arc;

fn msg(body: &str, expiration_ms: Option<u64>) -> Arc<Message> {
    Arc::new(Message {
        expiration_ms,
        bcc: Vec::new(),
        ..message(body, true)
    })
}

/// The Drop records in the queue's log, as (reason, ids).
fn drops(f: &Fixture) -> Vec<(Reason, Vec<u64>)> {
    let (log, _) = Log::open(
        f.io.shared(),
        &PathBuf::from("/data/q"),
        LogConfig::default(),
    )
    .unwrap();
    log.reader(log.first_index())
        .filter_map(|r| match record::decode(r.unwrap().1.payload).unwrap() {
            Record::Drop { reason, ids } => Some((reason, ids)),
            _ => None,
        })
        .collect()
}

#[test]
fn queue_ttl_expires_from_the_head_in_order_at_the_deadline() {
    let f = Fixture::new();
    let q = f.open(&[("x-message-ttl", Value::I32(100))]);
    for b in ["a", "b", "c"] {
        q.publish(&msg(b, None), None).unwrap();
    }
    f.clock.advance(50);
    q.publish(&msg("d", None), None).unwrap();
    assert_eq!(q.next_expiry(), T0 + 100);
    q.expire(T0 + 99);
    assert_eq!(q.counts().0, 4);
    f.clock.set(T0 + 100);
    q.expire(T0 + 100);
    assert_eq!(q.counts().0, 1);
    assert_eq!(q.next_expiry(), T0 + 150);
    assert_eq!(bodies(&q), vec!["d"]);
    assert_eq!(q.next_expiry(), NEVER);
    q.sync_now();
    drop(q);
    assert_eq!(drops(&f), vec![(Reason::Expired, vec![0, 1, 2])]);
}

#[test]
fn per_message_ttl_expires_only_at_the_head_and_the_lower_ttl_wins() {
    let f = Fixture::new();
    let q = f.open(&[("x-message-ttl", Value::I32(1000))]);
    q.publish(&msg("long", Some(500)), None).unwrap();
    q.publish(&msg("short", Some(10)), None).unwrap();
    f.clock.advance(20);
    q.expire(f.clock.now_ms());
    assert_eq!(q.counts().0, 2, "an expired message behind the head stays");
    assert_eq!(
        q.next_expiry(),
        T0 + 500,
        "the lower of queue TTL and expiration"
    );
    let (d, left) = q.get(true).unwrap().unwrap();
    assert_eq!((&d.message.body[..], left), (&b"long"[..], 1));
    assert!(
        q.get(true).unwrap().is_none(),
        "expired at the head: never delivered"
    );
    assert_eq!(q.counts().0, 0);
}

#[test]
fn expired_heads_are_skipped_by_consumers_but_a_fresh_message_reaches_a_waiting_one() {
    let f = Fixture::new();
    let q = f.open(&[("x-message-ttl", Value::I32(0))]);
    q.publish(&msg("nobody waits", None), None).unwrap();
    assert_eq!(q.counts().0, 0, "TTL 0 and no consumer: dropped at once");
    let taker = Taker::new(10);
    q.consume(Arc::from("c"), taker.clone(), true, false)
        .unwrap();
    q.publish(&msg("taken", None), None).unwrap();
    assert_eq!(taker.bodies(), vec!["taken"]);

    let q2 = Fixture::new();
    let q2q = q2.open(&[("x-message-ttl", Value::I32(10))]);
    q2q.publish(&msg("old", None), None).unwrap();
    q2.clock.advance(10);
    let t2 = Taker::new(10);
    q2q.consume(Arc::from("c"), t2.clone(), true, false)
        .unwrap();
    q2q.dispatch();
    assert!(t2.bodies().is_empty());
    assert_eq!(q2q.counts().0, 0);
}

#[test]
fn requeued_messages_keep_their_deadline_and_unacked_ones_do_not_expire() {
    let f = Fixture::new();
    let q = f.open(&[]);
    q.publish(&msg("x", Some(100)), None).unwrap();
    let (d, _) = q.get(false).unwrap().unwrap();
    f.clock.advance(200);
    q.expire(f.clock.now_ms());
    assert_eq!(q.depth().unacked, 1, "checked out: not expired");
    q.requeue(&[d.msg_id]).unwrap();
    assert!(q.get(true).unwrap().is_none());
    assert_eq!((q.counts().0, q.depth().unacked), (0, 0));
}

#[test]
fn deadlines_and_drops_survive_a_restart() {
    let f = Fixture::new();
    let q = f.open(&[("x-message-ttl", Value::I32(100))]);
    q.publish(&msg("early", None), None).unwrap();
    f.clock.advance(60);
    q.publish(&msg("late", None), None).unwrap();
    q.publish(&msg("own", Some(10)), None).unwrap();
    f.clock.advance(40);
    q.expire(f.clock.now_ms());
    q.sync_now();
    drop(q);
    // Reopened 30 ms later: the deadlines are the ones fixed at publish.
    f.clock.advance(30);
    let q = f.open(&[("x-message-ttl", Value::I32(100))]);
    assert_eq!(q.counts().0, 2, "the dropped message stays dropped");
    assert_eq!(q.next_expiry(), T0 + 160);
    q.expire(T0 + 159);
    assert_eq!(q.counts().0, 2);
    q.expire(T0 + 160);
    assert_eq!(q.counts().0, 0, "'own' expired at T0+70, behind the head");
}

#[test]
fn drop_head_counts_ready_messages_only_and_dead_letters_the_oldest() {
    let f = Fixture::new();
    let q = f.open(&[
        ("x-max-length", Value::I32(2)),
        ("x-dead-letter-exchange", ms("dlx")),
    ]);
    for b in ["m0", "m1", "m2", "m3"] {
        assert_eq!(q.publish(&msg(b, None), None).unwrap(), Enqueued::Confirmed);
    }
    assert_eq!(q.counts().0, 2);
    assert_eq!(
        f.letters.take(),
        vec![("m0".into(), Reason::Maxlen), ("m1".into(), Reason::Maxlen)]
    );
    let (held, _) = q.get(false).unwrap().unwrap();
    q.publish(&msg("m4", None), None).unwrap();
    assert!(
        f.letters.take().is_empty(),
        "the unacked one does not count"
    );
    q.settle(&[held.msg_id]).unwrap();
    assert_eq!(bodies(&q), vec!["m3", "m4"]);
}

#[test]
fn max_length_bytes_counts_bodies_across_a_restart_and_a_spilled_backlog() {
    let f = Fixture::new();
    let a = [
        ("x-max-length-bytes", Value::I32(10)),
        ("x-overflow", ms("reject-publish")),
    ];
    let q = f.open(&a);
    for b in ["aaaa", "bbbb"] {
        assert_eq!(q.publish(&msg(b, None), None).unwrap(), Enqueued::Confirmed);
    }
    assert_eq!(
        q.publish(&msg("ccc", None), None).unwrap(),
        Enqueued::Rejected
    );
    assert_eq!(
        q.publish(&msg("cc", None), None).unwrap(),
        Enqueued::Confirmed
    );
    q.sync_now();
    drop(q);
    let q = f.open(&a);
    assert_eq!(
        q.publish(&msg("d", None), None).unwrap(),
        Enqueued::Rejected
    );
    assert_eq!(bodies(&q), vec!["aaaa", "bbbb", "cc"]);

    // Past the in-memory window the body bytes are kept with the spill.
    let f = Fixture::new();
    let n = super::state::WINDOW as u64 + 100;
    let q = f.open(&[
        ("x-max-length-bytes", Value::I64(n as i64)),
        ("x-overflow", ms("reject-publish")),
    ]);
    for _ in 0..n {
        assert_eq!(
            q.publish(&msg("x", None), None).unwrap(),
            Enqueued::Confirmed
        );
    }
    assert_eq!(
        q.publish(&msg("x", None), None).unwrap(),
        Enqueued::Rejected
    );
    for _ in 0..200 {
        q.get(true).unwrap().unwrap();
    }
    for _ in 0..200 {
        assert_eq!(
            q.publish(&msg("y", None), None).unwrap(),
            Enqueued::Confirmed
        );
    }
    assert_eq!(
        q.publish(&msg("y", None), None).unwrap(),
        Enqueued::Rejected
    );
    assert_eq!(bodies(&q).len() as u64, n);
}

#[test]
fn drop_head_works_through_a_spilled_backlog() {
    let f = Fixture::new();
    let max = super::state::WINDOW as i64 + 50;
    let q = f.open(&[("x-max-length", Value::I64(max))]);
    for i in 0..(max + 300) {
        q.publish(&msg(&format!("{i}"), None), None).unwrap();
    }
    assert_eq!(q.counts().0 as i64, max);
    let got = bodies(&q);
    assert_eq!(got.first().map(String::as_str), Some("300"));
    assert_eq!(got.len() as i64, max);
}

#[test]
fn reject_publish_dlx_refuses_and_dead_letters() {
    let f = Fixture::new();
    let q = f.open(&[
        ("x-max-length", Value::I32(1)),
        ("x-overflow", ms("reject-publish-dlx")),
        ("x-dead-letter-exchange", ms("")),
    ]);
    assert_eq!(
        q.publish(&msg("kept", None), None).unwrap(),
        Enqueued::Confirmed
    );
    assert_eq!(
        q.publish(&msg("refused", None), None).unwrap(),
        Enqueued::Rejected
    );
    assert_eq!(f.letters.take(), vec![("refused".into(), Reason::Maxlen)]);
    assert_eq!(bodies(&q), vec!["kept"]);
}

#[test]
fn reject_logs_a_drop_and_dead_letters_only_with_a_dlx() {
    let f = Fixture::new();
    let q = f.open(&[("x-dead-letter-exchange", ms("dlx"))]);
    q.publish(&msg("a", None), None).unwrap();
    q.publish(&msg("b", None), None).unwrap();
    let (a, _) = q.get(false).unwrap().unwrap();
    let (b, _) = q.get(false).unwrap().unwrap();
    q.reject(&[a.msg_id, 999]).unwrap();
    q.settle(&[b.msg_id]).unwrap();
    assert_eq!(f.letters.take(), vec![("a".into(), Reason::Rejected)]);
    q.sync_now();
    drop(q);
    assert_eq!(drops(&f), vec![(Reason::Rejected, vec![a.msg_id])]);
}

#[test]
fn a_large_expired_backlog_is_dead_lettered_in_batches() {
    let f = Fixture::new();
    let q = f.open(&[
        ("x-message-ttl", Value::I32(5)),
        ("x-dead-letter-exchange", ms("")),
    ]);
    let n = 3 * 256 + 7;
    for i in 0..n {
        q.publish(&msg(&format!("{i}"), None), None).unwrap();
    }
    f.clock.advance(5);
    assert!(q.get(true).unwrap().is_none());
    let got = f.letters.take();
    assert_eq!(got.len(), n);
    assert!(got.iter().all(|(_, r)| *r == Reason::Expired));
    assert_eq!(got[n - 1].0, format!("{}", n - 1));
}

#[test]
fn a_plain_queue_keeps_no_side_table_and_never_reads_the_clock() {
    #[derive(Debug)]
    struct NoClock;
    impl crate::clock::Clock for NoClock {
        fn now_ms(&self) -> u64 {
            panic!("a plain queue read the clock")
        }
    }
    let f = Fixture::new();
    let env = f.env().with_clock(Arc::new(NoClock));
    let q = Queue::open(
        spec("q", true, args(&[("x-other", ms("v"))])),
        Arc::from("/"),
        PathBuf::from("/data/q"),
        env,
    )
    .unwrap();
    let taker = Taker::new(2);
    q.consume(Arc::from("c"), taker.clone(), false, false)
        .unwrap();
    for b in ["a", "b", "c"] {
        q.publish(&msg(b, None), None).unwrap();
    }
    let ids: Vec<u64> = taker.got.lock().iter().map(|d| d.msg_id).collect();
    q.reject(&ids[..1]).unwrap();
    q.requeue(&ids[1..]).unwrap();
    assert_eq!(bodies(&q), vec!["b", "c"]);
    assert!(!q.has_side_table());
    assert_eq!(q.next_expiry(), NEVER);
}

#[test]
fn an_expired_head_that_cannot_be_logged_is_neither_delivered_nor_spun_on() {
    // The Drop is appended before the state changes: when the log refuses
    // writes (after a failed fsync) the expired head stays, and every path
    // that meets it stops instead of delivering it or retrying forever.
    // Manual rounds: a background round must not make the publish durable
    // before the failing `sync_now` (the test then saw no failure).
    let f = Fixture::with_manual_rounds();
    let q = f.open(&[("x-message-ttl", Value::I32(100))]);
    q.publish(&msg("old", None), None).unwrap();
    f.io.fail_next_sync();
    q.sync_now();
    f.clock.advance(200);
    assert!(q.get(true).is_err());
    q.expire(f.now());
    let t = Taker::new(10);
    q.consume(Arc::from("t"), t.clone(), true, false).unwrap();
    q.dispatch();
    assert!(t.bodies().is_empty());
    assert_eq!(q.counts().0, 1);
}

//! Streams over the crash-simulating I/O backend with a manual clock:
//! offsets, credit, tail following, confirms across a crash, retention.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::clock::{Clock, ManualClock, NEVER};
use crate::error::ErrorKind;
use crate::queue::{ConfirmToken, Enqueued, QueueEnv, QueueSpec};
use crate::source::Source;
use crate::syncer::Syncer;
use crate::test_support::{message, ms as s, Confirms, Taker};
use ferry_log::{FileIo, LogConfig, SimIo};
use ferry_model::message::Message;
use ferry_model::{Table, Value};
use std::path::PathBuf;
use std::sync::Arc;

pub(super) struct Fixture {
    pub(super) io: SimIo,
    pub(super) clock: Arc<ManualClock>,
    pub(super) env: QueueEnv,
    args: Table,
}

impl Fixture {
    pub(super) fn new(extra: &[(&str, Value)]) -> Self {
        let mut args = Table::new();
        args.insert("x-queue-type", s("stream"));
        for (k, v) in extra {
            args.insert(*k, v.clone());
        }
        let io = SimIo::new();
        let clock = ManualClock::new(1_000_000);
        // Syncs run on the publishing thread: commits are deterministic.
        let env = QueueEnv::new(io.shared(), Syncer::inline(), LogConfig::default(), 0)
            .with_clock(clock.clone());
        Fixture {
            io,
            clock,
            env,
            args,
        }
    }

    pub(super) fn open(&self) -> Arc<Stream> {
        let spec = QueueSpec {
            name: Arc::from("s"),
            durable: true,
            exclusive_owner: None,
            auto_delete: false,
            arguments: self.args.clone(),
        };
        Stream::open(
            spec,
            Arc::from("/"),
            PathBuf::from("/data/s"),
            self.env.clone(),
        )
        .unwrap()
    }
}

pub(super) fn msg(body: &str, persistent: bool) -> Arc<Message> {
    Arc::new(Message {
        routing_key: Arc::from("s"),
        ..message(body, persistent)
    })
}

pub(super) fn publish_n(st: &Stream, from: usize, n: usize) {
    for i in from..from + n {
        st.publish(&msg(&format!("m{i}"), true), None).unwrap();
    }
}

pub(super) fn consume_at(st: &Stream, credit: u32, offset: Option<Value>) -> Arc<Taker> {
    let t = Taker::new(credit);
    let mut args = Table::new();
    if let Some(v) = offset {
        args.insert("x-stream-offset", v);
    }
    let how = StreamConsume {
        no_ack: false,
        prefetch: credit.max(1),
        arguments: &args,
    };
    st.consume(Arc::from("c"), t.clone(), how).unwrap();
    st.dispatch();
    t
}

#[test]
fn reads_do_not_remove_and_credit_bounds_what_is_delivered() {
    let f = Fixture::new(&[]);
    let st = f.open();
    publish_n(&st, 0, 10);
    let a = consume_at(&st, 3, Some(s("first")));
    assert_eq!(a.offsets(), vec![0, 1, 2]);
    // An ack gives credit back; nothing leaves the stream.
    a.grant(2);
    st.settle(&[0, 1]).unwrap();
    assert_eq!(a.offsets(), vec![0, 1, 2, 3, 4]);
    let b = consume_at(&st, 100, Some(s("first")));
    assert_eq!(b.bodies().len(), 10);
    assert_eq!((st.counts(), st.consumer_count()), ((10, 0), 2));
}

#[test]
fn every_offset_spec_starts_where_rabbitmq_does() {
    let f = Fixture::new(&[]);
    let st = f.open();
    for i in 0..6 {
        st.publish(&msg(&format!("m{i}"), false), None).unwrap();
        f.clock.advance(1_000);
    }
    let at = |v: Option<Value>| consume_at(&st, 100, v).offsets();
    assert_eq!(at(None), Vec::<u64>::new());
    assert_eq!(at(Some(s("next"))), Vec::<u64>::new());
    assert_eq!(at(Some(s("first"))), (0..6).collect::<Vec<_>>());
    assert_eq!(at(Some(s("last"))), vec![5]);
    assert_eq!(at(Some(Value::I64(4))), vec![4, 5]);
    assert_eq!(at(Some(Value::I64(99))), Vec::<u64>::new());
    assert_eq!(at(Some(Value::I32(-1))), (0..6).collect::<Vec<_>>());
    // Published at 1_000_000 + i * 1000 ms; timestamps are in seconds.
    assert_eq!(at(Some(Value::Timestamp(1_003))), vec![3, 4, 5]);
    assert_eq!(at(Some(Value::Timestamp(0))), (0..6).collect::<Vec<_>>());
    assert_eq!(at(Some(Value::Timestamp(9_999_999))), Vec::<u64>::new());
    // Now is 1_006_000: "2s" means from 1_004_000 on.
    assert_eq!(at(Some(s("2s"))), vec![4, 5]);
}

#[test]
fn consumers_follow_the_tail_when_appends_commit() {
    let f = Fixture::new(&[]);
    let st = f.open();
    publish_n(&st, 0, 2);
    let tail = consume_at(&st, 10, None);
    let from2 = consume_at(&st, 10, Some(Value::I64(1)));
    assert!(tail.offsets().is_empty());
    publish_n(&st, 2, 3);
    assert_eq!(tail.offsets(), vec![2, 3, 4]);
    assert_eq!(from2.offsets(), vec![1, 2, 3, 4]);
    assert_eq!(tail.bodies(), vec!["m2", "m3", "m4"]);
}

#[test]
fn rabbitmq_refusals_for_consumers_and_queue_operations() {
    let f = Fixture::new(&[]);
    let st = f.open();
    let args = Table::new();
    let t = Taker::new(1);
    let err = |no_ack, prefetch| {
        let how = StreamConsume {
            no_ack,
            prefetch,
            arguments: &args,
        };
        st.consume(Arc::from("c"), t.clone(), how).unwrap_err()
    };
    let e = err(true, 0);
    assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
    assert_eq!(
        e.to_string(),
        "consumer prefetch count is not set for 'queue 's' in vhost '/''"
    );
    let e = err(true, 5);
    assert_eq!(e.kind(), ErrorKind::NotImplemented);
    assert_eq!(
        e.to_string(),
        "automatic acknowledgement not supported by stream queues queue 's' in vhost '/'"
    );
    let src: Arc<dyn Source> = st.clone();
    assert_eq!(src.kind(), "stream");
    let e = src.requeue(&[0]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "basic.nack and basic.reject not supported by stream queues queue 's' in vhost '/'"
    );
    assert_eq!(
        src.reject(&[0]).unwrap_err().kind(),
        ErrorKind::NotImplemented
    );
    assert!(src.abandon(&[0]).is_ok());
}

#[test]
fn confirmed_messages_survive_a_crash_with_their_offsets_and_times() {
    for seed in 0..30 {
        let f = Fixture::new(&[]);
        let st = f.open();
        let sink = Arc::new(Confirms::default());
        for i in 0..20u64 {
            let token = ConfirmToken {
                sink: sink.clone(),
                seq: i,
            };
            let r = st
                .publish(&msg(&format!("m{i}"), true), Some(token))
                .unwrap();
            assert_eq!(r, Enqueued::Deferred);
            f.clock.advance(10);
        }
        let confirmed = sink.ok.lock().clone();
        assert_eq!(
            confirmed,
            (0..20).collect::<Vec<_>>(),
            "inline syncs confirm all"
        );
        drop(st);
        f.io.crash(seed);
        let st = f.open();
        let all = consume_at(&st, 1000, Some(s("first")));
        let expect: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
        assert_eq!(all.bodies(), expect, "seed {seed}");
        assert_eq!(all.offsets(), (0..20).collect::<Vec<_>>());
        // The publish times came back too (all within second 1000).
        let t = consume_at(&st, 1000, Some(Value::Timestamp(1_000)));
        assert_eq!(t.offsets().len(), 20);
        let t = consume_at(&st, 1000, Some(Value::Timestamp(1_001)));
        assert!(t.offsets().is_empty());
        // Appends continue at the next offset after the restart.
        st.publish(&msg("after", true), None).unwrap();
        assert_eq!(st.offsets(), (0, 21, 21));
    }
}

#[test]
fn unconfirmed_tail_may_vanish_but_never_changes_a_committed_offset() {
    for seed in 0..20 {
        let f = Fixture::new(&[]);
        let st = f.open();
        publish_n(&st, 0, 5);
        drop(st);
        f.io.crash(seed);
        let st = f.open();
        let all = consume_at(&st, 100, Some(s("first")));
        assert_eq!(
            all.bodies(),
            vec!["m0", "m1", "m2", "m3", "m4"],
            "seed {seed}"
        );
    }
}

/// 235-byte records in 4 KiB segments: 17 records a segment.
pub(super) fn retention_fixture(extra: &[(&str, Value)]) -> Fixture {
    let mut args = vec![("x-stream-max-segment-size-bytes", Value::I32(4096))];
    args.extend(extra.iter().cloned());
    Fixture::new(&args)
}

pub(super) fn big(i: usize) -> Arc<Message> {
    msg(&format!("{i:0>200}"), true)
}

#[test]
fn max_length_bytes_deletes_oldest_segments_and_moves_readers() {
    let f = retention_fixture(&[("x-max-length-bytes", Value::I32(10_000))]);
    let st = f.open();
    let reader = consume_at(&st, 1, Some(s("first")));
    assert!(reader.offsets().is_empty());
    for i in 0..200 {
        st.publish(&big(i), None).unwrap();
    }
    assert_eq!(reader.offsets(), vec![0]);
    let (first, next, _) = st.offsets();
    assert_eq!(next, 200);
    assert!(first > 100, "old segments deleted, first = {first}");
    // Segment granularity, evaluated when a segment rolls: at most the
    // limit plus the active segment.
    let bytes = st
        .inner
        .lock()
        .log
        .segments()
        .iter()
        .map(|s| s.bytes)
        .sum::<u64>();
    assert!(
        bytes <= 10_000 + 4096 && bytes > 10_000 - 2 * 4096,
        "{bytes}"
    );
    // The reader stood at offset 1: it moves to the new first.
    reader.grant(1);
    st.dispatch();
    assert_eq!(reader.offsets(), vec![0, first]);
    let files = f.io.list(&PathBuf::from("/data/s")).unwrap();
    let logs = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"));
    assert!(logs.count() <= 3);
}

#[test]
fn max_age_deletes_segments_on_the_timer_and_after_a_restart() {
    let f = retention_fixture(&[("x-max-age", s("10s"))]);
    let st = f.open();
    for i in 0..40 {
        st.publish(&big(i), None).unwrap();
        f.clock.advance(100);
    }
    // Records 0..=14 in the first segment (each carries its
    // x-stream-offset header), the last at 1_001_400.
    assert_eq!(st.offsets().0, 0);
    let due = st.retention_deadline();
    assert_eq!(due, 1_000_000 + 14 * 100 + 10_000 + 1);
    assert_eq!(f.env.timer.next(), due, "posted to the broker's timer");
    st.enforce_retention(due - 1);
    assert_eq!(st.offsets().0, 0, "not yet");
    f.clock.set(due);
    st.enforce_retention(due);
    assert_eq!(st.offsets().0, 15);
    let next_due = st.retention_deadline();
    assert_eq!(next_due, 1_000_000 + 29 * 100 + 10_000 + 1);
    // Much later, after a restart: everything sealed is gone at open; the
    // active segment stays.
    drop(st);
    f.clock.set(2_000_000);
    let st = f.open();
    let (first, next, _) = st.offsets();
    assert_eq!((first, next), (30, 40));
    assert_eq!(st.retention_deadline(), NEVER);
    let all = consume_at(&st, 100, Some(s("first")));
    assert_eq!(all.offsets(), (30..40).collect::<Vec<_>>());
}

#[test]
fn timestamps_are_found_across_segments_after_a_restart() {
    let f = retention_fixture(&[]);
    let st = f.open();
    for i in 0..60 {
        st.publish(&big(i), None).unwrap();
        f.clock.advance(1_000);
    }
    drop(st);
    let st = f.open();
    // Record i was published at 1_000_000 + i * 1000 ms = (1000 + i) s.
    let t = consume_at(&st, 100, Some(Value::Timestamp(1_037)));
    assert_eq!(t.offsets(), (37..60).collect::<Vec<_>>());
    assert_eq!(f.clock.now_ms(), 1_060_000);
}

#[test]
fn delete_cancels_consumers_and_removes_the_files() {
    let f = Fixture::new(&[]);
    let st = f.open();
    publish_n(&st, 0, 3);
    let t = consume_at(&st, 1, Some(s("first")));
    assert_eq!(st.delete().unwrap(), 0);
    assert!(*t.cancelled.lock());
    assert!(!f.io.exists(&PathBuf::from("/data/s")));
    assert_eq!(
        st.publish(&msg("x", true), None).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn reopening_rebuilds_the_state_live_publishes_and_retention_left() {
    // The live path (`Stream::append` → `commit` → `apply`, the syncs'
    // commits, retention's Truncates) and replay at open go through the
    // same `apply`: the state a stream has after a run is the state it
    // opens with. Publish times step back sometimes (clamped to the
    // newest), segments roll every few records, and byte retention cuts.
    for seed in 0..10u64 {
        let f = retention_fixture(&[("x-max-length-bytes", Value::I32(20_000))]);
        let st = f.open();
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for i in 0..150 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            match rng % 8 {
                0 => f.clock.set(f.clock.now_ms() - 5_000),
                _ => f.clock.advance(rng % 3_000),
            }
            st.publish(&big(i), None).unwrap();
        }
        st.sync_now();
        // Live retention runs when a segment rolls, a reopen's at open (on
        // the sizes of then): evaluate once more at the same clock so both
        // sides decided on the same sizes.
        st.enforce_retention(f.clock.now_ms());
        let live = st.inner.lock().state.clone();
        assert!(live.first() > 0 && live.sealed_ts().len() > 2, "{live:?}");
        assert_eq!(live.committed(), 150);
        drop(st);
        let st = f.open();
        assert_eq!(st.inner.lock().state, live, "seed {seed}");
    }
}

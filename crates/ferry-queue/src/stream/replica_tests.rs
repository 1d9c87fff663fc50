//! A replicated stream's apply path (`replica.rs`) over the
//! crash-simulating I/O: publishes are proposed, not appended; committed
//! records land at the group's offsets with the offset header and a
//! monotone publish time; a record held already is skipped, a gap is an
//! error, an undecodable command takes no offset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::tests::{consume_at, msg, Fixture};
use super::*;
use crate::clock::Clock;
use crate::queue::{ConfirmSink, ConfirmToken, Enqueued, ProposeDone, Proposer, QueueSpec};
use crate::test_support::ms as s;
use bytes::Bytes;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;

/// Keeps what the stream proposes; the test commits it.
#[derive(Default)]
struct Held(Mutex<Vec<(Vec<Bytes>, Option<ProposeDone>)>>);

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

impl Proposer for Held {
    fn propose(&self, records: Vec<Bytes>, done: Option<ProposeDone>) {
        self.0.lock().push((records, done));
    }
}

#[derive(Debug, Default)]
struct Acks(Mutex<(Vec<u64>, Vec<u64>)>);

impl ConfirmSink for Acks {
    fn confirmed(&self, seqs: &[u64]) {
        self.0.lock().0.extend_from_slice(seqs);
    }
    fn failed(&self, seqs: &[u64]) {
        self.0.lock().1.extend_from_slice(seqs);
    }
}

fn open(f: &Fixture, held: &Arc<Held>) -> Arc<Stream> {
    let spec = QueueSpec {
        name: Arc::from("s"),
        durable: true,
        exclusive_owner: None,
        auto_delete: false,
        arguments: [("x-queue-type", s("stream"))].into_iter().collect(),
    };
    let args = spec.arguments.clone();
    Stream::open_replica(
        spec,
        &args,
        Arc::from("/"),
        PathBuf::from("/data/rs"),
        f.env.clone(),
        held.clone(),
    )
    .unwrap()
}

#[test]
fn a_publish_is_proposed_and_appended_only_once_committed_at_the_groups_offset() {
    let f = Fixture::new(&[]);
    let held = Arc::new(Held::default());
    let st = open(&f, &held);
    let acks = Arc::new(Acks::default());
    let token = ConfirmToken {
        sink: acks.clone(),
        seq: 7,
    };
    let r = st.publish(&msg("m0", true), Some(token)).unwrap();
    assert!(matches!(r, Enqueued::Deferred));
    assert_eq!(st.counts(), (0, 0), "nothing appended before the commit");
    let (records, done) = held.0.lock().pop().expect("proposed");
    assert_eq!(records.len(), 1);

    // The group commits it: every replica applies it at offset 0.
    assert_eq!(
        st.apply_committed(0, records[0].clone()).unwrap(),
        Applied::Offset
    );
    done.expect("a confirm waits")(Ok(()));
    assert_eq!(acks.0.lock().0, vec![7]);
    let c = consume_at(&st, 10, Some(s("first")));
    assert_eq!(c.offsets(), vec![0]);
    assert_eq!(c.bodies(), vec!["m0"]);

    // Held already (the group's log applied again after a restart): skipped.
    assert_eq!(
        st.apply_committed(0, records[0].clone()).unwrap(),
        Applied::Offset
    );
    assert_eq!(st.counts(), (1, 0));
    // A gap is this replica's failure, never papered over.
    assert!(st.apply_committed(5, records[0].clone()).is_err());
    // A command that does not decode takes no offset, on every replica.
    assert_eq!(
        st.apply_committed(1, Bytes::from_static(b"junk")).unwrap(),
        Applied::Skipped
    );
    assert_eq!(
        st.apply_committed(1, records[0].clone()).unwrap(),
        Applied::Offset
    );
    assert_eq!(st.counts(), (2, 0));
}

#[test]
fn a_refused_proposal_nacks_and_publish_times_never_go_back() {
    let f = Fixture::new(&[]);
    let held = Arc::new(Held::default());
    let st = open(&f, &held);
    let acks = Arc::new(Acks::default());
    st.publish(
        &msg("late", true),
        Some(ConfirmToken {
            sink: acks.clone(),
            seq: 1,
        }),
    )
    .unwrap();
    f.clock.set(f.clock.now_ms() - 500_000);
    st.publish(&msg("early", true), None).unwrap();
    let proposed: Vec<_> = held.0.lock().drain(..).collect();
    let mut it = proposed.into_iter();
    let (late, done) = it.next().unwrap();
    let (early, _) = it.next().unwrap();
    done.unwrap()(Err("lost the leadership".into()));
    assert_eq!(acks.0.lock().1, vec![1], "nacked");
    st.apply_committed(0, late[0].clone()).unwrap();
    st.apply_committed(1, early[0].clone()).unwrap();
    let (_, _, committed) = st.offsets();
    assert_eq!(committed, 2);
    let ts: Vec<u64> = (0..2)
        .map(|o| match st.read(o, ReadLimits::bytes(1 << 20)).unwrap() {
            ReadBatch::Records { records, .. } => records[0].timestamp_ms,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(ts[1] >= ts[0], "publish times never go back: {ts:?}");
}

/// Commits `n` proposed publishes of `st` (bodies `{tag}{i}`) at the
/// group's next offsets, starting at `at`.
fn commit_n(st: &Stream, held: &Held, tag: &str, at: u64, n: u64) {
    for i in 0..n {
        st.publish(&msg(&format!("{tag}{i}"), true), None).unwrap();
        let (records, _) = held.0.lock().pop().expect("proposed");
        st.apply_committed(at + i, records[0].clone()).unwrap();
    }
    st.sync_now();
}

fn exported(st: &Stream, upto: u64) -> (u64, Vec<(u64, Bytes)>) {
    let mut out = Vec::new();
    let first = st
        .export_records(upto, &mut |o, p| {
            out.push((o, Bytes::copy_from_slice(p)));
            Ok(())
        })
        .unwrap();
    (first, out)
}

#[test]
fn a_lagging_replica_installs_a_leaders_records_appending_or_replacing_its_log() {
    let f = Fixture::new(&[]);
    let held = Arc::new(Held::default());
    let leader = open(&f, &held);
    commit_n(&leader, &held, "m", 0, 10);
    let (first, recs) = exported(&leader, 10);
    assert_eq!((first, recs.len()), (0, 10));

    // A replica holding the first 4: the rest is appended.
    let f2 = Fixture::new(&[]);
    let held2 = Arc::new(Held::default());
    let replica = open(&f2, &held2);
    for (o, p) in recs.iter().take(4) {
        replica.apply_committed(*o, p.clone()).unwrap();
    }
    let next = replica
        .install_records(0, &mut recs.iter().map(|(_, p)| Ok(p.clone())))
        .unwrap();
    assert_eq!(next, 10);
    assert_eq!(
        exported(&replica, 10).1,
        recs,
        "the same bytes at the same offsets"
    );

    // A snapshot that starts past this replica's end replaces its log.
    let f3 = Fixture::new(&[]);
    let held3 = Arc::new(Held::default());
    let behind = open(&f3, &held3);
    behind.apply_committed(0, recs[0].1.clone()).unwrap();
    let c = consume_at(&behind, 100, Some(s("first")));
    let next = behind
        .install_records(6, &mut recs[6..].iter().map(|(_, p)| Ok(p.clone())))
        .unwrap();
    assert_eq!(next, 10);
    let (first, got) = exported(&behind, 10);
    assert_eq!((first, got.as_slice()), (6, &recs[6..]));
    assert_eq!(behind.offsets().0, 6, "first retained offset");
    // Its consumer moved up to the new first offset and reads on.
    assert_eq!(c.offsets(), vec![0, 6, 7, 8, 9]);
    // It goes on from there.
    commit_n(&behind, &held3, "n", 10, 2);
    assert_eq!(behind.offsets().1, 12);
}

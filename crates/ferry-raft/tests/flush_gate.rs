//! The proposer's gate (`RaftLog::append_mark` / `flushed_past`): it
//! opens only once an append handed to the log after the mark is settled
//! — made durable by a durability round, or failed — never before.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use ferry_log::SimIo;
use ferry_queue::syncer::Syncer;
use ferry_raft::{Batch, Entry, LogId, RaftLog};
use openraft::{CommittedLeaderId, EntryPayload};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};

fn entry(index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Batch::new(vec![Bytes::from(format!("m{index}"))])),
    }
}

fn open() -> (SimIo, Arc<Syncer>, RaftLog) {
    common::open_sim()
}

/// Polls `f` once: has it finished?
fn done(f: std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
    f.poll(&mut Context::from_waker(Waker::noop())).is_ready()
}

/// Hands entry `index` to the log, counting its callbacks (and their
/// failures); whether the log took it.
fn try_append(
    log: &RaftLog,
    index: u64,
    calls: &Arc<AtomicUsize>,
    failed: &Arc<AtomicUsize>,
) -> Result<(), ferry_raft::RaftLogError> {
    let (c, f) = (calls.clone(), failed.clone());
    log.append_entries(
        vec![entry(index)],
        Box::new(move |r| {
            c.fetch_add(1, Ordering::SeqCst);
            if r.is_err() {
                f.fetch_add(1, Ordering::SeqCst);
            }
        }),
    )
}

/// Appends entry `index` (the log must take it).
fn append(log: &RaftLog, index: u64, calls: &Arc<AtomicUsize>, failed: &Arc<AtomicUsize>) {
    try_append(log, index, calls, failed).expect("append");
}

#[test]
fn the_gate_opens_when_the_append_after_the_mark_is_durable() {
    let (_io, syncer, log) = open();
    let (calls, failed) = (Arc::default(), Arc::default());
    let mark = log.append_mark();
    let mut gate = pin!(log.flushed_past(mark));
    assert!(!done(gate.as_mut()), "open before any append");
    append(&log, 0, &calls, &failed);
    assert!(!done(gate.as_mut()), "open before the round");
    syncer.run_round();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(done(gate.as_mut()), "still closed after the round");

    // A mark taken now waits for the next append, not the one settled.
    let mark = log.append_mark();
    let mut gate = pin!(log.flushed_past(mark));
    assert!(!done(gate.as_mut()), "opened by an append before its mark");
    append(&log, 1, &calls, &failed);
    append(&log, 2, &calls, &failed);
    syncer.run_round();
    assert!(done(gate.as_mut()));
    assert_eq!(failed.load(Ordering::SeqCst), 0);
}

#[test]
fn an_empty_append_settles_at_once() {
    let (_io, _syncer, log) = open();
    let mark = log.append_mark();
    let mut gate = pin!(log.flushed_past(mark));
    log.append_entries(Vec::new(), Box::new(|r| assert!(r.is_ok())))
        .expect("append");
    assert!(done(gate.as_mut()));
}

#[test]
fn a_failed_round_opens_the_gate_too() {
    let (io, syncer, log) = open();
    let (calls, failed) = (Arc::default(), Arc::default());
    let mark = log.append_mark();
    let mut gate = pin!(log.flushed_past(mark));
    append(&log, 0, &calls, &failed);
    io.fail_next_sync();
    syncer.run_round();
    assert_eq!(failed.load(Ordering::SeqCst), 1, "the round did not fail");
    assert!(
        done(gate.as_mut()),
        "a failed append left the proposer waiting"
    );

    // The log is poisoned now: an append fails at once, and settles.
    let mark = log.append_mark();
    let mut gate = pin!(log.flushed_past(mark));
    let taken = try_append(&log, 1, &calls, &failed);
    assert!(
        taken.is_err() || failed.load(Ordering::SeqCst) == 2,
        "a poisoned log took an append"
    );
    assert!(
        done(gate.as_mut()),
        "an append a poisoned log refused left the proposer waiting"
    );
}

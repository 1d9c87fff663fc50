//! Power cuts (`SimIo::crash`: unsynced writes lost or torn) under random
//! appends, durability rounds, votes, truncations and purges. After every
//! cut the reopened log must hold every entry reported durable and still
//! current, only entries that were appended (the newest content at their
//! index), contiguous after the purged pointer, and the last saved vote.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use ferry_log::{LogConfig, RoundPolicy, SimIo};
use ferry_queue::syncer::Syncer;
use ferry_raft::{Batch, Entry, LogId, RaftLog, Vote};
use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, EntryPayload};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        ..LogConfig::default()
    }
}

fn entry(index: u64, term: u64, gen: u64, n: usize) -> Entry {
    let commands = (0..n)
        .map(|j| Bytes::from(format!("{index}:{j}:{gen}:{}", "x".repeat(j * 17))))
        .collect();
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: if n == 0 {
            EntryPayload::Blank
        } else {
            EntryPayload::Normal(Batch::new(commands))
        },
    }
}

fn open(io: &SimIo, syncer: &Arc<Syncer>) -> RaftLog {
    RaftLog::open(io.shared(), Path::new("/g"), cfg(), syncer.clone()).expect("open")
}

/// What the test knows: the entries it appended (current content per
/// index) and which of them were reported durable.
#[derive(Default)]
struct Model {
    current: BTreeMap<u64, Entry>,
    durable: Arc<Mutex<BTreeMap<u64, Entry>>>,
    purged: Option<LogId>,
    vote: Option<Vote>,
}

fn run(seed: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    let mut rng = StdRng::seed_from_u64(seed);
    let io = SimIo::new();
    let syncer = Syncer::manual(RoundPolicy::per_file());
    let mut log = open(&io, &syncer);
    let mut m = Model::default();
    let mut gen = 0;
    let mut term = 1;
    for _ in 0..rng.gen_range(5..60) {
        match rng.gen_range(0..10) {
            0..=4 => {
                let next = m
                    .current
                    .keys()
                    .next_back()
                    .map_or(m.purged.map_or(0, |p| p.index + 1), |k| k + 1);
                let batch: Vec<Entry> = (0..rng.gen_range(1..4))
                    .map(|i| entry(next + i, term, gen, rng.gen_range(0..4)))
                    .collect();
                for e in &batch {
                    m.current.insert(e.log_id.index, e.clone());
                }
                let durable = m.durable.clone();
                let mine = batch.clone();
                log.append_entries(
                    batch,
                    Box::new(move |r| {
                        if r.is_ok() {
                            let mut d = durable.lock();
                            for e in mine {
                                d.insert(e.log_id.index, e);
                            }
                        }
                    }),
                )
                .expect("append");
            }
            5..=6 => {
                syncer.run_round();
            }
            7 => {
                term += 1;
                let v = Vote::new(term, rng.gen_range(1..4));
                rt.block_on(log.save_vote(&v)).expect("vote");
                m.vote = Some(v);
            }
            8 => {
                // A follower's conflicting suffix: cut from a random held entry.
                let held: Vec<u64> = m.current.keys().copied().collect();
                if let Some(&from) = held.get(rng.gen_range(0..held.len().max(1))) {
                    let id = m.current[&from].log_id;
                    rt.block_on(log.truncate(id)).expect("truncate");
                    m.current.split_off(&from);
                    m.durable.lock().split_off(&from);
                    gen += 1;
                }
            }
            _ => {
                // Purge a durable prefix (what a snapshot covers).
                let d = m.durable.lock().clone();
                let upto = d
                    .keys()
                    .copied()
                    .filter(|k| m.current.contains_key(k))
                    .nth(rng.gen_range(0..3));
                if let Some(k) = upto {
                    let id = m.current[&k].log_id;
                    rt.block_on(log.purge(id)).expect("purge");
                    m.purged = Some(id);
                    m.current = m.current.split_off(&(k + 1));
                    let rest = m.durable.lock().split_off(&(k + 1));
                    *m.durable.lock() = rest;
                }
            }
        }
    }
    drop(log);
    io.crash(seed);
    let syncer2 = Syncer::manual(RoundPolicy::per_file());
    let log = open(&io, &syncer2);
    let (purged, last) = log.log_state();
    assert_eq!(purged, m.purged, "seed {seed}: purged pointer");
    assert_eq!(log.vote(), m.vote, "seed {seed}: vote");
    let first = purged.map_or(0, |p| p.index + 1);
    let got = log.entries(first..).expect("read");
    // Contiguous from the purged pointer, each the newest content at its index.
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.log_id.index, first + i as u64, "seed {seed}: hole");
        assert_eq!(
            Some(e),
            m.current.get(&e.log_id.index),
            "seed {seed}: phantom or stale entry"
        );
    }
    assert_eq!(
        last,
        got.last().map(|e| e.log_id).or(purged),
        "seed {seed}: last log id"
    );
    // Everything reported durable is there.
    for (k, e) in m.durable.lock().iter() {
        assert!(
            got.iter().any(|g| g == e),
            "seed {seed}: durable entry {k} lost"
        );
    }
    syncer.stop();
    syncer2.stop();
}

#[test]
fn power_cuts_keep_every_durable_entry_and_invent_none() {
    for seed in 0..300 {
        run(seed);
    }
}

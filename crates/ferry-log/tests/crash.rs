//! Power-loss tests on SimIo: whatever a crash does, every record reported
//! durable survives intact, nothing corrupt or invented is served, and the
//! log keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ferry_log::{Log, LogConfig, LogError, SimIo};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the log should contain: every payload ever at each index (the
/// current generation last), so resurrected purges are recognised and
/// resurrected truncations are not.
#[derive(Default)]
struct Model {
    records: Vec<Vec<u8>>,
    salt: u64,
}

impl Model {
    fn append(&mut self, log: &mut Log) {
        let i = log.next_index();
        assert_eq!(i, self.records.len() as u64);
        let p = payload(i, self.salt);
        log.append(&p).unwrap();
        self.records.push(p);
    }
}

/// Checks a freshly recovered log against the model and what was durable.
fn verify(log: &Log, model: &Model, durable_next: u64, seed: u64) {
    let next = log.next_index();
    assert!(
        next >= durable_next,
        "seed {seed}: durable records lost (next {next}, durable up to {durable_next})"
    );
    assert!(
        next <= model.records.len() as u64,
        "seed {seed}: invented records"
    );
    assert!(log.first_index() <= durable_next.max(log.first_index()));
    let mut expect = log.first_index();
    for item in log.reader(log.first_index()) {
        let (pos, rec) = item.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(rec.index, expect, "seed {seed}");
        assert_eq!(
            rec.payload.as_ref(),
            model.records[rec.index as usize].as_slice(),
            "seed {seed}: record {} differs",
            rec.index
        );
        assert_eq!(log.read(&pos).unwrap().payload, rec.payload);
        expect += 1;
    }
    assert_eq!(expect, next, "seed {seed}: replay stopped early");
    assert_eq!(log.durable_index(), next.checked_sub(1), "seed {seed}");
}

fn random_workload(log: &mut Log, model: &mut Model, rng: &mut StdRng, steps: usize) {
    for _ in 0..steps {
        match rng.gen_range(0..100) {
            0..=49 => {
                for _ in 0..rng.gen_range(1..8) {
                    model.append(log);
                }
            }
            50..=59 => log.flush().unwrap(),
            60..=74 => sync(log),
            75..=82 => {
                // Group commit: appends land while the fsync runs.
                let job = log.prepare_sync().unwrap();
                for _ in 0..rng.gen_range(0..5) {
                    model.append(log);
                }
                if let Some(job) = job {
                    let outcome = job.run();
                    log.complete_sync(outcome);
                }
            }
            83..=86 => log.roll().unwrap(),
            87..=93 => {
                let upto = rng.gen_range(log.first_index()..=log.next_index());
                log.purge_before(upto).unwrap();
            }
            _ => {
                let first = log.first_index();
                let next = log.next_index();
                if next > first {
                    let keep_from = rng.gen_range(first..=next);
                    log.truncate_from(keep_from).unwrap();
                    model.records.truncate(keep_from as usize);
                    model.salt += 1;
                }
            }
        }
    }
}

/// Seeds per randomized test; raise `FERRY_LOG_CRASH_SEEDS` for a soak run.
fn seeds(default: u64) -> std::ops::Range<u64> {
    let n = std::env::var("FERRY_LOG_CRASH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    0..n
}

fn crash_config(seed: u64) -> LogConfig {
    LogConfig {
        segment_bytes: [600, 1024, 4096][(seed % 3) as usize],
        index_interval_bytes: [64, 128, 1000][(seed % 3) as usize],
        first_index: seed % 2 * 1000,
    }
}

#[test]
fn durable_records_survive_random_crashes() {
    let dir = std::path::PathBuf::from("/crash/log");
    let mut stats = Stats::default();
    for seed in seeds(300) {
        let sim = SimIo::new();
        let cfg = crash_config(seed);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut model = Model {
            records: (0..cfg.first_index).map(|_| Vec::new()).collect(),
            salt: 0,
        };
        let (mut log, _) = Log::open(sim.shared(), &dir, cfg.clone()).unwrap();
        for round in 0..3 {
            random_workload(&mut log, &mut model, &mut rng, 40);
            // Sometimes power fails while an fsync is in flight. (Preparing
            // may itself advance durability when nothing is left to sync.)
            let _in_flight = rng.gen_bool(0.3).then(|| log.prepare_sync().unwrap());
            let durable_next = log.durable_index().map_or(0, |d| d + 1);
            drop(log);
            sim.crash(seed * 10 + round);
            let opened = Log::open(sim.shared(), &dir, cfg.clone());
            let (reopened, report) =
                opened.unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
            stats.record(&report, reopened.next_index() > durable_next);
            log = reopened;
            verify(&log, &model, durable_next, seed);
            model.records.truncate(log.next_index() as usize);
            model.salt += 1;
        }
    }
    // The workload must actually hit the interesting cases.
    assert!(stats.torn > 50, "{stats:?}");
    assert!(stats.discarded > 20, "{stats:?}");
    assert!(stats.rebuilt_indexes > 50, "{stats:?}");
    assert!(stats.kept_unsynced > 50, "{stats:?}");
}

#[derive(Debug, Default)]
struct Stats {
    torn: usize,
    discarded: usize,
    rebuilt_indexes: usize,
    kept_unsynced: usize,
}

impl Stats {
    fn record(&mut self, r: &ferry_log::RecoveryReport, kept_unsynced: bool) {
        self.torn += usize::from(r.truncated_bytes > 0);
        self.discarded += usize::from(r.discarded_segments > 0);
        self.rebuilt_indexes += usize::from(r.rebuilt_indexes > 0);
        self.kept_unsynced += usize::from(kept_unsynced);
    }
}

#[test]
fn crash_while_rolling_truncates_instead_of_failing() {
    // Sync part of a segment, then fill it and roll into new ones with no
    // sync: the rolled segment may be torn while its successors exist.
    let dir = std::path::PathBuf::from("/roll");
    let mut saw_truncation = false;
    for seed in seeds(200) {
        let sim = SimIo::new();
        let (mut log, _) = Log::open(sim.shared(), &dir, small_cfg()).unwrap();
        let mut model = Model::default();
        for _ in 0..5 {
            model.append(&mut log);
        }
        sync(&mut log);
        for _ in 0..40 {
            model.append(&mut log);
            if log.next_index() % 7 == 0 {
                log.flush().unwrap();
            }
        }
        drop(log);
        sim.crash(seed);
        let (log, report) = Log::open(sim.shared(), &dir, small_cfg()).unwrap();
        saw_truncation |= report.discarded_segments > 0;
        verify(&log, &model, 5, seed);
    }
    assert!(
        saw_truncation,
        "some crash should have cut into a rolled segment"
    );
}

#[test]
fn truncation_is_durable_when_it_returns() {
    let dir = std::path::PathBuf::from("/trunc");
    for seed in seeds(100) {
        let sim = SimIo::new();
        let (mut log, _) = Log::open(sim.shared(), &dir, small_cfg()).unwrap();
        let mut model = Model::default();
        for _ in 0..80 {
            model.append(&mut log);
        }
        sync(&mut log);
        log.truncate_after(30 + seed % 40).unwrap();
        model.records.truncate(log.next_index() as usize);
        let kept = log.next_index();
        model.salt = 99;
        for _ in 0..20 {
            model.append(&mut log);
        }
        log.flush().unwrap();
        drop(log);
        sim.crash(seed);
        let (log, _) = Log::open(sim.shared(), &dir, small_cfg()).unwrap();
        verify(&log, &model, kept, seed);
    }
}

#[test]
fn interrupted_purge_leaves_a_consistent_log() {
    let dir = std::path::PathBuf::from("/purge");
    let mut saw_partial = false;
    for seed in seeds(100) {
        let sim = SimIo::new();
        let (mut log, _) = Log::open(sim.shared(), &dir, small_cfg()).unwrap();
        let mut model = Model::default();
        for _ in 0..150 {
            model.append(&mut log);
        }
        sync(&mut log);
        log.purge_before(120).unwrap();
        let first = log.first_index();
        assert!(first > 0);
        drop(log);
        sim.crash(seed);
        let (log, _) = Log::open(sim.shared(), &dir, small_cfg()).unwrap();
        assert!(log.first_index() <= first);
        saw_partial |= log.first_index() > 0 && log.first_index() < first;
        verify(&log, &model, 150, seed);
    }
    assert!(saw_partial, "some crash should have kept part of the purge");
}

#[test]
fn failed_fsync_poisons_and_fails_waiters() {
    let sim = SimIo::new();
    let dir = std::path::PathBuf::from("/poison");
    let (mut log, _) = Log::open(sim.shared(), &dir, small_cfg()).unwrap();
    let mut model = Model::default();
    for _ in 0..10 {
        model.append(&mut log);
    }
    sync(&mut log);
    for _ in 0..10 {
        model.append(&mut log);
    }
    let results: Arc<Mutex<Vec<bool>>> = Arc::default();
    let r = results.clone();
    log.on_durable(19, Box::new(move |res| r.lock().unwrap().push(res.is_ok())));
    sim.fail_next_sync();
    let outcome = log.prepare_sync().unwrap().unwrap().run();
    assert!(!outcome.is_ok());
    log.complete_sync(outcome);
    assert!(log.is_poisoned());
    assert_eq!(*results.lock().unwrap(), vec![false]);
    assert_eq!(
        log.durable_index(),
        Some(9),
        "a failed sync must not advance"
    );
    assert!(matches!(log.append(b"x"), Err(LogError::Poisoned)));
    assert!(matches!(log.prepare_sync(), Err(LogError::Poisoned)));
    assert!(matches!(log.flush(), Err(LogError::Poisoned)));
    let r = results.clone();
    log.on_durable(5, Box::new(move |res| r.lock().unwrap().push(res.is_ok())));
    assert_eq!(*results.lock().unwrap(), vec![false, false]);
    // Reads still work; a reopen recovers.
    assert_eq!(log.read_index(3).unwrap().payload, model.records[3]);
    drop(log);
    sim.crash(1);
    let (log, _) = Log::open(sim.shared(), &dir, small_cfg()).unwrap();
    verify(&log, &model, 10, 1);
}

#[test]
fn failed_write_poisons() {
    let sim = SimIo::new();
    let dir = std::path::PathBuf::from("/wpoison");
    let (mut log, _) = Log::open(sim.shared(), &dir, small_cfg()).unwrap();
    log.append(b"a").unwrap();
    sim.fail_next_write();
    assert!(matches!(log.flush(), Err(LogError::Io { .. })));
    assert!(log.is_poisoned());
    assert!(matches!(log.append(b"b"), Err(LogError::Poisoned)));
    assert!(matches!(log.roll(), Err(LogError::Poisoned)));
    assert!(matches!(log.truncate_after(0), Err(LogError::Poisoned)));
}

#[test]
fn concurrent_appends_and_syncs_keep_their_promises() {
    let dir = std::path::PathBuf::from("/concurrent");
    for seed in 0..8u64 {
        let sim = SimIo::new();
        let (log, _) = Log::open(sim.shared(), &dir, small_cfg()).unwrap();
        let log = Arc::new(Mutex::new(log));
        let confirmed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let syncer = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let job = log.lock().unwrap().prepare_sync().unwrap();
                    match job {
                        Some(job) => {
                            let outcome = job.run();
                            log.lock().unwrap().complete_sync(outcome);
                        }
                        None => std::thread::yield_now(),
                    }
                }
            })
        };
        for i in 0..2000u64 {
            let mut g = log.lock().unwrap();
            g.append(&payload(i, 0)).unwrap();
            let c = confirmed.clone();
            g.on_durable(
                i,
                Box::new(move |r| {
                    assert!(r.is_ok());
                    c.fetch_max(i + 1, Ordering::SeqCst);
                }),
            );
            drop(g);
            if i % 64 == 0 {
                std::thread::yield_now();
            }
        }
        // Let the syncer catch up with at least part of it, however busy
        // the machine is, then stop it mid-stream.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while confirmed.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Release);
        syncer.join().unwrap();
        let promised = confirmed.load(Ordering::SeqCst);
        assert!(promised > 0);
        drop(log);
        sim.crash(seed);
        let (log, _) = Log::open(sim.shared(), &dir, small_cfg()).unwrap();
        let model = Model {
            records: (0..2000).map(|i| payload(i, 0)).collect(),
            salt: 0,
        };
        verify(&log, &model, promised, seed);
    }
}

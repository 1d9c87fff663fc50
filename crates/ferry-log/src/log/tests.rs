//! White-box tests of the durability bookkeeping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::io::SimIo;
use crate::segment::{parse_header, Header};
use crate::sync::{sync_round, DeviceFlush, RoundPolicy};
use std::path::PathBuf;
use std::sync::Mutex;

fn open(sim: &SimIo) -> Log {
    let cfg = LogConfig {
        segment_bytes: 512,
        index_interval_bytes: 64,
        first_index: 0,
    };
    Log::open(sim.shared(), Path::new("/t"), cfg).unwrap().0
}

fn fill(log: &mut Log, n: usize) {
    for _ in 0..n {
        let i = log.next_index();
        log.append(format!("record {i}").as_bytes()).unwrap();
    }
}

fn run(log: &mut Log) {
    if let Some(job) = log.prepare_sync().unwrap() {
        let outcome = job.run();
        log.complete_sync(outcome);
    }
}

type Seen = Arc<Mutex<Vec<String>>>;

fn recorder(seen: &Seen, i: u64) -> DurableCallback {
    let seen = seen.clone();
    Box::new(move |r| {
        let tag = match r {
            Ok(()) => format!("{i}:ok"),
            Err(LogError::Truncated { .. }) => format!("{i}:truncated"),
            Err(e) => format!("{i}:{e}"),
        };
        seen.lock().unwrap().push(tag);
    })
}

#[test]
fn a_sync_prepared_before_a_truncation_cannot_vouch_for_new_records() {
    let sim = SimIo::new();
    let mut log = open(&sim);
    fill(&mut log, 50);
    let job = log.prepare_sync().unwrap().unwrap();
    log.truncate_from(20).unwrap();
    fill(&mut log, 30);
    let outcome = job.run();
    log.complete_sync(outcome);
    assert_eq!(log.durable_index(), Some(19));
    run(&mut log);
    assert_eq!(log.durable_index(), Some(49));
    assert!(log.trunc_floors.is_empty());
}

#[test]
fn truncation_fails_waiters_it_removes() {
    let sim = SimIo::new();
    let mut log = open(&sim);
    let seen: Seen = Arc::default();
    fill(&mut log, 10);
    for i in [3, 7, 9, 12] {
        log.on_durable(i, recorder(&seen, i));
    }
    log.truncate_after(6).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["7:truncated", "9:truncated", "12:truncated"]
    );
    fill(&mut log, 3);
    run(&mut log);
    assert_eq!(
        seen.lock().unwrap().last().map(String::as_str),
        Some("3:ok")
    );
}

#[test]
fn rolled_segments_get_sealed_by_the_next_sync() {
    let sim = SimIo::new();
    let mut log = open(&sim);
    fill(&mut log, 60);
    assert!(log.segs.sealed.len() >= 2);
    assert!(log.segs.sealed.iter().all(|s| s.seal == SealState::Pending));
    assert!(log.segs.sealed.iter().all(|s| !s.is_settled()));
    run(&mut log);
    assert!(log.segs.sealed.iter().all(Segment::is_settled));
    // Each successor's header on disk names its predecessor.
    let bases: Vec<u64> = log
        .segs
        .sealed
        .iter()
        .map(|s| s.base)
        .chain([log.segs.active.base])
        .collect();
    for (i, seg) in log.segs.sealed.iter().enumerate() {
        let next = log.segs.sealed.get(i + 1).unwrap_or(&log.segs.active);
        let mut head = [0u8; SEGMENT_HEADER_LEN as usize];
        next.file.read_at(&mut head, 0).unwrap();
        assert_eq!(
            parse_header(&head),
            Header::Valid {
                base: bases[i + 1],
                sealed_prev: Some(seg.base)
            }
        );
    }
    assert!(log.prepare_sync().unwrap().is_none());
}

#[test]
fn overlapping_jobs_complete_in_any_order() {
    let sim = SimIo::new();
    let mut log = open(&sim);
    fill(&mut log, 10);
    let first = log.prepare_sync().unwrap().unwrap();
    fill(&mut log, 40);
    let second = log.prepare_sync().unwrap().unwrap();
    let (a, b) = (first.run(), second.run());
    log.complete_sync(b);
    assert_eq!(log.durable_index(), Some(49));
    log.complete_sync(a);
    assert_eq!(log.durable_index(), Some(49));
    assert_eq!(log.inflight_syncs, 0);
    assert!(log.segs.sealed.iter().all(Segment::is_settled));
}

#[test]
fn waiters_for_future_indexes_fire_once_reached() {
    let sim = SimIo::new();
    let mut log = open(&sim);
    let seen: Seen = Arc::default();
    log.on_durable(5, recorder(&seen, 5));
    fill(&mut log, 3);
    run(&mut log);
    assert!(seen.lock().unwrap().is_empty());
    fill(&mut log, 3);
    run(&mut log);
    assert_eq!(*seen.lock().unwrap(), vec!["5:ok"]);
}

#[test]
fn purge_waits_for_segments_to_settle() {
    let sim = SimIo::new();
    let mut log = open(&sim);
    fill(&mut log, 60);
    let job = log.prepare_sync().unwrap().unwrap();
    log.purge_before(60).unwrap();
    assert_eq!(log.first_index(), 0, "in-flight sync: not settled yet");
    let outcome = job.run();
    log.complete_sync(outcome);
    log.purge_before(60).unwrap();
    assert_eq!(log.first_index(), log.segs.active.base);
    // Removal is made durable by the next sync.
    assert_ne!(log.segs.dir_gen, log.dir_synced_gen);
    run(&mut log);
    assert_eq!(log.segs.dir_gen, log.dir_synced_gen);
}

#[test]
fn big_bursts_flush_without_a_sync() {
    let sim = SimIo::new();
    let mut log = Log::open(sim.shared(), Path::new("/t"), LogConfig::default())
        .unwrap()
        .0;
    let payload = vec![7u8; 100];
    for _ in 0..5000 {
        log.append(&payload).unwrap();
        assert!(log.buf.len() < WRITE_BUFFER_LIMIT);
    }
    assert!(log.segs.active.size > WRITE_BUFFER_LIMIT as u64);
}

#[test]
fn oversized_payloads_are_refused_before_touching_anything() {
    let sim = SimIo::new();
    let mut log = open(&sim);
    let huge = vec![0u8; MAX_PAYLOAD_LEN + 1];
    assert!(matches!(
        log.append(&huge),
        Err(LogError::PayloadTooLarge { .. })
    ));
    assert_eq!(log.next_index(), 0);
    assert!(!log.is_poisoned());
}

#[test]
fn debug_output_is_compact() {
    let sim = SimIo::new();
    let mut log = open(&sim);
    fill(&mut log, 5);
    let s = format!("{log:?}");
    assert!(s.contains("next_index: 5"), "{s}");
    assert!(s.len() < 300);
}

fn open_at(sim: &SimIo, dir: &str) -> Log {
    let cfg = LogConfig {
        segment_bytes: 512,
        index_interval_bytes: 64,
        first_index: 0,
    };
    Log::open(sim.shared(), Path::new(dir), cfg).unwrap().0
}

fn round(logs: &mut [Log], policy: &RoundPolicy) -> DeviceFlush {
    let jobs: Vec<SyncJob> = logs
        .iter_mut()
        .map(|l| l.prepare_sync().unwrap().unwrap())
        .collect();
    let (outcomes, flush) = sync_round(jobs, policy);
    assert_eq!(outcomes.len(), logs.len());
    for (log, o) in logs.iter_mut().zip(outcomes) {
        log.complete_sync(o);
    }
    flush
}

#[test]
fn one_fs_sync_makes_a_round_of_logs_durable_and_seals_after_it() {
    let dirs = ["/t/a", "/t/b", "/t/c"];
    for seed in 0..20 {
        let sim = SimIo::new();
        let mut logs: Vec<Log> = dirs.iter().map(|d| open_at(&sim, d)).collect();
        let before = sim.fs_syncs();
        for log in &mut logs {
            fill(log, 60);
            assert!(log.segs.sealed.len() >= 2, "rolled: seals pending");
        }
        let policy = RoundPolicy {
            fs_root: Some(PathBuf::from("/t")),
            syncfs_from_files: 1,
        };
        assert_eq!(round(&mut logs, &policy), DeviceFlush::FileSystem);
        assert_eq!(sim.fs_syncs(), before + 1);
        for log in &logs {
            assert_eq!(log.durable_index(), Some(59));
            assert!(log.segs.sealed.iter().all(Segment::is_settled));
        }
        // Unsynced appends after the round may go; the round's may not.
        for log in &mut logs {
            fill(log, 5);
            log.flush().unwrap();
        }
        drop(logs);
        sim.crash(seed);
        for d in dirs {
            let log = open_at(&sim, d);
            assert!(
                log.next_index() >= 60,
                "seed {seed} {d}: {}",
                log.next_index()
            );
            for i in 0..60 {
                let rec = log.read_index(i).unwrap();
                assert_eq!(rec.payload, format!("record {i}").as_bytes());
            }
        }
    }
}

#[test]
fn a_failed_fs_sync_fails_every_log_of_the_round() {
    let sim = SimIo::new();
    let mut logs: Vec<Log> = ["/t/a", "/t/b"].iter().map(|d| open_at(&sim, d)).collect();
    let seen: Seen = Arc::default();
    for (n, log) in logs.iter_mut().enumerate() {
        fill(log, 3);
        log.on_durable(2, recorder(&seen, n as u64));
    }
    sim.fail_next_sync();
    let policy = RoundPolicy {
        fs_root: Some(PathBuf::from("/t")),
        syncfs_from_files: 2,
    };
    let flush = round(&mut logs, &policy);
    assert_eq!(flush, DeviceFlush::FileSystem);
    for log in &logs {
        assert!(log.is_poisoned());
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| !s.ends_with(":ok")), "{seen:?}");
}

#[test]
fn small_rounds_fdatasync_file_by_file() {
    let sim = SimIo::new();
    let mut logs: Vec<Log> = ["/t/a", "/t/b"].iter().map(|d| open_at(&sim, d)).collect();
    let before = sim.fs_syncs();
    for log in &mut logs {
        fill(log, 3);
    }
    let flush = round(&mut logs, &RoundPolicy::syncfs("/t"));
    assert_eq!(flush, DeviceFlush::PerFile);
    assert_eq!(sim.fs_syncs(), before);
    assert!(logs.iter().all(|l| l.durable_index() == Some(2)));
    assert_eq!(
        sync_round(Vec::new(), &RoundPolicy::per_file()).1,
        DeviceFlush::None
    );
}

//! Behaviour every backend must show: run against real files and SimIo.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ferry_log::{LogConfig, LogError, RecordPos};
use std::sync::{Arc, Mutex};

#[test]
fn empty_log_basics() {
    for_each_backend(|b| {
        let (log, report) = b.open(&small_cfg());
        assert!(report.created);
        assert_eq!((log.first_index(), log.next_index()), (0, 0));
        assert_eq!(log.durable_index(), None);
        assert!(matches!(
            log.read_index(0),
            Err(LogError::OutOfRange { .. })
        ));
        assert_eq!(log.reader(0).count(), 0);
        assert!(!log.is_poisoned());
    });
}

#[test]
fn configured_first_index_applies_to_new_logs_only() {
    for_each_backend(|b| {
        let cfg = LogConfig {
            first_index: 100,
            ..small_cfg()
        };
        let (mut log, _) = b.open(&cfg);
        assert_eq!((log.first_index(), log.next_index()), (100, 100));
        assert_eq!(log.append(b"x").unwrap().index, 100);
        sync(&mut log);
        drop(log);
        let (log, report) = b.open(&small_cfg());
        assert!(!report.created);
        assert_eq!((log.first_index(), log.next_index()), (100, 101));
        assert_eq!(log.durable_index(), Some(100));
    });
}

#[test]
fn reads_by_position_index_and_replay_across_segments() {
    for_each_backend(|b| {
        let (mut log, _) = b.open(&small_cfg());
        let positions = append_many(&mut log, 400, 1);
        log.flush().unwrap();
        assert!(b.files("log").len() > 20, "small segments must roll");
        for pos in &positions {
            let rec = log.read(pos).unwrap();
            assert_eq!(rec.payload, payload(pos.index, 1));
            assert_eq!(log.read_index(pos.index).unwrap(), rec);
        }
        let all = replay(&log);
        assert_eq!(all.len(), 400);
        assert!(all.iter().all(|(i, p)| *p == payload(*i, 1)));
        let tail: Vec<(RecordPos, u64)> = log
            .reader(333)
            .map(|r| r.map(|(p, rec)| (p, rec.index)).unwrap())
            .collect();
        assert_eq!(tail.len(), 67);
        assert_eq!(tail[0].0, positions[333]);
        assert!(tail.iter().all(|(p, i)| p.index == *i));
    });
}

#[test]
fn unflushed_records_are_readable() {
    for_each_backend(|b| {
        let (mut log, _) = b.open(&LogConfig::default());
        let flushed = append_many(&mut log, 10, 2);
        log.flush().unwrap();
        let buffered = append_many(&mut log, 10, 2);
        for pos in flushed.iter().chain(&buffered) {
            assert_eq!(log.read(pos).unwrap().payload, payload(pos.index, 2));
            assert_eq!(
                log.read_index(pos.index).unwrap().payload,
                payload(pos.index, 2)
            );
        }
        assert_eq!(replay(&log).len(), 20);
        assert_eq!(log.reader(15).next().unwrap().unwrap().0, buffered[5]);
    });
}

#[test]
fn reopen_keeps_records_positions_and_indexes() {
    for_each_backend(|b| {
        let cfg = small_cfg();
        let (mut log, _) = b.open(&cfg);
        let positions = append_many(&mut log, 150, 3);
        sync(&mut log);
        assert_eq!(log.durable_index(), Some(149));
        drop(log);
        let (mut log, report) = b.open(&cfg);
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(report.next_index, 150);
        assert_eq!(log.durable_index(), Some(149));
        for pos in &positions {
            assert_eq!(log.read(pos).unwrap().payload, payload(pos.index, 3));
        }
        append_many(&mut log, 10, 3);
        sync(&mut log);
        drop(log);
        let (log, _) = b.open(&LogConfig {
            segment_bytes: 4096,
            ..cfg
        });
        assert_eq!(log.next_index(), 160);
        assert_eq!(replay(&log).len(), 160);
    });
}

#[test]
fn group_commit_fires_callbacks_when_durable() {
    for_each_backend(|b| {
        let (mut log, _) = b.open(&small_cfg());
        let fired: Arc<Mutex<Vec<(u64, bool)>>> = Arc::default();
        let cb = |i: u64| {
            let fired = fired.clone();
            Box::new(move |r: Result<(), LogError>| fired.lock().unwrap().push((i, r.is_ok())))
                as ferry_log::DurableCallback
        };
        assert!(log.prepare_sync().unwrap().is_none(), "nothing to sync yet");
        append_many(&mut log, 30, 4);
        log.on_durable(29, cb(29));
        let job = log.prepare_sync().unwrap().unwrap();
        assert_eq!(job.target_index(), Some(29));
        // Appends keep landing while the fsync runs.
        append_many(&mut log, 30, 4);
        log.on_durable(59, cb(59));
        let outcome = job.run();
        log.complete_sync(outcome);
        assert_eq!(log.durable_index(), Some(29));
        assert_eq!(*fired.lock().unwrap(), vec![(29, true)]);
        sync(&mut log);
        assert_eq!(log.durable_index(), Some(59));
        log.on_durable(10, cb(10));
        assert_eq!(
            *fired.lock().unwrap(),
            vec![(29, true), (59, true), (10, true)]
        );
        assert!(log.prepare_sync().unwrap().is_none());
    });
}

#[test]
fn truncate_after_inside_a_segment_and_at_boundaries() {
    for_each_backend(|b| {
        let cfg = small_cfg();
        let (mut log, _) = b.open(&cfg);
        let positions = append_many(&mut log, 200, 5);
        sync(&mut log);
        let segs: Vec<u64> = positions.iter().map(|p| p.segment).collect();
        let boundary = *segs.iter().find(|s| **s > 100).unwrap();
        // Cut right before a segment starts, then in the middle of one.
        log.truncate_after(boundary - 1).unwrap();
        assert_eq!(log.next_index(), boundary);
        log.truncate_after(77).unwrap();
        assert_eq!(log.next_index(), 78);
        assert_eq!(log.durable_index(), Some(77));
        assert!(matches!(
            log.read_index(78),
            Err(LogError::OutOfRange { .. })
        ));
        assert!(log.read(&positions[150]).is_err());
        log.truncate_after(500).unwrap();
        assert_eq!(log.next_index(), 78);
        append_many(&mut log, 50, 6);
        sync(&mut log);
        let check = |log: &ferry_log::Log| {
            let all = replay(log);
            assert_eq!(all.len(), 128);
            for (i, p) in all {
                let salt = if i < 78 { 5 } else { 6 };
                assert_eq!(p, payload(i, salt), "record {i}");
                assert_eq!(log.read_index(i).unwrap().payload, payload(i, salt));
            }
        };
        check(&log);
        drop(log);
        let (log, report) = b.open(&cfg);
        assert_eq!(report.truncated_bytes, 0);
        check(&log);
    });
}

#[test]
fn truncate_to_empty_keeps_the_position() {
    for_each_backend(|b| {
        let cfg = LogConfig {
            first_index: 10,
            ..small_cfg()
        };
        let (mut log, _) = b.open(&cfg);
        append_many(&mut log, 100, 7);
        assert!(matches!(
            log.truncate_from(9),
            Err(LogError::OutOfRange { .. })
        ));
        log.truncate_from(10).unwrap();
        assert_eq!((log.first_index(), log.next_index()), (10, 10));
        assert_eq!(b.files("log").len(), 1);
        drop(log);
        let (mut log, _) = b.open(&cfg);
        assert_eq!((log.first_index(), log.next_index()), (10, 10));
        assert_eq!(log.append(b"again").unwrap().index, 10);
    });
}

#[test]
fn purge_removes_settled_segments_only() {
    for_each_backend(|b| {
        let cfg = small_cfg();
        let (mut log, _) = b.open(&cfg);
        append_many(&mut log, 300, 8);
        log.flush().unwrap();
        let before = b.files("log").len();
        let bytes = log.disk_bytes();
        // Not synced yet: nothing may go.
        log.purge_before(200).unwrap();
        assert_eq!(log.first_index(), 0);
        sync(&mut log);
        log.purge_before(200).unwrap();
        let first = log.first_index();
        assert!(first > 100 && first <= 200, "first {first}");
        assert!(b.files("log").len() < before);
        assert!(log.disk_bytes() < bytes);
        assert!(matches!(
            log.read_index(first - 1),
            Err(LogError::OutOfRange { .. })
        ));
        assert_eq!(log.read_index(first).unwrap().payload, payload(first, 8));
        let mut from_zero = log.reader(0);
        assert!(matches!(
            from_zero.next(),
            Some(Err(LogError::OutOfRange { .. }))
        ));
        assert!(from_zero.next().is_none());
        // The active segment is never purged.
        log.purge_before(u64::MAX).unwrap();
        assert_eq!(log.next_index(), 300);
        assert!(log.first_index() < 300);
        sync(&mut log);
        let first = log.first_index();
        drop(log);
        let (log, report) = b.open(&cfg);
        assert_eq!(report.stale_segments_removed, 0);
        assert_eq!((log.first_index(), log.next_index()), (first, 300));
        assert_eq!(replay(&log).len() as u64, 300 - first);
    });
}

#[test]
fn roll_then_purge_everything_keeps_next_index() {
    for_each_backend(|b| {
        let cfg = LogConfig::default();
        let (mut log, _) = b.open(&cfg);
        log.roll().unwrap();
        assert_eq!(
            b.files("log").len(),
            1,
            "rolling an empty segment is a no-op"
        );
        append_many(&mut log, 20, 9);
        log.roll().unwrap();
        sync(&mut log);
        log.purge_before(20).unwrap();
        assert_eq!((log.first_index(), log.next_index()), (20, 20));
        assert_eq!(log.reader(20).count(), 0);
        sync(&mut log);
        drop(log);
        let (mut log, _) = b.open(&cfg);
        assert_eq!((log.first_index(), log.next_index()), (20, 20));
        assert_eq!(log.durable_index(), Some(19));
        assert_eq!(log.append(b"next").unwrap().index, 20);
    });
}

#[test]
fn oversized_record_gets_its_own_segment() {
    for_each_backend(|b| {
        let (mut log, _) = b.open(&small_cfg());
        log.append(b"small").unwrap();
        let big = vec![0xAB; 5000];
        let pos = log.append(&big).unwrap();
        assert_eq!(pos.segment, 1);
        let after = log.append(b"after").unwrap();
        assert_eq!(after.segment, 2);
        sync(&mut log);
        assert_eq!(log.read(&pos).unwrap().payload, big);
        drop(log);
        let (log, _) = b.open(&small_cfg());
        assert_eq!(log.read_index(1).unwrap().payload, big);
        assert_eq!(replay(&log).len(), 3);
    });
}

#[test]
fn bad_positions_are_rejected() {
    for_each_backend(|b| {
        let (mut log, _) = b.open(&small_cfg());
        let positions = append_many(&mut log, 50, 10);
        log.flush().unwrap();
        let p = positions[20];
        let wrong_len = RecordPos {
            len: p.len + 1,
            ..p
        };
        assert!(matches!(
            log.read(&wrong_len),
            Err(LogError::InvalidPosition { .. })
        ));
        let wrong_off = RecordPos {
            offset: positions[21].offset,
            ..p
        };
        assert!(log.read(&wrong_off).is_err());
        let wrong_seg = RecordPos { segment: 999, ..p };
        assert!(matches!(
            log.read(&wrong_seg),
            Err(LogError::InvalidPosition { .. })
        ));
        let future = RecordPos { index: 50, ..p };
        assert!(matches!(
            log.read(&future),
            Err(LogError::OutOfRange { .. })
        ));
        assert!(log.reader(60).next().is_none());
    });
}

#[test]
fn missing_or_garbage_index_files_are_rebuilt() {
    for_each_backend(|b| {
        let cfg = small_cfg();
        let (mut log, _) = b.open(&cfg);
        append_many(&mut log, 300, 11);
        sync(&mut log);
        drop(log);
        let idx = b.files("idx");
        b.io.remove(&idx[1]).unwrap();
        b.write_at(&idx[3], 0, &[0xEE; 13]);
        b.write_at(
            &idx[5],
            0,
            &[3, 0, 0, 0, 40, 0, 0, 0, 4, 0, 0, 0, 200, 0, 0, 0],
        );
        let last = idx.last().unwrap();
        b.write_at(last, b.file_len(last), &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let (log, report) = b.open(&cfg);
        assert!(report.rebuilt_indexes >= 3, "{report:?}");
        for i in 0..300 {
            assert_eq!(log.read_index(i).unwrap().payload, payload(i, 11));
        }
        drop(log);
        let (_, report) = b.open(&cfg);
        assert_eq!(report.rebuilt_indexes, 0, "repairs must stick");
    });
}

#[test]
fn torn_and_garbage_tails_are_truncated() {
    for_each_backend(|b| {
        let cfg = LogConfig::default();
        let (mut log, _) = b.open(&cfg);
        append_many(&mut log, 20, 12);
        sync(&mut log);
        drop(log);
        let seg = b.files("log")[0].clone();
        let len = b.file_len(&seg);
        // A torn record: header promising more than is there.
        let mut torn = Vec::new();
        torn.extend_from_slice(&100u32.to_le_bytes());
        torn.extend_from_slice(&[0u8; 4]);
        torn.extend_from_slice(&20u64.to_le_bytes());
        torn.extend_from_slice(b"partial");
        b.write_at(&seg, len, &torn);
        let (mut log, report) = b.open(&cfg);
        assert_eq!(report.truncated_bytes, torn.len() as u64);
        assert_eq!(log.next_index(), 20);
        assert_eq!(b.file_len(&seg), len);
        append_many(&mut log, 1, 12);
        sync(&mut log);
        drop(log);
        let len = b.file_len(&seg);
        b.write_at(&seg, len, &[0xFF, 0x13, 0x37]);
        let (log, report) = b.open(&cfg);
        assert_eq!(report.truncated_bytes, 3);
        assert_eq!(replay(&log).len(), 21);
    });
}

#[test]
fn corruption_in_a_sealed_segment_is_an_error_not_a_truncation() {
    for_each_backend(|b| {
        let cfg = small_cfg();
        let (mut log, _) = b.open(&cfg);
        let positions = append_many(&mut log, 200, 13);
        sync(&mut log);
        drop(log);
        // Last record of the first segment: in the verified index tail.
        let last_of_first = positions.iter().rfind(|p| p.segment == 0).unwrap();
        let seg0 = b.files("log")[0].clone();
        b.flip_byte(&seg0, last_of_first.offset + 20);
        let err = ferry_log::Log::open(b.io.clone(), &b.dir, cfg.clone()).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
        b.flip_byte(&seg0, last_of_first.offset + 20);
        // First record of the first segment: before every index entry, so
        // open does not look, but no read may serve it.
        b.flip_byte(&seg0, positions[0].offset + 20);
        let (log, _) = b.open(&cfg);
        assert!(matches!(
            log.read(&positions[0]),
            Err(LogError::Corrupt { .. })
        ));
        assert!(matches!(log.read_index(0), Err(LogError::Corrupt { .. })));
        let mut reader = log.reader(0);
        assert!(matches!(reader.next(), Some(Err(LogError::Corrupt { .. }))));
        assert!(reader.next().is_none());
        assert_eq!(log.read_index(1).unwrap().payload, payload(1, 13));
    });
}

#[test]
fn invalid_config_is_rejected() {
    for_each_backend(|b| {
        let cfg = LogConfig {
            segment_bytes: 8,
            ..LogConfig::default()
        };
        let err = ferry_log::Log::open(b.io.clone(), &b.dir, cfg).unwrap_err();
        assert!(matches!(err, LogError::InvalidConfig(_)));
    });
}

#[test]
fn many_small_appends_flush_in_batches() {
    for_each_backend(|b| {
        let (mut log, _) = b.open(&LogConfig::default());
        for i in 0..20_000u64 {
            log.append(&i.to_le_bytes()).unwrap();
        }
        // The write buffer flushed on its own once it filled up.
        assert!(b.file_len(&b.files("log")[0]) > 100_000);
        sync(&mut log);
        assert_eq!(
            log.read_index(12_345).unwrap().payload.as_ref(),
            &12_345u64.to_le_bytes()
        );
        assert_eq!(log.reader(0).count(), 20_000);
    });
}

#[test]
fn leftovers_of_an_interrupted_purge_are_removed() {
    // A file system without ordered metadata may keep an older unlink
    // undone while a newer one stuck: recreate that by hand.
    for_each_backend(|b| {
        let cfg = small_cfg();
        let (mut log, _) = b.open(&cfg);
        append_many(&mut log, 300, 14);
        sync(&mut log);
        let seg0 = b.files("log")[0].clone();
        let len = b.file_len(&seg0);
        let mut old = vec![0u8; len as usize];
        b.io.open(&seg0, false)
            .unwrap()
            .read_at(&mut old, 0)
            .unwrap();
        log.purge_before(200).unwrap();
        sync(&mut log);
        let first = log.first_index();
        assert!(first > 50);
        drop(log);
        let f = b.io.open(&seg0, true).unwrap();
        f.write_all_at(&old, 0).unwrap();
        let (log, report) = b.open(&cfg);
        assert_eq!(report.stale_segments_removed, 1);
        assert_eq!(log.first_index(), first);
        assert!(!b.io.exists(&seg0));
        assert_eq!(replay(&log).len() as u64, 300 - first);
    });
}

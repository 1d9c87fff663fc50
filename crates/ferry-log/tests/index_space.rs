//! Fuzz regression (log_recovery, `fuzz/regressions/log_recovery/`): a log
//! whose next index is u64::MAX (a `first_index` near the top, or a
//! segment file named so) panicked with an overflow on append in debug
//! builds and wrapped to index 0 in release builds. The last index has no
//! successor, so the append must fail cleanly and the log stay usable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_log::{Log, LogConfig, LogError, SimIo};
use std::path::Path;

fn config(first_index: u64) -> LogConfig {
    LogConfig {
        segment_bytes: 161,
        index_interval_bytes: 1,
        first_index,
    }
}

fn sync(log: &mut Log) {
    if let Some(job) = log.prepare_sync().unwrap() {
        let out = job.run();
        assert!(out.is_ok());
        log.complete_sync(out);
    }
}

#[test]
fn append_at_the_end_of_the_index_space_fails_cleanly() {
    let io = SimIo::new();
    let dir = Path::new("/q");
    // The minimised fuzz input: a brand-new log starting at u64::MAX.
    let (mut log, _) = Log::open(io.shared(), dir, config(u64::MAX)).unwrap();
    assert!(matches!(
        log.append(b"after recovery"),
        Err(LogError::OutOfRange {
            index: u64::MAX,
            ..
        })
    ));
    assert_eq!(log.next_index(), u64::MAX);
    sync(&mut log);
    drop(log);
    let (log, _) = Log::open(io.shared(), dir, config(0)).unwrap();
    assert_eq!((log.first_index(), log.next_index()), (u64::MAX, u64::MAX));
}

#[test]
fn the_last_usable_index_is_u64_max_minus_one() {
    let io = SimIo::new();
    let dir = Path::new("/q");
    let (mut log, _) = Log::open(io.shared(), dir, config(u64::MAX - 2)).unwrap();
    let a = log.append(b"a").unwrap();
    let b = log.append(b"b").unwrap();
    assert_eq!((a.index, b.index), (u64::MAX - 2, u64::MAX - 1));
    assert!(log.append(b"c").is_err());
    sync(&mut log);
    assert_eq!(log.durable_index(), Some(u64::MAX - 1));
    assert_eq!(&log.read(&b).unwrap().payload[..], b"b");
    // Rolling and reopening work at the top too.
    log.roll().unwrap();
    assert!(log.append(b"c").is_err());
    drop(log);
    let (log, _) = Log::open(io.shared(), dir, config(0)).unwrap();
    assert_eq!(log.next_index(), u64::MAX);
    let got: Vec<Vec<u8>> = log
        .reader(log.first_index())
        .map(|r| r.unwrap().1.payload.to_vec())
        .collect();
    assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec()]);
}

//! Recovery rules on hand-made directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::io::SimIo;
use crate::log::Log;
use crate::record;
use crate::segment::{encode_header, log_path, seal_bytes};

const DIR: &str = "/r";

fn sim() -> SimIo {
    let io = SimIo::new();
    io.create_dir_all(Path::new(DIR)).unwrap();
    io
}

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 64,
        first_index: 0,
    }
}

/// Writes segment `base` holding records `base..base+n`, optionally sealed
/// for `prev`.
fn write_segment(io: &SimIo, base: u64, n: u64, sealed_prev: Option<u64>) -> u64 {
    let mut buf = encode_header(base).to_vec();
    if let Some(p) = sealed_prev {
        let at = SEAL_OFFSET as usize;
        buf[at..at + 12].copy_from_slice(&seal_bytes(p, base));
    }
    for i in base..base + n {
        record::encode_into(&mut buf, i, format!("payload {i}").as_bytes());
    }
    let f = io.open(&log_path(Path::new(DIR), base), true).unwrap();
    f.write_all_at(&buf, 0).unwrap();
    buf.len() as u64
}

fn open(io: &SimIo) -> Result<(Log, RecoveryReport), LogError> {
    Log::open(io.shared(), Path::new(DIR), cfg())
}

fn expect_corrupt(io: &SimIo) {
    match open(io) {
        Err(LogError::Corrupt { .. }) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_chain_of_sealed_segments_opens_cleanly() {
    let io = sim();
    write_segment(&io, 0, 10, None);
    write_segment(&io, 10, 10, Some(0));
    write_segment(&io, 20, 5, Some(10));
    let (log, report) = open(&io).unwrap();
    assert_eq!(
        (report.segments, report.first_index, report.next_index),
        (3, 0, 25)
    );
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.read_index(14).unwrap().payload.as_ref(), b"payload 14");
}

#[test]
fn an_unsealed_torn_segment_discards_its_successors() {
    let io = sim();
    let len = write_segment(&io, 0, 10, None);
    let next_len = write_segment(&io, 10, 10, None);
    io.open(&log_path(Path::new(DIR), 0), false)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let (log, report) = open(&io).unwrap();
    assert_eq!(log.next_index(), 9);
    assert_eq!(report.discarded_segments, 1);
    assert_eq!(report.truncated_records, 10);
    // The torn last record ("payload 9": 16 + 9 bytes) minus the 3 cut.
    assert_eq!(report.truncated_bytes, next_len + 16 + 9 - 3);
    assert!(!io.exists(&log_path(Path::new(DIR), 10)));
}

#[test]
fn a_gap_after_an_unsealed_segment_ends_the_log() {
    let io = sim();
    write_segment(&io, 0, 8, None);
    write_segment(&io, 10, 3, None);
    let (log, report) = open(&io).unwrap();
    assert_eq!(log.next_index(), 8);
    assert_eq!(report.discarded_segments, 1);
}

#[test]
fn overlapping_segments_are_corrupt() {
    let io = sim();
    write_segment(&io, 0, 12, None);
    write_segment(&io, 10, 3, None);
    expect_corrupt(&io);
}

#[test]
fn a_sealed_segment_with_the_wrong_count_is_corrupt() {
    let io = sim();
    write_segment(&io, 0, 12, None);
    write_segment(&io, 10, 3, Some(0));
    expect_corrupt(&io);
}

#[test]
fn a_torn_header_after_the_first_segment_is_discarded() {
    let io = sim();
    write_segment(&io, 0, 5, None);
    let f = io.open(&log_path(Path::new(DIR), 5), true).unwrap();
    f.write_all_at(&encode_header(5)[..17], 0).unwrap();
    let (log, report) = open(&io).unwrap();
    assert_eq!(log.next_index(), 5);
    assert_eq!(report.discarded_segments, 1);
}

#[test]
fn an_interrupted_creation_of_a_new_log_is_redone() {
    let io = sim();
    let f = io.open(&log_path(Path::new(DIR), 77), true).unwrap();
    f.write_all_at(&encode_header(77)[..9], 0).unwrap();
    let (log, _) = open(&io).unwrap();
    assert_eq!((log.first_index(), log.next_index()), (77, 77));
}

#[test]
fn a_damaged_first_header_is_corrupt() {
    let io = sim();
    write_segment(&io, 0, 5, None);
    let f = io.open(&log_path(Path::new(DIR), 0), false).unwrap();
    f.write_all_at(b"X", 0).unwrap();
    expect_corrupt(&io);
}

#[test]
fn a_damaged_header_of_a_sealed_segment_is_corrupt() {
    let io = sim();
    write_segment(&io, 0, 5, None);
    write_segment(&io, 5, 5, Some(0));
    write_segment(&io, 10, 5, Some(5));
    let f = io.open(&log_path(Path::new(DIR), 5), false).unwrap();
    f.write_all_at(&[0xFF], 17).unwrap();
    expect_corrupt(&io);
}

#[test]
fn a_newer_format_version_is_refused() {
    let io = sim();
    write_segment(&io, 0, 5, None);
    let mut h = encode_header(0);
    h[8] = 2;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[0..12]), &h[16..24]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    let f = io.open(&log_path(Path::new(DIR), 0), false).unwrap();
    f.write_all_at(&h, 0).unwrap();
    expect_corrupt(&io);
}

#[test]
fn a_seal_naming_an_impossible_predecessor_is_corrupt() {
    let io = sim();
    write_segment(&io, 0, 5, None);
    write_segment(&io, 5, 5, Some(0));
    write_segment(&io, 10, 5, Some(2));
    expect_corrupt(&io);
}

#[test]
fn a_header_base_that_disagrees_with_the_name_is_corrupt() {
    let io = sim();
    write_segment(&io, 0, 5, None);
    let f = io.open(&log_path(Path::new(DIR), 0), false).unwrap();
    f.write_all_at(&encode_header(3), 0).unwrap();
    expect_corrupt(&io);
}

#[test]
fn stale_index_entries_are_skipped_and_rewritten() {
    let io = sim();
    write_segment(&io, 0, 40, None);
    write_segment(&io, 40, 2, Some(0));
    // Plausible-looking but wrong: strictly increasing, inside the file.
    let mut bogus = Vec::new();
    for (rel, pos) in [(3u32, 100u32), (9, 300), (20, 700)] {
        bogus.extend_from_slice(&rel.to_le_bytes());
        bogus.extend_from_slice(&pos.to_le_bytes());
    }
    let f = io.open(&idx_path(Path::new(DIR), 0), true).unwrap();
    f.write_all_at(&bogus, 0).unwrap();
    let (log, report) = open(&io).unwrap();
    assert!(report.rebuilt_indexes >= 1);
    for i in 0..42 {
        assert_eq!(
            log.read_index(i).unwrap().payload,
            format!("payload {i}").as_bytes()
        );
    }
}

#[test]
fn orphan_indexes_go_and_unknown_files_stay() {
    let io = sim();
    write_segment(&io, 0, 3, None);
    io.open(&idx_path(Path::new(DIR), 99), true).unwrap();
    io.open(&Path::new(DIR).join("notes.txt"), true).unwrap();
    let (log, _) = open(&io).unwrap();
    assert_eq!(log.next_index(), 3);
    assert!(!io.exists(&idx_path(Path::new(DIR), 99)));
    assert!(io.exists(&Path::new(DIR).join("notes.txt")));
}

#[test]
fn missing_seals_are_written_on_open() {
    let io = sim();
    write_segment(&io, 0, 5, None);
    write_segment(&io, 5, 5, None);
    let (log, _) = open(&io).unwrap();
    drop(log);
    let f = io.open(&log_path(Path::new(DIR), 5), false).unwrap();
    let mut head = [0u8; SEGMENT_HEADER_LEN as usize];
    f.read_at(&mut head, 0).unwrap();
    assert_eq!(
        parse_header(&head),
        Header::Valid {
            base: 5,
            sealed_prev: Some(0)
        }
    );
}

//! A state machine names a command by where its record is: the positions
//! `RaftLog::command_positions` gives are consecutive after the entry's
//! header, the same from the tail cache and from the segments (after a
//! reopen), and `read_command` gives the command's bytes back.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use ferry_log::{LogConfig, RoundPolicy, SimIo};
use ferry_queue::syncer::Syncer;
use ferry_raft::{Batch, Entry, LogId, RaftLog};
use openraft::{CommittedLeaderId, EntryPayload};
use std::path::Path;

fn entry(index: u64, n: usize) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: match n {
            0 => EntryPayload::Blank,
            _ => EntryPayload::Normal(Batch::new(
                (0..n)
                    .map(|j| Bytes::from(format!("cmd {index}.{j} {}", "y".repeat(j * 50))))
                    .collect(),
            )),
        },
    }
}

#[test]
fn command_positions_are_stable_and_read_back() {
    let io = SimIo::new();
    let syncer = Syncer::manual(RoundPolicy::per_file());
    let cfg = LogConfig {
        segment_bytes: 512,
        ..LogConfig::default()
    };
    let open = || RaftLog::open(io.shared(), Path::new("/g"), cfg.clone(), syncer.clone()).unwrap();
    let log = open();
    let shape = [0usize, 3, 1, 0, 5, 2];
    let entries: Vec<Entry> = shape
        .iter()
        .enumerate()
        .map(|(i, n)| entry(i as u64, *n))
        .collect();
    log.append_entries(entries.clone(), Box::new(|r| r.expect("durable")))
        .unwrap();
    syncer.run_round();
    let mut live = Vec::new();
    let mut last_index = None;
    for (i, n) in shape.iter().enumerate() {
        let pos = log.command_positions(i as u64).unwrap();
        assert_eq!(pos.len(), *n, "entry {i}");
        for (k, p) in pos.iter().enumerate() {
            if let Some(prev) = last_index {
                assert!(p.index > prev, "ferry indexes grow");
            }
            last_index = Some(p.index);
            if k > 0 {
                assert_eq!(
                    p.index,
                    pos[k - 1].index + 1,
                    "an entry's commands are consecutive"
                );
            }
            let EntryPayload::Normal(b) = &entries[i].payload else {
                unreachable!()
            };
            assert_eq!(log.read_command(p).unwrap(), b.commands[k]);
        }
        live.push(pos);
    }
    // From the segments this time (a new process has an empty cache).
    drop(log);
    let log = open();
    for (i, pos) in live.iter().enumerate() {
        assert_eq!(
            &log.command_positions(i as u64).unwrap(),
            pos,
            "entry {i} after a reopen"
        );
    }
    assert!(log.command_positions(99).is_err());
}

/// A log that gave its memory back (its group sleeps) still gives every
/// entry and command (from the segments now), and takes the next appends.
#[test]
fn a_released_log_reads_from_its_files_and_takes_more() {
    let (_io, syncer, log) = common::open_sim();
    let first: Vec<Entry> = (0..4).map(|i| entry(i, 3)).collect();
    log.append_entries(first.clone(), Box::new(|r| r.expect("durable")))
        .unwrap();
    syncer.run_round();
    let before: Vec<_> = (0..4).map(|i| log.command_positions(i).unwrap()).collect();
    log.release_memory();
    assert_eq!(log.entries(0..4).unwrap(), first, "entries from the files");
    for (i, pos) in before.iter().enumerate() {
        assert_eq!(&log.command_positions(i as u64).unwrap(), pos);
    }
    let more: Vec<Entry> = (4..6).map(|i| entry(i, 2)).collect();
    log.append_entries(more.clone(), Box::new(|r| r.expect("durable")))
        .unwrap();
    syncer.run_round();
    let all: Vec<Entry> = first.into_iter().chain(more).collect();
    assert_eq!(log.entries(0..6).unwrap(), all);
}

#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The stream snapshot transfer file: written from a stream's records,
//! checked whole, read back record for record; damage anywhere refused.

use super::*;
use crate::types::LogId;
use bytes::Bytes;
use ferry_log::{LogConfig, SimIo};
use ferry_model::message::Message;
use ferry_model::{Table, Value};
use ferry_queue::queue::{QueueEnv, QueueSpec};
use ferry_queue::syncer::Syncer;
use openraft::{CommittedLeaderId, StoredMembership};
use std::path::PathBuf;

fn stream(io: &SimIo, n: usize) -> Arc<Stream> {
    stream_with(io, n, &[])
}

fn stream_with(io: &SimIo, n: usize, extra: &[(&str, Value)]) -> Arc<Stream> {
    let env = QueueEnv::new(io.shared(), Syncer::inline(), LogConfig::default(), 0);
    let mut args = Table::new();
    args.insert("x-queue-type", Value::Str(Bytes::from_static(b"stream")));
    for (k, v) in extra {
        args.insert(*k, v.clone());
    }
    let spec = QueueSpec {
        name: Arc::from("s"),
        durable: true,
        exclusive_owner: None,
        auto_delete: false,
        arguments: args,
    };
    let s = Stream::open(spec, Arc::from("/"), PathBuf::from("/data/s"), env).unwrap();
    for i in 0..n {
        let m = Message {
            exchange: Arc::from(""),
            routing_key: Arc::from("s"),
            properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from(format!("m{i}")),
            persistent: true,
            expiration_ms: None,
            bcc: Vec::new(),
        };
        s.publish(&Arc::new(m), None).unwrap();
    }
    s.sync_now();
    s
}

fn shipped(io: &SimIo, s: &Arc<Stream>, next: u64) -> StreamSnapshotRef {
    io.shared().create_dir_all(Path::new("/data/g")).unwrap();
    StreamSnapshotRef {
        stream: s.clone(),
        io: io.shared(),
        dir: PathBuf::from("/data/g"),
        meta: SnapMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 77)),
            last_membership: StoredMembership::default(),
            snapshot_id: "s-3-77".into(),
        },
        next,
    }
}

#[test]
fn a_stream_snapshot_round_trips_and_leaves_no_file_behind() {
    let io = SimIo::new();
    let s = stream(&io, 50);
    let f = shipped(&io, &s, 50).materialize().unwrap();
    assert!(
        !io.shared().exists(&f.path),
        "the transfer file is unlinked"
    );
    let got = check(f.file.as_ref(), f.len, &f.path).unwrap();
    assert_eq!((got.first, got.next, got.count), (0, 50, 50));
    assert_eq!(got.meta.last_log_id.map(|l| l.index), Some(77));
    let mut want = Vec::new();
    s.export_records(50, &mut |_, p| {
        want.push(Bytes::copy_from_slice(p));
        Ok(())
    })
    .unwrap();
    let read: Vec<Bytes> = records(f.file.as_ref(), f.len, &got)
        .map(Result::unwrap)
        .collect();
    assert_eq!(read, want);
}

#[test]
fn a_flipped_bit_or_a_short_file_is_refused() {
    let io = SimIo::new();
    let s = stream(&io, 20);
    let f = shipped(&io, &s, 20).materialize().unwrap();
    let mut bytes = vec![0u8; f.len as usize];
    assert_eq!(f.file.read_at(&mut bytes, 0).unwrap(), bytes.len());
    let fresh = |b: &[u8]| {
        let file = io.shared().open(Path::new("/data/g/copy"), true).unwrap();
        file.set_len(0).unwrap();
        file.write_all_at(b, 0).unwrap();
        file
    };
    for at in [
        3usize,
        20,
        bytes.len() / 2,
        bytes.len() - 20,
        bytes.len() - 2,
    ] {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        let file = fresh(&b);
        assert!(
            check(file.as_ref(), b.len() as u64, &f.path).is_err(),
            "a flip at {at} of {} is found",
            b.len()
        );
    }
    let file = fresh(&bytes[..bytes.len() - 7]);
    assert!(check(file.as_ref(), bytes.len() as u64 - 7, &f.path).is_err());
    // A count that does not end at the snapshot's offset count.
    let f = shipped(&io, &s, 25).materialize();
    assert!(f.is_err(), "20 records do not make 25 offsets durable");
}

/// A snapshot whose offset count the sender's retention has gone past
/// ships no records and says where the sender's log starts.
#[test]
fn a_snapshot_below_the_senders_first_offset_ships_where_the_log_starts() {
    let io = SimIo::new();
    let s = stream_with(
        &io,
        400,
        &[
            ("x-stream-max-segment-size-bytes", Value::I64(4096)),
            ("x-max-length-bytes", Value::I64(4096)),
        ],
    );
    let (first, _, _) = s.offsets();
    assert!(first > 5, "retention cut the stream: first {first}");
    let f = shipped(&io, &s, 5).materialize().unwrap();
    let got = check(f.file.as_ref(), f.len, &f.path).unwrap();
    assert_eq!((got.first, got.count, got.next), (first, 0, 5));
}

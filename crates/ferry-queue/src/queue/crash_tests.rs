//! Crash consistency of a queue over SimIo: power cuts (unsynced writes
//! dropped, the last one torn), failed fsyncs, and media corruption (bit
//! flips in synced data).
//!
//! What a queue over a damaged log does, and why:
//! * Damage in the **active** (last, unsealed) segment: `Queue::open`
//!   succeeds and the queue holds the state of the intact prefix of its
//!   command log. Recovery cannot tell a flipped bit there from a torn tail
//!   that no confirm ever covered, so it logs a warning and cuts at the
//!   first bad record. Confirmed messages after the damage are lost and
//!   settled ones may come back: a prefix, never invented or altered data.
//! * Damage in a **sealed** segment (complete and durable by construction):
//!   `Queue::open` fails with `CoreError::Storage(LogError::Corrupt)` naming
//!   the segment file, offset and failed check. Replay reads and verifies
//!   every record, so this holds wherever the damage is. The broker does
//!   not silently drop durable messages from the middle of the queue, nor
//!   stay down: `VHost::load` keeps that queue as `crashed` (unavailable,
//!   reported, deletable) and the rest of the node starts. The same holds
//!   for a record with a valid CRC that does not decode
//!   (`vhost/crashed.rs` tests it end to end).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::error::CoreError;
use crate::syncer::Syncer;
use bytes::Bytes;
use ferry_log::{FileIo, LogConfig, LogError, SimIo};
use ferry_model::message::Message;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const DIR: &str = "/data/vhosts/2f/queues/q1";

#[derive(Debug, Default)]
struct Confirms {
    ok: Mutex<BTreeSet<u64>>,
    failed: Mutex<BTreeSet<u64>>,
}

impl ConfirmSink for Confirms {
    fn confirmed(&self, seqs: &[u64]) {
        self.ok.lock().extend(seqs);
    }
    fn failed(&self, seqs: &[u64]) {
        self.failed.lock().extend(seqs);
    }
}

fn log_cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        first_index: 0,
    }
}

/// A queue env; `round_thread == 0` gives an inline syncer, so every sync
/// runs on the publishing thread (deterministic, no group commit);
/// otherwise a round thread that makes every round durable with one
/// `sync_fs` (the file-system flush must keep what it confirmed too).
fn env(io: &SimIo, round_thread: usize, cache: i64) -> QueueEnv {
    let syncer = if round_thread == 0 {
        Syncer::inline()
    } else {
        io.create_dir_all(Path::new(DIR)).unwrap();
        Syncer::start(ferry_log::RoundPolicy {
            fs_root: Some(PathBuf::from("/data")),
            syncfs_from_files: 1,
        })
        .unwrap()
    };
    QueueEnv::new(io.shared(), syncer, log_cfg(), cache)
}

fn spec() -> QueueSpec {
    QueueSpec {
        name: Arc::from("orders"),
        durable: true,
        exclusive_owner: None,
        auto_delete: false,
        arguments: Default::default(),
    }
}

fn open_with(env: QueueEnv) -> crate::error::Result<Arc<Queue>> {
    Queue::open(spec(), Arc::from("/"), PathBuf::from(DIR), env)
}

fn body(seq: u64) -> String {
    format!("m{seq:06}:{}", "x".repeat((seq * 37 % 120) as usize))
}

fn seq_of(b: &[u8]) -> u64 {
    std::str::from_utf8(&b[1..7]).unwrap().parse().unwrap()
}

fn msg(seq: u64, persistent: bool) -> Arc<Message> {
    Arc::new(Message {
        exchange: Arc::from(""),
        routing_key: Arc::from("orders"),
        properties: Bytes::from_static(&[0x10, 0, 2]),
        body: Bytes::from(body(seq)),
        persistent,
        expiration_ms: None,
        bcc: Vec::new(),
    })
}

/// Takes every ready message (no-ack); checks each body is intact.
fn drain(q: &Queue) -> Vec<u64> {
    let mut out = Vec::new();
    while let Some((d, _)) = q.get(true).unwrap() {
        let s = seq_of(&d.message.body);
        assert_eq!(d.message.body, body(s).as_bytes(), "altered body");
        assert_eq!(&d.message.properties[..], &[0x10, 0, 2]);
        out.push(s);
    }
    out
}

/// One queue command as the test issued it (one log record each).
#[derive(Clone, Debug)]
enum Cmd {
    Enqueue(u64),
    Settle(Vec<u64>),
}

/// The ready messages after replaying `cmds` (persistent ones only).
fn state_after(cmds: &[Cmd]) -> Vec<u64> {
    let mut live = BTreeSet::new();
    for c in cmds {
        match c {
            Cmd::Enqueue(s) => {
                live.insert(*s);
            }
            Cmd::Settle(ss) => {
                for s in ss {
                    live.remove(s);
                }
            }
        }
    }
    live.into_iter().collect()
}

#[test]
fn a_confirmed_persistent_message_survives_every_crash() {
    let mut saw_unconfirmed_lost = 0;
    let mut saw_settled_back = 0;
    for seed in 0..120u64 {
        let io = SimIo::new();
        let mut rng = StdRng::seed_from_u64(seed);
        // A running sync thread: real group commit, confirms arrive late.
        let e = env(&io, 1, [0, 1 << 20][(seed % 2) as usize]);
        let syncer = e.syncer.clone();
        let q = open_with(e).unwrap();
        let sink = Arc::new(Confirms::default());
        let mut acked = BTreeSet::new();
        let mut published = Vec::new();
        let mut transient = BTreeSet::new();
        let steps = rng.gen_range(5..80);
        for seq in 0..steps {
            let persistent = rng.gen_bool(0.85);
            let token = ConfirmToken {
                sink: sink.clone(),
                seq,
            };
            q.publish(&msg(seq, persistent), Some(token)).unwrap();
            if persistent {
                published.push(seq);
            } else {
                transient.insert(seq);
            }
            match rng.gen_range(0..10) {
                0 => q.sync_now(),
                1 | 2 => {
                    if let Some((d, _)) = q.get(false).unwrap() {
                        let s = seq_of(&d.message.body);
                        if rng.gen_bool(0.7) {
                            q.settle(&[d.msg_id]).unwrap();
                            acked.insert(s);
                        } else {
                            q.requeue(&[d.msg_id]).unwrap();
                        }
                    }
                }
                _ => {}
            }
        }
        // What was confirmed *before* the power cut: every one of these
        // was reported after an fsync that had finished by now.
        let confirmed: BTreeSet<u64> = sink.ok.lock().clone();
        assert!(sink.failed.lock().is_empty(), "seed {seed}: nacks");
        io.crash(seed);
        syncer.stop();
        drop(q);

        let q = open_with(env(&io, 0, 1 << 20)).unwrap();
        let got = drain(&q);
        let ctx = format!("seed {seed}: got {got:?}");
        for s in confirmed.iter().filter(|s| !transient.contains(s)) {
            assert!(
                got.contains(s) || acked.contains(s),
                "{ctx}: confirmed m{s} lost"
            );
        }
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{ctx}: order or dups");
        for s in &got {
            assert!(!transient.contains(s), "{ctx}: transient m{s} came back");
            assert!(published.contains(s), "{ctx}: invented m{s}");
        }
        saw_unconfirmed_lost += usize::from(
            published
                .iter()
                .any(|s| !got.contains(s) && !acked.contains(s)),
        );
        saw_settled_back += usize::from(got.iter().any(|s| acked.contains(s)));
    }
    // The crashes must actually drop things (else the test proves little).
    assert!(saw_unconfirmed_lost > 10, "{saw_unconfirmed_lost}");
    assert!(saw_settled_back > 5, "{saw_settled_back}");
}

// ---------------------------------------------------------------------------
// Failed fsync.

/// Keeps every event as (level, fields) on the thread that installed it.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        self.0.lock().push((*event.metadata().level(), f.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn a_failed_fsync_nacks_never_confirms_and_raises_an_alarm() {
    let io = SimIo::new();
    // Inline syncs: the failure happens on this thread, in order.
    let q = open_with(env(&io, 0, 1 << 20)).unwrap();
    let sink = Arc::new(Confirms::default());
    let token = |seq| {
        Some(ConfirmToken {
            sink: sink.clone(),
            seq,
        })
    };
    q.publish(&msg(1, true), token(1)).unwrap();
    assert_eq!(*sink.ok.lock(), BTreeSet::from([1]));
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.clone(), || {
        io.fail_next_sync();
        q.publish(&msg(2, true), token(2)).unwrap();
        // Poisoned: refused outright (the front end nacks).
        let err = q.publish(&msg(3, true), token(3)).unwrap_err();
        assert!(
            matches!(err, CoreError::Storage(LogError::Poisoned)),
            "{err}"
        );
        q.sync_now();
    });
    assert_eq!(*sink.ok.lock(), BTreeSet::from([1]), "never a confirm");
    assert_eq!(*sink.failed.lock(), BTreeSet::from([2]));
    let events = capture.0.lock().clone();
    let alarms: Vec<&String> = events
        .iter()
        .filter(|(l, t)| *l == tracing::Level::ERROR && t.contains("ALARM"))
        .map(|(_, t)| t)
        .collect();
    assert_eq!(alarms.len(), 1, "{events:?}");
    assert!(
        alarms[0].contains("orders") && alarms[0].contains("simulated fsync failure"),
        "{alarms:?}"
    );
    // A restart recovers: what was confirmed is there, the failed publish
    // may or may not be (it was never confirmed), and writes work again.
    drop(q);
    io.crash(5);
    let q = open_with(env(&io, 0, 1 << 20)).unwrap();
    q.publish(&msg(4, true), token(4)).unwrap();
    assert!(sink.ok.lock().contains(&4));
    let got = drain(&q);
    assert_eq!(got.first(), Some(&1));
    assert_eq!(got.last(), Some(&4));
}

// ---------------------------------------------------------------------------
// Bit flips.

fn segment_files(io: &SimIo) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = io
        .shared()
        .list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Byte ranges `(start, end)` of the records of a segment file.
fn record_spans(io: &SimIo, path: &Path) -> Vec<(u64, u64)> {
    let f = io.shared().open(path, false).unwrap();
    let mut bytes = vec![0u8; f.len().unwrap() as usize];
    f.read_at(&mut bytes, 0).unwrap();
    let mut spans = Vec::new();
    let mut at = 40usize;
    while let Some(h) = bytes.get(at..at + 16) {
        let len = u32::from_le_bytes(h[0..4].try_into().unwrap()) as usize;
        if at + 16 + len > bytes.len() {
            break;
        }
        spans.push((at as u64, (at + 16 + len) as u64));
        at += 16 + len;
    }
    spans
}

/// Publishes `n` persistent messages (each synced inline) and settles
/// every third; returns the command history.
fn fill(io: &SimIo, n: u64) -> Vec<Cmd> {
    let q = open_with(env(io, 0, 0)).unwrap();
    let mut cmds = Vec::new();
    for seq in 0..n {
        q.publish(&msg(seq, true), None).unwrap();
        cmds.push(Cmd::Enqueue(seq));
        if seq % 3 == 2 {
            let (d, _) = q.get(false).unwrap().unwrap();
            q.settle(&[d.msg_id]).unwrap();
            cmds.push(Cmd::Settle(vec![seq_of(&d.message.body)]));
        }
    }
    q.sync_now();
    cmds
}

#[test]
fn a_flipped_bit_in_the_active_segment_recovers_the_intact_prefix() {
    let io = SimIo::new();
    let cmds = fill(&io, 90);
    let segs = segment_files(&io);
    assert!(segs.len() >= 3, "want sealed segments too: {segs:?}");
    let last = segs.last().unwrap();
    let spans = record_spans(&io, last);
    let base: usize = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let victim = spans.len() / 2;
    // A bit in the middle of the victim record.
    let (start, end) = spans[victim];
    io.flip_bit(last, (start + end) / 2, 2).unwrap();
    let q = open_with(env(&io, 0, 0)).unwrap();
    assert_eq!(drain(&q), state_after(&cmds[..base + victim]));
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_refuses_to_open_the_queue() {
    let io = SimIo::new();
    fill(&io, 90);
    let first = segment_files(&io)[0].clone();
    let spans = record_spans(&io, &first);
    for (victim, bit) in [(0, 0), (spans.len() - 1, 6)] {
        let (start, end) = spans[victim];
        io.flip_bit(&first, (start + end) / 2, bit).unwrap();
        let err = open_with(env(&io, 0, 0)).unwrap_err();
        match &err {
            CoreError::Storage(LogError::Corrupt { path, reason, .. }) => {
                assert_eq!(*path, first);
                assert_eq!(reason, "checksum mismatch");
            }
            other => panic!("expected a corrupt log, got {other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("corrupt log data") && text.contains(DIR),
            "{text}"
        );
        // Undo, and the queue opens again with everything.
        io.flip_bit(&first, (start + end) / 2, bit).unwrap();
        assert!(open_with(env(&io, 0, 0)).is_ok());
    }
}

#[test]
fn random_flips_recover_an_intact_prefix_or_refuse() {
    let mut prefix = 0;
    let mut refused = 0;
    for seed in 0..150u64 {
        let io = SimIo::new();
        let mut rng = StdRng::seed_from_u64(seed);
        let cmds = fill(&io, rng.gen_range(10..70));
        if rng.gen_bool(0.5) {
            io.crash(seed);
        }
        let flips = io.flip_random_bits_in(seed, rng.gen_range(1..3), |p| {
            p.extension().is_some_and(|e| e == "log")
        });
        let ctx = format!("seed {seed} {flips:?}");
        match open_with(env(&io, 0, 0)) {
            Ok(q) => {
                let got = drain(&q);
                assert!(
                    (0..=cmds.len()).any(|k| state_after(&cmds[..k]) == got),
                    "{ctx}: {got:?} is not the state of any prefix"
                );
                prefix += 1;
            }
            Err(CoreError::Storage(LogError::Corrupt { .. })) => refused += 1,
            Err(e) => panic!("{ctx}: unclear error {e}"),
        }
    }
    assert!(prefix > 10 && refused > 10, "{prefix} {refused}");
}

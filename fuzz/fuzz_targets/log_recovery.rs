//! `ferry_log::Log::open` over whatever a directory may hold, on `SimIo`
//! (in memory, nothing touches the disk).
//!
//! Three kinds of input:
//! - An image: the files of a log directory byte for byte (`I` first; the
//!   seeds are real logs made with the log's own API).
//! - `Raw`: files made from fuzz bytes: any bytes, or segments with a
//!   (possibly wrong) header and records with correct checksums, so the
//!   fuzzer reaches the recovery rules rather than stopping at a CRC.
//! - `Built`: a real log driven by fuzz-chosen appends, syncs, rolls,
//!   truncations, purges, injected write/fsync failures, reopenings and
//!   simulated power cuts, then fuzz-chosen damage (bit flips, truncation,
//!   removal, garbage) to its files.
//!
//! Checked every time: `Log::open` does not panic; if it opens, every item
//! of `reader()` is an error or a record whose bytes on disk carry a valid
//! CRC32C and equal the payload served, indexes are dense, and appending
//! and syncing afterwards works (when no failure was injected), including
//! after a second reopen.
//!
//! Checked for built logs before any damage: after a reopen without a
//! crash the log holds exactly what was appended; after a power cut it
//! holds every record that was reported durable, and nothing that was not
//! appended at that index.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use ferry_fuzz::image::Image;
use ferry_log::{FileIo, Log, LogConfig, RecordPos, SimIo, RECORD_HEADER_LEN};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DIR: &str = "/data/q";
/// First byte of an input that is a log directory image (see
/// `ferry_fuzz::image`) rather than structured.
const IMAGE_MODE: u8 = b'I';
const SEGMENT_HEADER_LEN: usize = 40;

#[derive(Debug, Arbitrary)]
enum Input {
    Raw { cfg: Cfg, files: Vec<RawFile> },
    Built(Built),
}

#[derive(Debug, Arbitrary)]
struct Built {
    cfg: Cfg,
    ops: Vec<Op>,
    damage: Vec<Damage>,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
struct Cfg {
    /// Added to the smallest valid segment size (56).
    segment_extra: u16,
    interval: u8,
    first: Base,
}

impl Cfg {
    fn config(self) -> LogConfig {
        LogConfig {
            segment_bytes: 56 + u64::from(self.segment_extra % 2048),
            index_interval_bytes: u32::from(self.interval).max(1),
            first_index: self.first.value(),
        }
    }
}

/// A base index: small, near the top of the range, or anything.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Base {
    Small(u8),
    Top(u8),
    Any(u64),
}

impl Base {
    fn value(self) -> u64 {
        match self {
            Base::Small(n) => u64::from(n % 32),
            Base::Top(n) => u64::MAX - u64::from(n % 8),
            Base::Any(n) => n,
        }
    }
}

#[derive(Debug, Arbitrary)]
struct RawFile {
    base: Base,
    kind: Kind,
    content: Content,
}

#[derive(Debug, Arbitrary)]
enum Kind {
    Log,
    Index,
    Other,
}

#[derive(Debug, Arbitrary)]
enum Content {
    Bytes(Vec<u8>),
    Segment {
        /// Header base (None: the file's own base).
        header_base: Option<Base>,
        /// Seal naming this previous base.
        seal: Option<Base>,
        /// Break the header checksum / magic / version.
        spoil: Option<u8>,
        /// Records: index offset from the base (usually 0, 1, 2, ...), payload.
        records: Vec<(Option<u8>, Vec<u8>)>,
        tail: Vec<u8>,
    },
    /// Index entries (relative index, position).
    IndexEntries(Vec<(u32, u32)>),
}

#[derive(Debug, Arbitrary)]
enum Op {
    Append(Payload),
    AppendMany(u8, u8),
    Flush,
    Sync,
    /// A sync whose completion is delayed past the next op.
    SyncLater,
    Roll,
    TruncateFrom(u8),
    PurgeBefore(u8),
    Read(u8),
    FailNextWrite,
    FailNextSync,
    Reopen,
    Crash(u64),
}

#[derive(Debug, Arbitrary)]
enum Payload {
    Fill(u8, u8),
    Bytes(Vec<u8>),
}

impl Payload {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Payload::Fill(len, b) => vec![*b; usize::from(*len)],
            Payload::Bytes(v) => v.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Damage {
    file: u8,
    kind: DamageKind,
}

#[derive(Debug, Arbitrary)]
enum DamageKind {
    Flip { at: u32, mask: u8 },
    Truncate { keep: u32 },
    Zero { at: u32, len: u8 },
    Append(Vec<u8>),
    Remove,
}

fn seg_header(base: u64, seal: Option<u64>) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(b"FERRYLOG");
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[16..24].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[0..12]), &h[16..24]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    if let Some(prev) = seal {
        let c = crc32c::crc32c_append(crc32c::crc32c(b"SEAL"), &prev.to_le_bytes());
        let c = crc32c::crc32c_append(c, &base.to_le_bytes());
        h[24..32].copy_from_slice(&prev.to_le_bytes());
        h[32..36].copy_from_slice(&c.to_le_bytes());
    }
    h
}

fn record(buf: &mut Vec<u8>, index: u64, payload: &[u8]) {
    let crc = crc32c::crc32c_append(crc32c::crc32c(&index.to_le_bytes()), payload);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(payload);
}

fn write_file(io: &SimIo, path: &Path, bytes: &[u8]) {
    let f = io.open(path, true).expect("create file in SimIo");
    f.set_len(0).expect("set_len");
    f.write_all_at(bytes, 0).expect("write");
    f.sync_data().expect("sync");
}

fn raw_files(io: &SimIo, dir: &Path, files: &[RawFile]) {
    for f in files.iter().take(8) {
        let base = f.base.value();
        let name = match f.kind {
            Kind::Log => format!("{base:020}.log"),
            Kind::Index => format!("{base:020}.idx"),
            Kind::Other => format!("{base}.tmp"),
        };
        let bytes = match &f.content {
            Content::Bytes(b) => b.clone(),
            Content::Segment {
                header_base,
                seal,
                spoil,
                records,
                tail,
            } => {
                let hb = header_base.map_or(base, Base::value);
                let mut h = seg_header(hb, seal.map(Base::value));
                if let Some(s) = spoil {
                    h[usize::from(*s) % SEGMENT_HEADER_LEN] ^= 1 << (s % 8);
                }
                let mut buf = h.to_vec();
                for (i, (off, payload)) in records.iter().enumerate() {
                    let index = match off {
                        None => hb.wrapping_add(i as u64),
                        Some(o) => hb.wrapping_add(u64::from(*o)),
                    };
                    record(&mut buf, index, payload);
                }
                buf.extend_from_slice(tail);
                buf
            }
            Content::IndexEntries(entries) => entries
                .iter()
                .flat_map(|(r, p)| r.to_le_bytes().into_iter().chain(p.to_le_bytes()))
                .collect(),
        };
        write_file(io, &dir.join(name), &bytes);
    }
    io.sync_dir(dir).expect("sync dir");
}

/// Reads record `pos` straight from its segment file and checks it.
fn check_on_disk(io: &SimIo, dir: &Path, pos: &RecordPos, payload: &[u8]) {
    let path = dir.join(format!("{:020}.log", pos.segment));
    let f = io
        .open(&path, false)
        .expect("segment of a served record exists");
    let mut buf = vec![0u8; pos.len as usize];
    let n = f.read_at(&mut buf, pos.offset).expect("read");
    assert_eq!(n, buf.len(), "served record runs past the end of its file");
    assert!(buf.len() >= RECORD_HEADER_LEN);
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4"));
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4"));
    let index = u64::from_le_bytes(buf[8..16].try_into().expect("8"));
    let body = &buf[RECORD_HEADER_LEN..];
    assert_eq!(len as usize, body.len(), "length field");
    assert_eq!(index, pos.index, "index field");
    let want = crc32c::crc32c_append(crc32c::crc32c(&index.to_le_bytes()), body);
    assert_eq!(crc, want, "served a record with a bad checksum");
    assert_eq!(
        body, payload,
        "served payload differs from the bytes on disk"
    );
}

/// Replays the whole log, checking every record against the disk. Returns
/// the records, or None if the reader stopped at an error.
fn replay(io: &SimIo, dir: &Path, log: &Log) -> Option<BTreeMap<u64, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut expect = log.first_index();
    for item in log.reader(log.first_index()) {
        match item {
            Ok((pos, rec)) => {
                assert_eq!(pos.index, expect, "reader skipped or repeated an index");
                assert_eq!(rec.index, pos.index);
                check_on_disk(io, dir, &pos, &rec.payload);
                // Reading by position and by index must agree.
                let again = log.read(&pos).expect("read of a replayed position");
                assert_eq!(again.payload, rec.payload);
                out.insert(pos.index, rec.payload.to_vec());
                expect += 1;
            }
            Err(_) => return None,
        }
    }
    assert_eq!(
        expect,
        log.next_index(),
        "reader ended early without an error"
    );
    Some(out)
}

fn sync(log: &mut Log) -> bool {
    match log.prepare_sync() {
        Ok(Some(job)) => {
            let out = job.run();
            let ok = out.is_ok();
            log.complete_sync(out);
            ok
        }
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Opens whatever is there; if it opens, checks replay and that the log
/// takes appends (when `faults_possible` is false they must succeed).
fn open_and_check(io: &SimIo, dir: &Path, cfg: &LogConfig, faults_possible: bool) {
    let Ok((mut log, _report)) = Log::open(io.shared(), dir, cfg.clone()) else {
        return;
    };
    let replayed = replay(io, dir, &log);
    let next = log.next_index();
    if next == u64::MAX {
        // The index space is used up: the append must fail cleanly.
        assert!(log.append(b"after").is_err());
        return;
    }
    let appended = log.append(b"after recovery");
    let synced = sync(&mut log);
    if faults_possible {
        return;
    }
    let pos = appended.expect("append after recovery");
    assert!(synced, "sync after recovery failed");
    assert_eq!(pos.index, next);
    assert!(
        log.durable_index() >= Some(next),
        "sync did not make it durable"
    );
    let rec = log.read(&pos).expect("read back the new record");
    assert_eq!(&rec.payload[..], b"after recovery");
    drop(log);
    // Recovery must be stable: what opened once opens again, with the new
    // record after the old ones.
    let (log, _) = Log::open(io.shared(), dir, cfg.clone()).expect("second open after recovery");
    assert_eq!(log.next_index(), next + 1);
    if let (Some(before), Some(after)) = (replayed, replay(io, dir, &log)) {
        assert_eq!(
            after.get(&next).map(Vec::as_slice),
            Some(&b"after recovery"[..])
        );
        for (i, p) in &before {
            if let Some(q) = after.get(i) {
                assert_eq!(p, q, "record {i} changed between openings");
            }
        }
    }
}

/// Drives a real log; returns whether any failure was injected.
fn build(io: &SimIo, dir: &Path, b: &Built) -> bool {
    let cfg = b.cfg.config();
    let Ok((mut log, _)) = Log::open(io.shared(), dir, cfg.clone()) else {
        return false;
    };
    // Every record ever appended at each index (truncation forgets them).
    let mut history: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut faults = false;
    let mut poisoned_ever = false;
    let mut delayed = None;
    // Records from here on may have been dropped by a failed truncation.
    let mut cut = u64::MAX;
    for op in b.ops.iter().take(64) {
        match op {
            Op::Append(p) => {
                let bytes = p.bytes();
                if let Ok(pos) = log.append(&bytes) {
                    history.insert(pos.index, bytes);
                }
            }
            Op::AppendMany(n, b) => {
                for i in 0..*n % 32 {
                    let bytes = vec![*b; usize::from(i)];
                    if let Ok(pos) = log.append(&bytes) {
                        history.insert(pos.index, bytes);
                    }
                }
            }
            Op::Flush => {
                let _ = log.flush();
            }
            Op::Sync => {
                sync(&mut log);
            }
            Op::SyncLater => {
                if let Some(out) = delayed.take() {
                    log.complete_sync(out);
                }
                if let Ok(Some(job)) = log.prepare_sync() {
                    delayed = Some(job.run());
                }
                continue;
            }
            Op::Roll => {
                let _ = log.roll();
            }
            Op::TruncateFrom(k) => {
                let at = log.first_index().saturating_add(u64::from(*k));
                if log.truncate_from(at).is_ok() {
                    history.retain(|i, _| *i < at);
                } else {
                    // A failed truncation may have removed any suffix from
                    // `at` on (the log keeps a prefix): those records may
                    // or may not come back.
                    cut = cut.min(at);
                }
            }
            Op::PurgeBefore(k) => {
                let _ = log.purge_before(log.first_index().saturating_add(u64::from(*k)));
            }
            Op::Read(k) => {
                let i = log.first_index().saturating_add(u64::from(*k));
                if let Ok(r) = log.read_index(i) {
                    assert_eq!(
                        Some(&r.payload.to_vec()),
                        history.get(&i),
                        "read_index({i})"
                    );
                }
            }
            Op::FailNextWrite => {
                faults = true;
                io.fail_next_write();
            }
            Op::FailNextSync => {
                faults = true;
                io.fail_next_sync();
            }
            Op::Reopen => {
                if let Some(out) = delayed.take() {
                    log.complete_sync(out);
                }
                let poisoned = log.is_poisoned();
                poisoned_ever |= poisoned;
                let durable = log.durable_index();
                let (first, next) = (log.first_index(), log.next_index());
                drop(log);
                let Ok((l, _)) = Log::open(io.shared(), dir, cfg.clone()) else {
                    // Only an injected failure may stop a clean reopen.
                    assert!(faults, "reopen without a crash failed");
                    return faults;
                };
                log = l;
                let got = replay(io, dir, &log);
                if !faults && !poisoned_ever {
                    assert_eq!((log.first_index(), log.next_index()), (first, next));
                    let got = got.expect("clean reopen replays");
                    let want: BTreeMap<u64, Vec<u8>> = history
                        .range(first..next)
                        .map(|(k, v)| (*k, v.clone()))
                        .collect();
                    assert!(got == want, "clean reopen changed the log");
                } else if let Some(got) = got {
                    check_durable(&history, &got, first, durable, cut);
                }
                cut = u64::MAX;
            }
            Op::Crash(seed) => {
                if let Some(out) = delayed.take() {
                    log.complete_sync(out);
                }
                let durable = log.durable_index();
                let first = log.first_index();
                drop(log);
                io.crash(*seed);
                let Ok((l, _)) = Log::open(io.shared(), dir, cfg.clone()) else {
                    panic!("recovery after a power cut failed");
                };
                log = l;
                let got = replay(io, dir, &log).expect("replay after a power cut");
                check_durable(&history, &got, first, durable, cut);
                cut = u64::MAX;
                // What the crash dropped is gone for good.
                let next = log.next_index();
                history.retain(|i, _| *i < next);
            }
        }
        if let Some(out) = delayed.take() {
            log.complete_sync(out);
        }
    }
    drop(log);
    faults
}

/// Every record durable before (from `first`, below `cut`) is there;
/// everything there is what was appended at that index.
fn check_durable(
    history: &BTreeMap<u64, Vec<u8>>,
    got: &BTreeMap<u64, Vec<u8>>,
    first: u64,
    durable: Option<u64>,
    cut: u64,
) {
    for (i, p) in got {
        assert_eq!(Some(p), history.get(i), "record {i} was never appended");
    }
    if let Some(d) = durable {
        for i in (first..=d).take_while(|i| *i < cut) {
            if history.contains_key(&i) {
                assert!(got.contains_key(&i), "durable record {i} lost");
            }
        }
    }
}

fn damage(io: &SimIo, dir: &Path, damage: &[Damage]) {
    for d in damage.iter().take(8) {
        let Ok(mut files) = io.list(dir) else { return };
        if files.is_empty() {
            return;
        }
        files.sort();
        let path: PathBuf = files[usize::from(d.file) % files.len()].clone();
        let Ok(f) = io.open(&path, false) else {
            continue;
        };
        let len = f.len().unwrap_or(0);
        match &d.kind {
            DamageKind::Flip { at, mask } if len > 0 => {
                let at = u64::from(*at) % len;
                let mut b = [0u8];
                let _ = f.read_at(&mut b, at);
                b[0] ^= mask | 1;
                let _ = f.write_all_at(&b, at);
            }
            DamageKind::Flip { .. } => {}
            DamageKind::Truncate { keep } => {
                let _ = f.set_len(u64::from(*keep) % (len + 1));
            }
            DamageKind::Zero { at, len: n } if len > 0 => {
                let at = u64::from(*at) % len;
                let _ = f.write_all_at(&vec![0u8; usize::from(*n)], at);
            }
            DamageKind::Zero { .. } => {}
            DamageKind::Append(bytes) => {
                let _ = f.write_all_at(bytes, len);
            }
            DamageKind::Remove => {
                let _ = io.remove(&path);
            }
        }
    }
}

fuzz_target!(
    init: {
        ferry_fuzz::write_seeds_and_exit_if_asked(|| {
            ferry_fuzz::image::seed_logs()
                .into_iter()
                .map(|(name, image)| {
                    let mut v = vec![IMAGE_MODE];
                    v.extend(image);
                    (name, v)
                })
                .collect()
        });
    },
    |data: &[u8]| {
        let io = SimIo::new();
        let dir = Path::new(DIR);
        io.create_dir_all(dir).expect("mkdir");
        if let Some((&IMAGE_MODE, rest)) = data.split_first() {
            // The files of a log directory, byte for byte.
            let Some(image) = Image::parse(rest) else {
                return;
            };
            image.write_to(&io, dir);
            open_and_check(&io, dir, &image.config(), false);
            return;
        }
        let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
            return;
        };
        if ferry_fuzz::debug() {
            eprintln!("{input:#?}");
        }
        match input {
            Input::Raw { cfg, files } => {
                raw_files(&io, dir, &files);
                open_and_check(&io, dir, &cfg.config(), false);
            }
            Input::Built(b) => {
                let faults = build(&io, dir, &b);
                damage(&io, dir, &b.damage);
                // The log may still hold an unconsumed injected failure.
                open_and_check(&io, dir, &b.cfg.config(), faults);
            }
        }
    }
);

//! Turning whatever a crash left in a directory into a consistent log.
//!
//! Rules (see `docs/log-format.md` for the reasoning):
//! - Segments before a purge gap (a seal naming a missing predecessor) are
//!   leftovers of an interrupted purge: removed.
//! - A segment whose successor carries its seal was fully synced, so any
//!   defect in it is corruption: `LogError::Corrupt`. Only its index tail
//!   is scanned.
//! - Any other segment (the last, or one rolled just before a crash) is
//!   scanned completely. The first torn or failing record ends the log: the
//!   file is truncated there and every later segment is discarded. That
//!   is safe because nothing after an unsynced byte was ever reported
//!   durable.
//! - Discards go newest-first with a directory sync after each, so a crash
//!   during recovery leaves a state the next recovery handles the same way.

use crate::config::LogConfig;
use crate::error::LogError;
use crate::index::{self, IndexEntry, SparseIndex};
use crate::io::{FileIo, IoFile};
use crate::record::Defect;
use crate::scan::{ScanError, Scanner};
use crate::segment::{
    idx_path, parse_header, parse_name, FileKind, Header, SealState, Segment, SEAL_OFFSET,
    SEGMENT_HEADER_LEN,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SCAN_CHUNK: usize = 1 << 20;
/// Index entries tried from the end before rebuilding from scratch.
const INDEX_RETRIES: usize = 3;

/// What `Log::open` found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The directory held no log; a new one was created.
    pub created: bool,
    /// Segments in the recovered log.
    pub segments: usize,
    /// First retained index.
    pub first_index: u64,
    /// Index the next append gets.
    pub next_index: u64,
    /// Bytes cut off torn tails, plus the sizes of discarded segments.
    pub truncated_bytes: u64,
    /// Intact records that were discarded because they followed a torn one.
    pub truncated_records: u64,
    /// Segments removed because they followed the torn point.
    pub discarded_segments: usize,
    /// Segments removed as leftovers of an interrupted purge.
    pub stale_segments_removed: usize,
    /// Index files rewritten because they were missing or did not match.
    pub rebuilt_indexes: usize,
}

pub(crate) struct Recovered {
    pub segments: Vec<Segment>,
    pub report: RecoveryReport,
}

/// A segment file as found on disk.
struct Found {
    base: u64,
    path: PathBuf,
    file: Arc<dyn IoFile>,
    len: u64,
    header: Header,
}

pub(crate) fn recover(io: &dyn FileIo, dir: &Path, cfg: &LogConfig) -> Result<Recovered, LogError> {
    let mut report = RecoveryReport::default();
    let listing = io.list(dir).map_err(|e| LogError::io("list", dir, e))?;
    let mut logs = BTreeSet::new();
    let mut idxs = BTreeSet::new();
    for p in &listing {
        match parse_name(p) {
            Some((b, FileKind::Log)) => logs.insert(b),
            Some((b, FileKind::Index)) => idxs.insert(b),
            None => false,
        };
    }
    for orphan in idxs.difference(&logs) {
        let p = idx_path(dir, *orphan);
        if let Err(e) = io.remove(&p) {
            tracing::warn!(path = %p.display(), error = %e, "could not remove orphan index");
        }
    }
    let mut found = Vec::with_capacity(logs.len());
    for base in logs {
        found.push(inspect(io, dir, base)?);
    }
    if let Some(f) = found
        .iter()
        .find(|f| matches!(f.header, Header::Unsupported(_)))
    {
        return Err(LogError::corrupt(
            &f.path,
            0,
            "unsupported segment format version",
        ));
    }
    let start = stale_prefix(&found)?;
    for f in found.drain(..start) {
        tracing::warn!(segment = %f.path.display(), "removing leftover of an interrupted purge");
        remove_pair(io, dir, f.base, &f.path)?;
        report.stale_segments_removed += 1;
    }

    let Walk {
        mut segments,
        cut,
        torn,
    } = walk(io, dir, cfg, &found, &mut report)?;

    for f in found[cut..].iter().rev() {
        report.truncated_records += count_intact(f);
        report.truncated_bytes += f.len;
        report.discarded_segments += 1;
        remove_pair(io, dir, f.base, &f.path)?;
        io.sync_dir(dir)
            .map_err(|e| LogError::io("sync directory", dir, e))?;
    }
    if let Some((i, pos)) = torn {
        let f = &found[i];
        report.truncated_bytes += f.len - pos;
        f.file
            .set_len(pos)
            .map_err(|e| LogError::io("truncate segment", &f.path, e))?;
    }

    if segments.is_empty() {
        let base = found.first().map_or(cfg.first_index, |f| f.base);
        report.created = found.is_empty();
        segments.push(Segment::create(io, dir, base, 0, cfg.index_interval_bytes)?);
    }
    if let Some(active) = segments.last_mut() {
        active.seal = SealState::Open;
    }
    report.segments = segments.len();
    report.first_index = segments.first().map_or(0, |s| s.base);
    report.next_index = segments.last().map_or(0, Segment::end_index);
    Ok(Recovered { segments, report })
}

/// Where the walk over the segments stopped.
struct Walk {
    segments: Vec<Segment>,
    /// `found[cut..]` follow the end of the log and are discarded.
    cut: usize,
    /// `(i, pos)`: `found[i]` is cut at byte `pos`.
    torn: Option<(usize, u64)>,
}

/// Validates the segments oldest first and decides where the log ends.
fn walk(
    io: &dyn FileIo,
    dir: &Path,
    cfg: &LogConfig,
    found: &[Found],
    report: &mut RecoveryReport,
) -> Result<Walk, LogError> {
    let mut segments: Vec<Segment> = Vec::with_capacity(found.len());
    let mut cut = found.len();
    let mut torn: Option<(usize, u64)> = None;
    for i in 0..found.len() {
        let f = &found[i];
        let next_base = found.get(i + 1).map(|n| n.base);
        let sealed = found.get(i + 1).is_some_and(
            |n| matches!(n.header, Header::Valid { sealed_prev: Some(p), .. } if p == f.base),
        );
        let header_ok = match f.header {
            Header::Valid { base, .. } if base != f.base => {
                return Err(LogError::corrupt(
                    &f.path,
                    16,
                    "header base does not match file name",
                ));
            }
            Header::Valid { .. } => true,
            Header::Invalid(_) | Header::Unsupported(_) => false,
        };
        if !header_ok {
            let reason = reason_text(f);
            // The first segment is synced before `open` returns, so only an
            // interrupted creation of a brand-new log leaves it short.
            let aborted_creation = i == 0 && found.len() == 1 && f.len < SEGMENT_HEADER_LEN;
            if !aborted_creation && (sealed || i == 0) {
                return Err(LogError::corrupt(&f.path, 0, reason));
            }
            // Otherwise it was created just before the crash: nothing in it
            // or after it was ever durable.
            tracing::warn!(segment = %f.path.display(), reason, "discarding segment with torn header");
            cut = i;
            break;
        }
        let id = i as u64;
        if let (true, Some(next)) = (sealed, next_base) {
            segments.push(load_sealed(io, dir, cfg, f, next, id, report)?);
            continue;
        }
        let (seg, defect) = scan_unsealed(io, dir, cfg, f, id, report)?;
        let end = seg.end_index();
        let size = seg.size;
        segments.push(seg);
        if let Some((pos, defect)) = defect {
            tracing::warn!(
                segment = %f.path.display(), offset = pos, reason = %defect.describe(),
                "truncating torn log tail"
            );
            torn = Some((i, pos));
            cut = i + 1;
            break;
        }
        match next_base {
            Some(nb) if end > nb => {
                return Err(LogError::corrupt(
                    &f.path,
                    size,
                    format!("segment runs to index {end} but the next one starts at {nb}"),
                ));
            }
            Some(nb) if end < nb => {
                tracing::warn!(segment = %f.path.display(), end, next = nb, "segment ends early; discarding later segments");
                cut = i + 1;
                break;
            }
            _ => {}
        }
    }

    Ok(Walk {
        segments,
        cut,
        torn,
    })
}

fn reason_text(f: &Found) -> &'static str {
    match f.header {
        Header::Invalid(r) => r,
        Header::Unsupported(_) => "unsupported segment format version",
        Header::Valid { .. } => "valid",
    }
}

fn inspect(io: &dyn FileIo, dir: &Path, base: u64) -> Result<Found, LogError> {
    let path = crate::segment::log_path(dir, base);
    let file = io
        .open(&path, false)
        .map_err(|e| LogError::io("open segment", &path, e))?;
    let len = file
        .len()
        .map_err(|e| LogError::io("stat segment", &path, e))?;
    let mut head = vec![0u8; len.min(SEGMENT_HEADER_LEN) as usize];
    let n = file
        .read_at(&mut head, 0)
        .map_err(|e| LogError::io("read segment header", &path, e))?;
    head.truncate(n);
    Ok(Found {
        base,
        path,
        file,
        len,
        header: parse_header(&head),
    })
}

/// How many leading segments are leftovers of an interrupted purge.
fn stale_prefix(found: &[Found]) -> Result<usize, LogError> {
    let mut start = 0;
    for i in 1..found.len() {
        if let Header::Valid {
            base,
            sealed_prev: Some(prev),
        } = found[i].header
        {
            let before = found[i - 1].base;
            if prev == before {
                continue;
            }
            if prev > before && prev < base {
                start = i;
            } else {
                return Err(LogError::corrupt(
                    &found[i].path,
                    SEAL_OFFSET,
                    format!("seal names segment {prev}, which cannot precede it"),
                ));
            }
        }
    }
    Ok(start)
}

fn remove_pair(io: &dyn FileIo, dir: &Path, base: u64, path: &Path) -> Result<(), LogError> {
    io.remove(path)
        .map_err(|e| LogError::io("remove segment", path, e))?;
    let ip = idx_path(dir, base);
    if io.exists(&ip) {
        if let Err(e) = io.remove(&ip) {
            tracing::warn!(path = %ip.display(), error = %e, "could not remove index file");
        }
    }
    Ok(())
}

/// A segment's index file as found.
struct LoadedIndex {
    file: Arc<dyn IoFile>,
    path: PathBuf,
    on_disk: Vec<IndexEntry>,
}

/// Opens (creating if needed) a segment's index file and reads its entries.
fn open_index(io: &dyn FileIo, dir: &Path, base: u64) -> Result<LoadedIndex, LogError> {
    let path = idx_path(dir, base);
    let file = io
        .open(&path, true)
        .map_err(|e| LogError::io("open index", &path, e))?;
    let len = file
        .len()
        .map_err(|e| LogError::io("stat index", &path, e))?;
    let mut bytes = vec![0u8; len as usize];
    let n = file
        .read_at(&mut bytes, 0)
        .map_err(|e| LogError::io("read index", &path, e))?;
    bytes.truncate(n);
    Ok(LoadedIndex {
        file,
        path,
        on_disk: index::decode_entries(&bytes),
    })
}

fn segment(
    f: &Found,
    id: u64,
    index: SparseIndex,
    size: u64,
    records: u64,
    seal: SealState,
) -> Segment {
    Segment {
        id,
        base: f.base,
        path: f.path.clone(),
        file: f.file.clone(),
        index,
        size,
        records,
        // Dirty until `Log::open` has synced everything it recovered.
        mod_gen: 1,
        synced_gen: 0,
        seal,
    }
}

/// A segment known to be complete: trust the index up to its last entry
/// that checks out, verify everything after it.
fn load_sealed(
    io: &dyn FileIo,
    dir: &Path,
    cfg: &LogConfig,
    f: &Found,
    next_base: u64,
    id: u64,
    report: &mut RecoveryReport,
) -> Result<Segment, LogError> {
    let expected = next_base - f.base;
    let LoadedIndex {
        file: ifile,
        path: ipath,
        on_disk,
    } = open_index(io, dir, f.base)?;
    let mut entries = on_disk[..index::plausible_prefix(&on_disk, f.len, expected)].to_vec();
    let mut retries = 0;
    loop {
        let start = entries.last().copied();
        let (pos, rel) = start.map_or((SEGMENT_HEADER_LEN, 0), |e| (u64::from(e.pos), e.rel));
        let mut idx = SparseIndex::new(
            ifile.clone(),
            ipath.clone(),
            cfg.index_interval_bytes,
            entries.clone(),
            0,
        );
        let mut scanner = Scanner::new(&*f.file, pos, f.len, f.base + u64::from(rel), SCAN_CHUNK);
        let mut first = true;
        let outcome = loop {
            match scanner.next_record() {
                Ok(Some(r)) => {
                    idx.observe((r.index - f.base) as u32, r.pos);
                    first = false;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        match outcome {
            Err(ScanError::Defect { .. }) if first && start.is_some() => {
                // The entry points at something else: a stale cache line.
                entries.pop();
                retries += 1;
                if retries >= INDEX_RETRIES {
                    entries.clear();
                }
                continue;
            }
            Err(e) => return Err(e.into_log_error(&f.path)),
            Ok(()) => {}
        }
        if scanner.next_index() != next_base {
            return Err(LogError::corrupt(
                &f.path,
                scanner.pos(),
                format!(
                    "sealed segment ends at index {} but the next one starts at {next_base}",
                    scanner.next_index()
                ),
            ));
        }
        if idx
            .reconcile(&on_disk)
            .map_err(|e| LogError::io("write index", &ipath, e))?
        {
            report.rebuilt_indexes += 1;
        }
        return Ok(segment(f, id, idx, f.len, expected, SealState::Durable));
    }
}

/// A segment that may have a torn tail: verify every record. Returns the
/// segment cut at the first defect, and that defect.
fn scan_unsealed(
    io: &dyn FileIo,
    dir: &Path,
    cfg: &LogConfig,
    f: &Found,
    id: u64,
    report: &mut RecoveryReport,
) -> Result<(Segment, Option<(u64, Defect)>), LogError> {
    let LoadedIndex {
        file: ifile,
        path: ipath,
        on_disk,
    } = open_index(io, dir, f.base)?;
    let mut idx = SparseIndex::new(
        ifile,
        ipath.clone(),
        cfg.index_interval_bytes,
        Vec::new(),
        0,
    );
    let mut scanner = Scanner::new(&*f.file, SEGMENT_HEADER_LEN, f.len, f.base, SCAN_CHUNK);
    let defect = loop {
        match scanner.next_record() {
            Ok(Some(r)) => idx.observe((r.index - f.base) as u32, r.pos),
            Ok(None) => break None,
            Err(ScanError::Defect { pos, defect }) => break Some((pos, defect)),
            Err(ScanError::Io(e)) => return Err(LogError::io("read segment", &f.path, e)),
        }
    };
    if idx
        .reconcile(&on_disk)
        .map_err(|e| LogError::io("write index", &ipath, e))?
    {
        report.rebuilt_indexes += 1;
    }
    let records = scanner.next_index() - f.base;
    Ok((
        segment(f, id, idx, scanner.pos(), records, SealState::Pending),
        defect,
    ))
}

/// Intact records at the front of a segment about to be discarded.
fn count_intact(f: &Found) -> u64 {
    if !matches!(f.header, Header::Valid { .. }) {
        return 0;
    }
    let mut scanner = Scanner::new(&*f.file, SEGMENT_HEADER_LEN, f.len, f.base, SCAN_CHUNK);
    let mut n = 0;
    while let Ok(Some(_)) = scanner.next_record() {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests;

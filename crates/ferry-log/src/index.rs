//! The sparse index of one segment: `(relative index u32, position u32)`
//! pairs, one per `index_interval_bytes` of records.
//!
//! It is only a cache. It is never fsynced; recovery checks it against the
//! segment and rebuilds what does not fit, and lookups verify the record
//! they land on (falling back to a scan from the segment start).

use crate::io::IoFile;
use crate::segment::SEGMENT_HEADER_LEN;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes per entry in the `.idx` file.
pub(crate) const INDEX_ENTRY_LEN: usize = 8;

/// One index entry: record `base + rel` starts at byte `pos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub rel: u32,
    pub pos: u32,
}

#[derive(Debug)]
pub(crate) struct SparseIndex {
    file: Arc<dyn IoFile>,
    path: PathBuf,
    entries: Vec<IndexEntry>,
    /// Entries already in the file (a prefix of `entries`).
    written: usize,
    interval: u64,
    /// Position of the last indexed record, or the end of the header.
    last_pos: u64,
}

impl SparseIndex {
    /// An index whose file holds exactly `entries[..written]`.
    pub(crate) fn new(
        file: Arc<dyn IoFile>,
        path: PathBuf,
        interval: u32,
        entries: Vec<IndexEntry>,
        written: usize,
    ) -> Self {
        let last_pos = entries
            .last()
            .map_or(SEGMENT_HEADER_LEN, |e| u64::from(e.pos));
        SparseIndex {
            file,
            path,
            written: written.min(entries.len()),
            entries,
            interval: u64::from(interval),
            last_pos,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Notes the record `rel` starting at `pos`; records must come in order.
    pub(crate) fn observe(&mut self, rel: u32, pos: u64) {
        if pos >= self.last_pos + self.interval {
            // Segments are capped at u32::MAX bytes, so only the start of an
            // oversized lone record could miss out, and it needs no entry.
            if let Ok(p) = u32::try_from(pos) {
                self.entries.push(IndexEntry { rel, pos: p });
                self.last_pos = pos;
            }
        }
    }

    /// The last entry at or before `rel`.
    pub(crate) fn lookup(&self, rel: u32) -> Option<IndexEntry> {
        let n = self.entries.partition_point(|e| e.rel <= rel);
        n.checked_sub(1).and_then(|i| self.entries.get(i)).copied()
    }

    /// Writes entries not yet in the file.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if self.written == self.entries.len() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity((self.entries.len() - self.written) * INDEX_ENTRY_LEN);
        for e in &self.entries[self.written..] {
            buf.extend_from_slice(&e.rel.to_le_bytes());
            buf.extend_from_slice(&e.pos.to_le_bytes());
        }
        self.file
            .write_all_at(&buf, (self.written * INDEX_ENTRY_LEN) as u64)?;
        self.written = self.entries.len();
        Ok(())
    }

    /// Replaces the file's contents with all entries.
    pub(crate) fn rewrite(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.written = 0;
        self.flush()
    }

    /// After recovery rebuilt `entries`: keeps the file if it already holds
    /// exactly them, rewrites it otherwise. Returns whether it rewrote.
    pub(crate) fn reconcile(&mut self, on_disk: &[IndexEntry]) -> io::Result<bool> {
        if self.entries == on_disk {
            self.written = self.entries.len();
            return Ok(false);
        }
        self.rewrite()?;
        Ok(true)
    }

    /// Forgets entries for records `rel` and later.
    pub(crate) fn truncate(&mut self, rel: u32) -> io::Result<()> {
        let keep = self.entries.partition_point(|e| e.rel < rel);
        self.entries.truncate(keep);
        self.last_pos = self
            .entries
            .last()
            .map_or(SEGMENT_HEADER_LEN, |e| u64::from(e.pos));
        if self.written > keep {
            self.written = keep;
            self.file.set_len((keep * INDEX_ENTRY_LEN) as u64)?;
        }
        Ok(())
    }

    pub(crate) fn disk_bytes(&self) -> u64 {
        (self.entries.len() * INDEX_ENTRY_LEN) as u64
    }
}

/// Parses an index file's bytes; a torn trailing entry is ignored.
pub(crate) fn decode_entries(bytes: &[u8]) -> Vec<IndexEntry> {
    bytes
        .chunks_exact(INDEX_ENTRY_LEN)
        .map(|c| {
            let [r0, r1, r2, r3, p0, p1, p2, p3] = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
            IndexEntry {
                rel: u32::from_le_bytes([r0, r1, r2, r3]),
                pos: u32::from_le_bytes([p0, p1, p2, p3]),
            }
        })
        .collect()
}

/// Keeps the longest prefix of `entries` that is plausible for a segment of
/// `file_len` bytes holding at most `max_records` records: strictly
/// increasing, inside the file, past the header.
pub(crate) fn plausible_prefix(entries: &[IndexEntry], file_len: u64, max_records: u64) -> usize {
    let mut prev: Option<IndexEntry> = None;
    for (i, e) in entries.iter().enumerate() {
        let ok = u64::from(e.pos) >= SEGMENT_HEADER_LEN
            && u64::from(e.pos) < file_len
            && u64::from(e.rel) < max_records
            && prev.is_none_or(|p| e.rel > p.rel && e.pos > p.pos);
        if !ok {
            return i;
        }
        prev = Some(*e);
    }
    entries.len()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::io::{FileIo, SimIo};

    fn index(interval: u32) -> (SparseIndex, Arc<dyn IoFile>) {
        let io = SimIo::new();
        io.create_dir_all(Path::new("/x")).unwrap();
        let f = io.open(Path::new("/x/i"), true).unwrap();
        (
            SparseIndex::new(f.clone(), "/x/i".into(), interval, Vec::new(), 0),
            f,
        )
    }

    #[test]
    fn observes_every_interval_and_looks_up() {
        let (mut idx, f) = index(100);
        let mut pos = SEGMENT_HEADER_LEN;
        for rel in 0..50u32 {
            idx.observe(rel, pos);
            pos += 30;
        }
        // Records every 30 bytes, entries at least 100 bytes apart.
        assert_eq!(idx.entries().len(), 12);
        assert!(idx.entries().windows(2).all(|w| w[1].pos - w[0].pos >= 100));
        assert_eq!(idx.lookup(0), None);
        let e = idx.lookup(20).unwrap();
        assert!(e.rel <= 20);
        assert_eq!(idx.lookup(e.rel), Some(e));
        idx.flush().unwrap();
        assert_eq!(f.len().unwrap(), 96);
        let mut buf = vec![0u8; 96];
        f.read_at(&mut buf, 0).unwrap();
        assert_eq!(decode_entries(&buf), idx.entries());
    }

    #[test]
    fn truncate_drops_entries_and_file_bytes() {
        let (mut idx, f) = index(10);
        for rel in 0..20u32 {
            idx.observe(rel, SEGMENT_HEADER_LEN + u64::from(rel) * 20);
        }
        idx.flush().unwrap();
        idx.truncate(5).unwrap();
        assert!(idx.entries().iter().all(|e| e.rel < 5));
        assert_eq!(f.len().unwrap(), idx.disk_bytes());
        // Observing continues from the last kept entry.
        idx.observe(5, SEGMENT_HEADER_LEN + 100);
        assert_eq!(idx.entries().last().map(|e| e.rel), Some(5));
    }

    #[test]
    fn plausible_prefix_stops_at_nonsense() {
        let e = |rel, pos| IndexEntry { rel, pos };
        let list = [e(3, 100), e(7, 200), e(6, 300), e(9, 400)];
        assert_eq!(plausible_prefix(&list, 1000, 100), 2);
        assert_eq!(plausible_prefix(&list[..2], 150, 100), 1);
        assert_eq!(plausible_prefix(&list[..2], 1000, 5), 1);
        assert_eq!(plausible_prefix(&[e(0, 3)], 1000, 5), 0);
        assert_eq!(decode_entries(&[1, 0, 0, 0, 2, 0, 0, 0, 9]), vec![e(1, 2)]);
    }
}

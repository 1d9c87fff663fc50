//! Sequential record reading with large positional reads: replay,
//! lookups by index and recovery all walk segments through a `Scanner`.

use crate::error::LogError;
use crate::index::IndexEntry;
use crate::io::IoFile;
use crate::record::{self, Defect, RECORD_HEADER_LEN};
use crate::segment::SEGMENT_HEADER_LEN;
use bytes::{Bytes, BytesMut};
use std::io;
use std::path::Path;

/// A record as found in a segment.
#[derive(Debug)]
pub(crate) struct RawRecord {
    pub pos: u64,
    pub index: u64,
    pub len: u32,
    pub payload: Bytes,
}

#[derive(Debug)]
pub(crate) enum ScanError {
    Io(io::Error),
    Defect { pos: u64, defect: Defect },
}

impl ScanError {
    pub(crate) fn into_log_error(self, path: &Path) -> LogError {
        match self {
            ScanError::Io(e) => LogError::io("read", path, e),
            ScanError::Defect { pos, defect } => LogError::corrupt(path, pos, defect.describe()),
        }
    }
}

/// Walks the records of one segment: the file region `[pos, file_end)`
/// followed by `tail`, the not-yet-flushed bytes of the active segment.
#[derive(Debug)]
pub(crate) struct Scanner<'a> {
    file: &'a dyn IoFile,
    pos: u64,
    file_end: u64,
    tail: &'a [u8],
    next_index: u64,
    stop_index: u64,
    chunk: Bytes,
    chunk_start: u64,
    chunk_size: usize,
}

impl<'a> Scanner<'a> {
    /// Expects record `next_index` at `pos`. Reads `chunk_size` bytes at a
    /// time (payloads handed out share those chunks).
    pub(crate) fn new(
        file: &'a dyn IoFile,
        pos: u64,
        file_end: u64,
        next_index: u64,
        chunk_size: usize,
    ) -> Self {
        Scanner {
            file,
            pos,
            file_end,
            tail: &[],
            next_index,
            stop_index: u64::MAX,
            chunk: Bytes::new(),
            chunk_start: 0,
            chunk_size: chunk_size.max(RECORD_HEADER_LEN),
        }
    }

    pub(crate) fn with_tail(mut self, tail: &'a [u8]) -> Self {
        self.tail = tail;
        self
    }

    /// Ends the walk before record `index` even if bytes follow.
    pub(crate) fn stop_at(mut self, index: u64) -> Self {
        self.stop_index = index;
        self
    }

    /// Where the next record is expected.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    pub(crate) fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Changes the read size for the chunks still to come (a lookup
    /// starts small, a sequential read then reads ahead).
    pub(crate) fn set_chunk_size(&mut self, chunk_size: usize) {
        self.chunk_size = chunk_size.max(RECORD_HEADER_LEN);
    }

    fn limit(&self) -> u64 {
        self.file_end + self.tail.len() as u64
    }

    /// `n` bytes at `pos`, or `None` if they are not all there.
    fn fetch(&mut self, pos: u64, n: u64) -> Result<Option<Bytes>, ScanError> {
        let end = pos + n;
        if pos >= self.file_end {
            let off = (pos - self.file_end) as usize;
            return Ok(self
                .tail
                .get(off..off + n as usize)
                .map(Bytes::copy_from_slice));
        }
        if end > self.file_end {
            return Ok(None);
        }
        let chunk_end = self.chunk_start + self.chunk.len() as u64;
        if pos < self.chunk_start || end > chunk_end {
            let want = n.max(self.chunk_size as u64).min(self.file_end - pos);
            let mut buf = BytesMut::zeroed(want as usize);
            let got = self.file.read_at(&mut buf, pos).map_err(ScanError::Io)?;
            buf.truncate(got);
            self.chunk = buf.freeze();
            self.chunk_start = pos;
            if (got as u64) < n {
                return Ok(None);
            }
        }
        let from = (pos - self.chunk_start) as usize;
        Ok(Some(self.chunk.slice(from..from + n as usize)))
    }

    fn defect(&self, defect: Defect) -> ScanError {
        ScanError::Defect {
            pos: self.pos,
            defect,
        }
    }

    /// Reads and checks the next header; `None` at a clean end.
    fn header(&mut self) -> Result<Option<record::RecordHeader>, ScanError> {
        if self.next_index >= self.stop_index || self.pos >= self.limit() {
            return Ok(None);
        }
        let head = self
            .fetch(self.pos, RECORD_HEADER_LEN as u64)?
            .ok_or_else(|| self.defect(Defect::ShortHeader))?;
        let header = record::check_header(&head, self.next_index).map_err(|d| self.defect(d))?;
        if self.limit() - self.pos < header.total_len() {
            return Err(self.defect(Defect::ShortPayload));
        }
        Ok(Some(header))
    }

    /// The next record, checksum verified; `None` at a clean end.
    pub(crate) fn next_record(&mut self) -> Result<Option<RawRecord>, ScanError> {
        let Some(header) = self.header()? else {
            return Ok(None);
        };
        let total = header.total_len();
        let bytes = self
            .fetch(self.pos, total)?
            .ok_or_else(|| self.defect(Defect::ShortPayload))?;
        let payload = bytes.slice(RECORD_HEADER_LEN..);
        if !header.checks_out(&payload) {
            return Err(self.defect(Defect::BadChecksum));
        }
        let rec = RawRecord {
            pos: self.pos,
            index: self.next_index,
            len: total as u32,
            payload,
        };
        self.pos += total;
        self.next_index += 1;
        Ok(Some(rec))
    }

    /// Verifies the next record (checksum included) without moving;
    /// `false` at a clean end.
    pub(crate) fn verify_next(&mut self) -> Result<bool, ScanError> {
        let Some(header) = self.header()? else {
            return Ok(false);
        };
        let bytes = self
            .fetch(self.pos, header.total_len())?
            .ok_or_else(|| self.defect(Defect::ShortPayload))?;
        if !header.checks_out(&bytes[RECORD_HEADER_LEN..]) {
            return Err(self.defect(Defect::BadChecksum));
        }
        Ok(true)
    }

    /// Steps over the next record reading only its header; `false` at a
    /// clean end.
    pub(crate) fn skip_record(&mut self) -> Result<bool, ScanError> {
        let Some(header) = self.header()? else {
            return Ok(false);
        };
        self.pos += header.total_len();
        self.next_index += 1;
        Ok(true)
    }
}

/// Where one segment's records are, for [`seek`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentSpan<'a> {
    pub file: &'a dyn IoFile,
    /// Bytes of the file that hold records (header included).
    pub size: u64,
    /// Not-yet-flushed bytes after `size` (the active segment's buffer).
    pub tail: &'a [u8],
    /// Index of its first record and of the record after its last.
    pub base: u64,
    pub end: u64,
    /// The sparse-index entry at or before the wanted record, if any.
    pub hint: Option<IndexEntry>,
}

/// A scanner over `span` whose next record is `index`. The sparse index is
/// only a hint (never synced, possibly damaged): a wrong entry may land
/// anywhere, even on bytes that look like the right header, so the record
/// it names is verified before walking from it, and a bad entry costs a
/// rescan from the segment start, not a failed read.
pub(crate) fn seek<'a>(
    span: SegmentSpan<'a>,
    index: u64,
    chunk: usize,
    path: &Path,
) -> Result<Scanner<'a>, LogError> {
    let walk = |pos: u64, at: u64, hinted: bool| -> Result<Scanner<'a>, ScanError> {
        let mut sc = Scanner::new(span.file, pos, span.size, at, chunk)
            .with_tail(span.tail)
            .stop_at(span.end);
        if hinted && !sc.verify_next()? {
            return Err(ScanError::Defect {
                pos,
                defect: Defect::ShortHeader,
            });
        }
        while sc.next_index() < index {
            if !sc.skip_record()? {
                return Err(ScanError::Defect {
                    pos: sc.pos(),
                    defect: Defect::ShortHeader,
                });
            }
        }
        Ok(sc)
    };
    if let Some(hint) = span.hint {
        match walk(u64::from(hint.pos), span.base + u64::from(hint.rel), true) {
            Ok(sc) => return Ok(sc),
            Err(ScanError::Defect { .. }) => {
                tracing::debug!(segment = %path.display(), "stale index entry; scanning from the start");
            }
            Err(e) => return Err(e.into_log_error(path)),
        }
    }
    walk(SEGMENT_HEADER_LEN, span.base, false).map_err(|e| e.into_log_error(path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::io::{FileIo, SimIo};
    use crate::segment::SEGMENT_HEADER_LEN;
    use std::path::Path;
    use std::sync::Arc;

    fn file_with(records: &[(u64, &[u8])]) -> (Arc<dyn IoFile>, u64) {
        let io = SimIo::new();
        io.create_dir_all(Path::new("/s")).unwrap();
        let f = io.open(Path::new("/s/f"), true).unwrap();
        let mut buf = vec![0u8; SEGMENT_HEADER_LEN as usize];
        for (i, p) in records {
            record::encode_into(&mut buf, *i, p);
        }
        f.write_all_at(&buf, 0).unwrap();
        (f, buf.len() as u64)
    }

    #[test]
    fn walks_file_then_tail_with_small_chunks() {
        let (f, len) = file_with(&[(5, b"aaaa"), (6, b""), (7, &[9u8; 100])]);
        let mut tail = Vec::new();
        record::encode_into(&mut tail, 8, b"tail");
        let mut s = Scanner::new(&*f, SEGMENT_HEADER_LEN, len, 5, 16).with_tail(&tail);
        let mut seen = Vec::new();
        while let Some(r) = s.next_record().unwrap() {
            seen.push((r.index, r.payload.len()));
        }
        assert_eq!(seen, vec![(5, 4), (6, 0), (7, 100), (8, 4)]);
        assert_eq!(s.next_index(), 9);
    }

    #[test]
    fn reports_torn_and_corrupt_records_with_their_position() {
        let (f, len) = file_with(&[(0, b"first"), (1, b"second")]);
        let mut s = Scanner::new(&*f, SEGMENT_HEADER_LEN, len - 3, 0, 1024);
        assert!(s.next_record().unwrap().is_some());
        let at = s.pos();
        match s.next_record() {
            Err(ScanError::Defect { pos, defect }) => {
                assert_eq!(pos, at);
                assert_eq!(defect, Defect::ShortPayload);
            }
            other => panic!("unexpected {other:?}"),
        }
        f.write_all_at(&[0xFF], SEGMENT_HEADER_LEN + 17).unwrap();
        let mut s = Scanner::new(&*f, SEGMENT_HEADER_LEN, len, 0, 1024);
        assert!(matches!(
            s.next_record(),
            Err(ScanError::Defect {
                defect: Defect::BadChecksum,
                ..
            })
        ));
        // Skipping only looks at headers.
        let mut s = Scanner::new(&*f, SEGMENT_HEADER_LEN, len, 0, 1024).stop_at(1);
        assert!(s.skip_record().unwrap());
        assert!(!s.skip_record().unwrap());
    }
}

//! One segment: a `.log` file of records after a fixed header, plus its
//! sparse `.idx` cache, and the bookkeeping of what is written and synced.

use crate::error::LogError;
use crate::index::SparseIndex;
use crate::io::{FileIo, IoFile};
use bytes::{Bytes, BytesMut};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes before the first record of a segment.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 40;
const MAGIC: [u8; 8] = *b"FERRYLOG";
const VERSION: u32 = 1;
/// Where the seal (see [`seal_bytes`]) goes in the header.
pub(crate) const SEAL_OFFSET: u64 = 24;
const SEAL_TAG: &[u8; 4] = b"SEAL";

pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

pub(crate) fn idx_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.idx"))
}

/// Which of the log's files a name denotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    Log,
    Index,
}

pub(crate) fn parse_name(path: &Path) -> Option<(u64, FileKind)> {
    let name = path.file_name()?.to_str()?;
    let (stem, ext) = name.split_once('.')?;
    let kind = match ext {
        "log" => FileKind::Log,
        "idx" => FileKind::Index,
        _ => return None,
    };
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, kind))
}

fn header_crc(h: &[u8; SEGMENT_HEADER_LEN as usize]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&h[0..12]), &h[16..24])
}

/// A fresh header: magic, version, checksum, base; seal left blank.
pub(crate) fn encode_header(base: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&base.to_le_bytes());
    let crc = header_crc(&h);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

fn seal_crc(prev_base: u64, base: u64) -> u32 {
    let c = crc32c::crc32c_append(crc32c::crc32c(SEAL_TAG), &prev_base.to_le_bytes());
    crc32c::crc32c_append(c, &base.to_le_bytes())
}

/// The seal written into segment `base`'s header once the previous segment
/// (`prev_base`) is completely synced: it tells recovery that any damage in
/// that segment is not a torn write but real corruption.
pub(crate) fn seal_bytes(prev_base: u64, base: u64) -> [u8; 12] {
    let mut s = [0u8; 12];
    s[0..8].copy_from_slice(&prev_base.to_le_bytes());
    s[8..12].copy_from_slice(&seal_crc(prev_base, base).to_le_bytes());
    s
}

/// What a segment header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Header {
    Valid {
        base: u64,
        sealed_prev: Option<u64>,
    },
    /// Well-formed but from a newer format.
    Unsupported(u32),
    /// Torn or damaged.
    Invalid(&'static str),
}

pub(crate) fn parse_header(bytes: &[u8]) -> Header {
    let Some(h) = bytes
        .get(..SEGMENT_HEADER_LEN as usize)
        .and_then(|b| <&[u8; SEGMENT_HEADER_LEN as usize]>::try_from(b).ok())
    else {
        return Header::Invalid("short segment header");
    };
    let word = |r: std::ops::Range<usize>| -> u64 {
        h[r].iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    };
    if h[0..8] != MAGIC {
        return Header::Invalid("bad segment magic");
    }
    if word(12..16) != u64::from(header_crc(h)) {
        return Header::Invalid("segment header checksum mismatch");
    }
    let version = word(8..12) as u32;
    if version != VERSION {
        return Header::Unsupported(version);
    }
    let base = word(16..24);
    let prev = word(24..32);
    let sealed_prev = (word(32..36) == u64::from(seal_crc(prev, base))).then_some(prev);
    Header::Valid { base, sealed_prev }
}

/// Whether the predecessor's completeness is recorded in this segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SealState {
    /// The active segment: still growing.
    Open,
    /// Rolled; the seal is not durable in the successor yet.
    Pending,
    /// Rolled, fully synced, and its successor carries a durable seal.
    Durable,
}

#[derive(Debug)]
pub(crate) struct Segment {
    /// Unique per `Log` instance (bases repeat after truncation).
    pub id: u64,
    pub base: u64,
    pub path: PathBuf,
    pub file: Arc<dyn IoFile>,
    pub index: SparseIndex,
    /// Bytes handed to the OS, header included.
    pub size: u64,
    pub records: u64,
    /// Bumped by every change to the file; a sync job records the value it
    /// covered in `synced_gen`.
    pub mod_gen: u64,
    pub synced_gen: u64,
    pub seal: SealState,
}

impl Segment {
    /// Creates the files of an empty segment. An existing file of that
    /// name is stale (a leftover of a truncation) and is emptied first.
    pub(crate) fn create(
        io: &dyn FileIo,
        dir: &Path,
        base: u64,
        id: u64,
        interval: u32,
    ) -> Result<Segment, LogError> {
        let path = log_path(dir, base);
        let file = io
            .open(&path, true)
            .map_err(|e| LogError::io("create segment", &path, e))?;
        file.set_len(0)
            .and_then(|()| file.write_all_at(&encode_header(base), 0))
            .map_err(|e| LogError::io("write segment header", &path, e))?;
        let ipath = idx_path(dir, base);
        let ifile = io
            .open(&ipath, true)
            .and_then(|f| f.set_len(0).map(|()| f))
            .map_err(|e| LogError::io("create index", &ipath, e))?;
        Ok(Segment {
            id,
            base,
            path,
            file,
            index: SparseIndex::new(ifile, ipath, interval, Vec::new(), 0),
            size: SEGMENT_HEADER_LEN,
            records: 0,
            mod_gen: 1,
            synced_gen: 0,
            seal: SealState::Open,
        })
    }

    /// Index the record after this segment's last one gets.
    pub(crate) fn end_index(&self) -> u64 {
        self.base + self.records
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.mod_gen != self.synced_gen
    }

    /// Nothing about this rolled segment still waits for a sync.
    pub(crate) fn is_settled(&self) -> bool {
        !self.is_dirty() && self.seal == SealState::Durable
    }

    pub(crate) fn disk_bytes(&self) -> u64 {
        self.size + self.index.disk_bytes()
    }

    /// Reads `len` bytes at `offset`; `None` if the file is shorter.
    pub(crate) fn read_exact_at(&self, offset: u64, len: usize) -> io::Result<Option<Bytes>> {
        let mut buf = BytesMut::zeroed(len);
        let n = self.file.read_at(&mut buf, offset)?;
        Ok((n == len).then(|| buf.freeze()))
    }

    /// Unlinks both files. The index is a cache, so failing to remove it
    /// only costs a warning (recovery deletes orphans).
    pub(crate) fn remove_files(&self, io: &dyn FileIo) -> Result<(), LogError> {
        io.remove(&self.path)
            .map_err(|e| LogError::io("remove segment", &self.path, e))?;
        if let Err(e) = io.remove(self.index.path()) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.index.path().display(), error = %e, "could not remove index file");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_seal() {
        let mut h = encode_header(1234);
        assert_eq!(
            parse_header(&h),
            Header::Valid {
                base: 1234,
                sealed_prev: None
            }
        );
        h[SEAL_OFFSET as usize..SEAL_OFFSET as usize + 12].copy_from_slice(&seal_bytes(1000, 1234));
        assert_eq!(
            parse_header(&h),
            Header::Valid {
                base: 1234,
                sealed_prev: Some(1000)
            }
        );
        // A seal made for another segment does not count.
        h[SEAL_OFFSET as usize..SEAL_OFFSET as usize + 12].copy_from_slice(&seal_bytes(1000, 999));
        assert!(matches!(
            parse_header(&h),
            Header::Valid {
                sealed_prev: None,
                ..
            }
        ));
        // Nor does a torn one.
        let mut torn = encode_header(0);
        torn[SEAL_OFFSET as usize..SEAL_OFFSET as usize + 6]
            .copy_from_slice(&seal_bytes(0, 0)[..6]);
        assert!(matches!(
            parse_header(&torn),
            Header::Valid {
                sealed_prev: None,
                ..
            }
        ));
        let zero_seal = encode_header(0);
        assert!(matches!(
            parse_header(&zero_seal),
            Header::Valid {
                sealed_prev: None,
                ..
            }
        ));
    }

    #[test]
    fn damaged_headers_are_invalid() {
        let h = encode_header(7);
        assert!(matches!(parse_header(&h[..20]), Header::Invalid(_)));
        let mut bad = h;
        bad[17] ^= 1;
        assert!(matches!(parse_header(&bad), Header::Invalid(_)));
        let mut magic = h;
        magic[0] = b'X';
        assert!(matches!(parse_header(&magic), Header::Invalid(_)));
        assert!(matches!(parse_header(&[0u8; 40]), Header::Invalid(_)));
    }

    #[test]
    fn file_names() {
        let p = log_path(Path::new("/d"), 42);
        assert_eq!(p, Path::new("/d/00000000000000000042.log"));
        assert_eq!(parse_name(&p), Some((42, FileKind::Log)));
        assert_eq!(
            parse_name(&idx_path(Path::new("/d"), 7)),
            Some((7, FileKind::Index))
        );
        assert_eq!(parse_name(Path::new("/d/42.log")), None);
        assert_eq!(parse_name(Path::new("/d/0000000000000000004x.log")), None);
        assert_eq!(parse_name(Path::new("/d/00000000000000000042.tmp")), None);
    }
}

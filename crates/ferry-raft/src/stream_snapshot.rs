//! The file a stream group's snapshot is shipped as (`docs/stream-snapshot.md`):
//! its meta and offset count, then the stream's records from the sender's
//! first retained offset up to that count, as stored.
//!
//! ```text
//! | "FRYSSNP1" | head_len u32 | head_crc u32 | head | records ... | trailer |
//!   head    = encode_snapshot_head(meta, next u64)
//!   record  = len u32 | payload (a stream record as stored, docs/streams.md)
//!   trailer = "FRYSSEND" | first u64 | count u64 | crc32c u32 (of the records' bytes)
//! ```
//! All integers little-endian. `first + count = next`, or `count = 0` and
//! `first >= next` when the sender's retention has gone past the snapshot's
//! offset count. Written only when a lagging replica needs
//! it (never at build time: a stream's snapshot is its checkpoint), read
//! twice on the receiver: checked whole, then installed.

use crate::codec::{decode_snapshot_head, encode_snapshot_head, SnapMeta};
use crate::error::RaftLogError;
use crate::snapshot::{bad, io_err, SeqReader};
use crate::types::SnapshotFileRef;
use bytes::Bytes;
use ferry_log::{FileIo, IoFile};
use ferry_queue::stream::Stream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"FRYSSNP1";
const END: &[u8; 8] = b"FRYSSEND";
const TRAILER: usize = 8 + 8 + 8 + 4;
/// Written out in pieces of about this size.
const WRITE_CHUNK: usize = 1 << 20;

/// A stream group's current snapshot, shipped on demand: the records are
/// read from the stream when a follower needs them.
#[derive(Clone)]
pub struct StreamSnapshotRef {
    /// The stream whose records it ships.
    pub stream: Arc<Stream>,
    /// Where the transfer file is written.
    pub io: Arc<dyn FileIo>,
    /// The group's directory.
    pub dir: PathBuf,
    /// Its meta.
    pub meta: SnapMeta,
    /// The offset count at its log id.
    pub next: u64,
}

impl std::fmt::Debug for StreamSnapshotRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSnapshotRef")
            .field("meta", &self.meta)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

fn head_bytes(meta: &SnapMeta, next: u64) -> Vec<u8> {
    let mut head = Vec::new();
    encode_snapshot_head(meta, &next.to_le_bytes(), &mut head);
    head
}

impl StreamSnapshotRef {
    /// Writes the transfer file (blocking: reads every retained record up
    /// to `next`) and returns it open; its name is removed at once (the
    /// handle reads it, nothing is left behind).
    pub fn materialize(&self) -> Result<SnapshotFileRef, RaftLogError> {
        static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.join(format!("stream-snapshot-{n}.send"));
        let e = |err: std::io::Error| io_err(&path, err);
        let file = self.io.open(&path, true).map_err(e)?;
        file.set_len(0).map_err(e)?;
        let head = head_bytes(&self.meta, self.next);
        let mut buf = Vec::with_capacity(WRITE_CHUNK + 64);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&u32::try_from(head.len()).unwrap_or(u32::MAX).to_le_bytes());
        buf.extend_from_slice(&crc32c::crc32c(&head).to_le_bytes());
        buf.extend_from_slice(&head);
        let (mut at, mut crc, mut count) = (0u64, 0u32, 0u64);
        let mut io_failed = None;
        let first = self
            .stream
            .export_records(self.next, &mut |_, payload| {
                let len = u32::try_from(payload.len())
                    .unwrap_or(u32::MAX)
                    .to_le_bytes();
                crc = crc32c::crc32c_append(crc, &len);
                crc = crc32c::crc32c_append(crc, payload);
                buf.extend_from_slice(&len);
                buf.extend_from_slice(payload);
                count += 1;
                if buf.len() >= WRITE_CHUNK {
                    if let Err(err) = file.write_all_at(&buf, at) {
                        io_failed = Some(err);
                        return Err(ferry_queue::error::CoreError::Corrupt(
                            "snapshot file write failed".into(),
                        ));
                    }
                    at += buf.len() as u64;
                    buf.clear();
                }
                Ok(())
            })
            .map_err(|err| match io_failed.take() {
                Some(io) => io_err(&path, io),
                None => RaftLogError::Task(err.to_string()),
            })?;
        buf.extend_from_slice(END);
        buf.extend_from_slice(&first.to_le_bytes());
        buf.extend_from_slice(&count.to_le_bytes());
        buf.extend_from_slice(&crc.to_le_bytes());
        file.write_all_at(&buf, at).map_err(e)?;
        let len = at + buf.len() as u64;
        let _ = self.io.remove(&path);
        Ok(SnapshotFileRef { path, len, file })
    }
}

/// What a received transfer file holds, checked: its meta, offset count,
/// first offset and number of records.
#[derive(Debug)]
pub struct Received {
    pub meta: SnapMeta,
    pub next: u64,
    pub first: u64,
    pub count: u64,
    head_end: u64,
}

/// Checks a received transfer file whole (head, every record's framing,
/// the records' checksum, the trailer).
pub fn check(file: &dyn IoFile, len: u64, path: &Path) -> Result<Received, RaftLogError> {
    if len < (8 + 8 + TRAILER) as u64 {
        return Err(bad(path, "stream snapshot too short"));
    }
    let mut r = SeqReader::new(file, len - TRAILER as u64);
    let h = r.take(16).map_err(|e| io_err(path, e))?.to_vec();
    if &h[..8] != MAGIC {
        return Err(bad(path, "not a stream snapshot (magic)"));
    }
    let head_len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let head_crc = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    if head_len as u64 > len {
        return Err(bad(path, "head longer than the file"));
    }
    let head = r.take(head_len).map_err(|e| io_err(path, e))?.to_vec();
    if crc32c::crc32c(&head) != head_crc {
        return Err(bad(path, "head checksum mismatch"));
    }
    let (meta, rest) = decode_snapshot_head(&head).map_err(|e| bad(path, e.0))?;
    let next = rest
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad(path, "no offset count in the head"))?;
    let head_end = r.offset();
    let mut t = [0u8; TRAILER];
    let got = file
        .read_at(&mut t, len - TRAILER as u64)
        .map_err(|e| io_err(path, e))?;
    if got != TRAILER || &t[..8] != END {
        return Err(bad(path, "no trailer"));
    }
    let word = |at: usize| u64::from_le_bytes(t[at..at + 8].try_into().unwrap_or([0; 8]));
    let (first, count) = (word(8), word(16));
    let want_crc = u32::from_le_bytes([t[24], t[25], t[26], t[27]]);
    // The records end at the snapshot's offset count, or there are none
    // because the sender's retention has gone past it (the receiver's log
    // then starts at `first`, as the sender's does).
    let ends = first.checked_add(count) == Some(next) || (count == 0 && first >= next);
    if !ends {
        return Err(bad(
            path,
            format!("{count} records from {first} do not end at {next}"),
        ));
    }
    let (mut crc, mut seen) = (0u32, 0u64);
    let end = len - TRAILER as u64;
    while r.offset() < end {
        let l = r.take(4).map_err(|e| io_err(path, e))?.to_vec();
        crc = crc32c::crc32c_append(crc, &l);
        let n = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
        if n as u64 > end - r.offset() {
            return Err(bad(path, "a record runs past the end"));
        }
        crc = crc32c::crc32c_append(crc, r.take(n).map_err(|e| io_err(path, e))?);
        seen += 1;
    }
    if seen != count || crc != want_crc {
        return Err(bad(path, "records damaged (count or checksum)"));
    }
    Ok(Received {
        meta,
        next,
        first,
        count,
        head_end,
    })
}

/// The records of a checked transfer file, in order.
pub fn records<'a>(
    file: &'a dyn IoFile,
    len: u64,
    got: &Received,
) -> impl Iterator<Item = ferry_queue::error::Result<Bytes>> + 'a {
    let mut r = SeqReader::new(file, len - TRAILER as u64);
    let skip = r.take(got.head_end as usize).map(|_| ());
    let mut left = got.count;
    let mut failed = skip.err();
    std::iter::from_fn(move || {
        if let Some(e) = failed.take() {
            left = 0;
            return Some(Err(ferry_queue::error::CoreError::Corrupt(e.to_string())));
        }
        if left == 0 {
            return None;
        }
        left -= 1;
        let rec = r
            .take(4)
            .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize);
        let rec = rec.and_then(|n| r.take(n).map(Bytes::copy_from_slice));
        Some(rec.map_err(|e| {
            left = 0;
            ferry_queue::error::CoreError::Corrupt(e.to_string())
        }))
    })
}

#[cfg(test)]
#[path = "stream_snapshot_tests.rs"]
mod tests;

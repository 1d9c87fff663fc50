//! A queue group's snapshots: the file format (`docs/queue-snapshot.md`)
//! and the [`SnapshotStore`] of one group — its current snapshot file,
//! which also serves the records of the messages it holds once the log
//! below it is purged, and the file a follower receives from the leader.
//!
//! ```text
//! | magic "FRYQSNP1" | head_len u32 | head_crc u32 | head (head_len) |
//! | record: id u64 | len u32 | crc32c u32 | bytes (len) | ... |
//! | count u64 | "FRYQSEND" |
//! ```
//! The head is the snapshot's meta and the queue's state image
//! (`codec::encode_snapshot_head`); the records are the Enqueue records of
//! the messages the image holds, by id. A file is written to a temporary
//! name, synced and renamed (`snapshot-<index>.fqs`), then the older one
//! is removed: a crash leaves the old snapshot or the new one.
//!
//! Blocking I/O throughout: callers run it on tokio's blocking pool.

use crate::codec::{decode_snapshot_head, encode_snapshot_head, SnapMeta};
use crate::error::RaftLogError;
use bytes::Bytes;
use ferry_log::{FileIo, IoFile};
use ferry_queue::queue::state::StateImage;
use parking_lot::{Mutex, RwLock};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"FRYQSNP1";
const TRAILER: &[u8; 8] = b"FRYQSEND";
const HEAD: usize = 16;
const REC_HEAD: usize = 16;
/// Bytes read or written at once.
pub const CHUNK: usize = 1 << 20;
const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".fqs";
const RECV: &str = "snapshot.recv";

pub(crate) fn bad(path: &Path, reason: impl Into<String>) -> RaftLogError {
    RaftLogError::Snapshot {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

pub(crate) fn io_err(path: &Path, e: std::io::Error) -> RaftLogError {
    bad(path, e.to_string())
}

/// An open snapshot file: its meta and where each record is.
#[derive(Debug)]
pub struct SnapshotFile {
    path: PathBuf,
    file: Arc<dyn IoFile>,
    len: u64,
    meta: SnapMeta,
    /// (id, offset of its bytes, len, crc32c), by id.
    index: Vec<(u64, u64, u32, u32)>,
}

impl SnapshotFile {
    /// What openraft knows of it.
    pub fn meta(&self) -> &SnapMeta {
        &self.meta
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds no bytes (never: a file has its head).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The open file.
    pub fn file(&self) -> &Arc<dyn IoFile> {
        &self.file
    }

    /// Number of records it holds.
    pub fn records(&self) -> usize {
        self.index.len()
    }

    /// The record of message `id`, if the snapshot holds it.
    pub fn read(&self, id: u64) -> Option<Result<Bytes, RaftLogError>> {
        let at = self.index.binary_search_by_key(&id, |r| r.0).ok()?;
        let (_, off, len, crc) = self.index[at];
        let mut buf = vec![0u8; len as usize];
        Some(match self.file.read_at(&mut buf, off) {
            Ok(n) if n == buf.len() && crc32c::crc32c(&buf) == crc => Ok(Bytes::from(buf)),
            Ok(_) => Err(bad(&self.path, format!("record {id} is damaged"))),
            Err(e) => Err(io_err(&self.path, e)),
        })
    }

    /// Opens and checks a whole file: its head, every record's checksum,
    /// the trailer. Returns it and the state image its head holds.
    pub fn open(io: &dyn FileIo, path: &Path) -> Result<(Self, StateImage), RaftLogError> {
        let file = io.open(path, false).map_err(|e| io_err(path, e))?;
        let len = file.len().map_err(|e| io_err(path, e))?;
        let mut r = SeqReader::new(file.as_ref(), len);
        let head = r.take(HEAD).map_err(|e| io_err(path, e))?;
        if &head[..8] != MAGIC {
            return Err(bad(path, "not a queue snapshot (magic)"));
        }
        let head_len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
        let head_crc = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
        if (head_len as u64) > len.saturating_sub((HEAD + 16) as u64) {
            return Err(bad(path, "head longer than the file"));
        }
        let head = r.take(head_len).map_err(|e| io_err(path, e))?.to_vec();
        if crc32c::crc32c(&head) != head_crc {
            return Err(bad(path, "head checksum mismatch"));
        }
        let (meta, image) = decode_snapshot_head(&head).map_err(|e| bad(path, e.0))?;
        let image = StateImage::decode(image).map_err(|e| bad(path, e.0))?;
        let end = len - 16;
        let mut index = Vec::with_capacity(image.rows.len());
        while r.offset() < end {
            let h = r.take(REC_HEAD).map_err(|e| io_err(path, e))?;
            let mut id = [0u8; 8];
            id.copy_from_slice(&h[..8]);
            let id = u64::from_le_bytes(id);
            let n = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
            let crc = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
            if r.offset() + u64::from(n) > end {
                return Err(bad(path, format!("record {id} runs past the end")));
            }
            let off = r.offset();
            let body = r.take(n as usize).map_err(|e| io_err(path, e))?;
            if crc32c::crc32c(body) != crc {
                return Err(bad(path, format!("record {id} checksum mismatch")));
            }
            if index
                .last()
                .is_some_and(|p: &(u64, u64, u32, u32)| p.0 >= id)
            {
                return Err(bad(path, format!("record {id} out of order")));
            }
            index.push((id, off, n, crc));
        }
        let t = r.take(16).map_err(|e| io_err(path, e))?;
        let mut count = [0u8; 8];
        count.copy_from_slice(&t[..8]);
        if &t[8..] != TRAILER || u64::from_le_bytes(count) != index.len() as u64 {
            return Err(bad(path, "bad trailer"));
        }
        let ids: Vec<u64> = image.rows.iter().map(|r| r.id).collect();
        if !ids.iter().copied().eq(index.iter().map(|r| r.0)) {
            return Err(bad(path, "records do not match the state image"));
        }
        let f = SnapshotFile {
            path: path.to_path_buf(),
            file,
            len,
            meta,
            index,
        };
        Ok((f, image))
    }
}

/// Reads a file front to back in large chunks.
pub(crate) struct SeqReader<'a> {
    f: &'a dyn IoFile,
    len: u64,
    at: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl<'a> SeqReader<'a> {
    pub(crate) fn new(f: &'a dyn IoFile, len: u64) -> Self {
        SeqReader {
            f,
            len,
            at: 0,
            buf: Vec::new(),
            pos: 0,
        }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.at + self.pos as u64
    }

    pub(crate) fn take(&mut self, n: usize) -> std::io::Result<&[u8]> {
        if self.buf.len() - self.pos < n {
            self.buf.drain(..self.pos);
            self.at += self.pos as u64;
            self.pos = 0;
            let have = self.buf.len();
            let from = self.at + have as u64;
            let want = n.max(CHUNK) - have;
            let left = usize::try_from(self.len.saturating_sub(from)).unwrap_or(usize::MAX);
            let want = want.min(left);
            self.buf.resize(have + want, 0);
            let got = self.f.read_at(&mut self.buf[have..], from)?;
            self.buf.truncate(have + got);
            if self.buf.len() < n {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
}

/// Writes a file front to back in large chunks.
struct SeqWriter {
    f: Arc<dyn IoFile>,
    at: u64,
    buf: Vec<u8>,
}

impl SeqWriter {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.f.write_all_at(&self.buf, self.at)?;
        self.at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// One group's snapshots (in its directory).
#[derive(Debug)]
pub struct SnapshotStore {
    io: Arc<dyn FileIo>,
    dir: PathBuf,
    current: RwLock<Option<Arc<SnapshotFile>>>,
    /// Serializes builds, installs and receptions (taken before
    /// `current`).
    busy: Mutex<()>,
}

fn snapshot_index(p: &Path) -> Option<u64> {
    let name = p.file_name()?.to_str()?;
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

impl SnapshotStore {
    /// Opens the snapshots of the group in `dir`: the newest whole one is
    /// current (its state image returned), older ones and unfinished
    /// writes are removed. A damaged newest file is an error (the log
    /// below it may be purged: starting without it would lose messages).
    pub fn open(
        io: Arc<dyn FileIo>,
        dir: &Path,
    ) -> Result<(Arc<Self>, Option<StateImage>), RaftLogError> {
        let listing = io.list(dir).map_err(|e| io_err(dir, e))?;
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for p in listing {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(i) = snapshot_index(&p) {
                found.push((i, p));
            } else if name.starts_with(PREFIX) || name == RECV {
                // An unfinished write or reception.
                let _ = io.remove(&p);
            }
        }
        found.sort();
        let mut current = None;
        let mut image = None;
        if let Some((_, newest)) = found.pop() {
            let (f, img) = SnapshotFile::open(io.as_ref(), &newest)?;
            current = Some(Arc::new(f));
            image = Some(img);
        }
        for (_, old) in found {
            let _ = io.remove(&old);
        }
        let store = SnapshotStore {
            io,
            dir: dir.to_path_buf(),
            current: RwLock::new(current),
            busy: Mutex::new(()),
        };
        Ok((Arc::new(store), image))
    }

    /// The current snapshot.
    pub fn current(&self) -> Option<Arc<SnapshotFile>> {
        self.current.read().clone()
    }

    /// The record of message `id` if the current snapshot holds it.
    pub fn read(&self, id: u64) -> Option<Result<Bytes, RaftLogError>> {
        let cur = self.current()?;
        cur.read(id)
    }

    /// Writes a snapshot with `meta` and `image`, whose records `record`
    /// gives by id, and makes it current. Returns it — or the current one
    /// if that is as recent (an install overtook this build: the image
    /// is older than what is installed, and its records may be gone).
    pub fn build(
        &self,
        meta: &SnapMeta,
        image: &StateImage,
        record: &mut dyn FnMut(u64) -> Result<Bytes, RaftLogError>,
    ) -> Result<Arc<SnapshotFile>, RaftLogError> {
        let _busy = self.busy.lock();
        if let Some(cur) = self.current() {
            if cur.meta.last_log_id >= meta.last_log_id {
                return Ok(cur);
            }
        }
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let path = self.dir.join(format!("{PREFIX}{index:020}{SUFFIX}"));
        let tmp = self.dir.join(format!("{PREFIX}{index:020}.tmp"));
        let e = |e: std::io::Error| io_err(&tmp, e);
        let f = self.io.open(&tmp, true).map_err(e)?;
        f.set_len(0).map_err(e)?;
        let mut head = Vec::new();
        encode_snapshot_head(meta, &image.encode(), &mut head);
        let mut w = SeqWriter {
            f: f.clone(),
            at: 0,
            buf: Vec::with_capacity(CHUNK + 64),
        };
        w.put(MAGIC).map_err(e)?;
        w.put(&u32::try_from(head.len()).unwrap_or(u32::MAX).to_le_bytes())
            .map_err(e)?;
        w.put(&crc32c::crc32c(&head).to_le_bytes()).map_err(e)?;
        w.put(&head).map_err(e)?;
        let mut idx = Vec::with_capacity(image.rows.len());
        for row in &image.rows {
            let b = record(row.id)?;
            let n = u32::try_from(b.len()).map_err(|_| bad(&tmp, "record too big"))?;
            let crc = crc32c::crc32c(&b);
            w.put(&row.id.to_le_bytes()).map_err(e)?;
            w.put(&n.to_le_bytes()).map_err(e)?;
            w.put(&crc.to_le_bytes()).map_err(e)?;
            idx.push((row.id, w.at + w.buf.len() as u64, n, crc));
            w.put(&b).map_err(e)?;
        }
        w.put(&(idx.len() as u64).to_le_bytes()).map_err(e)?;
        w.put(TRAILER).map_err(e)?;
        w.flush().map_err(e)?;
        f.sync_data().map_err(e)?;
        let len = w.at;
        drop(w);
        drop(f);
        self.io.rename(&tmp, &path).map_err(e)?;
        self.io
            .sync_dir(&self.dir)
            .map_err(|e| io_err(&self.dir, e))?;
        let file = self.io.open(&path, false).map_err(|e| io_err(&path, e))?;
        let snap = Arc::new(SnapshotFile {
            path,
            file,
            len,
            meta: meta.clone(),
            index: idx,
        });
        self.replace(snap.clone());
        Ok(snap)
    }

    /// Makes `snap` current and removes the file it replaces.
    fn replace(&self, snap: Arc<SnapshotFile>) {
        let old = self.current.write().replace(snap.clone());
        if let Some(old) = old {
            if old.path != snap.path {
                if let Err(e) = self.io.remove(&old.path) {
                    tracing::warn!(path = %old.path.display(), error = %e, "old snapshot not removed");
                }
            }
        }
    }

    /// Writes `bytes` at `offset` of the snapshot being received (offset
    /// 0 starts a new one; others must follow what was received).
    pub fn receive_chunk(&self, offset: u64, bytes: &[u8]) -> Result<(), RaftLogError> {
        let _busy = self.busy.lock();
        let path = self.dir.join(RECV);
        let e = |e: std::io::Error| io_err(&path, e);
        let f = self.io.open(&path, true).map_err(e)?;
        if offset == 0 {
            f.set_len(0).map_err(e)?;
        }
        let have = f.len().map_err(e)?;
        if have != offset {
            return Err(bad(
                &path,
                format!("chunk at {offset}, but {have} bytes received"),
            ));
        }
        f.write_all_at(bytes, offset).map_err(e)
    }

    /// The snapshot received whole (`len` bytes), synced, to install.
    pub fn received(&self, len: u64) -> Result<(PathBuf, Arc<dyn IoFile>), RaftLogError> {
        let _busy = self.busy.lock();
        let path = self.dir.join(RECV);
        let e = |e: std::io::Error| io_err(&path, e);
        let f = self.io.open(&path, false).map_err(e)?;
        let have = f.len().map_err(e)?;
        if have != len {
            return Err(bad(&path, format!("{have} of {len} bytes received")));
        }
        f.sync_data().map_err(e)?;
        Ok((path, f))
    }

    /// Checks the received file at `path`, keeps it as the current
    /// snapshot and returns its meta and state image.
    pub fn install(&self, path: &Path) -> Result<(SnapMeta, StateImage), RaftLogError> {
        let _busy = self.busy.lock();
        let (f, image) = SnapshotFile::open(self.io.as_ref(), path)?;
        let index = f.meta.last_log_id.map_or(0, |l| l.index);
        let to = self.dir.join(format!("{PREFIX}{index:020}{SUFFIX}"));
        self.io.rename(path, &to).map_err(|e| io_err(path, e))?;
        self.io
            .sync_dir(&self.dir)
            .map_err(|e| io_err(&self.dir, e))?;
        let file = self.io.open(&to, false).map_err(|e| io_err(&to, e))?;
        let meta = f.meta.clone();
        let snap = Arc::new(SnapshotFile {
            path: to,
            file,
            ..f
        });
        self.replace(snap);
        Ok((meta, image))
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;

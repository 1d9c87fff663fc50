//! The state of one group's Raft log behind its lock: the ferry-log, where
//! each entry starts, the tail cache, and the vote / purged / committed
//! pointers. No locking and no async here; `RaftLog` (store.rs) owns the
//! lock and runs the blocking parts off the async workers.

use super::cache::TailCache;
use super::index::EntryIndex;
use crate::codec::{self, EntryHeader};
use crate::error::RaftLogError;
use crate::types::{Entry, LogId, Vote};
use ferry_log::{FileIo, Log, LogConfig, RecordPos};
use openraft::EntryPayload;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Files beside the log directory.
pub(crate) const VOTE_FILE: &str = "vote";
pub(crate) const PURGED_FILE: &str = "purged";
pub(crate) const COMMITTED_FILE: &str = "committed";
pub(crate) const VOTE_MAGIC: &[u8; 8] = b"FRYVOTE1";
pub(crate) const LOG_ID_MAGIC: &[u8; 8] = b"FRYLGID1";

/// One group's Raft log state.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) dir: PathBuf,
    pub(crate) log: Log,
    pub(crate) heads: EntryIndex,
    pub(crate) cache: TailCache,
    pub(crate) last_log_id: Option<LogId>,
    pub(crate) last_purged: Option<LogId>,
    pub(crate) vote: Option<Vote>,
    pub(crate) committed: Option<LogId>,
    /// Raft index of the committed pointer last written to its file.
    pub(crate) committed_written: Option<u64>,
    buf: Vec<u8>,
}

fn corrupt(dir: &Path, reason: impl Into<String>) -> RaftLogError {
    RaftLogError::Corrupt {
        dir: dir.to_path_buf(),
        reason: reason.into(),
    }
}

fn meta<T>(
    io: &dyn FileIo,
    dir: &Path,
    what: &'static str,
    magic: &[u8; 8],
    decode: impl FnOnce(&[u8]) -> Result<T, crate::error::CodecError>,
) -> Result<Option<T>, RaftLogError> {
    let err = |source| RaftLogError::Meta {
        what,
        dir: dir.to_path_buf(),
        source,
    };
    match ferry_log::framed::load(io, &dir.join(what), magic).map_err(err)? {
        None => Ok(None),
        Some(body) => decode(&body)
            .map(Some)
            .map_err(|e| err(ferry_log::framed::FramedError::Corrupt(e.0))),
    }
}

impl State {
    /// Opens (recovering) the log in `dir`: reads the vote and pointers,
    /// scans the records to find every entry, and cuts an entry whose
    /// records did not all reach the disk (never reported durable).
    pub(crate) fn open(
        io: Arc<dyn FileIo>,
        dir: &Path,
        cfg: LogConfig,
    ) -> Result<Self, RaftLogError> {
        let vote = meta(&*io, dir, VOTE_FILE, VOTE_MAGIC, codec::decode_vote)?;
        let last_purged = meta(&*io, dir, PURGED_FILE, LOG_ID_MAGIC, codec::decode_log_id)?;
        // The committed pointer is written without waiting for the disk; a
        // damaged one only costs re-learning it from the leader.
        let committed = meta(
            &*io,
            dir,
            COMMITTED_FILE,
            LOG_ID_MAGIC,
            codec::decode_log_id,
        )
        .unwrap_or_else(|e| {
            tracing::warn!(dir = %dir.display(), error = %e, "committed pointer ignored");
            None
        });
        let (log, _report) = Log::open(io, &dir.join("log"), cfg)?;
        let first_raft = last_purged.map_or(0, |p| p.index + 1);
        let mut st = State {
            dir: dir.to_path_buf(),
            log,
            heads: EntryIndex::starting_at(first_raft),
            cache: TailCache::default(),
            last_log_id: None,
            last_purged,
            vote,
            committed,
            committed_written: committed.map(|c| c.index),
            buf: Vec::new(),
        };
        st.scan()?;
        Ok(st)
    }

    /// Rebuilds the entry index from the records.
    fn scan(&mut self) -> Result<(), RaftLogError> {
        let purged = self.last_purged.map(|p| p.index);
        // The entry being read: (header ferry index, header, commands still expected).
        let mut open: Option<(u64, EntryHeader, u32)> = None;
        let mut seen_header = false;
        for item in self.log.reader(self.log.first_index()) {
            let (pos, rec) = item?;
            if codec::is_header(&rec.payload) {
                if let Some((_, h, left)) = &open {
                    return Err(corrupt(
                        &self.dir,
                        format!("entry {} lacks {left} commands", h.log_id.index),
                    ));
                }
                let h = codec::decode_header(&rec.payload).map_err(|e| corrupt(&self.dir, e.0))?;
                seen_header = true;
                let left = h.count;
                open = Some((pos.index, h, left));
            } else {
                codec::command_body(&rec.payload).map_err(|e| corrupt(&self.dir, e.0))?;
                match open.as_mut() {
                    Some((_, _, left)) => *left -= 1,
                    // Commands of an entry whose header went with a purged segment.
                    None if !seen_header => continue,
                    None => {
                        return Err(corrupt(
                            &self.dir,
                            format!("a command record at {} belongs to no entry", pos.index),
                        ))
                    }
                }
            }
            if let Some((at, h, 0)) = &open {
                index_entry(
                    &mut self.heads,
                    &mut self.last_log_id,
                    &self.dir,
                    *at,
                    h,
                    purged,
                )?;
                open = None;
            }
        }
        if let Some((at, h, _)) = open {
            // Its last records never reached the disk, so its append was
            // never reported durable: drop it.
            tracing::info!(dir = %self.dir.display(), index = h.log_id.index, "dropping a torn entry");
            self.log.truncate_from(at)?;
        }
        Ok(())
    }

    /// Appends one entry: its header record, then its command records.
    /// Returns the ferry index of its last record, or `None` for an entry
    /// at or below the purged pointer (already covered by a snapshot;
    /// openraft does not send those, its storage test suite does).
    pub(crate) fn append(&mut self, e: Entry) -> Result<Option<u64>, RaftLogError> {
        let index = e.log_id.index;
        if self.last_purged.is_some_and(|p| index <= p.index) {
            return Ok(None);
        }
        if self.heads.is_empty() && self.last_log_id.is_none() && self.last_purged.is_none() {
            self.heads.restart_at(index);
        }
        if index != self.heads.next() {
            return Err(RaftLogError::OutOfRange {
                index,
                first: self.heads.base(),
                next: self.heads.next(),
            });
        }
        self.buf.clear();
        codec::encode_header(&e.log_id, &e.payload, &mut self.buf);
        let head = self.log.append(&self.buf)?;
        let mut last = head.index;
        let mut commands = Vec::new();
        if let EntryPayload::Normal(batch) = &e.payload {
            commands.reserve(batch.commands.len());
            for c in &batch.commands {
                self.buf.clear();
                codec::encode_command(c, &mut self.buf);
                let pos = self.log.append(&self.buf)?;
                last = pos.index;
                commands.push(pos);
            }
        }
        self.heads.push(head.index);
        self.last_log_id = Some(e.log_id);
        self.cache.push(e, commands);
        Ok(Some(last))
    }

    /// Empties the tail cache and gives back the buffers' room.
    pub(crate) fn release_memory(&mut self) {
        self.cache = TailCache::default();
        self.buf = Vec::new();
        self.log.release_buffer();
    }

    /// Where entry `index`'s command records are (from the tail cache, or
    /// read from the segments).
    pub(crate) fn command_positions(&self, index: u64) -> Result<Vec<RecordPos>, RaftLogError> {
        if let Some(c) = self.cache.commands(index) {
            return Ok(c.to_vec());
        }
        let Some(head) = self.heads.get(index) else {
            return Err(RaftLogError::OutOfRange {
                index,
                first: self.heads.base(),
                next: self.heads.next(),
            });
        };
        let mut records = self.log.reader(head);
        let (_, rec) = records
            .next()
            .ok_or_else(|| corrupt(&self.dir, format!("entry {index} missing")))??;
        let h = codec::decode_header(&rec.payload).map_err(|e| corrupt(&self.dir, e.0))?;
        let mut out = Vec::with_capacity(h.count as usize);
        for _ in 0..h.count {
            let (pos, _) = records.next().ok_or_else(|| {
                corrupt(&self.dir, format!("a command of entry {index} missing"))
            })??;
            out.push(pos);
        }
        Ok(out)
    }

    /// The command records from ferry index `from` on (header records
    /// skipped), until `f` says stop.
    pub(crate) fn scan_commands(
        &self,
        from: u64,
        f: &mut dyn FnMut(RecordPos, bytes::Bytes) -> bool,
    ) -> Result<(), RaftLogError> {
        for item in self.log.reader(from) {
            let (pos, rec) = item?;
            if codec::is_header(&rec.payload) {
                continue;
            }
            let body = codec::command_body(&rec.payload).map_err(|e| corrupt(&self.dir, e.0))?;
            if !f(pos, rec.payload.slice_ref(body)) {
                break;
            }
        }
        Ok(())
    }

    /// The command held by the record at `pos`.
    pub(crate) fn read_command(&self, pos: &RecordPos) -> Result<bytes::Bytes, RaftLogError> {
        let rec = self.log.read(pos)?;
        let body = codec::command_body(&rec.payload).map_err(|e| corrupt(&self.dir, e.0))?;
        Ok(bytes::Bytes::copy_from_slice(body))
    }

    /// Entries `[start, end)`, from the cache or the disk.
    /// Whether `read(start, end)` needs no disk read (every entry it
    /// returns is in the tail cache).
    pub(crate) fn cached(&self, start: u64, end: u64) -> bool {
        let end = end.min(self.heads.next());
        start >= end
            || (start >= self.heads.base()
                && start >= self.cache.base()
                && self.cache.get(end - 1).is_some())
    }

    pub(crate) fn read(&self, start: u64, end: u64) -> Result<Vec<Entry>, RaftLogError> {
        let end = end.min(self.heads.next());
        if start >= end {
            return Ok(Vec::new());
        }
        if start < self.heads.base() {
            return Err(RaftLogError::OutOfRange {
                index: start,
                first: self.heads.base(),
                next: self.heads.next(),
            });
        }
        let mut out = Vec::with_capacity(usize::try_from(end - start).unwrap_or(0));
        let disk_end = end.min(self.cache.base().max(start));
        if start < disk_end {
            self.read_disk(start, disk_end, &mut out)?;
        }
        for i in disk_end.max(start)..end {
            match self.cache.get(i) {
                Some(e) => out.push(e.clone()),
                None => return self.read_disk(i, end, &mut out).map(|()| out),
            }
        }
        Ok(out)
    }

    fn read_disk(&self, start: u64, end: u64, out: &mut Vec<Entry>) -> Result<(), RaftLogError> {
        let Some(from) = self.heads.get(start) else {
            return Err(RaftLogError::OutOfRange {
                index: start,
                first: self.heads.base(),
                next: self.heads.next(),
            });
        };
        let mut records = self.log.reader(from);
        for want in start..end {
            let (_, rec) = records
                .next()
                .ok_or_else(|| corrupt(&self.dir, format!("entry {want} missing")))??;
            let h = codec::decode_header(&rec.payload).map_err(|e| corrupt(&self.dir, e.0))?;
            if h.log_id.index != want {
                return Err(corrupt(
                    &self.dir,
                    format!("entry {} read for {want}", h.log_id.index),
                ));
            }
            let mut commands = Vec::with_capacity(h.count as usize);
            for _ in 0..h.count {
                let (_, rec) = records
                    .next()
                    .ok_or_else(|| corrupt(&self.dir, format!("entry {want} lacks commands")))??;
                let body =
                    codec::command_body(&rec.payload).map_err(|e| corrupt(&self.dir, e.0))?;
                commands.push(rec.payload.slice_ref(body));
            }
            out.push(codec::assemble(h, commands).map_err(|e| corrupt(&self.dir, e.0))?);
        }
        Ok(())
    }

    /// The log id of entry `index` (held).
    fn log_id_at(&self, index: u64) -> Result<LogId, RaftLogError> {
        if let Some(e) = self.cache.get(index) {
            return Ok(e.log_id);
        }
        let mut v = Vec::with_capacity(1);
        self.read_disk(index, index + 1, &mut v)?;
        v.pop()
            .map(|e| e.log_id)
            .ok_or_else(|| corrupt(&self.dir, format!("entry {index} missing")))
    }

    /// Drops entries `index` and later (durable on return: blocking I/O).
    pub(crate) fn truncate(&mut self, index: u64) -> Result<(), RaftLogError> {
        let Some(at) = self.heads.get(index) else {
            return Ok(()); // nothing held at or after `index`
        };
        self.log.truncate_from(at)?;
        self.heads.truncate_from(index);
        self.cache.truncate_from(index);
        self.last_log_id = if index > self.heads.base() {
            Some(self.log_id_at(index - 1)?)
        } else {
            self.last_purged
        };
        Ok(())
    }

    /// Forgets entries up to `id` (its file is already written) and
    /// removes the segments that hold only such entries.
    pub(crate) fn purge(&mut self, id: LogId) -> Result<(), RaftLogError> {
        self.last_purged = Some(id);
        self.heads.purge_to(id.index);
        self.cache.purge_to(id.index);
        if self.last_log_id.is_none_or(|l| l.index <= id.index) {
            self.last_log_id = None;
        }
        let keep_from = self.heads.first_head().unwrap_or(self.log.next_index());
        self.log.purge_before(keep_from)?;
        Ok(())
    }

    /// The last log id (the last entry's, or the purged pointer).
    pub(crate) fn last(&self) -> Option<LogId> {
        self.last_log_id.or(self.last_purged)
    }
}

/// Adds a complete entry found by the scan (skipping purged ones).
fn index_entry(
    heads: &mut EntryIndex,
    last_log_id: &mut Option<LogId>,
    dir: &Path,
    at: u64,
    h: &EntryHeader,
    purged: Option<u64>,
) -> Result<(), RaftLogError> {
    let index = h.log_id.index;
    if purged.is_some_and(|p| index <= p) {
        return Ok(());
    }
    if heads.is_empty() && last_log_id.is_none() && purged.is_none() {
        heads.restart_at(index);
    }
    if index != heads.next() {
        return Err(corrupt(
            dir,
            format!("entry {index} where entry {} was expected", heads.next()),
        ));
    }
    heads.push(at);
    *last_log_id = Some(h.log_id);
    Ok(())
}

//! [`Log`]: appends into an in-memory buffer, flushes with one write per
//! batch, and tracks what is durable. The segment files and the roll,
//! truncate and purge of them belong to [`SegmentSet`] (`log/segments.rs`),
//! replay to `reader.rs`, reads without the log's lock to [`LogView`]
//! (`log/view.rs`).

use crate::config::LogConfig;
use crate::error::LogError;
use crate::io::FileIo;
use crate::reader::LogReader;
use crate::record::{self, Defect, Record, RecordPos, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN};
use crate::recovery::{self, RecoveryReport};
use crate::scan::Scanner;
use crate::segment::{seal_bytes, SealState, Segment, SEGMENT_HEADER_LEN};
use crate::sync::{Receipt, SealWrite, SegmentReceipt, SyncJob, SyncOutcome, SyncStep};
use crate::waiters::{DurableCallback, Waiters};
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;

mod segments;
mod view;

use segments::SegmentSet;
pub use view::{LogView, ViewReader};

/// Appends are flushed once this many bytes are buffered, so a burst with
/// no sync in sight does not grow memory without bound.
const WRITE_BUFFER_LIMIT: usize = 256 * 1024;
/// Read size for replay.
pub(crate) const READER_CHUNK: usize = 256 * 1024;

/// One segment as [`Log::segments`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Index of its first record.
    pub base: u64,
    /// Records it holds.
    pub records: u64,
    /// Bytes of its `.log` file (header included; buffered appends count).
    pub bytes: u64,
}

/// A segmented, append-only log of opaque records with dense indexes.
///
/// Single writer: wrap it in a mutex. The fsync runs outside that mutex
/// through [`Log::prepare_sync`] / [`SyncJob::run`] / [`Log::complete_sync`].
pub struct Log {
    /// The segment files (rolled ones, the active one) and their directory.
    segs: SegmentSet,
    cfg: LogConfig,
    /// Appended records not yet written; they belong at `active.size`.
    buf: Vec<u8>,
    next_index: u64,
    /// Every record below this index is durable.
    durable_next: u64,
    poisoned: bool,
    waiters: Waiters,
    /// The `segs.dir_gen` the last completed sync covered.
    dir_synced_gen: u64,
    /// Truncations while syncs were in flight: `(trunc_gen, new next index)`.
    /// A job prepared before a truncation cannot vouch for what follows it.
    trunc_gen: u64,
    trunc_floors: Vec<(u64, u64)>,
    inflight_syncs: usize,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.segs.dir)
            .field("first_index", &self.first_index())
            .field("next_index", &self.next_index)
            .field("durable_next", &self.durable_next)
            .field("segments", &(self.segs.sealed.len() + 1))
            .field("buffered", &self.buf.len())
            .field("waiters", &self.waiters.len())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Log {
    /// Opens (recovering) or creates the log in `dir`. Everything recovered
    /// is synced before this returns, so it all counts as durable.
    pub fn open(
        io: Arc<dyn FileIo>,
        dir: &Path,
        cfg: LogConfig,
    ) -> Result<(Log, RecoveryReport), LogError> {
        cfg.validate()?;
        io.create_dir_all(dir)
            .map_err(|e| LogError::io("create directory", dir, e))?;
        let recovered = recovery::recover(&*io, dir, &cfg)?;
        let report = recovered.report;
        let mut sealed = recovered.segments;
        let Some(active) = sealed.pop() else {
            return Err(LogError::corrupt(dir, 0, "recovery produced no segment"));
        };
        let next_index = active.end_index();
        let segs = SegmentSet::new(io, dir.to_path_buf(), sealed, active);
        let first = segs.first_index();
        let mut log = Log {
            segs,
            cfg,
            buf: Vec::new(),
            next_index,
            durable_next: first,
            poisoned: false,
            waiters: Waiters::default(),
            dir_synced_gen: 0,
            trunc_gen: 0,
            trunc_floors: Vec::new(),
            inflight_syncs: 0,
        };
        // Make everything recovery kept durable (and write missing seals)
        // before anything is reported durable.
        if let Some(job) = log.prepare_sync()? {
            let SyncOutcome { receipt, result } = job.run();
            result?;
            log.complete_sync(SyncOutcome {
                receipt,
                result: Ok(()),
            });
        }
        tracing::debug!(dir = %log.segs.dir.display(), ?report, "log opened");
        Ok((log, report))
    }

    /// First retained index (equal to `next_index` when the log is empty).
    pub fn first_index(&self) -> u64 {
        self.segs.first_index()
    }

    /// The index the next append gets.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// `Some(i)`: every record up to `i` is durable (records below
    /// `first_index` count as durable: synced before they were purged, or
    /// never there). `None` while nothing is durable in a log that starts
    /// at index 0.
    pub fn durable_index(&self) -> Option<u64> {
        self.durable_next.checked_sub(1)
    }

    /// Whether an earlier I/O failure made the log refuse changes.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.segs.dir
    }

    /// Every segment, oldest first, the active one last (retention
    /// decisions of streams are made per segment).
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let info = |s: &Segment| SegmentInfo {
            base: s.base,
            records: s.records,
            bytes: s.size,
        };
        let mut out: Vec<SegmentInfo> = self.segs.sealed.iter().map(info).collect();
        let mut active = info(&self.segs.active);
        active.bytes += self.buf.len() as u64;
        out.push(active);
        out
    }

    /// Bytes of segments and indexes, including appends not yet flushed.
    pub fn disk_bytes(&self) -> u64 {
        self.segs
            .sealed
            .iter()
            .map(Segment::disk_bytes)
            .sum::<u64>()
            + self.segs.active.disk_bytes()
            + self.buf.len() as u64
    }

    fn check_poisoned(&self) -> Result<(), LogError> {
        if self.poisoned {
            Err(LogError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Refuses everything from now on and fails all waiters.
    fn poison(&mut self) {
        if !self.poisoned {
            self.poisoned = true;
            self.waiters.fail_all();
        }
    }

    /// Poisons and passes the error on.
    fn fail(&mut self, err: LogError) -> LogError {
        tracing::error!(dir = %self.segs.dir.display(), error = %err, "log poisoned");
        self.poison();
        err
    }

    fn check_range(&self, index: u64) -> Result<(), LogError> {
        let first = self.first_index();
        if index < first || index >= self.next_index {
            return Err(LogError::OutOfRange {
                index,
                first,
                next: self.next_index,
            });
        }
        Ok(())
    }

    /// Appends a record (buffered in memory; see `flush` and `prepare_sync`).
    pub fn append(&mut self, payload: &[u8]) -> Result<RecordPos, LogError> {
        self.check_poisoned()?;
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(LogError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        if self.next_index == u64::MAX {
            // The index space is used up: a record at u64::MAX would leave
            // no next index (only reachable with a `first_index` or a
            // segment name near the top of the range).
            return Err(LogError::OutOfRange {
                index: u64::MAX,
                first: self.first_index(),
                next: self.next_index,
            });
        }
        let len = (RECORD_HEADER_LEN + payload.len()) as u64;
        let end = self.segs.active.size + self.buf.len() as u64;
        if end > SEGMENT_HEADER_LEN && end + len > self.cfg.segment_bytes {
            self.roll_active()?;
        }
        let offset = self.segs.active.size + self.buf.len() as u64;
        let index = self.next_index;
        record::encode_into(&mut self.buf, index, payload);
        // Fits: records are at least 16 bytes and segments at most
        // u32::MAX bytes, so a segment holds far fewer than 2^32 records.
        let rel = (index - self.segs.active.base) as u32;
        self.segs.active.index.observe(rel, offset);
        self.segs.active.records += 1;
        self.next_index += 1;
        let pos = RecordPos {
            index,
            segment: self.segs.active.base,
            offset,
            len: len as u32,
        };
        if self.buf.len() >= WRITE_BUFFER_LIMIT {
            self.flush()?;
        }
        Ok(pos)
    }

    /// Hands buffered appends to the OS in one write (no fsync).
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.check_poisoned()?;
        if !self.buf.is_empty() {
            if let Err(e) = self
                .segs
                .active
                .file
                .write_all_at(&self.buf, self.segs.active.size)
            {
                let err = LogError::io("write", &self.segs.active.path, e);
                return Err(self.fail(err));
            }
            self.segs.active.size += self.buf.len() as u64;
            self.segs.active.mod_gen += 1;
            self.buf.clear();
            if self.buf.capacity() > 4 * WRITE_BUFFER_LIMIT {
                // One huge record should not pin its buffer forever.
                self.buf = Vec::new();
            }
        }
        if let Err(e) = self.segs.active.index.flush() {
            let err = LogError::io("write index", self.segs.active.index.path(), e);
            return Err(self.fail(err));
        }
        Ok(())
    }

    /// Gives back the write buffer's room if it holds nothing (an idle
    /// log: the next append allocates again).
    pub fn release_buffer(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
    }

    /// Calls `cb` once every record up to `index` is durable: right away if
    /// it already is, with `Err(Poisoned)` if the log is or becomes
    /// poisoned, with `Err(Truncated)` if `index` is truncated first.
    /// Callbacks run under the caller's lock on the log; keep them short.
    pub fn on_durable(&mut self, index: u64, cb: DurableCallback) {
        if self.poisoned {
            cb(Err(LogError::Poisoned));
        } else if index < self.durable_next {
            cb(Ok(()));
        } else {
            self.waiters.push(index, cb);
        }
    }

    /// Flushes and captures what the next fsync round must cover. `None`
    /// if everything written is already durable.
    pub fn prepare_sync(&mut self) -> Result<Option<SyncJob>, LogError> {
        self.check_poisoned()?;
        self.flush()?;
        // Settled segments form a prefix: every job covers the whole
        // unsettled suffix, and only the newest segments change.
        let segs = &self.segs;
        let start = segs
            .sealed
            .iter()
            .rposition(Segment::is_settled)
            .map_or(0, |i| i + 1);
        let mut steps = Vec::new();
        let mut receipts = Vec::new();
        let mut sealing_active = false;
        for (i, seg) in segs.sealed.iter().enumerate().skip(start) {
            let next = segs.sealed.get(i + 1).unwrap_or(&segs.active);
            let seal = (seg.seal == SealState::Pending).then(|| SealWrite {
                file: next.file.clone(),
                path: next.path.clone(),
                bytes: seal_bytes(seg.base, next.base),
            });
            sealing_active = seal.is_some() && i + 1 == segs.sealed.len();
            receipts.push(SegmentReceipt {
                id: seg.id,
                mod_gen: seg.mod_gen,
                sealed: seal.is_some(),
            });
            steps.push(SyncStep {
                file: seg.file.clone(),
                path: seg.path.clone(),
                seal,
            });
        }
        if segs.active.is_dirty() || sealing_active {
            receipts.push(SegmentReceipt {
                id: segs.active.id,
                mod_gen: segs.active.mod_gen,
                sealed: false,
            });
            steps.push(SyncStep {
                file: segs.active.file.clone(),
                path: segs.active.path.clone(),
                seal: None,
            });
        }
        let sync_dir = segs.dir_gen != self.dir_synced_gen;
        if steps.is_empty() && !sync_dir {
            self.mark_durable(self.next_index);
            return Ok(None);
        }
        self.inflight_syncs += 1;
        Ok(Some(SyncJob {
            io: self.segs.io.clone(),
            dir: self.segs.dir.clone(),
            sync_dir,
            steps,
            receipt: Receipt {
                segments: receipts,
                dir_gen: self.segs.dir_gen,
                target_next: self.next_index,
                trunc_gen: self.trunc_gen,
            },
        }))
    }

    /// Records a finished job: advances the durable index and fires
    /// callbacks, or, if any fsync failed, poisons the log.
    pub fn complete_sync(&mut self, outcome: SyncOutcome) {
        self.inflight_syncs = self.inflight_syncs.saturating_sub(1);
        match outcome.result {
            Err(e) => {
                // fsync failure leaves the page cache in an unknown state;
                // retrying could report lost data as durable.
                let _ = self.fail(e);
            }
            Ok(()) if !self.poisoned => {
                let r = outcome.receipt;
                for s in &r.segments {
                    if let Some(seg) = self.segs.segment_by_id_mut(s.id) {
                        seg.synced_gen = seg.synced_gen.max(s.mod_gen);
                        if s.sealed && seg.seal == SealState::Pending {
                            seg.seal = SealState::Durable;
                        }
                    }
                }
                self.dir_synced_gen = self.dir_synced_gen.max(r.dir_gen);
                let mut target = r.target_next;
                for &(gen, floor) in &self.trunc_floors {
                    if gen > r.trunc_gen {
                        target = target.min(floor);
                    }
                }
                self.mark_durable(target);
            }
            Ok(()) => {}
        }
        if self.inflight_syncs == 0 {
            self.trunc_floors.clear();
        }
    }

    fn mark_durable(&mut self, next: u64) {
        let next = next.min(self.next_index);
        if next > self.durable_next {
            self.durable_next = next;
            self.waiters.fire_below(next);
        }
    }

    /// Reads the record at `pos` (as returned by `append` or `reader`).
    pub fn read(&self, pos: &RecordPos) -> Result<Record, LogError> {
        self.check_range(pos.index)?;
        let invalid = |reason| LogError::InvalidPosition {
            index: pos.index,
            reason,
        };
        let (seg, is_active) = self.segs.segment_containing(pos.index);
        if seg.base != pos.segment {
            return Err(invalid("the record is not in that segment"));
        }
        let len = pos.len as usize;
        if len < RECORD_HEADER_LEN || pos.offset < SEGMENT_HEADER_LEN {
            return Err(invalid("impossible offset or length"));
        }
        let verified = |bytes: &[u8]| match record::verify(bytes, pos.index) {
            Ok(_) => Ok(()),
            Err(Defect::BadChecksum) => Err(LogError::corrupt(
                &seg.path,
                pos.offset,
                "checksum mismatch",
            )),
            Err(_) => Err(invalid("a different record is stored there")),
        };
        if is_active && pos.offset >= seg.size {
            let from = (pos.offset - seg.size) as usize;
            let bytes = self
                .buf
                .get(from..from + len)
                .ok_or_else(|| invalid("beyond the end of the log"))?;
            verified(bytes)?;
            return Ok(Record {
                index: pos.index,
                payload: Bytes::copy_from_slice(&bytes[RECORD_HEADER_LEN..]),
            });
        }
        if pos.offset + len as u64 > seg.size {
            return Err(invalid("beyond the end of the segment"));
        }
        let bytes = seg
            .read_exact_at(pos.offset, len)
            .map_err(|e| LogError::io("read", &seg.path, e))?
            .ok_or_else(|| {
                LogError::corrupt(&seg.path, pos.offset, "segment shorter than recorded")
            })?;
        verified(&bytes)?;
        Ok(Record {
            index: pos.index,
            payload: bytes.slice(RECORD_HEADER_LEN..),
        })
    }

    /// Reads record `index`: sparse-index lookup, then a short scan.
    pub fn read_index(&self, index: u64) -> Result<Record, LogError> {
        let (mut scanner, seg) = self.scanner_at(index, self.lookup_chunk())?;
        match scanner.next_record() {
            Ok(Some(r)) => Ok(Record {
                index,
                // Copied so the caller does not pin the whole read chunk.
                payload: Bytes::copy_from_slice(&r.payload),
            }),
            Ok(None) => Err(LogError::corrupt(
                &seg.path,
                scanner.pos(),
                "segment ends early",
            )),
            Err(e) => Err(e.into_log_error(&seg.path)),
        }
    }

    /// Replays records from `from` onwards, in order, checksums verified.
    /// Payloads share read buffers of a few hundred KiB; copy any you keep
    /// for long. Starting below `first_index` yields one `OutOfRange`.
    pub fn reader(&self, from: u64) -> LogReader<'_> {
        LogReader::new(self, from)
    }

    /// A scanner whose next record is `index`, over the segment holding it.
    pub(crate) fn scanner_at(
        &self,
        index: u64,
        chunk: usize,
    ) -> Result<(Scanner<'_>, &Segment), LogError> {
        self.check_range(index)?;
        self.segs.scanner_at(index, chunk, &self.buf)
    }

    /// Read size of a lookup by index: one index interval plus a record.
    fn lookup_chunk(&self) -> usize {
        (self.cfg.index_interval_bytes as usize)
            .saturating_add(16 * 1024)
            .min(1 << 20)
    }

    /// A view of the durable records from `from` to `to` (exclusive;
    /// clamped to the durable end), covering the segment that holds `from`
    /// and the following ones until about `max_bytes` of records are
    /// covered: a reader that wants more takes another view where this one
    /// ends ([`LogView::end`]). Empty when `from` is at or past the durable
    /// end; `OutOfRange` when `from` is below `first_index`. Does no I/O.
    pub fn view(&self, from: u64, to: u64, max_bytes: u64) -> Result<LogView, LogError> {
        let first = self.first_index();
        if from < first {
            return Err(LogError::OutOfRange {
                index: from,
                first,
                next: self.next_index,
            });
        }
        let limit = to.min(self.durable_next).min(self.next_index);
        Ok(LogView::capture(
            &self.segs,
            from,
            limit,
            max_bytes,
            self.lookup_chunk(),
        ))
    }

    /// Starts a new active segment, so the current one can be purged once
    /// all its records are settled. A no-op while the active segment is
    /// empty.
    pub fn roll(&mut self) -> Result<(), LogError> {
        self.check_poisoned()?;
        if self.segs.active.records == 0 {
            return Ok(());
        }
        self.roll_active()
    }

    fn roll_active(&mut self) -> Result<(), LogError> {
        self.flush()?;
        let rolled = self
            .segs
            .roll(self.next_index, self.cfg.index_interval_bytes);
        rolled.map_err(|e| self.fail(e))
    }

    /// Drops every record after `index` (a replication conflict). Durable
    /// on return. `index` below `first_index - 1` is out of range; at or
    /// past the last record it is a no-op.
    pub fn truncate_after(&mut self, index: u64) -> Result<(), LogError> {
        match index.checked_add(1) {
            Some(from) => self.truncate_from(from),
            None => Ok(()),
        }
    }

    /// Drops every record at `index` and after; `truncate_from(first_index)`
    /// empties the log while keeping its position. Durable on return.
    /// Waiters for dropped indexes get `Err(Truncated)`. Syncs inline,
    /// newest files first (see `log/segments.rs`).
    pub fn truncate_from(&mut self, index: u64) -> Result<(), LogError> {
        self.check_poisoned()?;
        if index >= self.next_index {
            return Ok(());
        }
        let first = self.first_index();
        if index < first {
            return Err(LogError::OutOfRange {
                index,
                first,
                next: self.next_index,
            });
        }
        self.flush()?;
        if let Err(e) = self.segs.truncate_files(index) {
            return Err(self.fail(e));
        }
        self.next_index = index;
        self.durable_next = self.durable_next.min(index);
        self.trunc_gen += 1;
        if self.inflight_syncs > 0 {
            self.trunc_floors.push((self.trunc_gen, index));
        }
        self.waiters.fail_from(index);
        Ok(())
    }

    /// Removes whole segments whose records are all below `index`, oldest
    /// first, never the active one. Only segments already settled by a
    /// completed sync (fully synced, successor sealed) go; the rest wait
    /// for a later call. That keeps a crash from leaving a gap that
    /// recovery could mistake for a torn tail.
    pub fn purge_before(&mut self, index: u64) -> Result<(), LogError> {
        self.check_poisoned()?;
        self.segs.purge_before(index)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // Best effort, like a process exit: the OS gets the bytes, nothing
        // more is promised.
        if !self.poisoned && !self.buf.is_empty() {
            if let Err(e) = self.flush() {
                tracing::warn!(dir = %self.segs.dir.display(), error = %e, "flush on drop failed");
            }
        }
    }
}

#[cfg(test)]
mod tests;

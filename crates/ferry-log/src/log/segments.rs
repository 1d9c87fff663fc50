//! [`SegmentSet`]: the log's segment files, rolled ones and the active one,
//! and the changes to their shape: roll, truncate, purge. [`super::Log`]
//! decides when (and keeps the records, durability and waiters); this
//! module owns the files and the directory they live in.
//!
//! Truncation syncs inline, newest files first, because a crash halfway
//! must leave an old prefix of the log, never old records spliced to new
//! ones. It is rare (a replication conflict), so the latency is fine.

use crate::error::LogError;
use crate::io::FileIo;
use crate::scan::{self, Scanner, SegmentSpan};
use crate::segment::{SealState, Segment, SEGMENT_HEADER_LEN};
use std::path::PathBuf;
use std::sync::Arc;

/// The segments of one log directory, oldest first, the active one last.
pub(super) struct SegmentSet {
    pub(super) io: Arc<dyn FileIo>,
    pub(super) dir: PathBuf,
    /// Rolled segments, oldest first.
    pub(super) sealed: Vec<Segment>,
    pub(super) active: Segment,
    next_segment_id: u64,
    /// Bumped when segment files are created or removed; the log's
    /// `dir_synced_gen` is the value the last completed sync covered.
    pub(super) dir_gen: u64,
}

impl SegmentSet {
    /// The set recovery left: `sealed` oldest first, then `active`.
    pub(super) fn new(
        io: Arc<dyn FileIo>,
        dir: PathBuf,
        sealed: Vec<Segment>,
        active: Segment,
    ) -> SegmentSet {
        SegmentSet {
            io,
            dir,
            sealed,
            next_segment_id: active.id + 1,
            active,
            dir_gen: 1,
        }
    }

    /// Base of the oldest segment.
    pub(super) fn first_index(&self) -> u64 {
        self.sealed.first().map_or(self.active.base, |s| s.base)
    }

    /// Every segment, oldest first, the active one last.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Segment> {
        self.sealed.iter().chain(std::iter::once(&self.active))
    }

    pub(super) fn segment_by_id_mut(&mut self, id: u64) -> Option<&mut Segment> {
        if self.active.id == id {
            return Some(&mut self.active);
        }
        let i = self.sealed.binary_search_by_key(&id, |s| s.id).ok()?;
        self.sealed.get_mut(i)
    }

    /// The segment holding `index` (which must be in range), and whether
    /// it is the active one.
    pub(super) fn segment_containing(&self, index: u64) -> (&Segment, bool) {
        if index >= self.active.base {
            return (&self.active, true);
        }
        let i = self.sealed.partition_point(|s| s.base <= index);
        match i.checked_sub(1).and_then(|i| self.sealed.get(i)) {
            Some(s) => (s, false),
            None => (&self.active, true),
        }
    }

    /// A scanner whose next record is `index` (which must be in range),
    /// over the segment holding it; `tail` is what is buffered after the
    /// active segment's end.
    pub(super) fn scanner_at<'a>(
        &'a self,
        index: u64,
        chunk: usize,
        tail: &'a [u8],
    ) -> Result<(Scanner<'a>, &'a Segment), LogError> {
        let (seg, is_active) = self.segment_containing(index);
        let span = SegmentSpan {
            file: &*seg.file,
            size: seg.size,
            tail: if is_active { tail } else { &[] },
            base: seg.base,
            end: seg.end_index(),
            hint: seg.index.lookup((index - seg.base) as u32),
        };
        Ok((scan::seek(span, index, chunk, &seg.path)?, seg))
    }

    /// Starts a new, empty active segment at `next_index` (the caller has
    /// flushed the old one); the old one waits for its seal.
    pub(super) fn roll(&mut self, next_index: u64, index_interval: u32) -> Result<(), LogError> {
        let fresh = Segment::create(
            &*self.io,
            &self.dir,
            next_index,
            self.next_segment_id,
            index_interval,
        )?;
        self.next_segment_id += 1;
        self.dir_gen += 1;
        let mut old = std::mem::replace(&mut self.active, fresh);
        old.seal = SealState::Pending;
        self.sealed.push(old);
        Ok(())
    }

    /// Removes the files of every record at `index` and after (in range,
    /// nothing buffered), durably, newest first.
    pub(super) fn truncate_files(&mut self, index: u64) -> Result<(), LogError> {
        // Whole segments first, newest first, each removal made durable
        // before the next: what a crash leaves is always a prefix.
        while self.active.base >= index {
            let Some(prev) = self.sealed.pop() else { break };
            let doomed = std::mem::replace(&mut self.active, prev);
            doomed.remove_files(&*self.io)?;
            self.io
                .sync_dir(&self.dir)
                .map_err(|e| LogError::io("sync directory", &self.dir, e))?;
        }
        let keep = index.saturating_sub(self.active.base);
        if keep < self.active.records {
            let pos = if keep == 0 {
                SEGMENT_HEADER_LEN
            } else {
                let (sc, _) = self.scanner_at(index, 64 * 1024, &[])?;
                sc.pos()
            };
            let seg = &mut self.active;
            seg.file
                .set_len(pos)
                .map_err(|e| LogError::io("truncate segment", &seg.path, e))?;
            seg.index
                .truncate(keep as u32)
                .map_err(|e| LogError::io("truncate index", seg.index.path(), e))?;
            seg.size = pos;
            seg.records = keep;
        }
        let seg = &mut self.active;
        seg.seal = SealState::Open;
        seg.file
            .sync_data()
            .map_err(|e| LogError::io("fdatasync", &seg.path, e))?;
        seg.mod_gen += 1;
        seg.synced_gen = seg.mod_gen;
        Ok(())
    }

    /// Removes whole segments whose records are all below `index`, oldest
    /// first, never the active one, and only settled ones (see
    /// [`super::Log::purge_before`]).
    pub(super) fn purge_before(&mut self, index: u64) -> Result<(), LogError> {
        let mut n = 0;
        while let Some(seg) = self.sealed.get(n) {
            let end = self.sealed.get(n + 1).map_or(self.active.base, |s| s.base);
            if end > index || !seg.is_settled() {
                break;
            }
            n += 1;
        }
        let mut removed = 0;
        let mut result = Ok(());
        for seg in &self.sealed[..n] {
            if let Err(e) = seg.remove_files(&*self.io) {
                result = Err(e);
                break;
            }
            removed += 1;
        }
        if removed > 0 {
            self.sealed.drain(..removed);
            // Made durable by the next sync; until then a crash may bring
            // the files back, which recovery recognises by the seals.
            self.dir_gen += 1;
            tracing::debug!(dir = %self.dir.display(), removed, first = self.first_index(), "purged segments");
        }
        result
    }
}

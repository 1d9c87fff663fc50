//! Changing the shape of the log: roll, truncate, purge.
//!
//! Truncation syncs inline, newest files first, because a crash halfway
//! must leave an old prefix of the log, never old records spliced to new
//! ones. It is rare (a replication conflict), so the latency is fine.

use super::Log;
use crate::error::LogError;
use crate::segment::{SealState, Segment, SEGMENT_HEADER_LEN};

impl Log {
    /// Starts a new active segment, so the current one can be purged once
    /// all its records are settled. A no-op while the active segment is
    /// empty.
    pub fn roll(&mut self) -> Result<(), LogError> {
        self.check_poisoned()?;
        if self.active.records == 0 {
            return Ok(());
        }
        self.roll_active()
    }

    pub(super) fn roll_active(&mut self) -> Result<(), LogError> {
        self.flush()?;
        let created = Segment::create(
            &*self.io,
            &self.dir,
            self.next_index,
            self.next_segment_id,
            self.cfg.index_interval_bytes,
        );
        let fresh = match created {
            Ok(s) => s,
            Err(e) => return Err(self.fail(e)),
        };
        self.next_segment_id += 1;
        self.dir_gen += 1;
        let mut old = std::mem::replace(&mut self.active, fresh);
        old.seal = SealState::Pending;
        self.sealed.push(old);
        Ok(())
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
    /// Waiters for dropped indexes get `Err(Truncated)`.
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
        if let Err(e) = self.truncate_files(index) {
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

    fn truncate_files(&mut self, index: u64) -> Result<(), LogError> {
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
                let (sc, _) = self.scanner_at(index, 64 * 1024)?;
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
    /// first, never the active one. Only segments already settled by a
    /// completed sync (fully synced, successor sealed) go; the rest wait
    /// for a later call. That keeps a crash from leaving a gap that
    /// recovery could mistake for a torn tail.
    pub fn purge_before(&mut self, index: u64) -> Result<(), LogError> {
        self.check_poisoned()?;
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

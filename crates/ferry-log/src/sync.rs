//! Group commit: a `SyncJob` carries everything an fsync round needs so
//! it can run with no lock on the log, while appends keep landing; the
//! next job covers whatever arrived meanwhile.

use crate::error::LogError;
use crate::io::{FileIo, IoFile};
use crate::segment::SEAL_OFFSET;
use std::path::PathBuf;
use std::sync::Arc;

/// Work for one fsync round, made by `Log::prepare_sync`. Run it without
/// holding the log (that is the point), then hand the outcome to
/// `Log::complete_sync`.
#[derive(Debug)]
#[must_use = "a prepared sync does nothing until run and completed"]
pub struct SyncJob {
    pub(crate) dir: Option<(Arc<dyn FileIo>, PathBuf)>,
    pub(crate) steps: Vec<SyncStep>,
    pub(crate) receipt: Receipt,
}

/// One file to fdatasync, oldest segment first.
#[derive(Debug)]
pub(crate) struct SyncStep {
    pub file: Arc<dyn IoFile>,
    pub path: PathBuf,
    /// Written into the next segment's header once this file is synced
    /// (the next step then syncs that segment).
    pub seal: Option<SealWrite>,
}

#[derive(Debug)]
pub(crate) struct SealWrite {
    pub file: Arc<dyn IoFile>,
    pub path: PathBuf,
    pub bytes: [u8; 12],
}

/// What the log needs to know about a job once it is done.
#[derive(Debug, Default)]
pub(crate) struct Receipt {
    pub segments: Vec<SegmentReceipt>,
    pub dir_gen: u64,
    /// Everything below this index was flushed when the job was made.
    pub target_next: u64,
    pub trunc_gen: u64,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentReceipt {
    pub id: u64,
    pub mod_gen: u64,
    pub sealed: bool,
}

/// The result of [`SyncJob::run`], for `Log::complete_sync`.
#[derive(Debug)]
#[must_use = "pass the outcome to Log::complete_sync"]
pub struct SyncOutcome {
    pub(crate) receipt: Receipt,
    pub(crate) result: Result<(), LogError>,
}

impl SyncJob {
    /// The highest index this job makes durable.
    pub fn target_index(&self) -> Option<u64> {
        self.receipt.target_next.checked_sub(1)
    }

    /// fdatasyncs every file with unsynced data (and the directory if
    /// segments were created or removed). Blocks; call it on the caller's
    /// sync thread with no lock on the log held.
    pub fn run(self) -> SyncOutcome {
        let result = self.sync_all();
        SyncOutcome {
            receipt: self.receipt,
            result,
        }
    }

    fn sync_all(&self) -> Result<(), LogError> {
        if let Some((io, dir)) = &self.dir {
            io.sync_dir(dir)
                .map_err(|e| LogError::io("sync directory", dir, e))?;
        }
        for step in &self.steps {
            step.file
                .sync_data()
                .map_err(|e| LogError::io("fdatasync", &step.path, e))?;
            if let Some(seal) = &step.seal {
                seal.file
                    .write_all_at(&seal.bytes, SEAL_OFFSET)
                    .map_err(|e| LogError::io("write seal", &seal.path, e))?;
            }
        }
        Ok(())
    }
}

impl SyncOutcome {
    /// Whether every fsync succeeded.
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// The failure, if any (completing a failed outcome poisons the log).
    pub fn error(&self) -> Option<&LogError> {
        self.result.as_ref().err()
    }
}

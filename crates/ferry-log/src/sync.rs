//! Group commit: a `SyncJob` carries everything an fsync round needs so
//! it can run with no lock on the log, while appends keep landing; the
//! next job covers whatever arrived meanwhile.
//!
//! Many logs share one round with [`sync_round`]: each job is made durable
//! either by its own `fdatasync`s or, when the round is large, by one
//! `syncfs` of the file system (see [`DeviceFlush`]).

use crate::error::LogError;
use crate::io::{FileIo, IoFile};
use crate::segment::SEAL_OFFSET;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Work for one fsync round, made by `Log::prepare_sync`. Run it without
/// holding the log (that is the point), then hand the outcome to
/// `Log::complete_sync`.
#[derive(Debug)]
#[must_use = "a prepared sync does nothing until run and completed"]
pub struct SyncJob {
    pub(crate) io: Arc<dyn FileIo>,
    /// The log's directory.
    pub(crate) dir: PathBuf,
    /// Segments were created or removed since the last completed sync.
    pub(crate) sync_dir: bool,
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

    /// How many files this job would fdatasync on its own.
    pub fn files(&self) -> usize {
        self.steps.len()
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
        if self.sync_dir {
            self.io
                .sync_dir(&self.dir)
                .map_err(|e| LogError::io("sync directory", &self.dir, e))?;
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

    /// Finishes a job whose files and directory entries a successful
    /// `FileIo::sync_fs`, called after `prepare_sync`, made durable: only
    /// the seals are left. A seal is written after the segment it seals is
    /// durable (log invariant), so it goes now, and the file it lands in
    /// gets its own fdatasync (rare: once per segment roll).
    fn finish_after_fs_sync(self) -> SyncOutcome {
        let result = self.write_seals();
        SyncOutcome {
            receipt: self.receipt,
            result,
        }
    }

    fn write_seals(&self) -> Result<(), LogError> {
        for seal in self.steps.iter().filter_map(|s| s.seal.as_ref()) {
            seal.file
                .write_all_at(&seal.bytes, SEAL_OFFSET)
                .map_err(|e| LogError::io("write seal", &seal.path, e))?;
            seal.file
                .sync_data()
                .map_err(|e| LogError::io("fdatasync", &seal.path, e))?;
        }
        Ok(())
    }

    /// The outcome of a job whose round failed: completing it poisons the
    /// log.
    fn failed(self, op: &'static str, at: &Path, e: &io::Error) -> SyncOutcome {
        SyncOutcome {
            receipt: self.receipt,
            result: Err(LogError::io(
                op,
                at,
                io::Error::new(e.kind(), e.to_string()),
            )),
        }
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

/// How a round made its jobs durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceFlush {
    /// Nothing to flush (no jobs).
    None,
    /// Each job's files fdatasynced one by one.
    PerFile,
    /// One `FileIo::sync_fs` per file system handle.
    FileSystem,
}

/// When a round uses one file-system flush instead of per-file fdatasyncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundPolicy {
    /// A directory on the file system every log of the round lives on (the
    /// broker's data directory; it must outlive the logs). `None`: always
    /// fdatasync file by file.
    pub fs_root: Option<PathBuf>,
    /// From this many dirty files in a round on, one `sync_fs` replaces
    /// the fdatasyncs (measured crossover: `docs/internals.md`).
    pub syncfs_from_files: usize,
}

impl RoundPolicy {
    /// Below this many files fdatasync one by one, from it one `syncfs`.
    /// On this project's test machine (ext4 on virtio, `tests/round_cost.rs`)
    /// a round of one 512-byte append costs ~0.08 ms with fdatasync and
    /// ~0.11 ms with syncfs, four cost ~0.28 ms against ~0.12 ms; a syncfs
    /// also flushes every other writer's dirty pages, so tiny rounds keep
    /// fdatasync (numbers: `docs/internals.md`, "Durability rounds").
    pub const DEFAULT_SYNCFS_FROM_FILES: usize = 4;

    /// Per-file fdatasyncs only.
    pub fn per_file() -> Self {
        RoundPolicy {
            fs_root: None,
            syncfs_from_files: usize::MAX,
        }
    }

    /// syncfs on `root`'s file system from the default file count on.
    pub fn syncfs(root: impl Into<PathBuf>) -> Self {
        RoundPolicy {
            fs_root: Some(root.into()),
            syncfs_from_files: Self::DEFAULT_SYNCFS_FROM_FILES,
        }
    }
}

/// Makes many logs' jobs durable in one round, on the caller's thread.
/// Returns one outcome per job, in order, and the flush it chose.
///
/// With fewer than `syncfs_from_files` files in all (or no `fs_root`),
/// every job runs on its own ([`SyncJob::run`]); an error fails only its
/// own job. Otherwise one `sync_fs` of `fs_root` (every log of the round
/// lives on that file system) replaces every fdatasync and directory sync;
/// its error cannot be attributed to a file, so it fails every job of the
/// round.
pub fn sync_round(jobs: Vec<SyncJob>, policy: &RoundPolicy) -> (Vec<SyncOutcome>, DeviceFlush) {
    if jobs.is_empty() {
        return (Vec::new(), DeviceFlush::None);
    }
    let files: usize = jobs.iter().map(SyncJob::files).sum();
    let root = match &policy.fs_root {
        Some(root) if files >= policy.syncfs_from_files => root,
        _ => {
            return (
                jobs.into_iter().map(SyncJob::run).collect(),
                DeviceFlush::PerFile,
            )
        }
    };
    // Every log of the round lives on `root`'s file system (the policy's
    // contract), so one flush through any of their handles covers all.
    let flushed = match jobs.first() {
        Some(job) => job.io.sync_fs(root),
        None => Ok(()),
    };
    let outcomes = match flushed.err() {
        Some(e) => jobs
            .into_iter()
            .map(|j| j.failed("syncfs", root, &e))
            .collect(),
        None => jobs
            .into_iter()
            .map(SyncJob::finish_after_fs_sync)
            .collect(),
    };
    (outcomes, DeviceFlush::FileSystem)
}

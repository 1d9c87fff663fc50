//! `ferry-log`: the segmented append-only log under every Ferry queue and,
//! later, the Raft log.
//!
//! It owns segments, the sparse index, append / read / truncate / purge,
//! crash recovery, the fsync policy, and the [`FileIo`] seam with a
//! crash-simulating backend ([`SimIo`]). It knows nothing of AMQP, Kafka
//! or Raft (records are opaque bytes with a dense `u64` index) and never
//! spawns threads: the caller runs fsyncs on its own thread.
//!
//! ```text
//!  append ─► [write buffer] ─flush─► active segment ─roll─► sealed segments
//!                                    000…0120.log/.idx       000…0000.log/.idx
//!                                                            000…0057.log/.idx
//!  prepare_sync (under the caller's lock) ─► SyncJob
//!  SyncJob::run (no lock: fdatasync, dir sync, seals) ─► SyncOutcome
//!  complete_sync (under the lock) ─► durable_index ↑, on_durable callbacks
//!  view (under the lock, no I/O) ─► LogView::records (no lock: file reads)
//!
//!  sync_round(jobs of many logs) ─► one FileIo::sync_fs (syncfs) or
//!                                   each job's fdatasyncs, by file count
//! ```
//!
//! The on-disk format, invariants and recovery rules are described in
//! `docs/log-format.md`. Beside the log: [`framed`], the small checksummed
//! files rewritten whole (definitions, access, policies; `docs/storage.md`).

mod config;
mod error;
pub mod framed;
mod index;
mod io;
mod log;
mod reader;
mod record;
mod recovery;
mod scan;
mod segment;
mod sync;
mod waiters;

pub use config::LogConfig;
pub use error::LogError;
pub use io::{FileIo, IoFile, SimIo, StdIo};
pub use log::{Log, LogView, SegmentInfo, ViewReader};
pub use reader::LogReader;
pub use record::{Record, RecordPos, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN};
pub use recovery::RecoveryReport;
pub use sync::{sync_round, DeviceFlush, RoundPolicy, SyncJob, SyncOutcome};
pub use waiters::DurableCallback;

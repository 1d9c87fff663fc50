//! [`RaftLog`]: one group's Raft log storage over a ferry-log, as
//! openraft's `RaftLogStorage` and `RaftLogReader`.
//!
//! ```text
//!  <group dir>/log/…        ferry-log segments: per entry one header record
//!                           ('R': log id, kind, command count[, membership]),
//!                           then one record per command ('C' + bytes)
//!  <group dir>/vote         framed, fsynced before save_vote returns
//!  <group dir>/purged       framed, fsynced before a purge removes anything
//!  <group dir>/committed    framed, written lazily (never ahead of commit)
//! ```
//!
//! Appends are buffered writes under the group's lock; they become durable
//! in the node's durability round (`ferry_queue::syncer`), which then
//! reports openraft's `LogFlushed`. Truncations, votes and purges fsync
//! inline, so they run on tokio's blocking pool.

mod cache;
mod index;
mod state;

use crate::error::RaftLogError;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use ferry_log::{DurableCallback, FileIo, LogConfig, SyncJob, SyncOutcome};
use ferry_queue::syncer::{SyncSchedule, SyncTask, Syncer};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use parking_lot::Mutex;
use state::State;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The committed pointer is rewritten after it advanced this many entries.
const COMMITTED_EVERY: u64 = 1024;

/// One group's Raft log. Cheap to clone: clones share the log (a clone is
/// also the group's `LogReader`).
#[derive(Clone, Debug)]
pub struct RaftLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    io: Arc<dyn FileIo>,
    state: Mutex<State>,
    schedule: SyncSchedule,
    syncer: Arc<Syncer>,
    /// A committed-pointer write is running (later ones are skipped).
    writing_committed: AtomicBool,
    /// Appends handed to the log (numbered from 1), and the highest number
    /// of one that settled (made durable, or failed; openraft's core hands
    /// over one append at a time): see [`RaftLog::flushed_past`].
    appends: AtomicU64,
    settled: AtomicU64,
    settled_wake: tokio::sync::Notify,
}

impl RaftLog {
    /// Opens (recovering) or creates the Raft log of a group in `dir`;
    /// `syncer` is the node's durability round. Blocking I/O: call it from
    /// a blocking context.
    pub fn open(
        io: Arc<dyn FileIo>,
        dir: &Path,
        cfg: LogConfig,
        syncer: Arc<Syncer>,
    ) -> Result<Self, RaftLogError> {
        let state = State::open(io.clone(), dir, cfg)?;
        Ok(RaftLog {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                io,
                state: Mutex::new(state),
                schedule: SyncSchedule::default(),
                syncer,
                writing_committed: AtomicBool::new(false),
                appends: AtomicU64::new(0),
                settled: AtomicU64::new(0),
                settled_wake: tokio::sync::Notify::new(),
            }),
        })
    }

    /// The group's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The file system it is on.
    pub fn io(&self) -> &Arc<dyn FileIo> {
        &self.shared.io
    }

    /// `(first, next)` ferry-log indexes of the records held.
    pub fn record_range(&self) -> (u64, u64) {
        let st = self.shared.state.lock();
        (st.log.first_index(), st.log.next_index())
    }

    /// Appends `entries` (buffered) and calls `done` once all of them are
    /// durable (after the durability round that covers them; at once for
    /// no entries), with an error if the log failed first.
    pub fn append_entries(
        &self,
        entries: impl IntoIterator<Item = Entry>,
        done: DurableCallback,
    ) -> Result<(), RaftLogError> {
        let n = self.shared.appends.fetch_add(1, Ordering::AcqRel) + 1;
        // Weak: the callback waits inside the log, which `shared` holds.
        let settle = Settle {
            shared: Arc::downgrade(&self.shared),
            n,
        };
        let done: DurableCallback = Box::new(move |r| {
            done(r);
            drop(settle);
        });
        {
            let mut st = self.shared.state.lock();
            let mut last = None;
            for e in entries {
                if let Some(at) = st.append(e)? {
                    last = Some(at);
                }
            }
            match last {
                Some(last) => st.log.on_durable(last, done),
                None => {
                    drop(st);
                    done(Ok(()));
                    return Ok(());
                }
            }
        }
        let shared = self.shared.clone();
        self.shared.schedule.request(&self.shared.syncer, move || {
            Some(shared as Arc<dyn SyncTask>)
        });
        Ok(())
    }

    /// How many appends were handed to the log so far: a mark for
    /// [`flushed_past`](Self::flushed_past).
    pub fn append_mark(&self) -> u64 {
        self.shared.appends.load(Ordering::Acquire)
    }

    /// Returns once an append handed to the log after `mark` is settled
    /// (durable, or failed). openraft's core waits for each append to be
    /// durable before it takes the next write, so a leader's proposer
    /// that hands over its next batch only then puts everything that
    /// arrived meanwhile into one entry, instead of queueing one entry
    /// (and one durability round) per small batch.
    pub async fn flushed_past(&self, mark: u64) {
        loop {
            let woken = self.shared.settled_wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.shared.settled.load(Ordering::Acquire) > mark {
                return;
            }
            woken.await;
        }
    }

    /// Entries with raft indexes in `range` that the log holds.
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, RaftLogError> {
        self.read_range(&range)
    }

    /// Where entry `index`'s command records are in the log: command `k`
    /// of the entry is the record at the `k`th position. The records'
    /// ferry-log indexes are the same on every replica holding the entry,
    /// so a state machine can name a command by it (a message id). May
    /// read the segments (an entry no longer in the tail cache): call it
    /// from a blocking context.
    pub fn command_positions(&self, index: u64) -> Result<Vec<ferry_log::RecordPos>, RaftLogError> {
        self.shared.state.lock().command_positions(index)
    }

    /// Gives back the memory kept for a running Raft instance: the tail
    /// cache (whose entries may hold on to whole network buffers) and
    /// the write buffers' room. Reads go to the files until the cache
    /// fills again. For a group that stopped for a while (hibernating).
    pub fn release_memory(&self) {
        self.shared.state.lock().release_memory();
    }

    /// The command of the record at `pos` (a position
    /// [`command_positions`](Self::command_positions) gave). Reads the
    /// segments: call it from a blocking context.
    pub fn read_command(&self, pos: &ferry_log::RecordPos) -> Result<bytes::Bytes, RaftLogError> {
        self.shared.state.lock().read_command(pos)
    }

    /// The command records from ferry index `from` on, in order, with
    /// their positions (the entries' header records skipped), until `f`
    /// says stop. Reads the segments: call it from a blocking context.
    pub fn scan_commands(
        &self,
        from: u64,
        f: &mut dyn FnMut(ferry_log::RecordPos, bytes::Bytes) -> bool,
    ) -> Result<(), RaftLogError> {
        self.shared.state.lock().scan_commands(from, f)
    }

    /// `(last purged, last)` log ids, as openraft's `get_log_state`.
    pub fn log_state(&self) -> (Option<LogId>, Option<LogId>) {
        let st = self.shared.state.lock();
        (st.last_purged, st.last())
    }

    /// The highest log id this node knows committed (openraft tells the
    /// store as the commit index moves; 0 before).
    pub fn committed(&self) -> Option<LogId> {
        self.shared.state.lock().committed
    }

    /// The saved vote.
    pub fn vote(&self) -> Option<Vote> {
        self.shared.state.lock().vote
    }

    /// Runs `f` on the state on tokio's blocking pool (it fsyncs).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T, RaftLogError> + Send + 'static,
    ) -> Result<T, RaftLogError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| RaftLogError::Task(e.to_string()))?
    }

    fn read_range<RB: RangeBounds<u64> + ?Sized>(
        &self,
        range: &RB,
    ) -> Result<Vec<Entry>, RaftLogError> {
        let (start, end) = bounds(range);
        self.read_bounds(start, end)
    }

    fn read_bounds(&self, start: u64, end: u64) -> Result<Vec<Entry>, RaftLogError> {
        let st = self.shared.state.lock();
        let start = start.max(st.heads.base());
        st.read(start, end)
    }

    /// Writes the committed pointer without waiting for the disk (it may
    /// only lag), one write at a time, off the async workers.
    fn write_committed(&self, id: LogId) {
        if self.shared.writing_committed.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let body = crate::codec::encode_log_id(&id);
            if let Err(e) = ferry_log::framed::save(
                &*shared.io,
                &shared.dir,
                state::COMMITTED_FILE,
                state::LOG_ID_MAGIC,
                &body,
            ) {
                tracing::warn!(dir = %shared.dir.display(), error = %e, "committed pointer not written");
            }
            shared.writing_committed.store(false, Ordering::Release);
        });
    }
}

/// Settles append `n` when dropped: after its callback ran, or with it
/// when the append failed before it was registered.
struct Settle {
    shared: std::sync::Weak<Shared>,
    n: u64,
}

impl Drop for Settle {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.settled.fetch_max(self.n, Ordering::AcqRel);
            shared.settled_wake.notify_waiters();
        }
    }
}

impl SyncTask for Shared {
    fn schedule(&self) -> &SyncSchedule {
        &self.schedule
    }

    fn prepare_sync(&self) -> Option<SyncJob> {
        match self.state.lock().log.prepare_sync() {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "raft log sync failed");
                None
            }
        }
    }

    fn complete_sync(&self, outcome: Option<SyncOutcome>) {
        let Some(o) = outcome else { return };
        if let Some(e) = o.error() {
            tracing::error!(
                dir = %self.dir.display(), error = %e,
                "ALARM: fsync failed, raft log poisoned; this group stops until restart"
            );
        }
        self.state.lock().log.complete_sync(o);
    }
}

/// `[start, end)` of a range of raft indexes.
fn bounds<RB: RangeBounds<u64> + ?Sized>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for RaftLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        let cached = {
            let st = self.shared.state.lock();
            st.cached(start.max(st.heads.base()), end)
        };
        if cached {
            return self.read_bounds(start, end).map_err(|e| e.read_logs());
        }
        // A lagging follower's entries come from the segments: read them
        // off the async workers.
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.read_bounds(start, end))
            .await
            .map_err(|e| RaftLogError::Task(e.to_string()).read_logs())?
            .map_err(|e| e.read_logs())
    }
}

impl RaftLogStorage<TypeConfig> for RaftLog {
    type LogReader = RaftLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let (last_purged_log_id, last_log_id) = self.log_state();
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let v = *vote;
        self.blocking(move |sh| {
            let body = crate::codec::encode_vote(&v);
            ferry_log::framed::save(&*sh.io, &sh.dir, state::VOTE_FILE, state::VOTE_MAGIC, &body)
                .map_err(|source| RaftLogError::Meta {
                what: state::VOTE_FILE,
                dir: sh.dir.clone(),
                source,
            })?;
            sh.state.lock().vote = Some(v);
            Ok(())
        })
        .await
        .map_err(|e| e.write_vote())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.shared.state.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let write = {
            let mut st = self.shared.state.lock();
            st.committed = committed;
            if let Some(c) = committed {
                st.cache.committed(c.index);
            }
            match committed {
                Some(c)
                    if st
                        .committed_written
                        .is_none_or(|w| c.index >= w + COMMITTED_EVERY) =>
                {
                    st.committed_written = Some(c.index);
                    Some(c)
                }
                _ => None,
            }
        };
        if let Some(c) = write {
            self.write_committed(c);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.shared.state.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_entries(
            entries,
            Box::new(move |r| {
                callback.log_io_completed(r.map_err(|e| std::io::Error::other(e.to_string())))
            }),
        )
        .map_err(|e| e.write_logs())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |sh| sh.state.lock().truncate(log_id.index))
            .await
            .map_err(|e| e.write_logs())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |sh| {
            // The pointer is on disk before any segment goes, so a restart
            // never finds a hole between it and the first entry.
            let body = crate::codec::encode_log_id(&log_id);
            ferry_log::framed::save(
                &*sh.io,
                &sh.dir,
                state::PURGED_FILE,
                state::LOG_ID_MAGIC,
                &body,
            )
            .map_err(|source| RaftLogError::Meta {
                what: state::PURGED_FILE,
                dir: sh.dir.clone(),
                source,
            })?;
            sh.state.lock().purge(log_id)
        })
        .await
        .map_err(|e| e.write_logs())
    }
}

//! In-memory stand-ins of the measurement: a log store, a counting state
//! machine and a fake node-level durability round, over ferry-raft's
//! [`TypeConfig`].
//!
//! **Not the product's store** (that is `ferry_raft::RaftLog`, over
//! ferry-log). Nothing here survives a restart; these pieces exist to
//! measure what openraft itself costs per group.
//!
//! - [`MemLogStore`]: `RaftLogStorage` + `RaftLogReader` over a `BTreeMap`.
//!   `append` makes the entries readable at once and completes the
//!   `LogFlushed` callback according to its [`FlushMode`].
//! - [`MemStateMachine`]: counts applied normal entries, commands and
//!   payload bytes; its snapshot is those three counters.
//!   (`ferry_raft::testing::Recorder` keeps every command and snapshots
//!   them all, which a write run of millions of entries cannot afford.)
//! - [`DurabilityRound`]: one thread per node that completes every pending
//!   flush callback after one emulated device flush (a sleep), the shape of
//!   the node-level round of CLUSTER.md §0.2.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_raft::machine::{SmallMachine, SmallState};
use ferry_raft::{Applied, CodecError, Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use parking_lot::{Condvar, Mutex};

/// How [`MemLogStore::append`] completes its `LogFlushed` callback.
#[derive(Clone, Debug, Default)]
pub enum FlushMode {
    /// Before `append` returns (an in-memory store is "durable" at once).
    #[default]
    Immediate,
    /// From a spawned tokio task after the delay. Tokio timers have 1 ms
    /// granularity, so delays below 1 ms round up to about 1 ms.
    Delayed(Duration),
    /// In the next round of a node-level [`DurabilityRound`] (sub-millisecond
    /// delays work: the round is a thread).
    Round(DurabilityRound),
}

/// An in-memory Raft log plus vote and committed pointer. Clones share the
/// same log (the clone is also the log reader).
#[derive(Clone, Debug, Default)]
pub struct MemLogStore {
    log: Arc<Mutex<LogData>>,
    flush: FlushMode,
}

#[derive(Debug, Default)]
struct LogData {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    /// Keyed by Raft index. A map, not a deque: openraft's conformance suite
    /// appends non-consecutive entries (e.g. index 1 then 3) to build states.
    entries: BTreeMap<u64, Entry>,
}

impl LogData {
    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(self.last_purged)
    }

    fn range<RB: RangeBounds<u64>>(&self, range: RB) -> Vec<Entry> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let empty = match bounds {
            (Bound::Included(s), Bound::Excluded(e)) => s >= e,
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Excluded(s), Bound::Excluded(e) | Bound::Included(e)) => s >= e,
            _ => false,
        };
        if empty {
            return Vec::new();
        }
        self.entries.range(bounds).map(|(_, e)| e.clone()).collect()
    }

    fn truncate_from(&mut self, index: u64) {
        drop(self.entries.split_off(&index));
    }

    fn purge_upto(&mut self, log_id: LogId) {
        if self.last_purged.is_some_and(|p| p.index >= log_id.index) {
            return;
        }
        self.last_purged = Some(log_id);
        self.entries = self.entries.split_off(&log_id.index.saturating_add(1));
    }
}

impl MemLogStore {
    /// An empty log whose appends complete per `flush`.
    pub fn new(flush: FlushMode) -> Self {
        Self {
            log: Arc::default(),
            flush,
        }
    }
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.log.lock().range(range))
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.log.lock();
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: log.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // A real store must have the vote on disk before returning; the spike
        // does not charge the durability round for the (rare) vote.
        self.log.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.log.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.log.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.log.lock().committed)
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
        {
            let mut log = self.log.lock();
            for entry in entries {
                log.entries.insert(entry.log_id.index, entry);
            }
        }
        match &self.flush {
            FlushMode::Immediate => callback.log_io_completed(Ok(())),
            FlushMode::Delayed(delay) => {
                let delay = *delay;
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    callback.log_io_completed(Ok(()));
                });
            }
            FlushMode::Round(round) => round.submit(callback),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.log.lock().truncate_from(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.log.lock().purge_upto(log_id);
        Ok(())
    }
}

/// What the counting state machine has applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Normal (client) entries applied.
    entries: u64,
    /// Commands in them.
    commands: u64,
    /// Sum of the commands' lengths.
    bytes: u64,
}

impl SmallState for Counts {
    fn apply(&mut self, commands: Vec<Bytes>) -> Applied {
        self.entries += 1;
        self.commands += commands.len() as u64;
        self.bytes += commands.iter().map(|c| c.len() as u64).sum::<u64>();
        Applied::default()
    }

    fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(24);
        for n in [self.entries, self.commands, self.bytes] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        Bytes::from(out)
    }

    fn decode(data: Bytes) -> Result<Self, CodecError> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                data.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        match (word(0), word(1), word(2)) {
            (Some(entries), Some(commands), Some(bytes)) => Ok(Self {
                entries,
                commands,
                bytes,
            }),
            _ => Err(CodecError(format!(
                "counts snapshot of {} bytes",
                data.len()
            ))),
        }
    }
}

/// A state machine that counts applied entries, commands and bytes.
pub type MemStateMachine = SmallMachine<Counts>;

/// A fake node-level durability round: one thread takes every pending flush
/// callback, "flushes the device" (sleeps `delay`), then completes them all.
/// A round starts as soon as the previous one ends and something is pending.
///
/// Call [`DurabilityRound::stop`] to end the thread.
#[derive(Clone)]
pub struct DurabilityRound {
    shared: Arc<RoundShared>,
}

struct RoundShared {
    delay: Duration,
    state: Mutex<RoundState>,
    wake: Condvar,
    rounds: AtomicU64,
    completed: AtomicU64,
}

#[derive(Default)]
struct RoundState {
    pending: Vec<LogFlushed<TypeConfig>>,
    stopped: bool,
}

/// Counters of a [`DurabilityRound`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// Rounds run.
    pub rounds: u64,
    /// Callbacks completed.
    pub completed: u64,
}

impl DurabilityRound {
    /// Start the round thread; each round sleeps `delay` (zero: no sleep).
    pub fn start(name: &str, delay: Duration) -> io::Result<Self> {
        let shared = Arc::new(RoundShared {
            delay,
            state: Mutex::new(RoundState::default()),
            wake: Condvar::new(),
            rounds: AtomicU64::new(0),
            completed: AtomicU64::new(0),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name(format!("durability-{name}"))
            .spawn(move || worker.run())?;
        Ok(Self { shared })
    }

    /// Complete `callback` at the end of the next round.
    pub fn submit(&self, callback: LogFlushed<TypeConfig>) {
        let mut state = self.shared.state.lock();
        if state.stopped {
            drop(state);
            callback.log_io_completed(Err(io::Error::other("durability round stopped")));
            return;
        }
        state.pending.push(callback);
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Finish the pending round and end the thread; later submits fail.
    pub fn stop(&self) {
        self.shared.state.lock().stopped = true;
        self.shared.wake.notify_one();
    }

    /// Counters so far.
    pub fn stats(&self) -> RoundStats {
        RoundStats {
            rounds: self.shared.rounds.load(Ordering::Relaxed),
            completed: self.shared.completed.load(Ordering::Relaxed),
        }
    }
}

impl RoundShared {
    fn run(&self) {
        loop {
            let batch = {
                let mut state = self.state.lock();
                while state.pending.is_empty() && !state.stopped {
                    self.wake.wait(&mut state);
                }
                if state.pending.is_empty() {
                    return;
                }
                std::mem::take(&mut state.pending)
            };
            if !self.delay.is_zero() {
                std::thread::sleep(self.delay);
            }
            let n = batch.len() as u64;
            for callback in batch {
                callback.log_io_completed(Ok(()));
            }
            self.rounds.fetch_add(1, Ordering::Relaxed);
            self.completed.fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl Debug for DurabilityRound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurabilityRound")
            .field("delay", &self.shared.delay)
            .field("stats", &self.stats())
            .finish()
    }
}

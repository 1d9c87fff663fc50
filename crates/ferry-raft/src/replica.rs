//! A replicated queue's group: the queue replica (`ferry_queue::Replica`)
//! as openraft's state machine, and the group's Raft log as the queue's
//! log ([`GroupLog`]).
//!
//! Applying an entry hands its commands, each with the position of its
//! record in the group's log, to `Replica::apply_entry`; the queue
//! decodes them (this module does not) and answers whether a Mark that
//! opens the entry let it apply ([`EntryAnswer`]). The queue's state lives in memory.
//!
//! Snapshots (`snapshot`): once the records logged since the last
//! snapshot outweigh both the threshold and the records of the messages
//! the queue holds, the machine asks for one ([`SnapshotDue`]); the group
//! triggers it, the state is imaged under the queue's lock at the applied
//! index, and the file (image + the records of the messages it holds) is
//! written on the blocking pool while applies go on. openraft then purges
//! the log up to it; the records of those messages are read from the
//! snapshot from then on ([`GroupLog`] asks it first). At start the
//! newest snapshot rebuilds the state and openraft applies the log after
//! it; a follower that lags behind the purged log installs the leader's.

use crate::machine::{on_blocking_pool, state_machine_error};
use crate::snapshot::SnapshotStore;
use crate::store::RaftLog;
use crate::types::{
    Applied, Entry, LogId, NodeId, SnapshotData, SnapshotFileRef, StorageError, TypeConfig,
};
use bytes::Bytes;
use ferry_log::RecordPos;
use ferry_queue::error::{CoreError, Result as CoreResult};
use ferry_queue::queue::state::{MarkOutcome, StateImage};
use ferry_queue::queue::{CommandLog, Replica};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{BasicNode, EntryPayload, ErrorSubject, OptionalSend, StoredMembership};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// A group's Raft log as its queue reads it: a record the current
/// snapshot holds is read from there (the log below it may be purged).
#[derive(Debug, Clone)]
pub struct GroupLog {
    log: RaftLog,
    store: Arc<SnapshotStore>,
}

impl GroupLog {
    /// The queue's view of `log` and of its group's snapshots.
    pub fn new(log: RaftLog, store: Arc<SnapshotStore>) -> Self {
        GroupLog { log, store }
    }
}

fn core(e: impl std::fmt::Display) -> CoreError {
    CoreError::Corrupt(e.to_string())
}

impl CommandLog for GroupLog {
    fn read(&self, pos: &RecordPos) -> CoreResult<Bytes> {
        if let Some(r) = self.store.read(pos.index) {
            return r.map_err(core);
        }
        self.log.read_command(pos).map_err(core)
    }

    fn scan(
        &self,
        from: u64,
        f: &mut dyn FnMut(RecordPos, Bytes) -> CoreResult<bool>,
    ) -> CoreResult<()> {
        let mut failed = None;
        self.log
            .scan_commands(from, &mut |pos, b| match f(pos, b) {
                Ok(go) => go,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            })
            .map_err(core)?;
        failed.map_or(Ok(()), Err)
    }
}

#[derive(Debug, Default)]
struct Applied0 {
    applied: Option<LogId>,
    membership: StoredMembership<NodeId, BasicNode>,
}

/// When a queue group wants a snapshot: the bytes of command records
/// applied since the last one against `max(threshold, live records)`, so
/// a snapshot (which rewrites the live records) costs at most as much as
/// what it lets the log drop.
#[derive(Debug)]
pub struct SnapshotDue {
    threshold: u64,
    logged: AtomicU64,
    asked: AtomicBool,
    /// Snapshot builders alive (one is built at a time).
    building: AtomicU64,
    notify: tokio::sync::Notify,
}

impl SnapshotDue {
    pub(crate) fn new(threshold: u64) -> Self {
        SnapshotDue {
            threshold,
            logged: AtomicU64::new(0),
            asked: AtomicBool::new(false),
            building: AtomicU64::new(0),
            notify: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn logged(&self, bytes: u64, live: impl FnOnce() -> u64) {
        let n = self.logged.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if n >= self.threshold
            && !self.asked.load(Ordering::Relaxed)
            && n >= live()
            && !self.asked.swap(true, Ordering::AcqRel)
        {
            self.notify.notify_one();
        }
    }

    pub(crate) fn reset(&self) {
        self.logged.store(0, Ordering::Relaxed);
        self.asked.store(false, Ordering::Release);
    }

    /// Asks again at the next apply if still due (the trigger may have
    /// been skipped: openraft ignores one while it builds a snapshot).
    pub fn rearm(&self) {
        self.asked.store(false, Ordering::Release);
    }

    /// Whether a snapshot was asked for and is not built yet.
    pub fn pending(&self) -> bool {
        self.asked.load(Ordering::Acquire)
    }

    /// Whether a snapshot is being built now.
    pub fn building(&self) -> bool {
        self.building.load(Ordering::Acquire) > 0
    }

    /// Waits until a snapshot is due (the caller triggers it).
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

/// openraft's state machine of a queue group. Clones share it.
#[derive(Debug, Clone)]
pub struct QueueMachine {
    log: RaftLog,
    replica: Replica,
    state: Arc<Mutex<Applied0>>,
    store: Arc<SnapshotStore>,
    due: Arc<SnapshotDue>,
}

impl QueueMachine {
    /// The state machine applying `log`'s committed entries to `replica`,
    /// starting from `store`'s current snapshot (`image`: its state, as
    /// [`SnapshotStore::open`] gave it); asks for a snapshot once more
    /// than `threshold` bytes of records were applied since the last.
    pub fn new(
        log: RaftLog,
        replica: Replica,
        store: Arc<SnapshotStore>,
        image: Option<StateImage>,
        threshold: u64,
    ) -> Self {
        let mut state = Applied0::default();
        if let (Some(cur), Some(image)) = (store.current(), image) {
            replica.restore(&image);
            state.applied = cur.meta().last_log_id;
            state.membership = cur.meta().last_membership.clone();
        }
        QueueMachine {
            log,
            replica,
            state: Arc::new(Mutex::new(state)),
            store,
            due: Arc::new(SnapshotDue::new(threshold)),
        }
    }

    /// The replica it applies to.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Says when a snapshot is due.
    pub fn due(&self) -> Arc<SnapshotDue> {
        self.due.clone()
    }

    /// The group's snapshots.
    pub fn store(&self) -> &Arc<SnapshotStore> {
        &self.store
    }

    /// Applies `entries`. May read the segments (positions past the tail
    /// cache, bodies the queue delivers): page-cache I/O, see `apply`.
    fn apply_entries(&self, entries: Vec<Entry>) -> Result<Vec<Applied>, String> {
        let mut out = Vec::with_capacity(entries.len());
        let mut logged = 0u64;
        for e in entries {
            let mut answer = Applied::default();
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    let at = self
                        .log
                        .command_positions(e.log_id.index)
                        .map_err(|err| err.to_string())?;
                    if at.len() != batch.commands.len() {
                        return Err(format!(
                            "entry {} has {} command records for {} commands",
                            e.log_id.index,
                            at.len(),
                            batch.commands.len()
                        ));
                    }
                    logged += at.iter().map(|p| u64::from(p.len)).sum::<u64>();
                    // A command the queue cannot apply is refused the
                    // same way on every replica: logged, skipped.
                    let (outcome, errors) = self
                        .replica
                        .apply_entry(at.into_iter().zip(batch.commands).collect());
                    for err in errors {
                        tracing::error!(index = e.log_id.index, error = %err, "queue command skipped");
                    }
                    answer = EntryAnswer::of(outcome).encode();
                }
                EntryPayload::Membership(m) => {
                    self.state.lock().membership = StoredMembership::new(Some(e.log_id), m);
                }
            }
            self.state.lock().applied = Some(e.log_id);
            out.push(answer);
        }
        self.due.logged(logged, || self.replica.live_bytes());
        Ok(out)
    }
}

/// What a queue group's entry came to, as its answer (`Applied`) tells
/// the proposer (`ferry_queue`'s `Marks`): empty when applied; `gap` when
/// skipped because an earlier batch of its proposer is missing (it sends
/// again from that one); `dup` and the refused positions (u32 LE each)
/// of the copy applied before, for a resend; `dup?` for a resend of a
/// batch applied too long ago to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryAnswer {
    /// Applied.
    Applied,
    /// Skipped: an earlier batch of its proposer is missing.
    Gap,
    /// A resend; the applied copy's leader refused these positions.
    Duplicate(Vec<u32>),
    /// A resend of a batch applied too long ago to say what was refused.
    Unknown,
}

const GAP: &[u8] = b"gap";
const DUP: &[u8] = b"dup";
const DUP_UNKNOWN: &[u8] = b"dup?";

impl EntryAnswer {
    /// The answer to an entry the queue decided `o` about.
    pub fn of(o: MarkOutcome) -> Self {
        match o {
            MarkOutcome::Apply => EntryAnswer::Applied,
            MarkOutcome::Gap => EntryAnswer::Gap,
            MarkOutcome::Duplicate(v) => EntryAnswer::Duplicate(v),
            MarkOutcome::DuplicateUnknown => EntryAnswer::Unknown,
        }
    }

    /// As the entry's answer.
    pub fn encode(&self) -> Applied {
        Applied(match self {
            EntryAnswer::Applied => Bytes::new(),
            EntryAnswer::Gap => Bytes::from_static(GAP),
            EntryAnswer::Unknown => Bytes::from_static(DUP_UNKNOWN),
            EntryAnswer::Duplicate(v) => {
                let mut b = DUP.to_vec();
                for p in v {
                    b.extend_from_slice(&p.to_le_bytes());
                }
                Bytes::from(b)
            }
        })
    }

    /// An entry's answer (anything else, e.g. a stream's or the metadata
    /// group's, reads as applied).
    pub fn decode(a: &Applied) -> Self {
        let b = a.0.as_ref();
        if b == GAP {
            EntryAnswer::Gap
        } else if b == DUP_UNKNOWN {
            EntryAnswer::Unknown
        } else if let Some(rest) = b.strip_prefix(DUP).filter(|r| r.len() % 4 == 0) {
            EntryAnswer::Duplicate(
                rest.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        } else {
            EntryAnswer::Applied
        }
    }
}

/// At most this many entries, holding at most [`INLINE_COMMANDS`]
/// commands, are applied where openraft asks; larger batches (a replica
/// catching up reads records back from its segments) go to the blocking
/// pool.
const INLINE_ENTRIES: usize = 8;
/// See [`INLINE_ENTRIES`].
const INLINE_COMMANDS: usize = 1024;

fn applies_inline(entries: &[Entry]) -> bool {
    entries.len() <= INLINE_ENTRIES
        && entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(b) => b.commands.len(),
                _ => 0,
            })
            .sum::<usize>()
            <= INLINE_COMMANDS
}

fn file_ref(f: &crate::snapshot::SnapshotFile) -> Snapshot<TypeConfig> {
    Snapshot {
        meta: f.meta().clone(),
        snapshot: Box::new(SnapshotData::File(SnapshotFileRef {
            path: f.path().to_path_buf(),
            len: f.len(),
            file: f.file().clone(),
        })),
    }
}

/// Builds one snapshot from the state imaged when openraft asked.
#[derive(Debug)]
pub struct QueueSnapshotBuilder {
    log: RaftLog,
    store: Arc<SnapshotStore>,
    meta: SnapshotMeta<NodeId, BasicNode>,
    image: StateImage,
    /// Where each message's record is in the log (read from there unless
    /// the current snapshot holds it), by id.
    positions: Vec<RecordPos>,
    /// Counts this builder as building until it is dropped.
    due: Arc<SnapshotDue>,
}

impl Drop for QueueSnapshotBuilder {
    fn drop(&mut self) {
        self.due.building.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for QueueSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let subject = ErrorSubject::Snapshot(None);
        // The store returns its current snapshot instead if that is as
        // recent (checked under its lock, against installs).
        let (log, store, meta) = (self.log.clone(), self.store.clone(), self.meta.clone());
        let image = std::mem::take(&mut self.image);
        let positions = std::mem::take(&mut self.positions);
        let built = tokio::task::spawn_blocking(move || {
            store.build(&meta, &image, &mut |id| {
                if let Some(r) = store.read(id) {
                    return r;
                }
                match positions.binary_search_by_key(&id, |p| p.index) {
                    Ok(at) => log.read_command(&positions[at]),
                    Err(_) => Err(crate::error::RaftLogError::Task(format!(
                        "no position for message {id}"
                    ))),
                }
            })
        })
        .await
        .map_err(|e| state_machine_error(subject.clone(), e))?
        .map_err(|e| state_machine_error(subject, e))?;
        tracing::debug!(
            snapshot = %built.meta().snapshot_id,
            records = built.records(),
            bytes = built.len(),
            "queue snapshot built"
        );
        Ok(file_ref(&built))
    }
}

impl RaftStateMachine<TypeConfig> for QueueMachine {
    type SnapshotBuilder = QueueSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, BasicNode>), StorageError> {
        let s = self.state.lock();
        Ok((s.applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if applies_inline(&entries) {
            // A few entries (a queue's steady state): applied on this
            // worker. Their records are in the log's tail cache, and what
            // applying does beyond memory is the publish / deliver path's
            // page-cache I/O, allowed on a worker (ARCHITECTURE.md,
            // "Blocking"). A hand-off to the blocking pool per apply cost
            // two thread wake-ups: at 1,000 queues committing 10 entries a
            // second each, most of a node's futex calls and context
            // switches (BENCHMARKS.md, S8).
            return self
                .apply_entries(entries)
                .map_err(|e| state_machine_error(ErrorSubject::StateMachine, e));
        }
        let me = self.clone();
        on_blocking_pool(ErrorSubject::StateMachine, move || {
            me.apply_entries(entries)
        })
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Called between applies: the image is the state at `applied`.
        let (image, mut positions) = self.replica.image_with_positions();
        positions.sort_unstable_by_key(|p| p.index);
        let s = self.state.lock();
        let last = s.applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: s.membership.clone(),
            snapshot_id: match last {
                Some(l) => format!("q-{}-{}", l.leader_id.term, l.index),
                None => "q-0-0".to_owned(),
            },
        };
        drop(s);
        self.due.reset();
        self.due.building.fetch_add(1, Ordering::AcqRel);
        QueueSnapshotBuilder {
            log: self.log.clone(),
            store: self.store.clone(),
            meta,
            image,
            positions,
            due: self.due.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let SnapshotData::File(f) = *snapshot else {
            return Err(state_machine_error(
                subject,
                "a queue group's snapshot is a file",
            ));
        };
        let store = self.store.clone();
        let (got, image) = tokio::task::spawn_blocking(move || store.install(&f.path))
            .await
            .map_err(|e| state_machine_error(subject.clone(), e))?
            .map_err(|e| state_machine_error(subject.clone(), e))?;
        if got.last_log_id != meta.last_log_id {
            return Err(state_machine_error(
                subject,
                format!(
                    "the snapshot file is at {:?}, openraft installs {:?}",
                    got.last_log_id, meta.last_log_id
                ),
            ));
        }
        self.replica.restore(&image);
        let mut s = self.state.lock();
        s.applied = meta.last_log_id;
        s.membership = meta.last_membership.clone();
        drop(s);
        self.due.reset();
        tracing::info!(snapshot = %meta.snapshot_id, "queue snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.store.current().map(|f| file_ref(&f)))
    }
}

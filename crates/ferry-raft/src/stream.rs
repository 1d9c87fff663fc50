//! A replicated stream's group: the stream replica
//! (`ferry_queue::stream::Stream`) as openraft's state machine.
//!
//! The group's log carries the stream's message records as proposed; each
//! replica appends every committed one to its own stream log (the log
//! consumers read) at the offset this machine counts: the records that
//! took an offset before it. So offsets, bytes and publish times are the
//! same on every replica.
//!
//! **Restart.** The machine records a checkpoint — an applied log id, the
//! offset count after it, the membership then — once the stream's log has
//! made every record up to that count durable (written at most once a
//! second, file `stream-applied` in the group's directory, framed and
//! checksummed). At start it reports that log id as applied, so openraft
//! applies the group's log after it again; records the stream's log holds
//! already are skipped by offset, the others appended. A lost or older
//! checkpoint only means more of the log is applied again. The group's log
//! is therefore never cut below the checkpoint; it is not cut at all yet
//! (stream groups take no snapshots: `install_snapshot` refuses).

use crate::codec::{decode_snapshot_head, encode_snapshot_head, SnapMeta};
use crate::machine::state_machine_error;
use crate::types::{Applied, Entry, LogId, NodeId, SnapshotData, StorageError, TypeConfig};
use ferry_log::{framed, FileIo};
use ferry_queue::stream::{Applied as StreamApplied, Stream};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{BasicNode, EntryPayload, ErrorSubject, OptionalSend, StoredMembership};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The checkpoint file's name in the group's directory.
pub const CHECKPOINT: &str = "stream-applied";
const MAGIC: &[u8; 8] = b"FRYSTCP1";
/// Checkpoints are written at most this often.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State {
    applied: Option<LogId>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// The offset the next committed record takes.
    next_offset: u64,
    /// Applied entries not yet covered by a checkpoint: (log id, offset
    /// count after it, membership then).
    pending: VecDeque<(LogId, u64, StoredMembership<NodeId, BasicNode>)>,
    saved_at: Option<Instant>,
}

/// openraft's state machine of a stream group. Clones share it.
#[derive(Debug, Clone)]
pub struct StreamMachine {
    stream: Arc<Stream>,
    io: Arc<dyn FileIo>,
    dir: PathBuf,
    state: Arc<Mutex<State>>,
}

/// Reads the checkpoint in `dir` (None: none, or unreadable — the log is
/// then applied from its start, which is always correct).
fn load_checkpoint(io: &dyn FileIo, dir: &Path) -> Option<(SnapMeta, u64)> {
    let body = match framed::load(io, &dir.join(CHECKPOINT), MAGIC) {
        Ok(b) => b?,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "stream checkpoint unreadable; the group's log is applied again from its start");
            return None;
        }
    };
    let (meta, rest) = decode_snapshot_head(&body).ok()?;
    let next = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    Some((meta, next))
}

impl StreamMachine {
    /// The state machine applying a group's committed entries (its log's
    /// files in `dir`) to `stream`, from the checkpoint found there.
    pub fn new(stream: Arc<Stream>, io: Arc<dyn FileIo>, dir: &Path) -> Self {
        let mut state = State {
            applied: None,
            membership: StoredMembership::default(),
            next_offset: 0,
            pending: VecDeque::new(),
            saved_at: None,
        };
        if let Some((meta, next)) = load_checkpoint(io.as_ref(), dir) {
            state.applied = meta.last_log_id;
            state.membership = meta.last_membership;
            state.next_offset = next;
        }
        StreamMachine {
            stream,
            io,
            dir: dir.to_path_buf(),
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The stream it applies to.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Applies `entries` (blocking: appends to the stream's log).
    fn apply_blocking(&self, entries: Vec<Entry>) -> Result<Vec<Applied>, String> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let mut s = self.state.lock();
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    for cmd in batch.commands {
                        match self.stream.apply_committed(s.next_offset, cmd) {
                            Ok(StreamApplied::Offset) => s.next_offset += 1,
                            Ok(StreamApplied::Skipped) => {}
                            Err(err) => return Err(err.to_string()),
                        }
                    }
                }
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembership::new(Some(e.log_id), m);
                }
            }
            s.applied = Some(e.log_id);
            let (next, membership) = (s.next_offset, s.membership.clone());
            s.pending.push_back((e.log_id, next, membership));
            out.push(Applied::default());
        }
        self.checkpoint();
        Ok(out)
    }

    /// Writes a checkpoint of the newest applied entry whose records the
    /// stream's log holds durably, if the last one is a second old.
    fn checkpoint(&self) {
        let durable = self.stream.durable_next();
        let (at, next, membership) = {
            let mut s = self.state.lock();
            if s.saved_at.is_some_and(|t| t.elapsed() < CHECKPOINT_EVERY) {
                return;
            }
            let mut best = None;
            while s.pending.front().is_some_and(|p| p.1 <= durable) {
                best = s.pending.pop_front();
            }
            let Some(best) = best else { return };
            s.saved_at = Some(Instant::now());
            best
        };
        let meta = SnapMeta {
            last_log_id: Some(at),
            last_membership: membership,
            snapshot_id: String::new(),
        };
        let mut body = Vec::new();
        encode_snapshot_head(&meta, &next.to_le_bytes(), &mut body);
        if let Err(e) = framed::save(self.io.as_ref(), &self.dir, CHECKPOINT, MAGIC, &body) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "stream checkpoint not written");
        }
    }
}

/// Stream groups take no snapshots (their log is not cut yet).
#[derive(Debug)]
pub struct NoSnapshot;

impl RaftSnapshotBuilder<TypeConfig> for NoSnapshot {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        Err(state_machine_error(
            ErrorSubject::Snapshot(None),
            "stream groups take no snapshots",
        ))
    }
}

impl RaftStateMachine<TypeConfig> for StreamMachine {
    type SnapshotBuilder = NoSnapshot;

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
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.apply_blocking(entries))
            .await
            .map_err(|e| state_machine_error(ErrorSubject::StateMachine, e))?
            .map_err(|e| state_machine_error(ErrorSubject::StateMachine, e))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        NoSnapshot
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        _snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        Err(state_machine_error(
            ErrorSubject::Snapshot(Some(meta.signature())),
            "stream groups install no snapshots",
        ))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(None)
    }
}

//! A replicated stream's group: the stream replica
//! (`ferry_queue::stream::Stream`) as openraft's state machine.
//!
//! The group's log carries the stream's message records as proposed; each
//! replica appends every committed one to its own stream log (the log
//! consumers read) at the offset this machine counts: the records that
//! took an offset before it. So offsets, bytes and publish times are the
//! same on every replica.
//!
//! **Checkpoints are the snapshots.** The machine records a checkpoint —
//! an applied log id, the offset count after it, the membership then —
//! once the stream's log holds every record up to that count durably
//! (file `stream-applied` in the group's directory, framed and
//! checksummed): at most once a second while applying, and whenever
//! openraft asks for a snapshot (the group triggers one each
//! `queue_snapshot_bytes` of records; the stream's log is synced first).
//! openraft then cuts the group's log up to it. At start the checkpoint is
//! both the applied state and the current snapshot; the log after it is
//! applied again, records the stream's log holds already are skipped by
//! offset. A follower behind the cut installs the leader's snapshot: the
//! leader writes the transfer file from its stream's records only then
//! (`stream_snapshot`), the follower checks it whole and makes its stream
//! log hold those records (`Stream::install_records`).

use crate::codec::{decode_snapshot_head, encode_snapshot_head, SnapMeta};
use crate::machine::{on_blocking_pool, state_machine_error};
use crate::replica::SnapshotDue;
use crate::stream_snapshot::{self, StreamSnapshotRef};
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
    /// The current snapshot: the last checkpoint built or installed (or
    /// found at start), with its offset count.
    current: Option<(SnapMeta, u64)>,
}

/// openraft's state machine of a stream group. Clones share it.
#[derive(Debug, Clone)]
pub struct StreamMachine {
    stream: Arc<Stream>,
    io: Arc<dyn FileIo>,
    dir: PathBuf,
    state: Arc<Mutex<State>>,
    due: Arc<SnapshotDue>,
    /// Serializes checkpoint writes (they share a temp file).
    writing: Arc<Mutex<()>>,
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
    /// files in `dir`) to `stream`, from the checkpoint found there; asks
    /// for a snapshot once `threshold` bytes of records were applied
    /// since the last.
    pub fn new(stream: Arc<Stream>, io: Arc<dyn FileIo>, dir: &Path, threshold: u64) -> Self {
        let mut state = State {
            applied: None,
            membership: StoredMembership::default(),
            next_offset: 0,
            pending: VecDeque::new(),
            saved_at: None,
            current: None,
        };
        if let Some((meta, next)) = load_checkpoint(io.as_ref(), dir) {
            state.applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
            state.next_offset = next;
            state.current = Some((meta, next));
        }
        StreamMachine {
            stream,
            io,
            dir: dir.to_path_buf(),
            state: Arc::new(Mutex::new(state)),
            due: Arc::new(SnapshotDue::new(threshold)),
            writing: Arc::new(Mutex::new(())),
        }
    }

    /// Writes the checkpoint file (fsynced, atomically replaced).
    fn save(&self, meta: &SnapMeta, next: u64) -> Result<(), framed::FramedError> {
        let _w = self.writing.lock();
        save_checkpoint(self.io.as_ref(), &self.dir, meta, next)
    }

    /// Says when a snapshot is due.
    pub fn due(&self) -> Arc<SnapshotDue> {
        self.due.clone()
    }

    fn shipped(&self, meta: SnapMeta, next: u64) -> Snapshot<TypeConfig> {
        Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(SnapshotData::Stream(StreamSnapshotRef {
                stream: self.stream.clone(),
                io: self.io.clone(),
                dir: self.dir.clone(),
                meta,
                next,
            })),
        }
    }

    /// The stream it applies to.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Applies `entries` (blocking: appends to the stream's log).
    fn apply_blocking(&self, entries: Vec<Entry>) -> Result<Vec<Applied>, String> {
        let mut out = Vec::with_capacity(entries.len());
        let mut logged = 0u64;
        for e in entries {
            let mut s = self.state.lock();
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    for cmd in batch.commands {
                        logged += cmd.len() as u64;
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
        self.due.logged(logged, || 0);
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
            snapshot_id: snapshot_id(Some(at)),
        };
        if let Err(e) = self.save(&meta, next) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "stream checkpoint not written");
        }
    }
}

fn snapshot_id(at: Option<LogId>) -> String {
    match at {
        Some(l) => format!("s-{}-{}", l.leader_id.term, l.index),
        None => "s-0-0".to_owned(),
    }
}

/// Writes the checkpoint file (fsynced, atomically replaced).
fn save_checkpoint(
    io: &dyn FileIo,
    dir: &Path,
    meta: &SnapMeta,
    next: u64,
) -> Result<(), framed::FramedError> {
    let mut body = Vec::new();
    encode_snapshot_head(meta, &next.to_le_bytes(), &mut body);
    framed::save(io, dir, CHECKPOINT, MAGIC, &body)
}

/// Builds a stream group's snapshot: the stream's log synced up to the
/// offset count at the applied log id, then the checkpoint written.
#[derive(Debug)]
pub struct StreamSnapshotBuilder {
    machine: StreamMachine,
    meta: SnapMeta,
    next: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for StreamSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let subject = ErrorSubject::Snapshot(None);
        let (m, meta, next) = (self.machine.clone(), self.meta.clone(), self.next);
        on_blocking_pool(subject, move || {
            m.stream.sync_now();
            let durable = m.stream.durable_next();
            if durable < next {
                return Err(format!(
                    "the stream's log is durable up to {durable}, the snapshot needs {next}"
                ));
            }
            m.save(&meta, next).map_err(|e| e.to_string())
        })
        .await?;
        self.machine.state.lock().current = Some((self.meta.clone(), self.next));
        tracing::debug!(snapshot = %self.meta.snapshot_id, next = self.next, "stream snapshot built");
        Ok(self.machine.shipped(self.meta.clone(), self.next))
    }
}

impl RaftStateMachine<TypeConfig> for StreamMachine {
    type SnapshotBuilder = StreamSnapshotBuilder;

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
        on_blocking_pool(ErrorSubject::StateMachine, move || {
            me.apply_blocking(entries)
        })
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Called between applies: the offset count is the one at `applied`.
        let s = self.state.lock();
        let meta = SnapMeta {
            last_log_id: s.applied,
            last_membership: s.membership.clone(),
            snapshot_id: snapshot_id(s.applied),
        };
        let next = s.next_offset;
        drop(s);
        self.due.reset();
        StreamSnapshotBuilder {
            machine: self.clone(),
            meta,
            next,
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
                "a stream group's snapshot arrives as a file",
            ));
        };
        let (m, want) = (self.clone(), meta.clone());
        let installed = on_blocking_pool(subject, move || -> Result<u64, String> {
            let got = stream_snapshot::check(f.file.as_ref(), f.len, &f.path)
                .map_err(|e| e.to_string())?;
            if got.meta.last_log_id != want.last_log_id {
                return Err(format!(
                    "the snapshot file is at {:?}, openraft installs {:?}",
                    got.meta.last_log_id, want.last_log_id
                ));
            }
            let mut records = stream_snapshot::records(f.file.as_ref(), f.len, &got);
            let next = m
                .stream
                .install_records(got.first, &mut records)
                .map_err(|e| e.to_string())?;
            // The stream may end past the snapshot's count when the
            // leader's retention has removed everything up to a later
            // offset: the group's next records (below that) are skipped.
            if next < got.next {
                return Err(format!(
                    "the stream holds {next} offsets after the install, the snapshot {}",
                    got.next
                ));
            }
            m.save(&want, got.next).map_err(|e| e.to_string())?;
            let _ = m.io.remove(&f.path);
            Ok(got.next)
        })
        .await?;
        let mut s = self.state.lock();
        s.applied = meta.last_log_id;
        s.membership = meta.last_membership.clone();
        s.next_offset = installed;
        s.pending.clear();
        s.current = Some((meta.clone(), installed));
        drop(s);
        self.due.reset();
        tracing::info!(snapshot = %meta.snapshot_id, next = installed, "stream snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self.state.lock().current.clone();
        Ok(current.map(|(meta, next)| self.shipped(meta, next)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use ferry_log::StdIo;

    fn meta() -> SnapMeta {
        crate::testing::three_node_meta((4, 2, 310), "s-4-310")
    }

    /// The committed version-1 checkpoint (`tests/fixtures/stream-checkpoint-v1`):
    /// today's reader loads it, today's writer writes the same bytes (a
    /// format change must bump the magic and keep reading this one).
    /// `FERRY_WRITE_FIXTURES=1` rewrites it.
    #[test]
    fn the_version_1_checkpoint_fixture_reads_back_and_is_what_the_writer_writes() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/stream-checkpoint-v1");
        let dir = tempfile::tempdir().unwrap();
        let io: Arc<dyn FileIo> = Arc::new(StdIo);
        save_checkpoint(io.as_ref(), dir.path(), &meta(), 1234).unwrap();
        let written = std::fs::read(dir.path().join(CHECKPOINT)).unwrap();
        if std::env::var_os("FERRY_WRITE_FIXTURES").is_some() {
            std::fs::write(&fixture, &written).unwrap();
        }
        let committed = std::fs::read(&fixture).expect("the committed fixture");
        assert_eq!(written, committed, "the writer's bytes changed");
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(&fixture, copy.path().join(CHECKPOINT)).unwrap();
        let (m, next) = load_checkpoint(io.as_ref(), copy.path()).unwrap();
        assert_eq!((m, next), (meta(), 1234));
        // A damaged checkpoint is ignored (the log is applied from its
        // start), never trusted.
        let mut bad = committed.clone();
        let at = bad.len() - 3;
        bad[at] ^= 1;
        std::fs::write(copy.path().join(CHECKPOINT), &bad).unwrap();
        assert!(load_checkpoint(io.as_ref(), copy.path()).is_none());
    }
}

//! A replicated queue's group: the queue replica (`ferry_queue::Replica`)
//! as openraft's state machine, and the group's Raft log as the queue's
//! log ([`GroupLog`]).
//!
//! Applying an entry hands each of its commands, with the position of its
//! record in the group's log, to `Replica::apply_committed`; the queue
//! decodes them (this module does not). The queue's state lives in memory
//! and is rebuilt at start by openraft applying the group's log from its
//! beginning: the group never snapshots or purges its log yet (a snapshot
//! would name the oldest record the queue still needs; not built), so
//! `install_snapshot` refuses.

use crate::machine::state_machine_error;
use crate::store::RaftLog;
use crate::types::{Applied, Entry, LogId, NodeId, SnapshotData, StorageError, TypeConfig};
use bytes::Bytes;
use ferry_log::RecordPos;
use ferry_queue::error::{CoreError, Result as CoreResult};
use ferry_queue::queue::{CommandLog, Replica};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{BasicNode, EntryPayload, ErrorSubject, OptionalSend, StoredMembership};
use parking_lot::Mutex;
use std::sync::Arc;

/// A group's Raft log as its queue reads it.
#[derive(Debug, Clone)]
pub struct GroupLog(pub RaftLog);

fn core(e: impl std::fmt::Display) -> CoreError {
    CoreError::Corrupt(e.to_string())
}

impl CommandLog for GroupLog {
    fn read(&self, pos: &RecordPos) -> CoreResult<Bytes> {
        self.0.read_command(pos).map_err(core)
    }

    fn scan(
        &self,
        from: u64,
        f: &mut dyn FnMut(RecordPos, Bytes) -> CoreResult<bool>,
    ) -> CoreResult<()> {
        let mut failed = None;
        self.0
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

/// openraft's state machine of a queue group. Clones share it.
#[derive(Debug, Clone)]
pub struct QueueMachine {
    log: RaftLog,
    replica: Replica,
    state: Arc<Mutex<Applied0>>,
}

impl QueueMachine {
    /// The state machine applying `log`'s committed entries to `replica`.
    pub fn new(log: RaftLog, replica: Replica) -> Self {
        QueueMachine {
            log,
            replica,
            state: Arc::default(),
        }
    }

    /// The replica it applies to.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Applies `entries` (blocking: positions may come from the segments,
    /// and the queue reads bodies when it delivers).
    fn apply_blocking(&self, entries: Vec<Entry>) -> Result<Vec<Applied>, String> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
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
                    for (pos, cmd) in at.into_iter().zip(batch.commands) {
                        // A command the queue cannot apply is refused the
                        // same way on every replica: logged, skipped.
                        if let Err(err) = self.replica.apply_committed(pos, cmd) {
                            tracing::error!(index = pos.index, error = %err, "queue command skipped");
                        }
                    }
                }
                EntryPayload::Membership(m) => {
                    self.state.lock().membership = StoredMembership::new(Some(e.log_id), m);
                }
            }
            self.state.lock().applied = Some(e.log_id);
            out.push(Applied::default());
        }
        Ok(out)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for QueueMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        Err(state_machine_error(
            ErrorSubject::Snapshot(None),
            "queue groups do not snapshot yet",
        ))
    }
}

impl RaftStateMachine<TypeConfig> for QueueMachine {
    type SnapshotBuilder = Self;

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
        self.clone()
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
            "queue groups do not install snapshots yet",
        ))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(None)
    }
}

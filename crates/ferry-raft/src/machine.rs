//! [`SmallMachine`]: openraft's state machine for a group whose whole state
//! is small enough to snapshot in one piece (the metadata group; test and
//! measurement machines). The group's own rules live in a [`SmallState`];
//! this type keeps what every such machine needs: the applied log id, the
//! membership, and the last snapshot built or installed.

use crate::error::CodecError;
use crate::types::{Applied, Entry, LogId, NodeId, SnapshotData, StorageError, TypeConfig};
use bytes::Bytes;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, StorageIOError,
    StoredMembership,
};
use parking_lot::RwLock;
use std::sync::Arc;

/// A state machine's failure as openraft's storage error (`subject`: the
/// state machine, or a snapshot).
pub fn state_machine_error(subject: ErrorSubject<NodeId>, e: impl ToString) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(subject, ErrorVerb::Write, AnyError::error(e.to_string())),
    }
}

/// Runs `f` on tokio's blocking pool (state machines do file I/O); its
/// failure, or the task's, becomes openraft's storage error about `subject`.
pub async fn on_blocking_pool<T, E>(
    subject: ErrorSubject<NodeId>,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, StorageError>
where
    T: Send + 'static,
    E: ToString + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| state_machine_error(subject.clone(), e))?
        .map_err(|e| state_machine_error(subject, e))
}

/// The rules of a small-state group: applied the same way on every replica.
pub trait SmallState: Default + Send + Sync + 'static {
    /// Applies the commands of one committed normal entry.
    fn apply(&mut self, commands: Vec<Bytes>) -> Applied;
    /// The whole state, for a snapshot.
    fn encode(&self) -> Bytes;
    /// The state a snapshot holds.
    fn decode(bytes: Bytes) -> Result<Self, CodecError>;
}

/// openraft's state machine over a [`SmallState`]. Clones share it (a
/// snapshot builder is a clone).
#[derive(Debug)]
pub struct SmallMachine<S> {
    inner: Arc<RwLock<Machine<S>>>,
    label: &'static str,
}

impl<S> Clone for SmallMachine<S> {
    fn clone(&self) -> Self {
        SmallMachine {
            inner: self.inner.clone(),
            label: self.label,
        }
    }
}

#[derive(Debug, Default)]
struct Machine<S> {
    applied: Option<LogId>,
    membership: StoredMembership<NodeId, BasicNode>,
    state: S,
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, SnapshotData)>,
    built: u64,
}

impl<S: SmallState> SmallMachine<S> {
    /// An empty machine; `label` prefixes its snapshot ids.
    pub fn new(label: &'static str) -> Self {
        SmallMachine {
            inner: Arc::new(RwLock::new(Machine::default())),
            label,
        }
    }

    /// Reads the applied state.
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.inner.read().state)
    }
}

impl<S: SmallState> Default for SmallMachine<S> {
    fn default() -> Self {
        SmallMachine::new("state")
    }
}

impl<S: SmallState> RaftSnapshotBuilder<TypeConfig> for SmallMachine<S> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let mut m = self.inner.write();
        m.built += 1;
        let meta = SnapshotMeta {
            last_log_id: m.applied,
            last_membership: m.membership.clone(),
            snapshot_id: format!("{}-{}", self.label, m.built),
        };
        let data = SnapshotData::Inline(m.state.encode());
        m.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(data),
        })
    }
}

impl<S: SmallState> RaftStateMachine<TypeConfig> for SmallMachine<S> {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, BasicNode>), StorageError> {
        let m = self.inner.read();
        Ok((m.applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut m = self.inner.write();
        let mut out = Vec::new();
        for e in entries {
            m.applied = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => Applied::default(),
                EntryPayload::Normal(batch) => m.state.apply(batch.commands),
                EntryPayload::Membership(ms) => {
                    m.membership = StoredMembership::new(Some(e.log_id), ms);
                    Applied::default()
                }
            });
        }
        Ok(out)
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
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let SnapshotData::Inline(bytes) = &*snapshot else {
            return Err(state_machine_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                "a small state's snapshot is inline",
            ));
        };
        let state = S::decode(bytes.clone()).map_err(|e| StorageError::IO {
            source: StorageIOError::new(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                AnyError::error(e.0),
            ),
        })?;
        let mut m = self.inner.write();
        m.state = state;
        m.applied = meta.last_log_id;
        m.membership = meta.last_membership.clone();
        m.snapshot = Some((meta.clone(), *snapshot));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self
            .inner
            .read()
            .snapshot
            .clone()
            .map(|(meta, data)| Snapshot {
                meta,
                snapshot: Box::new(data),
            }))
    }
}

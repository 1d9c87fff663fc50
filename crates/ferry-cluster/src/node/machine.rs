//! The metadata group's state machine: the cluster's own state
//! ([`MetaState`]: members, cluster id) and the definition commands,
//! which it hands, in log order, to the node's [`DefinitionApplier`] (the
//! broker's definitions: users, vhosts, exchanges, ...). ferry-cluster
//! does not know what a definition command means.
//!
//! The applier persists what it applied itself and skips, by log index,
//! what it applied before a restart; [`MetaState`] lives in memory and
//! is rebuilt from the whole log at start. So the group never snapshots
//! or purges its log (`SnapshotPolicy::Never` on the group): a snapshot
//! would have to carry every definition, and a node that installed one
//! would have to replace its definitions with it (not built; see
//! docs/cluster.md). `install_snapshot` therefore refuses.

use super::meta::{MetaCommand, MetaState};
use bytes::Bytes;
use ferry_raft::machine::state_machine_error;
use ferry_raft::{Applied, Entry, LogId, NodeId, SnapshotData, StorageError, TypeConfig};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{BasicNode, EntryPayload, ErrorSubject, OptionalSend, StoredMembership};
use parking_lot::RwLock;
use std::sync::Arc;

/// Applies definition commands on this node (the broker).
pub trait DefinitionApplier: Send + Sync + 'static {
    /// Applies the command of log entry `index` (skipping it if it was
    /// applied before) and returns its result's bytes for the proposer.
    /// Called on tokio's blocking pool, in log order, one at a time.
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8>;
}

/// An applier for a node without definitions (tests of the cluster
/// layer): every command's result is empty.
#[derive(Debug, Default)]
pub struct NoDefinitions;

impl DefinitionApplier for NoDefinitions {
    fn apply(&self, _index: u64, _command: &[u8]) -> Vec<u8> {
        Vec::new()
    }
}

#[derive(Debug, Default)]
struct State {
    applied: Option<LogId>,
    membership: StoredMembership<NodeId, BasicNode>,
    meta: MetaState,
}

/// The metadata state machine; clones share it.
#[derive(Clone)]
pub struct MetaMachine {
    state: Arc<RwLock<State>>,
    applier: Arc<dyn DefinitionApplier>,
}

impl std::fmt::Debug for MetaMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaMachine")
            .field("applied", &self.state.read().applied)
            .finish_non_exhaustive()
    }
}

impl MetaMachine {
    /// A machine that hands definition commands to `applier`.
    pub fn new(applier: Arc<dyn DefinitionApplier>) -> Self {
        MetaMachine {
            state: Arc::default(),
            applier,
        }
    }

    /// Reads the cluster's state.
    pub fn read<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        f(&self.state.read().meta)
    }

    async fn apply_definition(&self, index: u64, cmd: Bytes) -> Result<Bytes, StorageError> {
        let applier = self.applier.clone();
        let out = tokio::task::spawn_blocking(move || applier.apply(index, &cmd))
            .await
            .map_err(|e| state_machine_error(ErrorSubject::StateMachine, e))?;
        Ok(Bytes::from(out))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MetaMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Never asked for (the group's snapshot policy is Never); were it,
        // a snapshot without the definitions must not be installed.
        Err(state_machine_error(
            ErrorSubject::Snapshot(None),
            "the metadata group does not snapshot",
        ))
    }
}

impl RaftStateMachine<TypeConfig> for MetaMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, BasicNode>), StorageError> {
        let s = self.state.read();
        Ok((s.applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for e in entries {
            let mut reply = Bytes::new();
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    for c in batch.commands {
                        match MetaCommand::decode(c) {
                            Ok(MetaCommand::Definition(d)) => {
                                reply = self.apply_definition(e.log_id.index, d).await?;
                            }
                            Ok(cmd) => self.state.write().meta.apply_one(cmd),
                            // Skipped the same way on every node.
                            Err(err) => tracing::error!(error = %err, "metadata command skipped"),
                        }
                    }
                }
                EntryPayload::Membership(ms) => {
                    self.state.write().membership = StoredMembership::new(Some(e.log_id), ms);
                }
            }
            self.state.write().applied = Some(e.log_id);
            out.push(Applied(reply));
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
        _snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        Err(state_machine_error(
            ErrorSubject::Snapshot(Some(meta.signature())),
            "the metadata group does not install snapshots",
        ))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(None)
    }
}

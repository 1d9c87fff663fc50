//! The metadata group's state machine: the cluster's own state
//! ([`MetaState`]: members, cluster id) and the definition commands,
//! which it hands, in log order, to the node's [`DefinitionApplier`] (the
//! broker's definitions: users, vhosts, exchanges, ...). ferry-cluster
//! does not know what a definition command means.
//!
//! The applier persists what it applied itself and skips, by log index,
//! what it applied before a restart. [`MetaState`] lives in memory: at
//! start it is the last snapshot's, and the log after the snapshot is
//! applied again. A snapshot (every `meta_snapshot_interval` entries,
//! `meta_snapshot.rs`) carries the cluster state and the applier's export
//! of every definition, taken together between two applies; it is written
//! to `meta-snapshot` (synced) before openraft cuts the log. A node behind
//! the cut installs the leader's: the applier replaces its definitions
//! with the snapshot's (by a diff, through the one apply path) and
//! records the snapshot's index as applied.

use super::meta::{MetaCommand, MetaState};
use super::meta_snapshot;
use bytes::Bytes;
use ferry_log::FileIo;
use ferry_raft::machine::{on_blocking_pool, state_machine_error};
use ferry_raft::{Applied, Entry, LogId, NodeId, SnapshotData, StorageError, TypeConfig};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{BasicNode, EntryPayload, ErrorSubject, OptionalSend, StoredMembership};
use parking_lot::RwLock;
use std::path::PathBuf;
use std::sync::Arc;

/// Applies definition commands on this node (the broker).
pub trait DefinitionApplier: Send + Sync + 'static {
    /// Applies the command of log entry `index` (skipping it if it was
    /// applied before) and returns its result's bytes for the proposer.
    /// Called on tokio's blocking pool, in log order, one at a time.
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8>;
    /// Every definition applied so far, for a snapshot, with the log
    /// index of the last command applied (never called while a command
    /// applies). Blocking pool.
    fn export(&self) -> (u64, Vec<u8>);
    /// Replaces this node's definitions with a snapshot's (another node's
    /// `export`) and records `index` as the last applied. Blocking pool.
    fn install(&self, index: u64, definitions: &[u8]) -> Result<(), String>;
}

/// An applier for a node without definitions (tests of the cluster
/// layer): every command's result is empty.
#[derive(Debug, Default)]
pub struct NoDefinitions;

impl DefinitionApplier for NoDefinitions {
    fn apply(&self, _index: u64, _command: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn export(&self) -> (u64, Vec<u8>) {
        (0, Vec::new())
    }

    fn install(&self, _index: u64, _definitions: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Debug, Default)]
struct State {
    applied: Option<LogId>,
    membership: StoredMembership<NodeId, BasicNode>,
    meta: MetaState,
    /// The last snapshot built or installed: its meta and image.
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Bytes)>,
}

/// The metadata state machine; clones share it.
#[derive(Clone)]
pub struct MetaMachine {
    state: Arc<RwLock<State>>,
    applier: Arc<dyn DefinitionApplier>,
    /// Held by each apply and by a snapshot while it takes the state, so a
    /// snapshot's definitions are those of its log id.
    gate: Arc<tokio::sync::Mutex<()>>,
    io: Arc<dyn FileIo>,
    dir: PathBuf,
    built: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for MetaMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaMachine")
            .field("applied", &self.state.read().applied)
            .finish_non_exhaustive()
    }
}

impl MetaMachine {
    /// A machine that hands definition commands to `applier`, starting
    /// from the snapshot saved in `dir` if there is one. Blocking I/O.
    pub fn open(
        io: Arc<dyn FileIo>,
        dir: PathBuf,
        applier: Arc<dyn DefinitionApplier>,
    ) -> Result<Self, String> {
        let mut state = State::default();
        if let Some((meta, image)) = meta_snapshot::load(&*io, &dir)? {
            let (cluster, _definitions) = meta_snapshot::decode_image(image.clone())
                .map_err(|e| format!("{}: {e}", dir.join(meta_snapshot::FILE).display()))?;
            state.applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
            state.meta = cluster;
            state.snapshot = Some((meta, image));
        }
        Ok(MetaMachine {
            state: Arc::new(RwLock::new(state)),
            applier,
            gate: Arc::default(),
            io,
            dir,
            built: Arc::default(),
        })
    }

    /// Reads the cluster's state.
    pub fn read<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        f(&self.state.read().meta)
    }

    async fn apply_definition(&self, index: u64, cmd: Bytes) -> Result<Bytes, StorageError> {
        let applier = self.applier.clone();
        let out = on_blocking_pool(ErrorSubject::StateMachine, move || {
            Ok::<_, String>(applier.apply(index, &cmd))
        })
        .await?;
        Ok(Bytes::from(out))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MetaMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let subject = || ErrorSubject::Snapshot(None);
        let (meta, image) = {
            let _gate = self.gate.lock().await;
            let (applied, membership, cluster) = {
                let s = self.state.read();
                (s.applied, s.membership.clone(), s.meta.clone())
            };
            let applier = self.applier.clone();
            let (index, defs) =
                on_blocking_pool(subject(), move || Ok::<_, String>(applier.export())).await?;
            let n = self
                .built
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            let meta = SnapshotMeta {
                last_log_id: applied,
                last_membership: membership,
                snapshot_id: format!("meta-{}-{n}", applied.map_or(0, |l| l.index)),
            };
            let image = meta_snapshot::encode_image(&cluster, index, &defs);
            (meta, Bytes::from(image))
        };
        self.save(meta.clone(), image.clone()).await?;
        self.state.write().snapshot = Some((meta.clone(), image.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::Inline(image)),
        })
    }
}

impl MetaMachine {
    /// Writes a snapshot to its file, synced: openraft cuts the log after.
    async fn save(
        &self,
        meta: SnapshotMeta<NodeId, BasicNode>,
        image: Bytes,
    ) -> Result<(), StorageError> {
        let (io, dir) = (self.io.clone(), self.dir.clone());
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        on_blocking_pool(subject, move || {
            meta_snapshot::save(&*io, &dir, &meta, &image)
        })
        .await
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
        let _gate = self.gate.lock().await;
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
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let SnapshotData::Inline(image) = *snapshot else {
            return Err(state_machine_error(
                subject(),
                "the metadata group's snapshot is inline",
            ));
        };
        let (cluster, defs) = meta_snapshot::decode_image(image.clone())
            .map_err(|e| state_machine_error(subject(), e))?;
        let _gate = self.gate.lock().await;
        // The definitions first, then the file: a crash between the two
        // restarts from the older snapshot and the log, whose commands
        // the applier skips up to `index`, and the leader sends this
        // snapshot again.
        // Commands up to the definitions' own index are in them, even when
        // it is past the snapshot's (taken while a restart replayed).
        let index = meta.last_log_id.map_or(0, |l| l.index).max(defs.index);
        let applier = self.applier.clone();
        on_blocking_pool(subject(), move || applier.install(index, &defs.bytes)).await?;
        self.save(meta.clone(), image.clone()).await?;
        let mut s = self.state.write();
        s.applied = meta.last_log_id;
        s.membership = meta.last_membership.clone();
        s.meta = cluster;
        s.snapshot = Some((meta.clone(), image));
        tracing::info!(index, "installed the metadata group's snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self
            .state
            .read()
            .snapshot
            .clone()
            .map(|(meta, image)| Snapshot {
                meta,
                snapshot: Box::new(SnapshotData::Inline(image)),
            }))
    }
}

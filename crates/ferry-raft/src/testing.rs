//! Test support (feature `test-support`): a recording state machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::types::{Applied, Entry, LogId, SnapshotData, StorageError, TypeConfig};
use bytes::Bytes;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{BasicNode, EntryPayload, OptionalSend, StoredMembership};
use parking_lot::Mutex;
use std::sync::Arc;

/// The last snapshot built or installed, with its data.
type Stored = Option<(SnapshotMeta<u64, BasicNode>, SnapshotData)>;

/// A state machine that records the commands it applied (in order); its
/// snapshot holds them all. For tests of the log store and the links.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    applied: Option<LogId>,
    membership: StoredMembership<u64, BasicNode>,
    /// Every command applied, in order.
    pub commands: Arc<Mutex<Vec<Bytes>>>,
    /// Shared with the snapshot builders (clones) it hands out.
    snapshot: Arc<Mutex<Stored>>,
    built: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for Recorder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.built += 1;
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("snap-{}", self.built),
        };
        let mut buf = Vec::new();
        for c in self.commands.lock().iter() {
            buf.extend_from_slice(&(c.len() as u32).to_le_bytes());
            buf.extend_from_slice(c);
        }
        let data = SnapshotData(Bytes::from(buf));
        *self.snapshot.lock() = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for Recorder {
    type SnapshotBuilder = Recorder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, BasicNode>), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for e in entries {
            self.applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(b) => self.commands.lock().extend(b.commands),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m)
                }
            }
            out.push(Applied::default());
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
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let mut data = snapshot.0.clone();
        let mut commands = Vec::new();
        while data.len() >= 4 {
            let n = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
            bytes::Buf::advance(&mut data, 4);
            commands.push(data.split_to(n.min(data.len())));
        }
        *self.commands.lock() = commands;
        *self.snapshot.lock() = Some((meta.clone(), *snapshot));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.snapshot.lock().clone().map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(data),
        }))
    }
}

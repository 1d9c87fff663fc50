//! openraft's own storage conformance suite (`openraft::testing::Suite`)
//! against `RaftLog` on real files, with a minimal state machine (the suite
//! needs one; Ferry's state machines are tested where they live).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_log::{LogConfig, RoundPolicy, StdIo};
use ferry_queue::syncer::Syncer;
use ferry_raft::{Applied, Entry, LogId, RaftLog, SnapshotData, StorageError, TypeConfig};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{BasicNode, EntryPayload, OptionalSend, StoredMembership};
use parking_lot::Mutex;
use std::sync::Arc;

/// The last snapshot built or installed, with its data.
type Stored = Option<(SnapshotMeta<u64, BasicNode>, SnapshotData)>;

/// Counts what it applied; its snapshot is its applied pointer and membership.
#[derive(Debug, Default, Clone)]
struct Counter {
    applied: Option<LogId>,
    membership: StoredMembership<u64, BasicNode>,
    normal: u64,
    /// Shared with the snapshot builders (clones) it hands out.
    snapshot: Arc<Mutex<Stored>>,
    built: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for Counter {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.built += 1;
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("snap-{}", self.built),
        };
        let data = SnapshotData(bytes::Bytes::from(self.normal.to_le_bytes().to_vec()));
        *self.snapshot.lock() = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for Counter {
    type SnapshotBuilder = Counter;

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
                EntryPayload::Normal(b) => self.normal += b.commands.len() as u64,
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

/// Builds each store in a fresh directory, small segments so that purges
/// remove files, durability through a round executor of its own.
struct Builder {
    syncer: Arc<Syncer>,
}

impl StoreBuilder<TypeConfig, RaftLog, Counter, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, RaftLog, Counter), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        };
        let log =
            RaftLog::open(Arc::new(StdIo), dir.path(), cfg, self.syncer.clone()).expect("open");
        Ok((dir, log, Counter::default()))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let syncer = Syncer::start(RoundPolicy::per_file()).expect("syncer");
    Suite::test_all(Builder {
        syncer: syncer.clone(),
    })
    .expect("suite");
    syncer.stop();
}

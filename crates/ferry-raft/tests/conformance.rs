//! openraft's own storage conformance suite (`openraft::testing::Suite`)
//! against `RaftLog` on real files, with a minimal state machine (the suite
//! needs one: `ferry_raft::testing::Recorder`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_log::{LogConfig, RoundPolicy, StdIo};
use ferry_queue::syncer::Syncer;
use ferry_raft::testing::Recorder;
use ferry_raft::{RaftLog, StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use std::sync::Arc;

/// Builds each store in a fresh directory, small segments so that purges
/// remove files, durability through a round executor of its own.
struct Builder {
    syncer: Arc<Syncer>,
}

impl StoreBuilder<TypeConfig, RaftLog, Recorder, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, RaftLog, Recorder), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        };
        let log =
            RaftLog::open(Arc::new(StdIo), dir.path(), cfg, self.syncer.clone()).expect("open");
        Ok((dir, log, Recorder::default()))
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

//! What the log tests share: a group's log on the crash-simulating
//! storage with a durability round the test runs by hand.
#![allow(dead_code)]

use ferry_log::{LogConfig, RoundPolicy, SimIo};
use ferry_queue::syncer::Syncer;
use ferry_raft::RaftLog;
use std::path::Path;
use std::sync::Arc;

/// A new log at `/g` on simulated storage, its rounds run by `syncer`.
pub fn open_sim() -> (SimIo, Arc<Syncer>, RaftLog) {
    let io = SimIo::new();
    let syncer = Syncer::manual(RoundPolicy::per_file());
    let log = RaftLog::open(
        io.shared(),
        Path::new("/g"),
        LogConfig::default(),
        syncer.clone(),
    )
    .expect("open");
    (io, syncer, log)
}

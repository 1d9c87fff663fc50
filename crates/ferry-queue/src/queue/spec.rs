//! What a queue is declared as (`QueueSpec`) and the node-wide facilities
//! every queue uses (`QueueEnv`).

use super::args::QUORUM_DELIVERY_LIMIT;
use super::dead_letter::DeadLetterRouter;
use crate::clock::{Clock, ExpiryTimer, SystemClock};
use crate::syncer::Syncer;
use ferry_log::{FileIo, LogConfig};
use ferry_model::Table;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Weak};

/// The declared shape of a queue (what queue.declare compares).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueSpec {
    /// Queue name.
    #[serde(with = "arc_str")]
    pub name: Arc<str>,
    /// Survives a restart (with its persistent messages).
    pub durable: bool,
    /// Owning connection of an exclusive queue.
    #[serde(skip)]
    pub exclusive_owner: Option<u64>,
    /// Deleted when its last consumer goes away.
    pub auto_delete: bool,
    /// x-arguments.
    #[serde(with = "ferry_route::table_serde", default)]
    pub arguments: Table,
}

/// Shared facilities every queue uses.
#[derive(Debug, Clone)]
pub struct QueueEnv {
    /// File I/O seam.
    pub io: Arc<dyn FileIo>,
    /// Group-commit threads.
    pub syncer: Arc<Syncer>,
    /// Log settings.
    pub log: LogConfig,
    /// Bytes of message bodies all queues together may keep in memory.
    pub cache_limit: i64,
    /// Bytes currently cached, across queues.
    pub cache_used: Arc<AtomicI64>,
    /// Time, for message deadlines.
    pub clock: Arc<dyn Clock>,
    /// Where queues ask to be swept when their head's deadline passes.
    pub timer: Arc<ExpiryTimer>,
    /// Republishes dead letters: the queue's vhost.
    pub dead_letters: Option<Weak<dyn DeadLetterRouter>>,
    /// The delivery limit of quorum queues declared without
    /// `x-delivery-limit` (None = unlimited).
    pub quorum_delivery_limit: Option<u64>,
}

impl QueueEnv {
    /// An environment with the system clock, its own expiry timer and no
    /// dead-letter router.
    pub fn new(io: Arc<dyn FileIo>, syncer: Arc<Syncer>, log: LogConfig, cache_limit: i64) -> Self {
        QueueEnv {
            io,
            syncer,
            log,
            cache_limit,
            cache_used: Arc::new(AtomicI64::new(0)),
            clock: Arc::new(SystemClock),
            timer: ExpiryTimer::new(),
            dead_letters: None,
            quorum_delivery_limit: Some(QUORUM_DELIVERY_LIMIT),
        }
    }

    /// The same with another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

mod arc_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(d).map(Arc::from)
    }
}

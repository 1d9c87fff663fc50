//! A queue as a member of the node's durability round (`crate::syncer`):
//! its log and the confirms waiting for it (none for a replicated queue,
//! whose group's log is the round's member instead).

use super::inner::Inner;
use super::queue::Queue;
use crate::syncer::{LogOwner, SyncSchedule};
use parking_lot::Mutex;
use std::sync::Arc;

/// A queue as a member of the node's durability rounds (`crate::syncer`):
/// the round glue is shared with streams; completion releases the
/// confirms the durable index covers (the journal's waiters).
impl LogOwner for Queue {
    type Locked = Inner;

    fn locked(&self) -> &Mutex<Inner> {
        &self.inner
    }

    fn log_parts(inner: &mut Inner) -> Option<crate::syncer::LogParts<'_>> {
        if inner.deleted {
            return None;
        }
        inner.journal.log_parts()
    }

    fn sync_schedule(&self) -> &SyncSchedule {
        &self.sync_state
    }

    fn sync_lock(&self) -> &Mutex<()> {
        &self.sync_lock
    }

    fn syncer(&self) -> &crate::syncer::Syncer {
        &self.env.syncer
    }

    fn log_name(&self) -> crate::syncer::LogName<'_> {
        crate::syncer::LogName {
            kind: "queue",
            name: &self.spec.name,
            vhost: &self.vhost,
        }
    }

    fn strong(&self) -> Option<Arc<Self>> {
        self.self_ref.upgrade()
    }
}

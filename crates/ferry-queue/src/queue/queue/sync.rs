//! A queue as a member of the node's durability rounds (`crate::syncer`):
//! what `crate::syncer::LogOwner` needs of it (the round glue itself is
//! shared with streams); and replay at open.

use super::*;
use crate::syncer::LogOwner;

impl Queue {
    /// Joins the next durability round (see `SyncSchedule`).
    pub(super) fn schedule_sync(&self) {
        crate::syncer::schedule(self);
    }

    /// Flushes and fsyncs now, on this thread (shutdown, tests).
    pub fn sync_now(&self) {
        crate::syncer::sync_serial(self);
    }
}

/// A queue's share of a durability round: the shared glue; completion
/// releases the confirms the durable index covers.
impl LogOwner for Queue {
    crate::syncer::log_owner_fields!("queue");

    fn strong(&self) -> Option<Arc<Self>> {
        self.self_ref.lock().as_ref().and_then(|w| w.upgrade())
    }
}

pub(super) fn replay(log: &Log, levels: usize, track_body: bool) -> Result<QueueState> {
    // The one apply path: each record through `apply::replay_record`.
    let mut state = QueueState::for_replay(levels, track_body);
    for item in log.reader(log.first_index()) {
        let (pos, rec) = item?;
        let record = record::decode(rec.payload)?;
        crate::queue::apply::replay_record(&mut state, pos, &record);
    }
    state.end_replay();
    Ok(state)
}

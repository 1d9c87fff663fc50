//! A queue as a member of the node's durability rounds (`crate::syncer`):
//! joining the next round, its share of a round (flush and capture,
//! completion: confirms released by the durable index); and replay at open.

use super::*;
use crate::syncer::{complete_log, prepare_log, sync_alone, LogName};

impl Queue {
    /// Joins the next durability round (see `SyncSchedule`).
    pub(super) fn schedule_sync(&self) {
        self.sync_state.request(&self.env.syncer, || {
            let me = self.self_ref.lock().as_ref().and_then(|w| w.upgrade());
            me.map(|q| q as Arc<dyn SyncTask>)
        });
    }

    /// Flushes and fsyncs now, on this thread (shutdown, tests).
    pub fn sync_now(&self) {
        let _serial = self.sync_lock.lock();
        sync_alone(self);
    }

    fn log_name(&self) -> LogName<'_> {
        LogName {
            kind: "queue",
            name: &self.spec.name,
            vhost: &self.vhost,
        }
    }
}

impl SyncTask for Queue {
    fn schedule(&self) -> &SyncSchedule {
        &self.sync_state
    }

    fn prepare_sync(&self) -> Option<ferry_log::SyncJob> {
        let mut g = self.inner.lock();
        if g.deleted {
            return None;
        }
        prepare_log(&mut g.log, self.log_name())
    }

    fn complete_sync(&self, outcome: Option<ferry_log::SyncOutcome>) {
        let (ok, failed) = {
            let mut g = self.inner.lock();
            if g.deleted {
                // `delete` answered the waiters; the files may be gone.
                return;
            }
            let inner = &mut *g;
            complete_log(&mut inner.log, &mut inner.waiters, outcome, self.log_name())
        };
        for_each_sink_run(ok, |s, seqs| s.confirmed(seqs));
        for_each_sink_run(failed, |s, seqs| s.failed(seqs));
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

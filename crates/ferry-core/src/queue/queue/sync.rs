//! Group commit for one queue: scheduling on the Syncer, one fsync at a time,
//! confirms released by the durable index; and replay at open.

use super::*;
use crate::syncer::release_waiters;

impl Queue {
    /// Requests a group-commit sync of this queue's log (see
    /// `SyncSchedule`: at most one queued at a time).
    pub(super) fn schedule_sync(&self) {
        self.sync_state.request(&self.env.syncer, || {
            let me = self.self_ref.lock().as_ref().and_then(|w| w.upgrade());
            me.map(|q| q as Arc<dyn SyncTask>)
        });
    }

    /// Flushes and fsyncs now (shutdown, tests).
    pub fn sync_now(&self) {
        self.sync_once();
    }

    /// One group commit: flush and capture under the lock, fsync outside
    /// it, then release the waiters the fsync covered.
    pub(super) fn sync_once(&self) {
        let _serial = self.sync_lock.lock();
        let job = {
            let mut g = self.inner.lock();
            if g.deleted {
                return;
            }
            g.log.prepare_sync()
        };
        let outcome = match job {
            Ok(Some(job)) => Some(crate::metrics::FSYNC.time(|| job.run())),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(queue = %self.spec.name, error = %e, "sync failed");
                None
            }
        };
        let (ok, failed) = {
            let mut g = self.inner.lock();
            if let Some(o) = outcome {
                if let Some(e) = o.error() {
                    // The alarm: from here on this queue nacks publishes
                    // and refuses writes until the broker restarts.
                    tracing::error!(
                        queue = %self.spec.name, vhost = %self.vhost, error = %e,
                        "ALARM: fsync failed, queue log poisoned; pending and new \
                         publishes are nacked until restart"
                    );
                }
                g.log.complete_sync(o);
            }
            let poisoned = g.log.is_poisoned();
            let durable = g.log.durable_index();
            release_waiters(&mut g.waiters, poisoned, durable)
        };
        for_each_sink_run(ok, |s, seqs| s.confirmed(seqs));
        for_each_sink_run(failed, |s, seqs| s.failed(seqs));
    }
}

impl SyncTask for Queue {
    fn run_sync(&self) {
        self.sync_state.run(|| self.sync_once());
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

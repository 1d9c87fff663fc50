//! Group commit for one queue: scheduling on the Syncer, one fsync at a time,
//! confirms released by the durable index; and replay at open.

use super::*;

impl Queue {
    /// Requests a group-commit sync of this queue's log. A queue is handed
    /// to the Syncer at most once at a time; appends that land while its
    /// fsync runs mark it dirty, and the same thread syncs again, so one
    /// busy queue costs no extra thread wake-ups or lock contention.
    pub(super) fn schedule_sync(&self) {
        loop {
            let cur = self.sync_state.load(Ordering::Acquire);
            let next = match cur {
                SYNC_IDLE => SYNC_QUEUED,
                SYNC_RUNNING => SYNC_DIRTY,
                _ => return,
            };
            if self
                .sync_state
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            if next == SYNC_QUEUED {
                let me = self.self_ref.lock().as_ref().and_then(|w| w.upgrade());
                match me {
                    Some(q) => self.env.syncer.submit(q),
                    None => self.sync_state.store(SYNC_IDLE, Ordering::Release),
                }
            }
            return;
        }
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
            let mut ok = Vec::new();
            let mut failed = Vec::new();
            if g.log.is_poisoned() {
                failed.extend(g.waiters.drain(..).map(|(_, t)| t));
            } else if let Some(durable) = g.log.durable_index() {
                while g.waiters.front().is_some_and(|(i, _)| *i <= durable) {
                    if let Some((_, t)) = g.waiters.pop_front() {
                        ok.push(t);
                    }
                }
            }
            (ok, failed)
        };
        for_each_sink_run(ok, |s, seqs| s.confirmed(seqs));
        for_each_sink_run(failed, |s, seqs| s.failed(seqs));
    }
}

impl SyncTask for Queue {
    fn run_sync(&self) {
        self.sync_state.store(SYNC_RUNNING, Ordering::Release);
        loop {
            self.sync_once();
            match self.sync_state.compare_exchange(
                SYNC_RUNNING,
                SYNC_IDLE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                // Dirtied while we synced: go again on this thread.
                Err(_) => self.sync_state.store(SYNC_RUNNING, Ordering::Release),
            }
        }
    }
}

pub(super) fn replay(log: &Log, levels: usize, track_body: bool) -> Result<QueueState> {
    let mut r = Replay::new(levels, track_body);
    for item in log.reader(log.first_index()) {
        let (pos, rec) = item?;
        match record::decode(rec.payload)? {
            Record::Enqueue {
                msg,
                expires_at,
                priority,
                not_before,
            } => r.enqueue_held(pos, &msg, expires_at, priority, not_before),
            Record::Retry(items) => r.retry(&items),
            Record::Settle(ids) | Record::Drop { ids, .. } => r.settle(&ids),
            Record::Requeue(ids) => r.requeue(&ids),
            Record::Purge { upto, keep } => r.purge(upto, &keep),
        }
    }
    Ok(r.finish())
}

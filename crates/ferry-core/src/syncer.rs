//! Group commit: a small pool of threads that fsync logs on request.
//!
//! A queue asks for a sync after it appended something that must become
//! durable. While one fsync runs, more appends land in the same log; the
//! next sync covers all of them, so many publishers share one fsync.
//! fsync is I/O-bound, so a few threads serve many queues.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Something that can make its pending writes durable.
pub trait SyncTask: Send + Sync {
    /// Runs one sync (flush + fsync + completion of waiters).
    fn run_sync(&self);
}

/// What `submit` does with a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Mode {
    /// Queued for the pool.
    #[default]
    Running,
    /// After `stop`: run on a fresh thread.
    Stopped,
    /// Tests only: run on the submitting thread, for deterministic
    /// confirms. A caller that holds the queue lock (settle counting,
    /// every 4096 settles) would deadlock, so tests that use it stay
    /// below that.
    #[cfg(test)]
    Inline,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<(VecDeque<Arc<dyn SyncTask>>, Mode)>,
    cv: Condvar,
}

/// The sync thread pool.
pub struct Syncer {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer").finish_non_exhaustive()
    }
}

impl Syncer {
    /// Starts `threads` sync threads.
    pub fn start(threads: usize) -> std::io::Result<Arc<Self>> {
        let shared = Arc::new(Shared::default());
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let s = shared.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("ferry-sync-{i}"))
                    .spawn(move || worker(&s))?,
            );
        }
        Ok(Arc::new(Self {
            shared,
            threads: Mutex::new(handles),
        }))
    }

    /// Queues a task; the caller makes sure a task is queued at most once
    /// at a time (see `Queue::schedule_sync`).
    ///
    /// Callers may hold their queue's lock (settle counting does), so a
    /// task never runs on the submitting thread. After `stop` each task
    /// gets a short-lived thread of its own: nothing the shutdown promised
    /// depends on it (`Broker::shutdown` syncs every queue itself before
    /// stopping), but a confirm still waiting is released rather than
    /// forgotten, and the submitter neither blocks nor deadlocks.
    pub fn submit(&self, task: Arc<dyn SyncTask>) {
        let mut q = self.shared.queue.lock();
        match q.1 {
            Mode::Running => {
                q.0.push_back(task);
                drop(q);
                self.shared.cv.notify_one();
            }
            Mode::Stopped => {
                drop(q);
                run_detached(task);
            }
            #[cfg(test)]
            Mode::Inline => {
                drop(q);
                task.run_sync();
            }
        }
    }

    /// A syncer without threads that runs each task on the submitting
    /// thread (see `Mode::Inline`).
    #[cfg(test)]
    pub(crate) fn inline() -> Arc<Self> {
        let shared = Arc::new(Shared::default());
        shared.queue.lock().1 = Mode::Inline;
        Arc::new(Self {
            shared,
            threads: Mutex::new(Vec::new()),
        })
    }

    /// Finishes queued work and stops the threads.
    pub fn stop(&self) {
        {
            let mut q = self.shared.queue.lock();
            if q.1 == Mode::Running {
                q.1 = Mode::Stopped;
            }
        }
        self.shared.cv.notify_all();
        let handles: Vec<_> = std::mem::take(&mut *self.threads.lock());
        for h in handles {
            let _ = h.join();
        }
    }
}

fn worker(s: &Shared) {
    loop {
        let task = {
            let mut q = s.queue.lock();
            loop {
                if let Some(t) = q.0.pop_front() {
                    break Some(t);
                }
                if q.1 != Mode::Running {
                    break None;
                }
                s.cv.wait(&mut q);
            }
        };
        match task {
            Some(t) => t.run_sync(),
            None => return,
        }
    }
}

/// Runs a task submitted after `stop` on a thread of its own.
fn run_detached(task: Arc<dyn SyncTask>) {
    let spawned = std::thread::Builder::new()
        .name("ferry-sync-late".into())
        .spawn(move || task.run_sync());
    if let Err(e) = spawned {
        // The task is dropped: its queue stays marked as queued, so its
        // late confirms never come; the connection closes with shutdown.
        tracing::error!(error = %e, "cannot start a thread for a late sync");
    }
}

/// Where one log (a queue's, a stream's) stands in the group-commit
/// hand-off. A log is handed to the Syncer at most once at a time; appends
/// that land while its fsync runs mark it dirty, and the same thread syncs
/// again, so one busy log costs no extra wake-ups or lock contention.
#[derive(Debug, Default)]
pub(crate) struct SyncSchedule(AtomicU8);

const SYNC_IDLE: u8 = 0;
const SYNC_QUEUED: u8 = 1;
const SYNC_RUNNING: u8 = 2;
const SYNC_DIRTY: u8 = 3;

impl SyncSchedule {
    /// Asks for a sync: submits `task()` to `syncer` if none is queued or
    /// running; a running one is told to go again instead. `task` gives
    /// None once its owner is gone (nothing left to sync).
    pub(crate) fn request(
        &self,
        syncer: &Syncer,
        task: impl FnOnce() -> Option<Arc<dyn SyncTask>>,
    ) {
        loop {
            let cur = self.0.load(Ordering::Acquire);
            let next = match cur {
                SYNC_IDLE => SYNC_QUEUED,
                SYNC_RUNNING => SYNC_DIRTY,
                _ => return,
            };
            if self
                .0
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            if next == SYNC_QUEUED {
                match task() {
                    Some(t) => syncer.submit(t),
                    None => self.0.store(SYNC_IDLE, Ordering::Release),
                }
            }
            return;
        }
    }

    /// Runs `sync_once` (from `SyncTask::run_sync`) until no request came
    /// in while it ran.
    pub(crate) fn run(&self, mut sync_once: impl FnMut()) {
        self.0.store(SYNC_RUNNING, Ordering::Release);
        loop {
            sync_once();
            match self.0.compare_exchange(
                SYNC_RUNNING,
                SYNC_IDLE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                // Dirtied while we synced: go again on this thread.
                Err(_) => self.0.store(SYNC_RUNNING, Ordering::Release),
            }
        }
    }
}

/// After a sync: takes the confirm waiters (log index, token) it settled,
/// as (confirmed, failed). A poisoned log fails every waiter; otherwise
/// those up to the durable index are confirmed and the rest keep waiting.
pub(crate) fn release_waiters<T>(
    waiters: &mut VecDeque<(u64, T)>,
    poisoned: bool,
    durable: Option<u64>,
) -> (Vec<T>, Vec<T>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    if poisoned {
        failed.extend(waiters.drain(..).map(|(_, t)| t));
    } else if let Some(durable) = durable {
        while waiters.front().is_some_and(|(i, _)| *i <= durable) {
            if let Some((_, t)) = waiters.pop_front() {
                ok.push(t);
            }
        }
    }
    (ok, failed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A task that needs the lock its submitter holds, like a queue whose
    /// settle counting schedules a sync under `Queue.inner`.
    struct NeedsLock {
        lock: Arc<Mutex<()>>,
        ran: mpsc::Sender<()>,
    }

    impl SyncTask for NeedsLock {
        fn run_sync(&self) {
            let _g = self.lock.lock();
            let _ = self.ran.send(());
        }
    }

    #[test]
    fn a_submit_after_stop_does_not_run_under_the_callers_lock() {
        let syncer = Syncer::start(1).unwrap();
        syncer.stop();
        let lock = Arc::new(Mutex::new(()));
        let (ran_tx, ran_rx) = mpsc::channel();
        let (submitted_tx, submitted_rx) = mpsc::channel();
        let task = Arc::new(NeedsLock {
            lock: lock.clone(),
            ran: ran_tx,
        });
        let caller = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                let _held = lock.lock();
                syncer.submit(task);
                let _ = submitted_tx.send(());
                // Still holding the lock: the task cannot have run yet.
            })
        };
        // Before the fix this thread deadlocked inside submit.
        assert!(
            submitted_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "submit after stop blocked its caller"
        );
        caller.join().unwrap();
        assert!(
            ran_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the late task never ran"
        );
    }

    #[test]
    fn stop_runs_what_was_queued_before_it() {
        let syncer = Syncer::start(1).unwrap();
        let lock = Arc::new(Mutex::new(()));
        let (ran_tx, ran_rx) = mpsc::channel();
        let held = lock.lock();
        for _ in 0..3 {
            syncer.submit(Arc::new(NeedsLock {
                lock: lock.clone(),
                ran: ran_tx.clone(),
            }));
        }
        drop(held);
        syncer.stop();
        assert_eq!(ran_rx.try_iter().count(), 3);
    }
}

//! Group commit: a small pool of threads that fsync logs on request.
//!
//! A queue asks for a sync after it appended something that must become
//! durable. While one fsync runs, more appends land in the same log; the
//! next sync covers all of them, so many publishers share one fsync.
//! fsync is I/O-bound, so a few threads serve many queues.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Something that can make its pending writes durable.
pub trait SyncTask: Send + Sync {
    /// Runs one sync (flush + fsync + completion of waiters).
    fn run_sync(&self);
}

#[derive(Default)]
struct Shared {
    queue: Mutex<(VecDeque<Arc<dyn SyncTask>>, bool)>,
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
    pub fn submit(&self, task: Arc<dyn SyncTask>) {
        let mut q = self.shared.queue.lock();
        if q.1 {
            drop(q);
            // Shutting down: sync inline so nothing waits forever.
            task.run_sync();
            return;
        }
        q.0.push_back(task);
        drop(q);
        self.shared.cv.notify_one();
    }

    /// Finishes queued work and stops the threads.
    pub fn stop(&self) {
        self.shared.queue.lock().1 = true;
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
                if q.1 {
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

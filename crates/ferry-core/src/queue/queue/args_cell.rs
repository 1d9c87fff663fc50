//! Where a queue keeps the arguments it acts on. They change only when a
//! policy does, always with the queue's `inner` lock held, so a reader
//! holding that lock sees one consistent set; a flag keeps plain queues
//! (no arguments, no policy) off the lock entirely.

use crate::queue::QueueArgs;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub(super) struct ArgsCell {
    set: AtomicBool,
    args: RwLock<Option<Arc<QueueArgs>>>,
}

impl ArgsCell {
    pub(super) fn new(args: Option<Arc<QueueArgs>>) -> Self {
        ArgsCell {
            set: AtomicBool::new(args.is_some()),
            args: RwLock::new(args),
        }
    }

    #[inline]
    pub(super) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    #[inline]
    pub(super) fn get(&self) -> Option<Arc<QueueArgs>> {
        if !self.is_set() {
            return None;
        }
        self.args.read().clone()
    }

    pub(super) fn replace(&self, args: Option<Arc<QueueArgs>>) {
        let mut g = self.args.write();
        self.set.store(args.is_some(), Ordering::Release);
        *g = args;
    }
}

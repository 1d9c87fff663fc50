//! When the broker's sweep must look at a queue again, published without
//! the queue's lock: the head's deadline or the next waiting message's due
//! time (TTL expiry, retries, a delayed exchange's holds), and the idle
//! deadline of `x-expires` (when the queue expires unused). Both go to the
//! broker's `ExpiryTimer`; the sweep reads them back lock-free.

use super::state::QueueState;
use crate::clock::{Clock, ExpiryTimer, NEVER};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A queue's two deadlines and the clock and timer they use.
#[derive(Debug)]
pub(super) struct Deadlines {
    /// Deadline of the head (`NEVER` if none): when the sweep must look.
    next_expiry: AtomicU64,
    /// When the queue expires unused (`x-expires`; `NEVER` while it has
    /// consumers or has no such argument).
    idle: AtomicU64,
    clock: Arc<dyn Clock>,
    timer: Arc<ExpiryTimer>,
}

impl Deadlines {
    /// The deadlines of a queue just opened with `state` (replayed
    /// retries resume their wait) and `expires` (`x-expires` counts from
    /// the (re)start, as in RabbitMQ: a queue has no consumers when it
    /// opens); both are scheduled.
    pub(super) fn open(
        state: &QueueState,
        expires: Option<u64>,
        clock: Arc<dyn Clock>,
        timer: Arc<ExpiryTimer>,
    ) -> Self {
        // The head's deadline or the next waiting message's time.
        let head = match (state.head_deadline(), state.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(d) = head {
            timer.schedule(d);
        }
        let idle = match expires {
            Some(ms) => {
                let at = clock.now_ms().saturating_add(ms);
                timer.schedule(at);
                at
            }
            None => NEVER,
        };
        Deadlines {
            next_expiry: AtomicU64::new(head.unwrap_or(NEVER)),
            idle: AtomicU64::new(idle),
            clock,
            timer,
        }
    }

    /// Publishes the head's deadline (or the next waiting message's
    /// time, if sooner) of `state` to the sweep.
    #[inline]
    pub(super) fn note(&self, state: &QueueState) {
        if state.has_meta() || state.has_waiting() || self.next_expiry() != NEVER {
            self.note_slow(state);
        }
    }

    #[cold]
    #[inline(never)]
    fn note_slow(&self, state: &QueueState) {
        let head = state.head_deadline().unwrap_or(NEVER);
        let d = head.min(state.next_due().unwrap_or(NEVER));
        self.next_expiry.store(d, Ordering::Relaxed);
        if d != NEVER {
            self.timer.schedule(d);
        }
    }

    /// The head's deadline (`NEVER` if none).
    #[inline]
    pub(super) fn next_expiry(&self) -> u64 {
        self.next_expiry.load(Ordering::Relaxed)
    }

    /// The queue was used: with `x-expires` of `expires` ms, its idle
    /// deadline starts again from now.
    #[inline]
    pub(super) fn touch(&self, expires: Option<u64>) {
        if let Some(ms) = expires {
            self.touch_slow(ms);
        }
    }

    #[cold]
    #[inline(never)]
    fn touch_slow(&self, ms: u64) {
        let at = self.clock.now_ms().saturating_add(ms);
        self.idle.store(at, Ordering::Relaxed);
        self.timer.schedule(at);
    }

    /// The queue does not expire unused (it has consumers, or no
    /// `x-expires` any more).
    #[inline]
    pub(super) fn clear_idle(&self) {
        self.idle.store(NEVER, Ordering::Relaxed);
    }

    /// When the queue expires unused (`NEVER` if it does not).
    #[inline]
    pub(super) fn idle(&self) -> u64 {
        self.idle.load(Ordering::Relaxed)
    }
}

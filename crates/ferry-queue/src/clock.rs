//! Time, as the core sees it: a [`Clock`] handed in through `QueueEnv`, and
//! the [`ExpiryTimer`] that tells the front end when the next message
//! deadline falls due.
//!
//! The core never reads the system clock anywhere else: message deadlines
//! are computed from `Clock::now_ms` at publish and written into the
//! Enqueue record (absolute milliseconds since the Unix epoch), so replay
//! and replicas see the same facts, and tests drive time with a
//! [`ManualClock`].
//!
//! Who runs expiry: the core owns no timer thread. Queues report their head
//! deadline to the shared [`ExpiryTimer`]; the server runs one task that
//! sleeps until the earliest reported deadline (woken early when a sooner
//! one appears) and then calls `Broker::expire_due`. One sleeper for all
//! queues costs nothing while no queue has a deadline, and expires at the
//! deadline instead of on a polling tick.

use parking_lot::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Wall-clock milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in milliseconds since 1970-01-01 UTC.
    fn now_ms(&self) -> u64;
}

/// The real clock (production).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn new(ms: u64) -> Arc<Self> {
        Arc::new(ManualClock(AtomicU64::new(ms)))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the time.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// No deadline.
pub const NEVER: u64 = u64::MAX;

type Waker = Arc<dyn Fn() + Send + Sync>;

/// The earliest message deadline any queue has asked to be woken for,
/// shared by every queue of a broker. The front end's expiry task reads it
/// and installs a waker that is called when a sooner deadline appears.
#[derive(Default)]
pub struct ExpiryTimer {
    next: AtomicU64,
    waker: RwLock<Option<Waker>>,
}

impl std::fmt::Debug for ExpiryTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpiryTimer")
            .field("next", &self.next.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ExpiryTimer {
    /// A timer with nothing scheduled.
    pub fn new() -> Arc<Self> {
        Arc::new(ExpiryTimer {
            next: AtomicU64::new(NEVER),
            waker: RwLock::new(None),
        })
    }

    /// Asks for a sweep at `at` (ms since the epoch); wakes the sweeper if
    /// that is sooner than anything scheduled.
    pub fn schedule(&self, at: u64) {
        if at < self.next.fetch_min(at, Ordering::AcqRel) {
            if let Some(w) = self.waker.read().as_ref() {
                w();
            }
        }
    }

    /// Notes `at` without waking anybody (the sweeper itself).
    pub fn note(&self, at: u64) {
        self.next.fetch_min(at, Ordering::AcqRel);
    }

    /// The earliest scheduled deadline (`NEVER` if none).
    pub fn next(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// Forgets what was scheduled (the sweeper, before a pass).
    pub fn reset(&self) {
        self.next.store(NEVER, Ordering::Release);
    }

    /// Installs the function that wakes the sweeper.
    pub fn set_waker(&self, w: impl Fn() + Send + Sync + 'static) {
        *self.waker.write() = Some(Arc::new(w));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn timer_wakes_only_for_a_sooner_deadline() {
        let t = ExpiryTimer::new();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        t.set_waker(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        t.schedule(100);
        t.schedule(200);
        t.schedule(100);
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        t.schedule(50);
        assert_eq!((woken.load(Ordering::SeqCst), t.next()), (2, 50));
        t.reset();
        t.note(70);
        assert_eq!((woken.load(Ordering::SeqCst), t.next()), (2, 70));
    }

    #[test]
    fn manual_clock_moves_when_told() {
        let c = ManualClock::new(5);
        c.advance(10);
        assert_eq!(c.now_ms(), 15);
        c.set(1);
        assert_eq!(c.now_ms(), 1);
        assert!(SystemClock.now_ms() > 1_600_000_000_000);
    }
}

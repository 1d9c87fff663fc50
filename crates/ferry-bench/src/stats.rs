//! What producers and consumers share with the orchestrator: totals as
//! atomics (added once per socket read or write batch, not per message),
//! the stop signal, and the first fatal error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;

use crate::error::BenchError;

/// Run-wide counters and signals.
#[derive(Debug)]
pub struct Shared {
    /// Messages written to sockets.
    pub sent: AtomicU64,
    /// Publisher confirms (basic.ack) received, counted per message.
    pub confirmed: AtomicU64,
    /// Publisher nacks received, counted per message.
    pub nacked: AtomicU64,
    /// basic.ack and basic.nack frames received by producers (one
    /// `multiple` frame settles many messages).
    pub confirm_frames: AtomicU64,
    /// Deliveries received completely (method, header, body).
    pub received: AtomicU64,
    /// Producers that published their whole --count (and got its confirms).
    pub producers_done: AtomicU64,
    stop_tx: watch::Sender<bool>,
    fatal: Mutex<Option<BenchError>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            sent: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            confirm_frames: AtomicU64::new(0),
            received: AtomicU64::new(0),
            producers_done: AtomicU64::new(0),
            stop_tx: watch::channel(false).0,
            fatal: Mutex::new(None),
        }
    }
}

/// A point-in-time copy of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// See [`Shared::sent`].
    pub sent: u64,
    /// See [`Shared::confirmed`].
    pub confirmed: u64,
    /// See [`Shared::nacked`].
    pub nacked: u64,
    /// See [`Shared::confirm_frames`].
    pub confirm_frames: u64,
    /// See [`Shared::received`].
    pub received: u64,
}

impl Totals {
    /// Anything happened between `earlier` and `self`.
    #[must_use]
    pub fn moved_since(&self, earlier: &Totals) -> bool {
        self != earlier
    }
}

impl Shared {
    /// Reads every counter.
    #[must_use]
    pub fn totals(&self) -> Totals {
        Totals {
            sent: self.sent.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            nacked: self.nacked.load(Ordering::Relaxed),
            confirm_frames: self.confirm_frames.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
        }
    }

    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Tells every task to stop.
    pub fn stop(&self) {
        self.stop_tx.send_replace(true);
    }

    /// Whether stop was called.
    #[must_use]
    pub fn stopping(&self) -> bool {
        *self.stop_tx.borrow()
    }

    /// Resolves once stop is called (at once if it already was).
    pub async fn stopped(&self) {
        let mut rx = self.stop_tx.subscribe();
        // The sender lives in self, so wait_for cannot fail.
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Records the first fatal error and stops the run.
    pub fn fail(&self, err: BenchError) {
        if let Ok(mut f) = self.fatal.lock() {
            if f.is_none() {
                *f = Some(err);
            }
        }
        self.stop();
    }

    /// Takes the fatal error, if any.
    pub fn take_fatal(&self) -> Option<BenchError> {
        self.fatal.lock().ok().and_then(|mut f| f.take())
    }

    /// Whether a fatal error was recorded.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.fatal.lock().map(|f| f.is_some()).unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn fail_keeps_the_first_error_and_stops() {
        let s = Shared::default();
        assert!(!s.stopping());
        Shared::add(&s.sent, 3);
        s.fail(BenchError::Timeout("first".into()));
        s.fail(BenchError::Timeout("second".into()));
        assert!(s.stopping() && s.failed());
        s.stopped().await;
        assert_eq!(s.totals().sent, 3);
        assert!(s.take_fatal().unwrap().to_string().contains("first"));
    }
}

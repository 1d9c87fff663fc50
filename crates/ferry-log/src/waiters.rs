//! Callbacks waiting for an index to become durable.

use crate::error::LogError;
use std::collections::VecDeque;

/// Called once: `Ok` when the record is durable, `Err` if the log was
/// poisoned or the record truncated first. Runs while the caller holds the
/// log, so it must not call back into it.
pub type DurableCallback = Box<dyn FnOnce(Result<(), LogError>) + Send>;

/// Sorted by index; appends arrive in order, so pushes are O(1).
#[derive(Default)]
pub(crate) struct Waiters {
    queue: VecDeque<(u64, DurableCallback)>,
}

impl std::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters")
            .field("len", &self.queue.len())
            .finish()
    }
}

impl Waiters {
    pub(crate) fn push(&mut self, index: u64, cb: DurableCallback) {
        if self.queue.back().is_none_or(|(i, _)| *i <= index) {
            self.queue.push_back((index, cb));
        } else {
            let at = self.queue.partition_point(|(i, _)| *i <= index);
            self.queue.insert(at, (index, cb));
        }
    }

    /// Fires every waiter for an index below `next`.
    pub(crate) fn fire_below(&mut self, next: u64) {
        while self.queue.front().is_some_and(|(i, _)| *i < next) {
            if let Some((_, cb)) = self.queue.pop_front() {
                cb(Ok(()));
            }
        }
    }

    /// Fails every waiter for `index` or later with `Truncated`.
    pub(crate) fn fail_from(&mut self, index: u64) {
        let at = self.queue.partition_point(|(i, _)| *i < index);
        for (i, cb) in self.queue.drain(at..) {
            cb(Err(LogError::Truncated { index: i }));
        }
    }

    /// Fails everything with `Poisoned`.
    pub(crate) fn fail_all(&mut self) {
        for (_, cb) in self.queue.drain(..) {
            cb(Err(LogError::Poisoned));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<(u64, bool)>>>;

    fn cb(seen: &Seen, i: u64) -> DurableCallback {
        let seen = seen.clone();
        Box::new(move |r| {
            if let Ok(mut v) = seen.lock() {
                v.push((i, r.is_ok()));
            }
        })
    }

    #[test]
    fn fires_in_order_and_fails_the_rest() {
        let seen: Seen = Arc::default();
        let mut w = Waiters::default();
        for i in [1, 3, 2, 5, 4, 9] {
            w.push(i, cb(&seen, i));
        }
        w.fire_below(3);
        w.fail_from(5);
        assert_eq!(w.len(), 2);
        w.fail_all();
        let v = seen.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(
            v,
            vec![
                (1, true),
                (2, true),
                (5, false),
                (9, false),
                (3, false),
                (4, false)
            ]
        );
    }
}

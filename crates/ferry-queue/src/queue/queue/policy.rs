//! A policy change reaching a running queue: the arguments it acts on are
//! replaced at once and their effects run as RabbitMQ's
//! `process_args_policy` does (a lower length limit drops the head, the
//! `x-expires` countdown restarts, a new dead-letter target applies to
//! the next dead letter). Deadlines already written into Enqueue records
//! stay: a new message TTL applies to messages published from now on. A
//! new `max-length-bytes` counts the bodies already queued, exactly: the
//! in-memory and checked-out ones are read back once each, a spilled
//! backlog is read sequentially once (see `Queue::spilled_body`).

use super::*;
use crate::queue::state::Spill;

impl Queue {
    /// Whether the queue has arguments to act on (fast path for plain
    /// queues: one atomic load, no lock).
    #[inline]
    pub(super) fn has_args(&self) -> bool {
        self.has_args.load(Ordering::Acquire)
    }

    /// The arguments acting now (declared ones combined with policies).
    /// Takes the queue's lock: the queue's own code reads
    /// `Inner::args` through the guard it holds instead.
    pub fn args(&self) -> Option<Arc<QueueArgs>> {
        self.inner.lock().args.clone()
    }

    /// Reads the queue's state (tests, here and in ferry-broker).
    #[cfg(any(test, feature = "test-support"))]
    pub fn with_state<T>(&self, f: impl FnOnce(&crate::queue::state::QueueState) -> T) -> T {
        f(&self.inner.lock().state)
    }

    /// The body bytes of a spilled range (records of other levels
    /// skipped): one sequential read of every record in the range, so
    /// costs I/O proportional to the backlog beyond the window. Runs once
    /// per queue, when a policy first gives it `max-length-bytes`; policy
    /// changes run on the blocking pool, never on an async worker.
    fn spilled_body(&self, inner: &mut Inner, level: usize, sp: Spill) -> Result<u64> {
        let levels = inner.state.levels();
        let mut body = 0u64;
        for item in inner.log.reader(sp.from) {
            let (_, rec) = item?;
            if rec.index >= sp.to {
                break;
            }
            if let Record::Enqueue {
                msg,
                priority,
                not_before: None,
                ..
            } = record::decode(rec.payload)?
            {
                let p = usize::from(priority.unwrap_or(0));
                if levels > 1 && p.min(levels - 1) != level {
                    continue;
                }
                body += u64::try_from(msg.body.len()).unwrap_or(u64::MAX);
            }
        }
        Ok(body)
    }

    /// Acts on new effective arguments (see `policy::effective_queue_args`).
    /// What only a declaration decides (priority levels, the queue type)
    /// comes from the same table and does not change.
    pub fn apply_arguments(&self, effective: &Table) {
        let next = QueueArgs::parse(effective, self.env.quorum_delivery_limit);
        let mut letters = Vec::new();
        {
            let mut g = self.inner.lock();
            if g.deleted {
                return;
            }
            let unchanged = match g.args.as_deref() {
                Some(c) => *c == next,
                None => next.is_plain(),
            };
            if unchanged {
                return;
            }
            let inner = &mut *g;
            if next.max_length_bytes.is_some() {
                // Size what is already in memory (one read each, at most
                // the window's worth, once).
                for e in inner.state.track_bodies() {
                    match self.load(inner, &e) {
                        Ok(m) => {
                            let body = u32::try_from(m.body.len()).unwrap_or(u32::MAX);
                            inner.state.note_body(e.id, body);
                        }
                        Err(err) => tracing::warn!(
                            queue = %self.spec.name, error = %err,
                            "cannot read a message to count its bytes"
                        ),
                    }
                }
                for (level, sp) in inner.state.spilled_ranges() {
                    match self.spilled_body(inner, level, sp) {
                        Ok(body) => inner.state.note_spilled_body(level, body),
                        Err(err) => tracing::warn!(
                            queue = %self.spec.name, error = %err,
                            "cannot read spilled messages to count their bytes"
                        ),
                    }
                }
            }
            let expires = next.expires;
            let next = (!next.is_plain()).then(|| Arc::new(next));
            self.has_args.store(next.is_some(), Ordering::Release);
            inner.args = next.clone();
            match expires {
                Some(ms) if inner.consumers.is_empty() => self.touch_slow(ms),
                Some(_) => {}
                None => self.idle_deadline.store(NEVER, Ordering::Relaxed),
            }
            if let Some(a) = next.as_deref() {
                if a.limited() {
                    self.drop_over_limit(inner, a, &mut letters);
                }
            }
            if inner.state.has_meta() || inner.state.has_spill() {
                let now = self.env.clock.now_ms();
                // A failure is logged; the expired head is never delivered.
                let _ = self.expire_locked(inner, now, &mut letters);
            }
            self.dispatch_locked(inner, &mut letters, None);
            self.note_expiry(inner);
        }
        self.route_letters(letters);
    }
}

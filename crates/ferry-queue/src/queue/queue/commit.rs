//! Decide → log → apply → execute: the one way a running queue changes.
//!
//! Each operation first *decides* against the current state without
//! changing it (which ids are affected, the facts: time from the clock,
//! reasons), then [`Queue::commit`] encodes the command, appends its record
//! and runs [`apply`] — the function restart replay runs for the same
//! record — and [`Queue::execute`] carries out the leader's part of the
//! effects under `inner` (freeing cached bodies, reading the bodies of
//! dead letters before segment cleanup can remove them). What calls into
//! other components (routing dead letters, confirms) runs after `inner` is
//! released; dispatch to consumers is a leader-local step (see
//! `dispatch`). The state never changes before its record is appended: a
//! failed append leaves it as it was.
//!
//! Also here: the operations that are nothing but such a command (ack,
//! requeue, reject, purge) and the log's segment cleanup they drive.

use super::*;
use crate::queue::apply::{apply, ApplyConfig};
use crate::queue::command::Command;
use crate::queue::effects::Effects;
use std::collections::HashSet;

impl Queue {
    /// What `apply` must know of this queue's arguments.
    pub(super) fn apply_config(inner: &Inner) -> ApplyConfig {
        ApplyConfig {
            dead_letters: Self::has_dlx(inner),
        }
    }

    /// Logs `cmd` and applies it. Returns where its record is and its
    /// effects; on an append error nothing changed.
    pub(super) fn commit(
        &self,
        inner: &mut Inner,
        cmd: &Command,
    ) -> Result<(ferry_log::RecordPos, Effects)> {
        inner.scratch.clear();
        cmd.encode(&mut inner.scratch)?;
        let pos = inner.log.append(&inner.scratch)?;
        if inner.scratch.capacity() > SCRATCH_KEEP {
            // One huge message must not pin its size in memory forever.
            inner.scratch = Vec::new();
        }
        let cfg = Self::apply_config(inner);
        let fx = apply(&mut inner.state, pos, cmd, cfg);
        Ok((pos, fx))
    }

    /// `commit` of a command that may name no message (then nothing is
    /// logged), followed by `execute`.
    pub(super) fn commit_ids(
        &self,
        inner: &mut Inner,
        cmd: &Command,
        letters: &mut Vec<DeadLetter>,
    ) -> Result<Effects> {
        if cmd.is_empty() {
            return Ok(Effects::default());
        }
        let (_, mut fx) = self.commit(inner, cmd)?;
        self.execute(inner, &mut fx, letters);
        Ok(fx)
    }

    /// `commit_ids` for the queue's own housekeeping (expiry, overflow),
    /// which has nobody to report a failure to.
    pub(super) fn commit_logged(
        &self,
        inner: &mut Inner,
        cmd: &Command,
        letters: &mut Vec<DeadLetter>,
    ) -> Effects {
        self.commit_ids(inner, cmd, letters).unwrap_or_else(|e| {
            tracing::error!(queue = %self.spec.name, error = %e, "cannot log a queue command");
            Effects::default()
        })
    }

    /// The leader's part of `fx` under `inner`: the body cache gets freed
    /// bytes back, dead letters are built (bodies read while their
    /// records surely exist), removals count towards segment cleanup.
    /// Dispatch and the sweep's deadline are the caller's (they depend on
    /// the whole operation, not one command).
    pub(super) fn execute(
        &self,
        inner: &mut Inner,
        fx: &mut Effects,
        letters: &mut Vec<DeadLetter>,
    ) {
        if fx.freed_cache > 0 {
            let freed = i64::try_from(fx.freed_cache).unwrap_or(i64::MAX);
            inner.cached_bytes -= freed;
            self.env.cache_used.fetch_sub(freed, Ordering::Relaxed);
        }
        for (e, reason) in std::mem::take(&mut fx.dead_letters) {
            match self.load(inner, &e) {
                Ok(m) => letters.extend(self.letter(inner, m, reason)),
                Err(err) => tracing::error!(
                    queue = %self.spec.name, error = %err,
                    "cannot read a message to dead-letter it; dropped"
                ),
            }
        }
        if fx.removed > 0 {
            self.count_settles(inner, fx.removed);
        }
    }

    /// Of `ids`, the checked-out ones, each once, in the given order: what
    /// an ack, requeue or reject acts on.
    pub(super) fn checked_out(inner: &Inner, ids: &[u64]) -> Vec<u64> {
        let out = ids.iter().copied().filter(|id| inner.state.is_unacked(*id));
        if ids.windows(2).all(|w| w[0] < w[1]) {
            // Strictly ascending (an ack multiple): no repeats.
            return out.collect();
        }
        let mut seen = HashSet::with_capacity(ids.len());
        out.filter(|id| seen.insert(*id)).collect()
    }

    fn count_settles(&self, inner: &mut Inner, n: usize) {
        inner.settles_since_gc += n;
        if inner.settles_since_gc >= 4096 {
            inner.settles_since_gc = 0;
            self.gc_segments(inner);
            // The log removes only fsynced segments; a queue that never
            // needs a sync for confirms (transient traffic) gets one here
            // so its settled segments can go.
            self.schedule_sync();
        }
    }

    /// Removes log segments that hold only settled messages.
    fn gc_segments(&self, inner: &mut Inner) {
        let live = inner
            .state
            .min_live_id()
            .unwrap_or_else(|| inner.log.next_index());
        if let Err(e) = inner.log.purge_before(live) {
            tracing::warn!(queue = %self.spec.name, error = %e, "segment cleanup failed");
        }
    }

    /// Settles checked-out messages (ack, or reject/nack without requeue).
    pub fn settle(&self, ids: &[u64]) -> Result<()> {
        self.release(ids, false)
    }

    /// Returns checked-out messages to their place (nack/reject with
    /// requeue, channel closed, recover).
    pub fn requeue(&self, ids: &[u64]) -> Result<()> {
        self.release(ids, true)
    }

    fn release(&self, ids: &[u64], requeue: bool) -> Result<()> {
        let mut letters = Vec::new();
        let r = (|| {
            let mut g = self.inner.lock();
            if g.deleted {
                return Ok(());
            }
            let inner = &mut *g;
            let limit = inner.args.as_deref().and_then(|a| a.delivery_limit);
            if let (true, Some(limit)) = (requeue, limit) {
                // Those past the limit leave here (a Drop); the rest return.
                self.over_delivery_limit(inner, limit, ids, &mut letters)?;
            }
            let retry = inner.args.as_deref().and_then(|a| a.retry);
            if let (true, Some(policy)) = (requeue, retry) {
                self.retry_later(inner, &policy, ids)?;
                self.dispatch_locked(inner, &mut letters, None);
                self.note_expiry(inner);
                return Ok(());
            }
            let done = Self::checked_out(inner, ids);
            if requeue {
                self.commit_ids(inner, &Command::Requeue(&done), &mut letters)?;
            } else {
                let fx = self.commit_ids(inner, &Command::Settle(&done), &mut letters)?;
                if fx.removed > 0 {
                    self.stats.acked(fx.removed);
                }
            }
            self.dispatch_locked(inner, &mut letters, None);
            self.note_expiry(inner);
            Ok(())
        })();
        self.route_letters(letters);
        r
    }

    /// basic.reject / basic.nack without requeue: the messages leave the
    /// queue (a Drop record, reason rejected) and go to the dead-letter
    /// exchange if there is one.
    pub fn reject(&self, ids: &[u64]) -> Result<()> {
        for chunk in ids.chunks(LETTER_BATCH) {
            let mut letters = Vec::new();
            let logged = {
                let mut g = self.inner.lock();
                if g.deleted {
                    return Ok(());
                }
                let inner = &mut *g;
                let done = Self::checked_out(inner, chunk);
                let cmd = Command::Drop {
                    reason: Reason::Rejected,
                    ids: &done,
                };
                let logged = self.commit_ids(inner, &cmd, &mut letters);
                self.dispatch_locked(inner, &mut letters, None);
                self.note_expiry(inner);
                logged
            };
            self.route_letters(letters);
            logged?;
        }
        Ok(())
    }

    /// Drops every ready (and waiting) message; returns how many. The
    /// checked-out ones stay: the Purge record lists them.
    pub fn purge(&self) -> Result<u32> {
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        let inner = &mut *g;
        let upto = inner.log.next_index();
        let keep = inner.state.unacked_ids();
        let (_, mut fx) = self.commit(inner, &Command::Purge { upto, keep: &keep })?;
        let mut letters = Vec::new();
        self.execute(inner, &mut fx, &mut letters);
        self.gc_segments(inner);
        self.note_expiry(inner);
        Ok(fx.purged as u32)
    }
}

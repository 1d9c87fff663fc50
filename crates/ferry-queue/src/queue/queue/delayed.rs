//! The queue side of delayed retry (`x-retry-*`) and of a delayed
//! exchange's held messages: returns that wait in a Retry record, holds
//! that wait in their Enqueue record, and making them ready when due. The
//! rules are in `queue::retry`.

use super::*;
use crate::queue::command::Command;
use crate::queue::retry::RetryPolicy;

impl Queue {
    /// Until when this queue holds `msg`: None unless it is a delayed
    /// exchange's hidden queue, where it is now plus the message's
    /// `x-delay` (read once here; the time goes into the Enqueue record).
    pub(super) fn hold_until(&self, inner: &Inner, msg: &Message) -> Option<u64> {
        if !inner.args.as_deref().is_some_and(|a| a.hold) {
            return None;
        }
        let delay = crate::props::headers(&msg.properties)
            .ok()
            .flatten()
            .and_then(|h| ferry_route::delay_of(&h))
            .unwrap_or(0);
        Some(self.env.clock.now_ms().saturating_add(delay))
    }

    /// Makes the waiting messages that are due ready; returns the time it
    /// read.
    #[cold]
    #[inline(never)]
    pub(super) fn promote_due(&self, inner: &mut Inner) -> u64 {
        let now = self.env.clock.now_ms();
        inner.state.promote_due(now);
        now
    }

    /// Returns checked-out messages that wait before they are ready again:
    /// each until now plus its backoff, the times logged in one Retry
    /// record (replay restores the waits).
    #[cold]
    #[inline(never)]
    pub(super) fn retry_later(
        &self,
        inner: &mut Inner,
        policy: &RetryPolicy,
        ids: &[u64],
    ) -> Result<()> {
        let now = self.env.clock.now_ms();
        let items: Vec<(u64, u64)> = Queue::checked_out(inner, ids)
            .into_iter()
            .filter_map(|id| {
                let returns = inner.state.unacked_delivery_count(id)?;
                Some((id, now.saturating_add(policy.delay_for(returns))))
            })
            .collect();
        let mut none = Vec::new();
        self.commit_ids(inner, &Command::Retry(&items), &mut none)?;
        Ok(())
    }

    /// A delayed exchange's release: checks out the earliest held message
    /// due at `now` (due time, then publish order) as basic.get would,
    /// skipping the ready list, whose id order is publish order.
    pub fn take_due(&self, now: u64) -> Result<Option<Delivery>> {
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        let inner = &mut *g;
        let Some(head) = inner.state.peek_due(now).cloned() else {
            self.note_expiry(inner);
            return Ok(None);
        };
        // Loaded before it leaves the waiting set: a read error keeps it
        // held for the next sweep.
        let message = self.load(inner, &head)?;
        if inner.state.check_out_due(now) != Some(head.id) {
            return Ok(None);
        }
        self.stats.got(false, head.redelivered());
        self.note_expiry(inner);
        Ok(Some(Delivery {
            queue: self.spec.name.clone(),
            msg_id: head.id,
            message: self.delivered_message(inner.args.as_deref(), message, head.delivery_count),
            redelivered: head.redelivered(),
            delivery_count: u32::from(head.delivery_count),
        }))
    }

    /// Messages waiting for a retry or held by a delayed exchange.
    pub fn delayed_count(&self) -> usize {
        self.inner.lock().state.waiting_len()
    }
}

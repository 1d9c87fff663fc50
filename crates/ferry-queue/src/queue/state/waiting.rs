//! Messages that wait for a time of their own (delayed retry, a delayed
//! exchange's held messages): how they leave the checked-out set or arrive,
//! and how they become ready (`queue::retry` has the rules).

use super::{insert_ordered, Entry, Meta, QueueState};
use crate::clock::NEVER;

impl QueueState {
    /// A new message held (invisible) until `until`: a delayed
    /// exchange's. Never spilled: the waiting set is in memory.
    pub fn hold(&mut self, e: Entry, until: u64, deadline: Option<u64>, body: u32) {
        if deadline.is_some() || self.track_body {
            self.meta.insert(
                e.id,
                Meta {
                    deadline: deadline.unwrap_or(NEVER),
                    body,
                },
            );
        }
        self.waiting.insert(until, e);
    }

    /// Messages waiting for their time.
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Their record bytes.
    pub fn waiting_bytes(&self) -> u64 {
        self.waiting.bytes()
    }

    /// Whether any message waits.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// When the next waiting message becomes ready.
    pub fn next_due(&self) -> Option<u64> {
        self.waiting.next_due()
    }

    /// The earliest waiting message due at or before `now` (due time, then
    /// id), left waiting.
    pub fn peek_due(&self, now: u64) -> Option<&Entry> {
        self.waiting.peek_due(now)
    }

    /// Checks out the earliest waiting message due at or before `now`
    /// without passing through the ready list (a delayed exchange releases
    /// in due order, not in the id order of the ready list).
    pub fn check_out_due(&mut self, now: u64) -> Option<u64> {
        let e = self.waiting.pop_due(now)?;
        let id = e.id;
        self.check_out(e);
        Some(id)
    }

    /// Makes every waiting message due at or before `now` ready, in its
    /// original place (its id orders it among the ready ones, as a
    /// requeue does). Returns how many.
    pub fn promote_due(&mut self, now: u64) -> usize {
        let due = self.waiting.take_due(now);
        let n = due.len();
        for e in due {
            self.ready_bytes += u64::from(e.size());
            self.ready_body += self.body_of(e.id);
            self.in_memory += 1;
            let lvl = self.level_of(e.priority);
            insert_ordered(&mut self.levels[lvl].ready, e);
        }
        n
    }
}

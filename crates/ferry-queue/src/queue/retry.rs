//! Delayed retry (Ferry's `x-retry-*` queue arguments) and the set of
//! messages that wait, invisible, until a time of their own.
//!
//! A return (basic.reject / basic.nack with requeue, basic.recover, the
//! requeue of a closed channel's messages) on a queue with `x-retry-delay`
//! does not make the message ready at once: it waits until
//! `now + delay(n)`, n being how often it was returned before (its delivery
//! count, which the Requeue / Retry records count), then goes back to its
//! original place. The deadline is written into a Retry record, so a
//! restart (or replay anywhere) restores the wait; nothing re-reads a clock
//! to decide it.
//!
//! The same waiting set holds the messages of a delayed exchange's hidden
//! queue (Enqueue records with `not_before`): they are held from the start.
//!
//! Waiting messages are live (the log keeps them, a purge removes them),
//! count in a queue's total, but are neither ready (`messages_ready`,
//! queue.declare-ok's count, length limits) nor checked out. They do not
//! expire while they wait (only the head of the ready list expires); they
//! keep their TTL deadline for when they are back.

use super::state::Entry;
use crate::ids::IdMap;
use ferry_model::args::{check_int, int, invalid_arg, non_negative, text, unacceptable};
use ferry_model::Table;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// `x-retry-delay`: ms the first retry waits (0 = no delay: plain requeue).
pub const ARG_DELAY: &str = "x-retry-delay";
/// `x-retry-backoff`: `fixed` (every retry waits `x-retry-delay`) or
/// `exponential` (each retry waits `x-retry-multiplier` times longer).
pub const ARG_BACKOFF: &str = "x-retry-backoff";
/// `x-retry-multiplier`: the factor of exponential backoff (default 2).
pub const ARG_MULTIPLIER: &str = "x-retry-multiplier";
/// `x-retry-max-delay`: the cap on any retry's wait, ms.
pub const ARG_MAX_DELAY: &str = "x-retry-max-delay";

/// The longest wait anything can ask for: RabbitMQ's ten-year TTL cap.
const MAX_DELAY_MS: u64 = super::args::MAX_EXPIRY_MS;

/// How the wait grows with the number of returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backoff {
    /// Every retry waits the same.
    #[default]
    Fixed,
    /// Retry n (0-based) waits `delay × multiplier^n`.
    Exponential,
}

/// A queue's retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first retry's wait, ms (> 0).
    pub delay: u64,
    /// How later waits grow.
    pub backoff: Backoff,
    /// Factor of exponential backoff (>= 1).
    pub multiplier: u64,
    /// No wait is longer than this, ms.
    pub max_delay: u64,
}

impl RetryPolicy {
    /// The policy the arguments ask for; None without `x-retry-delay` (or
    /// with 0). Arguments were validated at declaration: bad values read
    /// as absent.
    pub fn parse(args: &Table) -> Option<RetryPolicy> {
        let a = args;
        let num = |k: &str| a.get(k).and_then(non_negative);
        let delay = num(ARG_DELAY).filter(|d| *d > 0)?.min(MAX_DELAY_MS);
        let backoff = match a.get(ARG_BACKOFF).and_then(text) {
            Some("exponential") => Backoff::Exponential,
            _ => Backoff::Fixed,
        };
        Some(RetryPolicy {
            delay,
            backoff,
            multiplier: num(ARG_MULTIPLIER).filter(|m| *m >= 1).unwrap_or(2),
            max_delay: num(ARG_MAX_DELAY).unwrap_or(MAX_DELAY_MS).min(MAX_DELAY_MS),
        })
    }

    /// The wait of a message returned `returns` times before (0 on its
    /// first return): `delay`, grown by the backoff, capped.
    pub fn delay_for(&self, returns: u16) -> u64 {
        let d = match self.backoff {
            Backoff::Fixed => self.delay,
            Backoff::Exponential => {
                let factor = self.multiplier.checked_pow(u32::from(returns));
                factor.map_or(u64::MAX, |f| self.delay.saturating_mul(f))
            }
        };
        d.min(self.max_delay)
    }

    /// Checks the `x-retry-*` arguments of a new queue; the error is the
    /// text after `PRECONDITION_FAILED - ` (RabbitMQ's shape for argument
    /// errors: `invalid arg 'x-retry-backoff' for queue 'q' in vhost '/': …`).
    pub fn validate(args: &Table, rs: &str) -> Result<(), String> {
        let a = args;
        let fail = |k: &str, why: String| invalid_arg(k, rs, &why);
        for k in [ARG_DELAY, ARG_MULTIPLIER, ARG_MAX_DELAY] {
            let Some(v) = a.get(k) else { continue };
            let n = check_int(v).map_err(|e| fail(k, e))?;
            if n < 0 {
                return Err(fail(k, format!("{{value_negative,{n}}}")));
            }
            if n > i128::from(MAX_DELAY_MS) {
                return Err(fail(k, format!("{{value_too_large,{n}}}")));
            }
            if k == ARG_MULTIPLIER && n == 0 {
                return Err(fail(k, "{value_zero,0}".into()));
            }
        }
        if let Some(v) = a.get(ARG_BACKOFF) {
            match text(v) {
                Some("fixed" | "exponential") => {}
                Some(other) => {
                    return Err(fail(
                        ARG_BACKOFF,
                        format!("\"expected fixed or exponential, got '{other}'\""),
                    ))
                }
                None => return Err(fail(ARG_BACKOFF, unacceptable(v))),
            }
        }
        let delay = a.get(ARG_DELAY).and_then(int).unwrap_or(0);
        if delay == 0 {
            // The shape of the schedule without its start is a mistake
            // worth saying, not a silent plain queue.
            if let Some(k) = [ARG_BACKOFF, ARG_MULTIPLIER, ARG_MAX_DELAY]
                .into_iter()
                .find(|k| a.get(k).is_some())
            {
                return Err(fail(k, format!("\"needs a positive '{ARG_DELAY}'\"")));
            }
        }
        Ok(())
    }
}

/// Messages waiting for their time, taken by it (then by id).
///
/// A binary heap of 40-byte items (the 32-byte `Entry` plus its due
/// time) in one vector: no per-message tree node, so a waiting message
/// costs about what a ready one does. At run time nothing is removed from
/// the middle (a waiting message is neither ready nor checked out: only
/// its time or a purge ends its wait); only replay names a waiting message
/// by id (a retried message delivered again before a restart, a held one
/// released and settled). While replaying, the set is kept by id instead
/// (`by_id`, then `seal` builds the heap), so replay stays linear.
#[derive(Debug, Default)]
pub struct Waiting {
    heap: BinaryHeap<Waiter>,
    bytes: u64,
    /// Replay mode: every waiting message by id (the heap is empty).
    by_id: Option<IdMap<u64, (u64, Entry)>>,
}

/// One waiting message; the heap's greatest is the earliest (due, id).
#[derive(Debug)]
struct Waiter {
    due: u64,
    entry: Entry,
}

impl Waiter {
    fn key(&self) -> (u64, u64) {
        (self.due, self.entry.id)
    }
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Waiter {}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

/// Below this many slots the heap's vector is never shrunk.
const SHRINK_FLOOR: usize = 1024;

impl Waiting {
    /// Adds `e`, ready again at `due`.
    pub fn insert(&mut self, due: u64, e: Entry) {
        self.bytes += u64::from(e.size());
        match self.by_id.as_mut() {
            Some(m) => {
                m.insert(e.id, (due, e));
            }
            None => self.heap.push(Waiter { due, entry: e }),
        }
    }

    /// Enters replay mode: kept by id until `seal` (commands name waiting
    /// messages by id only in a replay).
    pub fn index_by_id(&mut self) {
        if self.by_id.is_none() {
            let m = std::mem::take(&mut self.heap)
                .into_vec()
                .into_iter()
                .map(|w| (w.entry.id, (w.due, w.entry)))
                .collect();
            self.by_id = Some(m);
        }
    }

    /// Leaves replay mode: the heap takes every waiting message.
    pub fn seal(&mut self) {
        if let Some(m) = self.by_id.take() {
            self.heap
                .extend(m.into_values().map(|(due, entry)| Waiter { due, entry }));
        }
    }

    /// Number of waiting messages.
    pub fn len(&self) -> usize {
        self.heap.len() + self.by_id.as_ref().map_or(0, IdMap::len)
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Their record bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The earliest time one becomes ready.
    pub fn next_due(&self) -> Option<u64> {
        match &self.by_id {
            Some(m) => m.values().map(|(due, _)| *due).min(),
            None => self.heap.peek().map(|w| w.due),
        }
    }

    /// Takes out every message due at or before `now`, earliest first.
    pub fn take_due(&mut self, now: u64) -> Vec<Entry> {
        self.seal();
        let mut out = Vec::new();
        while let Some(e) = self.pop_one(now) {
            out.push(e);
        }
        self.shrink();
        out
    }

    /// Takes out the earliest message due at or before `now` (by due time,
    /// then id); None if none is due.
    pub fn pop_due(&mut self, now: u64) -> Option<Entry> {
        self.seal();
        let e = self.pop_one(now);
        if e.is_none() {
            self.shrink();
        }
        e
    }

    fn pop_one(&mut self, now: u64) -> Option<Entry> {
        if self.heap.peek()?.due > now {
            return None;
        }
        let w = self.heap.pop()?;
        self.bytes -= u64::from(w.entry.size());
        Some(w.entry)
    }

    /// A burst of waits that has drained gives its memory back.
    fn shrink(&mut self) {
        let cap = self.heap.capacity();
        if cap > SHRINK_FLOOR && self.heap.len() < cap / 4 {
            self.heap.shrink_to((self.heap.len() * 2).max(SHRINK_FLOOR));
        }
    }

    /// The earliest message due at or before `now`, left in place.
    pub fn peek_due(&self, now: u64) -> Option<&Entry> {
        match &self.by_id {
            Some(m) => m
                .values()
                .filter(|(due, _)| *due <= now)
                .min_by_key(|(due, e)| (*due, e.id))
                .map(|(_, e)| e),
            None => self.heap.peek().filter(|w| w.due <= now).map(|w| &w.entry),
        }
    }

    /// The smallest waiting id (the log must keep its record).
    pub fn min_id(&self) -> Option<u64> {
        self.iter().map(|(_, e)| e.id).min()
    }

    /// Takes out the message `id` (a command naming a waiting message:
    /// only replay does, where it is found by id; else a linear search).
    pub fn remove(&mut self, id: u64) -> Option<Entry> {
        if let Some(m) = self.by_id.as_mut() {
            let (_, e) = m.remove(&id)?;
            self.bytes -= u64::from(e.size());
            return Some(e);
        }
        if self.heap.is_empty() {
            return None;
        }
        let at = self.heap.iter().position(|w| w.entry.id == id)?;
        let mut v = std::mem::take(&mut self.heap).into_vec();
        let w = v.swap_remove(at);
        self.heap = BinaryHeap::from(v);
        self.bytes -= u64::from(w.entry.size());
        Some(w.entry)
    }

    /// Takes out every message whose id `f` picks (a purge).
    pub fn remove_where(&mut self, mut f: impl FnMut(u64) -> bool) -> Vec<Entry> {
        if let Some(m) = self.by_id.as_mut() {
            let ids: Vec<u64> = m.keys().copied().filter(|id| f(*id)).collect();
            let out: Vec<Entry> = ids
                .iter()
                .filter_map(|id| m.remove(id))
                .map(|(_, e)| e)
                .collect();
            self.bytes -= out.iter().map(|e| u64::from(e.size())).sum::<u64>();
            return out;
        }
        if !self.heap.iter().any(|w| f(w.entry.id)) {
            return Vec::new();
        }
        let (out, stay): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .partition(|w| f(w.entry.id));
        self.heap = BinaryHeap::from(stay);
        let out: Vec<Entry> = out.into_iter().map(|w| w.entry).collect();
        self.bytes -= out.iter().map(|e| u64::from(e.size())).sum::<u64>();
        out
    }

    /// Every waiting message with its due time (any order).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Entry)> {
        let indexed = self
            .by_id
            .iter()
            .flat_map(|m| m.values().map(|(d, e)| (*d, e)));
        self.heap.iter().map(|w| (w.due, &w.entry)).chain(indexed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_support::{ms as s, mtable as table};
    use ferry_model::Value;

    fn entry(id: u64) -> Entry {
        let pos = ferry_log::RecordPos {
            index: id,
            segment: 0,
            offset: id * 10,
            len: 10,
        };
        Entry::new(pos, true, None)
    }

    #[test]
    fn waiting_messages_come_out_by_due_time_then_id() {
        let mut w = Waiting::default();
        for (due, id) in [(30, 1), (10, 4), (20, 2), (10, 3), (40, 5)] {
            w.insert(due, entry(id));
        }
        assert_eq!(
            (w.len(), w.bytes(), w.next_due(), w.min_id()),
            (5, 50, Some(10), Some(1))
        );
        assert!(w.peek_due(9).is_none() && w.pop_due(9).is_none());
        assert_eq!(w.peek_due(10).map(|e| e.id), Some(3));
        assert_eq!(w.pop_due(20).map(|e| e.id), Some(3));
        let ids: Vec<u64> = w.take_due(30).iter().map(|e| e.id).collect();
        assert_eq!(ids, [4, 2, 1]);
        assert_eq!((w.len(), w.bytes(), w.next_due()), (1, 10, Some(40)));
        w.insert(50, entry(6));
        assert!(w.remove(99).is_none());
        assert_eq!(w.remove(6).map(|e| e.id), Some(6));
        let gone: Vec<u64> = w.remove_where(|id| id == 5).iter().map(|e| e.id).collect();
        assert_eq!(gone, [5]);
        assert!(w.is_empty() && w.bytes() == 0 && w.next_due().is_none());
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let mut w = Waiting::default();
        for id in 0..100_000 {
            w.insert(id, entry(id));
        }
        assert_eq!(w.take_due(99_000).len(), 99_001);
        assert!(w.heap.capacity() < 10_000, "{}", w.heap.capacity());
        assert_eq!(w.next_due(), Some(99_001));
    }

    #[test]
    fn fixed_backoff_waits_the_same_capped() {
        let p = RetryPolicy::parse(&table(&[(ARG_DELAY, Value::I32(500))])).unwrap();
        assert_eq!(p.backoff, Backoff::Fixed);
        assert_eq!((0..5).map(|n| p.delay_for(n)).collect::<Vec<_>>(), [500; 5]);
        let p = RetryPolicy::parse(&table(&[
            (ARG_DELAY, Value::I32(500)),
            (ARG_MAX_DELAY, Value::I32(200)),
        ]))
        .unwrap();
        assert_eq!(p.delay_for(0), 200);
    }

    #[test]
    fn exponential_backoff_grows_by_the_multiplier_up_to_the_cap() {
        let p = RetryPolicy::parse(&table(&[
            (ARG_DELAY, Value::I32(100)),
            (ARG_BACKOFF, s("exponential")),
            (ARG_MAX_DELAY, Value::I32(1000)),
        ]))
        .unwrap();
        let seq: Vec<u64> = (0..6).map(|n| p.delay_for(n)).collect();
        assert_eq!(seq, [100, 200, 400, 800, 1000, 1000]);
        let p = RetryPolicy::parse(&table(&[
            (ARG_DELAY, Value::U8(10)),
            (ARG_BACKOFF, s("exponential")),
            (ARG_MULTIPLIER, Value::I32(3)),
        ]))
        .unwrap();
        let seq: Vec<u64> = (0..4).map(|n| p.delay_for(n)).collect();
        assert_eq!(seq, [10, 30, 90, 270]);
        // Overflow saturates into the (default ten-year) cap.
        assert_eq!(p.delay_for(u16::MAX), MAX_DELAY_MS);
    }

    #[test]
    fn no_delay_means_no_policy() {
        assert_eq!(RetryPolicy::parse(&table(&[])), None);
        assert_eq!(
            RetryPolicy::parse(&table(&[(ARG_DELAY, Value::I32(0))])),
            None
        );
    }

    #[test]
    fn validation_names_the_argument() {
        let check = |items: &[(&str, Value)]| {
            RetryPolicy::validate(&table(items), "queue 'q' in vhost '/'")
        };
        assert!(check(&[
            (ARG_DELAY, Value::I32(10)),
            (ARG_BACKOFF, s("exponential")),
            (ARG_MULTIPLIER, Value::I32(3)),
            (ARG_MAX_DELAY, Value::I32(100)),
        ])
        .is_ok());
        assert_eq!(
            check(&[(ARG_DELAY, Value::I32(-1))]).unwrap_err(),
            "invalid arg 'x-retry-delay' for queue 'q' in vhost '/': {value_negative,-1}"
        );
        assert_eq!(
            check(&[(ARG_DELAY, s("5"))]).unwrap_err(),
            "invalid arg 'x-retry-delay' for queue 'q' in vhost '/': \"expected integer, got longstr\""
        );
        assert_eq!(
            check(&[(ARG_DELAY, Value::I32(1)), (ARG_BACKOFF, s("linear"))]).unwrap_err(),
            "invalid arg 'x-retry-backoff' for queue 'q' in vhost '/': \"expected fixed or exponential, got 'linear'\""
        );
        assert_eq!(
            check(&[(ARG_DELAY, Value::I32(1)), (ARG_MULTIPLIER, Value::I32(0))]).unwrap_err(),
            "invalid arg 'x-retry-multiplier' for queue 'q' in vhost '/': {value_zero,0}"
        );
        assert_eq!(
            check(&[(ARG_MAX_DELAY, Value::I32(5))]).unwrap_err(),
            "invalid arg 'x-retry-max-delay' for queue 'q' in vhost '/': \"needs a positive 'x-retry-delay'\""
        );
    }
}

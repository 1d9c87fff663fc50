//! Publisher confirms of one channel.
//!
//! A publish routed to N queues is confirmed when all N report it stored
//! (for a persistent message in a durable queue: after the fsync). Confirms
//! are coalesced as RabbitMQ coalesces them: every report hands over a
//! batch (one fsync's worth of one channel's publishes; or, for publishes
//! confirmed as they are enqueued, everything the connection handled since
//! it last waited for input, see [`ConfirmTracker::confirm_later`] and
//! [`ConfirmTracker::flush`]), and a batch goes out as one `basic.ack
//! multiple=true` per run of consecutive seqs that continues the prefix
//! already on the wire. A seq that overtakes an older outstanding publish is
//! acked alone. A failed store nacks the publish once, at once; later
//! reports for it are ignored.
//!
//! What a multiple ack covers: the seqs after the highest seq below which
//! everything is on the wire (`sent_upto`) up to its tag, all of them in
//! the batch: never a nacked, outstanding or already acked seq, so each
//! seq is acked or nacked exactly once however the client reads
//! `multiple`.

use crate::outbox::{Outbound, Outbox};
use ferry_queue::queue::ConfirmSink;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
struct State {
    /// Seq → reports still to come (queues; 1 for an unroutable publish,
    /// which the channel reports itself).
    outstanding: BTreeMap<u64, u32>,
    /// Every seq ≤ this has been acked or nacked on the wire.
    sent_upto: u64,
    /// Seqs above `sent_upto` already acked alone or nacked.
    sent_above: BTreeSet<u64>,
    /// Reported by the channel itself (confirmed on enqueue, unroutable),
    /// waiting for [`ConfirmTracker::flush`].
    held: Vec<u64>,
    /// Next seq to hand out (publishes are numbered from 1).
    next_seq: u64,
}

impl State {
    /// Folds seqs already on the wire that continue the prefix into it.
    fn advance(&mut self) {
        while self.sent_above.first() == Some(&(self.sent_upto + 1)) {
            self.sent_above.pop_first();
            self.sent_upto += 1;
        }
    }
}

/// The confirm state; shared with queues as their `ConfirmSink`.
#[derive(Debug)]
pub struct ConfirmTracker {
    channel: u16,
    outbox: Outbox,
    state: Mutex<State>,
}

impl ConfirmTracker {
    /// Confirm mode just turned on.
    pub fn new(channel: u16, outbox: Outbox) -> Self {
        ConfirmTracker {
            channel,
            outbox,
            state: Mutex::new(State {
                next_seq: 1,
                ..State::default()
            }),
        }
    }

    /// Numbers a new publish that must hear from `reports` reports (its
    /// queues; for an unroutable publish 1, given with `confirm_later`).
    pub fn register(&self, reports: u32) -> u64 {
        let mut st = self.state.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        st.outstanding.insert(seq, reports.max(1));
        seq
    }

    /// A report made on the channel's own thread (a queue stored the
    /// message as it was enqueued; the publish was unroutable): counted at
    /// the next [`flush`](Self::flush), so that everything the connection
    /// handles between two reads is confirmed together.
    pub fn confirm_later(&self, seq: u64) {
        self.state.lock().held.push(seq);
    }

    /// Applies the reports held by `confirm_later`: the connection calls
    /// it before it waits for input (and before it yields or blocks).
    pub fn flush(&self) {
        let mut st = self.state.lock();
        if st.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut st.held);
        self.apply(&mut st, &held);
    }

    /// Counts reports; emits the publishes they complete.
    fn apply(&self, st: &mut State, seqs: &[u64]) {
        let mut done = Vec::new();
        for &s in seqs {
            if let Some(n) = st.outstanding.get_mut(&s) {
                *n -= 1;
                if *n == 0 {
                    st.outstanding.remove(&s);
                    done.push(s);
                }
            }
        }
        if !done.is_empty() {
            done.sort_unstable();
            self.emit(st, &done);
        }
    }

    /// Sends acks for `done` (sorted, each completed just now): one frame
    /// per run of consecutive seqs continuing `sent_upto` (multiple when it
    /// covers more than one), one per seq elsewhere.
    fn emit(&self, st: &mut State, done: &[u64]) {
        let mut i = 0;
        while let Some(&s) = done.get(i) {
            st.advance();
            if s == st.sent_upto + 1 {
                let mut top = s;
                i += 1;
                while done.get(i) == Some(&(top + 1)) {
                    top += 1;
                    i += 1;
                }
                self.send(top, true, top > s);
                st.sent_upto = top;
            } else {
                self.send(s, true, false);
                st.sent_above.insert(s);
                i += 1;
            }
        }
        st.advance();
    }

    fn send(&self, tag: u64, ack: bool, multiple: bool) {
        self.outbox.send(Outbound::Confirm {
            channel: self.channel,
            ack,
            tag,
            multiple,
        });
    }
}

impl ConfirmSink for ConfirmTracker {
    fn confirmed(&self, seqs: &[u64]) {
        let mut st = self.state.lock();
        self.apply(&mut st, seqs);
    }

    fn failed(&self, seqs: &[u64]) {
        let mut st = self.state.lock();
        for &s in seqs {
            if st.outstanding.remove(&s).is_some() {
                self.send(s, false, false);
                st.sent_above.insert(s);
            }
        }
        st.advance();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbound;
    use std::collections::BTreeMap;

    type Frames = Vec<(bool, u64, bool)>;

    fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Outbound>) -> Frames {
        let mut v = Vec::new();
        while let Ok(Outbound::Confirm {
            ack, tag, multiple, ..
        }) = rx.try_recv()
        {
            v.push((ack, tag, multiple));
        }
        v
    }

    fn tracker() -> (
        ConfirmTracker,
        tokio::sync::mpsc::UnboundedReceiver<Outbound>,
    ) {
        let (ob, rx, _) = Outbox::new(1 << 20);
        (ConfirmTracker::new(1, ob), rx)
    }

    #[test]
    fn in_order_confirms_become_one_multiple_ack() {
        let (t, mut rx) = tracker();
        let seqs: Vec<u64> = (0..5).map(|_| t.register(1)).collect();
        t.confirmed(&seqs);
        assert_eq!(drain(&mut rx), vec![(true, 5, true)]);
    }

    #[test]
    fn held_confirms_wait_for_the_flush_and_go_out_together() {
        let (t, mut rx) = tracker();
        for _ in 0..4 {
            let s = t.register(1);
            t.confirm_later(s);
        }
        let unroutable = t.register(0);
        t.confirm_later(unroutable);
        assert!(drain(&mut rx).is_empty(), "nothing before the flush");
        t.flush();
        assert_eq!(drain(&mut rx), vec![(true, 5, true)]);
        t.flush();
        assert!(drain(&mut rx).is_empty());
    }

    #[test]
    fn a_lone_confirm_is_not_multiple() {
        let (t, mut rx) = tracker();
        let s = t.register(1);
        t.confirmed(&[s]);
        assert_eq!(drain(&mut rx), vec![(true, 1, false)]);
    }

    #[test]
    fn overtaking_confirms_are_acked_alone() {
        let (t, mut rx) = tracker();
        let a = t.register(1);
        let b = t.register(2);
        let c = t.register(1);
        t.confirmed(&[b]);
        assert!(drain(&mut rx).is_empty(), "b needs two queues");
        t.confirmed(&[b, c]);
        assert_eq!(drain(&mut rx), vec![(true, 2, false), (true, 3, false)]);
        t.confirmed(&[a]);
        assert_eq!(drain(&mut rx), vec![(true, 1, false)]);
        // The prefix now reaches 3: the next batch is one multiple ack.
        let d: Vec<u64> = (0..3).map(|_| t.register(1)).collect();
        t.confirmed(&d);
        assert_eq!(drain(&mut rx), vec![(true, 6, true)]);
    }

    #[test]
    fn a_publish_to_two_queues_waits_for_both_reports_in_either_order() {
        let (t, mut rx) = tracker();
        let a = t.register(2);
        let b = t.register(2);
        t.confirm_later(a); // one queue confirmed a on enqueue
        t.confirmed(&[a, b]); // the other queues' fsync: b still needs one
        assert!(drain(&mut rx).is_empty(), "a's inline report is held");
        t.flush();
        assert_eq!(drain(&mut rx), vec![(true, 1, false)]);
        t.confirmed(&[b]);
        assert_eq!(drain(&mut rx), vec![(true, 2, false)]);
    }

    #[test]
    fn a_nack_is_never_covered_by_a_multiple_ack() {
        let (t, mut rx) = tracker();
        let s: Vec<u64> = (0..3).map(|_| t.register(1)).collect();
        t.failed(&[s[1]]);
        assert_eq!(drain(&mut rx), vec![(false, 2, false)]);
        t.confirmed(&[s[0], s[2]]);
        assert_eq!(drain(&mut rx), vec![(true, 1, false), (true, 3, false)]);
        t.confirmed(&[s[1]]);
        assert!(drain(&mut rx).is_empty(), "a nacked publish stays nacked");
    }

    #[test]
    fn coalescing_resumes_after_a_nack() {
        let (t, mut rx) = tracker();
        let s: Vec<u64> = (0..10).map(|_| t.register(1)).collect();
        t.failed(&[3]);
        let rest: Vec<u64> = s.iter().copied().filter(|&x| x != 3).collect();
        t.confirmed(&rest);
        assert_eq!(
            drain(&mut rx),
            vec![(false, 3, false), (true, 2, true), (true, 10, true)]
        );
    }

    /// A client that reads `multiple` strictly: a multiple ack covers the
    /// seqs from the first one not yet settled up to its tag, and each of
    /// those must be complete, not nacked, and not settled before.
    #[derive(Default)]
    struct StrictClient {
        settled: BTreeMap<u64, bool>,
    }

    impl StrictClient {
        fn floor(&self) -> u64 {
            let mut w = 0;
            while self.settled.contains_key(&(w + 1)) {
                w += 1;
            }
            w
        }

        fn take(&mut self, frames: &Frames, complete: &BTreeMap<u64, bool>) {
            for &(ack, tag, multiple) in frames {
                let from = if multiple { self.floor() + 1 } else { tag };
                assert!(from <= tag, "multiple ack {tag} covers nothing new");
                for s in from..=tag {
                    assert!(!self.settled.contains_key(&s), "seq {s} settled twice");
                    assert_eq!(complete.get(&s), Some(&ack), "seq {s} settled as {ack}");
                    self.settled.insert(s, ack);
                }
            }
        }
    }

    #[test]
    fn any_order_of_reports_settles_every_seq_exactly_once() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _round in 0..50 {
            let (t, mut rx) = tracker();
            let n = 200u64;
            // (seq, report kind): 0 = sync report, 1 = inline report, 2 = failure.
            let mut reports: Vec<(u64, u64)> = Vec::new();
            let mut expect: BTreeMap<u64, bool> = BTreeMap::new();
            for _ in 0..n {
                let queues = rand(3);
                let seq = t.register(queues as u32);
                let fails = rand(20) == 0;
                expect.insert(seq, !fails);
                for q in 0..queues.max(1) {
                    let kind = if fails && q == 0 {
                        2
                    } else if queues == 0 {
                        1
                    } else {
                        rand(2)
                    };
                    reports.push((seq, kind));
                }
            }
            // Mostly in order, with some shuffling (queues report apart).
            for i in 0..reports.len() {
                let j = (i + rand(8) as usize).min(reports.len() - 1);
                reports.swap(i, j);
            }
            // When each seq may be settled: after its last report (acked)
            // or its failure (nacked).
            let mut ready_at: BTreeMap<u64, usize> = BTreeMap::new();
            for (k, &(seq, kind)) in reports.iter().enumerate() {
                if expect[&seq] || kind == 2 {
                    ready_at.insert(seq, k);
                }
            }
            let mut client = StrictClient::default();
            let mut frames = 0;
            let mut batch = Vec::new();
            for (k, &(seq, kind)) in reports.iter().enumerate() {
                match kind {
                    0 => batch.push(seq),
                    1 => t.confirm_later(seq),
                    _ => t.failed(&[seq]),
                }
                if rand(10) == 0 || k + 1 == reports.len() {
                    t.confirmed(&batch);
                    batch.clear();
                    t.flush();
                }
                let got = drain(&mut rx);
                frames += got.len();
                let ready: BTreeMap<u64, bool> = expect
                    .iter()
                    .filter(|(s, _)| ready_at[*s] <= k)
                    .map(|(s, ok)| (*s, *ok))
                    .collect();
                client.take(&got, &ready);
            }
            assert_eq!(client.settled, expect, "every seq settled, as expected");
            assert!(frames < n as usize, "{frames} frames for {n} publishes");
        }
    }
}

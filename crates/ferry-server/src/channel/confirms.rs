//! Publisher confirms of one channel.
//!
//! A publish routed to N queues is confirmed when all N report it stored
//! (for a persistent message in a durable queue: after the fsync). Acks go
//! out as `multiple` for the longest fully confirmed prefix, individually
//! for confirmations that overtake an older outstanding publish. A failed
//! store nacks the publish once; later reports for it are ignored.

use crate::outbox::{Outbound, Outbox};
use ferry_core::queue::ConfirmSink;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
struct State {
    /// Seq → queues still to report.
    outstanding: BTreeMap<u64, u32>,
    /// Highest seq covered by a multiple ack so far.
    acked_upto: u64,
    /// Seqs nacked (never to be covered by a multiple ack).
    nacked: BTreeSet<u64>,
    /// Next seq to hand out (publishes are numbered from 1).
    next_seq: u64,
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

    /// Numbers a new publish that must hear from `queues` queues.
    /// With zero queues it is confirmed at once.
    pub fn register(&self, queues: u32) -> u64 {
        let mut st = self.state.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        if queues == 0 {
            self.emit(&mut st, &[seq]);
        } else {
            st.outstanding.insert(seq, queues);
        }
        seq
    }

    fn emit(&self, st: &mut State, done: &[u64]) {
        let floor = st.outstanding.keys().next().copied().unwrap_or(st.next_seq);
        let mut prefix_top = None;
        let mut prefix_len = 0usize;
        for &s in done {
            if s < floor {
                prefix_len += 1;
                prefix_top = Some(prefix_top.map_or(s, |p: u64| p.max(s)));
            } else {
                self.send(s, true, false);
            }
        }
        let Some(top) = prefix_top else { return };
        let crosses_nack = st.nacked.range(st.acked_upto + 1..=top).next().is_some();
        if crosses_nack {
            for &s in done.iter().filter(|s| **s < floor) {
                self.send(s, true, false);
            }
        } else {
            // Everything below `floor` is resolved, so one multiple ack
            // covers this batch (and, harmlessly, tags acked alone before).
            self.send(top, true, prefix_len > 1);
        }
        st.acked_upto = st.acked_upto.max(top);
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
            self.emit(&mut st, &done);
        }
    }

    fn failed(&self, seqs: &[u64]) {
        let mut st = self.state.lock();
        for &s in seqs {
            if st.outstanding.remove(&s).is_some() {
                st.nacked.insert(s);
                self.send(s, false, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbound;

    fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Outbound>) -> Vec<(bool, u64, bool)> {
        let mut v = Vec::new();
        while let Ok(Outbound::Confirm {
            ack, tag, multiple, ..
        }) = rx.try_recv()
        {
            v.push((ack, tag, multiple));
        }
        v
    }

    #[test]
    fn in_order_confirms_become_one_multiple_ack() {
        let (ob, mut rx, _) = Outbox::new(1 << 20);
        let t = ConfirmTracker::new(1, ob);
        let seqs: Vec<u64> = (0..5).map(|_| t.register(1)).collect();
        t.confirmed(&seqs);
        assert_eq!(drain(&mut rx), vec![(true, 5, true)]);
    }

    #[test]
    fn overtaking_confirm_is_acked_alone_and_unroutable_at_once() {
        let (ob, mut rx, _) = Outbox::new(1 << 20);
        let t = ConfirmTracker::new(1, ob);
        let a = t.register(1);
        let b = t.register(2);
        t.confirmed(&[b]);
        assert!(drain(&mut rx).is_empty(), "b needs two queues");
        t.confirmed(&[b]);
        assert_eq!(drain(&mut rx), vec![(true, 2, false)]);
        t.confirmed(&[a]);
        assert_eq!(drain(&mut rx), vec![(true, 1, false)]);
        let c = t.register(0);
        assert_eq!(c, 3);
        assert_eq!(drain(&mut rx), vec![(true, 3, false)]);
    }

    #[test]
    fn a_nack_is_never_covered_by_a_multiple_ack() {
        let (ob, mut rx, _) = Outbox::new(1 << 20);
        let t = ConfirmTracker::new(1, ob);
        let s: Vec<u64> = (0..3).map(|_| t.register(1)).collect();
        t.failed(&[s[1]]);
        assert_eq!(drain(&mut rx), vec![(false, 2, false)]);
        t.confirmed(&[s[0], s[2]]);
        let got = drain(&mut rx);
        assert_eq!(got, vec![(true, 1, false), (true, 3, false)]);
        t.confirmed(&[s[1]]);
        assert!(drain(&mut rx).is_empty());
    }
}

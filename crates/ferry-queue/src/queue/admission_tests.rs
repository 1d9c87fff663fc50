//! A replicated queue's reject-publish limit decided by its leader
//! (`admission`), over the simulated group of `replica_tests`: the leader
//! counts the enqueues in flight, decides forwarded records with the same
//! count, starts over with each leadership, and dead-letters what it
//! refuses with `reject-publish-dlx`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::admission::{Admission, Ticket};
use super::command::{Command, Facts};
use super::dead_letter::Reason;
use super::replica::Replica;
use super::replica_tests::{group, publish};
use crate::test_support::*;
use bytes::Bytes;
use ferry_model::Value;
use std::sync::Arc;

fn limited(overflow: &str, max: i32) -> Vec<(&'static str, Value)> {
    vec![
        ("x-max-length", Value::I32(max)),
        ("x-overflow", ms(overflow)),
        ("x-dead-letter-exchange", ms("dlx")),
    ]
}

/// An Enqueue record of `body`, as a follower or outside node forwards it.
fn enqueue(body: &str) -> Bytes {
    let msg = message(body, true);
    let mut b = Vec::new();
    Command::Enqueue {
        msg: &msg,
        facts: Facts::default(),
    }
    .encode(&mut b)
    .unwrap();
    Bytes::from(b)
}

fn settle(id: u64) -> Bytes {
    let mut b = Vec::new();
    Command::Settle(&[id]).encode(&mut b).unwrap();
    Bytes::from(b)
}

/// The leader's decision about `records`, which must be decided.
fn decided(r: &Replica, records: &[Bytes]) -> (Vec<bool>, Ticket) {
    match r.admit(records) {
        Admission::Decided { admitted, ticket } => (admitted, ticket),
        Admission::NotServing => panic!("the leader must decide"),
    }
}

#[test]
fn the_leader_counts_the_enqueues_in_flight_against_the_limit() {
    let fx = Fixture::new();
    let (g, reps) = group(&fx, 3, &limited("reject-publish", 5));
    let confirms = Arc::new(Confirms::default());
    // Ten publishes pipelined before anything commits.
    for i in 1..=10 {
        publish(&reps[0], &format!("m{i}"), &confirms, i);
    }
    g.hand_over();
    assert_eq!(g.pending.lock().len(), 5, "five proposed");
    assert_eq!(*confirms.failed.lock(), [6, 7, 8, 9, 10], "five nacked");
    assert!(
        confirms.ok.lock().is_empty(),
        "none confirmed before the commit"
    );
    g.commit_all();
    assert_eq!(*confirms.ok.lock(), [1, 2, 3, 4, 5]);
    for r in &reps {
        assert_eq!(r.queue().depth().ready, 5, "every replica holds five");
    }

    // Full: one more is refused.
    publish(&reps[0], "m11", &confirms, 11);
    g.hand_over();
    assert!(g.pending.lock().is_empty());
    assert_eq!(confirms.failed.lock().last(), Some(&11));

    // A consumer takes two: unacked messages do not count (RabbitMQ
    // counts ready ones), so two more fit, then none.
    let taker = Taker::new(2);
    reps[0]
        .queue()
        .consume(Arc::from("c"), taker.clone(), false, false)
        .unwrap();
    reps[0].queue().dispatch();
    assert_eq!(taker.got.lock().len(), 2);
    for i in 12..=14 {
        publish(&reps[0], &format!("m{i}"), &confirms, i);
    }
    g.commit_all();
    assert_eq!(confirms.ok.lock()[5..], [12, 13]);
    assert_eq!(confirms.failed.lock().last(), Some(&14));
    assert_eq!(reps[0].queue().depth().ready, 5);
    // Acked: still five ready, still full.
    reps[0].queue().settle(&taker.offsets()).unwrap();
    g.commit_all();
    publish(&reps[0], "m15", &confirms, 15);
    g.commit_all();
    assert_eq!(confirms.failed.lock().last(), Some(&15));
    for r in &reps[1..] {
        assert_eq!(r.queue().depth().ready, 5, "followers agree");
    }
}

#[test]
fn forwarded_records_are_decided_with_the_leaders_own() {
    let fx = Fixture::new();
    let (g, reps) = group(&fx, 3, &limited("reject-publish", 5));
    let confirms = Arc::new(Confirms::default());
    for i in 1..=3 {
        publish(&reps[0], &format!("m{i}"), &confirms, i);
    }
    g.hand_over();
    // Three in flight: of a forwarded batch, two Enqueues fit; a Settle
    // always goes; a record that is no queue record is refused.
    let batch = [
        enqueue("f1"),
        settle(1),
        enqueue("f2"),
        enqueue("f3"),
        Bytes::from_static(b"\xff"),
    ];
    let (admitted, ticket) = decided(&reps[0], &batch);
    assert_eq!(admitted, [true, true, true, false, false]);
    // A follower cannot decide (its copy lags; it does not serve).
    assert_eq!(reps[1].admit(&batch), Admission::NotServing);
    // The forward's proposal failed: what it counted is given back.
    reps[0].release(ticket);
    let (admitted, forward) = decided(&reps[0], &[enqueue("f4"), enqueue("f5"), enqueue("f6")]);
    assert_eq!(admitted, [true, true, false]);

    // Publishes through a follower are forwarded and decided by the
    // leader with the same count: full now (3 + 2 pending).
    publish(&reps[1], "via-follower", &confirms, 4);
    g.hand_over();
    assert_eq!(*confirms.failed.lock(), [4]);
    reps[0].release(forward);
    g.commit_all();
    assert_eq!(*confirms.ok.lock(), [1, 2, 3]);
    // Applied: no longer pending but ready, three of five used.
    let (admitted, _) = decided(&reps[0], &[enqueue("a"), enqueue("b"), enqueue("c")]);
    assert_eq!(admitted, [true, true, false]);
}

#[test]
fn byte_limits_count_the_bodies_in_flight() {
    let fx = Fixture::new();
    let args = [
        ("x-max-length-bytes", Value::I32(10)),
        ("x-overflow", ms("reject-publish")),
    ];
    let (g, reps) = group(&fx, 2, &args);
    let confirms = Arc::new(Confirms::default());
    publish(&reps[0], "aaaa", &confirms, 1);
    g.hand_over();
    // 4 bytes in flight: 4 + 4 fits, then 2 more fit exactly, 1 does not.
    let (admitted, _) = decided(&reps[0], &[enqueue("bbbb"), enqueue("cc"), enqueue("d")]);
    assert_eq!(admitted, [true, true, false]);
}

#[test]
fn pending_starts_over_with_each_leadership() {
    let fx = Fixture::new();
    let (g, reps) = group(&fx, 3, &limited("reject-publish", 5));
    let confirms = Arc::new(Confirms::default());
    for i in 1..=4 {
        publish(&reps[0], &format!("m{i}"), &confirms, i);
    }
    g.hand_over();
    // A forward, admitted: its fate is not known when the leader goes.
    let (admitted, old) = decided(&reps[0], &[enqueue("x")]);
    assert_eq!(admitted, [true]);
    let (admitted, _) = decided(&reps[0], &[enqueue("z")]);
    assert_eq!(admitted, [false], "full with five in flight");
    // The leader goes before any of it commits: lost, and nacked.
    g.lose_pending();
    assert_eq!(*confirms.failed.lock(), [1, 2, 3, 4]);
    reps[0].set_leader(false);
    reps[1].set_leader(true);
    // The new leader counts only its own (nothing yet).
    for i in 6..=10 {
        publish(&reps[1], &format!("m{i}"), &confirms, i);
    }
    g.commit_all();
    assert_eq!(*confirms.ok.lock(), [6, 7, 8, 9, 10]);
    assert_eq!(reps[1].queue().depth().ready, 5);

    // Back to the first replica, with three consumed (checked out, so
    // not ready): it starts from zero pending, and a ticket of its
    // earlier leadership gives nothing back.
    let taker = Taker::new(3);
    reps[1]
        .queue()
        .consume(Arc::from("c"), taker.clone(), false, false)
        .unwrap();
    reps[1].queue().dispatch();
    reps[1].queue().settle(&taker.offsets()).unwrap();
    g.commit_all();
    reps[1].set_leader(false);
    reps[0].set_leader(true);
    assert_eq!(reps[0].queue().depth().ready, 2);
    let (admitted, _) = decided(&reps[0], &[enqueue("y1"), enqueue("y2"), enqueue("y3")]);
    assert_eq!(admitted, [true, true, true]);
    reps[0].release(old);
    let (admitted, _) = decided(&reps[0], &[enqueue("y4")]);
    assert_eq!(admitted, [false], "the old ticket released nothing");
}

#[test]
fn reject_publish_dlx_dead_letters_what_the_leader_refuses() {
    let fx = Fixture::new();
    let (g, reps) = group(&fx, 2, &limited("reject-publish-dlx", 2));
    let confirms = Arc::new(Confirms::default());
    for i in 1..=3 {
        publish(&reps[0], &format!("m{i}"), &confirms, i);
    }
    // A follower decides nothing: no dead letter there.
    publish(&reps[1], "via-follower", &confirms, 4);
    assert!(fx.letters.take().is_empty());
    g.commit_all();
    assert_eq!(*confirms.ok.lock(), [1, 2]);
    assert_eq!(*confirms.failed.lock(), [3, 4]);
    assert_eq!(
        fx.letters.take(),
        [
            ("m3".to_string(), Reason::Maxlen),
            ("via-follower".to_string(), Reason::Maxlen)
        ],
        "the leader dead-letters what it refuses"
    );
    // Forwarded records too.
    let (admitted, _) = decided(&reps[0], &[enqueue("fwd")]);
    assert_eq!(admitted, [false]);
    assert_eq!(fx.letters.take(), [("fwd".to_string(), Reason::Maxlen)]);
}

#[test]
fn queues_without_a_reject_limit_admit_everything_uncounted() {
    let fx = Fixture::new();
    let args = [
        ("x-max-length", Value::I32(1)),
        ("x-overflow", ms("drop-head")),
    ];
    let (_g, reps) = group(&fx, 2, &args);
    let batch = [enqueue("a"), enqueue("b")];
    let (admitted, ticket) = decided(&reps[0], &batch);
    assert_eq!(admitted, [true, true]);
    assert_eq!(ticket, Ticket::default());
    // Even on a follower: nothing to decide.
    assert!(matches!(reps[1].admit(&batch), Admission::Decided { .. }));
}

/// Tells a refusal apart from a failure (`ConfirmSink::rejected`: a
/// transaction or a delayed exchange's release counts it handled).
#[derive(Debug, Default)]
struct Sink {
    calls: parking_lot::Mutex<Vec<(&'static str, u64)>>,
}

impl super::sinks::ConfirmSink for Sink {
    fn confirmed(&self, seqs: &[u64]) {
        self.calls.lock().extend(seqs.iter().map(|s| ("ok", *s)));
    }
    fn failed(&self, seqs: &[u64]) {
        self.calls
            .lock()
            .extend(seqs.iter().map(|s| ("failed", *s)));
    }
    fn rejected(&self, seqs: &[u64]) {
        self.calls
            .lock()
            .extend(seqs.iter().map(|s| ("rejected", *s)));
    }
}

#[test]
fn a_refusal_reaches_the_publisher_as_rejected_a_lost_proposal_as_failed() {
    let fx = Fixture::new();
    let (g, reps) = group(&fx, 2, &limited("reject-publish", 1));
    let sink = Arc::new(Sink::default());
    for seq in 1..=3 {
        let t = super::sinks::ConfirmToken {
            sink: sink.clone(),
            seq,
        };
        reps[0]
            .queue()
            .publish(&Arc::new(message("m", true)), Some(t))
            .unwrap();
    }
    g.hand_over();
    g.lose_pending();
    assert_eq!(
        *sink.calls.lock(),
        [("rejected", 2), ("rejected", 3), ("failed", 1)]
    );
}

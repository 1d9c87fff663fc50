//! Replicated queues over a simulated group (deterministic, no Raft): the
//! group keeps proposals pending until the test commits them, then
//! applies them on every replica in order, as a Raft group would. Checks
//! that consumers only see committed messages, confirms wait for the
//! commit, replicas agree, and a failover loses no confirmed message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::admission::{Admission, Ticket, REFUSED};
use super::replica::{CommandLog, ProposeDone, Proposer, Replica};
use super::sinks::ConfirmToken;
use crate::error::Result;
use crate::test_support::*;
use bytes::Bytes;
use ferry_log::RecordPos;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// A proposal: its records, its `done`, and once the serving leader
/// admitted its records (`Group::hand_over`), what they count as pending.
pub(super) struct Pending {
    records: Vec<Bytes>,
    done: Option<ProposeDone>,
    ticket: Option<Ticket>,
}

/// The group: its log (records by ferry index), pending proposals, the
/// replicas it applies to.
#[derive(Default)]
pub(super) struct Group {
    log: Mutex<BTreeMap<u64, Bytes>>,
    pub(super) pending: Mutex<VecDeque<Pending>>,
    next: Mutex<u64>,
    replicas: Mutex<Vec<Replica>>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Group")
    }
}

fn pos(index: u64, b: &Bytes) -> RecordPos {
    RecordPos {
        index,
        segment: 0,
        offset: index,
        len: b.len() as u32 + 9,
    }
}

#[derive(Debug)]
struct Log(Arc<Group>);

impl CommandLog for Log {
    fn read(&self, p: &RecordPos) -> Result<Bytes> {
        Ok(self.0.log.lock()[&p.index].clone())
    }
    fn scan(&self, from: u64, f: &mut dyn FnMut(RecordPos, Bytes) -> Result<bool>) -> Result<()> {
        let records: Vec<(u64, Bytes)> = self
            .0
            .log
            .lock()
            .range(from..)
            .map(|(i, b)| (*i, b.clone()))
            .collect();
        for (i, b) in records {
            if !f(pos(i, &b), b)? {
                break;
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Propose(Arc<Group>);

impl Proposer for Propose {
    fn propose(&self, records: Vec<Bytes>, done: Option<ProposeDone>) {
        self.0.pending.lock().push_back(Pending {
            records,
            done,
            ticket: None,
        });
    }
}

impl Group {
    /// What the group's proposer does on the leader before it hands
    /// proposals to Raft: the serving replica admits the records of each
    /// proposal not admitted yet, in order (`Replica::admit`); a proposal
    /// with a refused record fails at once and is not proposed. Nothing
    /// changes while no replica serves (the real proposer waits).
    pub(super) fn hand_over(&self) {
        let Some(leader) = self.replicas.lock().iter().find(|r| r.serves()).cloned() else {
            return;
        };
        let mut refused = Vec::new();
        {
            let mut pending = self.pending.lock();
            let mut kept = VecDeque::new();
            for mut p in pending.drain(..) {
                if p.ticket.is_some() {
                    kept.push_back(p);
                    continue;
                }
                match leader.admit(&p.records) {
                    Admission::Decided { admitted, ticket } if admitted.iter().all(|a| *a) => {
                        p.ticket = Some(ticket);
                        kept.push_back(p);
                    }
                    Admission::Decided { .. } => refused.extend(p.done),
                    Admission::NotServing => kept.push_back(p),
                }
            }
            *pending = kept;
        }
        for d in refused {
            d(Err(REFUSED.into()));
        }
    }

    /// Commits the `n` oldest proposals (handed over first): each entry
    /// takes a header index (the group's own record) and one index per
    /// command, then every replica applies its commands in order.
    pub(super) fn commit(&self, n: usize) {
        self.hand_over();
        for _ in 0..n {
            let Some(Pending { records, done, .. }) = self.pending.lock().pop_front() else {
                return;
            };
            let first = {
                let mut next = self.next.lock();
                let first = *next + 1;
                *next = first + records.len() as u64;
                first
            };
            for (at, r) in (first..).zip(records) {
                self.log.lock().insert(at, r.clone());
                let replicas = self.replicas.lock().clone();
                for rep in &replicas {
                    rep.apply_committed(pos(at, &r), r.clone()).unwrap();
                }
            }
            if let Some(d) = done {
                d(Ok(()));
            }
        }
    }

    pub(super) fn commit_all(&self) {
        while !self.pending.lock().is_empty() {
            self.commit(1);
        }
    }

    /// A leader lost its pending proposals (never committed): what they
    /// counted as pending is given back, their publishers get a nack.
    pub(super) fn lose_pending(&self) {
        let lost: Vec<Pending> = self.pending.lock().drain(..).collect();
        let replicas = self.replicas.lock().clone();
        for p in lost {
            if let Some(t) = p.ticket {
                for r in &replicas {
                    r.release(t);
                }
            }
            if let Some(d) = p.done {
                d(Err("leader lost".into()));
            }
        }
    }
}

pub(super) fn group(
    fx: &Fixture,
    n: usize,
    args: &[(&str, ferry_model::Value)],
) -> (Arc<Group>, Vec<Replica>) {
    let g = Arc::new(Group::default());
    let reps: Vec<Replica> = (0..n)
        .map(|_| {
            Replica::open(
                spec("q", true, mtable(args)),
                &mtable(args),
                Arc::from("/"),
                fx.env(),
                Arc::new(Log(g.clone())),
                Arc::new(Propose(g.clone())),
            )
        })
        .collect();
    *g.replicas.lock() = reps.clone();
    reps[0].set_leader(true);
    (g, reps)
}

pub(super) fn publish(r: &Replica, body: &str, confirms: &Arc<Confirms>, seq: u64) {
    let t = ConfirmToken {
        sink: confirms.clone(),
        seq,
    };
    r.queue()
        .publish(&Arc::new(message(body, true)), Some(t))
        .unwrap();
}

/// Ids and bodies of every message a replica holds (ready, checked out,
/// waiting).
fn held(r: &Replica) -> BTreeMap<u64, ()> {
    r.queue().with_state(|s| {
        let mut ids: BTreeMap<u64, ()> = s.heads().map(|e| (e.id, ())).collect();
        for id in s.unacked_ids() {
            ids.insert(id, ());
        }
        ids
    })
}

#[test]
fn consumers_see_only_committed_messages_and_confirms_wait_for_the_commit() {
    let fx = Fixture::new();
    let (g, reps) = group(&fx, 3, &[]);
    let taker = Taker::new(100);
    reps[0]
        .queue()
        .consume(Arc::from("c"), taker.clone(), false, false)
        .unwrap();
    let confirms = Arc::new(Confirms::default());
    for i in 1..=5 {
        publish(&reps[0], &format!("m{i}"), &confirms, i);
    }
    assert!(
        taker.got.lock().is_empty(),
        "nothing is delivered before the commit"
    );
    assert!(confirms.ok.lock().is_empty(), "nor confirmed");
    assert_eq!(reps[1].queue().depth().ready, 0);
    g.commit(2);
    assert_eq!(taker.bodies(), ["m1", "m2"]);
    assert_eq!(*confirms.ok.lock(), [1, 2]);
    g.commit_all();
    assert_eq!(taker.bodies(), ["m1", "m2", "m3", "m4", "m5"]);
    assert_eq!(*confirms.ok.lock(), [1, 2, 3, 4, 5]);
    // Followers hold every message as ready: deliveries are the leader's.
    for r in &reps[1..] {
        assert_eq!(r.queue().depth().ready, 5);
        assert_eq!(held(r), held(&reps[0]), "the same ids on every replica");
    }
    assert_eq!(reps[0].queue().depth().unacked, 5);

    // Acks are commands: followers drop the messages once committed.
    let ids = taker.offsets();
    reps[0].queue().settle(&ids[..3]).unwrap();
    assert_eq!(reps[1].queue().depth().ready, 5, "not before the commit");
    g.commit_all();
    for r in &reps[1..] {
        assert_eq!(r.queue().depth().ready, 2);
    }
    assert_eq!(reps[0].queue().depth().unacked, 2);

    // Failover: the old leader's consumer stays (the new leader feeds it
    // through the node's port: remote_tests.rs); the new leader delivers
    // what was not acked.
    reps[0].set_leader(false);
    assert!(!*taker.cancelled.lock());
    assert_eq!(reps[0].queue().depth().ready, 2, "checkouts went back");
    reps[1].set_leader(true);
    let t2 = Taker::new(100);
    reps[1]
        .queue()
        .consume(Arc::from("c2"), t2.clone(), false, false)
        .unwrap();
    reps[1].queue().dispatch();
    assert_eq!(t2.bodies(), ["m4", "m5"]);
    assert_eq!(t2.offsets(), ids[3..]);
    assert!(
        t2.got.lock().iter().all(|d| d.redelivered),
        "the old leader may have delivered them: flagged redelivered"
    );
}

#[test]
fn a_follower_neither_delivers_nor_sweeps_and_a_purge_pauses_delivery() {
    let fx = Fixture::new();
    let (g, reps) = group(&fx, 2, &[("x-message-ttl", ferry_model::Value::I32(1000))]);
    let confirms = Arc::new(Confirms::default());
    for i in 1..=3 {
        publish(&reps[0], &format!("m{i}"), &confirms, i);
    }
    g.commit_all();
    let follower_taker = Taker::new(10);
    reps[1]
        .queue()
        .consume(Arc::from("f"), follower_taker.clone(), false, false)
        .unwrap();
    reps[1].queue().dispatch();
    assert!(
        follower_taker.got.lock().is_empty(),
        "a follower does not deliver"
    );
    assert!(
        reps[1].queue().get(true).unwrap().is_none(),
        "nor hands out a basic.get"
    );
    fx.clock.advance(2000);
    reps[1].queue().expire(fx.now());
    assert!(g.pending.lock().is_empty(), "a follower proposes no expiry");
    reps[0].queue().expire(fx.now());
    assert_eq!(g.pending.lock().len(), 1, "the leader proposes one Drop");
    assert_eq!(
        reps[0].queue().depth().ready,
        0,
        "withheld from delivery meanwhile"
    );
    g.commit_all();
    for r in &reps {
        assert_eq!(r.queue().depth().ready + r.queue().depth().unacked, 0);
    }

    // A purge: nothing is delivered between its proposal and its apply.
    for i in 4..=6 {
        publish(&reps[0], &format!("m{i}"), &confirms, i);
    }
    g.commit_all();
    let n = reps[0].queue().purge().unwrap();
    assert_eq!(n, 3);
    let t = Taker::new(10);
    reps[0]
        .queue()
        .consume(Arc::from("late"), t.clone(), false, false)
        .unwrap();
    reps[0].queue().dispatch();
    assert!(
        t.got.lock().is_empty(),
        "paused while the purge is proposed"
    );
    g.commit_all();
    assert!(t.got.lock().is_empty());
    for r in &reps {
        assert_eq!(r.queue().depth().ready, 0);
    }
    publish(&reps[0], "m7", &confirms, 7);
    g.commit_all();
    assert_eq!(t.bodies(), ["m7"], "delivery resumed after the purge");
}

/// Random publishes, acks, requeues, rejects, commits and failovers
/// (pending proposals committed or lost), over many seeds: at the end
/// every replica holds the same messages, every confirmed message was
/// acked, rejected or is still there, and nothing uncommitted was ever
/// delivered.
#[test]
fn replicas_agree_and_lose_no_confirmed_message_across_failovers() {
    let only: Option<u64> = std::env::var("RQ_SEED").ok().and_then(|s| s.parse().ok());
    for seed in 0..200 {
        if only.is_none_or(|o| o == seed) {
            run(seed);
        }
    }
}

fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let fx = Fixture::new();
    let (g, reps) = group(&fx, 3, &[]);
    let confirms = Arc::new(Confirms::default());
    let mut leader = 0usize;
    let mut seq = 0u64;
    let mut bodies: BTreeMap<u64, String> = BTreeMap::new(); // seq -> body
    let mut gone: BTreeSet<String> = BTreeSet::new(); // acked or rejected
    let mut taker = Taker::new(u32::MAX);
    let attach = |r: &Replica, t: &Arc<Taker>| {
        let id = r
            .queue()
            .consume(Arc::from("c"), t.clone(), false, false)
            .unwrap();
        r.queue().dispatch();
        id
    };
    let mut consumer = attach(&reps[leader], &taker);
    let mut handled = 0usize;
    let dbg = std::env::var("RQ_DEBUG").is_ok();
    for _ in 0..rng.gen_range(10..80) {
        if dbg {
            let h: Vec<Vec<u64>> = reps
                .iter()
                .map(|r| held(r).keys().copied().collect())
                .collect();
            eprintln!(
                "leader {leader} pending {} held {h:?}",
                g.pending.lock().len()
            );
        }
        match rng.gen_range(0..10) {
            0..=3 => {
                seq += 1;
                let body = format!("s{seed}m{seq}");
                bodies.insert(seq, body.clone());
                publish(&reps[leader], &body, &confirms, seq);
            }
            4..=5 => g.commit(rng.gen_range(1..4)),
            6..=7 => {
                // The consumer handles what it got since last time.
                let got: Vec<(u64, String)> = taker.got.lock()[handled..]
                    .iter()
                    .map(|d| (d.msg_id, body_of(&d.message)))
                    .collect();
                handled += got.len();
                for (id, body) in got {
                    assert!(g.log.lock().contains_key(&id), "delivered before committed");
                    let q = reps[leader].queue();
                    let op = rng.gen_range(0..4);
                    if dbg {
                        eprintln!("  handle {id} op {op}");
                    }
                    match op {
                        0 => q.requeue(&[id]).unwrap(),
                        1 => {
                            q.reject(&[id]).unwrap();
                            gone.insert(body);
                        }
                        _ => {
                            q.settle(&[id]).unwrap();
                            gone.insert(body);
                        }
                    }
                }
            }
            8 => {
                // Leader change: its pending proposals commit or are lost.
                let keep = rng.gen_bool(0.5);
                if dbg {
                    eprintln!("  failover keep={keep}");
                }
                if keep {
                    g.commit_all();
                } else {
                    g.lose_pending();
                }
                reps[leader].set_leader(false);
                // The client subscribes again on the new leader's node.
                reps[leader].queue().cancel(consumer);
                // Acks of messages it had delivered but not yet proposed:
                // none (handled above proposes at once); those proposed and
                // lost are redelivered by the next leader.
                leader = (leader + rng.gen_range(1..3)) % 3;
                reps[leader].set_leader(true);
                taker = Taker::new(u32::MAX);
                handled = 0;
                consumer = attach(&reps[leader], &taker);
            }
            9 if rng.gen_bool(0.3) => {
                // basic.get with auto-ack on the leader.
                if let Some((d, _)) = reps[leader].queue().get(true).unwrap() {
                    assert!(g.log.lock().contains_key(&d.msg_id));
                    gone.insert(body_of(&d.message));
                }
            }
            _ => g.commit(1),
        }
    }
    g.commit_all();
    // The leader hands everything it holds to the consumer it has now
    // (nothing is stuck with a consumer of an earlier leadership).
    reps[leader].queue().dispatch();
    assert_eq!(reps[leader].queue().depth().ready, 0, "seed {seed}");
    let delivered: BTreeSet<u64> = taker.offsets().into_iter().collect();
    let unacked = reps[leader].queue().with_state(|s| s.unacked_ids());
    for id in unacked {
        assert!(
            delivered.contains(&id),
            "seed {seed}: {id} is out to no current consumer"
        );
    }
    // Acks and rejects that were lost with a leader's pending proposals
    // did not happen: their messages are still held.
    let held_ids: Vec<BTreeMap<u64, ()>> = reps.iter().map(held).collect();
    assert_eq!(held_ids[0], held_ids[1], "seed {seed}");
    assert_eq!(held_ids[1], held_ids[2], "seed {seed}");
    let present: BTreeSet<String> = held_ids[leader]
        .keys()
        .map(|id| {
            let b = g.log.lock()[id].clone();
            match super::record::decode(b).unwrap() {
                super::record::Record::Enqueue { msg, .. } => body_of(&msg),
                _ => panic!("seed {seed}: held id {id} is not an enqueue"),
            }
        })
        .collect();
    let ok: BTreeSet<u64> = confirms.ok.lock().iter().copied().collect();
    for s in &ok {
        let b = &bodies[s];
        assert!(
            present.contains(b) || gone.contains(b),
            "seed {seed}: confirmed {b} was lost"
        );
    }
    let failed: BTreeSet<u64> = confirms.failed.lock().iter().copied().collect();
    assert!(ok.is_disjoint(&failed), "seed {seed}: confirmed and nacked");
}

/// Entries opened by Marks (publisher deduplication): a resend of a batch
/// applied before is skipped, a batch past a missing one is skipped (its
/// proposer sends again from the missing one), on every replica alike;
/// the skipped Enqueues leave the leader's pending count.
#[test]
fn numbered_entries_apply_once_and_in_their_order() {
    use super::record::{encode_enqueue, encode_mark};
    use super::state::MarkOutcome;
    let fx = Fixture::new();
    let (g, reps) = group(&fx, 2, &[]);
    let enqueue = |body: &str| {
        let mut out = Vec::new();
        encode_enqueue(&message(body, true), None, None, &mut out).unwrap();
        Bytes::from(out)
    };
    let mut next = 100u64;
    let mut entry = |recs: Vec<Bytes>| {
        let at: Vec<(RecordPos, Bytes)> = recs
            .into_iter()
            .map(|r| {
                next += 1;
                g.log.lock().insert(next, r.clone());
                (pos(next, &r), r)
            })
            .collect();
        at
    };
    let b1 = vec![encode_mark(7, 1, &[]), enqueue("a"), enqueue("b")];
    let b2 = vec![encode_mark(7, 2, &[]), enqueue("c")];
    let b3 = vec![encode_mark(7, 3, &[]), enqueue("d")];
    let steps = [
        (b1.clone(), MarkOutcome::Apply),
        (b1, MarkOutcome::Duplicate(vec![])),
        (b3.clone(), MarkOutcome::Gap),
        (b2, MarkOutcome::Apply),
        (b3, MarkOutcome::Apply),
    ];
    for (recs, want) in steps {
        let e = entry(recs);
        for r in &reps {
            let (got, errors) = r.apply_entry(e.clone());
            assert_eq!(got, want);
            assert!(errors.is_empty());
        }
    }
    for r in &reps {
        assert_eq!(r.queue().depth().ready, 4, "a, b, c, d once each");
    }
    let taker = Taker::new(100);
    reps[0]
        .queue()
        .consume(Arc::from("c"), taker.clone(), false, false)
        .unwrap();
    reps[0].queue().dispatch();
    assert_eq!(
        taker.bodies(),
        ["a", "b", "c", "d"],
        "in the batches' order"
    );
    // An entry without a Mark (written before them) applies as it is.
    let (got, _) = reps[1].apply_entry(entry(vec![enqueue("e")]));
    assert_eq!(got, MarkOutcome::Apply);
    assert_eq!(reps[1].queue().depth().ready, 5);
}

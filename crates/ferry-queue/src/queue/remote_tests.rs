//! A follower replica serving its node's consumers through its leader
//! (`remote`), over the simulated group of `replica_tests`: the test plays
//! the leader's side of the port (which ferry-cluster runs over the node
//! links; crates/ferry-cluster/tests/queue_group.rs runs the real one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::remote::{Forward, LeaderPort};
use super::replica_tests::{group, publish};
use super::sinks::{ConsumerSink, Delivery};
use crate::error::Result;
use crate::test_support::*;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Records what a follower asks of its leader.
#[derive(Debug, Default)]
struct Port {
    wakes: AtomicUsize,
    forwarded: Mutex<Vec<Forward>>,
    gets: AtomicUsize,
}

impl LeaderPort for Port {
    fn wake(&self) {
        self.wakes.fetch_add(1, Ordering::Relaxed);
    }
    fn forward(&self, op: Forward) {
        self.forwarded.lock().push(op);
    }
    fn get(&self, _no_ack: bool) -> Result<Option<(Delivery, u32)>> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }
    fn purge(&self) -> Result<u32> {
        Ok(7)
    }
}

/// A consumer sink that stands in for another node's consumer.
#[derive(Debug, Default)]
struct StandIn(Taker);

impl ConsumerSink for StandIn {
    fn reserve(&self) -> bool {
        self.0.reserve()
    }
    fn unreserve(&self) {
        self.0.unreserve()
    }
    fn deliver(&self, tag: &Arc<str>, d: Delivery) {
        self.0.deliver(tag, d)
    }
    fn cancelled(&self, tag: &Arc<str>) {
        self.0.cancelled(tag)
    }
    fn forwards(&self) -> bool {
        true
    }
}

#[test]
fn a_follower_consumer_is_fed_through_its_port_within_its_credit() {
    let fx = Fixture::new();
    let (g, reps) = group(&fx, 3, &[]);
    let port = Arc::new(Port::default());
    reps[1].bind_leader(port.clone());
    let follower = reps[1].queue();
    let taker = Taker::new(2);
    let cid = follower
        .consume(Arc::from("c"), taker.clone(), false, false)
        .unwrap();
    follower.dispatch();
    assert!(
        port.wakes.load(Ordering::Relaxed) > 0,
        "the leader is asked"
    );
    let confirms = Arc::new(Confirms::default());
    for i in 1..=4 {
        publish(&reps[0], &format!("m{i}"), &confirms, i);
    }
    g.commit_all();
    assert!(
        taker.got.lock().is_empty(),
        "a follower delivers nothing itself"
    );

    // What the leader is told: the consumer, and that it takes 2 now.
    let wanted = reps[1].remote_consumers(100);
    assert_eq!(wanted.len(), 1);
    assert_eq!((wanted[0].id, wanted[0].want), (cid, 2));
    assert_eq!(&*wanted[0].tag, "c");

    // The leader delivers three (one more than the credit: it waits).
    let out = Taker::new(3);
    let lid = reps[0]
        .queue()
        .consume(Arc::from("x"), out.clone(), false, false);
    reps[0].queue().dispatch();
    reps[0].queue().cancel(lid.unwrap());
    let items: Vec<(u64, Delivery)> = out.got.lock().iter().map(|d| (cid, d.clone())).collect();
    assert!(reps[1].deliver_remote(items.clone()).is_empty());
    assert_eq!(taker.bodies(), ["m1", "m2"]);
    assert_eq!(
        reps[1].remote_consumers(100)[0].want,
        0,
        "full, one waiting"
    );

    // Acks on the follower go to the leader; the follower proposes nothing.
    let ids = taker.offsets();
    let wakes = port.wakes.load(Ordering::Relaxed);
    follower.settle(&ids).unwrap();
    assert_eq!(*port.forwarded.lock(), [Forward::Ack(ids.clone())]);
    assert!(
        port.wakes.load(Ordering::Relaxed) > wakes,
        "an ack frees credit: the leader is asked for more"
    );
    assert_eq!(follower.depth().ready, 4, "nothing proposed from here");

    // Credit frees: the waiting one is handed over, in order.
    taker.grant(1);
    follower.dispatch();
    assert_eq!(taker.bodies(), ["m1", "m2", "m3"]);
    let third = taker.offsets()[2];
    follower.reject(&[third]).unwrap();
    follower.requeue(&[third]).unwrap();
    assert_eq!(
        port.forwarded.lock()[1..],
        [Forward::Reject(vec![third]), Forward::Requeue(vec![third])]
    );

    // A delivery for a consumer that is gone goes back to the leader.
    assert_eq!(
        reps[1].deliver_remote(vec![(cid + 1000, items[0].1.clone())]),
        [ids[0]]
    );

    // basic.get and queue.purge on a follower ask the leader.
    assert!(follower.get(false).unwrap().is_none());
    assert_eq!(port.gets.load(Ordering::Relaxed), 1);
    assert_eq!(follower.purge().unwrap(), 7);
    assert_eq!(follower.depth().ready, 4, "nothing proposed from here");

    // Cancelled with a delivery waiting: it goes back to the leader.
    assert!(reps[1].deliver_remote(vec![items[2].clone()]).is_empty());
    follower.cancel(cid);
    assert_eq!(
        port.forwarded.lock().last(),
        Some(&Forward::Requeue(vec![items[2].1.msg_id]))
    );
    assert!(reps[1].remote_consumers(100).is_empty());
}

#[test]
fn stepping_down_ends_stand_ins_and_keeps_local_consumers() {
    let fx = Fixture::new();
    let (g, reps) = group(&fx, 3, &[]);
    let q = reps[0].queue();
    let local = Taker::new(10);
    let stand_in = Arc::new(StandIn::default());
    stand_in.0.grant(10);
    q.consume(Arc::from("local"), local.clone(), false, false)
        .unwrap();
    q.consume(Arc::from("remote"), stand_in.clone(), false, false)
        .unwrap();
    let confirms = Arc::new(Confirms::default());
    for i in 1..=4 {
        publish(&reps[0], &format!("m{i}"), &confirms, i);
    }
    g.commit_all();
    assert_eq!(local.got.lock().len() + stand_in.0.got.lock().len(), 4);
    reps[0].set_leader(false);
    assert!(*stand_in.0.cancelled.lock(), "the stand-in ends");
    assert!(!*local.cancelled.lock(), "this node's consumer stays");
    assert_eq!(q.depth().ready, 4, "every checkout went back");
    // It is now a consumer the new leader feeds.
    assert_eq!(reps[0].remote_consumers(100).len(), 1);
    assert_eq!(&*reps[0].remote_consumers(100)[0].tag, "local");
    // Taking over again: it is served here.
    reps[0].set_leader(true);
    assert!(reps[0].remote_consumers(100).is_empty());
    assert!(
        local.got.lock().len() > 2,
        "delivered again by this replica"
    );
}

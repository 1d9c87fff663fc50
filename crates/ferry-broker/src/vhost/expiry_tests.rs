//! Queue expiry (`x-expires`) through a whole broker: use restarts the
//! countdown, and so does a broker restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::broker::Broker;
use crate::test_support::mtable as args;
use crate::test_support::*;
use ferry_log::SimIo;
use ferry_model::Value;
use ferry_queue::clock::{Clock, ManualClock};
use std::sync::Arc;

// ----- x-expires -------------------------------------------------------------

fn exists(b: &Broker, name: &str) -> bool {
    b.vhost("/").unwrap().queue_for(name, 1).is_ok()
}

#[test]
fn an_unused_queue_expires_and_use_restarts_the_countdown() {
    let io = SimIo::new();
    let clock = ManualClock::new(T0);
    let b = broker(&io, &clock);
    let v = b.vhost("/").unwrap();
    let a = args(&[("x-expires", Value::I32(1000))]);
    v.declare_queue(spec("e", true, a.clone()), false, 1)
        .unwrap();
    assert_eq!(b.expiry_timer().next(), T0 + 1000);
    clock.advance(600);
    v.queue_for("e", 1).unwrap().get(true).unwrap();
    clock.advance(600);
    assert_eq!(b.expire_due(clock.now_ms()), T0 + 1600);
    assert!(exists(&b, "e"), "basic.get restarted the countdown");
    v.declare_queue(spec("e", true, a.clone()), true, 1)
        .unwrap();
    clock.advance(900);
    b.expire_due(clock.now_ms());
    assert!(exists(&b, "e"), "a redeclaration restarted it");
    // A consumer keeps it alive however long; its cancel restarts it.
    let q = v.queue_for("e", 1).unwrap();
    let id = q
        .consume(Arc::from("c"), Taker::new(1), true, false)
        .unwrap();
    clock.advance(5000);
    assert_eq!(b.expire_due(clock.now_ms()), ferry_queue::clock::NEVER);
    assert!(exists(&b, "e"));
    q.cancel(id);
    clock.advance(999);
    b.expire_due(clock.now_ms());
    assert!(exists(&b, "e"));
    clock.advance(1);
    b.expire_due(clock.now_ms());
    assert!(!exists(&b, "e"), "unused for 1000 ms: deleted");
    assert!(q.is_deleted());
}

#[test]
fn queue_expiry_restarts_with_the_broker() {
    let io = SimIo::new();
    let clock = ManualClock::new(T0);
    let b = broker(&io, &clock);
    let a = args(&[("x-expires", Value::I32(1000))]);
    b.vhost("/")
        .unwrap()
        .declare_queue(spec("e", true, a), false, 1)
        .unwrap();
    clock.advance(900);
    b.shutdown();
    drop(b);
    // Down for longer than x-expires: RabbitMQ restarts the countdown when
    // the queue comes back, and so does Ferry.
    clock.advance(5000);
    let b = broker(&io, &clock);
    assert!(exists(&b, "e"));
    assert_eq!(b.expire_due(clock.now_ms()), clock.now_ms() + 1000);
    clock.advance(1000);
    b.expire_due(clock.now_ms());
    assert!(!exists(&b, "e"));
    b.shutdown();
    drop(b);
    let b = broker(&io, &clock);
    assert!(!exists(&b, "e"), "the deletion is durable");
}

//! Delayed retry (`x-retry-*`) and delayed exchanges, driven by a
//! `ManualClock` over SimIo: waits and their backoff, order when due, the
//! delivery limit, purge, and what a restart (clean or a crash) restores.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::dead_letter::Reason;
use super::*;
use crate::clock::NEVER;
use crate::test_support::ms;
use crate::test_support::{message, Fixture, Taker};
use ferry_model::message::Message;
use ferry_model::Value;
use std::sync::Arc;

fn msg(body: &str) -> Arc<Message> {
    Arc::new(message(body, true))
}

fn exponential() -> Vec<(&'static str, Value)> {
    vec![
        ("x-retry-delay", Value::I32(100)),
        ("x-retry-backoff", ms("exponential")),
        ("x-retry-max-delay", Value::I32(300)),
    ]
}

/// Takes the head (checked out) and returns it with a retry; says how
/// long it now waits.
fn take_and_return(f: &Fixture, q: &Queue) -> u64 {
    let (d, _) = q.get(false).unwrap().expect("a ready message");
    q.requeue(&[d.msg_id]).unwrap();
    q.next_expiry() - f.now()
}

#[test]
fn returns_wait_with_exponential_backoff_up_to_the_cap() {
    let f = Fixture::new();
    let q = f.open(&exponential());
    q.publish(&msg("m"), None).unwrap();
    let mut waits = Vec::new();
    for attempt in 0..5u32 {
        let wait = take_and_return(&f, &q);
        waits.push(wait);
        let d = q.depth();
        assert_eq!(
            (d.ready, d.unacked, d.delayed),
            (0, 0, 1),
            "attempt {attempt}"
        );
        assert!(q.get(false).unwrap().is_none(), "invisible while it waits");
        // One ms early: still waiting.
        f.clock.advance(wait - 1);
        q.expire(f.now());
        assert_eq!(q.counts().0, 0);
        f.clock.advance(1);
        q.expire(f.now());
        assert_eq!(q.counts().0, 1, "ready exactly at its time");
    }
    assert_eq!(waits, [100, 200, 300, 300, 300]);
    let (d, _) = q.get(true).unwrap().unwrap();
    assert!(d.redelivered);
    assert_eq!(d.delivery_count, 5);
}

#[test]
fn fixed_backoff_and_a_consumer_gets_it_back_when_due() {
    let f = Fixture::new();
    let q = f.open(&[("x-retry-delay", Value::I32(250))]);
    let taker = Taker::new(10);
    q.consume(Arc::from("c"), taker.clone(), false, false)
        .unwrap();
    q.publish(&msg("m"), None).unwrap();
    for n in 1..=3u32 {
        let id = taker.got.lock().last().unwrap().msg_id;
        q.requeue(&[id]).unwrap();
        assert_eq!(q.next_expiry(), f.now() + 250);
        assert_eq!(
            taker.got.lock().len() as u32,
            n,
            "not redelivered before its time"
        );
        f.clock.advance(250);
        q.expire(f.now());
        let got = taker.got.lock();
        let last = got.last().unwrap();
        assert_eq!(got.len() as u32, n + 1);
        assert!(last.redelivered);
        assert_eq!(last.delivery_count, n);
    }
}

#[test]
fn a_due_retry_goes_back_to_its_original_place() {
    let f = Fixture::new();
    let q = f.open(&[("x-retry-delay", Value::I32(50))]);
    for b in ["a", "b", "c"] {
        q.publish(&msg(b), None).unwrap();
    }
    let (a, _) = q.get(false).unwrap().unwrap();
    q.requeue(&[a.msg_id]).unwrap();
    q.publish(&msg("d"), None).unwrap();
    f.clock.advance(50);
    q.expire(f.now());
    let mut order = Vec::new();
    while let Some((d, _)) = q.get(true).unwrap() {
        order.push(String::from_utf8_lossy(&d.message.body).into_owned());
    }
    assert_eq!(order, ["a", "b", "c", "d"]);
}

#[test]
fn past_the_delivery_limit_a_return_dead_letters_instead_of_waiting() {
    let f = Fixture::new();
    let q = f.open(&[
        ("x-retry-delay", Value::I32(10)),
        ("x-delivery-limit", Value::I32(2)),
        ("x-dead-letter-exchange", ms("dlx")),
    ]);
    q.publish(&msg("m"), None).unwrap();
    for _ in 0..2 {
        let wait = take_and_return(&f, &q);
        assert_eq!(wait, 10);
        f.clock.advance(wait);
        q.expire(f.now());
    }
    let (d, _) = q.get(false).unwrap().unwrap();
    q.requeue(&[d.msg_id]).unwrap();
    let letters = f.letters.take_all();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, Reason::DeliveryLimit);
    let depth = q.depth();
    assert_eq!((depth.ready, depth.unacked, depth.delayed), (0, 0, 0));
    assert_eq!(q.next_expiry(), NEVER);
}

#[test]
fn a_restart_restores_pending_waits_from_the_log() {
    let f = Fixture::new();
    let a = exponential();
    let q = f.open(&a);
    q.publish(&msg("first"), None).unwrap();
    q.publish(&msg("second"), None).unwrap();
    // "first" returns twice (waits 100, then 200), "second" once (100).
    take_and_return(&f, &q);
    f.clock.advance(100);
    q.expire(f.now());
    let first_wait = take_and_return(&f, &q);
    assert_eq!(first_wait, 200);
    let first_due = f.now() + 200;
    let second_wait = take_and_return(&f, &q);
    assert_eq!(second_wait, 100);
    let second_due = f.now() + 100;
    q.sync_now();
    drop(q);
    f.clock.advance(20);
    let q = f.open(&a);
    let d = q.depth();
    assert_eq!(
        (d.ready, d.delayed),
        (0, 2),
        "both still wait after the restart"
    );
    assert_eq!(q.next_expiry(), second_due, "posted to the expiry timer");
    q.expire(second_due - 1);
    assert!(q.get(false).unwrap().is_none());
    q.expire(second_due);
    let (d, _) = q.get(true).unwrap().unwrap();
    assert_eq!((&*d.message.body, d.delivery_count), (&b"second"[..], 1));
    assert!(d.redelivered);
    assert_eq!(q.next_expiry(), first_due);
    q.expire(first_due);
    let (d, _) = q.get(true).unwrap().unwrap();
    assert_eq!((&*d.message.body, d.delivery_count), (&b"first"[..], 2));
}

#[test]
fn a_crash_keeps_logged_waits_and_a_wait_already_over_is_ready_at_once() {
    let f = Fixture::new();
    let a = [("x-retry-delay", Value::I32(1000))];
    let q = f.open(&a);
    q.publish(&msg("m"), None).unwrap();
    take_and_return(&f, &q);
    let due = q.next_expiry();
    q.sync_now();
    f.io.crash(7);
    drop(q);
    let q = f.open(&a);
    assert_eq!((q.depth().delayed, q.next_expiry()), (1, due));
    // Down longer than the wait: ready on the first look.
    f.clock.advance(5000);
    let (d, _) = q.get(true).unwrap().unwrap();
    assert_eq!(d.delivery_count, 1);
}

#[test]
fn purge_takes_waiting_messages_too_and_replay_agrees() {
    let f = Fixture::new();
    let a = [("x-retry-delay", Value::I32(100))];
    let q = f.open(&a);
    q.publish(&msg("waits"), None).unwrap();
    q.publish(&msg("ready"), None).unwrap();
    take_and_return(&f, &q);
    assert_eq!(q.purge().unwrap(), 2);
    assert_eq!(q.depth().delayed, 0);
    q.sync_now();
    drop(q);
    let q = f.open(&a);
    assert_eq!((q.depth().ready, q.depth().delayed), (0, 0));
}

#[test]
fn a_queue_without_retry_requeues_at_once() {
    let f = Fixture::new();
    let q = f.open(&[("x-retry-delay", Value::I32(0))]);
    q.publish(&msg("m"), None).unwrap();
    take_and_return(&f, &q);
    assert_eq!((q.counts().0, q.depth().delayed), (1, 0));
}

#[test]
fn one_waiting_retry_is_not_ready_after_a_restart() {
    let f = Fixture::new();
    let a = [("x-retry-delay", Value::I32(2000))];
    let q = f.open(&a);
    q.publish(&msg("r"), None).unwrap();
    take_and_return(&f, &q);
    q.sync_now();
    drop(q);
    let q = f.open(&a);
    assert_eq!(q.counts().0, 0, "declare-ok counts no ready message");
    assert_eq!((q.depth().ready, q.depth().delayed), (0, 1));
}

//! Delayed retry (`x-retry-*`) and delayed exchanges, driven by a
//! `ManualClock` over SimIo: waits and their backoff, order when due, the
//! delivery limit, purge, and what a restart (clean or a crash) restores.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::dead_letter::Reason;
use super::*;
use crate::broker::Broker;
use crate::clock::{ManualClock, NEVER};
use crate::message::Message;
use crate::test_support::{
    body_of, broker, headers_of, message, mtable as table, props, spec, Fixture, Taker, T0,
};
use crate::test_support::{ms, mtable};
use crate::vhost::ExchangeArgs;
use bytes::Bytes;
use ferry_log::SimIo;
use ferry_model::{Table, Value};
use ferry_route::{Destination, ExchangeKind};
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

// ----- delayed exchanges, through a broker --------------------------------

struct World {
    io: SimIo,
    clock: Arc<ManualClock>,
    broker: Arc<Broker>,
}

impl World {
    fn new() -> Self {
        let io = SimIo::new();
        let clock = ManualClock::new(T0);
        let broker = broker(&io, &clock);
        World { io, clock, broker }
    }

    fn restart(&mut self, crash: bool) {
        if crash {
            self.io.crash(3);
        } else {
            self.broker.shutdown();
        }
        self.broker = broker(&self.io, &self.clock);
    }

    fn vhost(&self) -> Arc<crate::VHost> {
        self.broker.vhost("/").unwrap()
    }

    fn declare_delayed(&self, name: &str, kind: &str) {
        self.vhost()
            .declare_exchange(
                name,
                "x-delayed-message",
                false,
                ExchangeArgs {
                    durable: true,
                    arguments: mtable(&[("x-delayed-type", ms(kind))]),
                    ..ExchangeArgs::default()
                },
            )
            .unwrap();
    }

    fn queue(&self, name: &str, bind_from: &str, key: &str) -> Arc<Queue> {
        let v = self.vhost();
        v.declare_queue(spec(name, true, Table::new()), false, 1)
            .unwrap();
        v.binding(
            true,
            bind_from,
            Destination::Queue(Arc::from(name)),
            key,
            Table::new(),
            1,
        )
        .unwrap();
        v.queue_for(name, 1).unwrap()
    }

    /// Publishes `body` with `x-delay` (if any); returns how many queues
    /// the publish reached right away (the hidden queue counts).
    fn publish(&self, exchange: &str, key: &str, body: &str, delay: Option<Value>) -> usize {
        let headers = match delay {
            Some(d) => table(&[("x-delay", d)]),
            None => Table::new(),
        };
        let properties = props(headers.clone(), None);
        let m = Arc::new(Message {
            exchange: Arc::from(exchange),
            routing_key: Arc::from(key),
            properties,
            body: Bytes::copy_from_slice(body.as_bytes()),
            persistent: true,
            expiration_ms: None,
            bcc: Vec::new(),
        });
        let mut qs = Vec::new();
        self.vhost()
            .route(exchange, &m, Some(&headers), &mut qs)
            .unwrap();
        for q in &qs {
            q.publish(&m, None).unwrap();
        }
        qs.len()
    }

    fn sweep_at(&self, t: u64) -> u64 {
        self.clock.set(t);
        self.broker.expire_due(t)
    }
}

fn drain(q: &Queue) -> Vec<(String, Option<Value>)> {
    let mut out = Vec::new();
    while let Some((d, _)) = q.get(true).unwrap() {
        let h = headers_of(&d);
        out.push((body_of(&d.message), h.get("x-delay").cloned()));
    }
    out
}

#[test]
fn a_delayed_exchange_needs_an_existing_delayed_type() {
    let w = World::new();
    let v = w.vhost();
    for bad in [Table::new(), mtable(&[("x-delayed-type", ms("nope"))])] {
        let e = v
            .declare_exchange(
                "d",
                "x-delayed-message",
                false,
                ExchangeArgs {
                    arguments: bad,
                    ..ExchangeArgs::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::PreconditionFailed);
        assert!(e
            .to_string()
            .contains("Invalid argument, 'x-delayed-type' must be an existing exchange type"));
    }
    assert!(!v.has_exchange("d"));
    w.declare_delayed("d", "topic");
    let x = v.exchanges().into_iter().find(|x| &*x.name == "d").unwrap();
    assert_eq!(x.kind, ExchangeKind::DelayedMessage);
    assert_eq!(x.kind.as_str(), "x-delayed-message");
}

#[test]
fn held_messages_are_routed_in_due_order_with_x_delay_negated() {
    let w = World::new();
    w.declare_delayed("d", "direct");
    let q = w.queue("q", "d", "k");
    assert_eq!(w.publish("d", "k", "late", Some(Value::I32(300))), 1);
    assert_eq!(w.publish("d", "k", "soon", Some(Value::I64(100))), 1);
    assert_eq!(w.publish("d", "k", "now", None), 1);
    assert_eq!(w.publish("d", "k", "negative", Some(Value::I32(-5))), 1);
    assert_eq!(
        w.publish("d", "other", "unroutable", Some(Value::I32(50))),
        1,
        "held: counts as routed (no basic.return), dropped when due"
    );
    assert_eq!(
        drain(&q),
        [
            ("now".to_string(), None),
            ("negative".to_string(), Some(Value::I32(-5)))
        ]
    );
    assert!(
        w.vhost().queues().iter().all(|q| &**q.name() == "q"),
        "hidden queue not listed"
    );
    assert_eq!(w.sweep_at(T0 + 50), T0 + 100);
    assert_eq!(w.sweep_at(T0 + 99), T0 + 100);
    assert!(drain(&q).is_empty());
    assert_eq!(w.sweep_at(T0 + 100), T0 + 300);
    assert_eq!(drain(&q), [("soon".to_string(), Some(Value::I32(-100)))]);
    // A binding made while the message waits counts: routed at due time.
    let late = w.queue("late", "d", "k");
    assert_eq!(w.sweep_at(T0 + 300), NEVER);
    assert_eq!(drain(&q), [("late".to_string(), Some(Value::I32(-300)))]);
    assert_eq!(drain(&late).len(), 1);
}

/// Messages falling due in the same sweep go out by due time, then in
/// publish order for equal due times: not in publish order (the ids).
#[test]
fn held_messages_due_in_one_sweep_go_out_in_due_order() {
    let w = World::new();
    w.declare_delayed("d", "fanout");
    let q = w.queue("q", "d", "");
    for (body, delay) in [("c", 300), ("a1", 100), ("b", 200), ("a2", 100), ("d", 400)] {
        w.publish("d", "", body, Some(Value::I32(delay)));
    }
    assert_eq!(w.sweep_at(T0 + 300), T0 + 400);
    let names: Vec<String> = drain(&q).into_iter().map(|(b, _)| b).collect();
    assert_eq!(names, ["a1", "a2", "b", "c"]);
    assert_eq!(w.sweep_at(T0 + 400), NEVER);
    assert_eq!(drain(&q).len(), 1);
}

/// As in the plugin (its type's `route` runs for every exchange on the
/// way), a delayed exchange reached through an exchange-to-exchange
/// binding holds the message; the source's other bindings route it now.
#[test]
fn a_delayed_exchange_behind_an_exchange_binding_holds_too() {
    let w = World::new();
    w.declare_delayed("d", "direct");
    let v = w.vhost();
    v.declare_exchange("src", "fanout", false, ExchangeArgs::default())
        .unwrap();
    v.binding(
        true,
        "src",
        Destination::Exchange(Arc::from("d")),
        "",
        Table::new(),
        1,
    )
    .unwrap();
    let now = w.queue("now", "src", "");
    let q = w.queue("q", "d", "k");
    assert_eq!(w.publish("src", "k", "x", Some(Value::I32(100))), 2);
    assert_eq!(drain(&now), [("x".to_string(), Some(Value::I32(100)))]);
    assert!(drain(&q).is_empty(), "held, not routed through d");
    assert_eq!(w.sweep_at(T0 + 100), NEVER);
    assert_eq!(drain(&q), [("x".to_string(), Some(Value::I32(-100)))]);
    // Without a valid x-delay the chain routes at once.
    assert_eq!(w.publish("src", "k", "y", None), 2);
    assert_eq!(drain(&q).len(), 1);
}

#[test]
fn held_messages_survive_a_restart_and_a_crash_and_come_out_on_time() {
    let mut w = World::new();
    w.declare_delayed("d", "fanout");
    w.queue("q", "d", "");
    w.publish("d", "", "a", Some(Value::I32(1000)));
    w.publish("d", "", "b", Some(Value::I32(2000)));
    w.restart(false);
    w.publish("d", "", "c", Some(Value::I32(3000)));
    // Synced by the publish path's group commit before the crash.
    for q in w.vhost().delayed_queues() {
        q.sync_now();
    }
    w.restart(true);
    let q = w.vhost().queue_for("q", 1).unwrap();
    assert_eq!(w.sweep_at(T0 + 999), T0 + 1000);
    assert!(drain(&q).is_empty());
    w.sweep_at(T0 + 1000);
    assert_eq!(drain(&q).len(), 1);
    // Down past two due times: both come out on the first sweep, in order.
    w.restart(false);
    let q = w.vhost().queue_for("q", 1).unwrap();
    assert_eq!(w.sweep_at(T0 + 5000), NEVER);
    let names: Vec<String> = drain(&q).into_iter().map(|(b, _)| b).collect();
    assert_eq!(names, ["b", "c"]);
    // Released and settled: nothing comes back after another restart.
    w.restart(false);
    assert_eq!(w.sweep_at(T0 + 6000), NEVER);
    assert!(drain(&w.vhost().queue_for("q", 1).unwrap()).is_empty());
}

#[test]
fn deleting_a_delayed_exchange_drops_what_it_held() {
    let mut w = World::new();
    w.declare_delayed("d", "direct");
    let q = w.queue("q", "d", "k");
    w.publish("d", "k", "x", Some(Value::I32(100)));
    w.vhost().delete_exchange("d", false).unwrap();
    assert!(w.vhost().delayed_queues().is_empty());
    assert_eq!(w.sweep_at(T0 + 100), NEVER);
    assert!(drain(&q).is_empty());
    // Declared again: a fresh store, nothing from before.
    w.declare_delayed("d", "direct");
    w.restart(false);
    let v = w.vhost();
    v.binding(
        true,
        "d",
        Destination::Queue(Arc::from("q")),
        "k",
        Table::new(),
        1,
    )
    .unwrap();
    assert_eq!(w.sweep_at(T0 + 200), NEVER);
    assert!(drain(&v.queue_for("q", 1).unwrap()).is_empty());
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

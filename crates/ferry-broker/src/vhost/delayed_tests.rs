//! Delayed exchanges through a whole broker, driven by a `ManualClock` over
//! SimIo: order when due, purge, and what a restart (clean or a crash) restores.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::broker::Broker;
use crate::test_support::mtable as table;
use crate::test_support::*;
use crate::vhost::ExchangeArgs;
use bytes::Bytes;
use ferry_log::SimIo;
use ferry_model::message::Message;
use ferry_model::{Table, Value};
use ferry_queue::clock::{ManualClock, NEVER};
use ferry_queue::queue::*;
use ferry_route::{Destination, ExchangeKind};
use std::sync::Arc;

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
        assert_eq!(e.kind(), ferry_queue::ErrorKind::PreconditionFailed);
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

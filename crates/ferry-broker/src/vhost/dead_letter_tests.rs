//! Dead-lettering through a whole broker: x-death, routing, cycles.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::broker::Broker;
use crate::test_support::*;
use crate::test_support::{ms as s, mtable as args};
use bytes::Bytes;
use ferry_log::SimIo;
use ferry_model::message::Message;
use ferry_model::{Table, Value};
use ferry_queue::clock::{Clock, ManualClock, NEVER};
use ferry_queue::queue::*;
use std::sync::Arc;

// ----- through a broker: x-death, routing, cycles ------------------------

struct World {
    clock: Arc<ManualClock>,
    broker: Arc<Broker>,
    vhost: Arc<crate::VHost>,
}

impl World {
    fn new() -> Self {
        let clock = ManualClock::new(T0);
        let broker = broker(&SimIo::new(), &clock);
        let vhost = broker.vhost("/").unwrap();
        World {
            clock,
            broker,
            vhost,
        }
    }

    fn declare(&self, name: &str, a: &[(&str, Value)]) -> Arc<Queue> {
        self.vhost
            .declare_queue(spec(name, false, args(a)), false, 1)
            .unwrap();
        self.vhost.queue_for(name, 1).unwrap()
    }

    fn publish(&self, exchange: &str, key: &str, headers: Table, expiration: Option<u64>) {
        let m = Arc::new(Message {
            exchange: Arc::from(exchange),
            routing_key: Arc::from(key),
            properties: props(headers, expiration.map(|e| e.to_string()).as_deref()),
            body: Bytes::from_static(b"body"),
            persistent: false,
            expiration_ms: expiration,
            bcc: Vec::new(),
        });
        let mut qs = Vec::new();
        self.vhost.route(exchange, &m, None, &mut qs).unwrap();
        for q in qs {
            q.publish(&m, None).unwrap();
        }
    }
}

/// The x-death array of headers read back as AMQP values.
fn x_death(h: &Table) -> &[Value] {
    match h.get("x-death") {
        Some(Value::Array(a)) => a.as_slice(),
        _ => &[],
    }
}

fn death_summary(h: &Table) -> Vec<(String, String)> {
    x_death(h)
        .iter()
        .map(|d| {
            let Value::Table(t) = d else {
                panic!("not a table")
            };
            let get = |k: &str| match t.get(k) {
                Some(Value::Str(s)) => String::from_utf8_lossy(s).into(),
                other => panic!("{k}: {other:?}"),
            };
            (get("queue"), get("reason"))
        })
        .collect()
}

#[test]
fn dead_letters_carry_x_death_and_lose_their_expiration() {
    let w = World::new();
    let dead = w.declare("dead", &[]);
    let src = w.declare(
        "src",
        &[
            ("x-dead-letter-exchange", ms("amq.direct")),
            ("x-dead-letter-routing-key", ms("dead-key")),
        ],
    );
    w.vhost
        .binding(
            true,
            "amq.direct",
            ferry_route::Destination::Queue(Arc::from("dead")),
            "dead-key",
            Table::new(),
            1,
        )
        .unwrap();
    let mut h = Table::new();
    h.insert("CC", Value::Array(vec![s("cc-key")]));
    h.insert("app", s("v"));
    w.publish("", "src", h, Some(60_000));
    let (d, _) = src.get(false).unwrap().unwrap();
    w.clock.advance(2_000);
    src.reject(&[d.msg_id]).unwrap();
    let (got, _) = dead.get(true).unwrap().expect("dead-lettered");
    assert_eq!(&*got.message.exchange, "amq.direct");
    assert_eq!(&*got.message.routing_key, "dead-key");
    assert_eq!(got.message.expiration_ms, None);
    assert_eq!(
        ferry_queue::props::expiration(&got.message.properties).unwrap(),
        None
    );
    let headers = headers_in(&got.message.properties);
    let h = &headers;
    assert!(h.get("CC").is_none(), "a dead-letter routing key drops CC");
    assert_eq!(h.get("app"), Some(&s("v")));
    assert_eq!(h.get("x-first-death-queue"), Some(&s("src")));
    assert_eq!(h.get("x-first-death-reason"), Some(&s("rejected")));
    assert_eq!(h.get("x-first-death-exchange"), Some(&s("")));
    let Value::Table(t) = &x_death(&headers)[0] else {
        panic!()
    };
    assert_eq!(t.get("time"), Some(&Value::Timestamp((T0 + 2_000) / 1000)));
    assert_eq!(t.get("original-expiration"), Some(&s("60000")));
    assert_eq!(
        t.get("routing-keys"),
        Some(&Value::Array(vec![s("src"), s("cc-key")]))
    );
    assert_eq!(t.get("count"), Some(&Value::I64(1)));
}

#[test]
fn expiry_cycles_are_dropped_and_rejections_break_them() {
    let w = World::new();
    // a (TTL) -> b (TTL) -> a: dropped when it would come back to a.
    let a = w.declare(
        "a",
        &[
            ("x-message-ttl", Value::I32(10)),
            ("x-dead-letter-exchange", ms("")),
            ("x-dead-letter-routing-key", ms("b")),
        ],
    );
    let b = w.declare(
        "b",
        &[
            ("x-message-ttl", Value::I32(10)),
            ("x-dead-letter-exchange", ms("")),
            ("x-dead-letter-routing-key", ms("a")),
        ],
    );
    w.publish("", "a", Table::new(), None);
    w.clock.advance(10);
    assert_eq!(w.broker.expire_due(w.clock.now_ms()), T0 + 20);
    assert_eq!((a.counts().0, b.counts().0), (0, 1));
    w.clock.advance(10);
    assert_eq!(w.broker.expire_due(w.clock.now_ms()), NEVER);
    assert_eq!((a.counts().0, b.counts().0), (0, 0));

    // c (rejected) -> d (TTL) -> c: delivered, a rejection is on the way.
    let c = w.declare(
        "c",
        &[
            ("x-dead-letter-exchange", ms("")),
            ("x-dead-letter-routing-key", ms("d")),
        ],
    );
    w.declare(
        "d",
        &[
            ("x-message-ttl", Value::I32(10)),
            ("x-dead-letter-exchange", ms("")),
            ("x-dead-letter-routing-key", ms("c")),
        ],
    );
    w.publish("", "c", Table::new(), None);
    let (m, _) = c.get(false).unwrap().unwrap();
    c.reject(&[m.msg_id]).unwrap();
    w.clock.advance(10);
    w.broker.expire_due(w.clock.now_ms());
    let (m, _) = c.get(true).unwrap().expect("came back to c");
    assert_eq!(
        death_summary(&headers_of(&m)),
        vec![
            ("d".into(), "expired".into()),
            ("c".into(), "rejected".into())
        ]
    );

    // A queue dead-lettering to itself by its own key on expiry: dropped.
    let e = w.declare(
        "e",
        &[
            ("x-message-ttl", Value::I32(0)),
            ("x-dead-letter-exchange", ms("")),
        ],
    );
    w.publish("", "e", Table::new(), None);
    assert_eq!(e.counts().0, 0);
}

#[test]
fn a_missing_dead_letter_exchange_drops_and_drop_head_chains_end() {
    let w = World::new();
    let q = w.declare("q", &[("x-dead-letter-exchange", ms("nowhere"))]);
    w.publish("", "q", Table::new(), None);
    let (m, _) = q.get(false).unwrap().unwrap();
    q.reject(&[m.msg_id]).unwrap();
    assert_eq!(q.counts().0, 0);

    // Two full drop-head queues pushing into each other: each push-out is
    // a maxlen death, so the chain stops at the first cycle.
    let x = w.declare(
        "x",
        &[
            ("x-max-length", Value::I32(1)),
            ("x-dead-letter-exchange", ms("")),
            ("x-dead-letter-routing-key", ms("y")),
        ],
    );
    let y = w.declare(
        "y",
        &[
            ("x-max-length", Value::I32(1)),
            ("x-dead-letter-exchange", ms("")),
            ("x-dead-letter-routing-key", ms("x")),
        ],
    );
    for _ in 0..5 {
        w.publish("", "x", Table::new(), None);
    }
    assert_eq!((x.counts().0, y.counts().0), (1, 1));
}

#[test]
fn queue_arguments_are_validated_on_declare() {
    let w = World::new();
    let err = w
        .vhost
        .declare_queue(
            spec("bad", false, args(&[("x-overflow", ms("sideways"))])),
            false,
            1,
        )
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("invalid arg 'x-overflow' for queue 'bad' in vhost '/': invalid_overflow"));
    // A redeclaration is compared, not validated again.
    w.declare("ok", &[("x-max-length", Value::I32(1))]);
    w.declare("ok", &[("x-max-length", Value::I32(1))]);
}

#[test]
fn cc_and_bcc_keys_route_a_publish_and_a_non_array_is_refused() {
    let w = World::new();
    for q in ["a", "b", "c"] {
        w.declare(q, &[]);
    }
    // Default exchange: queues by name, each once, unknown names skipped.
    let m = Message {
        routing_key: Arc::from("a"),
        ..message("m", false)
    };
    let mut h = Table::new();
    h.insert("CC", Value::Array(vec![s("c"), s("zz")]));
    h.insert("BCC", Value::Array(vec![s("zz"), s("b"), s("a")]));
    let mut out = Vec::new();
    w.vhost.route("", &m, Some(&h), &mut out).unwrap();
    let got: Vec<String> = out.iter().map(|q| q.name().to_string()).collect();
    assert_eq!(got, ["a", "c", "b"]);
    // A direct exchange: bindings of every key.
    for (q, key) in [("a", "ka"), ("b", "kb"), ("c", "kc")] {
        w.vhost
            .binding(
                true,
                "amq.direct",
                ferry_route::Destination::Queue(Arc::from(q)),
                key,
                Table::new(),
                1,
            )
            .unwrap();
    }
    let mut h = Table::new();
    h.insert("CC", Value::Array(vec![s("kb")]));
    h.insert("BCC", Value::Array(vec![s("kc"), s("kb")]));
    let m = Message {
        routing_key: Arc::from("ka"),
        ..message("m", false)
    };
    let mut out = Vec::new();
    w.vhost.route("amq.direct", &m, Some(&h), &mut out).unwrap();
    let mut got: Vec<String> = out.iter().map(|q| q.name().to_string()).collect();
    got.sort();
    assert_eq!(got, ["a", "b", "c"]);
    // Not an array: RabbitMQ's 406 text; the exchange is checked first.
    let mut bad = Table::new();
    bad.insert("CC", Value::I32(1));
    for exchange in ["", "amq.direct"] {
        let err = w
            .vhost
            .route(exchange, &m, Some(&bad), &mut out)
            .unwrap_err();
        assert_eq!(err.kind(), ferry_queue::ErrorKind::PreconditionFailed);
        assert_eq!(
            err.to_string(),
            r#"invalid message: {unacceptable_type_in_header,"CC",signedint}"#
        );
    }
    let err = w.vhost.route("nope", &m, Some(&bad), &mut out).unwrap_err();
    assert_eq!(err.kind(), ferry_queue::ErrorKind::NotFound);
}

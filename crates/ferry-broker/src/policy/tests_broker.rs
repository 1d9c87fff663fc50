//! Policies at work on a whole broker (SimIo, manual clock): applied to
//! running queues at once, removed with the policy, capped by operator
//! policies, persisted across a restart.

use super::PolicyKind;
use crate::test_support::{broker, drain, message, spec};
use ferry_log::SimIo;
use ferry_model::{Table, Value};
use ferry_queue::clock::{Clock, ManualClock};
use serde_json::json;
use std::sync::Arc;

const T0: u64 = 1_700_000_000_000;

fn publish(b: &crate::Broker, q: &str, bodies: &[&str]) {
    let queue = b.vhost("/").unwrap().queue_for(q, 1).unwrap();
    for body in bodies {
        queue.publish(&Arc::new(message(body, true)), None).unwrap();
    }
}

fn ready(b: &crate::Broker, q: &str) -> u32 {
    b.vhost("/").unwrap().queue_for(q, 1).unwrap().counts().0
}

/// A fresh broker (SimIo, manual clock at `T0`) whose vhost "/" holds
/// the empty durable queue "q".
fn broker_with_q() -> (Arc<ManualClock>, Arc<crate::Broker>, Arc<crate::VHost>) {
    let clock = ManualClock::new(T0);
    let b = broker(&SimIo::new(), &clock);
    let v = b.vhost("/").unwrap();
    v.declare_queue(spec("q", true, Table::new()), false, 1)
        .unwrap();
    (clock, b, v)
}

#[test]
fn a_policy_reaches_a_running_queue_and_leaves_with_it() {
    let (clock, b, v) = broker_with_q();
    publish(&b, "q", &["1", "2", "3", "4"]);
    let body = json!({"pattern": "^q$", "definition": {"max-length": 2, "message-ttl": 100}});
    assert!(!b.put_policy(PolicyKind::Policy, "/", "cap", &body).unwrap());
    assert_eq!(ready(&b, "q"), 2, "drop-head at once");
    // The TTL applies to messages published from now on.
    publish(&b, "q", &["5"]);
    clock.advance(101);
    b.expire_due(clock.now_ms());
    let q = v.queue_for("q", 1).unwrap();
    assert_eq!(drain(&q), vec!["4"]);
    b.delete_policy(PolicyKind::Policy, "/", "cap").unwrap();
    assert!(q.args().is_none(), "a plain queue again");
    publish(&b, "q", &["a", "b", "c"]);
    assert_eq!(ready(&b, "q"), 3);
    assert!(matches!(
        b.delete_policy(PolicyKind::Policy, "/", "cap"),
        Err(crate::broker::PolicyChangeError::NotFound)
    ));
}

#[test]
fn a_byte_limit_counts_what_was_queued_before_it() {
    let (_clock, b, v) = broker_with_q();
    publish(&b, "q", &["0123456789", "abcdefghij", "ABCDEFGHIJ"]);
    let body = json!({"pattern": "^q$", "definition": {"max-length-bytes": 25}});
    b.put_policy(PolicyKind::Policy, "/", "bytes", &body)
        .unwrap();
    let q = v.queue_for("q", 1).unwrap();
    assert_eq!(
        drain(&q),
        vec!["abcdefghij", "ABCDEFGHIJ"],
        "30 bytes > 25: the head went"
    );
    publish(&b, "q", &["0123456789", "abcdefghij", "ABCDEFGHIJ"]);
    assert_eq!(ready(&b, "q"), 2);
}

#[test]
fn arguments_and_operator_policies_combine_by_rabbitmqs_rules() {
    let io = SimIo::new();
    let clock = ManualClock::new(T0);
    let b = broker(&io, &clock);
    let v = b.vhost("/").unwrap();
    let mut args = Table::new();
    args.insert("x-max-length", Value::I32(3));
    v.declare_queue(spec("q", true, args), false, 1).unwrap();
    let pol = json!({"pattern": "q", "definition": {"max-length": 10, "expires": 5000}});
    b.put_policy(PolicyKind::Policy, "/", "p", &pol).unwrap();
    let a = v.queue_for("q", 1).unwrap().args().unwrap();
    assert_eq!((a.max_length, a.expires), (Some(3), Some(5000)));
    let op = json!({"pattern": "q", "definition": {"expires": 1000}, "apply-to": "queues"});
    b.put_policy(PolicyKind::Operator, "/", "o", &op).unwrap();
    let a = v.queue_for("q", 1).unwrap().args().unwrap();
    assert_eq!(a.expires, Some(1000), "the operator's lower value caps");
    let e = v.effective_policy("q", super::Target::ClassicQueue);
    assert_eq!(
        (e.policy.as_deref(), e.operator_policy.as_deref()),
        (Some("p"), Some("o"))
    );
    // The queue's idle countdown restarted with the new expiry.
    clock.advance(1000);
    b.expire_due(clock.now_ms());
    assert!(
        v.queue_for("q", 1).is_err(),
        "expired unused after the capped 1000 ms"
    );
}

#[test]
fn policies_survive_a_restart_and_apply_at_recovery() {
    let io = SimIo::new();
    let clock = ManualClock::new(T0);
    {
        let b = broker(&io, &clock);
        b.vhost("/")
            .unwrap()
            .declare_queue(spec("q", true, Table::new()), false, 1)
            .unwrap();
        let body = json!({"pattern": "^q$", "definition": {"max-length": 1}, "priority": 2});
        b.put_policy(PolicyKind::Policy, "/", "one", &body).unwrap();
        assert!(
            b.put_policy(PolicyKind::Policy, "/", "one", &body).unwrap(),
            "replaced"
        );
        b.shutdown();
    }
    let b = broker(&io, &clock);
    let listed = b.list_policies(PolicyKind::Policy);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].priority.as_i64(), Some(2));
    publish(&b, "q", &["1", "2"]);
    assert_eq!(ready(&b, "q"), 1);
    // A deleted vhost takes its policies along.
    b.add_vhost("v").unwrap();
    b.put_policy(
        PolicyKind::Policy,
        "v",
        "p",
        &json!({"pattern": ".*", "definition": {"max-length": 1}}),
    )
    .unwrap();
    b.delete_vhost("v").unwrap();
    assert_eq!(b.list_policies(PolicyKind::Policy).len(), 1);
    assert!(matches!(
        b.put_policy(PolicyKind::Policy, "nope", "p", &json!({})),
        Err(crate::broker::PolicyChangeError::NoVhost(_))
    ));
}

/// A dead-letter routing key longer than a short string can only come from
/// a policy stored before such policies were refused (here put without
/// validation): the dead letter is dropped, never stored (durable or not),
/// and the broker reopens. A 255-byte key goes through.
#[test]
fn an_over_long_dead_letter_key_from_a_stored_policy_drops_the_letter() {
    use ferry_route::Destination;
    let io = SimIo::new();
    let clock = ManualClock::new(T0);
    let props = bytes::Bytes::new();
    for (len, stored) in [(255, 1), (256, 0)] {
        let b = broker(&io, &clock);
        let v = b.vhost("/").unwrap();
        for (t, durable) in [("t-durable", true), ("t-transient", false)] {
            v.declare_queue(spec(t, durable, Table::new()), false, 1)
                .unwrap();
            v.binding(
                true,
                "amq.fanout",
                Destination::queue(t),
                "",
                Table::new(),
                1,
            )
            .unwrap();
        }
        v.declare_queue(spec("src", true, Table::new()), false, 1)
            .unwrap();
        let def = super::PolicyDef {
            vhost: "/".into(),
            name: "dl".into(),
            pattern: "^src$".into(),
            apply_to: "queues".into(),
            definition: json!({"max-length": 1, "dead-letter-exchange": "amq.fanout",
                               "dead-letter-routing-key": "k".repeat(len)})
            .as_object()
            .cloned()
            .unwrap(),
            priority: 0.into(),
        };
        b.put_policy_def(PolicyKind::Policy, def).unwrap();
        let src = v.queue_for("src", 1).unwrap();
        for body in ["old", "new"] {
            let m = ferry_model::Message {
                properties: props.clone(),
                ..message(body, true)
            };
            src.publish(&Arc::new(m), None).unwrap();
        }
        for t in ["t-durable", "t-transient"] {
            assert_eq!(ready(&b, t), stored, "{t} with a {len}-byte key");
        }
        b.delete_policy(PolicyKind::Policy, "/", "dl").unwrap();
        for q in ["src", "t-durable", "t-transient"] {
            v.delete_queue(q, false, false, 1).unwrap();
        }
        b.shutdown();
    }
    assert!(broker(&io, &clock).vhost("/").is_ok(), "reopens");
}

#[test]
fn a_byte_limit_counts_spilled_and_checked_out_messages_exactly() {
    let (_clock, b, v) = broker_with_q();
    let q = v.queue_for("q", 1).unwrap();
    // 9000 bodies of 10 bytes: past the 8192-message window, the rest
    // stays in the log (spilled).
    let n = ferry_queue::queue::state::WINDOW + 808;
    for i in 0..n {
        let m = message(&format!("{i:010}"), true);
        q.publish(&Arc::new(m), None).unwrap();
    }
    assert!(q.with_state(|s| s.has_spill()), "some are spilled");
    // Two checked out before the limit exists.
    let held: Vec<u64> = (0..2)
        .map(|_| q.get(false).unwrap().unwrap().0.msg_id)
        .collect();
    let body = json!({"pattern": "^q$", "definition": {"max-length-bytes": 50_000}});
    b.put_policy(PolicyKind::Policy, "/", "bytes", &body)
        .unwrap();
    assert_eq!(ready(&b, "q"), 5_000, "(9000 - 2) * 10 bytes cut to 50000");
    assert_eq!(q.with_state(|s| s.ready_body_bytes()), 50_000);
    // The checked-out ones count when they come back.
    q.requeue(&held).unwrap();
    assert_eq!(q.with_state(|s| s.ready_body_bytes()), 50_020);
    q.publish(&Arc::new(message("0123456789", true)), None)
        .unwrap();
    assert_eq!(ready(&b, "q"), 5_000, "50030 bytes: three heads go");
    assert_eq!(q.with_state(|s| s.ready_body_bytes()), 50_000);
}

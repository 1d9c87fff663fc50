//! Priorities (`x-max-priority`), consumer priorities, single active
//! consumer, queue expiry (`x-expires`) and the delivery limit, over SimIo
//! with a `ManualClock`: order across spilled backlogs and restarts, and
//! what the log says.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::dead_letter::Reason;
use super::record::{self, Record};
use super::*;
use crate::clock::Clock;
use crate::test_support::ms;
use crate::test_support::{
    body_of, drain as bodies, headers_of, message, mtable as args, spec, Fixture, Taker, TestProps,
    T0,
};
use ferry_log::{Log, LogConfig};
use ferry_model::message::Message;
use ferry_model::Value;
use std::path::PathBuf;
use std::sync::Arc;

fn msg(body: &str, priority: Option<u8>) -> Arc<Message> {
    let p = TestProps {
        priority,
        ..TestProps::default()
    };
    Arc::new(Message {
        properties: p.encode(),
        ..message(body, true)
    })
}

fn max_priority(p: i64) -> (&'static str, Value) {
    ("x-max-priority", Value::I64(p))
}

// ----- x-max-priority ------------------------------------------------------

#[test]
fn priorities_deliver_highest_first_fifo_within_one_capped_at_the_maximum() {
    let f = Fixture::new();
    let q = f.open(&[max_priority(5)]);
    // RabbitMQ 3.10.8 gave m2 m3 m6 m5 m1 m0 m4 for this sequence.
    for (i, p) in [None, Some(1), Some(9), Some(5), Some(0), Some(3), Some(9)]
        .into_iter()
        .enumerate()
    {
        q.publish(&msg(&format!("m{i}"), p), None).unwrap();
    }
    assert_eq!(bodies(&q), ["m2", "m3", "m6", "m5", "m1", "m0", "m4"]);
}

#[test]
fn a_requeued_message_goes_back_to_its_place_in_its_priority() {
    let f = Fixture::new();
    let q = f.open(&[max_priority(5)]);
    for (b, p) in [("a1", 1), ("b5", 5), ("c3", 3), ("d5", 5)] {
        q.publish(&msg(b, Some(p)), None).unwrap();
    }
    let (first, _) = q.get(false).unwrap().unwrap();
    let (second, _) = q.get(false).unwrap().unwrap();
    assert_eq!(
        (body_of(&first.message), body_of(&second.message)),
        ("b5".into(), "d5".into())
    );
    q.requeue(&[first.msg_id]).unwrap();
    q.publish(&msg("e5", Some(5)), None).unwrap();
    let (d, _) = q.get(true).unwrap().unwrap();
    assert!(d.redelivered);
    assert_eq!(bodies(&q), ["e5", "c3", "a1"]);
    assert_eq!(body_of(&d.message), "b5");
}

#[test]
fn priority_order_holds_across_spilled_backlogs_and_a_restart() {
    let f = Fixture::new();
    let q = f.open(&[max_priority(9)]);
    // 10 levels: each keeps 819 in memory, the rest stays in the log.
    let n = 3000;
    for i in 0..n {
        let p = [0u8, 4, 9][i % 3];
        q.publish(&msg(&format!("p{p}-{i}"), Some(p)), None)
            .unwrap();
    }
    let expect: Vec<String> = [9u8, 4, 0]
        .iter()
        .flat_map(|p| {
            (0..n)
                .filter(move |i| [0u8, 4, 9][i % 3] == *p)
                .map(move |i| format!("p{p}-{i}"))
        })
        .collect();
    // Half of it now: a consumer takes the first 1500 in order.
    let t = Taker::new(1500);
    let id = q.consume(Arc::from("t"), t.clone(), true, false).unwrap();
    q.dispatch();
    assert_eq!(t.bodies(), expect[..1500]);
    q.cancel(id);
    // A high-priority message published now overtakes the spilled rest.
    q.publish(&msg("late9", Some(9)), None).unwrap();
    q.sync_now();
    drop(q);
    let q = f.open(&[max_priority(9)]);
    let mut rest = vec!["late9".to_string()];
    rest.extend(expect[1500..].iter().cloned());
    assert_eq!(bodies(&q), rest);
}

#[test]
fn drop_head_in_a_priority_queue_drops_the_next_to_deliver() {
    let f = Fixture::new();
    let q = f.open(&[
        max_priority(5),
        ("x-max-length", Value::I32(2)),
        ("x-dead-letter-exchange", Value::str("")),
    ]);
    // As RabbitMQ 3.10: the highest priority message is the head.
    for (b, p) in [("m0", 1), ("m1", 5), ("m2", 3)] {
        q.publish(&msg(b, Some(p)), None).unwrap();
    }
    assert_eq!(f.letters.take(), [("m1".to_string(), Reason::Maxlen)]);
    assert_eq!(bodies(&q), ["m2", "m0"]);
}

#[test]
fn only_the_head_of_a_priority_queue_expires() {
    let f = Fixture::new();
    let q = f.open(&[max_priority(2), ("x-message-ttl", Value::I32(100))]);
    q.publish(&msg("low", Some(0)), None).unwrap();
    f.clock.advance(50);
    q.publish(&msg("high", Some(2)), None).unwrap();
    assert_eq!(q.next_expiry(), T0 + 150, "the head is the high one");
    f.clock.advance(60);
    q.expire(f.clock.now_ms());
    // As RabbitMQ 3.10: the expired low message waits behind the head.
    assert_eq!(q.counts().0, 2);
    let (d, left) = q.get(true).unwrap().unwrap();
    assert_eq!((body_of(&d.message), left), ("high".into(), 1));
    assert!(q.get(true).unwrap().is_none(), "expired: never delivered");
    assert_eq!(q.counts().0, 0);
}

#[test]
fn the_enqueue_record_carries_the_capped_priority_and_a_plain_queue_none() {
    let f = Fixture::new();
    let q = f.open(&[max_priority(3)]);
    q.publish(&msg("a", Some(7)), None).unwrap();
    q.publish(&msg("b", None), None).unwrap();
    q.sync_now();
    drop(q);
    let (log, _) = Log::open(
        f.io.shared(),
        &PathBuf::from("/data/q"),
        LogConfig::default(),
    )
    .unwrap();
    let prios: Vec<Option<u8>> = log
        .reader(log.first_index())
        .filter_map(|r| match record::decode(r.unwrap().1.payload).unwrap() {
            Record::Enqueue { priority, .. } => Some(priority),
            _ => None,
        })
        .collect();
    assert_eq!(prios, [Some(3), Some(0)]);
}

// ----- consumer priorities, single active consumer --------------------------

fn deliver_n(q: &Queue, n: usize) {
    for i in 0..n {
        q.publish(&msg(&format!("m{i}"), None), None).unwrap();
    }
}

#[test]
fn higher_priority_consumers_get_messages_while_they_have_credit() {
    let f = Fixture::new();
    let q = f.open(&[]);
    let low = Taker::new(100);
    let high_a = Taker::new(2);
    let high_b = Taker::new(2);
    q.consume_with_priority(Arc::from("low"), low.clone(), false, false, -5)
        .unwrap();
    q.consume_with_priority(Arc::from("ha"), high_a.clone(), false, false, 10)
        .unwrap();
    q.consume_with_priority(Arc::from("hb"), high_b.clone(), false, false, 10)
        .unwrap();
    deliver_n(&q, 7);
    // Round-robin among the two priority-10 consumers, then the low one.
    assert_eq!(high_a.bodies(), ["m0", "m2"]);
    assert_eq!(high_b.bodies(), ["m1", "m3"]);
    assert_eq!(low.bodies(), ["m4", "m5", "m6"]);
}

#[test]
fn single_active_consumer_hands_over_in_registration_order() {
    let f = Fixture::new();
    let q = f.open(&[("x-single-active-consumer", Value::Bool(true))]);
    let a = Taker::new(2);
    let b = Taker::new(100);
    let c = Taker::new(100);
    let ia = q.consume(Arc::from("a"), a.clone(), false, false).unwrap();
    // Priorities do not pick the active consumer (RabbitMQ 3.10 classic).
    let ib = q
        .consume_with_priority(Arc::from("b"), b.clone(), false, false, 0)
        .unwrap();
    q.consume_with_priority(Arc::from("c"), c.clone(), false, false, 50)
        .unwrap();
    deliver_n(&q, 5);
    assert_eq!(a.bodies(), ["m0", "m1"]);
    assert!(b.bodies().is_empty() && c.bodies().is_empty());
    // a goes away (its channel closes): b takes over, a's messages return.
    let a_ids: Vec<u64> = a.got.lock().iter().map(|d| d.msg_id).collect();
    q.cancel(ia);
    assert_eq!(b.bodies(), ["m2", "m3", "m4"]);
    q.requeue(&a_ids).unwrap();
    assert_eq!(b.bodies(), ["m2", "m3", "m4", "m0", "m1"]);
    assert!(b.got.lock()[3].redelivered);
    q.cancel(ib);
    q.publish(&msg("m5", None), None).unwrap();
    assert_eq!(c.bodies(), ["m5"]);
}

// ----- x-delivery-limit ---------------------------------------------------

fn delivery_count(d: &Delivery) -> Option<Value> {
    headers_of(d).get("x-delivery-count").cloned()
}

fn dlx() -> (&'static str, Value) {
    ("x-dead-letter-exchange", Value::str(""))
}

#[test]
fn the_delivery_limit_dead_letters_after_limit_returns_and_counts_survive_a_restart() {
    let f = Fixture::new();
    let a = [("x-delivery-limit", Value::I32(2)), dlx()];
    let q = f.open(&a);
    q.publish(&msg("x", None), None).unwrap();
    let (d, _) = q.get(false).unwrap().unwrap();
    assert_eq!(delivery_count(&d), Some(Value::I64(0)));
    q.requeue(&[d.msg_id]).unwrap();
    q.sync_now();
    drop(q);
    // The count is the Requeue records': it survives the restart.
    let q = f.open(&a);
    let (d, _) = q.get(false).unwrap().unwrap();
    assert_eq!(delivery_count(&d), Some(Value::I64(1)));
    assert!(d.redelivered);
    q.requeue(&[d.msg_id]).unwrap();
    let (d, _) = q.get(false).unwrap().unwrap();
    assert_eq!(delivery_count(&d), Some(Value::I64(2)));
    assert!(f.letters.take().is_empty());
    // The third return passes the limit of 2 (RabbitMQ: count > limit).
    q.requeue(&[d.msg_id]).unwrap();
    assert_eq!(q.counts().0, 0);
    assert_eq!(q.depth().unacked, 0);
    let letters = f.letters.take();
    assert_eq!(letters, [("x".to_string(), Reason::DeliveryLimit)]);
    q.sync_now();
    drop(q);
    let q = f.open(&a);
    assert_eq!(q.counts().0, 0, "the Drop record keeps it gone");
}

#[test]
fn quorum_queues_default_to_a_limit_of_20_and_minus_one_is_unlimited() {
    let f = Fixture::new();
    let returns = |a: &[(&str, Value)], n: usize| -> usize {
        let q = f.open(a);
        q.purge().unwrap();
        q.publish(&msg("x", None), None).unwrap();
        let mut delivered = 0;
        for _ in 0..n {
            let Some((d, _)) = q.get(false).unwrap() else {
                break;
            };
            delivered += 1;
            q.requeue(&[d.msg_id]).unwrap();
        }
        q.sync_now();
        drop(q);
        delivered
    };
    let quorum = ("x-queue-type", Value::str("quorum"));
    assert_eq!(returns(std::slice::from_ref(&quorum), 30), 21);
    assert_eq!(
        returns(&[quorum, ("x-delivery-limit", Value::I8(-1))], 30),
        30
    );
    assert_eq!(returns(&[], 30), 30, "classic: unlimited unless set");
}

/// RabbitMQ 3.10.8's quorum queue (checked with the oracle): a consumer's
/// first delivery has no `x-delivery-count`, a returned message has it; a
/// basic.get carries it from the first (0, the test above).
#[test]
fn consumer_deliveries_carry_the_count_only_once_returned() {
    let f = Fixture::new();
    let q = f.open(&[("x-queue-type", Value::str("quorum"))]);
    let t = Taker::new(100);
    let id = q.consume(Arc::from("c"), t.clone(), false, false).unwrap();
    q.publish(&msg("x", None), None).unwrap();
    let first = t.got.lock()[0].clone();
    assert_eq!(delivery_count(&first), None);
    q.cancel(id);
    q.requeue(&[first.msg_id]).unwrap();
    let t = Taker::new(100);
    q.consume(Arc::from("c2"), t.clone(), false, false).unwrap();
    q.dispatch(); // what the front end does after consume-ok
    let again = t.got.lock()[0].clone();
    assert!(again.redelivered);
    assert_eq!(delivery_count(&again), Some(Value::I64(1)));
}

#[test]
fn a_classic_queue_without_a_limit_adds_no_header() {
    let f = Fixture::new();
    let q = f.open(&[]);
    q.publish(&msg("x", None), None).unwrap();
    let (d, _) = q.get(false).unwrap().unwrap();
    q.requeue(&[d.msg_id]).unwrap();
    let (d, _) = q.get(false).unwrap().unwrap();
    assert_eq!(delivery_count(&d), None);
    assert_eq!(d.delivery_count, 1);
}

// ----- validation ---------------------------------------------------------------

#[test]
fn new_arguments_are_validated_with_rabbitmq_s_texts() {
    let check = |items: &[(&str, Value)], durable: bool, excl: bool, ad: bool| {
        let spec = QueueSpec {
            exclusive_owner: excl.then_some(1),
            auto_delete: ad,
            ..spec("q", durable, args(items))
        };
        QueueArgs::validate_declaration(&spec, "/").err()
    };
    let pre = "invalid arg";
    let rs = "for queue 'q' in vhost '/'";
    let cases: Vec<(Vec<(&str, Value)>, String)> = vec![
        (
            vec![max_priority(256)],
            format!("{pre} 'x-max-priority' {rs}: {{max_value_exceeded,256}}"),
        ),
        (
            vec![max_priority(-1)],
            format!("{pre} 'x-max-priority' {rs}: {{value_negative,-1}}"),
        ),
        (
            vec![("x-expires", Value::I32(0))],
            format!("{pre} 'x-expires' {rs}: {{value_zero,0}}"),
        ),
        (
            vec![("x-expires", Value::I32(-1))],
            format!("{pre} 'x-expires' {rs}: {{value_negative,-1}}"),
        ),
        (
            vec![("x-single-active-consumer", ms("yes"))],
            format!("{pre} 'x-single-active-consumer' {rs}: {{unacceptable_type,longstr}}"),
        ),
        (
            vec![("x-queue-type", ms("x")), ("x-expires", Value::I32(0))],
            format!("{pre} 'x-queue-type' {rs}: \"unsupported queue type 'x'\""),
        ),
        (
            vec![("x-queue-type", Value::I32(5))],
            format!("{pre} 'x-queue-type' {rs}: {{unacceptable_type,signedint}}"),
        ),
        (
            vec![("x-queue-type", ms("quorum")), max_priority(3)],
            format!("{pre} 'x-max-priority' {rs} of queue type rabbit_quorum_queue"),
        ),
        (
            vec![("x-delivery-limit", ms("a"))],
            format!("{pre} 'x-delivery-limit' {rs}: \"expected integer, got longstr\""),
        ),
    ];
    for (items, text) in cases {
        assert_eq!(check(&items, true, false, false), Some(text));
    }
    let quorum = [("x-queue-type", ms("quorum"))];
    let prop = |p: &str| Some(format!("invalid property '{p}' for queue 'q' in vhost '/'"));
    assert_eq!(check(&quorum, false, false, true), prop("auto-delete"));
    assert_eq!(check(&quorum, true, true, true), prop("auto-delete"));
    assert_eq!(check(&quorum, false, true, false), prop("exclusive-owner"));
    assert_eq!(check(&quorum, false, false, false), prop("non-durable"));
    assert_eq!(check(&quorum, true, false, false), None);
    assert_eq!(
        check(&[("x-queue-type", ms("classic"))], false, true, true),
        None
    );
    assert_eq!(
        check(
            &[max_priority(0), ("x-delivery-limit", Value::I32(-1))],
            false,
            false,
            false
        ),
        None
    );
    assert_eq!(
        super::args::consumer_priority(&args(&[("x-priority", ms("a"))]), "q", "/"),
        Err(format!(
            "invalid arg 'x-priority' {rs}: \"expected integer, got longstr\""
        ))
    );
    assert_eq!(
        super::args::consumer_priority(&args(&[("x-priority", Value::I64(1 << 40))]), "q", "/"),
        Ok(1 << 40)
    );
}

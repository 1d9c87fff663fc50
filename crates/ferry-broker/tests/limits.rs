//! Vhost and user limits through the broker: persisted in the access file
//! across a restart, `max-queues` enforced by queue.declare with
//! RabbitMQ's text, dropped with their vhost / user, carried by
//! definitions export and import.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{config, durable_queue};
use ferry_auth::{AccessDefs, PasswordSpec};
use ferry_broker::Broker;
use ferry_log::SimIo;
use ferry_queue::ErrorKind;

#[test]
fn limits_survive_a_restart_and_max_queues_holds_after_it() {
    let io = SimIo::new();
    let b = Broker::open(config(), io.shared()).unwrap();
    b.add_vhost("v").unwrap();
    b.put_user("bob", PasswordSpec::Plain("x".into()), vec![])
        .unwrap();
    b.set_vhost_limit("v", "max-queues", 1).unwrap();
    b.set_vhost_limit("v", "max-connections", 0).unwrap();
    b.set_user_limit("bob", "max-channels", 3).unwrap();
    let v = b.vhost("v").unwrap();
    v.declare_queue(durable_queue("a"), false, 1).unwrap();
    let e = v.declare_queue(durable_queue("b"), false, 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
    assert_eq!(
        e.to_string(),
        "cannot declare queue 'b': queue limit in vhost 'v' (1) is reached"
    );
    // Redeclaring an existing queue is not a new queue.
    v.declare_queue(durable_queue("a"), false, 1).unwrap();
    b.shutdown();

    let b = Broker::open(config(), io.shared()).unwrap();
    assert_eq!(b.vhost_limit("v", "max-queues"), Some(1));
    assert_eq!(b.vhost_limit("v", "max-connections"), Some(0));
    assert_eq!(b.user_limit("bob", "max-channels"), Some(3));
    let v = b.vhost("v").unwrap();
    assert!(v.declare_queue(durable_queue("b"), false, 1).is_err());
    b.set_vhost_limit("v", "max-queues", -1).unwrap();
    v.declare_queue(durable_queue("b"), false, 1).unwrap();
    b.clear_vhost_limit("v", "max-connections").unwrap();
    b.clear_vhost_limit("v", "max-queues").unwrap();
    b.clear_user_limit("bob", "max-channels").unwrap();
    b.shutdown();

    let b = Broker::open(config(), io.shared()).unwrap();
    assert_eq!(b.vhost_limit("v", "max-queues"), None);
    assert_eq!(b.user_limit("bob", "max-channels"), None);
    // The emptied vhost entry stays, as RabbitMQ's parameter does.
    assert_eq!(
        b.vhost_limits(),
        vec![("v".to_string(), Default::default())]
    );
    assert!(b.user_limits().is_empty());
    b.shutdown();
}

#[test]
fn unknown_targets_and_names_are_refused_and_deletion_drops_limits() {
    let io = SimIo::new();
    let b = Broker::open(config(), io.shared()).unwrap();
    let kind = |r: ferry_queue::Result<()>| r.unwrap_err().kind();
    assert_eq!(
        kind(b.set_vhost_limit("nope", "max-queues", 1)),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(b.set_user_limit("nope", "max-channels", 1)),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(b.set_vhost_limit("/", "max-channels", 1)),
        ErrorKind::CommandInvalid
    );
    assert_eq!(
        kind(b.set_user_limit("guest", "max-queues", 1)),
        ErrorKind::CommandInvalid
    );
    b.add_vhost("v").unwrap();
    b.set_vhost_limit("v", "max-queues", 5).unwrap();
    b.set_user_limit("guest", "max-connections", 5).unwrap();
    b.delete_vhost("v").unwrap();
    b.delete_user("guest").unwrap();
    assert!(b.vhost_limits().is_empty());
    assert!(b.user_limits().is_empty());
    // A vhost made again under the old name starts without limits.
    b.add_vhost("v").unwrap();
    assert_eq!(b.vhost_limit("v", "max-queues"), None);
    b.shutdown();
}

#[test]
fn definitions_carry_vhost_and_user_limits() {
    let io = SimIo::new();
    let b = Broker::open(config(), io.shared()).unwrap();
    b.set_vhost_limit("/", "max-queues", 7).unwrap();
    b.set_user_limit("guest", "max-channels", 9).unwrap();
    let defs = serde_json::to_value(b.export_access()).unwrap();
    assert_eq!(
        defs["parameters"],
        serde_json::json!([{"vhost": "/", "component": "vhost-limits", "name": "limits",
                            "value": {"max-queues": 7}}])
    );
    assert_eq!(
        defs["users"][0]["limits"],
        serde_json::json!({"max-channels": 9})
    );
    b.shutdown();

    let io = SimIo::new();
    let b = Broker::open(config(), io.shared()).unwrap();
    let d: AccessDefs = serde_json::from_value(defs).unwrap();
    b.import_access(&d).unwrap();
    assert_eq!(b.vhost_limit("/", "max-queues"), Some(7));
    assert_eq!(b.user_limit("guest", "max-channels"), Some(9));
    let v = b.vhost("/").unwrap();
    for i in 0..7 {
        v.declare_queue(durable_queue(&format!("q{i}")), false, 1)
            .unwrap();
    }
    assert!(v.declare_queue(durable_queue("q7"), false, 1).is_err());
    // A bad value in the document is refused before anything changes.
    let bad: AccessDefs = serde_json::from_value(serde_json::json!({"parameters": [
        {"vhost": "/", "component": "vhost-limits", "name": "limits",
         "value": {"max-queues": "many"}}]}))
    .unwrap();
    assert_eq!(
        b.import_access(&bad).unwrap_err().kind(),
        ErrorKind::CommandInvalid
    );
    assert_eq!(b.vhost_limit("/", "max-queues"), Some(7));
    b.shutdown();
}

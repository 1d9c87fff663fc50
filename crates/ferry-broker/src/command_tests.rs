//! Definition commands: the same commands give the same definitions on
//! every broker that applies them, results travel intact, and a node that
//! restarts applies nothing twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::applied::ReplicatedDefinitions;
use crate::broker::{Broker, PolicyChangeError};
use crate::command::{self, decode_result, encode_result, DefCommand, DefError};
use crate::policy::PolicyKind;
use crate::test_support::*;
use ferry_auth::{PasswordSpec, Permissions};
use ferry_log::SimIo;
use ferry_queue::clock::ManualClock;
use ferry_queue::error::{CoreError, ErrorKind};
use std::sync::Arc;

fn all_perms() -> Permissions {
    Permissions {
        configure: ".*".into(),
        write: ".*".into(),
        read: "^r".into(),
    }
}

/// One of each command, in an order where each succeeds.
fn script() -> Vec<DefCommand> {
    let policy = crate::policy::validate(
        PolicyKind::Policy,
        "v1",
        "ttl",
        &serde_json::json!({"pattern": "^t", "definition": {"message-ttl": 5000}}),
    )
    .unwrap();
    vec![
        DefCommand::AddVhost { name: "v1".into() },
        DefCommand::AddVhost {
            name: "gone".into(),
        },
        DefCommand::put_user(
            "ann",
            PasswordSpec::Plain("pw".into()),
            vec!["management".into()],
        ),
        DefCommand::put_user("bob", PasswordSpec::NoPassword, vec![]),
        DefCommand::SetPermissions {
            user: "ann".into(),
            vhost: "v1".into(),
            permissions: all_perms(),
        },
        DefCommand::SetPermissions {
            user: "bob".into(),
            vhost: "v1".into(),
            permissions: all_perms(),
        },
        DefCommand::ClearPermissions {
            user: "bob".into(),
            vhost: "v1".into(),
        },
        DefCommand::VhostLimit {
            vhost: "v1".into(),
            name: "max-queues".into(),
            value: Some(7),
        },
        DefCommand::UserLimit {
            user: "ann".into(),
            name: "max-channels".into(),
            value: Some(3),
        },
        DefCommand::PutPolicy {
            kind: PolicyKind::Policy,
            def: policy,
        },
        DefCommand::DeclareExchange {
            vhost: "v1".into(),
            name: "x".into(),
            kind: "topic".into(),
            auto_delete: false,
            internal: false,
            arguments: Default::default(),
        },
        DefCommand::DeclareExchange {
            vhost: "v1".into(),
            name: "y".into(),
            kind: "fanout".into(),
            auto_delete: false,
            internal: true,
            arguments: Default::default(),
        },
        DefCommand::BindExchanges {
            vhost: "v1".into(),
            bind: true,
            source: "x".into(),
            destination: "y".into(),
            routing_key: "a.#".into(),
            arguments: Default::default(),
        },
        DefCommand::DeleteUser { name: "bob".into() },
        DefCommand::DeleteVhost {
            name: "gone".into(),
        },
    ]
}

/// What a broker's definitions are, as text to compare.
fn state(b: &Broker) -> String {
    let mut exchanges: Vec<String> = b
        .vhost_names()
        .iter()
        .flat_map(|v| {
            b.vhost(v)
                .unwrap()
                .exchanges()
                .into_iter()
                .map(move |x| format!("{v}/{x:?}"))
        })
        .collect();
    exchanges.sort();
    format!(
        "{:?}\n{:?}\n{:?}\n{exchanges:?}",
        b.vhost_names(),
        b.export_access(),
        b.list_policies(PolicyKind::Policy),
    )
}

#[test]
fn commands_round_trip_and_give_every_broker_the_same_definitions() {
    let clock = ManualClock::new(T0);
    let (io_a, io_b) = (SimIo::new(), SimIo::new());
    let (a, b) = (broker(&io_a, &clock), broker(&io_b, &clock));
    let before = state(&a);
    let script = script();
    for cmd in script.clone() {
        let bytes = cmd.encode();
        assert_eq!(DefCommand::decode(&bytes).unwrap(), cmd);
        // A sends its bytes; both apply them.
        let on_a = command::apply(&a, &DefCommand::decode(&bytes).unwrap());
        let on_b = command::apply(&b, &DefCommand::decode(&bytes).unwrap());
        assert!(on_a.is_ok() && on_b.is_ok(), "{cmd:?}: {on_a:?} {on_b:?}");
    }
    assert_ne!(state(&a), before, "the script changed something");
    // Default users differ only by salt: drop them from the comparison.
    for x in [&a, &b] {
        command::apply(
            x,
            &DefCommand::DeleteUser {
                name: "guest".into(),
            },
        )
        .unwrap();
    }
    assert_eq!(state(&a), state(&b));
    // The password hashed once, at the origin: both check it.
    for x in [&a, &b] {
        assert!(x.users().authenticate("ann", "pw", false).is_ok());
        assert_eq!(x.user_limit("ann", "max-channels"), Some(3));
        assert!(x.vhost("gone").is_err());
    }
    // A node that crashed after applying a command but before recording
    // it applies that command again at restart: that changes nothing.
    let (io_c, io_d) = (SimIo::new(), SimIo::new());
    let (c, d) = (broker(&io_c, &clock), broker(&io_d, &clock));
    for cmd in &script {
        command::apply(&c, cmd).unwrap();
        command::apply(&d, cmd).unwrap();
        let once = state(&d);
        let _ = command::apply(&d, cmd);
        assert_eq!(state(&d), once, "{cmd:?} applied twice");
    }
    for x in [&c, &d] {
        command::apply(
            x,
            &DefCommand::DeleteUser {
                name: "guest".into(),
            },
        )
        .unwrap();
    }
    assert_eq!(state(&c), state(&d));
}

#[test]
fn refusals_travel_back_with_their_kind() {
    let clock = ManualClock::new(T0);
    let io = SimIo::new();
    let b = broker(&io, &clock);
    let inequivalent = DefCommand::DeclareExchange {
        vhost: "/".into(),
        name: "amq.direct".into(),
        kind: "fanout".into(),
        auto_delete: false,
        internal: false,
        arguments: Default::default(),
    };
    let cases = [
        (
            DefCommand::DeleteUser {
                name: "nobody".into(),
            },
            ErrorKind::NotFound,
        ),
        (
            DefCommand::AddVhost {
                name: String::new(),
            },
            ErrorKind::CommandInvalid,
        ),
        (inequivalent, ErrorKind::PreconditionFailed),
    ];
    for (cmd, kind) in cases {
        let r = command::apply(&b, &cmd);
        let back = decode_result(&encode_result(&r));
        match back {
            Err(DefError::Core(e)) => {
                assert_eq!(e.kind(), kind, "{cmd:?}");
                assert_eq!(e.to_string(), CoreError::from(r.unwrap_err()).to_string());
            }
            other => panic!("{cmd:?}: {other:?}"),
        }
    }
    let no_policy = DefCommand::DeletePolicy {
        kind: PolicyKind::Policy,
        vhost: "/".into(),
        name: "none".into(),
    };
    let back = decode_result(&encode_result(&command::apply(&b, &no_policy)));
    assert!(matches!(
        back,
        Err(DefError::Policy(PolicyChangeError::NotFound))
    ));
    let no_vhost = DefCommand::DeletePolicy {
        kind: PolicyKind::Policy,
        vhost: "nope".into(),
        name: "none".into(),
    };
    let back = decode_result(&encode_result(&command::apply(&b, &no_vhost)));
    assert!(matches!(back, Err(DefError::Policy(PolicyChangeError::NoVhost(v))) if v == "nope"));
    assert!(matches!(decode_result(&encode_result(&Ok(true))), Ok(true)));
    assert!(decode_result(b"garbage").is_err());
    assert!(DefCommand::decode(b"{\"op\":\"launch\"}").is_err());
}

#[test]
fn a_restarted_node_skips_what_it_applied_before() {
    let clock = ManualClock::new(T0);
    let io = SimIo::new();
    let log = [
        DefCommand::AddVhost { name: "v".into() },
        DefCommand::DeleteVhost { name: "v".into() },
        DefCommand::AddVhost { name: "v".into() },
    ];
    {
        let b = broker(&io, &clock);
        let defs = ReplicatedDefinitions::open(b.clone()).unwrap();
        assert_eq!(defs.applied(), 0);
        for (i, cmd) in log.iter().enumerate() {
            let out = defs.apply(i as u64 + 1, &cmd.encode());
            assert!(decode_result(&out).is_ok());
        }
        // Data made after the last command: a queue with a message.
        let v = b.vhost("v").unwrap();
        v.declare_queue(spec("q", true, Default::default()), false, 1)
            .unwrap();
        publish_persistent(&b, "v", "q", "kept");
        b.shutdown();
    }
    let b = broker(&io, &clock);
    let defs = ReplicatedDefinitions::open(b.clone()).unwrap();
    assert_eq!(defs.applied(), 3, "the applied index survived the restart");
    // The group replays its log from the start: nothing is applied again
    // (the delete at index 2 would take the queue with it).
    for (i, cmd) in log.iter().enumerate() {
        defs.apply(i as u64 + 1, &cmd.encode());
    }
    let q = b.vhost("v").unwrap().queue_for("q", 1).unwrap();
    assert_eq!(drain(&q), vec!["kept".to_string()]);
    // A new command applies, and a refused one still counts as applied.
    let out = defs.apply(4, &DefCommand::DeleteUser { name: "x".into() }.encode());
    assert!(decode_result(&out).is_err());
    let out = defs.apply(5, b"not json");
    assert!(decode_result(&out).is_err());
    assert_eq!(defs.applied(), 5);
}

fn publish_persistent(b: &Arc<Broker>, vhost: &str, queue: &str, body: &str) {
    let q = b.vhost(vhost).unwrap().queue_for(queue, 1).unwrap();
    q.publish(&Arc::new(message(body, true)), None).unwrap();
    q.sync_now();
}

#[test]
fn a_replicated_queue_waits_for_its_group_and_reopens_as_replicated() {
    let clock = ManualClock::new(T0);
    let io = SimIo::new();
    let spec = spec(
        "rq",
        true,
        mtable(&[("x-queue-type", ferry_model::Value::Str("quorum".into()))]),
    );
    let cmd = DefCommand::DeclareReplicatedQueue {
        vhost: "/".into(),
        spec: spec.clone(),
        group: 0xfeed,
        replicas: vec![1, 2, 3],
    };
    assert_eq!(DefCommand::decode(&cmd.encode()).unwrap(), cmd);
    {
        let b = broker(&io, &clock);
        command::apply(&b, &cmd).unwrap();
        // Applied again (a restart before recording it): nothing more.
        command::apply(&b, &cmd).unwrap();
        let v = b.vhost("/").unwrap();
        assert_eq!(v.replicated_group("rq"), Some(0xfeed));
        assert!(!b.replicas().active(), "no host: the group waits");
        // Without its group a publish is refused at once (a nack).
        let confirms = Arc::new(Confirms::default());
        let t = ferry_queue::queue::ConfirmToken {
            sink: confirms.clone(),
            seq: 1,
        };
        let q = v.queue_for("rq", 1).unwrap();
        q.publish(&Arc::new(message("m", true)), Some(t)).unwrap();
        assert_eq!(*confirms.failed.lock(), [1]);
        b.shutdown();
    }
    let b = broker(&io, &clock);
    let v = b.vhost("/").unwrap();
    assert_eq!(
        v.replicated_group("rq"),
        Some(0xfeed),
        "reopened as replicated"
    );
    let del = DefCommand::DeleteReplicatedQueue {
        vhost: "/".into(),
        name: "rq".into(),
    };
    command::apply(&b, &del).unwrap();
    assert!(v.queue_for("rq", 1).is_err());
}

#[test]
fn a_replicated_queue_is_never_expired_by_one_nodes_sweep() {
    let clock = ManualClock::new(T0);
    let io = SimIo::new();
    let b = broker(&io, &clock);
    let args = mtable(&[
        ("x-queue-type", ferry_model::Value::Str("quorum".into())),
        ("x-expires", ferry_model::Value::I32(1000)),
    ]);
    let cmd = DefCommand::DeclareReplicatedQueue {
        vhost: "/".into(),
        spec: spec("rq", true, args),
        group: 7,
        replicas: vec![1],
    };
    command::apply(&b, &cmd).unwrap();
    clock.advance(5000);
    use ferry_queue::clock::Clock as _;
    b.expire_due(clock.now_ms());
    assert!(
        b.vhost("/").unwrap().queue_for("rq", 1).is_ok(),
        "only its definitions delete a replicated queue"
    );
}

//! Definitions snapshots: an export rebuilds the same definitions on a
//! fresh broker, converging undoes any divergence and then changes
//! nothing, node-local things are left alone, the codec refuses bad bytes,
//! and an installed snapshot counts as applied.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::applied::ReplicatedDefinitions;
use crate::broker::Broker;
use crate::command::{self, decode_result, DefCommand};
use crate::def_snapshot::{converge, decode, encode, export};
use crate::policy::{PolicyDef, PolicyKind};
use crate::test_support::*;
use crate::ExchangeArgs;
use ferry_auth::{AccessDefs, PasswordSpec, Permissions, UserDef};
use ferry_log::SimIo;
use ferry_model::{Table, Value};
use ferry_queue::clock::ManualClock;
use ferry_queue::error::CoreError;
use ferry_route::Destination;
use std::sync::Arc;

fn perms(read: &str) -> Permissions {
    Permissions {
        configure: ".*".into(),
        write: ".*".into(),
        read: read.into(),
    }
}

fn policy(kind: PolicyKind, vhost: &str, name: &str, body: serde_json::Value) -> PolicyDef {
    crate::policy::validate(kind, vhost, name, &body).unwrap()
}

fn exchange(vhost: &str, name: &str, kind: &str, internal: bool, args: Table) -> DefCommand {
    DefCommand::DeclareExchange {
        vhost: vhost.into(),
        name: name.into(),
        kind: kind.into(),
        auto_delete: false,
        internal,
        arguments: args,
    }
}

fn quorum(vhost: &str, name: &str, group: u64, replicas: Vec<u64>) -> DefCommand {
    let args = mtable(&[("x-queue-type", ms("quorum"))]);
    DefCommand::DeclareReplicatedQueue {
        vhost: vhost.into(),
        spec: spec(name, true, args),
        group,
        replicas,
    }
}

fn bind_queue(bind: bool, source: &str, queue: &str, key: &str) -> DefCommand {
    DefCommand::BindQueue {
        vhost: "v1".into(),
        bind,
        source: source.into(),
        queue: queue.into(),
        routing_key: key.into(),
        arguments: Table::new(),
    }
}

fn bind_exchanges(bind: bool, source: &str, destination: &str, key: &str) -> DefCommand {
    DefCommand::BindExchanges {
        vhost: "v1".into(),
        bind,
        source: source.into(),
        destination: destination.into(),
        routing_key: key.into(),
        arguments: Table::new(),
    }
}

fn vhost_limit(vhost: &str, name: &str, value: Option<i64>) -> DefCommand {
    DefCommand::VhostLimit {
        vhost: vhost.into(),
        name: name.into(),
        value,
    }
}

/// A user imported from RabbitMQ with a SHA-512 hash (68 bytes).
fn sha512_user() -> DefCommand {
    let user = UserDef {
        name: "sam".into(),
        password_hash: format!("{}=", "A".repeat(91)),
        password: None,
        hashing_algorithm: ferry_auth::hash::SHA512.into(),
        tags: vec!["policymaker".into()],
        limits: Default::default(),
    };
    DefCommand::ImportAccess {
        defs: AccessDefs {
            users: vec![user],
            ..AccessDefs::default()
        },
    }
}

/// Definitions of every kind, in an order where each command succeeds.
fn script() -> Vec<DefCommand> {
    let ttl = policy(
        PolicyKind::Policy,
        "v1",
        "ttl",
        serde_json::json!({"pattern": "^t", "definition": {"message-ttl": 5000}}),
    );
    let cap = policy(
        PolicyKind::Operator,
        "v2",
        "cap",
        serde_json::json!({"pattern": ".*", "apply-to": "queues",
                           "definition": {"max-length": 100}, "priority": 2}),
    );
    let stream = DefCommand::DeclareReplicatedQueue {
        vhost: "v2".into(),
        spec: spec("rs", true, mtable(&[("x-queue-type", ms("stream"))])),
        group: 0xbeef,
        replicas: vec![1],
    };
    vec![
        DefCommand::AddVhost { name: "v1".into() },
        DefCommand::AddVhost { name: "v2".into() },
        DefCommand::put_user(
            "ann",
            PasswordSpec::Plain("pw".into()),
            vec!["management".into(), "monitoring".into()],
        ),
        DefCommand::put_user("bob", PasswordSpec::NoPassword, vec![]),
        sha512_user(),
        DefCommand::SetPermissions {
            user: "ann".into(),
            vhost: "v1".into(),
            permissions: perms(".*"),
        },
        DefCommand::SetPermissions {
            user: "ann".into(),
            vhost: "v2".into(),
            permissions: perms("^r"),
        },
        DefCommand::SetPermissions {
            user: "bob".into(),
            vhost: "v2".into(),
            permissions: perms("^b"),
        },
        DefCommand::UserLimit {
            user: "ann".into(),
            name: "max-channels".into(),
            value: Some(3),
        },
        DefCommand::UserLimit {
            user: "bob".into(),
            name: "max-connections".into(),
            value: Some(2),
        },
        vhost_limit("v2", "max-connections", Some(5)),
        DefCommand::PutPolicy {
            kind: PolicyKind::Policy,
            def: ttl,
        },
        DefCommand::PutPolicy {
            kind: PolicyKind::Operator,
            def: cap,
        },
        exchange("v1", "ae", "fanout", false, Table::new()),
        exchange(
            "v1",
            "x",
            "topic",
            false,
            mtable(&[("alternate-exchange", ms("ae"))]),
        ),
        exchange("v1", "y", "fanout", true, Table::new()),
        exchange("v1", "ch", "x-consistent-hash", false, Table::new()),
        DefCommand::DeclareExchange {
            vhost: "v2".into(),
            name: "z".into(),
            kind: "direct".into(),
            auto_delete: true,
            internal: false,
            arguments: Table::new(),
        },
        bind_exchanges(true, "x", "y", "a.#"),
        quorum("v1", "rq", 0xfeed, vec![1, 2, 3]),
        quorum("v1", "rq2", 0xf00d, vec![1, 2]),
        quorum("v1", "rq3", 0xf11d, vec![2, 3]),
        stream,
        bind_queue(true, "x", "rq", "a.b"),
        bind_queue(true, "amq.direct", "rq2", "k"),
        // A consistent-hash ring in an order no sort gives.
        bind_queue(true, "ch", "rq3", "1"),
        bind_exchanges(true, "ch", "y", "3"),
        bind_queue(true, "ch", "rq", "2"),
        DefCommand::BindQueue {
            vhost: "v2".into(),
            bind: true,
            source: "z".into(),
            queue: "rs".into(),
            routing_key: "k".into(),
            arguments: mtable(&[("x-tag", Value::I32(7))]),
        },
        vhost_limit("v1", "max-queues", Some(10)),
        // Below v2's queue count: rebuilding must still declare its stream.
        vhost_limit("v2", "max-queues", Some(0)),
    ]
}

fn run(b: &Broker, cmds: &[DefCommand]) {
    for c in cmds {
        if let Err(e) = command::apply(b, c) {
            panic!("{c:?}: {e}");
        }
    }
}

/// A broker with the script's definitions and node-local things beside
/// them: a transient exchange, a durable queue of its own bound from a
/// durable exchange.
fn source(io: &SimIo, clock: &Arc<ManualClock>) -> Arc<Broker> {
    let b = broker(io, clock);
    run(&b, &script());
    add_local(&b);
    b
}

fn add_local(b: &Broker) {
    let v = b.vhost("v1").unwrap();
    let transient = ExchangeArgs {
        durable: false,
        ..ExchangeArgs::default()
    };
    v.declare_exchange("tx", "fanout", false, transient)
        .unwrap();
    v.declare_queue(spec("local", true, Table::new()), false, 1)
        .unwrap();
    let local = Destination::queue("local");
    v.binding(true, "x", local, "l", Table::new(), 1).unwrap();
}

fn has_local(b: &Broker) -> bool {
    let v = b.vhost("v1").unwrap();
    let bound = v.exchanges().iter().any(|x| {
        &*x.name == "x"
            && x.bindings()
                .any(|b| b.destination == Destination::queue("local"))
    });
    bound && v.has_exchange("tx") && v.queue_for("local", 1).is_ok()
}

#[test]
fn an_export_rebuilds_the_same_definitions_on_a_fresh_broker() {
    let clock = ManualClock::new(T0);
    let (io_a, io_b) = (SimIo::new(), SimIo::new());
    let a = source(&io_a, &clock);
    let ex = export(&a);
    // What it holds, in the canonical order.
    let pos = |c: &DefCommand| ex.iter().position(|x| x == c);
    for c in script() {
        if !matches!(c, DefCommand::PutUser { .. }) {
            assert!(pos(&c).is_some(), "{c:?} not exported");
        }
    }
    assert!(ex.iter().any(
        |c| matches!(c, DefCommand::PutUser { name, password_hash: Some(_), tags } if name == "ann" && tags.len() == 2)
    ));
    let ring: Vec<_> = [
        bind_queue(true, "ch", "rq3", "1"),
        bind_exchanges(true, "ch", "y", "3"),
        bind_queue(true, "ch", "rq", "2"),
    ]
    .iter()
    .map(|c| pos(c).unwrap())
    .collect();
    assert!(ring.windows(2).all(|w| w[0] < w[1]), "ring order kept");
    let last = pos(&vhost_limit("v2", "max-queues", Some(0))).unwrap();
    let queue = ex
        .iter()
        .rposition(|c| matches!(c, DefCommand::DeclareReplicatedQueue { .. }))
        .unwrap();
    assert!(queue < last, "vhost limits after the queues");
    assert!(pos(&DefCommand::AddVhost { name: "v1".into() }).unwrap() == 1);
    // Node-local things and the predeclared exchanges are not in it.
    let text = format!("{ex:?}");
    for local in ["\"local\"", "\"tx\"", "amq.topic", "name: \"\""] {
        assert!(!text.contains(local), "{local} exported");
    }
    // The codec gives it back.
    assert_eq!(decode(&encode(&ex)).unwrap(), ex);

    // A fresh broker converged to it has the same definitions, and keeps
    // them across a restart (a replicated queue's nodes too).
    {
        let b = broker(&io_b, &clock);
        converge(&b, &ex).unwrap();
        assert_eq!(export(&b), ex);
        assert!(b.users().authenticate("ann", "pw", false).is_ok());
        b.shutdown();
    }
    let b = broker(&io_b, &clock);
    assert_eq!(export(&b), ex, "after a restart");
    a.shutdown();
    let a = broker(&io_a, &clock);
    assert_eq!(export(&a), ex, "the source after a restart");
}

#[test]
fn converging_undoes_every_divergence_then_changes_nothing() {
    let clock = ManualClock::new(T0);
    let (io_a, io_b) = (SimIo::new(), SimIo::new());
    let a = source(&io_a, &clock);
    let ex = export(&a);
    let b = broker(&io_b, &clock);
    converge(&b, &ex).unwrap();
    assert_eq!(export(&b), ex);
    // Node-local things on b, with a message.
    add_local(&b);
    let q = b.vhost("v1").unwrap().queue_for("local", 1).unwrap();
    q.publish(&Arc::new(message("kept", true)), None).unwrap();
    q.sync_now();

    // b goes its own way.
    let ttl = policy(
        PolicyKind::Policy,
        "v1",
        "ttl",
        serde_json::json!({"pattern": "^t", "definition": {"message-ttl": 9000}}),
    );
    run(
        &b,
        &[
            DefCommand::AddVhost {
                name: "extra".into(),
            },
            DefCommand::DeleteUser { name: "bob".into() },
            DefCommand::put_user("carl", PasswordSpec::NoPassword, vec![]),
            DefCommand::put_user("sam", PasswordSpec::NoPassword, vec![]),
            DefCommand::put_user("ann", PasswordSpec::NoPassword, vec!["x".into()]),
            DefCommand::SetPermissions {
                user: "ann".into(),
                vhost: "v1".into(),
                permissions: perms("^other"),
            },
            DefCommand::UserLimit {
                user: "ann".into(),
                name: "max-channels".into(),
                value: None,
            },
            DefCommand::PutPolicy {
                kind: PolicyKind::Policy,
                def: ttl,
            },
            DefCommand::DeletePolicy {
                kind: PolicyKind::Operator,
                vhost: "v2".into(),
                name: "cap".into(),
            },
            exchange("v1", "extra-x", "direct", false, Table::new()),
            // The same name, another type.
            DefCommand::DeleteExchange {
                vhost: "v1".into(),
                name: "y".into(),
                if_unused: false,
            },
            exchange("v1", "y", "direct", true, Table::new()),
            // The same binding as the snapshot's, to an exchange that
            // differs: deleting the exchange takes it, converging binds it
            // again.
            bind_exchanges(true, "x", "y", "a.#"),
            bind_queue(false, "x", "rq", "a.b"),
            bind_queue(true, "x", "rq", "extra.key"),
            // The ring's first binding made again: now last.
            bind_queue(false, "ch", "rq3", "1"),
            bind_queue(true, "ch", "rq3", "1"),
            // Another group under rq2's name, and a limit that refuses
            // its queue again until it is lifted.
            vhost_limit("v1", "max-queues", None),
            DefCommand::DeleteReplicatedQueue {
                vhost: "v1".into(),
                name: "rq2".into(),
            },
            quorum("v1", "rq2", 0xdead, vec![9]),
            // A member taken out of rq's group here only: converging
            // keeps the queue and records the snapshot's nodes again.
            DefCommand::SetReplicas {
                vhost: "v1".into(),
                name: "rq".into(),
                group: 0xfeed,
                replicas: vec![1, 3],
            },
            vhost_limit("v1", "max-queues", Some(3)),
            vhost_limit("v2", "max-queues", Some(4)),
        ],
    );
    assert_ne!(export(&b), ex);

    converge(&b, &ex).unwrap();
    assert_eq!(export(&b), ex);
    assert!(b.vhost("extra").is_err());
    assert!(b.users().authenticate("ann", "pw", false).is_ok());
    let sam = b.users().get("sam").unwrap().hashing_algorithm();
    assert_eq!(sam, ferry_auth::hash::SHA512);
    let v = b.vhost("v1").unwrap();
    assert_eq!(v.replicated_group("rq2"), Some(0xf00d));
    // Node-local things stayed, their message too.
    assert!(has_local(&b));
    let q = v.queue_for("local", 1).unwrap();
    assert_eq!(drain(&q), vec!["kept".to_string()]);

    // Again: nothing changes.
    converge(&b, &ex).unwrap();
    assert_eq!(export(&b), ex);
    assert!(has_local(&b));
}

#[test]
fn a_refused_command_is_skipped_and_a_storage_failure_stops() {
    let clock = ManualClock::new(T0);
    let (io_a, io_b) = (SimIo::new(), SimIo::new());
    let a = source(&io_a, &clock);
    let ex = export(&a);
    let b = broker(&io_b, &clock);
    // A node-local exchange under a durable one's name: the declare is
    // refused (inequivalent), the rest converges, the local one stays.
    let v = b.add_vhost("v1").unwrap();
    let transient = ExchangeArgs::default();
    v.declare_exchange("ae", "direct", false, transient)
        .unwrap();
    converge(&b, &ex).unwrap();
    assert_eq!(v.exchange_durable("ae"), Some(false));
    let ae = exchange("v1", "ae", "fanout", false, Table::new());
    let mut others: Vec<DefCommand> = ex.iter().filter(|c| **c != ae).cloned().collect();
    others.sort_by_key(|c| c.encode());
    let mut got = export(&b);
    got.sort_by_key(|c| c.encode());
    assert_eq!(got, others);

    // A storage failure is returned.
    let io_c = SimIo::new();
    let c = broker(&io_c, &clock);
    io_c.fail_next_write();
    let err = converge(&c, &ex).unwrap_err();
    assert!(matches!(err, CoreError::Io(_)), "{err:?}");
    // Converging again finishes.
    converge(&c, &ex).unwrap();
    assert_eq!(export(&c), ex);
}

#[test]
fn the_codec_refuses_bad_bytes() {
    let ex = vec![
        DefCommand::AddVhost { name: "v".into() },
        DefCommand::DeleteUser { name: "u".into() },
    ];
    let good = encode(&ex);
    assert_eq!(&good[..8], b"FRYDEFS1");
    assert_eq!(&good[8..12], &2u32.to_le_bytes());
    assert_eq!(decode(&good).unwrap(), ex);
    assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
    // Every truncation.
    for n in 0..good.len() {
        assert!(decode(&good[..n]).is_err(), "cut at {n}");
    }
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(decode(&bad).is_err(), "magic");
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(decode(&trailing).is_err(), "trailing");
    // A count the bytes cannot hold, before any allocation.
    let mut lying = b"FRYDEFS1".to_vec();
    lying.extend(u32::MAX.to_le_bytes());
    lying.extend([0; 4]);
    assert!(decode(&lying).is_err(), "count");
    // A length beyond the bytes.
    let mut long = b"FRYDEFS1".to_vec();
    long.extend(1u32.to_le_bytes());
    long.extend(u32::MAX.to_le_bytes());
    long.extend(b"{}");
    assert!(decode(&long).is_err(), "length");
    // A command that does not decode.
    let mut junk = b"FRYDEFS1".to_vec();
    junk.extend(1u32.to_le_bytes());
    junk.extend(2u32.to_le_bytes());
    junk.extend(b"{}");
    assert!(matches!(decode(&junk), Err(CoreError::Corrupt(_))));
}

#[test]
fn an_installed_snapshot_counts_as_applied() {
    let clock = ManualClock::new(T0);
    let (io_a, io_b) = (SimIo::new(), SimIo::new());
    let a = broker(&io_a, &clock);
    let defs_a = ReplicatedDefinitions::open(a.clone()).unwrap();
    let script = script();
    for (i, c) in script.iter().enumerate() {
        let out = defs_a.apply(i as u64 + 1, &c.encode());
        assert!(decode_result(&out).is_ok(), "{c:?}");
    }
    let (index, bytes) = defs_a.snapshot();
    assert_eq!(index, script.len() as u64);
    assert_eq!(decode(&bytes).unwrap(), export(&a));
    {
        let b = broker(&io_b, &clock);
        let defs_b = ReplicatedDefinitions::open(b.clone()).unwrap();
        // Bad bytes: nothing changes, nothing is recorded.
        assert!(defs_b.install(index, &bytes[..bytes.len() - 1]).is_err());
        assert_eq!(defs_b.applied(), 0);
        assert!(b.vhost("v1").is_err());
        defs_b.install(index, &bytes).unwrap();
        assert_eq!(defs_b.applied(), index);
        assert_eq!(export(&b), export(&a));
        // An older (or the same) snapshot changes nothing.
        let older = encode(&[DefCommand::AddVhost { name: "/".into() }]);
        defs_b.install(index, &older).unwrap();
        assert_eq!(export(&b), export(&a));
        // The log goes on after the snapshot.
        let next = DefCommand::AddVhost { name: "v3".into() };
        defs_b.apply(index + 1, &next.encode());
        assert!(b.vhost("v3").is_ok());
        b.shutdown();
    }
    let b = broker(&io_b, &clock);
    let defs_b = ReplicatedDefinitions::open(b.clone()).unwrap();
    assert_eq!(defs_b.applied(), index + 1, "recorded in meta-applied");
}

/// The committed version-1 bytes (`tests/fixtures/definitions-snapshot-v1`):
/// today's decoder reads them to the same commands, today's encoder writes
/// the same bytes (a change of the commands' JSON or of the framing must
/// keep reading this). `FERRY_WRITE_FIXTURES=1` rewrites it.
#[test]
fn the_version_1_fixture_decodes_and_is_what_the_encoder_writes() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/definitions-snapshot-v1");
    let cmds = vec![
        DefCommand::AddVhost { name: "v1".into() },
        DefCommand::PutUser {
            name: "alice".into(),
            password_hash: Some("c2FsdHNhbHRoYXNoaGFzaGhhc2g=".into()),
            tags: vec!["monitoring".into()],
        },
        DefCommand::SetPermissions {
            user: "alice".into(),
            vhost: "v1".into(),
            permissions: perms("^r"),
        },
        DefCommand::UserLimit {
            user: "alice".into(),
            name: "max-channels".into(),
            value: Some(8),
        },
        DefCommand::PutPolicy {
            kind: PolicyKind::Policy,
            def: policy(
                PolicyKind::Policy,
                "v1",
                "ttl",
                serde_json::json!({"pattern": "^t", "definition": {"message-ttl": 9000}}),
            ),
        },
        exchange("v1", "x", "topic", false, Table::new()),
        quorum("v1", "rq", 0xfeed, vec![1, 2, 3]),
        bind_exchanges(true, "x", "amq.fanout", "a.#"),
        bind_queue(true, "x", "rq", "a.b"),
        vhost_limit("v1", "max-queues", Some(10)),
    ];
    let written = encode(&cmds);
    if std::env::var_os("FERRY_WRITE_FIXTURES").is_some() {
        std::fs::write(&fixture, &written).unwrap();
    }
    let committed = std::fs::read(&fixture).expect("the committed fixture");
    assert_eq!(written, committed, "the encoder's bytes changed");
    assert_eq!(decode(&committed).unwrap(), cmds);
}

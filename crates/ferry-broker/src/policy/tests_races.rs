//! Policy and limit changes racing declares and vhost deletion (SimIo,
//! real threads): a declared queue never misses a policy set while it is
//! being declared, and a vhost deleted during a change leaves no policy or
//! limit behind. Each round races once; many rounds make a lost race
//! (the bug) show up reliably.

use super::PolicyKind;
use crate::test_support::{broker, spec};
use ferry_log::SimIo;
use ferry_model::Table;
use ferry_queue::clock::ManualClock;
use serde_json::json;
use std::sync::{Arc, Barrier};

const T0: u64 = 1_700_000_000_000;

#[test]
fn a_queue_declared_during_a_policy_change_gets_the_new_policy() {
    let io = SimIo::new();
    let clock = ManualClock::new(T0);
    let b = broker(&io, &clock);
    let v = b.vhost("/").unwrap();
    for round in 1..=60u64 {
        let start = Arc::new(Barrier::new(2));
        let names: Vec<String> = (0..8).map(|i| format!("r{round}-{i}")).collect();
        let declarer = {
            let (v, start, names) = (v.clone(), start.clone(), names.clone());
            std::thread::spawn(move || {
                start.wait();
                for n in &names {
                    v.declare_queue(spec(n, true, Table::new()), false, 1)
                        .unwrap();
                }
            })
        };
        start.wait();
        let body = json!({"pattern": "^r", "definition": {"max-length": round}});
        b.put_policy(PolicyKind::Policy, "/", "cap", &body).unwrap();
        declarer.join().unwrap();
        for n in &names {
            let q = v.queue_for(n, 1).unwrap();
            let got = q.args().and_then(|a| a.max_length);
            assert_eq!(got, Some(round), "queue {n} missed policy round {round}");
        }
    }
}

#[test]
fn a_vhost_deleted_during_a_change_keeps_no_policy_or_limit() {
    let io = SimIo::new();
    let clock = ManualClock::new(T0);
    let b = broker(&io, &clock);
    for _ in 0..150 {
        b.add_vhost("v").unwrap();
        let start = Arc::new(Barrier::new(3));
        let policy = {
            let (b, start) = (b.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let body = json!({"pattern": ".*", "definition": {"max-length": 1}});
                let _ = b.put_policy(PolicyKind::Policy, "v", "p", &body);
            })
        };
        let limit = {
            let (b, start) = (b.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let _ = b.set_vhost_limit("v", "max-queues", 5);
            })
        };
        start.wait();
        b.delete_vhost("v").unwrap();
        policy.join().unwrap();
        limit.join().unwrap();
        let policies = b.list_policies(PolicyKind::Policy);
        assert!(
            policies.iter().all(|d| d.vhost != "v"),
            "orphaned policy: {policies:?}"
        );
        let limits = b.vhost_limits();
        assert!(
            limits.iter().all(|(v, l)| v != "v" || l.is_empty()),
            "orphaned limit: {limits:?}"
        );
    }
}

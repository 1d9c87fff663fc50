//! The queue state machine driven by commands alone (no log, no clock, no
//! consumers): each test applies commands and asserts on the effects
//! `apply` returns and on the state, as openraft's engine tests assert on
//! the commands the engine emits. The last tests check that replaying the
//! encoded records of a random live run rebuilds the same state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::apply::{apply, replay_record, ApplyConfig};
use super::command::{Command, Facts};
use super::dead_letter::Reason;
use super::effects::Effects;
use super::record::{self, Record};
use super::state::QueueState;
use crate::test_support::message;
use bytes::Bytes;
use ferry_log::RecordPos;
use ferry_model::message::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DLX: ApplyConfig = ApplyConfig { dead_letters: true };
const PLAIN: ApplyConfig = ApplyConfig {
    dead_letters: false,
};

fn pos(index: u64) -> RecordPos {
    RecordPos {
        index,
        segment: 0,
        offset: index * 100,
        len: 100,
    }
}

/// A state machine with its own log index, applying commands as a queue
/// (or a follower) would.
struct Machine {
    state: QueueState,
    next: u64,
    cfg: ApplyConfig,
    /// Every command applied, encoded as the log would hold it.
    log: Vec<(RecordPos, Vec<u8>)>,
}

impl Machine {
    fn new(levels: usize, cfg: ApplyConfig) -> Self {
        Machine {
            state: QueueState::with_levels(levels, true),
            next: 1,
            cfg,
            log: Vec::new(),
        }
    }

    fn run(&mut self, cmd: &Command) -> Effects {
        let p = pos(self.next);
        self.next += 1;
        let mut bytes = Vec::new();
        cmd.encode(&mut bytes).unwrap();
        self.log.push((p, bytes));
        apply(&mut self.state, p, cmd, self.cfg)
    }

    fn enqueue(&mut self, msg: &Message, facts: Facts) -> (u64, Effects) {
        let id = self.next;
        (id, self.run(&Command::Enqueue { msg, facts }))
    }

    fn publish(&mut self, n: usize) -> Vec<u64> {
        let m = message("m", true);
        (0..n)
            .map(|_| self.enqueue(&m, Facts::default()).0)
            .collect()
    }

    /// The leader-local checkout of the head (a delivery): not a command.
    fn check_out(&mut self) -> Option<u64> {
        let e = self.state.pop_ready()?;
        let id = e.id;
        self.state.check_out(e);
        Some(id)
    }

    /// The state a restart rebuilds from the log.
    fn replayed(&self, levels: usize) -> QueueState {
        let mut st = QueueState::for_replay(levels, true);
        for (p, bytes) in &self.log {
            let rec = record::decode(Bytes::from(bytes.clone())).unwrap();
            replay_record(&mut st, *p, &rec);
        }
        st.end_replay();
        st
    }
}

#[test]
fn enqueue_makes_a_message_ready_and_asks_to_wake_at_its_deadline() {
    let mut m = Machine::new(1, PLAIN);
    let msg = message("a", true);
    let (id, fx) = m.enqueue(
        &msg,
        Facts {
            deadline: Some(500),
            ..Facts::default()
        },
    );
    assert_eq!(
        fx,
        Effects {
            ready: 1,
            wake_at: Some(500),
            ..Effects::default()
        }
    );
    assert_eq!(m.state.ready_len(), 1);
    assert_eq!(m.state.head_deadline(), Some(500));
    assert_eq!(m.state.peek_ready().map(|e| e.id), Some(id));
}

#[test]
fn a_held_enqueue_waits_and_is_not_ready() {
    let mut m = Machine::new(1, PLAIN);
    let (_, fx) = m.enqueue(
        &message("a", true),
        Facts {
            not_before: Some(900),
            ..Facts::default()
        },
    );
    assert_eq!(fx.ready, 0);
    assert_eq!(fx.wake_at, Some(900));
    assert_eq!((m.state.ready_len(), m.state.waiting_len()), (0, 1));
}

#[test]
fn settle_removes_checked_out_messages_and_ignores_unknown_ids() {
    let mut m = Machine::new(1, DLX);
    let ids = m.publish(3);
    let a = m.check_out().unwrap();
    assert_eq!(a, ids[0]);
    let fx = m.run(&Command::Settle(&[a, 999]));
    assert_eq!(
        fx,
        Effects {
            removed: 1,
            ..Effects::default()
        }
    );
    assert_eq!((m.state.ready_len(), m.state.unacked_len()), (2, 0));
    // A settle never dead-letters, even with a DLX.
    assert!(fx.dead_letters.is_empty());
}

#[test]
fn requeue_returns_to_the_original_place_and_counts_the_delivery() {
    let mut m = Machine::new(1, PLAIN);
    let ids = m.publish(3);
    let a = m.check_out().unwrap();
    let fx = m.run(&Command::Requeue(&[a]));
    assert_eq!(fx.ready, 1);
    let head = m.state.peek_ready().unwrap();
    assert_eq!(head.id, ids[0]);
    assert_eq!(head.delivery_count, 1);
    assert!(head.redelivered());
    // Again: the count goes on.
    m.check_out();
    m.run(&Command::Requeue(&[a]));
    assert_eq!(m.state.peek_ready().unwrap().delivery_count, 2);
    // A requeue of a message not checked out (live) does nothing.
    let fx = m.run(&Command::Requeue(&[12345]));
    assert_eq!(fx.ready, 0);
}

#[test]
fn drop_yields_dead_letters_with_the_reason_only_with_a_dlx() {
    for (cfg, want) in [(DLX, true), (PLAIN, false)] {
        let mut m = Machine::new(1, cfg);
        let ids = m.publish(3);
        let a = m.check_out().unwrap();
        // A checked-out message (rejected) and a ready one (expired head).
        let fx = m.run(&Command::Drop {
            reason: Reason::Rejected,
            ids: &[a],
        });
        let fx2 = m.run(&Command::Drop {
            reason: Reason::Expired,
            ids: &[ids[1], 777],
        });
        assert_eq!((fx.removed, fx2.removed), (1, 1));
        let got = [fx.dead_letter_ids(), fx2.dead_letter_ids()].concat();
        if want {
            assert_eq!(got, vec![(a, Reason::Rejected), (ids[1], Reason::Expired)]);
            // The dead letter says where the body is.
            assert_eq!(fx.dead_letters[0].0.pos(), pos(a));
        } else {
            assert!(got.is_empty());
        }
        assert_eq!(m.state.ready_len(), 1);
        assert_eq!(m.state.peek_ready().unwrap().id, ids[2]);
    }
}

#[test]
fn purge_removes_everything_below_upto_but_the_kept_ids() {
    let mut m = Machine::new(1, PLAIN);
    let ids = m.publish(4);
    let a = m.check_out().unwrap();
    let upto = m.next;
    let fx = m.run(&Command::Purge { upto, keep: &[a] });
    assert_eq!(fx.purged, 3);
    assert_eq!((m.state.ready_len(), m.state.unacked_len()), (0, 1));
    // Messages published after the purge stay.
    let later = m.publish(1);
    assert_eq!(m.state.peek_ready().unwrap().id, later[0]);
    // The kept one can still be settled.
    assert_eq!(m.run(&Command::Settle(&[ids[0]])).removed, 1);
}

#[test]
fn retry_waits_until_its_time_and_wakes_at_the_earliest() {
    let mut m = Machine::new(1, PLAIN);
    let ids = m.publish(2);
    let a = m.check_out().unwrap();
    let b = m.check_out().unwrap();
    let fx = m.run(&Command::Retry(&[(a, 2_000), (b, 1_000)]));
    assert_eq!(fx.wake_at, Some(1_000));
    assert_eq!(fx.ready, 0);
    assert_eq!((m.state.ready_len(), m.state.waiting_len()), (0, 2));
    assert_eq!(m.state.next_due(), Some(1_000));
    // Promotion by time is the leader's, not a command.
    assert_eq!(m.state.promote_due(1_500), 1);
    let head = m.state.peek_ready().unwrap();
    assert_eq!((head.id, head.delivery_count), (ids[1], 1));
    assert_eq!(m.state.promote_due(2_000), 1);
    assert_eq!(m.state.peek_ready().unwrap().id, ids[0]);
}

#[test]
fn priorities_order_the_heads_highest_level_first() {
    let mut m = Machine::new(3, DLX);
    let msg = message("p", true);
    let level = |p| Facts {
        priority: Some(p),
        ..Facts::default()
    };
    let (low, _) = m.enqueue(&msg, level(0));
    let (high, _) = m.enqueue(&msg, level(2));
    let (mid, _) = m.enqueue(&msg, level(1));
    let (high2, _) = m.enqueue(&msg, level(9)); // above the maximum: top level
    let heads: Vec<u64> = m.state.heads().map(|e| e.id).collect();
    assert_eq!(heads, vec![high, high2, mid, low]);
    // A requeued message goes back to its own level, in id order.
    let got = m.check_out().unwrap();
    assert_eq!(got, high);
    m.run(&Command::Requeue(&[high]));
    let heads: Vec<u64> = m.state.heads().map(|e| e.id).collect();
    assert_eq!(heads, vec![high, high2, mid, low]);
}

#[test]
fn replay_skips_transient_messages_and_commands_naming_them() {
    let mut m = Machine::new(1, PLAIN);
    let (t, _) = m.enqueue(&message("t", false), Facts::default());
    let (p, _) = m.enqueue(&message("p", true), Facts::default());
    m.check_out();
    m.run(&Command::Requeue(&[t]));
    let st = m.replayed(1);
    assert_eq!(st.ready_len(), 1);
    assert_eq!(st.peek_ready().unwrap().id, p);
}

/// One random live run: publishes (with deadlines, priorities and holds),
/// deliveries, acks, requeues, retries, drops, purges, promotions — the
/// leader-local steps (checkout, promotion) interleaved but not logged.
fn random_run(seed: u64, levels: usize) -> Machine {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut m = Machine::new(levels, DLX);
    let mut now = 1_000u64;
    let mut unacked: Vec<u64> = Vec::new();
    for _ in 0..rng.gen_range(20..200) {
        now += rng.gen_range(0..50);
        match rng.gen_range(0..100) {
            0..=34 => {
                let body = "x".repeat(rng.gen_range(0..64));
                let facts = Facts {
                    deadline: rng.gen_bool(0.3).then(|| now + rng.gen_range(0..500)),
                    priority: (levels > 1).then(|| rng.gen_range(0..levels as u8 + 2)),
                    not_before: rng.gen_bool(0.1).then(|| now + rng.gen_range(0..300)),
                };
                m.enqueue(&message(&body, true), facts);
            }
            35..=54 => {
                if let Some(id) = m.check_out() {
                    unacked.push(id);
                }
            }
            55..=66 if !unacked.is_empty() => {
                let id = unacked.swap_remove(rng.gen_range(0..unacked.len()));
                m.run(&Command::Settle(&[id]));
            }
            67..=76 if !unacked.is_empty() => {
                let id = unacked.swap_remove(rng.gen_range(0..unacked.len()));
                m.run(&Command::Requeue(&[id]));
            }
            77..=82 if !unacked.is_empty() => {
                let id = unacked.swap_remove(rng.gen_range(0..unacked.len()));
                m.run(&Command::Retry(&[(id, now + rng.gen_range(0..400))]));
            }
            83..=87 if !unacked.is_empty() => {
                let id = unacked.swap_remove(rng.gen_range(0..unacked.len()));
                let reason = [Reason::Rejected, Reason::DeliveryLimit][rng.gen_range(0..2)];
                m.run(&Command::Drop { reason, ids: &[id] });
            }
            88..=92 => {
                // Expiry or overflow: the first heads go.
                let n = rng.gen_range(0..4);
                let ids: Vec<u64> = m.state.heads().take(n).map(|e| e.id).collect();
                if !ids.is_empty() {
                    m.run(&Command::Drop {
                        reason: Reason::Expired,
                        ids: &ids,
                    });
                }
            }
            93..=95 => {
                let upto = m.next;
                let keep = m.state.unacked_ids();
                m.run(&Command::Purge { upto, keep: &keep });
            }
            _ => {
                m.state.promote_due(now);
            }
        }
    }
    m
}

#[test]
fn replaying_a_random_run_rebuilds_the_live_state() {
    for seed in 0..300 {
        let levels = [1, 1, 4][(seed % 3) as usize];
        let m = random_run(seed, levels);
        let mut live_digest_src = m.replayed(levels);
        // Time passing makes every waiting message ready on both sides.
        live_digest_src.promote_due(u64::MAX);
        let replayed = live_digest_src.digest();
        let mut live = m.state;
        live.promote_due(u64::MAX);
        assert_eq!(live.digest(), replayed, "seed {seed}");
        let total = |s: &QueueState| {
            (
                s.ready_len() + s.unacked_len() + s.waiting_len(),
                s.ready_bytes() + s.unacked_bytes() + s.waiting_bytes(),
            )
        };
        assert_eq!(total(&live), total(&live_digest_src), "seed {seed}");
    }
}

#[test]
fn a_follower_applying_every_record_holds_every_live_message() {
    // The same commands applied step by step to a replica that receives
    // the records (no leader-local steps): states agree after every one.
    for seed in 0..100 {
        let m = random_run(seed, 1);
        let mut follower = QueueState::for_replay(1, true);
        for (p, bytes) in &m.log {
            let rec: Record = record::decode(Bytes::from(bytes.clone())).unwrap();
            let fx = apply(&mut follower, *p, &Command::from_record(&rec).unwrap(), DLX);
            // Applying never reads anything but the command: the same
            // record gives the same removal counts on every replica.
            if let Record::Settle(ids) | Record::Drop { ids, .. } = &rec {
                assert!(fx.removed <= ids.len());
            }
        }
        assert_eq!(follower.ready_len() + follower.waiting_len(), {
            let live = &m.state;
            live.ready_len() + live.unacked_len() + live.waiting_len()
        });
    }
}

//! The stream state machine driven by commands alone: each test applies
//! commands (and commits) and asserts on the effects `apply` returns and
//! on the state. The last tests run a random live stream over a real log
//! (the crash-simulating I/O backend) and check that replay at open — one
//! record per segment — and a replay of every record rebuild the live
//! state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::apply::{apply, commit};
use super::command::{Append, Command};
use super::commit::replay;
use super::effects::Effects;
use super::record;
use super::retention::Retention;
use super::state::StreamState;
use crate::test_support::message;
use ferry_log::{Log, LogConfig, SimIo};
use ferry_model::message::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

fn append(state: &mut StreamState, m: &Message, ts: u64, offset: u64, segment: u64) -> Effects {
    let rec = Append {
        ts,
        msg: m,
        properties: &m.properties,
    };
    apply(
        state,
        &Command::Append {
            rec,
            offset,
            segment,
        },
    )
}

fn truncate(state: &mut StreamState, before: u64) -> Effects {
    apply(state, &Command::Truncate { before })
}

#[test]
fn appends_in_the_active_segment_move_the_end_and_the_newest_time() {
    let m = message("a", true);
    let mut st = StreamState::starting_at(0);
    assert_eq!(append(&mut st, &m, 100, 0, 0), Effects::default());
    assert_eq!(append(&mut st, &m, 250, 1, 0), Effects::default());
    assert_eq!((st.first(), st.next(), st.committed()), (0, 2, 0));
    assert_eq!(st.last_ts(), 250);
    assert!(st.sealed_ts().is_empty());
    // A publish time below the newest (a replayed record of an old
    // format, a clock stepped back) never moves the newest time back.
    append(&mut st, &m, 200, 2, 0);
    assert_eq!(st.last_ts(), 250);
}

#[test]
fn an_append_in_a_new_segment_seals_the_active_one_with_its_newest_time() {
    let m = message("a", true);
    let mut st = StreamState::starting_at(0);
    append(&mut st, &m, 100, 0, 0);
    append(&mut st, &m, 151, 1, 0);
    let fx = append(&mut st, &m, 300, 2, 2);
    assert_eq!(fx.sealed, Some(0));
    assert_eq!(
        st.sealed_ts().iter().copied().collect::<Vec<_>>(),
        [(0, 151)]
    );
    assert_eq!((st.active_base(), st.last_ts(), st.next()), (2, 300, 3));
    let fx = append(&mut st, &m, 400, 3, 3);
    assert_eq!(fx.sealed, Some(2));
    assert_eq!(st.sealed_ts().back(), Some(&(2, 300)));
}

#[test]
fn an_empty_segment_is_not_sealed_and_known_offsets_are_ignored() {
    let m = message("a", true);
    // A log whose first segment starts at 10 (after retention) and holds
    // nothing yet: the first append goes to a later segment.
    let mut st = StreamState::starting_at(10);
    let fx = append(&mut st, &m, 100, 12, 12);
    assert_eq!(fx.sealed, None);
    assert!(st.sealed_ts().is_empty());
    assert_eq!((st.active_base(), st.next()), (12, 13));
    // Already applied (a replay overlapping what the state holds).
    let before = st.clone();
    assert_eq!(append(&mut st, &m, 900, 12, 20), Effects::default());
    assert_eq!(st, before);
}

#[test]
fn truncate_drops_whole_sealed_segments_never_the_active_one_never_back() {
    let m = message("a", true);
    let mut st = StreamState::starting_at(0);
    for (off, seg, ts) in [(0, 0, 10), (1, 0, 20), (2, 2, 30), (3, 3, 40), (4, 4, 50)] {
        append(&mut st, &m, ts, off, seg);
    }
    commit(&mut st, 5);
    let fx = truncate(&mut st, 3);
    assert_eq!(fx.purge_before, Some(3));
    assert_eq!(st.first(), 3);
    assert_eq!(
        st.sealed_ts().iter().copied().collect::<Vec<_>>(),
        [(3, 40)]
    );
    // Backwards or in place: nothing.
    assert_eq!(truncate(&mut st, 2), Effects::default());
    assert_eq!(truncate(&mut st, 3), Effects::default());
    // Past the active segment's base: stops there.
    let fx = truncate(&mut st, 99);
    assert_eq!(fx.purge_before, Some(4));
    assert_eq!((st.first(), st.next()), (4, 5));
    assert!(st.sealed_ts().is_empty());
}

#[test]
fn commit_moves_the_committed_end_forward_within_the_appended_records() {
    let m = message("a", true);
    let mut st = StreamState::starting_at(0);
    for off in 0..3 {
        append(&mut st, &m, 1, off, 0);
    }
    assert_eq!(commit(&mut st, 2).committed, Some(2));
    assert_eq!(commit(&mut st, 2), Effects::default());
    assert_eq!(commit(&mut st, 1), Effects::default());
    assert_eq!(st.committed(), 2);
    // Never past what was appended.
    assert_eq!(commit(&mut st, 10).committed, Some(3));
    assert_eq!(st.committed(), 3);
}

/// A live stream over a real log: the deciding side of `Stream` (publish
/// time from a clock that may step back, never below the newest record;
/// retention cuts from `cut_point`), its log and its state.
struct Live {
    io: SimIo,
    log: Log,
    state: StreamState,
    clock: u64,
}

const DIR: &str = "/data/s";

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    }
}

impl Live {
    fn new() -> Self {
        let io = SimIo::new();
        let (log, _) = Log::open(io.shared(), Path::new(DIR), cfg()).unwrap();
        let state = replay(&log).unwrap();
        Live {
            io,
            log,
            state,
            clock: 1_000_000,
        }
    }

    fn publish(&mut self, body: &str) {
        let m = message(body, true);
        let ts = self.clock.max(self.state.last_ts());
        let rec = Append {
            ts,
            msg: &m,
            properties: &m.properties,
        };
        let mut buf = Vec::new();
        rec.encode(&mut buf).unwrap();
        let active = self.state.active_base();
        let had_records = self.state.next() > active;
        let pos = self.log.append(&buf).unwrap();
        let cmd = Command::Append {
            rec,
            offset: pos.index,
            segment: pos.segment,
        };
        let fx = apply(&mut self.state, &cmd);
        let rolled = pos.segment != active && had_records;
        assert_eq!(fx.sealed, rolled.then_some(active));
        assert_eq!(self.state.next(), self.log.next_index());
        assert_eq!(self.state.last_ts(), ts);
    }

    fn sync(&mut self) {
        if let Some(job) = self.log.prepare_sync().unwrap() {
            self.log.complete_sync(job.run());
        }
        let durable = self.log.durable_index().map_or(0, |i| i + 1);
        let before = self.state.committed();
        let fx = commit(&mut self.state, durable);
        assert_eq!(fx.committed, (durable > before).then_some(durable));
        assert_eq!(self.state.committed(), self.log.next_index());
    }

    fn retain(&mut self, max_bytes: Option<u64>, max_age: Option<u64>) {
        let first = self.state.first();
        let retention = Retention {
            max_bytes,
            max_age_ms: max_age,
        };
        let before = retention.decide(&self.log, &self.state, self.clock);
        let fx = apply(&mut self.state, &Command::Truncate { before });
        assert_eq!(fx.purge_before, (before > first).then_some(before));
        self.purge();
    }

    /// The effect of a Truncate: what the log can delete now.
    fn purge(&mut self) {
        if self.log.first_index() < self.state.first() {
            self.log.purge_before(self.state.first()).unwrap();
        }
    }
}

/// Applies every record of `log` (the reference `replay` must match).
fn replay_every_record(log: &Log) -> StreamState {
    let mut state = StreamState::starting_at(log.first_index());
    for item in log.reader(log.first_index()) {
        let (pos, rec) = item.unwrap();
        let (ts, msg) = record::decode(rec.payload).unwrap();
        let cmd = Command::Append {
            rec: Append::from_decoded(ts, &msg),
            offset: pos.index,
            segment: pos.segment,
        };
        apply(&mut state, &cmd);
    }
    commit(&mut state, log.next_index());
    state
}

fn random_run(seed: u64) -> Live {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut live = Live::new();
    let max_bytes = rng.gen_bool(0.5).then(|| rng.gen_range(4096..30_000));
    let max_age = rng.gen_bool(0.5).then(|| rng.gen_range(1_000..60_000));
    for _ in 0..rng.gen_range(50..400) {
        match rng.gen_range(0..20) {
            0..=15 => {
                // The wall clock mostly advances, sometimes steps back.
                live.clock = live.clock.saturating_add_signed(rng.gen_range(-500..2_000));
                let body = "x".repeat(rng.gen_range(1..700));
                live.publish(&body);
            }
            16..=17 => live.sync(),
            _ => live.retain(max_bytes, max_age),
        }
    }
    // Everything durable, every cut made (the log deletes only settled
    // segments: a cut decided before their sync finishes now).
    live.sync();
    live.purge();
    assert_eq!(live.log.first_index(), live.state.first(), "seed {seed}");
    live
}

#[test]
fn replay_at_open_rebuilds_the_live_state() {
    for seed in 0..60 {
        let live = random_run(seed);
        let full = replay_every_record(&live.log);
        assert_eq!(full, live.state, "every record, seed {seed}");
        assert_eq!(replay(&live.log).unwrap(), live.state, "open, seed {seed}");
        // And after a restart from the files.
        let Live { io, log, state, .. } = live;
        drop(log);
        let (reopened, _) = Log::open(io.shared(), Path::new(DIR), cfg()).unwrap();
        assert_eq!(replay(&reopened).unwrap(), state, "reopened, seed {seed}");
    }
}

#[test]
fn random_runs_roll_segments_and_cut_them() {
    // The property above is only worth something if runs seal and cut.
    let (mut sealed, mut cut) = (0, 0);
    for seed in 0..60 {
        let live = random_run(seed);
        sealed += live.state.sealed_ts().len();
        cut += usize::from(live.state.first() > 0);
    }
    assert!(sealed > 100, "{sealed}");
    assert!(cut > 10, "{cut}");
}

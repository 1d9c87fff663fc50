//! The one apply path of a stream: how a command (and a commit) changes
//! its state. A live publish (after the record is appended), opening a
//! stream (`Stream::open` replays through it) and, later, a Raft follower
//! run these same functions, so they agree by construction.
//!
//! Deterministic: no clock, no I/O, no sinks, no locks. What it asks of
//! the world comes back as [`Effects`]. Leader-local and not here: push
//! consumers (their offsets, credit, dispatch), pull readers, confirm
//! waiters, and the retention *decision* (it reads the clock and the
//! segment sizes; its outcome is a Truncate).

use super::command::Command;
use super::effects::Effects;
use super::state::StreamState;

/// Applies `cmd` to `state`.
///
/// * Append: the offset range grows to include it (an Append at or below
///   what the state already holds is ignored); a record in another segment
///   than the active one seals the active one with its newest publish time
///   (`Effects::sealed`) if it held records; the newest publish time is
///   the largest seen.
/// * Truncate: the first offset moves up to `before` (never past the
///   active segment, never back); sealed segments that end at or below it
///   leave the time table (`Effects::purge_before`).
pub fn apply(state: &mut StreamState, cmd: &Command) -> Effects {
    let mut fx = Effects::default();
    match *cmd {
        Command::Append {
            rec,
            offset,
            segment,
        } => {
            if offset < state.next {
                return fx;
            }
            if segment != state.active_base {
                if state.next > state.active_base {
                    state
                        .sealed_ts
                        .push_back((state.active_base, state.last_ts));
                    fx.sealed = Some(state.active_base);
                }
                state.active_base = segment;
            }
            state.last_ts = state.last_ts.max(rec.ts);
            state.next = offset + 1;
        }
        Command::Truncate { before } => {
            let before = before.min(state.active_base);
            if before <= state.first {
                return fx;
            }
            state.first = before;
            state.committed = state.committed.max(before);
            while state.sealed_ts.front().is_some() {
                let end = state.sealed_ts.get(1).map_or(state.active_base, |s| s.0);
                if end > before {
                    break;
                }
                state.sealed_ts.pop_front();
            }
            fx.purge_before = Some(before);
        }
    }
    fx
}

/// The records below `upto` are durable (today: the log's durable index +
/// 1 after a sync; in a Raft group: the commit index). Not a command: a
/// replica learns it from its log, not from a record. Never moves back,
/// never past the appended records.
pub fn commit(state: &mut StreamState, upto: u64) -> Effects {
    let upto = upto.min(state.next);
    if upto <= state.committed {
        return Effects::default();
    }
    state.committed = upto;
    Effects {
        committed: Some(upto),
        ..Effects::default()
    }
}

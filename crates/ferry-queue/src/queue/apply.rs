//! The one apply path: how a command changes a queue's state. Live
//! operation (after the command's record is appended), restart replay
//! (for each decoded record) and, later, a Raft follower run this same
//! function, so they agree by construction.
//!
//! `apply` is deterministic: no clock, no I/O, no sinks, no locks. What it
//! asks of the world comes back as [`Effects`]. Ids it does not know are
//! ignored (replay may start at any retained record; a settle may name a
//! message a purge already took).
//!
//! Where a message is when a command names it depends on what the log
//! does not say: checkouts (deliveries) and the promotion of due waiting
//! messages are leader-local steps, not commands. So a command acts on an
//! id wherever it is: checked out (live), ready (replay: every message
//! comes back ready) or waiting (replay of a retried message that was
//! delivered again before this command).

use super::command::Command;
use super::effects::Effects;
use super::record::Record;
use super::state::{Entry, QueueState};
use ferry_log::RecordPos;

/// What `apply` needs to know of the queue's configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyConfig {
    /// The queue has a dead-letter exchange: Drops yield dead letters.
    pub dead_letters: bool,
}

/// Applies `cmd`, whose record is at `pos`, to `state`.
pub fn apply(state: &mut QueueState, pos: RecordPos, cmd: &Command, cfg: ApplyConfig) -> Effects {
    let mut fx = Effects::default();
    match *cmd {
        Command::Enqueue { msg, facts } => {
            let body = u32::try_from(msg.body.len()).unwrap_or(u32::MAX);
            let e =
                Entry::new(pos, msg.persistent, None).with_priority(facts.priority.unwrap_or(0));
            match facts.not_before {
                Some(until) => {
                    state.hold(e, until, facts.deadline, body);
                    fx.wake(until);
                }
                None => {
                    state.enqueue(e, facts.deadline, body);
                    fx.ready = 1;
                    if let Some(d) = facts.deadline {
                        fx.wake(d);
                    }
                }
            }
        }
        Command::Settle(ids) => {
            for id in ids {
                if let Some(e) = state.remove(*id) {
                    fx.removed += 1;
                    fx.gone(&e);
                }
            }
        }
        Command::Drop { reason, ids } => {
            for id in ids {
                if let Some(e) = state.remove(*id) {
                    fx.removed += 1;
                    fx.gone(&e);
                    if cfg.dead_letters {
                        fx.dead_letters.push((e, reason));
                    }
                }
            }
        }
        Command::Requeue(ids) => {
            for id in ids {
                if state.return_any(*id, None) {
                    fx.ready += 1;
                }
            }
        }
        Command::Retry(items) => {
            for (id, until) in items {
                if state.return_any(*id, Some(*until)) {
                    fx.wake(*until);
                }
            }
        }
        Command::Purge { upto, keep } => {
            let (n, freed) = state.purge_below(upto, keep);
            fx.purged = n;
            fx.freed_cache = freed;
        }
    }
    fx
}

/// Restart replay of one record: `apply`, its effects ignored (nothing is
/// delivered, confirmed or dead-lettered twice), after the one rule of a
/// restart: transient messages do not outlive the process, so their
/// Enqueue records are skipped (and later commands naming them ignored).
pub fn replay_record(state: &mut QueueState, pos: RecordPos, rec: &Record) {
    if let Record::Enqueue { msg, .. } = rec {
        if !msg.persistent {
            return;
        }
    }
    if let Some(cmd) = Command::from_record(rec) {
        apply(state, pos, &cmd, ApplyConfig::default());
    }
}

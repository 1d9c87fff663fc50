//! Decide → log → apply → execute: the one way a stream's state changes.
//!
//! * A publish decides its facts (`Stream::append`: publish time from the
//!   clock, never below the newest record's; the `x-stream-offset`
//!   header), then [`Stream::commit`] encodes the Append, appends its
//!   record and runs [`apply`] with where the log put it — what
//!   [`replay`] runs for the same record at open. A failed append changes
//!   nothing.
//! * Retention decides a cut (`retention.rs`: clock, limits, segment
//!   sizes) and applies it as a Truncate.
//! * The sync that makes records durable applies [`commit`] (`synced`).
//!
//! [`Stream::execute`] carries out the effects under `inner`: a sealed
//! segment makes retention look again after the next sync, a Truncate
//! deletes the segments below it (once the log has settled them) and moves
//! consumers up, newly committed records wake pull readers (consumers at
//! the tail are dispatched by the caller, a leader-local step). Confirms
//! run after `inner` is released (`crate::syncer::LogOwner`).
//!
//! Also here: the stream as a member of the durability rounds.

use super::apply::{apply, commit};
use super::command::{Append, Command};
use super::effects::Effects;
use super::record;
use super::state::StreamState;
use super::stream::{Inner, Stream};
use crate::error::Result;
use crate::syncer::LogOwner;
use ferry_log::Log;
use std::sync::Arc;

/// Largest encode buffer kept between publishes.
const SCRATCH_KEEP: usize = 1 << 20;

/// The state of the stream whose log is `log`, as at open: for each
/// segment holding records, its last record's Append goes through
/// [`apply`], then everything in the log is committed ([`commit`]).
///
/// Only the last record of a segment: an Append changes the state through
/// its offset, its segment and its publish time alone, and publish times
/// never decrease, so a segment's last record leaves the state all of its
/// records would (`apply_tests` checks this against applying every
/// record), and opening a large stream reads one record per segment.
/// Decoded whole, not just its time: a record that cannot be decoded makes
/// the stream `crashed` at boot (`VHost::load`).
///
/// A trailing segment without records (a crash between the log's roll and
/// its first record) leaves the state's active segment at the one before:
/// the next Append seals it, as a live roll would.
pub(super) fn replay(log: &Log) -> Result<StreamState> {
    let mut state = StreamState::starting_at(log.first_index());
    for s in log.segments() {
        if s.records == 0 {
            continue;
        }
        let offset = s.base + s.records - 1;
        let rec = log.read_index(offset)?;
        let (ts, msg) = record::decode(rec.payload)?;
        let cmd = Command::Append {
            rec: Append::from_decoded(ts, &msg),
            offset,
            segment: s.base,
        };
        apply(&mut state, &cmd);
    }
    commit(&mut state, log.next_index());
    Ok(state)
}

impl Stream {
    /// Logs `rec` and applies its Append, then executes the effects. On an
    /// append error nothing changed.
    pub(super) fn commit(&self, inner: &mut Inner, rec: Append<'_>) -> Result<()> {
        inner.scratch.clear();
        rec.encode(&mut inner.scratch)?;
        let pos = inner.log.append(&inner.scratch)?;
        if inner.scratch.capacity() > SCRATCH_KEEP {
            // One huge message must not pin its size in memory forever.
            inner.scratch = Vec::new();
        }
        let cmd = Command::Append {
            rec,
            offset: pos.index,
            segment: pos.segment,
        };
        let fx = apply(&mut inner.state, &cmd);
        self.execute(inner, fx);
        Ok(())
    }

    /// The leader's part of `fx`, under `inner`.
    pub(super) fn execute(&self, inner: &mut Inner, fx: Effects) {
        if fx.sealed.is_some() {
            inner.retention_pending |= inner.retention.has_retention();
        }
        if fx.purge_before.is_some() {
            self.purge(inner);
        }
        if let Some(upto) = fx.committed {
            self.readers.advance(upto);
        }
    }

    /// Deletes the segments below the first retained offset that the log
    /// can delete now (settled ones); the rest wait for a later sync
    /// (`retention_pending`). Consumers before it move up.
    pub(super) fn purge(&self, inner: &mut Inner) {
        let first = inner.state.first();
        if inner.log.first_index() < first {
            if let Err(e) = inner.log.purge_before(first) {
                tracing::warn!(stream = %self.name(), error = %e, "retention failed");
            }
        }
        inner.retention_pending = inner.log.first_index() < first;
        for c in inner.consumers.iter_mut() {
            c.next = c.next.max(first);
        }
    }

    /// Joins the next durability round (see `SyncSchedule`).
    pub(super) fn schedule_sync(&self) {
        crate::syncer::schedule(self);
    }

    /// Flushes and fsyncs now, on this thread (shutdown, tests).
    pub fn sync_now(&self) {
        crate::syncer::sync_serial(self);
    }
}

/// A stream's share of a durability round: the shared glue, and what it
/// covered is committed (retention, consumers at the tail woken).
impl LogOwner for Stream {
    crate::syncer::log_owner_fields!("stream");

    fn strong(&self) -> Option<Arc<Self>> {
        self.me.upgrade()
    }

    fn synced(&self, inner: &mut Inner) {
        let durable = inner.log.durable_index().map_or(0, |i| i + 1);
        let fx = commit(&mut inner.state, durable);
        self.execute(inner, fx);
        if inner.retention_pending {
            self.apply_retention(inner, self.env.clock.now_ms());
        }
        self.dispatch_locked(inner);
    }
}

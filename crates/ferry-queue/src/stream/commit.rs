//! [`Inner`], the state behind a stream's lock, and decide → log → apply
//! → execute: the one way a stream's state changes.
//!
//! * A publish decides its facts (`Stream::append`: publish time from the
//!   clock, never below the newest record's; the `x-stream-offset`
//!   header), then [`Inner::commit`] encodes the Append, appends its
//!   record and runs [`apply`] with where the log put it — what
//!   [`replay`] runs for the same record at open. A failed append changes
//!   nothing.
//! * Retention decides a cut (`retention.rs`: clock, limits, segment
//!   sizes) and [`Inner::retain`] applies it as a Truncate.
//! * The sync that makes records durable applies [`commit`] (`synced`).
//!
//! [`Inner::execute`] carries out the effects under `inner`: a sealed
//! segment makes retention look again after the next sync, a Truncate
//! deletes the segments below it (once the log has settled them) and moves
//! consumers up, newly committed records wake pull readers (`Readers`, a
//! leaf lock; consumers at the tail are dispatched by the caller, a
//! leader-local step). Confirms run after `inner` is released
//! (`crate::syncer::LogOwner`).
//!
//! Also here: the stream as a member of the durability rounds. `Inner`'s
//! methods take no lock but the `Readers` leaf and call no sinks.

use super::apply::{apply, commit};
use super::command::{Append, Command};
use super::consumers::Consumers;
use super::effects::Effects;
use super::pull::Readers;
use super::record;
use super::retention::Retention;
use super::state::StreamState;
use super::stream::Stream;
use crate::error::Result;
use crate::queue::ConfirmToken;
use crate::syncer::LogOwner;
use ferry_log::Log;
use std::collections::VecDeque;
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

/// The state behind a stream's lock (`Stream.inner`), and the one way its
/// [`StreamState`] changes: [`Inner::commit`] (an Append), [`Inner::retain`]
/// (a Truncate) and the sync's [`commit`], each followed by
/// [`Inner::execute`].
#[derive(Debug)]
pub(crate) struct Inner {
    pub(super) log: Log,
    /// Offsets, committed prefix, publish times: changed only by
    /// `apply::apply` and `apply::commit` (here).
    pub(super) state: StreamState,
    /// Push consumers (`consumers.rs`).
    pub(super) consumers: Consumers,
    pub(super) waiters: VecDeque<(u64, ConfirmToken)>,
    /// A roll happened or a purge could not finish yet (the segment was
    /// not settled): evaluate retention after the next sync.
    pub(super) retention_pending: bool,
    scratch: Vec<u8>,
    pub(super) deleted: bool,
    /// Stopped on an unreadable record (`Stream::crash_locked`): deleted
    /// for every use, but its files stay until the stream is deleted.
    pub(super) crashed: bool,
    /// The retention in force (`x-max-age`, `x-max-length-bytes`, or a
    /// policy's `max-age` / `max-length-bytes`, which win).
    pub(super) retention: Retention,
}

impl Inner {
    /// A stream's state at open: `state` as [`replay`] rebuilt it from `log`.
    pub(super) fn new(log: Log, state: StreamState, retention: Retention) -> Self {
        Inner {
            log,
            state,
            consumers: Consumers::default(),
            waiters: VecDeque::new(),
            retention_pending: false,
            scratch: Vec::new(),
            deleted: false,
            crashed: false,
            retention,
        }
    }

    /// Logs `rec` and applies its Append, then executes the effects. On an
    /// append error nothing changed.
    pub(super) fn commit(&mut self, rec: Append<'_>, readers: &Readers, name: &str) -> Result<()> {
        self.scratch.clear();
        rec.encode(&mut self.scratch)?;
        let pos = self.log.append(&self.scratch)?;
        if self.scratch.capacity() > SCRATCH_KEEP {
            // One huge message must not pin its size in memory forever.
            self.scratch = Vec::new();
        }
        let cmd = Command::Append {
            rec,
            offset: pos.index,
            segment: pos.segment,
        };
        let fx = apply(&mut self.state, &cmd);
        self.execute(fx, readers, name);
        Ok(())
    }

    /// Retention's decision as of `now`: finishes the deletion of an
    /// earlier cut the log could not make yet, then cuts where
    /// [`Retention::decide`] says (a Truncate through `apply`, executed at
    /// once). Returns the next age deadline (`NEVER` if none).
    pub(super) fn retain(&mut self, now: u64, readers: &Readers, name: &str) -> u64 {
        self.purge(name);
        let cmd = self.retention.truncate(&self.log, &self.state, now);
        let fx = apply(&mut self.state, &cmd);
        self.execute(fx, readers, name);
        self.retention.deadline(&self.state)
    }

    /// The leader's part of `fx` (`name`: the stream's, for logs).
    pub(super) fn execute(&mut self, fx: Effects, readers: &Readers, name: &str) {
        if fx.sealed.is_some() {
            self.retention_pending |= self.retention.is_set();
        }
        if fx.purge_before.is_some() {
            self.purge(name);
        }
        if let Some(upto) = fx.committed {
            readers.advance(upto);
        }
    }

    /// Deletes the segments below the first retained offset that the log
    /// can delete now (settled ones); the rest wait for a later sync
    /// (`retention_pending`). Consumers before it move up.
    fn purge(&mut self, name: &str) {
        let first = self.state.first();
        if self.log.first_index() < first {
            if let Err(e) = self.log.purge_before(first) {
                tracing::warn!(stream = %name, error = %e, "retention failed");
            }
        }
        self.retention_pending = self.log.first_index() < first;
        self.consumers.move_up(first);
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
        inner.execute(fx, &self.readers, &self.spec.name);
        if inner.retention_pending {
            self.apply_retention(inner, self.env.clock.now_ms());
        }
        self.dispatch_locked(inner);
    }
}

//! A replicated stream (a Raft group per stream, run by the crate that
//! knows Raft): what differs from a local stream.
//!
//! * A publish decides its publish time where it arrives and **proposes**
//!   the message's record (the stream record format, without the
//!   `x-stream-offset` header) to the group ([`Proposer`]); its confirm
//!   goes out once the group committed it (fsynced on a majority) and
//!   the leader applied it.
//! * Every replica applies each committed record through
//!   [`Stream::apply_committed`] with the offset the group's state
//!   machine counts for it (the number of message records committed
//!   before it): the publish time is raised to the newest record's, the
//!   offset header added, and the record appended to this replica's own
//!   stream log and applied as a local append is (`Inner::commit`). So a
//!   message has the same offset, bytes and publish time on every replica.
//!   A record whose offset this replica already holds (the log after a
//!   restart re-applied from an older point) is skipped.
//! * Consumers and pull readers of every replica read that replica's log,
//!   durable prefix only, as on a single node: a replica serves only
//!   committed messages (the group committed them before any replica
//!   applies them), possibly a little behind the leader.
//! * Retention is each replica's (as on a single node, docs/streams.md).
//! * A node outside the group holds no copy: it forwards publishes, and
//!   its consumers read through a member (`remote.rs`).
//!
//! Must not: know Raft or the cluster (the group is behind [`Proposer`]).

use super::record;
use super::stream::Stream;
use crate::error::{CoreError, Result};
use crate::queue::{ConfirmToken, Enqueued, ProposeDone, Proposer, QueueEnv, QueueSpec};
use bytes::Bytes;
use ferry_model::message::Message;
use ferry_model::Table;
use std::path::PathBuf;
use std::sync::Arc;

/// What applying one committed record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It took its offset (appended now, or held already).
    Offset,
    /// It does not decode: skipped on every replica alike, no offset taken.
    Skipped,
}

impl Stream {
    /// Opens (recovering) or creates this node's replica of a replicated
    /// stream whose log lives in `dir`; publishes go to `proposer`.
    pub fn open_replica(
        spec: QueueSpec,
        effective: &Table,
        vhost: Arc<str>,
        dir: PathBuf,
        env: QueueEnv,
        proposer: Arc<dyn Proposer>,
    ) -> Result<Arc<Self>> {
        Self::open_with(spec, effective, vhost, dir, env, Some(proposer))
    }

    /// Whether its publishes go to a group.
    pub fn is_replicated(&self) -> bool {
        self.proposer.is_some()
    }

    /// The offset after the last durable record of this replica's log.
    pub fn durable_next(&self) -> u64 {
        let g = self.inner.lock();
        g.log.durable_index().map_or(g.log.first_index(), |i| i + 1)
    }

    /// A replicated stream's publish: its record proposed with the publish
    /// time decided here; the confirm (if any) once committed.
    pub(super) fn propose_append(
        &self,
        proposer: &dyn Proposer,
        msg: &Arc<Message>,
        confirm: Option<ConfirmToken>,
    ) -> Result<Enqueued> {
        if self.inner.lock().deleted {
            return Err(self.not_found());
        }
        let mut buf = Vec::new();
        record::encode(msg, &msg.properties, self.env.clock.now_ms(), &mut buf)?;
        let done = confirm.map(|t| -> ProposeDone {
            Box::new(move |r| match r {
                Ok(()) => t.sink.confirmed(&[t.seq]),
                Err(_) => t.sink.failed(&[t.seq]),
            })
        });
        let deferred = done.is_some();
        proposer.propose(vec![Bytes::from(buf)], done);
        Ok(match deferred {
            true => Enqueued::Deferred,
            false => Enqueued::Confirmed,
        })
    }

    /// Applies one committed record of the group at `offset` (the group
    /// counts offsets: the records that took one before it). Appended to
    /// this replica's log unless it holds that offset already (or
    /// retention removed it); consumers see it once this log made it
    /// durable. An error is this replica's (its log failed): the group
    /// must stop applying, as offsets would diverge.
    pub fn apply_committed(&self, offset: u64, bytes: Bytes) -> Result<Applied> {
        let (ts, msg) = match record::decode(bytes) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(stream = %self.spec.name, offset, error = %e, "stream command skipped");
                return Ok(Applied::Skipped);
            }
        };
        {
            let mut g = self.inner.lock();
            if g.deleted {
                return Ok(Applied::Offset);
            }
            let next = g.log.next_index();
            if offset < next {
                return Ok(Applied::Offset);
            }
            if offset > next {
                return Err(CoreError::Corrupt(format!(
                    "stream '{}': committed offset {offset} after {next} records: a gap",
                    self.spec.name
                )));
            }
            let ts = ts.max(g.state.last_ts());
            let props = self.with_offset(&msg.properties, offset);
            let rec = super::command::Append {
                ts,
                msg: &msg,
                properties: &props,
            };
            g.commit(rec, &self.readers, &self.spec.name)?;
        }
        self.stats.published();
        self.schedule_sync();
        Ok(Applied::Offset)
    }
}

/// How much of the log one view covers while records are exported.
const EXPORT_VIEW_BYTES: u64 = 1 << 20;

impl Stream {
    /// Calls `f` with each durable record of this replica's log from its
    /// first retained offset up to `upto` (exclusive), as stored (offset,
    /// payload): what a lagging replica installs. Returns the first
    /// offset. Fails if the log does not hold `[first, upto)` durably (or
    /// retention removed a part while it was read: the caller tries
    /// again). Blocking file reads; the stream's lock is held only to
    /// capture each view.
    pub fn export_records(
        &self,
        upto: u64,
        f: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<u64> {
        let mut first = None;
        let mut from = 0;
        loop {
            let view = {
                let g = self.inner.lock();
                if g.deleted {
                    return Err(self.not_found());
                }
                if first.is_none() {
                    from = g.log.first_index();
                    first = Some(from);
                }
                if from >= upto {
                    break;
                }
                g.log.view(from, upto, EXPORT_VIEW_BYTES)?
            };
            if view.end() <= from {
                return Err(CoreError::Corrupt(format!(
                    "stream '{}': offsets {from}..{upto} are not durable here",
                    self.spec.name
                )));
            }
            for rec in view.records() {
                let rec = rec?;
                f(rec.index, &rec.payload)?;
            }
            from = view.end();
        }
        Ok(first.unwrap_or(upto))
    }

    /// Makes this replica's log hold what a leader's snapshot holds: the
    /// records `records` yields, at offsets `first`.. (dense). Records at
    /// offsets this log holds already are skipped (replicas hold the same
    /// committed records); a snapshot that starts past this log's end (the
    /// leader's retention removed what this replica lacks) replaces the
    /// log, which then starts at `first`. Durable on return; consumers
    /// below `first` move up to it. Returns the next offset. Blocking: the
    /// stream's lock is held while the records are written.
    pub fn install_records(
        &self,
        first: u64,
        records: &mut dyn Iterator<Item = Result<Bytes>>,
    ) -> Result<u64> {
        let _serial = self.sync_lock.lock();
        {
            let mut g = self.inner.lock();
            if g.deleted {
                return Err(self.not_found());
            }
            if first > g.log.next_index() {
                let mut cfg = super::stream::log_config(&self.env, &self.args);
                cfg.first_index = first;
                self.env.io.remove_dir_all(self.dir())?;
                let (log, _) = ferry_log::Log::open(self.env.io.clone(), self.dir(), cfg)?;
                g.log = log;
                tracing::info!(stream = %self.spec.name, first, "stream log replaced by the leader's (it starts past this replica's end)");
            }
            for (offset, rec) in (first..).zip(records) {
                let rec = rec?;
                if offset >= g.log.next_index() {
                    g.log.append(&rec)?;
                }
            }
            g.state = super::commit::replay(&g.log)?;
            let start = g.state.first();
            g.consumers.move_up(start);
        }
        crate::syncer::sync_alone(self);
        let mut g = self.inner.lock();
        // The replay counted every record committed; readers see them as
        // the log is durable now (a view stops at the durable end anyway).
        self.readers.advance(g.state.committed());
        self.dispatch_locked(&mut g);
        Ok(g.log.next_index())
    }
}

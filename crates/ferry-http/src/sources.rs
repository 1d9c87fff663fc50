//! Queues and streams as the API counts them: one view for both kinds, so
//! listings, totals, metrics, rates and definitions treat a stream as the
//! queue it is to RabbitMQ's API (`"type": "stream"`), without a branch per
//! kind in every handler.
//!
//! A stream's depth is its retained messages, all "ready" (RabbitMQ 3.10
//! shows `messages` = `messages_ready`, 0 unacknowledged); its byte counts
//! are 0 (RabbitMQ shows none).

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::Ctx;
use ferry_broker::VHost;
use ferry_queue::queue::{Depth, QueueSpec, StatsSnapshot};
use ferry_queue::source::{QueueRef, Source};
use std::sync::Arc;

/// One queue or stream at one instant.
#[derive(Debug, Clone)]
pub struct QueueView {
    /// The entry itself.
    pub entry: QueueRef,
    /// `classic`, `quorum` or `stream`.
    pub kind: &'static str,
    /// Ready / unacked / delayed messages, consumers.
    pub depth: Depth,
    /// Message counters.
    pub stats: StatsSnapshot,
}

impl QueueView {
    /// Reads an entry's depth and counters.
    pub fn of(entry: QueueRef) -> QueueView {
        let (kind, depth, stats) = match &entry {
            QueueRef::Queue(q) => (Source::kind(&**q), q.depth(), q.stats().snapshot()),
            QueueRef::Stream(s) => {
                let depth = Depth {
                    ready: u64::from(s.counts().0),
                    consumers: s.consumer_count() as u64,
                    ..Depth::default()
                };
                (Source::kind(&**s), depth, s.stats().snapshot())
            }
        };
        QueueView {
            entry,
            kind,
            depth,
            stats,
        }
    }

    /// Name.
    pub fn name(&self) -> &Arc<str> {
        self.entry.name()
    }

    /// Declared shape.
    pub fn spec(&self) -> &QueueSpec {
        match &self.entry {
            QueueRef::Queue(q) => q.spec(),
            QueueRef::Stream(s) => s.spec(),
        }
    }

    /// Every message the queue holds: ready, unacknowledged, and waiting
    /// for a delayed retry (RabbitMQ's `messages`).
    pub fn messages(&self) -> u64 {
        self.depth.ready + self.depth.unacked + self.depth.delayed
    }
}

/// Every queue and stream of a vhost, by name.
pub fn of_vhost(v: &VHost) -> Vec<QueueView> {
    v.queue_refs().into_iter().map(QueueView::of).collect()
}

/// The vhost (visible to the caller) and its queue or stream `name`, or
/// 404 for either.
pub fn find(
    ctx: &Ctx,
    caller: &Caller,
    vhost: &str,
    name: &str,
) -> ApiResult<(Arc<VHost>, QueueRef)> {
    let v = crate::common::vhost(ctx, caller, vhost)?;
    let q = v.queue_ref(name).ok_or(ApiError::NotFound)?;
    Ok((v, q))
}

//! Where delayed exchanges keep their held messages: one hidden queue per
//! `x-delayed-message` exchange, reusing the queue machinery (command log,
//! group commit, replay) instead of a store of its own.
//!
//! * A held publish is an Enqueue record with `not_before` (now + `x-delay`)
//!   in the hidden queue: a publisher confirm for a persistent message to a
//!   durable delayed exchange waits for that record's fsync, and a restart
//!   (even after kill -9) replays the hold with its original due time.
//! * The hidden queue posts its next due time to the broker's
//!   `ExpiryTimer`; the expiry sweep calls [`DelayedStore::release_due`],
//!   which takes due messages in due order (as basic.get would), routes
//!   each with the exchange's bindings at that moment and publishes it to
//!   its queues. The message is settled in the hidden queue only when every
//!   target queue has stored it (fsync for persistent messages in durable
//!   queues, through the same confirm path a publisher uses), so a crash
//!   in between publishes it again after the restart: at-least-once.
//! * Hidden queues are not in the vhost's queue map: no listing, no
//!   binding, no consumers. Their directories are
//!   `vhosts/<hex>/delayed/<hex(exchange)>/` (durable exchanges) or under
//!   the transient directory. Deleting the exchange deletes its queue and
//!   with it the messages it held.
//!
//! Owns the hidden queues (its `held` map) and where they live; the
//! vhost's exchange map says which delayed exchanges exist and routes what
//! falls due (`Topology::route_released`).
//!
//! Lock order: the store's map is taken after the vhost's `exchanges` and
//! `registry` locks and released before any queue is called.

use ferry_model::message::{parse_expiration, Message};
use ferry_model::{Table, Value};
use ferry_queue::error::{ErrorKind, Result};
use ferry_queue::queue::args::HOLD_ARG;
use ferry_queue::queue::{ConfirmSink, ConfirmToken, Enqueued, Queue, QueueEnv, QueueSpec};
use ferry_queue::source::Source;
use ferry_route::{delay_of, delayed};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

/// Messages released per hidden queue before its lock is let go between
/// batches (each is one basic.get-like take).
const RELEASE_BATCH: usize = 256;

/// The hidden queues of a vhost's delayed exchanges.
#[derive(Debug)]
pub struct DelayedStore {
    held: Mutex<HashMap<Arc<str>, Held>>,
    /// The vhost's name, directory and transient directory, and the
    /// environment its queues open with.
    vhost: Arc<str>,
    dir: PathBuf,
    transient_dir: PathBuf,
    env: QueueEnv,
}

#[derive(Debug, Clone)]
struct Held {
    queue: Arc<Queue>,
    sink: Arc<ReleaseSink>,
}

/// Settles a released message in its hidden queue once every queue it
/// was routed to has stored it.
#[derive(Debug)]
struct ReleaseSink {
    queue: Weak<Queue>,
    /// Hidden-queue id → target queues that have not confirmed yet.
    pending: Mutex<HashMap<u64, u32>>,
}

impl ConfirmSink for ReleaseSink {
    fn confirmed(&self, seqs: &[u64]) {
        let mut done = Vec::new();
        {
            let mut p = self.pending.lock();
            for s in seqs {
                if let Some(left) = p.get_mut(s) {
                    *left = left.saturating_sub(1);
                    if *left == 0 {
                        p.remove(s);
                        done.push(*s);
                    }
                }
            }
        }
        self.settle(&done);
    }

    fn failed(&self, seqs: &[u64]) {
        // A target's log failed: the message stays checked out in the
        // hidden queue, so a restart releases it again.
        let mut p = self.pending.lock();
        for s in seqs {
            p.remove(s);
        }
        tracing::error!(
            count = seqs.len(),
            "delayed messages not stored by a target queue; kept for the next start"
        );
    }

    fn rejected(&self, seqs: &[u64]) {
        // Refused by a full replicated queue's leader: still handled, as
        // `Enqueued::Rejected` from a local one.
        self.confirmed(seqs);
    }
}

impl ReleaseSink {
    fn settle(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        if let Some(q) = self.queue.upgrade() {
            if let Err(e) = q.settle(ids) {
                tracing::warn!(queue = %q.name(), error = %e, "cannot settle released messages");
            }
        }
    }
}

/// The spec of the hidden queue of exchange `exchange`.
fn hidden_spec(exchange: &str, durable: bool) -> QueueSpec {
    let mut arguments = Table::new();
    arguments.insert(HOLD_ARG, Value::str(exchange));
    QueueSpec {
        name: Arc::from(format!("{}({exchange})", delayed::TYPE_NAME)),
        durable,
        exclusive_owner: None,
        auto_delete: false,
        arguments,
    }
}

impl DelayedStore {
    /// An empty store of vhost `vhost` whose directory is `dir` (durable
    /// hidden queues go below `dir/delayed/`) and transient directory
    /// `transient_dir`.
    pub fn new(vhost: Arc<str>, dir: PathBuf, transient_dir: PathBuf, env: QueueEnv) -> Self {
        DelayedStore {
            held: Mutex::new(HashMap::new()),
            vhost,
            dir,
            transient_dir,
            env,
        }
    }

    /// Opens (and replays) the hidden queue of delayed exchange `exchange`:
    /// under the vhost's directory when the exchange is durable (its held
    /// messages survive a restart), else under the transient directory.
    pub fn open(&self, exchange: &Arc<str>, durable: bool) -> Result<()> {
        let dir = if durable {
            self.dir.join("delayed").join(crate::broker::hex(exchange))
        } else {
            self.transient_dir
                .join(format!("delayed-{}", super::storage_name()))
        };
        let spec = hidden_spec(exchange, durable);
        let queue = Queue::open(spec, self.vhost.clone(), dir, self.env.clone())?;
        let sink = Arc::new(ReleaseSink {
            queue: Arc::downgrade(&queue),
            pending: Mutex::new(HashMap::new()),
        });
        self.held
            .lock()
            .insert(exchange.clone(), Held { queue, sink });
        Ok(())
    }

    /// The hidden queue of `exchange`, if it is a delayed exchange.
    pub fn queue(&self, exchange: &str) -> Option<Arc<Queue>> {
        self.held.lock().get(exchange).map(|h| h.queue.clone())
    }

    /// Where a publish to delayed exchange `exchange` goes when its
    /// `x-delay` asks for a hold: the exchange's hidden queue. None: route
    /// it now.
    pub fn hold_target(&self, exchange: &str, headers: Option<&Table>) -> Option<Arc<Queue>> {
        headers.and_then(delay_of)?;
        self.queue(exchange)
    }

    /// Deletes the hidden queues whose delayed exchange is gone (`is_delayed`
    /// says which names still are delayed exchanges); a failure is logged.
    pub fn drop_orphans(&self, is_delayed: impl Fn(&str) -> bool) {
        if let Err(e) = self.remove_missing(is_delayed) {
            tracing::warn!(vhost = %self.vhost, error = %e, "cannot delete a delayed exchange's messages");
        }
    }

    /// Every hidden queue (shutdown syncs, memory alarm).
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.held.lock().values().map(|h| h.queue.clone()).collect()
    }

    /// The exchange was deleted: so is its hidden queue, with the messages
    /// it held.
    pub fn remove(&self, exchange: &str) -> Result<()> {
        let held = self.held.lock().remove(exchange);
        match held {
            Some(h) => h.queue.delete().map(|_| ()),
            None => Ok(()),
        }
    }

    /// Deletes the hidden queues of exchanges `exists` no longer knows
    /// (auto-deleted with their last binding, say).
    pub fn remove_missing(&self, exists: impl Fn(&str) -> bool) -> Result<()> {
        // Names first, the map released: `exists` takes the vhost's
        // exchange lock, which comes before this map in the lock order.
        let names: Vec<Arc<str>> = self.held.lock().keys().cloned().collect();
        for n in names.iter().filter(|n| !exists(n)) {
            self.remove(n)?;
        }
        Ok(())
    }

    /// Deletes every hidden queue (the vhost is deleted).
    pub fn remove_all(&self) -> Result<()> {
        let all: Vec<Held> = self.held.lock().drain().map(|(_, h)| h).collect();
        let mut first = Ok(());
        for h in all {
            if let Err(e) = h.queue.delete() {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// The earliest time a held message falls due (`NEVER` if none).
    pub fn next_due(&self) -> u64 {
        self.queues()
            .iter()
            .map(|q| q.next_expiry())
            .min()
            .unwrap_or(ferry_queue::clock::NEVER)
    }

    /// Routes every held message due at `now`: `route(exchange, message,
    /// headers)` names the queues the exchange's bindings lead to at this
    /// moment. Returns the earliest due time left.
    pub fn release_due(
        &self,
        now: u64,
        route: impl Fn(&str, &Message, Option<&Table>) -> Vec<Arc<dyn Source>>,
    ) -> u64 {
        let due: Vec<(Arc<str>, Held)> = self
            .held
            .lock()
            .iter()
            .filter(|(_, h)| h.queue.next_expiry() <= now)
            .map(|(n, h)| (n.clone(), h.clone()))
            .collect();
        for (exchange, held) in due {
            let mut released = 0;
            loop {
                // Due order (then publish order), not the ready list's id
                // order: a short delay published late goes out first.
                let got = match held.queue.take_due(now) {
                    Ok(Some(d)) => d,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(exchange = %exchange, error = %e, "cannot take held message");
                        break;
                    }
                };
                release_one(&held, &exchange, got.msg_id, &got.message, &route);
                released += 1;
                if released % RELEASE_BATCH == 0 {
                    std::thread::yield_now();
                }
            }
        }
        self.next_due()
    }
}

/// Publishes one due message to the queues `route` names; its hidden-queue
/// copy is settled when they all have it.
fn release_one(
    held: &Held,
    exchange: &str,
    id: u64,
    stored: &Message,
    route: &impl Fn(&str, &Message, Option<&Table>) -> Vec<Arc<dyn Source>>,
) {
    let (msg, headers) = released_message(stored);
    let targets = route(exchange, &msg, headers.as_ref());
    if targets.is_empty() {
        // Unroutable when due: dropped, as the plugin does (no
        // basic.return: the publisher is long gone).
        held.sink.settle(&[id]);
        return;
    }
    held.sink
        .pending
        .lock()
        .insert(id, u32::try_from(targets.len()).unwrap_or(u32::MAX));
    let msg = Arc::new(msg);
    let sink: Arc<dyn ConfirmSink> = held.sink.clone();
    for q in targets {
        let token = ConfirmToken {
            sink: sink.clone(),
            seq: id,
        };
        match q.publish(&msg, Some(token)) {
            Ok(Enqueued::Deferred) => {}
            // Refused by a full queue is still handled, as for a publisher.
            Ok(Enqueued::Confirmed | Enqueued::Rejected) => sink.confirmed(&[id]),
            Err(e) if e.kind() == ErrorKind::NotFound => sink.confirmed(&[id]),
            Err(e) => {
                tracing::warn!(queue = %q.name(), error = %e, "delayed message not stored");
                sink.failed(&[id]);
            }
        }
    }
}

/// The message as routed when due: `x-delay` negated, and its
/// `expiration` read again (the hidden queue's record does not keep the
/// parsed TTL; target queues apply it from their own enqueue on).
fn released_message(stored: &Message) -> (Message, Option<Table>) {
    let mut msg = stored.clone();
    let props = &stored.properties;
    let (Ok(headers), Ok(expiration)) = (
        ferry_queue::props::headers(props),
        ferry_queue::props::expiration(props),
    ) else {
        return (msg, None);
    };
    msg.expiration_ms = expiration
        .and_then(|e| std::str::from_utf8(&e).ok().map(str::to_owned))
        .and_then(|e| parse_expiration(&e).ok());
    let mut headers = headers;
    if let Some(h) = headers.as_mut() {
        if delayed::negate_delay(h) {
            match ferry_queue::props::with_headers(props, Some(h), false) {
                Ok(p) => msg.properties = p,
                Err(e) => tracing::warn!(error = %e, "cannot rewrite x-delay; sent as stored"),
            }
        }
    }
    (msg, headers)
}

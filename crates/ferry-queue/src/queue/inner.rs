//! What a queue's `inner` lock protects, and everything that runs under it:
//! decide → log → apply → execute, the one way a running queue changes.
//!
//! Each operation first *decides* against the current state without
//! changing it (which ids are affected, the facts: time from the clock,
//! reasons), then [`Inner::commit`] has the [`Journal`] encode the
//! command, append its record and run [`apply`](super::apply::apply) —
//! the function restart replay runs for the same record — and
//! [`Inner::execute`] carries out the leader's part of the effects under
//! `inner` (giving cached bytes back to the [`BodyCache`], reading the
//! bodies of dead letters before segment cleanup can remove them). What
//! calls into other components (routing dead letters, confirms) runs after
//! `inner` is released, in `Queue`; dispatch to [`Consumers`] is a
//! leader-local step (`dispatch`). The state never changes before its
//! record is appended: a failed append leaves it as it was.
//!
//! Also here, as the decisions they are: TTL expiry of the head, drop-head
//! overflow, the reject-publish and priority decisions of a publish
//! (`admit`; a replicated queue's reject-publish is its leader's, when it
//! proposes: `admission`), the delivery limit, delayed retry and a
//! delayed exchange's holds (their due times; the rules are in
//! `queue::retry`), and the `x-delivery-count` of a delivered message.

use super::admission::Pending;
use super::apply::ApplyConfig;
use super::args::{Overflow, QueueArgs};
use super::body_cache::BodyCache;
use super::command::Command;
use super::consumers::Consumers;
use super::dead_letter::{DeadLetter, Reason};
use super::effects::Effects;
use super::journal::{Journal, Logged};
use super::remote::Remote;
use super::retry::RetryPolicy;
use super::sinks::Delivery;
use super::state::{Entry, QueueState};
use super::stats::QueueStats;
use crate::clock::{Clock, ExpiryTimer};
use crate::error::Result;
use ferry_model::message::Message;
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

/// Dead letters collected under the queue lock before it is released to
/// route them (bounds the bodies held in memory at once).
pub(super) const LETTER_BATCH: usize = 256;

/// What `admit` found out about a message: (now, deadline) when it has a
/// TTL, its priority level, and until when a hidden queue holds it.
pub(super) type Admitted = (Option<u64>, Option<u64>, Option<u8>, Option<u64>);

/// What dispatch does about the head of the queue.
enum HeadCheck {
    /// Deliver it.
    Deliver,
    /// It expired and was dropped: look at the next one.
    Expired,
    /// Stop delivering for now.
    Stop,
}

/// The state behind a queue's lock.
#[derive(Debug)]
pub(crate) struct Inner {
    /// The queue's name (deliveries, dead letters, logs).
    name: Arc<str>,
    /// Time, for deadlines, holds and retries (`QueueEnv::clock`).
    clock: Arc<dyn Clock>,
    /// The broker's sweep (`QueueEnv::timer`).
    timer: Arc<ExpiryTimer>,
    /// TTL, limits and dead-lettering; None for a plain queue. Replaced
    /// when a policy changes (`Queue::apply_arguments`).
    pub(super) args: Option<Arc<QueueArgs>>,
    pub(super) state: QueueState,
    pub(super) journal: Journal,
    pub(super) consumers: Consumers,
    pub(super) cache: BodyCache,
    pub(super) deleted: bool,
    /// A replicated queue's replica that serves (delivers, sweeps,
    /// dead-letters): its group's leader. Always true for a local queue.
    pub(super) leads: bool,
    /// Purges proposed and not yet applied (replicated queues): nothing is
    /// delivered meanwhile, so a message the purge takes is never also
    /// handed out.
    pub(super) purging: u32,
    /// A follower's way to its leader and the deliveries waiting here.
    pub(super) remote: Remote,
    /// A replicated queue's leader: the enqueues it proposed and has not
    /// applied yet (its reject-publish limit counts them, `admission`).
    pub(super) pending: Pending,
}

impl Inner {
    /// The lock-protected part of a queue just opened.
    pub(super) fn new(
        name: Arc<str>,
        clock: Arc<dyn Clock>,
        timer: Arc<ExpiryTimer>,
        args: Option<Arc<QueueArgs>>,
        state: QueueState,
        journal: Journal,
        cache: BodyCache,
    ) -> Self {
        Inner {
            name,
            clock,
            timer,
            args,
            state,
            journal,
            consumers: Consumers::default(),
            cache,
            deleted: false,
            leads: true,
            purging: 0,
            remote: Remote::default(),
            pending: Pending::default(),
        }
    }

    /// The clock's time.
    pub(super) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// `x-expires`: after how long unused the queue expires.
    #[inline]
    pub(super) fn expires(&self) -> Option<u64> {
        self.args.as_deref().and_then(|a| a.expires)
    }

    /// Whether only one consumer at a time gets messages
    /// (`x-single-active-consumer`).
    #[inline]
    pub(super) fn single_active(&self) -> bool {
        self.args
            .as_deref()
            .is_some_and(|a| a.single_active_consumer)
    }

    fn has_dlx(&self) -> bool {
        self.args
            .as_deref()
            .is_some_and(|a| a.dead_letter_exchange.is_some())
    }

    /// What `apply` must know of this queue's arguments.
    pub(super) fn apply_config(&self) -> ApplyConfig {
        ApplyConfig {
            dead_letters: self.has_dlx(),
        }
    }

    /// Logs `cmd` and applies it: where its record is and its effects;
    /// on an append error nothing changed. A replicated queue proposes it
    /// instead (applied once committed, `Queue::apply_committed`), after
    /// taking the ready messages a Drop names out of delivery.
    #[inline]
    pub(super) fn commit(&mut self, cmd: &Command) -> Result<Logged> {
        let cfg = self.apply_config();
        if self.journal.is_replicated() {
            if !self.leads {
                // A follower's housekeeping (a policy's new limit, ...) is
                // its leader's to decide: nothing is proposed from here.
                return Ok(Logged::Proposed);
            }
            self.withhold(cmd);
        }
        self.journal.commit(&mut self.state, cfg, cmd)
    }

    /// A replicated queue's leader checks out the ready heads a Drop
    /// names (expired, over the limit) while the Drop is proposed, so that
    /// nothing delivers them; applying the Drop removes them wherever they
    /// are.
    #[cold]
    fn withhold(&mut self, cmd: &Command) {
        let Command::Drop { ids, .. } = cmd else {
            return;
        };
        while let Some(head) = self.state.peek_ready().map(|e| e.id) {
            if !ids.contains(&head) {
                break;
            }
            if let Some(e) = self.state.pop_ready() {
                self.cache.remove(&e);
                self.state.check_out(e);
            }
        }
    }

    /// `commit` of a command that may name no message (then nothing is
    /// logged), followed by `execute`.
    pub(super) fn commit_ids(
        &mut self,
        cmd: &Command,
        letters: &mut Vec<DeadLetter>,
    ) -> Result<Effects> {
        if cmd.is_empty() {
            return Ok(Effects::default());
        }
        let mut fx = self.commit(cmd)?.effects();
        self.execute(&mut fx, letters);
        Ok(fx)
    }

    /// `commit_ids` for the queue's own housekeeping (expiry, overflow),
    /// which has nobody to report a failure to.
    pub(super) fn commit_logged(
        &mut self,
        cmd: &Command,
        letters: &mut Vec<DeadLetter>,
    ) -> Effects {
        self.commit_ids(cmd, letters).unwrap_or_else(|e| {
            tracing::error!(queue = %self.name, error = %e, "cannot log a queue command");
            Effects::default()
        })
    }

    /// The leader's part of `fx` under `inner`: the body cache gets freed
    /// bytes back, dead letters are built (bodies read while their
    /// records surely exist), removals count towards segment cleanup.
    /// Dispatch and the sweep's deadline are the caller's (they depend on
    /// the whole operation, not one command).
    pub(super) fn execute(&mut self, fx: &mut Effects, letters: &mut Vec<DeadLetter>) {
        self.cache.freed(fx.freed_cache);
        for (e, reason) in std::mem::take(&mut fx.dead_letters) {
            match self.load(&e) {
                Ok(m) => letters.extend(self.letter(m, reason)),
                Err(err) => tracing::error!(
                    queue = %self.name, error = %err,
                    "cannot read a message to dead-letter it; dropped"
                ),
            }
        }
        if fx.removed > 0 {
            self.journal
                .count_settles(fx.removed, &self.state, &self.name);
        }
    }

    /// Removes log segments that hold only settled messages.
    pub(super) fn gc_segments(&mut self) {
        self.journal.gc_segments(&self.state, &self.name);
    }

    /// A dead letter for `msg`, if this queue has a dead-letter exchange.
    pub(super) fn letter(&self, msg: Arc<Message>, reason: Reason) -> Option<DeadLetter> {
        let a = self.args.as_deref()?;
        Some(DeadLetter {
            message: msg,
            reason,
            queue: self.name.clone(),
            exchange: a.dead_letter_exchange.clone()?,
            routing_key: a.dead_letter_routing_key.clone(),
        })
    }

    /// Of `ids`, the checked-out ones, each once, in the given order: what
    /// an ack, requeue or reject acts on. The common case — an ack
    /// multiple, strictly ascending, all checked out — borrows `ids`.
    pub(super) fn checked_out<'a>(&self, ids: &'a [u64]) -> Cow<'a, [u64]> {
        let ascending = ids.windows(2).all(|w| w[0] < w[1]);
        let unacked = |id: &u64| self.state.is_unacked(*id);
        if ascending {
            // No repeats; borrowed unless some are not checked out.
            return match ids.iter().position(|id| !unacked(id)) {
                None => Cow::Borrowed(ids),
                Some(at) => {
                    let mut v = ids[..at].to_vec();
                    v.extend(ids[at + 1..].iter().copied().filter(unacked));
                    Cow::Owned(v)
                }
            };
        }
        let mut seen = HashSet::with_capacity(ids.len());
        Cow::Owned(
            ids.iter()
                .copied()
                .filter(|id| unacked(id) && seen.insert(*id))
                .collect(),
        )
    }

    /// The message of `e` (cached, or read from the log).
    #[inline]
    pub(super) fn load(&mut self, e: &Entry) -> Result<Arc<Message>> {
        self.journal.load(e, &self.name)
    }

    /// Refills the in-memory window from a spilled backlog if it ran low.
    pub(super) fn ensure_window(&mut self) {
        if self.state.has_spill() && self.state.refill_target().is_some() {
            let cache_ok = !self.consumers.is_empty();
            if let Err(e) = self
                .journal
                .refill(&mut self.state, &mut self.cache, cache_ok)
            {
                tracing::error!(queue = %self.name, error = %e, "cannot load spilled messages");
            }
        }
    }

    /// `e` as handed out, with its `message`: to a consumer, or (`get`)
    /// by basic.get or a delayed exchange's release.
    #[inline]
    pub(super) fn delivery(&self, e: &Entry, message: Arc<Message>, get: bool) -> Delivery {
        Delivery {
            queue: self.name.clone(),
            msg_id: e.id,
            message: self.delivered_message(message, e.delivery_count, get),
            redelivered: e.redelivered(),
            delivery_count: u32::from(e.delivery_count),
        }
    }

    /// The message as delivered: quorum queues and queues with a delivery
    /// limit add `x-delivery-count` (how often it was returned). As in
    /// RabbitMQ 3.10.8's quorum queues, basic.get adds it always (0 on the
    /// first delivery) and a consumer delivery only once the message was
    /// returned (count > 0). The header is not stored: the count is the
    /// Requeue records'.
    #[inline]
    fn delivered_message(&self, m: Arc<Message>, count: u16, get: bool) -> Arc<Message> {
        match self.args.as_deref() {
            Some(a) if a.counts_deliveries() && (get || count > 0) => {
                self.with_delivery_count(m, count)
            }
            _ => m,
        }
    }

    #[cold]
    #[inline(never)]
    fn with_delivery_count(&self, m: Arc<Message>, count: u16) -> Arc<Message> {
        let edited = crate::props::with_header(
            &m.properties,
            "x-delivery-count",
            ferry_model::Value::I64(i64::from(count)),
        );
        match edited {
            Ok(properties) => Arc::new(Message {
                properties,
                ..(*m).clone()
            }),
            Err(e) => {
                tracing::warn!(queue = %self.name, error = %e, "cannot add x-delivery-count");
                m
            }
        }
    }

    /// Delivers ready messages to consumers with credit. Expired heads are
    /// dropped on the way (except `fresh`, the message being published).
    pub(super) fn dispatch(
        &mut self,
        stats: &QueueStats,
        letters: &mut Vec<DeadLetter>,
        fresh: Option<u64>,
    ) {
        if !self.leads && !self.deleted {
            // A follower's consumers are fed by the leader.
            self.remote.drain(&self.consumers);
            return;
        }
        if self.deleted || self.purging > 0 {
            return;
        }
        let mut settled: Vec<u64> = Vec::new();
        let mut now: Option<u64> = None;
        if self.state.has_waiting() && !self.consumers.is_empty() {
            now = Some(self.promote_due());
        }
        while self.state.ready_len() > 0 && !self.consumers.is_empty() {
            self.ensure_window();
            if self.state.has_meta() {
                match self.expire_before_delivery(&mut now, fresh, letters) {
                    HeadCheck::Deliver => {}
                    HeadCheck::Expired => continue,
                    HeadCheck::Stop => break,
                }
            }
            let single_active = self.single_active();
            let Some(idx) = self.consumers.pick(single_active) else {
                break;
            };
            let Some(head) = self.state.peek_ready().cloned() else {
                self.consumers.at(idx).sink.unreserve();
                break;
            };
            let message = match self.load(&head) {
                Ok(m) => m,
                Err(e) => {
                    self.consumers.at(idx).sink.unreserve();
                    tracing::error!(queue = %self.name, error = %e, "cannot read message");
                    break;
                }
            };
            let Some(entry) = self.state.pop_ready() else {
                break;
            };
            self.cache.remove(&entry);
            let delivery = self.delivery(&entry, message, false);
            let c = self.consumers.at(idx);
            // A checkout is leader-local (not logged); a no-ack delivery
            // is settled by one Settle command after the loop.
            if c.no_ack {
                settled.push(entry.id);
            }
            self.state.check_out(entry);
            stats.delivered(c.no_ack, delivery.redelivered);
            c.sink.deliver(&c.tag, delivery);
        }
        self.commit_logged(&Command::Settle(&settled), letters);
    }

    /// Drops the head if it expired (unless it is `fresh`, the message
    /// being published), reading the clock at most once per dispatch.
    #[cold]
    #[inline(never)]
    fn expire_before_delivery(
        &mut self,
        now: &mut Option<u64>,
        fresh: Option<u64>,
        letters: &mut Vec<DeadLetter>,
    ) -> HeadCheck {
        let Some(d) = self.state.head_deadline() else {
            return HeadCheck::Deliver;
        };
        let head = self.state.peek_ready().map(|e| e.id);
        let now = *now.get_or_insert_with(|| self.clock.now_ms());
        if d > now || head == fresh {
            return HeadCheck::Deliver;
        }
        match self.expire(now, letters) {
            Ok(true) => return HeadCheck::Expired,
            Ok(false) => {}
            // Nothing dropped (the log refuses writes): deliver nothing.
            Err(_) => return HeadCheck::Stop,
        }
        // Too many dead letters at once: the sweep goes on (and delivers)
        // once these are routed.
        self.timer.schedule(now);
        HeadCheck::Stop
    }

    /// basic.get past expiry: the head, checked out (or settled where it
    /// is, with `no_ack`: if the record cannot be written, the message
    /// stays ready and the get fails). None if there is no head.
    pub(super) fn take_head(
        &mut self,
        no_ack: bool,
        letters: &mut Vec<DeadLetter>,
    ) -> Result<Option<Delivery>> {
        if !self.leads {
            // A replicated queue's follower hands nothing out: its leader
            // does (it alone knows what is checked out).
            return Ok(None);
        }
        let Some(head) = self.state.peek_ready().cloned() else {
            return Ok(None);
        };
        let message = self.load(&head)?;
        let d = self.delivery(&head, message, true);
        if no_ack && !self.journal.is_replicated() {
            self.commit_ids(&Command::Settle(&[head.id]), letters)?;
        } else if no_ack {
            // Replicated: out of delivery now, settled once committed.
            if let Some(entry) = self.state.pop_ready() {
                self.cache.remove(&entry);
                self.state.check_out(entry);
            }
            self.commit_ids(&Command::Settle(&[head.id]), letters)?;
        } else {
            let Some(entry) = self.state.pop_ready() else {
                return Ok(None);
            };
            self.cache.remove(&entry);
            self.state.check_out(entry);
        }
        Ok(Some(d))
    }

    /// Length limit (reject-publish), deadline and priority level of a
    /// message about to be enqueued: None if refused, else (now, deadline)
    /// when it has a TTL, its level in a priority queue, and until when a
    /// delayed exchange's hidden queue holds it.
    #[cold]
    #[inline(never)]
    pub(super) fn admit(
        &self,
        msg: &Arc<Message>,
        letters: &mut Vec<DeadLetter>,
    ) -> Option<Admitted> {
        let mut ttl = msg.expiration_ms;
        let mut priority = None;
        if let Some(a) = self.args.as_deref() {
            if a.hold {
                // A delayed exchange's hold: no TTL while held (the target
                // queues apply the message's expiration when it arrives).
                return Some((None, None, None, self.hold_until(msg)));
            }
            // A replicated queue's limit is its leader's to decide, when it
            // proposes the Enqueue (`admission`): not against this copy.
            if a.overflow != Overflow::DropHead
                && !self.journal.is_replicated()
                && a.over_limit(
                    self.state.ready_len() as u64 + 1,
                    self.state.ready_body_bytes() + msg.body.len() as u64,
                )
            {
                if a.overflow == Overflow::RejectPublishDlx {
                    letters.extend(self.letter(msg.clone(), Reason::Maxlen));
                }
                return None;
            }
            ttl = match (ttl, a.message_ttl) {
                (Some(m), Some(q)) => Some(m.min(q)),
                (m, q) => m.or(q),
            };
            // Above the maximum counts as the maximum; none counts as 0.
            priority = a.max_priority.map(|max| {
                crate::props::priority(&msg.properties)
                    .unwrap_or(0)
                    .min(max)
            });
        }
        let now = ttl.map(|_| self.clock.now_ms());
        Some((
            now,
            now.zip(ttl).map(|(n, t)| n.saturating_add(t)),
            priority,
            self.hold_until(msg),
        ))
    }

    /// Until when this queue holds `msg`: None unless it is a delayed
    /// exchange's hidden queue, where it is now plus the message's
    /// `x-delay` (read once here; the time goes into the Enqueue record).
    fn hold_until(&self, msg: &Message) -> Option<u64> {
        if !self.args.as_deref().is_some_and(|a| a.hold) {
            return None;
        }
        let delay = crate::props::headers(&msg.properties)
            .ok()
            .flatten()
            .and_then(|h| ferry_route::delay_of(&h))
            .unwrap_or(0);
        Some(self.clock.now_ms().saturating_add(delay))
    }

    /// After an enqueue: drop-head overflow, and expiry of the head when
    /// the new message has a deadline (it may be the head, TTL 0).
    #[cold]
    #[inline(never)]
    pub(super) fn after_enqueue(&mut self, now: Option<u64>, letters: &mut Vec<DeadLetter>) {
        if let Some(a) = self.args.clone() {
            if a.limited() {
                self.drop_over_limit(&a, letters);
            }
        }
        if let Some(n) = now {
            // A failure is logged; the expired head is never delivered.
            let _ = self.expire(n, letters);
        }
    }

    /// Drop-head overflow: removes the oldest ready messages while the
    /// queue is over its limits (decided from the head walk, logged as a
    /// Drop with reason maxlen, then applied).
    pub(super) fn drop_over_limit(&mut self, a: &QueueArgs, letters: &mut Vec<DeadLetter>) {
        loop {
            self.ensure_window();
            let st = &self.state;
            let (mut len, mut bytes) = (st.ready_len() as u64, st.ready_body_bytes());
            let mut ids = Vec::new();
            for e in st.heads() {
                if !a.over_limit(len, bytes) {
                    break;
                }
                ids.push(e.id);
                len -= 1;
                bytes = bytes.saturating_sub(st.body_bytes(e.id));
            }
            let more = a.over_limit(len, bytes);
            let cmd = Command::Drop {
                reason: Reason::Maxlen,
                ids: &ids,
            };
            let fx = self.commit_logged(&cmd, letters);
            // Still over: the walk stopped at a spilled range (refilled
            // above on the next round); no progress means give up.
            if !more || fx.removed == 0 {
                return;
            }
        }
    }

    /// Drops expired messages from the head (a Drop with reason expired,
    /// decided from the head walk). False if it stopped at the
    /// dead-letter batch limit with an expired head left; an error if the
    /// Drop could not be logged (nothing changed: the expired head stays,
    /// and must not be delivered).
    pub(super) fn expire(&mut self, now: u64, letters: &mut Vec<DeadLetter>) -> Result<bool> {
        if !self.state.has_meta() && !self.state.has_spill() {
            return Ok(true);
        }
        let dlx = self.has_dlx();
        loop {
            self.ensure_window();
            let room = if dlx {
                LETTER_BATCH.saturating_sub(letters.len())
            } else {
                usize::MAX
            };
            let (ids, left) = {
                let st = &self.state;
                let mut expired = st
                    .heads()
                    .take_while(|e| st.deadline(e.id).is_some_and(|d| d <= now))
                    .map(|e| e.id);
                let ids: Vec<u64> = expired.by_ref().take(room).collect();
                (ids, expired.next().is_some())
            };
            if ids.is_empty() {
                return Ok(!left);
            }
            let cmd = Command::Drop {
                reason: Reason::Expired,
                ids: &ids,
            };
            let fx = self.commit_ids(&cmd, letters).inspect_err(|e| {
                tracing::error!(queue = %self.name, error = %e, "cannot log expired messages");
            })?;
            if left {
                return Ok(false);
            }
            if fx.removed == 0 {
                return Ok(true);
            }
        }
    }

    /// Of the checked-out `ids` about to be returned, takes out those
    /// whose next return would pass the delivery limit: they leave the
    /// queue (a Drop record, reason delivery_limit) and are dead-lettered.
    #[cold]
    #[inline(never)]
    pub(super) fn over_delivery_limit(
        &mut self,
        limit: u64,
        ids: &[u64],
        letters: &mut Vec<DeadLetter>,
    ) -> Result<()> {
        let dead: Vec<u64> = self
            .checked_out(ids)
            .iter()
            .copied()
            .filter(|id| {
                self.state
                    .unacked_delivery_count(*id)
                    .is_some_and(|n| u64::from(n) + 1 > limit)
            })
            .collect();
        let cmd = Command::Drop {
            reason: Reason::DeliveryLimit,
            ids: &dead,
        };
        self.commit_ids(&cmd, letters).map(|_| ())
    }

    /// Makes the waiting messages that are due ready; returns the time it
    /// read.
    #[cold]
    #[inline(never)]
    pub(super) fn promote_due(&mut self) -> u64 {
        let now = self.clock.now_ms();
        self.state.promote_due(now);
        now
    }

    /// Returns checked-out messages that wait before they are ready again:
    /// each until now plus its backoff, the times logged in one Retry
    /// record (replay restores the waits).
    #[cold]
    #[inline(never)]
    pub(super) fn retry_later(&mut self, policy: &RetryPolicy, ids: &[u64]) -> Result<()> {
        let now = self.clock.now_ms();
        let items: Vec<(u64, u64)> = self
            .checked_out(ids)
            .iter()
            .copied()
            .filter_map(|id| {
                let returns = self.state.unacked_delivery_count(id)?;
                Some((id, now.saturating_add(policy.delay_for(returns))))
            })
            .collect();
        let mut none = Vec::new();
        self.commit_ids(&Command::Retry(&items), &mut none)?;
        Ok(())
    }

    /// Counts the body bytes already queued, for a new `max-length-bytes`:
    /// the in-memory and checked-out ones are read back once each (at
    /// most the window's worth), a spilled backlog is read sequentially
    /// once (`Journal::spilled_body`).
    pub(super) fn count_bodies(&mut self) {
        for e in self.state.track_bodies() {
            match self.load(&e) {
                Ok(m) => {
                    let body = u32::try_from(m.body.len()).unwrap_or(u32::MAX);
                    self.state.note_body(e.id, body);
                }
                Err(err) => tracing::warn!(
                    queue = %self.name, error = %err,
                    "cannot read a message to count its bytes"
                ),
            }
        }
        let levels = self.state.levels();
        for (level, sp) in self.state.spilled_ranges() {
            match self.journal.spilled_body(levels, level, sp) {
                Ok(body) => self.state.note_spilled_body(level, body),
                Err(err) => tracing::warn!(
                    queue = %self.name, error = %err,
                    "cannot read spilled messages to count their bytes"
                ),
            }
        }
    }
}

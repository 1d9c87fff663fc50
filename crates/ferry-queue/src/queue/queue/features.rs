//! TTL, length limits, dead-lettering, priorities, queue expiry and the
//! delivery limit: the cold paths of a queue.

use super::*;
use crate::queue::command::Command;

/// What `admit` found out about a message: (now, deadline) when it has a
/// TTL, its priority level, and until when a hidden queue holds it.
pub(super) type Admitted = (Option<u64>, Option<u64>, Option<u8>, Option<u64>);

impl Queue {
    /// Length limit (reject-publish), deadline and priority level of a
    /// message about to be enqueued: None if refused, else (now, deadline)
    /// when it has a TTL, its level in a priority queue, and until when a
    /// delayed exchange's hidden queue holds it.
    #[cold]
    #[inline(never)]
    pub(super) fn admit(
        &self,
        inner: &Inner,
        msg: &Arc<Message>,
        letters: &mut Vec<DeadLetter>,
    ) -> Option<Admitted> {
        let mut ttl = msg.expiration_ms;
        let mut priority = None;
        if let Some(a) = inner.args.as_deref() {
            if a.hold {
                // A delayed exchange's hold: no TTL while held (the target
                // queues apply the message's expiration when it arrives).
                return Some((None, None, None, self.hold_until(inner, msg)));
            }
            if a.overflow != Overflow::DropHead
                && a.over_limit(
                    inner.state.ready_len() as u64 + 1,
                    inner.state.ready_body_bytes() + msg.body.len() as u64,
                )
            {
                if a.overflow == Overflow::RejectPublishDlx {
                    letters.extend(self.letter(inner, msg.clone(), Reason::Maxlen));
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
        let now = ttl.map(|_| self.env.clock.now_ms());
        Some((
            now,
            now.zip(ttl).map(|(n, t)| n.saturating_add(t)),
            priority,
            self.hold_until(inner, msg),
        ))
    }

    /// After an enqueue: drop-head overflow, and expiry of the head when
    /// the new message has a deadline (it may be the head, TTL 0).
    #[cold]
    #[inline(never)]
    pub(super) fn after_enqueue(
        &self,
        inner: &mut Inner,
        now: Option<u64>,
        letters: &mut Vec<DeadLetter>,
    ) {
        if let Some(a) = inner.args.clone() {
            if a.limited() {
                self.drop_over_limit(inner, &a, letters);
            }
        }
        if let Some(n) = now {
            // A failure is logged; the expired head is never delivered.
            let _ = self.expire_locked(inner, n, letters);
        }
    }

    /// A dead letter for `msg`, if this queue has a dead-letter exchange.
    pub(super) fn letter(
        &self,
        inner: &Inner,
        msg: Arc<Message>,
        reason: Reason,
    ) -> Option<DeadLetter> {
        let a = inner.args.as_deref()?;
        Some(DeadLetter {
            message: msg,
            reason,
            queue: self.spec.name.clone(),
            exchange: a.dead_letter_exchange.clone()?,
            routing_key: a.dead_letter_routing_key.clone(),
        })
    }

    pub(super) fn has_dlx(inner: &Inner) -> bool {
        inner
            .args
            .as_deref()
            .is_some_and(|a| a.dead_letter_exchange.is_some())
    }

    /// Hands dead letters to the vhost. Must be called without the lock.
    #[inline]
    pub(super) fn route_letters(&self, letters: Vec<DeadLetter>) {
        if !letters.is_empty() {
            self.route_letters_slow(letters);
        }
    }

    #[cold]
    #[inline(never)]
    pub(super) fn route_letters_slow(&self, letters: Vec<DeadLetter>) {
        match self.env.dead_letters.as_ref().and_then(Weak::upgrade) {
            Some(router) => router.dead_letter(letters),
            None => tracing::debug!(
                queue = %self.spec.name, count = letters.len(),
                "no dead-letter router: dead letters dropped"
            ),
        }
    }

    /// Drop-head overflow: removes the oldest ready messages while the
    /// queue is over its limits (decided from the head walk, logged as a
    /// Drop with reason maxlen, then applied).
    pub(super) fn drop_over_limit(
        &self,
        inner: &mut Inner,
        a: &QueueArgs,
        letters: &mut Vec<DeadLetter>,
    ) {
        loop {
            self.ensure_window(inner);
            let st = &inner.state;
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
            let fx = self.commit_logged(inner, &cmd, letters);
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
    pub(super) fn expire_locked(
        &self,
        inner: &mut Inner,
        now: u64,
        letters: &mut Vec<DeadLetter>,
    ) -> Result<bool> {
        if !inner.state.has_meta() && !inner.state.has_spill() {
            return Ok(true);
        }
        let dlx = Self::has_dlx(inner);
        loop {
            self.ensure_window(inner);
            let room = if dlx {
                LETTER_BATCH.saturating_sub(letters.len())
            } else {
                usize::MAX
            };
            let (ids, left) = {
                let st = &inner.state;
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
            let fx = self.commit_ids(inner, &cmd, letters).inspect_err(|e| {
                tracing::error!(queue = %self.spec.name, error = %e, "cannot log expired messages");
            })?;
            if left {
                return Ok(false);
            }
            if fx.removed == 0 {
                return Ok(true);
            }
        }
    }

    /// Publishes the head's deadline (or the next waiting message's
    /// time, if sooner) to the sweep.
    #[inline]
    pub(super) fn note_expiry(&self, inner: &Inner) {
        if inner.state.has_meta()
            || inner.state.has_waiting()
            || self.next_expiry.load(Ordering::Relaxed) != NEVER
        {
            self.note_expiry_slow(inner);
        }
    }

    #[cold]
    #[inline(never)]
    pub(super) fn note_expiry_slow(&self, inner: &Inner) {
        let head = inner.state.head_deadline().unwrap_or(NEVER);
        let d = head.min(inner.state.next_due().unwrap_or(NEVER));
        self.next_expiry.store(d, Ordering::Relaxed);
        if d != NEVER {
            self.env.timer.schedule(d);
        }
    }

    /// Whether the queue keeps deadlines or body sizes (tests: a plain
    /// queue must not).
    #[cfg(test)]
    pub(crate) fn has_side_table(&self) -> bool {
        self.inner.lock().state.has_meta()
    }

    /// The head's deadline (`NEVER` if none): when `expire` has work.
    pub fn next_expiry(&self) -> u64 {
        self.next_expiry.load(Ordering::Relaxed)
    }

    /// Drops (and dead-letters) the messages at the head whose deadline
    /// is at or before `now`, then delivers what is left. Called by the
    /// broker's expiry sweep.
    pub fn expire(&self, now: u64) {
        loop {
            let mut letters = Vec::new();
            let more = {
                let mut g = self.inner.lock();
                if g.deleted {
                    return;
                }
                let inner = &mut *g;
                if inner.state.has_waiting() {
                    inner.state.promote_due(now);
                }
                // Cannot log (poisoned): stop, the head stays undelivered.
                let done = self.expire_locked(inner, now, &mut letters);
                if done.is_ok() {
                    self.dispatch_locked(inner, &mut letters, None);
                }
                self.note_expiry(inner);
                done.is_ok_and(|d| !d)
            };
            self.route_letters(letters);
            if !more {
                return;
            }
        }
    }
}

impl Queue {
    /// Whether only one consumer at a time gets messages
    /// (`x-single-active-consumer`).
    #[inline]
    pub(super) fn single_active(inner: &Inner) -> bool {
        inner
            .args
            .as_deref()
            .is_some_and(|a| a.single_active_consumer)
    }

    /// The queue was used (basic.get, redeclared, lost its last consumer):
    /// with `x-expires`, its idle deadline starts again from now.
    #[inline]
    pub(super) fn touch_locked(&self, inner: &Inner) {
        if let Some(ms) = inner.args.as_deref().and_then(|a| a.expires) {
            self.touch_slow(ms);
        }
    }

    #[cold]
    #[inline(never)]
    pub(super) fn touch_slow(&self, ms: u64) {
        let at = self.env.clock.now_ms().saturating_add(ms);
        self.idle_deadline.store(at, Ordering::Relaxed);
        self.env.timer.schedule(at);
    }

    /// queue.declare (active or passive) of an existing queue: a use that
    /// restarts the `x-expires` countdown (RabbitMQ resets it on the stat
    /// both declarations make).
    pub fn touch(&self) {
        let g = self.inner.lock();
        if g.consumers.is_empty() && !g.deleted {
            self.touch_locked(&g);
        }
    }

    /// When the queue expires unused (`NEVER` if it does not).
    pub fn idle_deadline(&self) -> u64 {
        self.idle_deadline.load(Ordering::Relaxed)
    }

    /// Whether the queue has stayed unused past its `x-expires` at `now`
    /// (the broker's sweep then deletes it through its vhost).
    pub fn idle_expired(&self, now: u64) -> bool {
        let g = self.inner.lock();
        !g.deleted && g.consumers.is_empty() && self.idle_deadline() <= now
    }

    /// The message as delivered: quorum queues and queues with a delivery
    /// limit add `x-delivery-count` (how often it was returned; 0 on the
    /// first delivery, as RabbitMQ 3.10's quorum queues do). The header
    /// is not stored: the count is the Requeue records'.
    #[inline]
    pub(super) fn delivered_message(
        &self,
        args: Option<&QueueArgs>,
        m: Arc<Message>,
        count: u16,
    ) -> Arc<Message> {
        match args {
            Some(a) if a.counts_deliveries() => self.with_delivery_count(m, count),
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
                tracing::warn!(queue = %self.spec.name, error = %e, "cannot add x-delivery-count");
                m
            }
        }
    }

    /// Of the checked-out `ids` about to be returned, takes out those
    /// whose next return would pass the delivery limit: they leave the
    /// queue (a Drop record, reason delivery_limit) and are dead-lettered.
    #[cold]
    #[inline(never)]
    pub(super) fn over_delivery_limit(
        &self,
        inner: &mut Inner,
        limit: u64,
        ids: &[u64],
        letters: &mut Vec<DeadLetter>,
    ) -> Result<()> {
        let dead: Vec<u64> = Self::checked_out(inner, ids)
            .into_iter()
            .filter(|id| {
                inner
                    .state
                    .unacked_delivery_count(*id)
                    .is_some_and(|n| u64::from(n) + 1 > limit)
            })
            .collect();
        let cmd = Command::Drop {
            reason: Reason::DeliveryLimit,
            ids: &dead,
        };
        self.commit_ids(inner, &cmd, letters).map(|_| ())
    }
}

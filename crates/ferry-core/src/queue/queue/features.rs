//! TTL, length limits and dead-lettering: the cold paths of a queue.

use super::*;

impl Queue {
    /// Length limit (reject-publish) and deadline of a message about to be
    /// enqueued: None if refused, else (now, deadline) when it has a TTL.
    #[cold]
    #[inline(never)]
    pub(super) fn admit(
        &self,
        inner: &Inner,
        msg: &Arc<Message>,
        letters: &mut Vec<DeadLetter>,
    ) -> Option<(Option<u64>, Option<u64>)> {
        let mut ttl = msg.expiration_ms;
        if let Some(a) = self.args.as_deref() {
            if a.overflow != Overflow::DropHead
                && a.over_limit(
                    inner.state.ready_len() as u64 + 1,
                    inner.state.ready_body_bytes() + msg.body.len() as u64,
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
        }
        let now = ttl.map(|_| self.env.clock.now_ms());
        Some((now, now.zip(ttl).map(|(n, t)| n.saturating_add(t))))
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
        if let Some(a) = self.args.as_deref() {
            if a.limited() {
                self.drop_over_limit(inner, a, letters);
            }
        }
        if let Some(n) = now {
            self.expire_locked(inner, n, letters);
        }
    }

    /// A dead letter for `msg`, if this queue has a dead-letter exchange.
    pub(super) fn letter(&self, msg: Arc<Message>, reason: Reason) -> Option<DeadLetter> {
        let a = self.args.as_deref()?;
        Some(DeadLetter {
            message: msg,
            reason,
            queue: self.spec.name.clone(),
            exchange: a.dead_letter_exchange.clone()?,
            routing_key: a.dead_letter_routing_key.clone(),
        })
    }

    pub(super) fn has_dlx(&self) -> bool {
        self.args
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

    /// Removes `e` (just taken off the queue for `reason`) and, with a
    /// dead-letter exchange, adds its dead letter to `letters`.
    pub(super) fn kill(
        &self,
        inner: &mut Inner,
        e: &Entry,
        reason: Reason,
        letters: &mut Vec<DeadLetter>,
    ) {
        self.uncache(inner, e);
        if !self.has_dlx() {
            return;
        }
        match self.load(inner, e) {
            Ok(m) => letters.extend(self.letter(m, reason)),
            Err(err) => tracing::error!(
                queue = %self.spec.name, error = %err,
                "cannot read a message to dead-letter it; dropped"
            ),
        }
    }

    /// Drop-head overflow: removes the oldest ready messages while the
    /// queue is over its limits.
    pub(super) fn drop_over_limit(
        &self,
        inner: &mut Inner,
        a: &QueueArgs,
        letters: &mut Vec<DeadLetter>,
    ) {
        let mut ids = Vec::new();
        while a.over_limit(
            inner.state.ready_len() as u64,
            inner.state.ready_body_bytes(),
        ) {
            self.ensure_window(inner);
            let Some(e) = inner.state.drop_head() else {
                break;
            };
            self.kill(inner, &e, Reason::Maxlen, letters);
            ids.push(e.id);
        }
        self.write_drop(inner, Reason::Maxlen, &ids);
    }

    /// Drops expired messages from the head. False if it stopped at the
    /// dead-letter batch limit with an expired head left.
    pub(super) fn expire_locked(
        &self,
        inner: &mut Inner,
        now: u64,
        letters: &mut Vec<DeadLetter>,
    ) -> bool {
        if !inner.state.has_meta() && inner.state.spill().is_none() {
            return true;
        }
        let mut ids = Vec::new();
        let mut done = true;
        loop {
            self.ensure_window(inner);
            match inner.state.head_deadline() {
                Some(d) if d <= now => {}
                _ => break,
            }
            if letters.len() >= LETTER_BATCH {
                done = false;
                break;
            }
            let Some(e) = inner.state.drop_head() else {
                break;
            };
            self.kill(inner, &e, Reason::Expired, letters);
            ids.push(e.id);
        }
        self.write_drop(inner, Reason::Expired, &ids);
        done
    }

    /// Publishes the head's deadline to the sweep.
    #[inline]
    pub(super) fn note_expiry(&self, inner: &Inner) {
        if inner.state.has_meta() || self.next_expiry.load(Ordering::Relaxed) != NEVER {
            self.note_expiry_slow(inner);
        }
    }

    #[cold]
    #[inline(never)]
    pub(super) fn note_expiry_slow(&self, inner: &Inner) {
        let d = inner.state.head_deadline().unwrap_or(NEVER);
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
                let done = self.expire_locked(inner, now, &mut letters);
                self.dispatch_locked(inner, &mut letters, None);
                self.note_expiry(inner);
                !done
            };
            self.route_letters(letters);
            if !more {
                return;
            }
        }
    }
}

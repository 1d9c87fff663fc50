//! Delivery: the in-memory window, refills from a spilled backlog, dispatch to
//! consumers with credit, basic.get.

use super::*;
use crate::queue::command::Command;

impl Queue {
    /// Tries to deliver ready messages (after credit was freed).
    pub fn dispatch(&self) {
        let mut letters = Vec::new();
        {
            let mut g = self.inner.lock();
            self.dispatch_locked(&mut g, &mut letters, None);
            self.note_expiry(&g);
        }
        self.route_letters(letters);
    }

    pub(super) fn load(&self, inner: &mut Inner, e: &Entry) -> Result<Arc<Message>> {
        if let Some(m) = &e.cached {
            return Ok(m.clone());
        }
        let rec = inner.log.read(&e.pos())?;
        match record::decode(rec.payload)? {
            Record::Enqueue { msg, .. } => Ok(Arc::new(msg)),
            _ => Err(CoreError::Corrupt(format!(
                "record {} of queue '{}' is not an enqueue",
                e.id, self.spec.name
            ))),
        }
    }

    /// Loads the next part of the head level's spilled backlog back into
    /// memory (records of other levels in its range are skipped).
    pub(super) fn refill(&self, inner: &mut Inner) -> Result<()> {
        let Some((level, sp, want)) = inner.state.refill_target() else {
            return Ok(());
        };
        let levels = inner.state.levels();
        let cache_ok = !inner.consumers.is_empty();
        let Inner {
            log,
            state,
            cached_bytes,
            ..
        } = inner;
        let mut loaded = 0;
        let mut next = sp.from;
        for item in log.reader(sp.from) {
            let (pos, rec) = item?;
            if rec.index >= sp.to || loaded >= want {
                next = rec.index;
                break;
            }
            next = rec.index + 1;
            // A held message (`not_before`) lives in the waiting set,
            // never in a spilled range.
            if let Record::Enqueue {
                msg: m,
                expires_at,
                priority,
                not_before: None,
            } = record::decode(rec.payload)?
            {
                let p = priority.unwrap_or(0);
                if levels > 1 && usize::from(p).min(levels - 1) != level {
                    continue;
                }
                let size = i64::from(pos.len);
                let cached = if cache_ok
                    && self.env.cache_used.fetch_add(size, Ordering::Relaxed) + size
                        <= self.env.cache_limit
                {
                    *cached_bytes += size;
                    Some(Arc::new(m.clone()))
                } else {
                    if cache_ok {
                        self.env.cache_used.fetch_sub(size, Ordering::Relaxed);
                    }
                    None
                };
                let body = u32::try_from(m.body.len()).unwrap_or(u32::MAX);
                let e = Entry::new(pos, m.persistent, cached).with_priority(p);
                state.refill_push(e, expires_at, body);
                loaded += 1;
            }
        }
        state.refill_advance(level, next);
        Ok(())
    }

    pub(super) fn ensure_window(&self, inner: &mut Inner) {
        if inner.state.has_spill() && inner.state.refill_target().is_some() {
            if let Err(e) = self.refill(inner) {
                tracing::error!(queue = %self.spec.name, error = %e, "cannot load spilled messages");
            }
        }
    }

    /// Delivers ready messages to consumers with credit. Expired heads are
    /// dropped on the way (except `fresh`, the message being published).
    pub(super) fn dispatch_locked(
        &self,
        inner: &mut Inner,
        letters: &mut Vec<DeadLetter>,
        fresh: Option<u64>,
    ) {
        if inner.deleted {
            return;
        }
        let mut settled: Vec<u64> = Vec::new();
        let mut now: Option<u64> = None;
        if inner.state.has_waiting() && !inner.consumers.is_empty() {
            now = Some(self.promote_due(inner));
        }
        while inner.state.ready_len() > 0 && !inner.consumers.is_empty() {
            self.ensure_window(inner);
            if inner.state.has_meta() {
                match self.expire_before_delivery(inner, &mut now, fresh, letters) {
                    HeadCheck::Deliver => {}
                    HeadCheck::Expired => continue,
                    HeadCheck::Stop => break,
                }
            }
            let Some(idx) = self.pick_consumer(inner) else {
                break;
            };
            let Some(head) = inner.state.peek_ready().cloned() else {
                inner.consumers[idx].sink.unreserve();
                break;
            };
            let message = match self.load(inner, &head) {
                Ok(m) => m,
                Err(e) => {
                    inner.consumers[idx].sink.unreserve();
                    tracing::error!(queue = %self.spec.name, error = %e, "cannot read message");
                    break;
                }
            };
            let Some(entry) = inner.state.pop_ready() else {
                break;
            };
            self.uncache(inner, &entry);
            let c = &inner.consumers[idx];
            let delivery = Delivery {
                queue: self.spec.name.clone(),
                msg_id: entry.id,
                message: self.delivered_message(
                    inner.args.as_deref(),
                    message,
                    entry.delivery_count,
                ),
                redelivered: entry.redelivered(),
                delivery_count: u32::from(entry.delivery_count),
            };
            // A checkout is leader-local (not logged); a no-ack delivery
            // is settled by one Settle command after the loop.
            if c.no_ack {
                settled.push(entry.id);
            }
            inner.state.check_out(entry);
            self.stats.delivered(c.no_ack, delivery.redelivered);
            c.sink.deliver(&c.tag, delivery);
        }
        self.commit_logged(inner, &Command::Settle(&settled), letters);
    }

    /// The consumer to deliver the next message to, its credit reserved:
    /// the single active consumer (the first registered) in such a queue;
    /// else the first with credit among the highest-priority consumers
    /// (round-robin among equals), then the next priority down.
    fn pick_consumer(&self, inner: &mut Inner) -> Option<usize> {
        let cs = &inner.consumers;
        if Self::single_active(inner) {
            return cs.first().filter(|c| c.sink.reserve()).map(|_| 0);
        }
        let n = cs.len();
        let mut start = 0;
        while start < n {
            let p = cs[start].priority;
            // Sorted by priority: one group when the last equals the first
            // (the common case, no scan).
            let end = if cs[n - 1].priority == p {
                n
            } else {
                start + cs[start..].iter().take_while(|c| c.priority == p).count()
            };
            let len = end - start;
            let first = if (start..end).contains(&inner.rr) {
                inner.rr - start
            } else {
                0
            };
            if let Some(i) = (0..len)
                .map(|k| start + (first + k) % len)
                .find(|&i| cs[i].sink.reserve())
            {
                inner.rr = i + 1;
                return Some(i);
            }
            start = end;
        }
        None
    }

    /// Drops the head if it expired (unless it is `fresh`, the message
    /// being published), reading the clock at most once per dispatch.
    #[cold]
    #[inline(never)]
    pub(super) fn expire_before_delivery(
        &self,
        inner: &mut Inner,
        now: &mut Option<u64>,
        fresh: Option<u64>,
        letters: &mut Vec<DeadLetter>,
    ) -> HeadCheck {
        let Some(d) = inner.state.head_deadline() else {
            return HeadCheck::Deliver;
        };
        let head = inner.state.peek_ready().map(|e| e.id);
        let now = *now.get_or_insert_with(|| self.env.clock.now_ms());
        if d > now || head == fresh {
            return HeadCheck::Deliver;
        }
        match self.expire_locked(inner, now, letters) {
            Ok(true) => return HeadCheck::Expired,
            Ok(false) => {}
            // Nothing dropped (the log refuses writes): deliver nothing.
            Err(_) => return HeadCheck::Stop,
        }
        // Too many dead letters at once: the sweep goes on (and delivers)
        // once these are routed.
        self.env.timer.schedule(now);
        HeadCheck::Stop
    }

    /// basic.get: takes the head message. Returns it with the number of
    /// messages left.
    pub fn get(&self, no_ack: bool) -> Result<Option<(Delivery, u32)>> {
        loop {
            let mut letters = Vec::new();
            let got = self.get_locked(no_ack, &mut letters);
            self.route_letters(letters);
            match got {
                // Expired messages were dropped in a batch; go on.
                Ok(None) if self.head_expired() => continue,
                other => return other,
            }
        }
    }

    pub(super) fn head_expired(&self) -> bool {
        let g = self.inner.lock();
        g.state
            .head_deadline()
            .is_some_and(|d| d <= self.env.clock.now_ms())
    }

    pub(super) fn get_locked(
        &self,
        no_ack: bool,
        letters: &mut Vec<DeadLetter>,
    ) -> Result<Option<(Delivery, u32)>> {
        let mut g = self.inner.lock();
        if g.deleted {
            return Err(self.not_found());
        }
        let inner = &mut *g;
        if inner.consumers.is_empty() {
            self.touch_locked(inner);
        }
        if inner.state.has_waiting() {
            self.promote_due(inner);
        }
        self.ensure_window(inner);
        if inner.state.head_deadline().is_some() {
            let now = self.env.clock.now_ms();
            let done = self.expire_locked(inner, now, letters)?;
            self.note_expiry(inner);
            if !done {
                return Ok(None);
            }
        }
        let Some(head) = inner.state.peek_ready().cloned() else {
            return Ok(None);
        };
        let message = self.load(inner, &head)?;
        let d = Delivery {
            queue: self.spec.name.clone(),
            msg_id: head.id,
            message: self.delivered_message(inner.args.as_deref(), message, head.delivery_count),
            redelivered: head.redelivered(),
            delivery_count: u32::from(head.delivery_count),
        };
        if no_ack {
            // Settled where it is (the head): if the record cannot be
            // written, the message stays ready and the get fails.
            self.commit_ids(inner, &Command::Settle(&[head.id]), letters)?;
        } else {
            let Some(entry) = inner.state.pop_ready() else {
                return Ok(None);
            };
            self.uncache(inner, &entry);
            inner.state.check_out(entry);
        }
        self.stats.got(no_ack, d.redelivered);
        self.note_expiry(inner);
        Ok(Some((d, inner.state.ready_len() as u32)))
    }
}

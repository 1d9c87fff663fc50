//! The leader's side of serving a replicated queue's consumers on other
//! nodes ([`Served`], one per group on every member; it answers only
//! while its replica serves). A follower keeps a *session* with the
//! leader: its pulls and credit name all its consumers with how far the
//! leader may deliver to each; the leader registers a stand-in consumer
//! for each in its queue (`ConsumerSink::forwards`), whose deliveries wait
//! in the session until the follower's pull takes them. Acks, requeues
//! and rejects from the follower count only for messages delivered in the
//! same session. A session nobody pulled for [`SESSION_TTL`] ends: its
//! stand-ins go and what it held returns to the queue. On losing the
//! leadership every session ends (the replica already returned every
//! checkout).
//!
//! Lock order: the queue's `inner` → a session's state (a stand-in is
//! called under the queue's lock); nothing here calls into the queue while
//! holding a session's state.

use crate::wire::remote::{self, Credit, Delivered, Pulled, SettleOp};
use bytes::Bytes;
use ferry_queue::queue::{record, ConsumerSink, Delivery, Replica};
use ferry_raft::NodeId;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A session no request came for in this long ends.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(10);
/// A pull waits this long for deliveries before it is answered empty.
pub(crate) const PARK: Duration = Duration::from_secs(3);
/// A pull's answer carries about this many message bytes at most.
const ANSWER_BYTES: usize = 4 << 20;
/// The error answer of a node whose replica does not serve.
pub(crate) const NOT_LEADER: &str = "not the queue's leader";
/// The error answer for a session the leader does not know.
pub(crate) const UNKNOWN_SESSION: &str = "unknown session";

/// A group's sessions with the followers.
pub struct Served {
    replica: Replica,
    sessions: Mutex<HashMap<(NodeId, u64), Arc<Session>>>,
    /// Wakes the reaper when a session starts (it sleeps while none is).
    opened: tokio::sync::Notify,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("sessions", &self.sessions.lock().len())
            .finish()
    }
}

#[derive(Debug, Default)]
struct Session {
    state: Mutex<SessionState>,
    notify: Notify,
}

#[derive(Debug)]
struct SessionState {
    /// The follower's consumer id → its stand-in here.
    stand_ins: HashMap<u64, (u64, Arc<StandIn>)>,
    /// Ids delivered (or got) in this session and not settled.
    out: HashSet<u64>,
    /// Delivered, waiting for the next pull.
    buffer: Vec<(u64, Delivery)>,
    /// Stand-ins the queue ended or refused.
    cancelled: Vec<u64>,
    last_seen: Instant,
    /// A pull is waiting here (the session is alive).
    pulling: bool,
    /// A pull or credit created it (a get-only session takes no credit).
    credited: bool,
}

impl Default for SessionState {
    fn default() -> Self {
        SessionState {
            stand_ins: HashMap::new(),
            out: HashSet::new(),
            buffer: Vec::new(),
            cancelled: Vec::new(),
            last_seen: Instant::now(),
            pulling: false,
            credited: false,
        }
    }
}

/// A follower's consumer as the leader's queue sees it.
#[derive(Debug)]
struct StandIn {
    session: Arc<Session>,
    /// The follower's id of the consumer.
    cid: u64,
    no_ack: bool,
    sent: AtomicU64,
    limit: AtomicU64,
}

impl ConsumerSink for StandIn {
    fn reserve(&self) -> bool {
        let limit = self.limit.load(Ordering::Acquire);
        self.sent
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s < limit).then_some(s + 1)
            })
            .is_ok()
    }

    fn unreserve(&self) {
        self.sent.fetch_sub(1, Ordering::AcqRel);
    }

    fn deliver(&self, _tag: &Arc<str>, d: Delivery) {
        let mut st = self.session.state.lock();
        if !self.no_ack {
            st.out.insert(d.msg_id);
        }
        st.buffer.push((self.cid, d));
        drop(st);
        self.session.notify.notify_one();
    }

    fn cancelled(&self, _tag: &Arc<str>) {
        let mut st = self.session.state.lock();
        st.stand_ins.remove(&self.cid);
        st.cancelled.push(self.cid);
        drop(st);
        self.session.notify.notify_one();
    }

    fn forwards(&self) -> bool {
        true
    }
}

impl Served {
    /// The queue's figures while this replica serves (leads), else None.
    pub(crate) fn figures(&self) -> Option<ferry_queue::queue::Depth> {
        self.replica.serves().then(|| self.replica.queue().depth())
    }

    /// The queue replica it serves (its leader's decisions about
    /// forwarded proposals, `admission`).
    pub(crate) fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Sessions of `replica`'s group.
    pub fn new(replica: Replica) -> Arc<Self> {
        Arc::new(Served {
            replica,
            sessions: Mutex::new(HashMap::new()),
            opened: tokio::sync::Notify::new(),
        })
    }

    /// Answers a follower's request (`from`: its node).
    pub(crate) async fn handle(
        &self,
        from: NodeId,
        kind: u8,
        body: Bytes,
    ) -> Result<Bytes, String> {
        if !self.replica.serves() {
            self.end_of(from);
            return Err(NOT_LEADER.into());
        }
        match kind {
            remote::KIND_PULL | remote::KIND_CREDIT => {
                let c = remote::decode_credit(body).map_err(|e| e.to_string())?;
                self.credit(from, c, kind == remote::KIND_PULL).await
            }
            remote::KIND_SETTLE => {
                let (session, op, ids) = remote::decode_settle(body).map_err(|e| e.to_string())?;
                self.settle(from, session, op, ids)
            }
            remote::KIND_PURGE => {
                let n = self.replica.queue().purge().map_err(|e| e.to_string())?;
                Ok(Bytes::copy_from_slice(&n.to_le_bytes()))
            }
            remote::KIND_GET => {
                let (session, no_ack) = remote::decode_get(body).map_err(|e| e.to_string())?;
                self.get(from, session, no_ack)
            }
            other => Err(format!("unknown request kind {other}")),
        }
    }

    fn session(&self, key: (NodeId, u64), create: bool) -> Option<Arc<Session>> {
        let mut all = self.sessions.lock();
        if let Some(s) = all.get(&key) {
            return Some(s.clone());
        }
        if !create {
            return None;
        }
        let s = Arc::new(Session::default());
        all.insert(key, s.clone());
        self.opened.notify_one();
        Some(s)
    }

    async fn credit(&self, from: NodeId, c: Credit, pull: bool) -> Result<Bytes, String> {
        let Some(s) = self.session((from, c.session), c.fresh) else {
            return Err(UNKNOWN_SESSION.into());
        };
        let q = self.replica.queue();
        let (fresh, gone) = {
            let mut st = s.state.lock();
            if !st.credited && !c.fresh {
                return Err(UNKNOWN_SESSION.into());
            }
            st.credited = true;
            st.last_seen = Instant::now();
            let wanted: HashSet<u64> = c.consumers.iter().map(|x| x.id).collect();
            let gone: Vec<u64> = st
                .stand_ins
                .iter()
                .filter(|(cid, _)| !wanted.contains(cid))
                .map(|(_, (lid, _))| *lid)
                .collect();
            st.stand_ins.retain(|cid, _| wanted.contains(cid));
            let mut fresh = Vec::new();
            for x in c.consumers {
                match st.stand_ins.get(&x.id) {
                    Some((_, sink)) => sink.limit.store(x.limit, Ordering::Release),
                    None => fresh.push(x),
                }
            }
            (fresh, gone)
        };
        for lid in gone {
            q.cancel(lid);
        }
        for x in fresh {
            let sink = Arc::new(StandIn {
                session: s.clone(),
                cid: x.id,
                no_ack: x.no_ack,
                sent: AtomicU64::new(0),
                limit: AtomicU64::new(x.limit),
            });
            let tag: Arc<str> = Arc::from(x.tag.as_str());
            let sink_dyn: Arc<dyn ConsumerSink> = sink.clone();
            match q.consume_with_priority(tag, sink_dyn, x.no_ack, x.exclusive, x.priority) {
                Ok(lid) => {
                    s.state.lock().stand_ins.insert(x.id, (lid, sink));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a follower's consumer was refused");
                    s.state.lock().cancelled.push(x.id);
                }
            }
        }
        q.dispatch();
        if !pull {
            return Ok(Bytes::new());
        }
        s.state.lock().pulling = true;
        // Not pulling any more however this ends (an answer, or the
        // request dropped with its connection): the session can expire.
        let _pulling = Pulling(&s);
        let deadline = tokio::time::Instant::now() + PARK;
        loop {
            let notified = s.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = s.state.lock();
                if !st.buffer.is_empty() || !st.cancelled.is_empty() {
                    break;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let taken = {
            let mut st = s.state.lock();
            st.last_seen = Instant::now();
            take_answer(&mut st)
        };
        if !self.replica.serves() {
            // Stepped down meanwhile: those were returned to the queue.
            return Err(NOT_LEADER.into());
        }
        Ok(remote::encode_pulled(&taken))
    }

    fn settle(
        &self,
        from: NodeId,
        session: u64,
        op: SettleOp,
        ids: Vec<u64>,
    ) -> Result<Bytes, String> {
        let Some(s) = self.session((from, session), false) else {
            // Ended: what it held went back to the queue already.
            return Ok(Bytes::new());
        };
        let ids: Vec<u64> = {
            let mut st = s.state.lock();
            st.last_seen = Instant::now();
            ids.into_iter().filter(|id| st.out.remove(id)).collect()
        };
        if ids.is_empty() {
            return Ok(Bytes::new());
        }
        let q = self.replica.queue();
        let r = match op {
            SettleOp::Ack => q.settle(&ids),
            SettleOp::Requeue => q.requeue(&ids),
            SettleOp::Reject => q.reject(&ids),
        };
        r.map(|()| Bytes::new()).map_err(|e| e.to_string())
    }

    fn get(&self, from: NodeId, session: u64, no_ack: bool) -> Result<Bytes, String> {
        let s = self.session((from, session), true);
        let got = self
            .replica
            .queue()
            .get(no_ack)
            .map_err(|e| e.to_string())?;
        let Some((d, left)) = got else {
            return Ok(remote::encode_got(None));
        };
        if let Some(s) = s {
            let mut st = s.state.lock();
            st.last_seen = Instant::now();
            if !no_ack {
                st.out.insert(d.msg_id);
            }
        }
        match delivered(0, &d) {
            Some(x) => Ok(remote::encode_got(Some(&(x, left)))),
            None => {
                let _ = self.replica.queue().requeue(&[d.msg_id]);
                Err("cannot encode the message".into())
            }
        }
    }

    /// Returns once this group serves a session (at once if it does): an
    /// idle queue's reaper sleeps until then.
    pub(crate) async fn any_session(&self) {
        loop {
            let opened = self.opened.notified();
            if !self.sessions.lock().is_empty() {
                return;
            }
            opened.await;
        }
    }

    /// Ends the sessions nobody asked anything of for [`SESSION_TTL`].
    pub fn reap(&self) {
        let now = Instant::now();
        let ended: Vec<Arc<Session>> = {
            let mut all = self.sessions.lock();
            let old: Vec<(NodeId, u64)> = all
                .iter()
                .filter(|(_, s)| {
                    let st = s.state.lock();
                    !st.pulling && now.duration_since(st.last_seen) > SESSION_TTL
                })
                .map(|(k, _)| *k)
                .collect();
            old.iter().filter_map(|k| all.remove(k)).collect()
        };
        for s in ended {
            self.end(&s, true);
        }
    }

    /// Ends every session (this replica stopped serving: it returned
    /// every checkout and ended the stand-ins itself).
    pub fn end_all(&self) {
        let all: Vec<Arc<Session>> = self.sessions.lock().drain().map(|(_, s)| s).collect();
        for s in all {
            self.end(&s, false);
        }
    }

    fn end_of(&self, from: NodeId) {
        let ended: Vec<Arc<Session>> = {
            let mut all = self.sessions.lock();
            let keys: Vec<(NodeId, u64)> = all.keys().filter(|k| k.0 == from).copied().collect();
            keys.iter().filter_map(|k| all.remove(k)).collect()
        };
        for s in ended {
            self.end(&s, false);
        }
    }

    /// A session's end: its stand-ins go and (with `requeue`) what it
    /// held returns to the queue.
    fn end(&self, s: &Session, requeue: bool) {
        let (stand_ins, out) = {
            let mut st = s.state.lock();
            st.buffer.clear();
            (
                std::mem::take(&mut st.stand_ins),
                std::mem::take(&mut st.out),
            )
        };
        let q = self.replica.queue();
        for (_, (lid, _)) in stand_ins {
            q.cancel(lid);
        }
        if requeue && !out.is_empty() {
            let ids: Vec<u64> = out.into_iter().collect();
            if let Err(e) = q.requeue(&ids) {
                tracing::warn!(error = %e, "cannot return the messages of an ended session");
            }
        }
    }
}

/// A pull waiting on a session: its end (however it comes) marks the
/// session as not pulled.
struct Pulling<'a>(&'a Session);

impl Drop for Pulling<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock();
        st.pulling = false;
        st.last_seen = Instant::now();
    }
}

/// What a pull's answer takes from the session: deliveries up to
/// [`ANSWER_BYTES`] (the rest waits for the next pull) and cancellations.
fn take_answer(st: &mut SessionState) -> Pulled {
    let mut size = 0;
    let mut n = 0;
    for (_, d) in &st.buffer {
        if n > 0 && size >= ANSWER_BYTES {
            break;
        }
        size += d.message.weight();
        n += 1;
    }
    let mut deliveries = Vec::with_capacity(n);
    for (cid, d) in st.buffer.drain(..n) {
        match delivered(cid, &d) {
            Some(x) => deliveries.push(x),
            // Stays checked out to the session: returned when it ends.
            None => tracing::error!(id = d.msg_id, "cannot encode a delivery"),
        }
    }
    Pulled {
        deliveries,
        cancelled: std::mem::take(&mut st.cancelled),
    }
}

/// A delivery as it travels.
fn delivered(consumer: u64, d: &Delivery) -> Option<Delivered> {
    let mut rec = Vec::with_capacity(d.message.weight() + 32);
    record::encode_enqueue(&d.message, None, None, &mut rec).ok()?;
    Some(Delivered {
        consumer,
        msg_id: d.msg_id,
        redelivered: d.redelivered,
        delivery_count: d.delivery_count,
        record: Bytes::from(rec),
    })
}
